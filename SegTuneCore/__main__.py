"""`python -m SegTuneCore COMMAND ...`: Slicer's readers and writers and the model store, headless."""

from SegTuneCore.cli import dispatch
from SegTuneCore.errors import run_cli

COMMANDS = {
    "info": ("SegTuneCore.info_cli", "size, spacing, origin, IJK-to-RAS and scalar type of a volume as MRML loads it"),
    "convert": ("SegTuneCore.convert_cli", "convert a volume or segmentation (NRRD, NIfTI, MHA, .seg.nrrd) through MRML"),
    "models": ("SegTuneCore.models_cli", "list, show, install, verify, activate or remove models"),
}


def main(argv=None) -> int:
    return dispatch("python -m SegTuneCore", "SegTune shared tools.", COMMANDS, argv)


if __name__ == "__main__":
    run_cli(main)
