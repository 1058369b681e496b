"""KidneyUS MRML logic on the headless Slicer runtime: nodes in, a Kidney segmentation node out."""

import numpy as np
import pytest
from scipy import ndimage

from KidneyUSLib import segmentation
from KidneyUSLib.logic import KidneyUSLogic
from KidneyUSLib.selftest import TruthSegmenter, bright_region_segmenter, check_segmentation_node, dice, phantom
from SegTuneCore.errors import SegTuneError
from SegTuneCore.geometry import Volume, write_segmentation, write_volume
from SegTuneCore.mrml import load_volume_node, node_from_volume, volume_from_node
from SegTuneCore.process import PythonModuleProcess


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from KidneyUSLib import unet
    from KidneyUSLib.training import save_network

    torch.manual_seed(1)
    network = unet.UNet3D(unet.UNetConfig(width=2, levels=2, dropout=0.0))
    folder = tmp_path_factory.mktemp("models") / "tiny"
    return save_network(folder, network.eval(), {"task": segmentation.TASK, "architecture": network.config.to_dict()})


def _resample_nearest(array, out_to_in_ijk, shape_kji):
    """array (on the node's grid) at the voxels of another grid; out_to_in maps (i, j, k) to (i, j, k)."""
    reverse = np.eye(3)[::-1]
    return ndimage.affine_transform(array, reverse @ out_to_in_ijk[:3, :3] @ reverse, reverse @ out_to_in_ijk[:3, 3],
                                    output_shape=shape_kji, order=0, mode="nearest")


def _in_study(slicer, node):
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient"), "Study")
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(study, node)
    hierarchy.SetItemParent(item, study)
    return study


def test_volume_file_to_segmentation_node_on_an_oblique_anisotropic_grid(slicer_runtime, tmp_path):
    volume, label = phantom("child")
    write_volume(volume, tmp_path / "child.nrrd")
    node = load_volume_node(tmp_path / "child.nrrd")  # through the volumes logic, LPS file -> RAS node
    # the reader may store the voxels in another order (it reverses k of left-handed grids): compare in space
    node_to_file = np.linalg.solve(volume_from_node(node).ijk_to_ras, volume.ijk_to_ras)
    np.testing.assert_allclose(node_to_file, np.round(node_to_file), atol=1e-6)  # voxel centres coincide
    in_file_order = lambda array: _resample_nearest(array, node_to_file, volume.array.shape)  # noqa: E731
    assert np.array_equal(in_file_order(volume_from_node(node).array), volume.array)
    study = _in_study(slicer_runtime, node)
    segmentation_node = KidneyUSLogic().segment(node, segmenter=TruthSegmenter(label))
    assert segmentation_node.GetName() == f"{node.GetName()} kidney"
    mask = check_segmentation_node(slicer_runtime, segmentation_node, node)
    hierarchy = slicer_runtime.mrmlScene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(segmentation_node)) == study
    assert dice(in_file_order(mask), label.array) >= 0.97
    # the segmentation's reference geometry is the input volume's
    reference = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    assert reference is node


def test_segmenting_again_updates_the_given_output_node(slicer_runtime):
    volume, label = phantom("adult", oblique=False)
    node = node_from_volume(volume, "adult")
    _in_study(slicer_runtime, node)
    logic = KidneyUSLogic()
    first = logic.segment(node, segmenter=TruthSegmenter(label))
    smaller = Volume(np.zeros_like(label.array), label.ijk_to_ras)
    second = logic.segment(node, segmenter=TruthSegmenter(smaller.with_array(
        np.pad(label.array[10:-10, 10:-10, 10:-10], 10))), output_node=first)
    assert second is first
    assert slicer_runtime.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    assert check_segmentation_node(slicer_runtime, second, node).sum() <= label.array.sum()


def test_the_result_of_another_volume_is_never_overwritten(slicer_runtime):
    volume, label = phantom("adult", oblique=False)
    first_node, second_node = node_from_volume(volume, "first"), node_from_volume(volume, "second")
    logic = KidneyUSLogic()
    first = logic.segment(first_node, segmenter=TruthSegmenter(label))
    assert logic.last_warnings == []
    kept = check_segmentation_node(slicer_runtime, first, first_node).copy()
    second = logic.segment(second_node, segmenter=TruthSegmenter(label.with_array(np.zeros_like(label.array))),
                           output_node=first)  # the module still has the first result selected
    assert second is not first and second.GetName() == "second kidney"
    assert np.array_equal(check_segmentation_node(slicer_runtime, first, first_node), kept) and kept.any()
    assert len(logic.last_warnings) == 1 and "no kidney found" in logic.last_warnings[0]  # the second, empty
    assert slicer_runtime.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


def test_child_process_path_gives_the_same_segmentation_as_in_process(slicer_runtime, tmp_path, tiny_model):
    volume, _ = phantom("adult", 80_000_007)
    node = node_from_volume(volume, "adult")
    _in_study(slicer_runtime, node)
    logic = KidneyUSLogic()
    input_path = logic.write_input(node, tmp_path)
    output_path = tmp_path / "result.seg.nrrd"
    events = []
    process = PythonModuleProcess("KidneyUSLib", logic.segment_arguments(input_path, output_path, model=str(tiny_model),
                                                                        device="cpu"), on_event=events.append).start()
    result = process.wait(timeout=300)
    assert result["output"] == str(output_path)
    assert any(e["event"] == "progress" for e in events)
    from_child = check_segmentation_node(slicer_runtime, logic.show_result(node, output_path), node)
    in_process = check_segmentation_node(
        slicer_runtime, logic.segment(node, model=str(tiny_model), device="cpu"), node)
    assert np.array_equal(from_child, in_process)


def test_show_result_refuses_a_segmentation_of_another_grid(slicer_runtime, tmp_path):
    volume, label = phantom("child", oblique=False)
    node = node_from_volume(volume, "child")
    other = Volume(label.array[:-1], label.ijk_to_ras)
    write_segmentation(other, [segmentation.KIDNEY], tmp_path / "other.seg.nrrd")
    with pytest.raises(SegTuneError, match="grid"):
        KidneyUSLogic().show_result(node, tmp_path / "other.seg.nrrd")
    assert slicer_runtime.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_show_result_refuses_a_segmentation_of_the_same_shape_elsewhere_in_space(slicer_runtime, tmp_path):
    volume, label = phantom("child", oblique=False)
    node = node_from_volume(volume, "child")
    moved = label.ijk_to_ras.copy()
    moved[:3, 3] += [0.0, 0.0, 80.0]  # same shape and spacing, 80 mm superior
    write_segmentation(Volume(label.array, moved), [segmentation.KIDNEY], tmp_path / "moved.seg.nrrd")
    with pytest.raises(SegTuneError, match="elsewhere in space"):
        KidneyUSLogic().show_result(node, tmp_path / "moved.seg.nrrd")
    write_segmentation(label, [segmentation.KIDNEY], tmp_path / "same.seg.nrrd")  # the check passes where it should
    assert check_segmentation_node(slicer_runtime, KidneyUSLogic().show_result(node, tmp_path / "same.seg.nrrd"),
                                   node).sum() == label.array.sum()


def test_show_result_refuses_a_volume_no_longer_in_the_scene(slicer_runtime, tmp_path):
    volume, label = phantom("child", oblique=False)
    node = node_from_volume(volume, "child")
    write_segmentation(label, [segmentation.KIDNEY], tmp_path / "late.seg.nrrd")
    slicer_runtime.mrmlScene.RemoveNode(node)  # deleted while the child process ran
    with pytest.raises(SegTuneError, match="no longer in the scene"):
        KidneyUSLogic().show_result(node, tmp_path / "late.seg.nrrd")
    assert slicer_runtime.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


@pytest.mark.parametrize("threshold", [0.0, 1.5, float("nan")])
def test_logic_refuses_a_threshold_outside_0_1(slicer_runtime, threshold):
    volume, label = phantom("child", oblique=False)
    node = node_from_volume(volume, "child")
    with pytest.raises(SegTuneError, match="threshold must be between 0 and 1"):
        KidneyUSLogic().segment(node, segmenter=TruthSegmenter(label), threshold=threshold)
    assert slicer_runtime.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_a_real_abdominal_ct_in_a_ras_stored_nifti_keeps_its_geometry(slicer_runtime, shared_data):
    node = load_volume_node(shared_data / "totalseg_ct_abdomen.nii.gz")
    _in_study(slicer_runtime, node)
    segmentation_node = KidneyUSLogic().segment(node, segmenter=bright_region_segmenter)
    mask = check_segmentation_node(slicer_runtime, segmentation_node, node)
    assert mask.shape == slicer_runtime.util.arrayFromVolume(node).shape and mask.any()
