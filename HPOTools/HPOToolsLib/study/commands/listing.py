"""`list ROOT`: the studies in a folder (ROOT itself and its sub-folders, two levels deep)."""

from __future__ import annotations

import json
from pathlib import Path

from SegTuneCore.errors import SegTuneError

from ..status import study_status
from ..storage import StudyStore, is_study


def configure(parser) -> None:
    parser.add_argument("root", help="folder holding study folders")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def find_studies(root: Path) -> list[Path]:
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    candidates += [q for p in candidates[1:] for q in sorted(p.iterdir()) if q.is_dir()]
    return [p for p in candidates if is_study(p)]


def run(args) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise SegTuneError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    rows = []
    for folder in find_studies(root):
        try:
            store = StudyStore.open(folder, read_only=True)
            try:
                rows.append(study_status(store))
            finally:
                store.close()
        except SegTuneError as exc:
            rows.append({"study": str(folder), "state": "unreadable", "error": str(exc)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no studies in {root}")
    for row in rows:
        if row["state"] == "unreadable":
            print(f"{row['study']:50s} unreadable: {row['error']}")
            continue
        c, best = row["trials"], row["best"]
        best_text = f"best {best['value']:.6g} (trial {best['trial']})" if best else "no result yet"
        print(f"{row['study']:50s} {row['state']:12s} {c['complete']:4d} complete {c['failed']:3d} failed  "
              f"{row['objective']} / {row['method']}  {best_text}")
    return 0
