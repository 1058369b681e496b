"""The headless Slicer runtime exposes the scene and module logics the way the desktop does."""

from __future__ import annotations

import numpy as np
import pytest

from SegTuneCore import mrml
from SegTuneCore.geometry import Segment
from SegTuneCore.runtime import headless_slicer

LOGICS = {"volumes": "vtkSlicerVolumesLogic", "segmentations": "vtkSlicerSegmentationsModuleLogic",
          "markups": "vtkSlicerMarkupsLogic", "tables": "vtkSlicerTablesLogic",
          "subjecthierarchy": "vtkSlicerSubjectHierarchyModuleLogic", "plots": "vtkSlicerPlotsLogic",
          "transforms": "vtkSlicerTransformLogic", "sequences": "vtkSlicerSequencesLogic"}
NODE_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode",
                "vtkMRMLMarkupsFiducialNode", "vtkMRMLTableNode", "vtkMRMLLinearTransformNode",
                "vtkMRMLSequenceNode", "vtkMRMLPlotChartNode", "vtkMRMLPlotSeriesNode")


def test_modules_and_util_helpers(slicer_runtime):
    slicer = slicer_runtime
    for name, class_name in LOGICS.items():
        logic = getattr(slicer.modules, name).logic()
        assert logic.GetClassName() == class_name and logic.GetMRMLScene() is slicer.mrmlScene
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    node = slicer.util.addVolumeFromArray(array, name="ramp")
    assert slicer.util.getNode("ramp") is node
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    assert mrml.volume_from_node(node).shape_ijk == (5, 4, 3)


def test_scene_with_every_node_class_reimports_in_a_fresh_runtime():
    with headless_slicer() as slicer:
        for class_name in NODE_CLASSES:
            slicer.mrmlScene.AddNewNodeByClass(class_name, f"my{class_name}")
        volume = slicer.util.getNode(f"myvtkMRMLScalarVolumeNode")
        transform = slicer.util.getNode("myvtkMRMLLinearTransformNode")
        volume.SetAndObserveTransformNodeID(transform.GetID())
        scene = slicer.mrmlScene
        scene.SetSaveToXMLString(1)
        scene.Commit()
        xml = scene.GetSceneXMLString()
    with headless_slicer() as slicer:
        scene = slicer.mrmlScene
        assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0  # a fresh scene
        scene.SetLoadFromXMLString(1)
        scene.SetSceneXMLString(xml)
        assert scene.Import() == 1
        for class_name in NODE_CLASSES:
            assert slicer.util.getNode(f"my{class_name}").GetClassName() == class_name
        volume = slicer.util.getNode("myvtkMRMLScalarVolumeNode")
        assert volume.GetParentTransformNode().GetName() == "myvtkMRMLLinearTransformNode"


def test_runtime_is_removed_after_use_and_nests():
    import slicer

    before = getattr(slicer, "mrmlScene", None)
    with headless_slicer() as outer:
        outer_scene = outer.mrmlScene
        with headless_slicer() as inner:
            assert inner.mrmlScene is not outer_scene
        assert slicer.mrmlScene is outer_scene and slicer.modules.volumes.logic().GetMRMLScene() is outer_scene
    assert getattr(slicer, "mrmlScene", None) is before


def test_place_next_to_uses_the_reference_folder(slicer_runtime):
    slicer = slicer_runtime
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1")
    reference = slicer.util.addVolumeFromArray(np.zeros((2, 3, 4), np.int16), name="input")
    # The desktop's subject-hierarchy plugins give every data node an item; headless nobody does.
    hierarchy.CreateItem(folder, reference)
    for name in ("new", "existing"):
        result = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        if name == "existing":
            hierarchy.CreateItem(hierarchy.GetSceneItemID(), result)
        mrml.place_next_to(result, reference)
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(result)) == folder


def test_outputs_follow_the_parent_transform_of_the_input(slicer_runtime):
    slicer = slicer_runtime
    volume = slicer.util.addVolumeFromArray(np.ones((4, 5, 6), np.int16), np.diag([2.0, 3.0, 4.0, 1.0]), "moved")
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "100 mm superior")
    shift = np.eye(4)
    shift[2, 3] = 100.0
    transform.SetMatrixTransformToParent(mrml._numpy_to_matrix(shift))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    output = mrml.segmentation_node_from_labels(np.ones((4, 5, 6), np.uint8), [Segment("All", 1, (1, 0, 0))],
                                                volume, "output")
    mrml.place_next_to(output, volume)
    assert output.GetTransformNodeID() == transform.GetID()
    volume_bounds, output_bounds = np.zeros(6), np.zeros(6)
    volume.GetRASBounds(volume_bounds)  # world coordinates, the transform applied
    output.GetRASBounds(output_bounds)
    assert volume_bounds[4] == pytest.approx(98.0) and volume_bounds[5] == pytest.approx(114.0)  # k: 0..3 voxels of 4 mm
    np.testing.assert_allclose(output_bounds, volume_bounds, atol=1e-6)
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "regions table")  # no transform to follow
    mrml.place_next_to(table, volume)
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(table)) == hierarchy.GetItemParent(
        hierarchy.GetItemByDataNode(volume))


def test_data_nodes_get_subject_hierarchy_items_and_outputs_land_next_to_the_input(slicer_runtime):
    import numpy as np

    from SegTuneCore.mrml import place_next_to

    slicer = slicer_runtime
    volume = slicer.util.addVolumeFromArray(np.zeros((3, 4, 5), np.int16), np.eye(4), "input")
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemByDataNode(volume)
    study = hierarchy.CreateStudyItem(hierarchy.GetSceneItemID(), "study")
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(volume), study)
    output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "output")
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(output)) == hierarchy.GetSceneItemID()
    place_next_to(output, volume)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(output)) == study
