"""Sub-command dispatch shared by every `python -m <Lib>` entry point.

Each command lives in its own module exposing `configure(parser)` and `run(args) -> int`, so
the `__main__.py` files are only a table of commands. Only the chosen command's module is
imported: `--help` stays fast and a command never pays for another's heavy imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Mapping, Sequence


def dispatch(prog: str, description: str, commands: Mapping[str, tuple[str, str]],
             argv: Sequence[str] | None = None) -> int:
    """commands maps a command name to (module path, one-line help)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    command_parsers = {
        name: sub.add_parser(name, help=help_text, description=help_text)
        for name, (_, help_text) in commands.items()
    }
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    if chosen not in commands:
        parser.parse_args(args_list)  # prints usage or help and exits
        return 2
    module = importlib.import_module(commands[chosen][0])
    module.configure(command_parsers[chosen])
    return int(module.run(parser.parse_args(args_list)) or 0)
