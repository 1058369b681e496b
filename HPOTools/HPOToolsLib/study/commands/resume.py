"""`resume DIR`: continue a study after a crash, kill -9, cancel or reboot; `--join` adds a worker
to a running study (several workers on one machine share its database)."""

from __future__ import annotations

import json

from ..runner import check_can_run
from ..spec import parse_spec
from ..storage import StudyStore
from .common import add_runner_arguments, check_runner_arguments, start


def configure(parser) -> None:
    parser.add_argument("study", help="study folder")
    parser.add_argument("--join", action="store_true", help="add a worker to a study that is running")
    add_runner_arguments(parser)


def run(args) -> int:
    store = StudyStore.open(args.study)
    try:
        spec = parse_spec(store.spec())
        if store.get("state") == "finished" and not args.join:
            message = f"{store.folder}: study already finished ({store.get('finish_reason')}); nothing to do"
            print(json.dumps({"study": str(store.folder), "state": "finished"}) if args.json else message)
            return 0
        if not args.detached:
            check_can_run(store, join=args.join)
        check_runner_arguments(args, spec)
    finally:
        store.close()
    return start(args, store.folder, join=args.join)
