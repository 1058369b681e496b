"""`python -m KidneyUSLib segment` end to end, and every bad input it must refuse cleanly."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from KidneyUSLib import segmentation
from KidneyUSLib.__main__ import main
from KidneyUSLib.selftest import phantom
from SegTuneCore.errors import run_cli
from SegTuneCore.geometry import read_segmentation, write_volume
from SegTuneCore.models import save_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 2-level, width-2 U-Net in model-store format (fast on any CPU)."""
    from KidneyUSLib import unet
    from KidneyUSLib.training import save_network

    import torch

    torch.manual_seed(0)
    network = unet.UNet3D(unet.UNetConfig(width=2, levels=2, dropout=0.0))
    folder = tmp_path_factory.mktemp("models") / "tiny"
    return save_network(folder, network.eval(), {"task": segmentation.TASK, "architecture": network.config.to_dict()})


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "foreign"
    return save_model(folder, {"w": np.zeros(3, dtype=np.float32)},
                      {"task": "MRIFieldOfView.slice-classifier", "architecture": {"name": "slice-cnn"}})


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    volume, _ = phantom("child")
    folder = tmp_path_factory.mktemp("phantom")
    write_volume(volume, folder / "child.nrrd")
    return folder / "child.nrrd", volume


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "KidneyUSLib", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_segment_writes_one_kidney_segment_on_the_input_grid(tmp_path, tiny_model, phantom_file):
    path, volume = phantom_file
    output = tmp_path / "out" / "child.seg.nrrd"
    result = _cli("segment", path, "--output", output, "--model", tiny_model, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    labels, segments = read_segmentation(output)
    assert [s.name for s in segments] == ["Kidney"]
    assert labels.array.shape == volume.array.shape
    np.testing.assert_allclose(labels.ijk_to_ras, volume.ijk_to_ras, atol=1e-9)
    assert set(np.unique(labels.array)) <= {0, 1}
    expected_ml = (labels.array == segments[0].label_value).sum() * np.prod(volume.spacing) / 1000
    assert summary["volume_ml"] == pytest.approx(expected_ml, abs=1e-3)
    assert summary["device"]["device"] == "cpu" and summary["model"]["task"] == segmentation.TASK
    assert summary["model"]["architecture"] == "unet3d"
    assert {"read", "preprocess", "network", "postprocess", "write", "total"} <= set(summary["timings_s"])


def test_segment_progress_json_streams_events_then_the_result(tmp_path, tiny_model, phantom_file):
    path, _ = phantom_file
    output = tmp_path / "child.seg.nrrd"
    result = _cli("segment", path, "--output", output, "--model", tiny_model, "--device", "cpu", "--progress", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1]["event"] == "result" and events[-1]["output"] == str(output)


def test_a_bad_input_in_a_real_process_gives_one_line_and_no_traceback(tmp_path, tiny_model):
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    sitk.WriteImage(image, str(tmp_path / "slice.nrrd"))
    output = tmp_path / "slice.seg.nrrd"
    result = _cli("segment", tmp_path / "slice.nrrd", "--output", output, "--model", tiny_model, "--device", "cpu")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and not output.exists()


def _write(folder, name, array, spacing=(0.5, 0.5, 0.5)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(folder / name))
    return folder / name


def _sheared_nrrd(path, array):
    """A NRRD whose k axis leans 22° towards j: a grid no Slicer volume node can hold."""
    nk, nj, ni = array.shape
    header = (f"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: {ni} {nj} {nk}\n"
              "space directions: (1,0,0) (0,1,0) (0,0.6,1.5)\nencoding: raw\nendian: little\n"
              "space origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + np.ascontiguousarray(array, dtype="<f4").tobytes())
    return path


def _bad_inputs(folder, tiny_model, foreign_model, phantom_path):
    rng = np.random.default_rng(1)
    noisy = rng.random((20, 24, 28)).astype(np.float32)
    with_nan = noisy.copy()
    with_nan[3, 4, 5] = np.nan
    with_inf = noisy.copy()
    with_inf[0, 0, 0] = np.inf
    (folder / "garbage.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 10\n\n\x00\x01")
    (folder / "text.nrrd").write_text("this is not an image\n")
    ok = ["--model", tiny_model, "--device", "cpu"]
    return {
        "2D image": ([_write(folder, "flat.nrrd", rng.random((30, 40)).astype(np.float32)), *ok], "expected a 3D volume"),
        "single slice": ([_write(folder, "one.nrrd", rng.random((1, 30, 40)).astype(np.float32)), *ok], "3D"),
        "empty volume": ([_write(folder, "zeros.nrrd", np.zeros((20, 24, 28), np.uint8)), *ok], "empty"),
        "constant volume": ([_write(folder, "sevens.nrrd", np.full((20, 24, 28), 7, np.int16)), *ok], "empty"),
        "NaN voxel": ([_write(folder, "nan.nrrd", with_nan), *ok], "NaN"),
        "infinite voxel": ([_write(folder, "inf.nrrd", with_inf), *ok], "infinite"),
        "truncated file": ([folder / "garbage.nrrd", *ok], "garbage.nrrd"),
        "not an image": ([folder / "text.nrrd", *ok], "text.nrrd"),
        "missing file": ([folder / "absent.nrrd", *ok], "no such file"),
        "a directory": ([folder, *ok], "directory"),
        "beyond float32": ([_write(folder, "huge.nrrd", noisy.astype(np.float64) * 1e39), *ok], "float32 range"),
        "thin slab": ([_write(folder, "slab.nrrd", rng.random((6, 200, 200)).astype(np.float32)), *ok],
                      "at least 8 mm along every axis"),
        "sheared grid": ([_sheared_nrrd(folder / "sheared.nrrd", noisy), *ok], "not perpendicular"),
        "model of another task": ([phantom_path, "--model", foreign_model, "--device", "cpu"], "task"),
        "wrong method for the model": ([phantom_path, *ok, "--method", "transfer"], "transfer"),
        "missing model": ([phantom_path, "--model", "v999", "--device", "cpu"], "v999"),
        "bad device": ([phantom_path, "--model", tiny_model, "--device", "tpu"], "tpu"),
    }


BAD_CASES = ("2D image", "single slice", "empty volume", "constant volume", "NaN voxel", "infinite voxel",
             "truncated file", "not an image", "missing file", "a directory", "beyond float32", "thin slab", "sheared grid",
             "model of another task",
             "wrong method for the model", "missing model", "bad device")


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_inputs_are_refused_with_one_line_and_nothing_written(case, tmp_path, tiny_model, foreign_model,
                                                                   phantom_file, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args, expected = _bad_inputs(inputs, tiny_model, foreign_model, phantom_file[0])[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "result.seg.nrrd"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["segment", str(args[0]), "--output", str(output), *map(str, args[1:])])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expected.lower() in err.lower(), err
    assert list(out_dir.iterdir()) == []


def test_volumes_beyond_the_documented_limit_are_refused(tmp_path, monkeypatch, tiny_model, phantom_file, capsys):
    monkeypatch.setattr(segmentation, "MAX_VOXELS", 1000)
    output = tmp_path / "big.seg.nrrd"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["segment", str(phantom_file[0]), "--output", str(output), "--model", str(tiny_model)])
    assert exit_info.value.code == 2
    assert "beyond the limit" in capsys.readouterr().err and not output.exists()
    assert segmentation.MAX_SIDE == 2048  # the limit documented in docs/KidneyUS.md


def test_output_must_be_a_seg_nrrd(tmp_path, tiny_model, phantom_file, capsys):
    with pytest.raises(SystemExit):
        run_cli(main, ["segment", str(phantom_file[0]), "--output", str(tmp_path / "x.nrrd"), "--model", str(tiny_model)])
    assert ".seg.nrrd" in capsys.readouterr().err and not (tmp_path / "x.nrrd").exists()


def test_phantom_cli_writes_volume_and_label_with_the_same_geometry(tmp_path, capsys):
    volume_path, label_path = tmp_path / "a.nrrd", tmp_path / "a_label.nii.gz"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["phantom", "--population", "adult", "--seed", "3", "--spacing", "1.5", "1.2", "1.4",
                       "--size", "90", "100", "80", "--oblique", "--output", str(volume_path), "--label", str(label_path),
                       "--json"])
    assert exit_info.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    from SegTuneCore.geometry import read_volume

    volume, label = read_volume(volume_path), read_volume(label_path)
    assert volume.array.shape == label.array.shape == (80, 100, 90)
    np.testing.assert_allclose(volume.spacing, [1.5, 1.2, 1.4], atol=1e-6)
    np.testing.assert_allclose(volume.ijk_to_ras, label.ijk_to_ras, atol=1e-5)  # NIfTI stores float32
    assert summary["kidney_volume_ml"] == pytest.approx(label.array.sum() * 1.5 * 1.2 * 1.4 / 1000, abs=0.01)


def test_phantom_cli_refuses_bad_options_without_writing(tmp_path, capsys):
    for extra, message in ((["--seed", "-1"], "seed"), (["--seed", "1", "--size", "4", "100", "100"], "size"),
                           (["--seed", "1", "--spacing", "0.05", "0.05", "0.05"], "at most")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, ["phantom", "--population", "child", *extra, "--output", str(tmp_path / "v.nrrd"),
                           "--label", str(tmp_path / "l.nrrd")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_real_ultrasound_volume_gets_a_segmentation_on_its_own_grid(tmp_path, tiny_model, shared_data, capsys):
    from SegTuneCore.geometry import read_volume

    source = shared_data / "plus_us_spine_phantom_3d.mha"
    output = tmp_path / "spine.seg.nrrd"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["segment", str(source), "--output", str(output), "--model", str(tiny_model), "--device", "cpu",
                       "--json", "--progress", "quiet"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    volume = read_volume(source)
    labels, segments = read_segmentation(output)
    assert labels.array.shape == volume.array.shape and [s.name for s in segments] == ["Kidney"]
    np.testing.assert_allclose(labels.ijk_to_ras, volume.ijk_to_ras, atol=1e-6)


def test_the_bundled_model_warns_on_a_real_ultrasound_without_a_kidney(tmp_path, shared_data, capsys):
    """The spine phantom's 3D ultrasound shows no kidney: whatever the bundled U-Net finds there is
    empty or smaller than any kidney, and `segment` says so, while still writing the file."""
    output = tmp_path / "spine.seg.nrrd"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["segment", str(shared_data / "plus_us_spine_phantom_3d.mha"), "--output", str(output),
                       "--device", "cpu", "--json", "--progress", "quiet"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["volume_ml"] < 5 and len(summary["warnings"]) == 1 and output.exists()
    assert f"warning: {summary['warnings'][0]}" in captured.err.splitlines()


def test_result_warnings_name_an_empty_a_too_small_and_an_unsupported_kidney():
    some = np.zeros((4, 4, 4), np.uint8)
    some[1, 1, 1] = 1
    assert segmentation.result_warnings(some, segmentation.MIN_KIDNEY_ML, {}) == []
    small = segmentation.result_warnings(some, 4.94, {})
    assert len(small) == 1 and "4.94 mL, smaller than any whole kidney" in small[0]
    empty = segmentation.result_warnings(np.zeros_like(some), 0.0, {"unet_dice": 1.0})
    assert len(empty) == 1 and empty[0].startswith("no kidney found")
    both = segmentation.result_warnings(some, 3.0, {"unet_dice": 0.3})
    assert len(both) == 2 and "Dice 0.30" in both[1]
    assert segmentation.result_warnings(some, 120.0, {"unet_dice": segmentation.MIN_UNET_AGREEMENT}) == []
