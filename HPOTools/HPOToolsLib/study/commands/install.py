"""`install DIR [--trial ID] [--activate]`: the best (or chosen) trial's model into the model store."""

from __future__ import annotations

import json

from ..install import install_trial
from .common import positive_int


def configure(parser) -> None:
    parser.add_argument("study", help="study folder")
    parser.add_argument("--trial", type=positive_int, help="trial number (default: the best complete trial)")
    parser.add_argument("--activate", action="store_true", help="make it the active model of its task")
    parser.add_argument("--store", help="model store folder (default: $SEGTUNE_HOME/models or the platform cache)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    entry, number, recorded = install_trial(args.study, trial=args.trial, activate=args.activate,
                                            store_root=args.store)
    if args.json:
        print(json.dumps({"trial": number, **entry.summary(), "recorded_in_study": recorded}))
    else:
        print(f"installed trial {number} as {entry.task} {entry.version}{' (active)' if entry.active else ''} "
              f"at {entry.path}" + ("" if recorded else " (the study is read-only: not recorded in its events)"))
    return 0
