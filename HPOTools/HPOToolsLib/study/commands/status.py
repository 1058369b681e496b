"""`status DIR`: state, runner pid, trial counts and the best trial of a study."""

from __future__ import annotations

import json

from ..status import study_status
from ..storage import StudyStore


def configure(parser) -> None:
    parser.add_argument("study", help="study folder")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    store = StudyStore.open(args.study, read_only=True)
    try:
        status = study_status(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    c = status["trials"]
    print(f"study     {status['study']}")
    print(f"state     {status['state']}" + (f" (runner pid {status['pid']} on {status['host']})" if status["pid"] else ""))
    print(f"objective {status['objective']}  method {status['method']}  budget {status['budget']}  seed {status['seed']}")
    print(f"trials    {c['complete']} complete, {c['failed']} failed, {c['running']} running, {c['queued']} queued")
    best = status["best"]
    print(f"best      trial {best['trial']}: {best['value']:.6g} {json.dumps(best['params'])}" if best else "best      none yet")
    return 0
