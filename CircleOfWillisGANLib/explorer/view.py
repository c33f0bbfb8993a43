"""The explorer's VTK scene: a 3D MIP volume rendering, the vessel surface and three slice views.

One render window holds five viewports: MIP (top left), surface (top right), and axial, coronal and sagittal
slices (bottom). The image data, the surface and the slices are updated in place for each new volume.
Views follow radiological display, as the MIP pictures do (mip.py): the patient's right on the screen's left in
the axial, coronal and 3D views, anterior on the left in the sagittal view. Letters at each viewport's edges say
which way the patient lies, and follow the camera when the user turns it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import require
from ..surface import VESSEL_RGB

BACKGROUND = (0.05, 0.05, 0.08)
LETTER_RGB = (0.55, 0.8, 1.0)
FIT_MARGIN = 1.15  # the volume's box fills the viewport but for this much room around it (letters, title)
Vector = Tuple[float, float, float]
# (camera position relative to the focal point, view up) in RAS: the 3D views look from below and behind, anterior up
VIEW_3D: Tuple[Vector, Vector] = ((0.0, -1.0, -1.6), (0.0, 1.0, 0.0))
SLICE_VIEWS: Tuple[Tuple[Vector, Vector], ...] = (
    ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),  # axial from below: right on the left, anterior up
    ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),  # coronal from the front: right on the left, superior up
    ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),  # sagittal from the patient's left: anterior on the left, superior up
)
EDGES = {"left": (0.012, 0.5), "right": (0.988, 0.5), "top": (0.5, 0.975), "bottom": (0.5, 0.025)}


class VolumeScene:
    """Owns the VTK pipeline; call `update(volume, affine, surface)` then `render()`."""

    def __init__(self, render_window: Optional[Any] = None) -> None:
        vtk = require("vtk", "The explorer's 3D view", "vtk")
        self.vtk = vtk
        self.render_window = render_window or vtk.vtkRenderWindow()
        self.image = vtk.vtkImageData()
        self._camera_set = False
        self._affine = np.eye(4)  # the grid shown last
        self.letters: Dict[Any, Dict[str, Any]] = {}  # renderer -> {edge: text actor}
        self.mip_renderer = self._renderer((0.0, 0.4, 0.5, 1.0), "3D MIP")
        self.surface_renderer = self._renderer((0.5, 0.4, 1.0, 1.0), "Vessel surface")
        self.slice_renderers = [self._renderer((i / 3, 0.0, (i + 1) / 3, 0.4), name)
                                for i, name in enumerate(("Axial", "Coronal", "Sagittal"))]
        self._build_volume()
        self._build_surface()
        self._build_slices()

    def _renderer(self, viewport: Any, title: str) -> Any:
        vtk = self.vtk
        renderer = vtk.vtkRenderer()
        renderer.SetViewport(*viewport)
        renderer.SetBackground(*BACKGROUND)
        text = vtk.vtkTextActor()
        text.SetInput(title)
        text.GetTextProperty().SetFontSize(14)
        text.GetTextProperty().SetColor(0.9, 0.9, 0.6)
        text.SetPosition(6, 6)
        renderer.AddViewProp(text)
        self._add_letters(renderer)
        self.render_window.AddRenderer(renderer)
        return renderer

    def _add_letters(self, renderer: Any) -> None:
        """Orientation letters at the viewport's four edges, kept in step with its camera."""
        letters = {}
        for edge, (x, y) in EDGES.items():
            text = self.vtk.vtkTextActor()
            prop = text.GetTextProperty()
            prop.SetFontSize(16)
            prop.BoldOn()
            prop.SetColor(*LETTER_RGB)
            prop.SetJustification({"left": 0, "right": 2}.get(edge, 1))
            prop.SetVerticalJustification({"top": 2, "bottom": 0}.get(edge, 1))
            text.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
            text.SetPosition(x, y)
            renderer.AddViewProp(text)
            letters[edge] = text
        self.letters[renderer] = letters
        camera = renderer.GetActiveCamera()
        camera.AddObserver("ModifiedEvent", lambda *args: self._update_letters(renderer))
        self._update_letters(renderer)

    def _update_letters(self, renderer: Any) -> None:
        camera = renderer.GetActiveCamera()
        for edge, letter in screen_letters(camera.GetDirectionOfProjection(), camera.GetViewUp()).items():
            self.letters[renderer][edge].SetInput(letter)

    def _build_volume(self) -> None:
        vtk = self.vtk
        self.volume_mapper = vtk.vtkSmartVolumeMapper()
        self.volume_mapper.SetInputData(self.image)
        self.volume_mapper.SetBlendModeToMaximumIntensity()
        self.opacity = vtk.vtkPiecewiseFunction()
        self.colours = vtk.vtkColorTransferFunction()
        self._set_window(0.0, 1.0)
        prop = vtk.vtkVolumeProperty()
        prop.SetScalarOpacity(self.opacity)
        prop.SetColor(self.colours)
        prop.SetInterpolationTypeToLinear()
        self.volume_actor = vtk.vtkVolume()
        self.volume_actor.SetMapper(self.volume_mapper)
        self.volume_actor.SetProperty(prop)
        self.volume_actor.VisibilityOff()
        self.mip_renderer.AddVolume(self.volume_actor)

    def _set_window(self, lo: float, hi: float) -> None:
        """Grey ramp from lo (black, transparent) to hi (white, opaque), as a MIP preset does."""
        hi = max(hi, lo + 1e-3)
        self.opacity.RemoveAllPoints()
        self.opacity.AddPoint(lo, 0.0)
        self.opacity.AddPoint(hi, 1.0)
        self.colours.RemoveAllPoints()
        self.colours.AddRGBPoint(lo, 0.0, 0.0, 0.0)
        self.colours.AddRGBPoint(hi, 1.0, 1.0, 1.0)
        for _, actor in getattr(self, "slice_mappers", []):
            actor.GetProperty().SetColorWindow(hi - lo)
            actor.GetProperty().SetColorLevel((hi + lo) / 2)

    def _build_surface(self) -> None:
        vtk = self.vtk
        self.surface = vtk.vtkPolyData()
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(self.surface)
        mapper.ScalarVisibilityOff()
        self.surface_actor = vtk.vtkActor()
        self.surface_actor.SetMapper(mapper)
        self.surface_actor.GetProperty().SetColor(*VESSEL_RGB)
        self.surface_actor.GetProperty().SetSpecular(0.3)
        self.surface_renderer.AddActor(self.surface_actor)

    def _build_slices(self) -> None:
        vtk = self.vtk
        self.slice_mappers = []
        for renderer, orientation in zip(self.slice_renderers, ("Z", "Y", "X")):
            mapper = vtk.vtkImageSliceMapper()
            mapper.SetInputData(self.image)
            getattr(mapper, f"SetOrientationTo{orientation}")()
            actor = vtk.vtkImageSlice()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColorWindow(1.0)
            actor.GetProperty().SetColorLevel(0.5)
            actor.VisibilityOff()
            renderer.AddViewProp(actor)
            self.slice_mappers.append((mapper, actor))

    def update(self, volume_dhw: np.ndarray, affine: np.ndarray, surface: Any = None) -> None:
        """Show a new (D, H, W) volume with its voxel-to-RAS affine and (optionally) its vessel surface."""
        from vtk.util.numpy_support import numpy_to_vtk

        d, h, w = volume_dhw.shape
        affine = np.asarray(affine, dtype=float)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        first = tuple(self.image.GetDimensions()) != (h, w, d) or not np.allclose(self._affine, affine)
        self._affine = affine  # a projection lies on its scan's grid: the cameras follow when the grid moves
        self.image.SetDimensions(h, w, d)
        self.image.SetSpacing(*spacing)
        self.image.SetOrigin(*affine[:3, 3])
        direction = affine[:3, :3] / spacing
        self.image.SetDirectionMatrix(*direction.ravel())
        scalars = numpy_to_vtk(np.ascontiguousarray(volume_dhw.transpose(0, 2, 1), dtype=np.float32).ravel(), deep=True)
        self.image.GetPointData().SetScalars(scalars)
        self.image.Modified()
        lo, hi = np.percentile(volume_dhw, (50.0, 99.9))
        self._set_window(float(lo), float(hi))
        self.volume_actor.VisibilityOn()
        for axis, (mapper, actor) in zip((2, 1, 0), self.slice_mappers):
            mapper.SetSliceNumber((h, w, d)[axis] // 2 if axis != 2 else self._best_axial(volume_dhw))
            actor.VisibilityOn()
        if surface is not None:
            self.surface.DeepCopy(surface)
        else:
            self.surface.Initialize()
        self.surface.Modified()
        self.surface_actor.SetVisibility(surface is not None)
        if first or not self._camera_set:
            self.reset_cameras()
        for renderer in (self.mip_renderer, self.surface_renderer):
            renderer.ResetCameraClippingRange()  # a new surface may reach beyond the old clipping planes

    @staticmethod
    def _best_axial(volume_dhw: np.ndarray) -> int:
        """The axial slice with the most bright voxels: where the circle of Willis lies."""
        v = np.asarray(volume_dhw)
        bright = (v > np.percentile(v, 99)).sum(axis=(1, 2))
        return int(np.argmax(bright))

    def reset_cameras(self) -> None:
        """Look at the volume from below and behind (3D views) and straight on (slices), radiological display, each
        view filled by the volume's box."""
        corners = grid_corners(self._affine, self.image.GetDimensions())
        for renderer in (self.mip_renderer, self.surface_renderer):
            renderer.GetActiveCamera().ParallelProjectionOff()
            fit_camera(renderer, corners, *VIEW_3D)
        for renderer, (position, up) in zip(self.slice_renderers, SLICE_VIEWS):
            renderer.GetActiveCamera().ParallelProjectionOn()
            fit_camera(renderer, corners, position, up)
        self._camera_set = True

    def render(self) -> None:
        self.render_window.Render()

    def screenshot(self) -> np.ndarray:
        """The render window as an RGB uint8 array (rows top to bottom)."""
        from vtk.util.numpy_support import vtk_to_numpy

        grab = self.vtk.vtkWindowToImageFilter()
        grab.SetInput(self.render_window)
        grab.ReadFrontBufferOff()
        grab.Update()
        out = grab.GetOutput()
        w, h, _ = out.GetDimensions()
        pixels = vtk_to_numpy(out.GetPointData().GetScalars()).reshape(h, w, -1)[::-1, :, :3]
        return np.ascontiguousarray(pixels)


def screen_letters(direction_of_projection: Sequence[float], view_up: Sequence[float]) -> Dict[str, str]:
    """The patient direction (R/L/A/P/S/I, RAS world) nearest each screen edge for a camera; none while the view up
    lies along the direction of projection (a camera half way through being set)."""
    forward = _unit(direction_of_projection)
    up = np.asarray(view_up, dtype=float) - np.dot(view_up, forward) * forward
    if np.linalg.norm(up) < 1e-6:
        return {}
    up = _unit(up)
    right = np.cross(forward, up)
    return {"left": _letter(-right), "right": _letter(right), "top": _letter(up), "bottom": _letter(-up)}


def _letter(vector: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return "RAS"[axis] if vector[axis] > 0 else "LPI"[axis]


def _unit(vector: Sequence[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=float)
    return v / np.linalg.norm(v)


def grid_corners(affine: np.ndarray, dimensions_ijk: Sequence[int]) -> np.ndarray:
    """The 8 corner voxel centres of a grid in RAS mm, (8, 3)."""
    ijk = np.array([[i, j, k] for i in (0, dimensions_ijk[0] - 1) for j in (0, dimensions_ijk[1] - 1)
                    for k in (0, dimensions_ijk[2] - 1)], dtype=float)
    return ijk @ np.asarray(affine, dtype=float)[:3, :3].T + np.asarray(affine, dtype=float)[:3, 3]


def fit_camera(renderer: Any, corners: np.ndarray, position: Sequence[float], up: Sequence[float]) -> None:
    """Look at `corners`' centre from `position` (relative to it) with `up`, as close as keeps every corner in the
    viewport: ResetCamera fits the bounding sphere, which leaves a flat volume small and a zoom on top crops it."""
    camera = renderer.GetActiveCamera()
    centre = corners.mean(axis=0)
    forward = -_unit(position)
    view_up = _unit(np.asarray(up, dtype=float) - np.dot(up, forward) * forward)
    right = np.cross(forward, view_up)
    offset = corners - centre
    across, upward, towards = np.abs(offset @ right), np.abs(offset @ view_up), -(offset @ forward)
    aspect = _aspect(renderer)
    if camera.GetParallelProjection():
        camera.SetParallelScale(FIT_MARGIN * max(upward.max(), across.max() / aspect, 1e-3))
        distance = 2.0 * float(np.linalg.norm(offset, axis=1).max()) + 1.0
    else:
        tangent = np.tan(np.radians(camera.GetViewAngle()) / 2.0)
        distance = float(np.max(towards + FIT_MARGIN * np.maximum(upward / tangent, across / (tangent * aspect))))
        distance = max(distance, float(towards.max()) + 1.0)
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre - forward * distance))
    camera.SetViewUp(*view_up)
    renderer.ResetCameraClippingRange()


def _aspect(renderer: Any) -> float:
    """Width over height of the renderer's viewport (1 before the window has a size)."""
    aspect = float(renderer.GetTiledAspectRatio())
    return aspect if np.isfinite(aspect) and aspect > 0 else 1.0
