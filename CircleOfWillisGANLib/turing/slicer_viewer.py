"""The rater's case viewer inside 3D Slicer: one case at a time, shown the same way for every case.

Like slicer_scene.py this file never imports slicer: the module passes the `slicer` package in. Everything a
rater sees is fixed (node names, window, transfer function, colour, layout, camera), so nothing but the
voxels differs between a real and a generated case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Sequence

from ..slicer_scene import MIP_PRESET
from ..surface import VESSEL_RGB, vessel_surface
from ..volume_io import load_volume

CASE_NAME = "Turing case"
SURFACE_NAME = "Turing surface"
WINDOW, LEVEL = 255.0, 127.5  # the cases are quantised to 0-255
CAMERA_DISTANCE = 2.5  # in largest extents of the volume, from the centre


def camera_pose(ras_bounds: Sequence[float]) -> tuple:
    """(position, focal point, view up) looking down from superior at the centre of the bounds, anterior up."""
    centre = [(ras_bounds[2 * a] + ras_bounds[2 * a + 1]) / 2.0 for a in range(3)]
    extent = max(ras_bounds[2 * a + 1] - ras_bounds[2 * a] for a in range(3))
    position = (centre[0], centre[1], centre[2] + CAMERA_DISTANCE * extent)
    return position, tuple(centre), (0.0, 1.0, 0.0)


class SlicerCaseViewer:
    """Shows one Turing case in Slicer's views (`show_case`), or nothing (`hide_case`); `close` also gives the
    views back the settings the rating changed."""

    def __init__(self, slicer: Any) -> None:
        self.slicer = slicer
        self.nodes: List[Any] = []
        self._undo: Dict[Hashable, Callable[[], None]] = {}  # per changed setting, how to put back its value before rating

    def show_case(self, path: Path, display: str) -> None:
        """Replace the shown case by the volume at `path`, laid out for `display` (mip, slices, surface, all)."""
        slicer = self.slicer
        self.hide_case()
        self._hide_other_nodes()
        self._annotations_off()
        volume = slicer.util.loadVolume(str(path), {"name": CASE_NAME, "show": False})
        volume.CreateDefaultDisplayNodes()
        display_node = volume.GetDisplayNode()
        self.nodes += [volume.GetStorageNode(), display_node, volume]
        display_node.AutoWindowLevelOff()
        display_node.SetWindowLevel(WINDOW, LEVEL)
        layouts = slicer.vtkMRMLLayoutNode
        slicer.app.layoutManager().setLayout({"mip": layouts.SlicerLayoutOneUp3DView, "surface": layouts.SlicerLayoutOneUp3DView,
                                              "slices": layouts.SlicerLayoutOneUpRedSliceView,
                                              "all": layouts.SlicerLayoutFourUpView}[display])
        if display in ("slices", "all"):
            slicer.util.setSliceViewerLayers(background=volume, foreground=None, label=None, fit=True)
        if display in ("mip", "all"):
            self._mip(volume)
        if display in ("surface", "all"):
            self._surface(path)
        if display != "slices":
            bounds = [0.0] * 6
            volume.GetRASBounds(bounds)
            self._camera(bounds)

    def hide_case(self) -> None:
        """Remove every node the last case added, so the views show nothing."""
        scene = self.slicer.mrmlScene
        for node in reversed(self.nodes):
            if node is not None and node.GetScene() is not None:
                scene.RemoveNode(node)
        self.nodes = []

    def close(self) -> None:
        """Remove the case and restore what the user had before rating: the other nodes' visibility, the slice
        annotations and the 3D ray casting."""
        self.hide_case()
        for undo in self._undo.values():
            undo()
        self._undo = {}

    def _remember(self, key: Hashable, undo: Callable[[], None]) -> None:
        """Keep `undo` for the first change of the setting `key` only: it restores the value from before rating."""
        self._undo.setdefault(key, undo)

    def _hide_other_nodes(self) -> None:
        """Hide everything else the scene displays (the panel's generated volume, its MIP and vessels, the user's
        data), so the rater sees the case alone; `close` shows them again."""
        for node in self.slicer.util.getNodesByClass("vtkMRMLDisplayableNode"):
            for index in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(index)
                if display is not None and display.GetVisibility():
                    self._remember(("visibility", display.GetID()), lambda display=display: display.SetVisibility(True))
                    display.SetVisibility(False)

    def _annotations_off(self) -> None:
        """Slice view corner annotations off (DataProbe's setting) and cleared, so no text names the case."""
        slicer = self.slicer
        try:
            annotations = slicer.modules.DataProbeInstance.infoWidget.sliceAnnotations
        except AttributeError:  # no main window, or DataProbe not loaded: then nothing draws annotations
            annotations = None
        if annotations is not None:
            self._remember("annotations", lambda enabled=annotations.sliceViewAnnotationsEnabled:
                           _set_annotations(annotations, enabled))
            _set_annotations(annotations, 0)
        layout_manager = slicer.app.layoutManager()
        for name in layout_manager.sliceViewNames():
            corner = layout_manager.sliceWidget(name).sliceView().cornerAnnotation()
            for position in range(4):
                corner.SetText(position, "")

    def _mip(self, volume: Any) -> None:
        """Maximum intensity projection with one fixed grey ramp over 0-255, the same for every case."""
        import vtk  # VTK as bundled with Slicer

        slicer = self.slicer
        logic = slicer.modules.volumerendering.logic()
        display = logic.CreateDefaultVolumeRenderingNodes(volume)
        preset = logic.GetPresetByName(MIP_PRESET)
        property_node = display.GetVolumePropertyNode()
        self.nodes += [property_node, display.GetROINode(), display]
        if preset is not None:
            property_node.Copy(preset)
        opacity, colours = vtk.vtkPiecewiseFunction(), vtk.vtkColorTransferFunction()
        opacity.AddPoint(0.0, 0.0)
        opacity.AddPoint(WINDOW, 1.0)
        colours.AddRGBPoint(0.0, 0.0, 0.0, 0.0)
        colours.AddRGBPoint(WINDOW, 1.0, 1.0, 1.0)
        property_node.SetScalarOpacity(opacity)
        property_node.SetColor(colours)
        display.SetVisibility(True)
        for view in slicer.util.getNodesByClass("vtkMRMLViewNode"):
            self._remember(("raycast", view.GetID()), lambda view=view, technique=view.GetRaycastTechnique():
                           view.SetRaycastTechnique(technique))
            view.SetRaycastTechnique(slicer.vtkMRMLViewNode.MaximumIntensityProjection)

    def _surface(self, path: Path) -> None:
        """The vessel surface of the case file in the fixed vessel colour."""
        volume_dhw, affine = load_volume(path)
        model = self.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLModelNode", SURFACE_NAME)
        model.SetAndObservePolyData(vessel_surface(volume_dhw, affine))
        model.CreateDefaultDisplayNodes()
        display = model.GetDisplayNode()
        self.nodes += [display, model]
        display.SetColor(*VESSEL_RGB)
        display.SetVisibility2D(False)
        display.SetVisibility(True)

    def _camera(self, ras_bounds: Sequence[float]) -> None:
        position, focal_point, view_up = camera_pose(ras_bounds)
        camera = self.slicer.app.layoutManager().threeDWidget(0).threeDView().cameraNode()
        camera.SetFocalPoint(*focal_point)
        camera.SetPosition(*position)
        camera.SetViewUp(*view_up)
        camera.ResetClippingRange()


def _set_annotations(annotations: Any, enabled: int) -> None:
    """Switch DataProbe's slice view annotations on or off as its settings checkbox does, and redraw them.

    Switching them off drops DataProbe's observers (of the slice logics and of its parameter node), and its redraw
    adds them back only when its view list is empty (Slicer 5.8 DataProbeLib/SliceViewAnnotations.py): so turning
    them on again clears that list and observes the parameter node again, or the corners would stop updating."""
    import vtk  # VTK as bundled with Slicer

    annotations.sliceViewAnnotationsEnabled = enabled
    annotations.sliceViewAnnotationsCheckBox.checked = bool(enabled)
    annotations.updateEnabledButtons()
    if enabled:
        annotations.sliceViewNames = []
        if annotations.getObserver(annotations.parameterNode, vtk.vtkCommand.ModifiedEvent,
                                   annotations.updateGUIFromMRML) is None:
            annotations.addObserver(annotations.parameterNode, vtk.vtkCommand.ModifiedEvent, annotations.updateGUIFromMRML)
    annotations.updateSliceViewFromGUI()
