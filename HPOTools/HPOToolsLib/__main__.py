"""`python -m HPOToolsLib COMMAND ...`"""

from SegTuneCore.cli import dispatch
from SegTuneCore.errors import run_cli

COMMANDS = {
    "bench": ("HPOToolsLib.benchmarks.cli", "run a benchmark (random-bound, latency, synthetic, replay, hyperband)"),
}


def main(argv=None) -> int:
    return dispatch("python -m HPOToolsLib", "Hyper-parameter optimisation for SegTune.", COMMANDS, argv)


if __name__ == "__main__":
    run_cli(main)
