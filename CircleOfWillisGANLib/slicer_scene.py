"""What the 3D Slicer module shows: one volume node updated in place, MIP volume rendering, the vessel model.

This file never imports slicer: the module passes the `slicer` package in, so the library stays
Slicer-independent. Every Slicer name used here is checked against Slicer 5.8's API by a test.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from .surface import VESSEL_RGB

VOLUME_NAME = "CircleOfWillisGAN volume"
SURFACE_NAME = "CircleOfWillisGAN vessels"
ROLE_ATTRIBUTE = "CircleOfWillisGAN.role"
MIP_PRESET = "MR-MIP"


class SlicerScene:
    """Keeps the generated volume and vessel surface in the MRML scene, reusing the same nodes."""

    def __init__(self, slicer: Any) -> None:
        self.slicer = slicer
        self.volume_node: Optional[Any] = None
        self.surface_node: Optional[Any] = None
        self._layout_done = False
        self._raycast: Dict[str, Any] = {}  # 3D view node ID -> its ray casting technique before this module's MIP
        self._hidden: List[Any] = []  # display nodes set_hidden hid, to show again

    def _node(self, role: str, class_name: str, name: str) -> Any:
        """The node this module made for `role` (also after a scene was saved and reopened), or a new one."""
        scene = self.slicer.mrmlScene
        for node in self.slicer.util.getNodesByClass(class_name):
            if node.GetAttribute(ROLE_ATTRIBUTE) == role:
                return node
        node = scene.AddNewNodeByClass(class_name, name)
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        return node

    def show(self, volume_dhw: np.ndarray, affine: np.ndarray, surface: Any = None) -> None:
        """Show a (D, H, W) volume with its voxel-to-RAS affine, and its vessel surface (vtkPolyData) if any."""
        slicer = self.slicer
        first = self.volume_node is None or self.volume_node.GetScene() is None
        if first:
            self.volume_node = self._node("volume", "vtkMRMLScalarVolumeNode", VOLUME_NAME)
        # Slicer arrays are indexed (k, j, i); the NIfTI axes (i, j, k) are (H, W, D): array (D, W, H).
        slicer.util.updateVolumeFromArray(self.volume_node, np.ascontiguousarray(volume_dhw.transpose(0, 2, 1)))
        self.volume_node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(affine, dtype=float)))
        if first:
            self.volume_node.CreateDefaultDisplayNodes()
            slicer.util.setSliceViewerLayers(background=self.volume_node, fit=True)
            self._volume_rendering()
        self._window(volume_dhw)
        self._surface(surface)
        if not self._layout_done:
            self.use_layout()

    def _volume_rendering(self) -> None:
        """Maximum intensity projection: the MR-MIP preset and the MIP raycast technique in every 3D view."""
        slicer = self.slicer
        logic = slicer.modules.volumerendering.logic()
        display = logic.CreateDefaultVolumeRenderingNodes(self.volume_node)
        preset = logic.GetPresetByName(MIP_PRESET)
        if preset is not None:
            display.GetVolumePropertyNode().Copy(preset)
        display.SetVisibility(True)
        self.vr_display = display
        for view in slicer.util.getNodesByClass("vtkMRMLViewNode"):
            self._raycast.setdefault(view.GetID(), view.GetRaycastTechnique())
            view.SetRaycastTechnique(slicer.vtkMRMLViewNode.MaximumIntensityProjection)

    def close(self) -> None:
        """Give the 3D views back the ray casting the user had before the module showed its MIP."""
        for view_id, technique in self._raycast.items():
            view = self.slicer.mrmlScene.GetNodeByID(view_id)
            if view is not None:
                view.SetRaycastTechnique(technique)
        self._raycast = {}

    def _window(self, volume_dhw: np.ndarray) -> None:
        """Grey ramp from the median (background) to the 99.9th percentile (vessels), as the explorer does."""
        lo, hi = (float(v) for v in np.percentile(volume_dhw, (50.0, 99.9)))
        hi = max(hi, lo + 1e-3)
        import vtk  # VTK as bundled with Slicer

        opacity, colours = vtk.vtkPiecewiseFunction(), vtk.vtkColorTransferFunction()
        opacity.AddPoint(lo, 0.0)
        opacity.AddPoint(hi, 1.0)
        colours.AddRGBPoint(lo, 0.0, 0.0, 0.0)
        colours.AddRGBPoint(hi, 1.0, 1.0, 1.0)
        prop_node = self.vr_display.GetVolumePropertyNode()
        prop_node.SetScalarOpacity(opacity)
        prop_node.SetColor(colours)

    def _surface(self, surface: Any) -> None:
        if surface is None:
            if self.surface_node is not None and self.surface_node.GetScene() is not None:
                self.surface_node.GetDisplayNode().SetVisibility(False)
            return
        if self.surface_node is None or self.surface_node.GetScene() is None:
            self.surface_node = self._node("surface", "vtkMRMLModelNode", SURFACE_NAME)
            self.surface_node.CreateDefaultDisplayNodes()
            display = self.surface_node.GetDisplayNode()
            display.SetColor(*VESSEL_RGB)
            display.SetVisibility2D(True)
        self.surface_node.SetAndObservePolyData(surface)
        self.surface_node.GetDisplayNode().SetVisibility(True)

    def set_hidden(self, hidden: bool) -> None:
        """Hide the generated volume (slices, MIP) and vessels while another panel owns the views (a Visual Turing case
        is seen alone), remembering which were shown; unhidden, exactly those are shown again."""
        if hidden:
            self._hidden += [display for display in self._displays() if display.GetVisibility()]
            for display in self._hidden:
                display.SetVisibility(False)
            return
        for display in self._hidden:
            if display.GetScene() is not None:
                display.SetVisibility(True)
        self._hidden = []

    def _displays(self) -> List[Any]:
        """The display nodes of the generated volume and vessels that are in the scene."""
        nodes = [node for node in (self.volume_node, self.surface_node) if node is not None and node.GetScene() is not None]
        displays = (node.GetNthDisplayNode(i) for node in nodes for i in range(node.GetNumberOfDisplayNodes()))
        return [display for display in displays if display is not None]

    def use_layout(self) -> None:
        """3D view plus the three slice views, centred on the volume."""
        slicer = self.slicer
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        slicer.util.resetThreeDViews()
        self._layout_done = True
