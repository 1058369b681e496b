"""`export DIR --csv`: every trial as one CSV row (parameters, value, state, timing, metrics)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from SegTuneCore.process import atomic_write

from ..storage import StudyStore


def configure(parser) -> None:
    parser.add_argument("study", help="study folder")
    fmt = parser.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per trial")
    fmt.add_argument("--json", action="store_true", help="JSON list of trials")
    parser.add_argument("-o", "--output", help="write to this file (default: standard output)")


def to_csv(trials, space_names: list[str]) -> str:
    metric_names = sorted({k for t in trials for k in t.metrics})
    columns = (["trial", "state", "value"] + [f"param.{n}" for n in space_names] + [f"metric.{n}" for n in metric_names]
               + ["budget", "error", "worker", "device", "attempts", "started", "finished", "duration_s", "artifact"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for t in trials:
        duration = t.finished - t.started if t.finished and t.started else None
        writer.writerow([t.number, t.state.value, t.value] + [t.params.get(n, "") for n in space_names]
                        + [t.metrics.get(n, "") for n in metric_names]
                        + [t.budget, t.error, t.worker, t.device, t.attempts, t.started, t.finished, duration,
                           t.artifact])
    return buffer.getvalue()


def run(args) -> int:
    store = StudyStore.open(args.study, read_only=True)
    try:
        trials = store.trials()
        names = list(store.spec()["space"])
    finally:
        store.close()
    text = to_csv(trials, names) if args.csv else json.dumps([t.summary() for t in trials], indent=2) + "\n"
    if args.output:
        with atomic_write(Path(args.output)) as tmp:
            tmp.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
