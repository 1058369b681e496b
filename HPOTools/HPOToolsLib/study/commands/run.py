"""`run SPEC.json --study DIR`: create a study from a spec and run it (foreground or --background)."""

from __future__ import annotations

from ..runner import create_study
from ..spec import load_spec_file, parse_spec
from .common import add_runner_arguments, check_runner_arguments, start


def configure(parser) -> None:
    parser.add_argument("spec", help="study spec, a JSON file (see docs/HPOTools-studies.md)")
    parser.add_argument("--study", required=True, help="the new study folder (must not exist or be empty)")
    add_runner_arguments(parser)


def run(args) -> int:
    spec = parse_spec(load_spec_file(args.spec))
    check_runner_arguments(args, spec)
    return start(args, create_study(args.study, spec.raw))
