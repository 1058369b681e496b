"""`python -m KidneyUSLib experiment template`: the structure of Table 4.2 and Fig. 4.4 on phantoms.

Rows (all trained jointly on adults and children, children oversampled, same data, same loop):
3D U-Net without augmentation, 3D U-Net with the Table 4.1 augmentation, deformation only,
geometric transform + deformation (template: one adult mask used nowhere else), the same with
the aligned mean shape as template, and (not in the thesis) the registration local branch with
the Dice of φ0∘G and attention pooling (docs/KidneyUS-template.md). Columns: Dice adults and
children (mean ± std over seeds of the per-seed mean over the held-out phantoms), share of
outputs that are one connected component, and for the template rows the largest folded-voxel
fraction. Fig. 4.4: the 9 global parameters predicted on the held-out phantoms, adults (red) vs
children (blue), for the first seed of the geometric + deformation row, and their correlations
(§4.6 found them strongly correlated).

Results are written after every run (a killed experiment keeps what it finished).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from SegTuneCore.errors import SegTuneError

METHODS = {
    "unet-noaug": "3D U-Net (no data augmentation)",
    "unet": "3D U-Net",
    "deformation": "Deformation",
    "geometric+deformation": "Geometric transfo + Deformation",
    "geometric+deformation-mean": "Geometric transfo + Deformation, mean-shape template",
    "geometric+registration": "Geometric transfo + registration branch, G loss",
}
FIGURE = Path("docs/images/kidney_template_params.png")


def configure(parser) -> None:
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--adults", type=int, default=16, help="adult training phantoms")
    parser.add_argument("--children", type=int, default=8, help="child training phantoms")
    parser.add_argument("--test-adults", type=int, default=50)
    parser.add_argument("--test-children", type=int, default=50)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--downsample", type=int, default=2, choices=(1, 2), help="cubes averaged by this factor (2: 40^3, 8 mm)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--time-budget", type=float, default=90.0, metavar="SECONDS",
                        help="training time per run (0: none, --epochs only)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--penalty", type=float, default=0.01, help="λ of eq. 4.11")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cache", default=None, metavar="FILE.npz", help="keep the generated phantoms here and reuse them")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")
    parser.add_argument("--output", default="experiment-template", help="folder for results.json and table.md")
    parser.add_argument("--figure", default=str(FIGURE), help="PNG of the Fig. 4.4 parameter distributions")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs of the other methods already in OUTPUT/results.json (rerun some rows only)")
    parser.add_argument("--json", action="store_true")


def _mean_std(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(results: dict) -> str:
    lines = ["| Method | Dice adults | Dice children | one component | max folded | s/epoch |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key, label in METHODS.items():
        runs = results["runs"].get(key)
        if not runs:
            continue
        adults = [r["adults"]["dice_mean"] for r in runs]
        children = [r["children"]["dice_mean"] for r in runs]
        single = np.mean([r[p]["single_component"] for r in runs for p in ("adults", "children")])
        folded = [r[p]["folded_max"] for r in runs for p in ("adults", "children") if "folded_max" in r[p]]
        folded_text = f"{100 * max(folded):.3f} %" if folded else "—"
        seconds = np.mean([r["seconds_per_epoch"] for r in runs])
        lines.append(f"| {label} | {_mean_std(adults)} | {_mean_std(children)} | {100 * single:.0f} % | "
                     f"{folded_text} | {seconds:.1f} |")
    return "\n".join(lines)


def parameter_figure(parameters: dict, path: Path) -> dict:
    """Fig. 4.4: histograms of the 9 parameters, adults red, children blue; returns their correlations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .template_net import PARAMETER_NAMES

    adults, children = np.asarray(parameters["adults"]), np.asarray(parameters["children"])
    fig, axes = plt.subplots(3, 3, figsize=(10, 8))
    for index, (ax, name) in enumerate(zip(axes.flat, PARAMETER_NAMES)):
        both = np.concatenate([adults[:, index], children[:, index]])
        bins = np.linspace(both.min(), both.max() + 1e-9, 20)
        ax.hist(adults[:, index], bins=bins, color="tab:red", alpha=0.6, label="adults")
        ax.hist(children[:, index], bins=bins, color="tab:blue", alpha=0.6, label="children")
        unit = "voxels" if name.startswith("t") else ("rad" if name.startswith("r") else "log scale")
        ax.set_title(f"{name} ({unit})", fontsize=9)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Global transform parameters on held-out phantoms (cf. thesis Fig. 4.4)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from SegTuneCore.process import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    everything = np.concatenate([adults, children])
    correlation = np.corrcoef(everything.T)
    off_diagonal = np.abs(correlation[~np.eye(len(correlation), dtype=bool)])
    return {"mean_abs_correlation": float(np.nanmean(off_diagonal)),
            "adult_mean": adults.mean(0).tolist(), "child_mean": children.mean(0).tolist(),
            "adult_std": adults.std(0).tolist(), "child_std": children.std(0).tolist()}


def phantom_sets(args) -> dict:
    """Training, held-out and template phantoms (80^3 cubes), from --cache when it holds the same ones."""
    from . import training
    from .template_training import TEMPLATE_SEED

    spec = {"train_adult": ["adult", args.adults, 0], "train_child": ["child", args.children, 0],
            "test_adult": ["adult", args.test_adults, training.TEST_SEED_OFFSET],
            "test_child": ["child", args.test_children, training.TEST_SEED_OFFSET],
            "template": ["adult", 1, TEMPLATE_SEED]}
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if "spec" in stored and json.loads(str(stored["spec"])) == spec:
                return {key: training.CubeSet(population, stored[f"{key}_images"], stored[f"{key}_labels"],
                                              f"phantoms:{population}:seeds {first}..{first + count - 1}")
                        for key, (population, count, first) in spec.items()}
    sets = {key: training.generated_set(population, count, first, args.workers)
            for key, (population, count, first) in spec.items()}
    if cache is not None:
        from SegTuneCore.process import atomic_write

        arrays = {f"{key}_{part}": getattr(s, part) for key, s in sets.items() for part in ("images", "labels")}
        with atomic_write(cache) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, spec=json.dumps(spec), **arrays)
    return sets


def build(method: str, config_args, size, train_sets, excluded_label):
    from . import unet
    from .template_net import TemplateConfig
    from .template_training import build_network

    if method.startswith("unet"):
        return unet.UNet3D(unet.UNetConfig(width=config_args.width))
    registration = {"local_branch": "registration", "local_width": 4 * config_args.width, "global_loss": 1.0,
                    "global_pooling": "attention"} if method == "geometric+registration" else {}
    config = TemplateConfig(width=config_args.width, geometric=method != "deformation", deformation=True,
                            penalty=config_args.penalty, template_shape=size,
                            template_kind="mean" if method.endswith("-mean") else "mask",
                            global_width=4 * config_args.width, **registration)
    return build_network(config, train_sets, excluded_label)


def run(args) -> int:
    import torch

    from SegTuneCore.device import describe, select_device
    from SegTuneCore.process import atomic_write

    from . import training
    from .template_training import TEMPLATE_SEED, TemplateTrainSettings, evaluate_cases, train_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise SegTuneError(f"--methods: unknown {unknown or methods} (choose from {', '.join(METHODS)})")
    if min(args.seeds, args.adults, args.children, args.test_adults, args.test_children, args.epochs, args.threads) < 1:
        raise SegTuneError("--seeds, --epochs, --threads and every phantom count must be >= 1")
    if not args.penalty >= 0 or not args.time_budget >= 0:
        raise SegTuneError("--penalty and --time-budget must be >= 0 (a time budget of 0: none)")
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)

    factor = args.downsample
    log("phantoms")
    sets = phantom_sets(args)
    train_sets = [sets["train_adult"].downsampled(factor), sets["train_child"].downsampled(factor)]
    test_sets = {"adults": sets["test_adult"].downsampled(factor), "children": sets["test_child"].downsampled(factor)}
    excluded = sets["template"].downsampled(factor).labels[0]
    size = tuple(int(n) for n in train_sets[0].images.shape[1:])
    options = {k: v for k, v in vars(args).items()
               if k not in ("command", "experiment", "json") and isinstance(v, (int, float, str, type(None)))}
    results = {"command": "python -m KidneyUSLib experiment template " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v is not None),
               "arguments": options,
               "device": describe(device), "cube": list(size), "voxel_mm": 4.0 * factor,
               "data": training.fingerprint(train_sets + list(test_sets.values())),
               "template_seed": TEMPLATE_SEED, "runs": {}}
    previous = output / "results.json"
    if args.reuse and previous.is_file():
        kept = json.loads(previous.read_text())
        if kept.get("cube") != list(size) or kept.get("data") != results["data"]:
            raise SegTuneError(f"{previous}: its runs used other data; drop --reuse")
        results["runs"] = {m: runs for m, runs in kept["runs"].items() if m not in methods}
        results["earlier_commands"] = kept.get("earlier_commands", []) + [kept["command"]]
        if "fig_4_4" in kept and "geometric+deformation" not in methods:
            results["fig_4_4"] = kept["fig_4_4"]
    log(f"data ready: {size} cubes")
    for method in methods:
        for seed in range(args.seeds):
            network = build(method, args, size, train_sets, excluded)
            settings = TemplateTrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                             augment=0.0 if method == "unet-noaug" else 1.0, seed=seed,
                                             time_budget_s=args.time_budget or None)
            history = train_model(network, train_sets, settings, device, voxel_mm=4.0 * factor)
            run_result = {"seed": seed, "epochs": len(history.train_loss), "train_loss": history.train_loss,
                          "seconds_per_epoch": float(np.mean(history.epoch_seconds)),
                          "parameters": sum(p.numel() for p in network.parameters())}
            for name, test in test_sets.items():
                run_result[name] = evaluate_cases(network, test, device)
            results["runs"].setdefault(method, []).append(run_result)
            log(f"{method} seed {seed}: {run_result['epochs']} epochs, loss {history.train_loss[-1]:.3f}, "
                f"Dice adults {run_result['adults']['dice_mean']:.3f} children {run_result['children']['dice_mean']:.3f}")
            if method == "geometric+deformation" and seed == 0 and args.figure:
                results["fig_4_4"] = parameter_figure(
                    {p: run_result[p]["parameters"] for p in ("adults", "children")}, Path(args.figure))
            results["table"] = table(results)
            results["seconds"] = time.perf_counter() - started
            with atomic_write(output / "results.json") as tmp:
                tmp.write_text(json.dumps(results, indent=1))
            with atomic_write(output / "table.md") as tmp:
                tmp.write_text(results["table"] + "\n")
    log("done\n" + results["table"])
    if args.json:
        print(json.dumps({"table": results["table"], "fig_4_4": results.get("fig_4_4"), "seconds": results["seconds"]}))
    return 0


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m KidneyUSLib.experiments_template",
                                     description="Table 4.2 and Fig. 4.4 of the thesis on phantoms")
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    from SegTuneCore.errors import run_cli

    run_cli(main)
