"""Every CLI that writes files refuses, before any work, an output that is an input or another
output (by any spelling), and a failed write keeps the earlier outputs as they were."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from SegTuneCore import geometry

from core_testdata import generated_volume


def run(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, timeout=300)


def assert_refused(result: subprocess.CompletedProcess, path: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: is also the ") and "another file" in lines[0], lines[0]


@pytest.fixture
def scan(tmp_path) -> Path:
    path = geometry.write_volume(generated_volume("LSA", dtype=np.float32), tmp_path / "scan.nrrd")
    (tmp_path / "sub").mkdir()
    return path


@pytest.mark.parametrize("command", ["convert", "kidney segment", "mri localize", "mri localize segmentation"])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(scan, command):
    before = scan.read_bytes()
    other = scan.parent / "sub" / ".." / scan.name  # the same file, spelled differently
    if command == "convert":
        result = run("SegTuneCore", "convert", scan, other)
    elif command == "kidney segment":
        seg = scan.with_name("scan.seg.nrrd")
        geometry.write_volume(generated_volume("LSA"), seg)
        before, scan, other = seg.read_bytes(), seg, scan.parent / "sub" / ".." / seg.name
        result = run("KidneyUSLib", "segment", seg, "--output", other)
    elif command == "mri localize":
        result = run("MRIFieldOfViewLib", "localize", scan, "--output", other)
    else:  # two outputs, one file: nothing is written
        other = scan.parent / "sub" / ".." / "r.seg.nrrd"
        result = run("MRIFieldOfViewLib", "localize", scan, "--output", scan.with_name("r.seg.nrrd"),
                     "--segmentation", other)
        assert not scan.with_name("r.seg.nrrd").exists()
    assert_refused(result, str(other))
    assert scan.read_bytes() == before


@pytest.mark.parametrize("module", ["KidneyUSLib", "MRIFieldOfViewLib"])
def test_a_phantom_and_its_truth_cannot_be_one_file(tmp_path, module):
    path = tmp_path / "phantom.nrrd"
    second = "--label" if module == "KidneyUSLib" else "--truth"
    extra = ["--population", "child"] if module == "KidneyUSLib" else []
    result = run(module, "phantom", *extra, "--seed", "1", "--output", path, second, tmp_path / "." / "phantom.nrrd")
    assert_refused(result, str(tmp_path / "." / "phantom.nrrd"))
    assert list(tmp_path.iterdir()) == []


def test_a_localize_whose_json_cannot_be_written_keeps_the_earlier_segmentation(tmp_path):
    scan = geometry.write_volume(generated_volume("LSA", dtype=np.float32), tmp_path / "scan.nrrd")
    first = run("MRIFieldOfViewLib", "localize", scan, "--output", tmp_path / "r.json",
                "--segmentation", tmp_path / "r.seg.nrrd")
    assert first.returncode == 0, first.stderr
    segmentation = (tmp_path / "r.seg.nrrd").read_bytes()
    (tmp_path / "not-a-folder").write_text("a file where the JSON's folder should be")
    failed = run("MRIFieldOfViewLib", "localize", scan, "--output", tmp_path / "not-a-folder" / "r.json",
                 "--segmentation", tmp_path / "r.seg.nrrd")
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1, failed.stderr  # before any work
    assert "not-a-folder is a file, not a folder" in failed.stderr
    assert (tmp_path / "r.seg.nrrd").read_bytes() == segmentation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder", "r.json", "r.seg.nrrd", "scan.nrrd"]


@pytest.mark.parametrize("name,message", [("out.nhdr", "separate data file"), ("out.mhd", "separate data file"),
                                          ("OUT.NII", "in lower case"), ("out.NII.GZ", "in lower case"),
                                          ("out.Seg.nrrd", "in lower case")])
def test_outputs_are_single_files_named_in_lower_case(scan, name, message):
    out = scan.parent / "out"
    out.mkdir()
    source = scan
    if name.lower().endswith(".seg.nrrd"):
        source = geometry.write_segmentation(generated_volume("LSA").with_array(np.ones((7, 9, 11), np.uint8)),
                                             [geometry.Segment("a", 1, (1, 0, 0))], scan.with_name("in.seg.nrrd"))
    result = run("SegTuneCore", "convert", source, out / name)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert list(out.iterdir()) == []  # no hidden data file, no ITK TempWrite folder
