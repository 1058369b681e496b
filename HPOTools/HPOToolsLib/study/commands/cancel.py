"""`cancel DIR`: stop a study's runner and workers (whole process trees) and leave it resumable."""

from __future__ import annotations

import json

from ..control import cancel_study


def configure(parser) -> None:
    parser.add_argument("study", help="study folder")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    result = cancel_study(args.study)
    if args.json:
        print(json.dumps(result))
    else:
        stopped = ", ".join(map(str, result["stopped"])) or "none running"
        print(f"cancelled {result['study']}: stopped pid(s) {stopped}; {len(result['requeued'])} trial(s) re-queued; "
              f"`resume` continues it")
    return 0
