"""Scenarios shared by the Slicer self-test (MRIFieldOfViewTest) and pytest on the headless runtime.

Each scenario is `scenario(slicer, workdir, model=None)`: `slicer` has a scene and the module
logics (the desktop app or SegTuneCore.runtime), `model` is what `ModelStore.resolve` accepts
(None = the active model, else the bundled one). A failed check raises AssertionError. Data are
generated phantoms (seeds far from the training seeds): no network, no GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Volume

from .regions import REGION_COLORS, REGIONS

SELFTEST_SEED = 90_000_001   # held out: training uses small seeds
MIN_ACCURACY = 0.9           # slices correct after the decision, for the scenario's one volume


def flipped_k(volume: Volume) -> Volume:
    """Same voxels in space, slice order reversed (k -> n-1-k) and the geometry adjusted."""
    n = volume.array.shape[0]
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, n - 1
    return Volume(np.ascontiguousarray(volume.array[::-1]), volume.ijk_to_ras @ flip)


def flipped_ij(volume: Volume) -> Volume:
    """Same voxels in space, i and j reversed (an LPS-ordered storage of a RAS-ordered one)."""
    _, nj, ni = volume.array.shape
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = ni - 1, nj - 1
    return Volume(np.ascontiguousarray(volume.array[:, ::-1, ::-1]), volume.ijk_to_ras @ flip)


def tilted(volume: Volume, degrees: float) -> Volume:
    """The same array on an oblique grid: rotated about the R axis around the volume centre."""
    angle = np.radians(degrees)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    centre = volume.ijk_to_ras_points((np.array(volume.shape_ijk) - 1) / 2)[0]
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre, centre
    return Volume(volume.array, back @ rotation @ to_centre @ volume.ijk_to_ras)


def phantom_volume(seed: int = SELFTEST_SEED, regions=("pelvis", "abdomen", "chest"), spine: bool = False):
    from .phantom import make_phantom

    phantom = make_phantom(seed, regions=None if spine else list(regions), spine=spine,
                           orientation=False, max_matrix=128)
    return phantom.volume(), phantom.slice_labels


def slice_accuracy(predicted, truth) -> float:
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))


def slab_faces_mm(volume: Volume, first: int, last: int) -> tuple[float, float]:
    """S coordinates of the faces k = first - 1/2 and last + 1/2 through the in-plane centre."""
    centre = (np.array(volume.shape_ijk, dtype=float) - 1) / 2
    points = np.array([[centre[0], centre[1], first - 0.5], [centre[0], centre[1], last + 0.5]])
    s = volume.ijk_to_ras_points(points)[:, 2]
    return float(s.min()), float(s.max())


def node_in_study(volume: Volume, name: str):
    """A volume node inside a patient/study of the subject hierarchy (as DICOM import makes)."""
    from SegTuneCore.mrml import node_from_volume

    node = node_from_volume(volume, name)
    hierarchy = node.GetScene().GetSubjectHierarchyNode()
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), f"{name} patient"), f"{name} study")
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(study, node)
    hierarchy.SetItemParent(item, study)
    return node


# --- scenarios --------------------------------------------------------------------------------

def check_nodes(slicer, volume_node, nodes) -> None:
    """The outputs of FieldOfViewLogic.show_result are complete and consistent."""
    from SegTuneCore.mrml import labels_from_segmentation_node

    regions = nodes.document["regions"]
    segmentation = nodes.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == [r["name"] for r in regions], (names, regions)
    labels, segments = labels_from_segmentation_node(nodes.segmentation, volume_node)
    for region, segment in zip(regions, segments):
        assert np.allclose(segment.color, REGION_COLORS[region["name"]], atol=1e-3)
        ks = np.flatnonzero((labels == segment.label_value).any(axis=(1, 2)))
        assert (ks.min(), ks.max()) == (region["first_slice"], region["last_slice"]), (region, ks)
        assert np.all((labels[ks] == segment.label_value)), "a slab must cover whole slices"
    table = nodes.regions_table
    assert table.GetNumberOfRows() == len(regions)
    for row, region in enumerate(regions):
        assert table.GetCellText(row, 0) == region["name"]
        assert int(table.GetCellText(row, 1)) == region["first_slice"]
        assert float(table.GetCellText(row, 4)) == round(region["superior_mm"], 2)
    assert nodes.probabilities_table.GetNumberOfRows() == len(nodes.document["slice_probabilities"])
    assert nodes.chart.GetNumberOfPlotSeriesNodes() == 2 * len(REGIONS)
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    parent = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume_node))
    assert parent != hierarchy.GetSceneItemID(), "the input must be in a study for this check"
    for node in (nodes.segmentation, nodes.regions_table, nodes.chart):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == parent


def scenario_localize_phantom(slicer, workdir: Path, model=None) -> None:
    """A pelvis-to-chest phantom: nodes complete, regions right for >= 90 % of slices."""
    from .logic import FieldOfViewLogic

    volume, truth = phantom_volume()
    node = node_in_study(volume, "phantom")
    nodes = FieldOfViewLogic().run(node, model=model, device="cpu")
    check_nodes(slicer, node, nodes)
    accuracy = slice_accuracy(nodes.document["slice_labels"], truth)
    assert accuracy >= MIN_ACCURACY, f"only {accuracy:.1%} of slices correct"
    assert [r["name"] for r in nodes.document["regions"]] == ["pelvis", "abdomen", "chest"], nodes.document["regions"]


def scenario_orientations(slicer, workdir: Path, model=None) -> None:
    """Flipped, LPS-ordered and oblique storages of one volume give the same physical regions."""
    from SegTuneCore.mrml import node_from_volume

    from .logic import FieldOfViewLogic

    logic = FieldOfViewLogic()
    volume, _ = phantom_volume(SELFTEST_SEED + 1, regions=("abdomen", "chest"))
    n = volume.array.shape[0]
    reference = logic.run(node_from_volume(volume, "reference"), model=model, device="cpu").document
    expected = [(r["name"], r["inferior_mm"], r["superior_mm"]) for r in reference["regions"]]
    for name, variant, k_of in (("flipped", flipped_k(volume), lambda k: n - 1 - k),
                                ("lps", flipped_ij(volume), lambda k: k)):
        node = node_in_study(variant, name)
        nodes = logic.run(node, model=model, device="cpu")
        check_nodes(slicer, node, nodes)
        got = nodes.document["regions"]
        assert [(r["name"], round(r["inferior_mm"], 6), round(r["superior_mm"], 6)) for r in got] == \
            [(e[0], round(e[1], 6), round(e[2], 6)) for e in expected], (name, got, expected)
        for region, ref in zip(got, reference["regions"]):
            assert sorted([k_of(ref["first_slice"]), k_of(ref["last_slice"])]) == [region["first_slice"], region["last_slice"]]
    oblique = tilted(volume, 10.0)
    node = node_in_study(oblique, "oblique")
    nodes = logic.run(node, model=model, device="cpu")
    check_nodes(slicer, node, nodes)
    for region in nodes.document["regions"]:
        faces = slab_faces_mm(oblique, region["first_slice"], region["last_slice"])
        assert np.allclose((region["inferior_mm"], region["superior_mm"]), faces, atol=1e-6), (region, faces)


def scenario_spine(slicer, workdir: Path, model=None) -> None:
    """A dedicated spine examination is one spine region."""
    from SegTuneCore.mrml import node_from_volume

    from .logic import FieldOfViewLogic

    volume, _ = phantom_volume(SELFTEST_SEED + 2, spine=True)
    document = FieldOfViewLogic().run(node_from_volume(volume, "spine"), model=model, device="cpu").document
    assert [r["name"] for r in document["regions"]] == ["spine"], document["regions"]


def scenario_bad_input(slicer, workdir: Path, model=None) -> None:
    """An empty (constant), NaN or 2D volume (one axial or one coronal slice) is refused with a
    message and adds no node."""
    from SegTuneCore.mrml import node_from_volume

    from .logic import FieldOfViewLogic

    logic = FieldOfViewLogic()
    body = np.random.default_rng(0).uniform(100, 1000, (40, 32)).astype(np.float32)
    coronal = np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])  # j runs superior, k anterior
    for name, volume, reason in (
            ("constant", Volume.from_geometry(np.zeros((6, 32, 32), np.float32), (1, 1, 3), (0, 0, 0)), "empty"),
            ("nan", Volume.from_geometry(np.full((6, 32, 32), np.nan, np.float32), (1, 1, 3), (0, 0, 0)), "NaN"),
            ("one axial slice", Volume.from_geometry(body[None], (1, 1, 3), (0, 0, 0)), "3D"),
            ("one coronal slice", Volume.from_geometry(body[None], (1, 1, 3), (0, 0, 0), coronal), "3D")):
        node = node_from_volume(volume, name)
        before = slicer.mrmlScene.GetNumberOfNodes()
        try:
            logic.run(node, model=model, device="cpu")
        except SegTuneError as error:
            assert reason in str(error), f"{name}: unclear error {error}"
        else:
            raise AssertionError(f"a {name} volume was accepted")
        assert slicer.mrmlScene.GetNumberOfNodes() == before, f"{name}: nodes were left behind"


SCENARIOS = (scenario_localize_phantom, scenario_orientations, scenario_spine, scenario_bad_input)


def save_standin_model(folder: str | Path, seed: int = 0) -> Path:
    """A tiny untrained classifier in the model-store format (tests of mechanics, not accuracy)."""
    import torch

    from SegTuneCore.models import save_model

    from .classifier import ARCHITECTURE, TASK, build_model, model_config
    from .preprocessing import PREPROCESSING

    config = model_config({"blocks": 4, "filters_log2": 2, "fc_units": [16]})
    torch.manual_seed(seed)
    model = build_model(config)
    meta = {"task": TASK, "architecture": {"name": ARCHITECTURE, "config": config},
            "preprocessing": PREPROCESSING, "classes": list(REGIONS), "seed": seed, "version": "standin"}
    return save_model(folder, dict(model.state_dict()), meta)
