"""Transfer layers (thesis §3.4): identity at initialisation, frozen base, small size."""

import pytest
import torch

from KidneyUSLib import transfer, unet
from KidneyUSLib.training import TrainSettings, train_network, CubeSet

torch.set_num_threads(1)  # 2 shared cores: extra threads only wait on each other

CONFIGS = {
    "geometric": transfer.TransferConfig(geometric=True, intensity=False),
    "intensity": transfer.TransferConfig(geometric=False, intensity=True),
    "geometric+intensity": transfer.TransferConfig(geometric=True, intensity=True),
    "fixed convolutions": transfer.TransferConfig(geometric=False, intensity=False, fixed_convolutions=True),
}


def _base(width=4, seed=0):
    torch.manual_seed(seed)
    base = unet.UNet3D(unet.UNetConfig(width=width))
    # non-trivial batch-norm statistics, as a trained network has
    for module in base.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return base.eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fresh_transfer_layers_reproduce_the_base_network(name):
    base = _base()
    x = torch.randn(2, 1, 24, 24, 32)
    with torch.no_grad():
        expected = base(x)
        model = transfer.TransferUNet(base, CONFIGS[name]).eval()
        got = model(x)
    assert (got - expected).abs().max().item() < 1e-5


def test_added_parameters_for_a_width_32_network_stay_below_300k():
    base = unet.UNet3D(unet.UNetConfig(width=32))
    model = transfer.TransferUNet(base, CONFIGS["geometric+intensity"])
    added = model.added_parameter_count()
    assert added == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 100_000 < added <= 300_000
    geometric = transfer.TransferUNet(base, CONFIGS["geometric"]).added_parameter_count()
    intensity = transfer.TransferUNet(base, CONFIGS["intensity"]).added_parameter_count()
    assert geometric + intensity == added


def test_fixed_convolutions_add_a_conv_after_every_sampling():
    base = unet.UNet3D(unet.UNetConfig(width=4))
    model = transfer.TransferUNet(base, CONFIGS["fixed convolutions"])
    channels = [8, 16, 32, 64, 32, 16]  # after the 3 poolings, then the 3 upsamplings
    assert model.added_parameter_count() == sum(27 * c * c + c for c in channels)


def test_training_changes_only_the_transfer_layers_and_moves_the_transform():
    base = _base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = transfer.TransferUNet(base, CONFIGS["geometric+intensity"])
    z = torch.arange(32.0)[:, None, None]
    label = ((z - 18) ** 2 + (torch.arange(32.0)[None, :, None] - 16) ** 2
             + (torch.arange(32.0)[None, None, :] - 16) ** 2 <= 64).to(torch.uint8)
    image = label.float() * 0.8 + 0.1
    cubes = CubeSet("child", image[None].numpy(), label[None].numpy(), "sphere")
    train_network(model, [cubes], TrainSettings(epochs=3, batch_size=1, lr=1e-2, augment=0, bf16=False,
                                                channels_last=False), torch.device("cpu"))
    for key, value in base.state_dict().items():
        assert torch.equal(value, before[key]), key  # weights and batch-norm statistics
    assert model.geometric.parameters_head.weight.abs().sum() > 0
    assert model.intensity.film_head.weight.abs().sum() > 0


def test_architecture_round_trips():
    model = transfer.TransferUNet(unet.UNet3D(unet.UNetConfig(width=3, levels=3)), CONFIGS["geometric"])
    rebuilt = transfer.TransferUNet.from_architecture(model.architecture())
    assert rebuilt.architecture() == model.architecture()
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_a_transfer_model_needs_a_layer():
    with pytest.raises(ValueError):
        transfer.TransferConfig(geometric=False, intensity=False)


def test_transfer_model_runs_under_bf16_autocast_and_channels_last():
    base = _base()
    model = transfer.TransferUNet(base, CONFIGS["geometric+intensity"]).eval()
    with torch.no_grad():
        model.geometric.parameters_head.bias.copy_(torch.tensor([1.0, -1.0, 0.5, 0.1, 0.0, -0.1, 0.1, 0.0, 0.0]))
        x = torch.randn(1, 1, 24, 24, 24)
        reference = model(x)
        fast = model.to(memory_format=torch.channels_last_3d)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = fast(x.contiguous(memory_format=torch.channels_last_3d))
    assert reduced.dtype == torch.float32 and torch.isfinite(reduced).all()
    assert (reduced - reference).abs().max() < 0.05


def test_experiment_transfer_runs_the_rows_with_their_learning_rates_and_writes_table_31(tmp_path):
    """`experiment transfer` at a toy scale: the adult baseline is added for a transfer row, each
    run records the learning rate it used (--strategy-lr over --lr / --transfer-lr), the held-out
    phantoms come from --test-first-seed, and results.json and table.md hold every row."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "KidneyUSLib", "experiment", "transfer", "--seeds", "2", "--adults", "2",
               "--children", "1", "--test", "1", "--width", "2", "--epochs", "1", "--transfer-epochs", "1",
               "--downsample", "2", "--lr", "2e-3", "--transfer-lr", "1e-3", "--device", "cpu",
               "--strategies", "fixed,intensity", "--strategy-lr", "fixed=3e-4", "--test-first-seed", "2000000"]
    result = subprocess.run(command + ["--output", str(tmp_path / "out"), "--progress", "quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    runs = {(r["strategy"], r["seed"]): r for r in results["runs"]}
    assert set(runs) == {(s, seed) for s in ("adults", "fixed", "intensity") for seed in (0, 1)}
    assert {s: runs[(s, 0)]["lr"] for s in ("adults", "fixed", "intensity")} == {
        "adults": 2e-3, "fixed": 3e-4, "intensity": 1e-3}
    assert all(0 <= r["dice_adults"] <= 1 and 0 <= r["dice_children"] <= 1 for r in runs.values())
    assert results["settings"]["test_first_seed"] == 2000000
    table = (tmp_path / "out" / "table.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [
        "Adults Baseline", "Fixed Convolutions", "Intensity"]
    for bad, message in ((["--strategy-lr", "fixed=fast"], "--strategy-lr"), (["--strategy-lr", "dropout=1e-3"], "--strategy-lr"),
                         (["--test-first-seed", "1"], "share seeds")):
        refused = subprocess.run(command[:-4] + bad + ["--output", str(tmp_path / "bad")], capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode != 0 and message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on the GPU machine)")
def test_a_transfer_network_is_captured_by_a_cuda_graph():
    """No host copy or host sync on the forward path (the bench's CUDA graph rows): the replay of
    a captured graph on new input equals the eager forward."""
    from KidneyUSLib.bench import _captured

    model = transfer.TransferUNet(_base(), transfer.TransferConfig(geometric=True, intensity=True)).cuda().eval()
    static = torch.randn(1, 1, 32, 32, 32, device="cuda")
    with torch.no_grad():
        replay = _captured(model, static)
        fresh = torch.randn_like(static)
        static.copy_(fresh)
        torch.testing.assert_close(replay(), model(fresh))
