"""`python -m HPOToolsLib COMMAND ...`"""

from SegTuneCore.cli import dispatch
from SegTuneCore.errors import run_cli

COMMANDS = {
    "bench": ("HPOToolsLib.benchmarks.cli", "run a benchmark (random-bound, latency, synthetic, replay, hyperband)"),
    "run": ("HPOToolsLib.study.commands.run", "create a study from a spec and run it (--background to detach)"),
    "resume": ("HPOToolsLib.study.commands.resume", "continue a stopped or crashed study, or --join a running one"),
    "status": ("HPOToolsLib.study.commands.status", "state, runner pid, trial counts and best trial of a study"),
    "cancel": ("HPOToolsLib.study.commands.cancel", "stop a study's runner and workers; the study stays resumable"),
    "list": ("HPOToolsLib.study.commands.listing", "the studies in a folder"),
    "export": ("HPOToolsLib.study.commands.export", "a study's trials as CSV or JSON"),
    "install": ("HPOToolsLib.study.commands.install", "install the best (or a chosen) trial's model in the model store"),
    "report": ("HPOToolsLib.study.commands.report", "loss-per-trial plot with the running best, and a summary table"),
}


def main(argv=None) -> int:
    return dispatch("python -m HPOToolsLib", "Hyper-parameter optimisation for SegTune.", COMMANDS, argv)


if __name__ == "__main__":
    run_cli(main)
