"""`python -m MRIFieldOfViewLib localize`: outputs, physical invariance, progress, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from MRIFieldOfViewLib import selftest
from MRIFieldOfViewLib.__main__ import main
from MRIFieldOfViewLib.regions import REGION_COLORS, REGIONS
from SegTuneCore.errors import run_cli
from SegTuneCore.geometry import Volume, read_segmentation, write_volume
from SegTuneCore.models import save_model


@pytest.fixture(scope="module")
def standin_model(tmp_path_factory):
    return str(selftest.save_standin_model(tmp_path_factory.mktemp("model") / "standin"))


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    volume, truth = selftest.phantom_volume(selftest.SELFTEST_SEED + 10, regions=("abdomen", "chest"))
    return write_volume(volume, tmp_path_factory.mktemp("data") / "phantom.nrrd"), volume, truth


def localize(argv):
    """Run the CLI in this process as `python -m` would; returns the exit code."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["localize", *map(str, argv)])
    return exit_info.value.code


def test_writes_regions_json_and_slab_segmentation(tmp_path, phantom_file, standin_model):
    path, volume, _ = phantom_file
    out, seg = tmp_path / "regions.json", tmp_path / "regions.seg.nrrd"
    assert localize([path, "--output", out, "--segmentation", seg, "--model", standin_model,
                     "--device", "cpu", "--progress", "quiet"]) == 0
    document = json.loads(out.read_text())
    n = volume.array.shape[0]
    assert len(document["slice_probabilities"]) == n and all(len(p) == 6 for p in document["slice_probabilities"])
    assert np.allclose(np.sum(document["slice_probabilities"], axis=1), 1.0, atol=1e-4)
    assert document["model"]["task"] == "MRIFieldOfView.slice-classifier" and document["model"]["sha256"]
    assert document["device"]["device"] == "cpu"
    assert document["classes"] == list(REGIONS) and document["slice_axis"] == "k"
    for region in document["regions"]:
        assert set(region) == {"name", "first_slice", "last_slice", "inferior_mm", "superior_mm"}
        assert 0 <= region["first_slice"] <= region["last_slice"] < n
    labels, segments = read_segmentation(seg)
    assert np.allclose(labels.ijk_to_ras, volume.ijk_to_ras) and labels.array.shape == volume.array.shape
    assert [s.name for s in segments] == [r["name"] for r in document["regions"]]
    for region, segment in zip(document["regions"], segments):
        assert segment.color == pytest.approx(REGION_COLORS[region["name"]], abs=1e-5)
        expected = np.zeros(n, bool)
        expected[region["first_slice"]:region["last_slice"] + 1] = True
        covered = (labels.array == segment.label_value).all(axis=(1, 2))
        assert np.array_equal(covered, expected)


def test_flipped_copy_gives_the_same_physical_regions(tmp_path, phantom_file, standin_model):
    path, volume, _ = phantom_file
    flipped = write_volume(selftest.flipped_k(volume), tmp_path / "flipped.nrrd")
    documents = []
    for source in (path, flipped):
        out = tmp_path / f"{source.stem}.json"
        assert localize([source, "--output", out, "--model", standin_model, "--progress", "quiet"]) == 0
        documents.append(json.loads(out.read_text()))
    forward, backward = documents
    n = volume.array.shape[0]
    assert len(forward["regions"]) == len(backward["regions"]) >= 1
    for a, b in zip(forward["regions"], backward["regions"]):
        assert a["name"] == b["name"]
        assert (a["inferior_mm"], a["superior_mm"]) == pytest.approx((b["inferior_mm"], b["superior_mm"]), abs=1e-6)
        assert (a["first_slice"], a["last_slice"]) == (n - 1 - b["last_slice"], n - 1 - b["first_slice"])
    assert np.allclose(forward["slice_probabilities"], backward["slice_probabilities"][::-1], atol=1e-5)


def test_progress_json_reports_events_and_a_result(tmp_path, phantom_file, standin_model):
    path, _, _ = phantom_file
    out = tmp_path / "r.json"
    completed = subprocess.run(
        [sys.executable, "-m", "MRIFieldOfViewLib", "localize", str(path), "--output", str(out),
         "--model", standin_model, "--progress", "json"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert {e["event"] for e in events} >= {"progress", "result"}
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1]["event"] == "result" and events[-1]["output"] == str(out)


def two_d_image(path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(path))
    return path


def foreign_model(path):
    save_model(path, {"w": np.zeros(3, np.float32)},
               {"task": "KidneyUS.segmentation", "architecture": {"name": "unet3d", "config": {}}})
    return path


BAD_INPUTS = {
    "2D image": (lambda d: two_d_image(d / "flat.nrrd"), None, "3D"),
    "empty volume": (lambda d: write_volume(Volume.from_geometry(np.zeros((5, 20, 20), np.int16), (1, 1, 2), (0, 0, 0)), d / "empty.nrrd"), None, "empty"),
    "NaN": (lambda d: write_volume(Volume.from_geometry(np.full((5, 20, 20), np.nan, np.float32), (1, 1, 2), (0, 0, 0)), d / "nan.nrrd"), None, "NaN"),
    "unreadable file": (lambda d: (d / "junk.nrrd").write_bytes(b"NRRD0004\ngarbage") and d / "junk.nrrd", None, "junk.nrrd"),
    "missing file": (lambda d: d / "missing.nrrd", None, "no such file"),
    "model of another task": (None, lambda d: foreign_model(d / "kidney"), "task"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_one_line_error_and_writes_nothing(case, tmp_path, phantom_file, standin_model, capsys):
    make_volume, make_model, words = BAD_INPUTS[case]
    volume = make_volume(tmp_path) if make_volume else phantom_file[0]
    model = make_model(tmp_path) if make_model else standin_model
    out, seg = tmp_path / "out.json", tmp_path / "out.seg.nrrd"
    code = localize([volume, "--output", out, "--segmentation", seg, "--model", model, "--progress", "quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert words.lower() in err.lower(), err
    assert not out.exists() and not seg.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_bad_input_exit_code_in_a_real_process(tmp_path, standin_model):
    flat = two_d_image(tmp_path / "flat.nrrd")
    completed = subprocess.run(
        [sys.executable, "-m", "MRIFieldOfViewLib", "localize", str(flat), "--output", str(tmp_path / "o.json"),
         "--model", standin_model], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("error: ") and len(completed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.json").exists()


def test_segmentation_name_is_checked_before_any_work(tmp_path, phantom_file, standin_model, capsys):
    code = localize([phantom_file[0], "--output", tmp_path / "o.json", "--segmentation", tmp_path / "o.nrrd",
                     "--model", standin_model])
    assert code == 2 and ".seg.nrrd" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_volume_stored_with_the_patient_axis_along_i(tmp_path, phantom_file, standin_model):
    """Same voxels in space with the i and k axes swapped: same regions, slabs along i."""
    path, volume, _ = phantom_file
    swap = np.eye(4)[[2, 1, 0, 3]].T  # ijk' -> ijk: i' = k, k' = i
    swapped = Volume(np.ascontiguousarray(np.transpose(volume.array, (2, 1, 0))), volume.ijk_to_ras @ swap)
    assert np.allclose(swapped.ijk_to_ras_points([[5, 3, 7]]), volume.ijk_to_ras_points([[7, 3, 5]]))
    documents = []
    for source, name in ((path, "k"), (write_volume(swapped, tmp_path / "swapped.nrrd"), "i")):
        out, seg = tmp_path / f"{name}.json", tmp_path / f"{name}.seg.nrrd"
        assert localize([source, "--output", out, "--segmentation", seg, "--model", standin_model, "--progress", "quiet"]) == 0
        documents.append((json.loads(out.read_text()), read_segmentation(seg)[0].array))
    (forward, forward_labels), (swapped_doc, swapped_labels) = documents
    assert swapped_doc["slice_axis"] == "i"
    assert swapped_doc["regions"] == forward["regions"]
    assert np.array_equal(np.transpose(swapped_labels, (2, 1, 0)), forward_labels)
