"""User-facing errors and the CLI wrapper that turns them into one-line messages."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence


class SegTuneError(Exception):
    """An expected failure (bad input, missing model, ...) reported to the user in one line."""


def one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return text or "unknown error"


def out_of_memory(exc: BaseException) -> str | None:
    """For a host or GPU out-of-memory error, a one-line message that says what to change; else None."""
    text = one_line(exc)[:200]
    # torch.OutOfMemoryError by name: this module must not import torch
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        return (f"out of GPU memory ({text}); run on the CPU (--device cpu), close other programs using the GPU, "
                f"or lower --batch-size or --crop where the command has them")
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "not enough memory" in text:
        return (f"out of memory ({text}); close other programs, crop or resample the input, "
                f"or lower --batch-size or --workers where the command has them")
    return None


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Run `main(argv)` and exit: expected errors and out-of-memory errors become one line `error: ...`
    on stderr with exit code 2; anything else keeps its traceback."""
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except (SegTuneError, OSError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except (MemoryError, RuntimeError) as exc:
        message = out_of_memory(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    sys.exit(int(code or 0))
