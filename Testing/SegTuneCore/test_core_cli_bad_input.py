"""Every SegTuneCore CLI on bad input: one-line error, non-zero exit, no traceback, no output.

Every command line runs as its own process (core_cli_driver forks one per command line after
importing SegTuneCore once: the start-up would otherwise dominate), then is checked one by one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegTuneCore import geometry
from SegTuneCore.geometry import Segment
from SegTuneCore.models import WEIGHTS

from core_testdata import generated_labels, generated_volume

HERE = Path(__file__).resolve().parent
TASK = "KidneyUS.segmentation"


def bad_inputs(folder: Path) -> dict[str, Path]:
    """Bad volume files; each name says what is wrong."""
    folder.mkdir()
    valid = geometry.write_volume(generated_volume("LSA"), folder / "valid.nrrd", compress=False)
    raw = valid.read_bytes()
    header_end = raw.index(b"\n\n") + 2
    files = {"missing": folder / "missing.nrrd", "directory": folder / "directory.nrrd"}
    files["directory"].mkdir()
    files["truncated_raw"] = folder / "truncated_raw.nrrd"
    files["truncated_raw"].write_bytes(raw[: header_end + (len(raw) - header_end) // 2])
    files["truncated_header"] = folder / "truncated_header.nrrd"
    files["truncated_header"].write_bytes(raw[: header_end // 2])
    gz = geometry.write_volume(generated_volume("LSA"), folder / "valid_gz.nrrd").read_bytes()
    files["truncated_gzip"] = folder / "truncated_gzip.nrrd"
    files["truncated_gzip"].write_bytes(gz[: len(gz) * 2 // 3])
    nifti = geometry.write_volume(generated_volume("RAS"), folder / "valid.nii").read_bytes()
    files["truncated_nifti"] = folder / "truncated.nii"
    files["truncated_nifti"].write_bytes(nifti[: len(nifti) // 2])
    mha = geometry.write_volume(generated_volume("LPS"), folder / "valid.mha", compress=False).read_bytes()
    files["truncated_mha"] = folder / "truncated.mha"
    files["truncated_mha"].write_bytes(mha[: len(mha) * 3 // 4])
    files["truncated_nifti_gz"] = folder / "truncated.nii.gz"
    files["truncated_nifti_gz"].write_bytes(geometry.write_volume(
        generated_volume("oblique"), folder / "valid.nii.gz").read_bytes()[:-300])
    files["text"] = folder / "text.nrrd"
    files["text"].write_text("this is a text file, not an image\n")
    files["empty"] = folder / "empty.nrrd"
    files["empty"].write_bytes(b"")
    files["image_2d"] = folder / "image_2d.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((12, 14), np.int16)), str(files["image_2d"]))
    files["slab_1_slice"] = folder / "slab_1_slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 12, 14), np.int16)), str(files["slab_1_slice"]))
    files["vector"] = folder / "vector.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 12, 14, 3), np.uint8), isVector=True), str(files["vector"]))
    return files


def bad_segmentations(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    labels = generated_labels("LPS")
    valid = geometry.write_segmentation(labels, [Segment("a", 1, (1, 0, 0)), Segment("b", 2, (0, 1, 0))],
                                        folder / "valid.seg.nrrd").read_bytes()
    files = {"missing": folder / "missing.seg.nrrd", "directory": folder / "directory.seg.nrrd",
             "text": folder / "text.seg.nrrd", "truncated": folder / "truncated.seg.nrrd"}
    files["directory"].mkdir()
    files["text"].write_text("not a segmentation\n")
    files["truncated"].write_bytes(valid[: len(valid) // 2])
    return files


def bad_models(folder: Path, volume_file: Path) -> dict[str, Path]:
    from SegTuneCore.models import save_model

    folder.mkdir()
    files = {"missing": folder / "missing", "empty_directory": folder / "empty", "image_file": volume_file}
    files["empty_directory"].mkdir()
    tensors = {"w": np.ones((256, 64), np.float32)}
    files["truncated_weights"] = save_model(folder / "truncated", tensors, {"task": TASK, "architecture": {"name": "x"}})
    weights = files["truncated_weights"] / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:5000])
    files["text_weights"] = save_model(folder / "text", tensors, {"task": TASK, "architecture": {"name": "x"}})
    (files["text_weights"] / WEIGHTS).write_text("not safetensors at all, just text\n" * 10)
    files["broken_json"] = save_model(folder / "json", tensors, {"task": TASK, "architecture": {"name": "x"}})
    (files["broken_json"] / "model.json").write_text("{ this is not json")
    return files


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Run every bad command line; return {case: (exit code, stdout, stderr, output folder)}."""
    root = tmp_path_factory.mktemp("cli_bad_input")
    volumes = bad_inputs(root / "volumes")
    segmentations = bad_segmentations(root / "segmentations")
    models = bad_models(root / "models", volumes["text"])
    commands = {}
    for case, path in volumes.items():
        commands[f"info-{case}"] = ["info", str(path)]
        commands[f"convert-{case}"] = ["convert", str(path), "{out}/converted.nii.gz"]
    for case, path in segmentations.items():
        commands[f"convert-seg-{case}"] = ["convert", str(path), "{out}/converted.seg.nrrd"]
    for case in ("missing", "truncated_raw", "image_2d"):
        commands[f"info-json-{case}"] = ["info", str(volumes[case]), "--json"]
    commands["convert-volume-to-seg"] = ["convert", str(root / "volumes" / "valid.nrrd"), "{out}/x.seg.nrrd"]
    # /proc and /sys refuse new files even for root: the writers' failures.
    commands["convert-unwritable-nrrd"] = ["convert", str(root / "volumes" / "valid.nrrd"), "/proc/segtune.nrrd"]
    commands["convert-unwritable-nifti"] = ["convert", str(root / "volumes" / "valid.nrrd"), "/sys/segtune.nii.gz"]
    commands["convert-unknown-suffix"] = ["convert", str(root / "volumes" / "valid.nrrd"), "{out}/x.png"]
    for case, path in models.items():
        commands[f"models-verify-{case}"] = ["models", "--store", "{out}/store", "verify", str(path)]
        commands[f"models-install-{case}"] = ["models", "--store", "{out}/store", "install", str(path)]
    assert sorted(commands) == sorted(CASES)  # every command line is checked below
    argvs = {}
    for case, args in commands.items():
        out = root / "out" / case
        out.mkdir(parents=True)
        argvs[case] = [a.replace("{out}", str(out)) for a in args]
    cases_file = root / "cases.json"
    cases_file.write_text(json.dumps(argvs))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    driver = subprocess.run([sys.executable, "-m", "core_cli_driver", str(cases_file)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert driver.returncode == 0, driver.stderr
    results = {case: (*outcome, root / "out" / case) for case, outcome in json.loads(driver.stdout).items()}
    return results


CASES = ([f"info-{c}" for c in ("missing", "directory", "truncated_raw", "truncated_header", "truncated_gzip",
                                 "truncated_nifti", "truncated_nifti_gz", "truncated_mha", "text", "empty", "image_2d",
                                 "slab_1_slice", "vector")]
         + [f"info-json-{c}" for c in ("missing", "truncated_raw", "image_2d")]
         + [f"convert-{c}" for c in ("missing", "directory", "truncated_raw", "truncated_header", "truncated_gzip",
                                     "truncated_nifti", "truncated_nifti_gz", "truncated_mha", "text", "empty",
                                     "image_2d", "slab_1_slice", "vector")]
         + [f"convert-seg-{c}" for c in ("missing", "directory", "text", "truncated")]
         + ["convert-volume-to-seg", "convert-unknown-suffix", "convert-unwritable-nrrd", "convert-unwritable-nifti"]
         + [f"models-{action}-{c}" for action in ("verify", "install")
            for c in ("missing", "empty_directory", "image_file", "truncated_weights", "text_weights", "broken_json")])


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_error_and_no_output(cli_runs, case):
    code, stdout, stderr, out = cli_runs[case]
    assert code not in (0, None), f"{case} succeeded: {stdout}"
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {stderr!r}"
    leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    assert leftovers == [], f"{case} left {leftovers}"

