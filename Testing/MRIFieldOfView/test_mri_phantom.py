"""Whole-body MRI phantom: determinism, truth, region order, orientation, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from MRIFieldOfViewLib.phantom import PROTOCOLS, TISSUES, make_phantom
from MRIFieldOfViewLib.preprocessing import axial_slices
from MRIFieldOfViewLib.regions import ORDERED_REGIONS


def superior_coordinates(phantom) -> np.ndarray:
    """S coordinate of each k-slice centre, from the phantom's own matrix."""
    ni, nj, nk = phantom.array.shape[::-1]
    ks = np.arange(nk)
    ijk = np.stack([np.full(nk, (ni - 1) / 2), np.full(nk, (nj - 1) / 2), ks, np.ones(nk)])
    return (phantom.ijk_to_ras @ ijk)[2]


def test_same_seed_same_volume_other_seed_other_volume():
    a = make_phantom(11, regions=["pelvis", "abdomen"], max_matrix=80)
    b = make_phantom(11, regions=["pelvis", "abdomen"], max_matrix=80)
    c = make_phantom(12, regions=["pelvis", "abdomen"], max_matrix=80)
    assert np.array_equal(a.array, b.array)
    assert np.array_equal(a.ijk_to_ras, b.ijk_to_ras)
    assert a.slice_labels == b.slice_labels
    assert a.array.shape != c.array.shape or not np.array_equal(a.array, c.array)


@pytest.mark.parametrize("seed,regions", [(1, None), (2, ["legs", "pelvis"]), (3, ["chest", "head"]), (4, ["abdomen"])])
def test_truth_has_one_label_per_slice_in_anatomical_order(seed, regions):
    phantom = make_phantom(seed, regions=regions, max_matrix=64)
    assert phantom.array.ndim == 3 and phantom.array.dtype == np.int16
    assert len(phantom.slice_labels) == phantom.array.shape[0]
    order = np.argsort(superior_coordinates(phantom))
    labels = [phantom.slice_labels[k] for k in order]  # inferior -> superior
    present = [label for label in labels if label is not None]
    ranks = [ORDERED_REGIONS.index(label) for label in present]
    assert ranks == sorted(ranks), "regions must follow legs < pelvis < abdomen < chest < head upwards"
    expected = regions or list(ORDERED_REGIONS)
    assert present[0] == expected[0] and present[-1] == expected[-1]
    assert set(present) == set(expected)
    # Empty slices only above the head.
    first_empty = next((n for n, label in enumerate(labels) if label is None), len(labels))
    assert all(label is None for label in labels[first_empty:])
    if first_empty < len(labels):
        assert present[-1] == "head"
        assert np.percentile(phantom.array[order[first_empty:]], 99) < 0.5 * np.percentile(phantom.array[order[:first_empty]], 99)


def test_spine_study_is_all_spine_with_a_small_field_of_view():
    phantom = make_phantom(5, spine=True, max_matrix=96)
    assert set(phantom.slice_labels) == {"spine"}
    spacing = np.linalg.norm(phantom.ijk_to_ras[:3, :3], axis=0)
    assert phantom.array.shape[2] * spacing[0] < 240  # mm: a spine field of view, not a body one


def test_oriented_storage_shows_the_same_anatomy_as_the_canonical_one():
    # Same seed: the random orientation is drawn after the image, so only the storage differs.
    canonical = make_phantom(21, regions=["abdomen", "chest"], orientation=False, max_matrix=48)
    for seed in (21,):
        oriented = make_phantom(seed, regions=["abdomen", "chest"], orientation=True, max_matrix=48)
        assert sorted(oriented.array.shape) == sorted(canonical.array.shape)
        a, b = axial_slices(canonical.volume()), axial_slices(oriented.volume())
        assert np.allclose(a.images[a.physical_order()], b.images[b.physical_order()], atol=1e-6)
        labels_a = [canonical.slice_labels[k] for k in a.k_indices[a.physical_order()]]
        labels_b = [oriented.slice_labels[k] for k in b.k_indices[b.physical_order()]]
        assert labels_a == labels_b


def test_orientations_vary_across_seeds():
    matrices = [make_phantom(seed, spine=True, max_matrix=32).ijk_to_ras[:3, :3] for seed in range(30, 38)]
    signs = {tuple(np.sign(np.round(m / np.linalg.norm(m, axis=0), 3)).ravel()) for m in matrices}
    assert len(signs) > 2  # flips and oblique storage both occur


def test_protocol_contrasts_follow_mri_physics():
    t1, t2, pd = (np.array([TISSUES[name][PROTOCOLS.index(p)] for name in ("fat", "fluid", "muscle", "lung")])
                  for p in ("T1", "T2", "PD"))
    assert t1[0] > t1[1] and t2[1] > t2[0]  # fat bright in T1, fluid bright in T2
    assert pd[1] > t1[1] and pd[2] > t1[2]  # PD: proton density, everything but air fairly bright
    assert max(t1[3], t2[3], pd[3]) < 0.1    # lung dark in all


def test_phantom_cli_writes_volume_and_truth(tmp_path, capsys):
    from MRIFieldOfViewLib.__main__ import main
    from SegTuneCore.geometry import read_volume

    volume, truth = tmp_path / "p.nrrd", tmp_path / "p.json"
    assert main(["phantom", "--seed", "7", "--regions", "chest,head", "--protocol", "T2", "--max-matrix", "64",
                 "--output", str(volume), "--truth", str(truth), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"] == "T2"
    labels = json.loads(truth.read_text())["slice_labels"]
    image = read_volume(volume)
    assert len(labels) == image.array.shape[0]
    assert {"chest", "head"} <= set(labels)
    reference = make_phantom(7, regions=["chest", "head"], protocol="T2", max_matrix=64)
    assert np.array_equal(image.array, reference.array)
    assert np.allclose(image.ijk_to_ras, reference.ijk_to_ras, atol=1e-9)


def test_phantom_cli_rejects_a_non_contiguous_run_without_output(tmp_path):
    volume, truth = tmp_path / "p.nrrd", tmp_path / "p.json"
    result = subprocess.run([sys.executable, "-m", "MRIFieldOfViewLib", "phantom", "--seed", "1", "--regions",
                             "legs,chest", "--output", str(volume), "--truth", str(truth)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
