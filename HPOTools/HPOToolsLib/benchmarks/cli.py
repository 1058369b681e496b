"""`python -m HPOToolsLib bench NAME [options] [--json]`: dispatch to one benchmark module.

Each benchmark is a module ``HPOToolsLib.benchmarks.<module>`` exposing ``configure(parser)``
(adds its own options) and ``run(args) -> int``. Only the chosen module is imported. Every bench
gets ``--json`` here (one JSON object on stdout instead of the text report); a bench prints
``environment()`` (device, versions) with its results, and ``emit(args, payload, text)`` does both
consistently.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys

BENCHES = {
    "random-bound": ("random_bound", "Table 2.2: random-search draws for the top-alpha fraction with probability p"),
    "latency": ("latency", "seconds per BO suggestion vs n: incremental Cholesky, full refactorisation, Optuna"),
    "synthetic": ("synthetic", "regret on Branin, Hartmann6, BBOB: random, our BO, Optuna TPE and GPSampler"),
    "replay": ("replay", "Table 2.3 replay over finite tables of trained models: BO vs random orders"),
    "hyperband": ("hyperband_bench", "Hyperband vs BO vs Hyperband+BO (thesis, constant liar), best loss vs budget"),
}


class _LazyBenchParsers(argparse._SubParsersAction):
    """Configure a bench's parser only when it is the one chosen (imports only that module),
    then give it ``--json`` unless it declared it itself."""

    def __call__(self, parser, namespace, values, option_string=None):
        name = values[0]
        if name in BENCHES:
            module_name = f"{__package__}.{BENCHES[name][0]}"
            bench_parser = self.choices[name]
            if not bench_parser.get_default("_bench_module"):
                module = importlib.import_module(module_name)
                module.configure(bench_parser)
                if not any("--json" in action.option_strings for action in bench_parser._actions):
                    bench_parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
                bench_parser.set_defaults(_bench_module=module_name)
        super().__call__(parser, namespace, values, option_string)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="NAME", required=True, action=_LazyBenchParsers)
    for name, (_, help_text) in BENCHES.items():
        sub.add_parser(name, help=help_text, description=help_text)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(args._bench_module)
    return int(module.run(args) or 0)


def environment() -> dict:
    """Device and versions for a benchmark record (our GP code runs on the CPU with numpy/scipy)."""
    import numpy
    import scipy

    from SegTuneCore.device import describe

    record = describe("cpu")
    record.update(scipy=scipy.__version__, numpy=numpy.__version__, python=platform.python_version())
    try:
        import optuna
        record["optuna"] = optuna.__version__
    except ImportError:
        pass
    return record


def emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    """Print the result: the payload (with ``environment`` added) as JSON with --json, else text."""
    payload = {**payload, "environment": environment()}
    if getattr(args, "json", False):
        json.dump(payload, sys.stdout, indent=None, default=float)
        sys.stdout.write("\n")
    else:
        env = payload["environment"]
        sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.write(f"device: {env.get('device')} ({env.get('device_name')}); python {env.get('python')}, "
                         f"numpy {env.get('numpy')}, scipy {env.get('scipy')}"
                         + (f", optuna {env['optuna']}" if "optuna" in env else "") + "\n")
    sys.stdout.flush()
