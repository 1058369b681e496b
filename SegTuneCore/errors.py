"""User-facing errors and the CLI wrapper that turns them into one-line messages."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence


class SegTuneError(Exception):
    """An expected failure (bad input, missing model, ...) reported to the user in one line."""


def one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return text or "unknown error"


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Run `main(argv)` and exit: expected errors become `error: ...` on stderr with exit code 2."""
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except (SegTuneError, OSError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(int(code or 0))
