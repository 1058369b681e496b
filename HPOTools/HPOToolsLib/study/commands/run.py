"""`run SPEC.json --study DIR`: create a study from a spec and run it (foreground or --background)."""

from __future__ import annotations

import json

from SegTuneCore.process import atomic_write

from ..runner import versions
from ..spec import load_spec_file, parse_spec
from ..storage import StudyStore
from .common import add_runner_arguments, check_runner_arguments, start


def configure(parser) -> None:
    parser.add_argument("spec", help="study spec, a JSON file (see docs/HPOTools-studies.md)")
    parser.add_argument("--study", required=True, help="the new study folder (must not exist or be empty)")
    add_runner_arguments(parser)


def run(args) -> int:
    spec = parse_spec(load_spec_file(args.spec))
    check_runner_arguments(args, spec)
    store = StudyStore.create(args.study, spec.raw, info={"versions": versions()})
    try:
        with atomic_write(store.folder / "spec.json") as tmp:
            tmp.write_text(json.dumps(spec.raw, indent=2) + "\n", encoding="utf-8")
    finally:
        store.close()
    return start(args, store.folder)
