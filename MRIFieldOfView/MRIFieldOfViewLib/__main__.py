"""`python -m MRIFieldOfViewLib COMMAND ...`"""

from SegTuneCore.cli import dispatch
from SegTuneCore.errors import run_cli

COMMANDS = {
    "phantom": ("MRIFieldOfViewLib.phantom_cli", "generate a whole-body MRI phantom and its per-slice truth"),
    "train": ("MRIFieldOfViewLib.train_cli", "train a slice classifier of the Table 2.7 family"),
    "evaluate": ("MRIFieldOfViewLib.evaluate_cli", "evaluate a slice classifier on held-out phantoms"),
    "localize": ("MRIFieldOfViewLib.localize_cli", "localize body regions in an axial MRI volume"),
    "bench": ("MRIFieldOfViewLib.bench", "slices per second and localize time against a fp32 eager baseline"),
    "demo": ("MRIFieldOfViewLib.demo", "phantom -> localize with the bundled model -> demo-output/"),
}


def main(argv=None) -> int:
    return dispatch("python -m MRIFieldOfViewLib", "MRI field-of-view localisation for SegTune.", COMMANDS, argv)


if __name__ == "__main__":
    run_cli(main)
