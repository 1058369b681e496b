"""`python -m SegTuneCore info|convert` end to end on good input (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from SegTuneCore import geometry
from SegTuneCore.geometry import Segment

from core_testdata import generated_labels, generated_volume


def segtune(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "SegTuneCore", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_info_json_reports_mrml_geometry(tmp_path):
    volume = generated_volume("oblique_LSA")
    path = geometry.write_volume(volume, tmp_path / "scan.nrrd")
    result = segtune("info", path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["size"] == [11, 9, 7] and info["scalar_type"] == "short" and info["name"] == "scan"
    np.testing.assert_allclose(info["ijk_to_ras"], volume.ijk_to_ras, atol=1e-9)
    np.testing.assert_allclose(info["spacing"], [0.7, 1.3, 3.1])
    assert info["range"] == [float(volume.array.min()), float(volume.array.max())]
    text = segtune("info", path)
    assert text.returncode == 0 and "11 x 9 x 7" in text.stdout


def test_convert_volume_and_segmentation(tmp_path):
    volume = generated_volume("LSA", dtype=np.float32)
    source = geometry.write_volume(volume, tmp_path / "scan.nrrd")
    for target in (tmp_path / "scan.nii.gz", tmp_path / "sub" / "scan.mha"):
        result = segtune("convert", source, target)
        assert result.returncode == 0, result.stderr
        back = geometry.read_volume(target)
        np.testing.assert_array_equal(back.array, volume.array)
        np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-4)

    labels = generated_labels("oblique")
    segments = [Segment("cortex", 1, (0.9, 0.1, 0.2)), Segment("medulla", 2, (0.2, 0.5, 0.7))]
    seg = geometry.write_segmentation(labels, segments, tmp_path / "labels.seg.nrrd")
    result = segtune("convert", seg, tmp_path / "copy.seg.nrrd")
    assert result.returncode == 0, result.stderr
    read, read_segments = geometry.read_segmentation(tmp_path / "copy.seg.nrrd")
    assert [(s.name, s.label_value) for s in read_segments] == [("cortex", 1), ("medulla", 2)]
    np.testing.assert_allclose([s.color for s in read_segments], [s.color for s in segments], atol=1e-6)
    on_grid = geometry.resample_to_reference(read.array, read.ijk_to_ras, labels, order=0)
    np.testing.assert_array_equal(on_grid, np.where(labels.array <= 2, labels.array, 0))


def test_help_exits_zero():
    for args in (["--help"], ["info", "--help"], ["models", "--help"]):
        result = segtune(*args)
        assert result.returncode == 0 and "usage" in result.stdout


def test_info_json_is_strict_json_for_nan_and_inf(tmp_path):
    array = np.full((3, 4, 5), np.nan, np.float32)
    array[0, 0, 0], array[1, 2, 3], array[2, 3, 4] = np.inf, -4.5, 7.25
    path = geometry.write_volume(geometry.Volume(array, np.eye(4)), tmp_path / "nan.nrrd")
    result = segtune("info", path, "--json")
    assert result.returncode == 0, result.stderr

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    info = json.loads(result.stdout, parse_constant=refuse)
    assert info["range"] == [-4.5, 7.25] and info["non_finite_voxels"] == 58
