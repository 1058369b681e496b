"""What a slice classifier predicts on the real scans available here (sanity check of the phantom).

    python -m MRIFieldOfViewLib.real_scans [--model NAME|FOLDER] [--json]

Scans (each skipped when absent): Colin27 T1 head (Debian mricron-data), the Siemens MR abdomen
slice of pydicom-data, pydicom-data's small MR head slices, and the abdomen/pelvis CT of
../shared/data (a CT, not an MRI: a test of how far the contrast can stray). For each: the share
of slices per predicted class and the argmax per slice from inferior to superior
(L legs, P pelvis, A abdomen, C chest, H head, S spine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from SegTuneCore.errors import SegTuneError, run_cli

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
LETTERS = "LPACHS"


def _dicom_volume(name: str):
    """A pydicom-data file as a Volume (single or multi-frame; LPS-stored axial)."""
    import pydicom
    from pydicom.data import get_testdata_file

    from SegTuneCore.geometry import Volume

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(name)
    dataset = pydicom.dcmread(path)
    pixels = np.asarray(dataset.pixel_array, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[None]
    spacing = [float(v) for v in dataset.get("PixelSpacing", [1.0, 1.0])]
    thickness = float(dataset.get("SliceThickness", 1.0) or 1.0)
    orientation = np.array(dataset.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
    row_dir, column_dir = orientation[:3], orientation[3:]  # LPS directions of i (along a row) and j
    normal = np.cross(row_dir, column_dir)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    directions = lps_to_ras @ np.column_stack([row_dir, column_dir, normal])
    origin = lps_to_ras @ np.array(dataset.get("ImagePositionPatient", [0, 0, 0]), dtype=np.float64)
    return Volume.from_geometry(pixels, (spacing[1], spacing[0], thickness), origin, directions)


def scans():
    from SegTuneCore.geometry import read_volume

    yield "Colin27 T1 head (mricron-data ch2.nii.gz)", "head", lambda: read_volume(COLIN27)
    yield "Siemens MR abdomen slice (pydicom-data MR-SIEMENS-DICOM-WithOverlays.dcm)", "abdomen", \
        lambda: _dicom_volume("MR-SIEMENS-DICOM-WithOverlays.dcm")
    yield "MR head, 10 frames 64x64 (pydicom-data emri_small.dcm)", "head", lambda: _dicom_volume("emri_small.dcm")
    yield "CT abdomen + pelvis (shared data, CT not MR)", "abdomen -> pelvis", \
        lambda: read_volume(SHARED / "totalseg_ct_abdomen_pelvis.nii.gz")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MRIFieldOfViewLib.real_scans", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model version, bundled name or folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from SegTuneCore.models import ModelStore

    from .classifier import TASK, SliceClassifier
    from .preprocessing import axial_slices
    from .regions import REGIONS

    entry = ModelStore().resolve(TASK, args.model)
    classifier = SliceClassifier.load(entry, "cpu")
    report = []
    for name, expected, load in scans():
        try:
            volume = load()
        except (OSError, ImportError, SegTuneError) as exc:
            report.append({"scan": name, "skipped": str(exc).splitlines()[0]})
            continue
        stack = axial_slices(volume)
        probabilities = classifier.predict(stack.images)
        order = stack.physical_order()
        predicted = probabilities[order].argmax(1)
        shares = {REGIONS[c]: round(float((predicted == c).mean()), 3) for c in range(len(REGIONS))}
        report.append({"scan": name, "expected": expected, "slices": len(stack), "shares": shares,
                       "inferior_to_superior": "".join(LETTERS[c] for c in predicted),
                       "mean_probability": dict(zip(REGIONS, np.round(probabilities.mean(0), 3).tolist()))})
    if args.json:
        print(json.dumps({"model": entry.version, "scans": report}, indent=1))
    else:
        for item in report:
            if "skipped" in item:
                print(f"{item['scan']}: skipped ({item['skipped']})")
                continue
            shares = ", ".join(f"{k} {v:.0%}" for k, v in item["shares"].items() if v)
            print(f"{item['scan']} [{item['slices']} slices, expected {item['expected']}]: {shares}\n"
                  f"  {item['inferior_to_superior']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
