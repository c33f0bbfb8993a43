"""The rater's Slicer case viewer against a stand-in `slicer` package: what it loads, shows and removes."""

from __future__ import annotations

from unittest.mock import MagicMock

import numpy as np
import pytest

from CircleOfWillisGANLib.slicer_scene import VESSEL_RGB
from CircleOfWillisGANLib.turing import TuringSession
from CircleOfWillisGANLib.turing.slicer_viewer import SlicerCaseViewer, camera_pose
from turing_data import make_sources

CASE_BOUNDS = [-40.0, 40.0, -40.0, 40.0, -10.0, 10.0]


def fake_slicer() -> MagicMock:
    """A `slicer` whose scene hands out a new node for every load or add, remembers them, and forgets removed ones."""
    slicer = MagicMock(name="slicer")
    slicer.volumes, slicer.models, slicer.renderings = [], [], []

    def new(kind, name):
        node = MagicMock(name=name)
        kind.append(node)
        return node

    def load(path, properties):
        volume = new(slicer.volumes, "volume")
        volume.GetRASBounds.side_effect = lambda bounds: bounds.__setitem__(slice(None), CASE_BOUNDS)
        return volume

    slicer.util.loadVolume.side_effect = load
    slicer.mrmlScene.AddNewNodeByClass.side_effect = lambda cls, name: new(slicer.models, name)
    slicer.modules.volumerendering.logic().CreateDefaultVolumeRenderingNodes.side_effect = (
        lambda volume: new(slicer.renderings, "volume rendering"))
    slicer.app.layoutManager().sliceViewNames.return_value = ["Red", "Yellow", "Green"]
    slicer.views, slicer.displayables = [MagicMock(name="3D view")], []
    slicer.util.getNodesByClass.side_effect = (
        lambda cls: slicer.views if cls == "vtkMRMLViewNode" else slicer.displayables if cls == "vtkMRMLDisplayableNode" else [])

    def remove(node):
        node.GetScene.return_value = None

    slicer.mrmlScene.RemoveNode.side_effect = remove
    return slicer


def in_scene(node) -> bool:
    return node.GetScene() is not None


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    real, generated = make_sources(root, n_real=2, n_generated=2)
    created = TuringSession.create(root / "s", real, generated, n_cases=2, seed=1, display="all")
    return sorted((created.folder / "cases").glob("case-*.nii"))


def test_a_case_is_loaded_under_a_fixed_neutral_name_with_the_fixed_0_255_window(cases):
    slicer = fake_slicer()
    SlicerCaseViewer(slicer).show_case(cases[0], "slices")
    slicer.util.loadVolume.assert_called_once_with(str(cases[0]), {"name": "Turing case", "show": False})
    display = slicer.volumes[0].GetDisplayNode()
    display.AutoWindowLevelOff.assert_called_once_with()
    display.SetWindowLevel.assert_called_once_with(255.0, 127.5)


@pytest.mark.parametrize("display, layout", [("mip", "SlicerLayoutOneUp3DView"), ("surface", "SlicerLayoutOneUp3DView"),
                                             ("slices", "SlicerLayoutOneUpRedSliceView"), ("all", "SlicerLayoutFourUpView")])
def test_each_display_has_its_own_fixed_layout(cases, display, layout):
    slicer = fake_slicer()
    SlicerCaseViewer(slicer).show_case(cases[0], display)
    slicer.app.layoutManager().setLayout.assert_called_once_with(getattr(slicer.vtkMRMLLayoutNode, layout))


@pytest.mark.parametrize("display, mip, surface, slices", [("mip", 1, 0, 0), ("surface", 0, 1, 0), ("slices", 0, 0, 1),
                                                          ("all", 1, 1, 1)])
def test_each_display_shows_its_mip_surface_and_slices(cases, display, mip, surface, slices):
    slicer = fake_slicer()
    SlicerCaseViewer(slicer).show_case(cases[0], display)
    assert (len(slicer.renderings), len(slicer.models), slicer.util.setSliceViewerLayers.call_count) == (mip, surface, slices)


def test_the_mip_uses_maximum_intensity_projection_and_one_fixed_grey_ramp(cases):
    slicer = fake_slicer()
    SlicerCaseViewer(slicer).show_case(cases[0], "mip")
    view = slicer.views[0]
    view.SetRaycastTechnique.assert_called_once_with(slicer.vtkMRMLViewNode.MaximumIntensityProjection)
    properties = slicer.renderings[0].GetVolumePropertyNode()
    opacity = properties.SetScalarOpacity.call_args.args[0]
    colours = properties.SetColor.call_args.args[0]
    assert [opacity.GetValue(v) for v in (0, 127.5, 255)] == [0.0, 0.5, 1.0]
    assert [colours.GetColor(v) for v in (0, 255)] == [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]
    slicer.renderings[0].SetVisibility.assert_called_once_with(True)


def test_the_surface_is_the_case_file_vessel_surface_named_neutrally_in_the_vessel_colour(cases):
    slicer = fake_slicer()
    SlicerCaseViewer(slicer).show_case(cases[0], "surface")
    slicer.mrmlScene.AddNewNodeByClass.assert_called_once_with("vtkMRMLModelNode", "Turing surface")
    model = slicer.models[0]
    assert model.SetAndObservePolyData.call_args.args[0].GetNumberOfPoints() > 100
    model.GetDisplayNode().SetColor.assert_called_once_with(*VESSEL_RGB)


def test_the_next_case_first_removes_every_node_of_the_previous_one(cases):
    slicer = fake_slicer()
    viewer = SlicerCaseViewer(slicer)
    viewer.show_case(cases[0], "all")
    first = [slicer.volumes[0], slicer.volumes[0].GetDisplayNode(), slicer.volumes[0].GetStorageNode(), slicer.models[0],
             slicer.models[0].GetDisplayNode(), slicer.renderings[0], slicer.renderings[0].GetVolumePropertyNode(),
             slicer.renderings[0].GetROINode()]
    viewer.show_case(cases[1], "all")
    assert not any(in_scene(n) for n in first)
    assert in_scene(slicer.volumes[1]) and in_scene(slicer.models[1])


def test_hiding_a_case_leaves_none_of_its_nodes_in_the_scene(cases):
    slicer = fake_slicer()
    viewer = SlicerCaseViewer(slicer)
    viewer.show_case(cases[0], "all")
    viewer.hide_case()
    assert not any(in_scene(n) for n in slicer.volumes + slicer.models + slicer.renderings)
    assert viewer.nodes == []


def test_slice_annotations_are_switched_off_and_every_corner_cleared(cases):
    slicer = fake_slicer()
    SlicerCaseViewer(slicer).show_case(cases[0], "slices")
    annotations = slicer.modules.DataProbeInstance.infoWidget.sliceAnnotations
    assert annotations.sliceViewAnnotationsEnabled == 0
    annotations.updateSliceViewFromGUI.assert_called_once_with()
    corner = slicer.app.layoutManager().sliceWidget("Red").sliceView().cornerAnnotation()
    assert sorted(c.args for c in corner.SetText.call_args_list) == sorted([(p, "") for p in range(4)] * 3)


def test_closing_restores_the_annotations_and_ray_casting_the_user_had_before_rating(cases):
    slicer = fake_slicer()
    annotations = slicer.modules.DataProbeInstance.infoWidget.sliceAnnotations
    annotations.sliceViewAnnotationsEnabled = 1
    view = slicer.views[0]
    view.GetRaycastTechnique.return_value = "composite"
    viewer = SlicerCaseViewer(slicer)
    viewer.show_case(cases[0], "all")
    view.GetRaycastTechnique.return_value = slicer.vtkMRMLViewNode.MaximumIntensityProjection
    viewer.show_case(cases[1], "all")
    assert annotations.sliceViewAnnotationsEnabled == 0
    viewer.close()
    assert annotations.sliceViewAnnotationsEnabled == 1 and annotations.sliceViewAnnotationsCheckBox.checked is True
    assert annotations.sliceViewNames == []  # DataProbe rebuilds its slice observers, or the corners would freeze
    assert view.SetRaycastTechnique.call_args.args == ("composite",)
    assert not any(in_scene(n) for n in slicer.volumes + slicer.models + slicer.renderings)


def test_the_rater_sees_the_case_alone_and_everything_hidden_for_it_comes_back_on_close(cases):
    slicer = fake_slicer()
    shown, hidden = MagicMock(name="generated volume's MIP"), MagicMock(name="a model the user had hidden")
    shown.GetVisibility.return_value, hidden.GetVisibility.return_value = 1, 0
    for display in (shown, hidden):
        node = MagicMock(name="the user's node")
        node.GetNumberOfDisplayNodes.return_value = 1
        node.GetNthDisplayNode.return_value = display
        slicer.displayables.append(node)
    viewer = SlicerCaseViewer(slicer)
    viewer.show_case(cases[0], "all")
    viewer.show_case(cases[1], "all")
    assert [c.args for c in shown.SetVisibility.call_args_list] == [(False,), (False,)]
    viewer.close()
    assert shown.SetVisibility.call_args.args == (True,)
    hidden.SetVisibility.assert_not_called()


def test_the_camera_is_put_at_the_same_place_for_every_case(cases):
    slicer = fake_slicer()
    viewer = SlicerCaseViewer(slicer)
    camera = slicer.app.layoutManager().threeDWidget(0).threeDView().cameraNode()
    poses = []
    for case in cases:
        viewer.show_case(case, "mip")
        poses.append([camera.SetPosition.call_args, camera.SetFocalPoint.call_args, camera.SetViewUp.call_args])
    position, focal, up = camera_pose(CASE_BOUNDS)
    assert poses[0] == poses[1] == [((*position,),), ((*focal,),), ((*up,),)]


def test_the_camera_looks_down_from_superior_at_the_centre_with_anterior_up():
    position, focal, up = camera_pose([-10.0, 10.0, -20.0, 20.0, 0.0, 8.0])
    assert focal == (0.0, 0.0, 4.0) and up == (0.0, 1.0, 0.0)
    assert position == (0.0, 0.0, 4.0 + 2.5 * 40.0)


def test_the_generator_scene_gives_the_3d_views_their_ray_casting_back_when_closed():
    from CircleOfWillisGANLib.slicer_scene import SlicerScene

    slicer = fake_slicer()
    view = MagicMock(name="3D view")
    view.GetID.return_value = "vtkMRMLViewNode1"
    view.GetRaycastTechnique.return_value = "composite"
    slicer.views[:] = [view]
    slicer.mrmlScene.GetNodeByID.side_effect = lambda node_id: view if node_id == "vtkMRMLViewNode1" else None
    slicer.util.updateVolumeFromArray.return_value = None
    scene = SlicerScene(slicer)
    scene.show(np.zeros((4, 8, 8), np.float32), np.eye(4))
    view.SetRaycastTechnique.assert_called_with(slicer.vtkMRMLViewNode.MaximumIntensityProjection)
    scene.close()
    view.SetRaycastTechnique.assert_called_with("composite")
