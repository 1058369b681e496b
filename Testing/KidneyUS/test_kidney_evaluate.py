"""`python -m KidneyUSLib evaluate`: models compared on the same held-out native phantoms."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from KidneyUSLib import segmentation
from KidneyUSLib import template_net as tn
from KidneyUSLib.phantom import generate_phantom
from KidneyUSLib.preprocessing import keep_largest_component
from KidneyUSLib.training import save_network

SEED = 4242  # 4242 % 3 == 0: the adult is oblique


@pytest.fixture(scope="module")
def template_model(tmp_path_factory):
    """An untrained width-2 template network (returns its template, a box) in model-store format."""
    torch.manual_seed(0)
    template = torch.zeros(40, 40, 40)
    template[12:28, 14:26, 10:30] = 1.0
    network = tn.TemplateNet(tn.TemplateConfig(width=2, levels=2, template_shape=(40, 40, 40)), template)
    folder = tmp_path_factory.mktemp("models") / "template"
    return save_network(folder, network.eval(), {"task": segmentation.TASK, "architecture": network.architecture()})


def _evaluate(*args):
    return subprocess.run([sys.executable, "-m", "KidneyUSLib", "evaluate", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def _independent_dice(a, b) -> float:
    inter = np.count_nonzero(np.logical_and(a != 0, b != 0))
    return 2.0 * inter / (np.count_nonzero(a) + np.count_nonzero(b))


def test_evaluate_compares_models_on_the_same_native_phantoms(tmp_path, template_model):
    out, table = tmp_path / "results.json", tmp_path / "table.md"
    result = _evaluate("--model", "unet-default", "--model", template_model, "--adults", 1, "--children", 1,
                       "--first-seed", SEED, "--device", "cpu", "--workers", 2, "--output", out, "--markdown", table,
                       "--progress", "quiet")
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    cases = results["cases"]
    assert [(c["population"], c["seed"], c["oblique"]) for c in cases] == [("adult", SEED, True), ("child", SEED, True)]

    # the bundled model's numbers, recomputed here through the library and numpy
    segmenter = segmentation.load_segmenter(segmentation.resolve_model("unet-default"), "cpu")
    for case in cases:
        volume, label = generate_phantom(case["population"], case["seed"], oblique=True)
        assert list(volume.shape_ijk) == case["size_ijk"]
        raw = segmentation.segment_volume(volume, segmenter, largest_component=False).labels
        mine = case["models"]["unet-default"]
        assert mine["dice"] == pytest.approx(_independent_dice(keep_largest_component(raw), label.array), abs=1e-9)
        assert mine["components"] == ndimage.label(raw)[1]
        assert mine["folded_fraction"] is None
        assert 0.0 <= case["models"][str(template_model)]["folded_fraction"] <= 1.0

    # summary: paired difference to the first model, per population
    for population, plural in (("adult", "adults"), ("child", "children")):
        case = next(c for c in cases if c["population"] == population)
        row = results["summary"][str(template_model)][plural]
        expected = case["models"][str(template_model)]["dice"] - case["models"]["unet-default"]["dice"]
        assert row["dice_minus_first"] == pytest.approx(expected)
        assert results["summary"]["unet-default"][plural]["dice_minus_first"] == 0.0
    assert results["models"][str(template_model)]["architecture"] == "template-deformation"
    assert results["device"]["device"] == "cpu" and "torch" in results["device"]
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 4 and all(" | adults | " in r or " | children | " in r for r in rows)


@pytest.mark.parametrize("args, expected", [
    (["--model", "v999"], "v999"),
    (["--model", "unet-default", "--adults", "0", "--children", "0"], "at least one phantom"),
    (["--model", "unet-default", "--model", "unet-default"], "each model once"),
    (["--model", "unet-default", "--workers", "0"], "--workers"),
    (["--model", "unet-default", "--first-seed", "-5"], "--first-seed must be >= 0"),
])
def test_bad_options_give_one_line_and_write_nothing(tmp_path, args, expected):
    out = tmp_path / "results.json"
    result = _evaluate(*args, "--output", out, "--device", "cpu")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
