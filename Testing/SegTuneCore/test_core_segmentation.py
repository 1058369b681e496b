"""Labels -> segmentation node -> .seg.nrrd -> reload -> labels: voxels, names and colours kept.

Two writers are checked: the MRML segmentation storage node (`mrml.save_node`) and the
MRML-free `geometry.write_segmentation`; both files are read back by MRML and by
`geometry.read_segmentation`.
"""

from __future__ import annotations

import numpy as np
import pytest

from SegTuneCore import geometry, mrml
from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Segment, Volume

from core_testdata import generated_labels

TOTALSEG_NAMES = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach"}
COLOR_TOLERANCE = 1e-6  # write_segmentation stores 6 significant digits


def segments_for(labels: np.ndarray, seed: int = 0) -> list[Segment]:
    rng = np.random.default_rng(seed)
    values = [int(v) for v in np.unique(labels) if v != 0]
    return [Segment(TOTALSEG_NAMES.get(v, f"label {v}"), v, tuple(float(c) for c in rng.uniform(0, 1, 3)))
            for v in values]


def assert_same_segments(actual_labels, actual_segments, expected_labels, expected_segments) -> None:
    assert [(s.name, s.label_value) for s in actual_segments] == [(s.name, s.label_value) for s in expected_segments]
    for got, want in zip(actual_segments, expected_segments):
        np.testing.assert_allclose(got.color, want.color, atol=COLOR_TOLERANCE, err_msg=want.name)
        np.testing.assert_array_equal(actual_labels == got.label_value, expected_labels == want.label_value,
                                      err_msg=f"voxels of {want.name}")
    assert np.count_nonzero(actual_labels) == np.count_nonzero(expected_labels)


def check_segmentation_round_trips(slicer, labels: Volume, segments, reference_node, tmp_path) -> None:
    node = mrml.segmentation_node_from_labels(labels.array, segments, reference_node, "labels")
    direct, direct_segments = mrml.labels_from_segmentation_node(node, reference_node)
    assert_same_segments(direct, direct_segments, labels.array, segments)

    by_mrml = mrml.save_node(node, tmp_path / "by_mrml.seg.nrrd")
    by_geometry = geometry.write_segmentation(labels, segments, tmp_path / "by_geometry.seg.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["by_geometry.seg.nrrd", "by_mrml.seg.nrrd"]
    for path in (by_mrml, by_geometry):
        reloaded = mrml.load_segmentation_node(path)
        got, got_segments = mrml.labels_from_segmentation_node(reloaded, reference_node)
        assert_same_segments(got, got_segments, labels.array, segments)

        # The MRML-free reader: its grid may be cropped to the segments' extent (Slicer does that);
        # mapped back onto the reference grid by nearest neighbour it must give the same labels.
        read, read_segments = geometry.read_segmentation(path)
        on_reference = geometry.resample_to_reference(read.array, read.ijk_to_ras, labels, order=0)
        assert_same_segments(on_reference, read_segments, labels.array, segments)


def test_real_totalsegmentator_labels(slicer_runtime, shared_data, tmp_path):
    reference = mrml.load_volume_node(shared_data / "totalseg_ct_abdomen.nii.gz")
    labels = geometry.read_volume(shared_data / "totalseg_ct_abdomen_seg.nii.gz")
    labels = labels.with_array(labels.array.astype(np.uint8))
    # The label map lies on the CT's grid.
    np.testing.assert_allclose(labels.ijk_to_ras, mrml.volume_from_node(reference).ijk_to_ras, atol=1e-4)
    segments = segments_for(labels.array)
    assert len(segments) > 30 and {"kidney_left", "kidney_right"} <= {s.name for s in segments}
    check_segmentation_round_trips(slicer_runtime, labels, segments, reference, tmp_path)


@pytest.mark.parametrize("orientation", ["LPS", "LSA", "oblique"])
def test_generated_labels_on_oblique_anisotropic_grids(slicer_runtime, tmp_path, orientation):
    labels = generated_labels(orientation)
    reference = mrml.node_from_volume(labels.with_array(labels.array.astype(np.int16)), "reference")
    segments = [Segment("cortex", 1, (0.9, 0.1, 0.2)), Segment("medulla", 2, (0.25, 0.5, 0.75)),
                Segment("pelvis", 3, (1.0, 1.0, 0.0))]
    assert all(np.any(labels.array == s.label_value) for s in segments)
    check_segmentation_round_trips(slicer_runtime, labels, segments, reference, tmp_path)


def test_label_values_order_and_empty_segments_are_kept(slicer_runtime, tmp_path):
    labels = generated_labels("LSA")
    array = labels.array.copy()
    array[array == 2] = 200  # gaps and a large value, as in TotalSegmentator's label maps
    array[0, 0, :3] = 9      # a label no segment names: it must not appear anywhere
    labels = labels.with_array(array)
    segments = [Segment("pelvis", 3, (1.0, 1.0, 0.0)), Segment("cortex", 1, (0.9, 0.1, 0.2)),
                Segment("medulla", 200, (0.25, 0.5, 0.75)), Segment("cyst", 42, (0.0, 0.0, 1.0))]
    reference = slicer_runtime.util.addVolumeFromArray(array.astype(np.int16), labels.ijk_to_ras, "reference")
    expected = np.where(np.isin(array, [3, 1, 200]), array, 0)
    node = None
    for _ in range(2):  # creating, then refilling the same node
        node = mrml.segmentation_node_from_labels(array, segments, reference, "labels", node=node)
        segmentation = node.GetSegmentation()
        assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == \
            [s.name for s in segments]
        got, got_segments = mrml.labels_from_segmentation_node(node, reference)
        assert got_segments == [Segment(s.name, s.label_value, tuple(float(c) for c in s.color)) for s in segments]
        np.testing.assert_array_equal(got, expected)
    path = mrml.save_node(node, tmp_path / "labels.seg.nrrd")
    read, read_segments = geometry.read_segmentation(path)
    assert [(s.name, s.label_value) for s in read_segments] == [(s.name, s.label_value) for s in segments]
    np.testing.assert_array_equal(geometry.resample_to_reference(read.array, read.ijk_to_ras, labels, order=0), expected)
    with pytest.raises(SegTuneError, match="distinct"):
        mrml.segmentation_node_from_labels(array, [Segment("a", 1, (1, 0, 0)), Segment("b", 1, (0, 1, 0))],
                                           reference, "bad")


def test_label_values_above_255(slicer_runtime):
    labels = generated_labels("RAS")
    array = labels.array.astype(np.uint16) * 1000  # FreeSurfer-like values: 1000, 2000, 3000
    reference = mrml.node_from_volume(labels.with_array(array.astype(np.int16)), "reference")
    segments = [Segment(f"region {v}", v, (0.5, 0.5, 0.5)) for v in (1000, 2000, 3000)]
    node = mrml.segmentation_node_from_labels(array, segments, reference, "regions")
    got, got_segments = mrml.labels_from_segmentation_node(node, reference)
    assert got.dtype == np.uint16 and [s.label_value for s in got_segments] == [1000, 2000, 3000]
    np.testing.assert_array_equal(got, array)


def test_making_a_segmentation_leaves_only_the_segmentation_in_the_scene(slicer_runtime):
    import vtk

    labels = generated_labels("LPS")
    reference = mrml.node_from_volume(labels, "reference")
    scene = slicer_runtime.mrmlScene
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    for name in ("first", "second"):
        node = mrml.segmentation_node_from_labels(labels.array, [Segment("a", 1, (1, 0, 0))], reference, name)
    added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes()) if scene.GetNthNode(i).GetID() not in before]
    assert sorted(n.GetClassName() for n in added) == ["vtkMRMLSegmentationDisplayNode"] * 2 + ["vtkMRMLSegmentationNode"] * 2
    hierarchy = scene.GetSubjectHierarchyNode()
    items = vtk.vtkIdList()
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), items, True)
    names = [hierarchy.GetItemName(items.GetId(i)) for i in range(items.GetNumberOfIds())]
    assert "" not in names  # no stale item of the temporary labelmap
    assert mrml.labels_from_segmentation_node(node, reference)[0].sum() == (labels.array == 1).sum()
