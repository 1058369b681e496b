"""`report DIR`: PNG of loss per trial with the running best (thesis Fig. 2.15) + summary table."""

from __future__ import annotations

import json
from pathlib import Path

from ..report import write_report


def configure(parser) -> None:
    parser.add_argument("study", help="study folder")
    parser.add_argument("-o", "--output", help="PNG path (default: STUDY/report.png; the table goes next to it as .md)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    result = write_report(args.study, Path(args.output) if args.output else None)
    print(json.dumps(result) if args.json else f"wrote {result['png']} and {result['table']}")
    return 0
