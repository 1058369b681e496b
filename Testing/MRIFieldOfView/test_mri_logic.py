"""MRML logic of MRIFieldOfView on the headless runtime: nodes, geometry, orientations, bad input."""

import numpy as np
import pytest

from MRIFieldOfViewLib import selftest
from MRIFieldOfViewLib.logic import TABLE_COLUMNS, FieldOfViewLogic
from MRIFieldOfViewLib.regions import REGION_COLORS, REGIONS
from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Volume, write_volume


@pytest.fixture(scope="module")
def standin_model(tmp_path_factory):
    """An untrained classifier: these tests check geometry and nodes, not accuracy."""
    return str(selftest.save_standin_model(tmp_path_factory.mktemp("model") / "standin"))


def small_volume(seed=0, slices=30):
    rng = np.random.default_rng(seed)
    array = np.zeros((slices, 40, 48), np.int16)
    array[:, 8:32, 10:38] = rng.integers(200, 1000, (slices, 24, 28))
    array[:3] = 0  # empty slices at the inferior end
    directions = np.array([[1.0, 0, 0], [0, 0.98, -0.2], [0, 0.2, 0.98]])
    directions /= np.linalg.norm(directions, axis=0)
    return Volume.from_geometry(array, (1.5, 1.2, 4.0), (-30.0, 12.0, -200.0), directions)


def regions_document(n):
    return {
        "regions": [
            {"name": "abdomen", "first_slice": 3, "last_slice": 12, "inferior_mm": -190.0, "superior_mm": -150.0},
            {"name": "chest", "first_slice": 13, "last_slice": 29, "inferior_mm": -150.0, "superior_mm": -82.0},
        ],
        "slice_axis": "k",
        "slice_probabilities": np.full((n, 6), 1 / 6).tolist(),
        "smoothed_probabilities": np.tile(np.linspace(0, 1, 6), (n, 1)).tolist(),
        "slice_positions_mm": (-200.0 + 4.0 * np.arange(n)).tolist(),
    }


def test_nodes_match_a_regions_document(slicer_runtime):
    volume = small_volume()
    node = selftest.node_in_study(volume, "input")
    nodes = FieldOfViewLogic().show_result(node, regions_document(volume.array.shape[0]))
    selftest.check_nodes(slicer_runtime, node, nodes)
    table = nodes.regions_table
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == list(TABLE_COLUMNS)
    assert [table.GetCellText(1, c) for c in range(6)] == ["chest", "13", "29", "-150", "-82", "17"]
    # probability table: sorted by position, raw and smoothed column per class
    probabilities = slicer_runtime.util.arrayFromTableColumn(nodes.probabilities_table, "chest")
    assert np.allclose(probabilities, 0.6)
    positions = slicer_runtime.util.arrayFromTableColumn(nodes.probabilities_table, "Position (mm)")
    assert np.all(np.diff(positions) > 0)
    series = [nodes.chart.GetNthPlotSeriesNode(i) for i in range(nodes.chart.GetNumberOfPlotSeriesNodes())]
    assert {s.GetYColumnName() for s in series} == set(REGIONS) | {f"{r} raw" for r in REGIONS}
    head = next(s for s in series if s.GetYColumnName() == "head")
    assert np.allclose(head.GetColor(), REGION_COLORS["head"])
    assert all(s.GetTableNodeID() == nodes.probabilities_table.GetID() for s in series)
    # the segmentation's reference geometry is the input's
    reference = nodes.segmentation.GetNodeReference(
        nodes.segmentation.GetReferenceImageGeometryReferenceRole())
    assert reference.GetID() == node.GetID()
    assert "input" in nodes.segmentation.GetName()


def test_a_result_for_a_volume_no_longer_in_the_scene_is_refused_without_nodes(slicer_runtime):
    # A background localize that finishes after its input was deleted or the scene closed.
    scene = slicer_runtime.mrmlScene
    volume = small_volume()
    document = regions_document(volume.array.shape[0])
    logic = FieldOfViewLogic()
    deleted = selftest.node_in_study(volume, "deleted")
    scene.RemoveNode(deleted)
    closed = selftest.node_in_study(volume, "closed")
    scene.Clear(0)
    for node in (deleted, closed):
        before = scene.GetNumberOfNodes()
        with pytest.raises(SegTuneError, match="no longer in the scene"):
            logic.show_result(node, document)
        assert scene.GetNumberOfNodes() == before


def test_orientations_give_the_same_physical_regions(slicer_runtime, tmp_path, standin_model):
    selftest.scenario_orientations(slicer_runtime, tmp_path, model=standin_model)


def test_bad_volumes_are_refused_without_leaving_nodes(slicer_runtime, tmp_path, standin_model):
    selftest.scenario_bad_input(slicer_runtime, tmp_path, model=standin_model)


def write_ras_nrrd(volume: Volume, path):
    """An NRRD whose header is in RAS space (Slicer can write these; ITK writes LPS)."""
    ni, nj, nk = volume.shape_ijk
    columns = volume.ijk_to_ras[:3, :3].T
    header = "\n".join([
        "NRRD0004", "type: short", "dimension: 3", "space: right-anterior-superior",
        f"sizes: {ni} {nj} {nk}",
        "space directions: " + " ".join("(" + ",".join(repr(float(v)) for v in c) + ")" for c in columns),
        "kinds: domain domain domain", "endian: little", "encoding: raw",
        "space origin: (" + ",".join(repr(float(v)) for v in volume.origin) + ")",
    ])
    path.write_bytes(header.encode() + b"\n\n" + np.ascontiguousarray(volume.array, dtype="<i2").tobytes())
    return path


def test_lps_and_ras_files_give_the_same_nodes_and_regions(slicer_runtime, tmp_path, standin_model):
    from SegTuneCore.mrml import load_volume_node, volume_from_node

    volume = small_volume(1)
    lps = write_volume(volume, tmp_path / "lps.nrrd")
    ras = write_ras_nrrd(volume, tmp_path / "ras.nrrd")
    assert b"left-posterior-superior" in lps.read_bytes()[:400]
    logic = FieldOfViewLogic()
    documents = []
    for path in (lps, ras):
        node = load_volume_node(path)
        loaded = volume_from_node(node)
        assert np.allclose(loaded.ijk_to_ras, volume.ijk_to_ras, atol=1e-9)
        assert np.array_equal(loaded.array, volume.array)
        documents.append(logic.run(node, model=standin_model, device="cpu").document)
    assert documents[0]["regions"] == documents[1]["regions"]
    assert documents[0]["slice_probabilities"] == documents[1]["slice_probabilities"]
    assert documents[0]["empty_slices"] == [0, 1, 2]


def test_logic_reuses_a_loaded_model_until_another_is_activated(slicer_runtime, standin_model, tmp_path,
                                                                 monkeypatch):
    from SegTuneCore.models import ModelStore

    logic = FieldOfViewLogic()
    assert logic.load_model(standin_model, "cpu") is logic.load_model(standin_model, "cpu")
    monkeypatch.setenv("SEGTUNE_HOME", str(tmp_path / "home"))
    store = ModelStore()
    first = store.install(selftest.save_standin_model(tmp_path / "a", seed=1), activate=True)
    active = logic.load_model(None, "cpu")
    assert active is logic.load_model(None, "cpu") and active.summary["version"] == first.version
    second = store.install(selftest.save_standin_model(tmp_path / "b", seed=2), activate=True)  # as an HPO install does
    assert logic.load_model(None, "cpu").summary["version"] == second.version


def test_tables_show_their_column_names_as_headers(slicer_runtime):
    volume = small_volume()
    node = selftest.node_in_study(volume, "input")
    n = volume.array.shape[0]
    document = {"regions": [], "slice_axis": "k", "slice_probabilities": np.full((n, 6), 1 / 6).tolist(),
                "smoothed_probabilities": np.full((n, 6), 1 / 6).tolist(),
                "slice_positions_mm": np.arange(n, dtype=float).tolist()}
    nodes = FieldOfViewLogic().show_result(node, document)
    for table in (nodes.regions_table, nodes.probabilities_table):
        assert table.GetUseColumnTitleAsColumnHeader()
        assert all(table.GetColumnTitle(table.GetColumnName(c)) == table.GetColumnName(c)
                   for c in range(table.GetNumberOfColumns()))
    assert nodes.regions_table.GetNumberOfRows() == 0
    assert nodes.segmentation.GetSegmentation().GetNumberOfSegments() == 0
