"""`python -m KidneyUSLib experiment transfer`: the structure of Table 3.1 on phantoms.

For every seed (which, as in §3.3.2, changes the training data drawn and the weight
initialisation; the held-out test phantoms stay the same so seeds are comparable):
  Adults / Children / Joint baselines  U-Nets trained on adults, children, both (oversampled)
  Fine-tuning                          the adult baseline retrained on children (layers: --finetune-layers)
  Fixed convolutions                   a 3x3x3 conv after every sampling layer, adult net frozen
  Geometric input (GI), Intensity, GI + Intensity   transfer layers (§3.4), adult net frozen
Columns: parameters added to the adult network (the network's own size for baselines), training
time per epoch, Dice on held-out adults and children, mean ± std over seeds.
Writes results.json (every run) and table.md under --output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from SegTuneCore.process import add_progress_argument

STRATEGIES = ("adults", "children", "joint", "finetune", "fixed", "geometric", "intensity", "geometric+intensity")
ROW_NAMES = {
    "adults": "Adults Baseline", "children": "Children Baseline", "joint": "Joint Baseline",
    "finetune": "Fine-tuning", "fixed": "Fixed Convolutions", "geometric": "Geometric Input (GI)",
    "intensity": "Intensity", "geometric+intensity": "GI + Intensity",
}


def configure(parser) -> None:
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    parser.add_argument("--adults", type=int, default=16, help="adult training phantoms per seed")
    parser.add_argument("--children", type=int, default=4, help="child training phantoms per seed")
    parser.add_argument("--test", type=int, default=6, help="held-out phantoms per population")
    parser.add_argument("--width", type=int, default=4, help="U-Net base width")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the baselines")
    parser.add_argument("--transfer-epochs", type=int, default=12, help="epochs of fine-tuning and transfer layers")
    parser.add_argument("--finetune-layers", default="all", help="all, first:N or last:N (§3.3.3)")
    parser.add_argument("--crop", type=int, default=0, help="training crop side around the kidney (0: whole cubes)")
    parser.add_argument("--downsample", type=int, choices=(1, 2), default=1,
                        help="2: run at 8 mm (40^3 cubes) instead of 4 mm, 8x cheaper (the CPU scale)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--transfer-lr", type=float, default=1e-3)
    parser.add_argument("--strategy-lr", default="", metavar="STRATEGY=LR,...",
                        help="learning rates for single strategies, e.g. fixed=3e-4,finetune=1e-3 (the others: "
                             "--lr for the baselines, --transfer-lr for the rest)")
    parser.add_argument("--test-first-seed", type=int, default=None, metavar="SEED",
                        help="first seed of the held-out phantoms (default: the test seeds of training; another "
                             "value gives a validation set, e.g. to choose --strategy-lr without the test set)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma list, from: " + ", ".join(STRATEGIES))
    parser.add_argument("--workers", type=int, default=1, help="processes generating phantoms")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for results.json and table.md")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_progress_argument(parser)


def _mean_std(values: list[float]) -> tuple[float, float]:
    import numpy as np

    return float(np.mean(values)), float(np.std(values))


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for strategy in STRATEGIES:
        chosen = [r for r in runs if r["strategy"] == strategy]
        if not chosen:
            continue
        row = {"strategy": strategy, "name": ROW_NAMES[strategy], "seeds": len(chosen),
               "added_parameters": chosen[0]["added_parameters"],
               "seconds_per_epoch": _mean_std([r["seconds_per_epoch"] for r in chosen])[0]}
        for population in ("adults", "children"):
            row[f"dice_{population}"], row[f"dice_{population}_std"] = _mean_std([r[f"dice_{population}"] for r in chosen])
        rows.append(row)
    return rows


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def markdown_table(rows: list[dict]) -> str:
    best = {p: max(r[f"dice_{p}"] for r in rows) for p in ("adults", "children")}
    lines = ["| Strategy | # params | Time / epoch (s) | Dice Adults | Dice Children | Seeds |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for p in ("adults", "children"):
            text = f"{r[f'dice_{p}']:.3f} ± {r[f'dice_{p}_std']:.3f}"
            cells.append(f"**{text}**" if r[f"dice_{p}"] == best[p] else text)
        lines.append(f"| {r['name']} | {_count(r['added_parameters'])} | {r['seconds_per_epoch']:.1f} | {cells[0]} | {cells[1]} "
                     f"| {r['seeds']} |")
    return "\n".join(lines) + "\n"


def write_results(output: Path, runs: list[dict], args, seconds: float, run_record: dict) -> list[dict]:
    """results.json (settings, summary rows, every run) and table.md, rewritten after every run so
    an interrupted experiment keeps what it finished."""
    from SegTuneCore.process import atomic_write

    rows = summarise(runs)
    result = {"experiment": "transfer", "settings": {k: v for k, v in vars(args).items() if k != "experiment_run"},
              "rows": rows, "runs": runs, "seconds": seconds, "run": run_record}
    output.mkdir(parents=True, exist_ok=True)
    with atomic_write(output / "results.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    with atomic_write(output / "table.md") as tmp:
        tmp.write_text(markdown_table(rows))
    return rows


def strategy_learning_rates(text: str) -> dict[str, float]:
    """"fixed=3e-4,finetune=1e-3" -> {"fixed": 3e-4, "finetune": 1e-3}; a clear error otherwise."""
    from SegTuneCore.errors import SegTuneError

    rates = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        strategy, _, value = item.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = float("nan")
        if strategy not in STRATEGIES or not rate > 0:
            raise SegTuneError(f"--strategy-lr: {item!r} is not STRATEGY=LR with a strategy from "
                               f"{', '.join(STRATEGIES)} and a learning rate > 0")
        rates[strategy] = rate
    return rates


def run(args) -> int:
    import numpy as np
    import torch

    from SegTuneCore.device import describe, select_device
    from SegTuneCore.errors import SegTuneError
    from SegTuneCore.process import ProgressReporter

    from . import training, transfer, unet

    learning_rates = strategy_learning_rates(args.strategy_lr)
    first_test = training.TEST_SEED_OFFSET if args.test_first_seed is None else args.test_first_seed
    if first_test < 2 * max(args.adults, args.children):  # the training pools use seeds 0..2N-1
        raise SegTuneError(f"--test-first-seed {first_test}: held-out phantoms would share seeds with the training pool "
                           f"(use >= {2 * max(args.adults, args.children)})")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown or not strategies:
        raise SegTuneError(f"--strategies: unknown {unknown or strategies} (choose from {', '.join(STRATEGIES)})")
    if args.seeds < 1 or args.adults < 1 or args.children < 1 or args.test < 1:
        raise SegTuneError("--seeds, --adults, --children and --test must be >= 1")
    needs_adult_base = any(s not in ("adults", "children", "joint") for s in strategies)
    if needs_adult_base and "adults" not in strategies:
        strategies.insert(0, "adults")  # every transfer starts from the adult baseline
    device = select_device(args.device)
    run_record = describe(device)
    reporter = ProgressReporter(args.progress)
    started = time.perf_counter()

    # One pool per population; each seed draws its own training subset (§3.3.2: the seed changes the split).
    reporter.log("generating phantoms")
    def phantoms(population: str, count: int, first_seed: int):
        return training.generated_set(population, count, first_seed, args.workers).downsampled(args.downsample)

    pool_adults = phantoms("adult", 2 * args.adults, 0)
    pool_children = phantoms("child", 2 * args.children, 0)
    tests = {"adults": phantoms("adult", args.test, first_test), "children": phantoms("child", args.test, first_test)}

    def settings(seed: int, epochs: int, lr: float) -> training.TrainSettings:
        return training.TrainSettings(epochs=epochs, batch_size=args.batch_size, lr=lr, crop=args.crop or None,
                                      seed=seed)

    def fresh_unet(seed: int) -> unet.UNet3D:
        torch.manual_seed(seed)
        return unet.UNet3D(unet.UNetConfig(width=args.width))

    runs = []
    total = args.seeds * len(strategies)
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        adults = pool_adults.subset(rng.permutation(len(pool_adults))[: args.adults])
        children = pool_children.subset(rng.permutation(len(pool_children))[: args.children])
        adult_state = None
        for strategy in strategies:
            if strategy in ("adults", "children", "joint"):
                network = fresh_unet(seed)
                data = {"adults": [adults], "children": [children], "joint": [adults, children]}[strategy]
                config = settings(seed, args.epochs, learning_rates.get(strategy, args.lr))
                added = unet.count_parameters(network)
            else:
                network = fresh_unet(seed)
                network.load_state_dict(adult_state)
                if strategy == "finetune":
                    training.set_trainable(network, args.finetune_layers)
                    added = 0
                else:
                    network = transfer.TransferUNet(network, transfer.TransferConfig(
                        geometric="geometric" in strategy, intensity="intensity" in strategy,
                        fixed_convolutions=strategy == "fixed",
                        predictor_width=transfer.default_predictor_width(args.width)))
                    added = network.added_parameter_count()
                data = [children]
                config = settings(seed, args.transfer_epochs, learning_rates.get(strategy, args.transfer_lr))
            history = training.train_network(network, data, config, device)
            if strategy == "adults":
                adult_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            record = {"strategy": strategy, "seed": seed, "lr": config.lr, "added_parameters": added,
                      "seconds_per_epoch": float(np.mean(history.epoch_seconds)), "final_loss": history.train_loss[-1]}
            for population, test in tests.items():
                record[f"dice_{population}"] = training.evaluate(network, test, device)["dice_mean"]
            runs.append(record)
            write_results(Path(args.output), runs, args, time.perf_counter() - started, run_record)
            reporter.progress(len(runs) / total, f"seed {seed} {strategy}: adults {record['dice_adults']:.3f} "
                                                  f"children {record['dice_children']:.3f}")
            reporter.log(json.dumps(record))

    rows = write_results(Path(args.output), runs, args, time.perf_counter() - started, run_record)
    reporter.result({"output": args.output, "rows": rows})
    if args.json:
        if args.progress != "json":
            print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}, indent=2))
    else:
        print(markdown_table(rows))
    return 0
