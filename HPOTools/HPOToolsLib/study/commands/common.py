"""Options and output shared by the study commands."""

from __future__ import annotations

import argparse
import json
import sys

from SegTuneCore.process import add_progress_argument

from ..control import launch_background
from ..runner import make_executor, run_study
from ..spec import StudySpec


def add_runner_arguments(parser) -> None:
    parser.add_argument("--background", action="store_true",
                        help="detach: run in a new session (log in STUDY/runner.log) and return at once")
    parser.add_argument("--workers", type=int, help="trials run at once (default: one per device; Ray: one per CPU)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, or a comma-separated list: one worker "
                                         "per device")
    parser.add_argument("--ray-address", help="run every trial as a Ray task: a cluster address (ray://host:10001, "
                                              "auto) or 'local' to start a local Ray")
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON")
    parser.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)
    add_progress_argument(parser)


def check_runner_arguments(args, spec: StudySpec) -> None:
    """Fail before anything is created or started (device list, Ray installed)."""
    make_executor(spec, workers=args.workers, device=args.device, ray_address=args.ray_address)


def runner_args(args) -> list[str]:
    out = []
    for flag, value in (("--workers", args.workers), ("--device", args.device), ("--ray-address", args.ray_address)):
        if value is not None:
            out += [flag, str(value)]
    return out


def start(args, folder, *, join: bool = False) -> int:
    if args.background:
        info = launch_background(folder, runner_args(args), join=join)
        print(json.dumps(info) if args.json else f"started {'worker' if join else 'runner'} pid {info['pid']} "
              f"for {info['study']} (log: {info['log']})")
        return 0
    summary = run_study(folder, workers=args.workers, device=args.device, ray_address=args.ray_address,
                        join=join, progress=args.progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif args.progress != "json":
        print(describe_summary(summary))
    if summary["stopped"]:
        print(f"error: study stopped ({summary['stopped']}); continue it with `python -m HPOToolsLib resume "
              f"{summary['study']}`", file=sys.stderr)
        return 1
    return 0


def describe_summary(summary: dict) -> str:
    c = summary["trials"]
    best = summary.get("best")
    text = (f"{summary['study']}: {summary['state']} — {c['complete']} complete, {c['failed']} failed, "
            f"{c['running']} running, {c['queued']} queued")
    if best:
        text += f"; best trial {best['trial']}: {best['value']:.6g} {json.dumps(best['params'])}"
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value

