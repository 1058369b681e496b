"""`report`: loss per trial in training order with the running best (as thesis Fig. 2.15), and a
summary table (Markdown) of the study."""

from __future__ import annotations

import math
from pathlib import Path

from SegTuneCore.geometry import check_outputs
from SegTuneCore.process import atomic_write

from ..trials import TrialState
from .status import best_trial, counts
from .storage import StoredTrial, StudyStore


def training_order(trials: list[StoredTrial]) -> list[StoredTrial]:
    """Finished trials in the order their results arrived."""
    finished = [t for t in trials if t.state.is_finished]
    return sorted(finished, key=lambda t: (t.finished or math.inf, t.number))


def plot_trials(trials: list[StoredTrial], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = training_order(trials)
    xs_ok = [i + 1 for i, t in enumerate(ordered) if t.state.has_value and t.value is not None]
    ys_ok = [t.value for t in ordered if t.state.has_value and t.value is not None]
    best_x, best_y, running = [], [], math.inf
    for i, t in enumerate(ordered):
        if t.state == TrialState.COMPLETE and t.value is not None and t.value < running:
            running = t.value
        if math.isfinite(running):
            best_x.append(i + 1)
            best_y.append(running)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(xs_ok, ys_ok, "o", ms=4, color="tab:blue", alpha=0.75, label="trial loss")
    if best_x:
        ax.step(best_x, best_y, where="post", color="tab:red", lw=2, label="best so far")
    failed = [i + 1 for i, t in enumerate(ordered) if t.state.is_failure]
    if failed:
        top = max(ys_ok) if ys_ok else 1.0
        ax.plot(failed, [top] * len(failed), "x", color="black", ms=7, label="failed (no value)")
    ax.set_xlabel("trial (training order)")
    ax.set_ylabel("objective (loss)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(store: StudyStore, trials: list[StoredTrial], top: int = 10) -> str:
    spec = store.spec()
    c = counts(trials)
    best = best_trial(trials)
    lines = [f"# Study {store.folder.name}", "",
             f"- objective: `{spec['objective']}`, method: `{spec['method']}`, seed {spec['seed']}, "
             f"budget {spec['budget']}",
             f"- trials: {c['complete']} complete, {c['failed']} failed, {c['running']} running, {c['queued']} queued",
             f"- best: trial {best.number}, value {best.value:.6g}" if best else "- best: none yet", ""]
    ranked = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                    key=lambda t: (t.value, t.number))[:top]
    names = list(spec["space"])
    lines.append("| rank | trial | value | " + " | ".join(names) + " | duration (s) |")
    lines.append("|---|---|---|" + "---|" * len(names) + "---|")
    for rank, t in enumerate(ranked, 1):
        duration = f"{t.finished - t.started:.1f}" if t.finished and t.started else ""
        cells = [_format(t.params.get(n, "–")) for n in names]
        lines.append(f"| {rank} | {t.number} | {t.value:.6g} | " + " | ".join(cells) + f" | {duration} |")
    failures = [t for t in trials if t.state.is_failure]
    if failures:
        lines += ["", "Failed trials:", ""]
        lines += [f"- trial {t.number}: {t.state.value}: {t.error}" for t in failures]
    return "\n".join(lines) + "\n"


def write_report(folder, output: Path | None = None) -> dict:
    store = StudyStore.open(folder, read_only=True)
    try:
        trials = store.trials()
        spec = store.spec()
        png = Path(output) if output else store.folder / "report.png"
        table = png.with_suffix(".md")
        check_outputs([png, table])  # e.g. a study on a read-only mount: say to use -o
        title = f"{spec.get('name') or store.folder.name}: {spec['method']} on {spec['objective']}"
        plot_trials(trials, title, png)
        with atomic_write(table) as tmp:
            tmp.write_text(summary_table(store, trials), encoding="utf-8")
        return {"png": str(png), "table": str(table), "trials": counts(trials)}
    finally:
        store.close()
