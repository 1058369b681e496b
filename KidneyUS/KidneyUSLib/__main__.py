"""`python -m KidneyUSLib COMMAND ...`"""

from SegTuneCore.cli import dispatch
from SegTuneCore.errors import run_cli

COMMANDS = {
    "phantom": ("KidneyUSLib.phantom_cli", "generate a 3D ultrasound kidney phantom and its label"),
    "segment": ("KidneyUSLib.segment_cli", "segment the kidney in a 3D ultrasound volume"),
    "train": ("KidneyUSLib.train_cli", "train a U-Net, fine-tune it, or train transfer layers"),
    "experiment": ("KidneyUSLib.experiment_cli", "reproduce the structure of the thesis tables on phantoms"),
    "bench": ("KidneyUSLib.bench", "80^3 forward latency and end-to-end segment time"),
    "bench-template": ("KidneyUSLib.bench_template", "template segmenter vs U-Net time per volume, same run"),
    "evaluate": ("KidneyUSLib.evaluate_cli", "models on held-out native phantoms: Dice, components, folded voxels"),
    "demo": ("KidneyUSLib.demo", "phantoms -> segment with the bundled model -> demo-output/"),
}


def main(argv=None) -> int:
    return dispatch("python -m KidneyUSLib", "Kidney segmentation in 3D ultrasound for SegTune.", COMMANDS, argv)


if __name__ == "__main__":
    run_cli(main)
