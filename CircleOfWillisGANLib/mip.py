"""Maximum intensity projections (MIPs) as pictures: one volume's three views, contact sheets, GIFs.

Views follow radiological display: axial seen from below (patient's right on the left, anterior up),
coronal seen from the front (right on the left, superior up), sagittal with anterior on the left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .checks import finite_number, whole_number
from .errors import InputError
from .files import atomic_write
from .volume_io import check_spacing

VIEWS = ("axial", "coronal", "sagittal")
VIEW_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"),  # the patient sides at each view's
                "sagittal": ("A", "P", "S", "I")}  # left, right, top and bottom edge, as `mip` orients it
LETTER_PX = 11  # orientation letters' font size; a view too small for them (see _letter_room) goes without
GAP = 4
MAX_PANEL_PIXELS = 64_000_000  # a MIP panel larger than this comes from a mistaken scale, not a wish for a picture


def mip(volume_dhw: np.ndarray, view: str) -> np.ndarray:
    """The maximum intensity projection of a (D, H, W) volume along `view`, oriented for display."""
    if hasattr(volume_dhw, "detach"):  # a torch tensor, perhaps on a GPU or needing gradients
        volume_dhw = volume_dhw.detach().cpu().numpy()
    if np.iscomplexobj(volume_dhw):
        raise InputError("a MIP needs real-valued voxels, got complex ones: pass their magnitude (np.abs) or real part")
    try:
        v = np.asarray(volume_dhw, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"a MIP needs a 3D (D, H, W) array of numbers, got {type(volume_dhw).__name__}") from None
    if v.ndim != 3 or 0 in v.shape:
        raise InputError(f"a MIP needs a 3D (D, H, W) volume with at least one voxel, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise InputError("the volume contains NaN or infinite values: clean it before making a MIP")
    if view == "axial":
        return v.max(axis=0).T[::-1, ::-1]
    if view == "coronal":
        return v.max(axis=2)[::-1, ::-1]
    if view == "sagittal":
        return v.max(axis=1)[::-1, ::-1]
    raise InputError(f"unknown view {view!r}: use one of {', '.join(VIEWS)}")


def _to_uint8(image: np.ndarray, window: Tuple[float, float]) -> np.ndarray:
    lo, hi = window
    scaled = (np.nan_to_num(image) - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _resize(image: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape == tuple(size_hw):
        return image
    return np.asarray(Image.fromarray(image).resize((size_hw[1], size_hw[0]), Image.BILINEAR))


def mip_panel(volume_dhw: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), scale: float = 2.0,
              window: Tuple[float, float] = (0.0, 1.0), orientation_letters: bool = False) -> np.ndarray:
    """Axial MIP on the left, coronal above sagittal on the right, as one uint8 grey image.

    `spacing_mm` is (x, y, z) = NIfTI (i, j, k) spacing, so anisotropic voxels are shown at true proportions.
    `orientation_letters` marks each view's edges with the patient side they face (R/L, A/P, S/I), so a picture
    seen alone tells left from right; pictures compared blind (the Turing test) leave them out.
    """
    sx, sy, sz = check_spacing(spacing_mm)
    base = min(sx, sy, sz)
    axial_mip = mip(volume_dhw, "axial")
    d, h, w = np.shape(volume_dhw)
    finite_number(scale, "the MIP scale (pixels per finest voxel)", 0, above_low=True)
    if (w * sy + d * sz) * (h * sx + w * sy + d * sz) * (scale / base) ** 2 > MAX_PANEL_PIXELS:
        raise InputError(f"a MIP panel at scale {scale} would exceed {MAX_PANEL_PIXELS:,} pixels: use a smaller scale")
    try:
        lo, hi = (float(x) for x in window)
    except (TypeError, ValueError):
        lo, hi = np.nan, np.nan
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"the MIP window must be two finite numbers (low, high) with low < high, got {window!r}")
    window = (lo, hi)

    def size(rows_mm: float, cols_mm: float) -> Tuple[int, int]:
        return max(1, round(rows_mm / base * scale)), max(1, round(cols_mm / base * scale))

    axial = _resize(_to_uint8(axial_mip, window), size(w * sy, h * sx))
    coronal = _resize(_to_uint8(mip(volume_dhw, "coronal"), window), size(d * sz, h * sx))
    sagittal = _resize(_to_uint8(mip(volume_dhw, "sagittal"), window), size(d * sz, w * sy))
    if orientation_letters:
        axial, coronal, sagittal = (_letter_view(image, view)
                                    for image, view in zip((axial, coronal, sagittal), VIEWS))
    right_w = max(coronal.shape[1], sagittal.shape[1])
    right_h = coronal.shape[0] + GAP + sagittal.shape[0]
    height = max(axial.shape[0], right_h)
    panel = np.zeros((height, axial.shape[1] + GAP + right_w), dtype=np.uint8)
    panel[: axial.shape[0], : axial.shape[1]] = axial
    x0 = axial.shape[1] + GAP
    panel[: coronal.shape[0], x0: x0 + coronal.shape[1]] = coronal
    y0 = coronal.shape[0] + GAP
    panel[y0: y0 + sagittal.shape[0], x0: x0 + sagittal.shape[1]] = sagittal
    return panel


def _letter_view(image: np.ndarray, view: str) -> np.ndarray:
    """`image` with its orientation letters at the middle of each edge, white outlined in black to read on vessels
    and background alike; unchanged where the view has no room for them."""
    from PIL import Image, ImageDraw, ImageFont

    if not _letter_room(image.shape):
        return image
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    font = _letter_font()
    h, w = image.shape
    places = (((1, h / 2), "lm"), ((w - 2, h / 2), "rm"), ((w / 2, 0), "mt"), ((w / 2, h - 1), "mb"))
    for letter, (xy, anchor) in zip(VIEW_LETTERS[view], places):
        if isinstance(font, ImageFont.FreeTypeFont):
            draw.text(xy, letter, fill=255, font=font, anchor=anchor, stroke_width=1, stroke_fill=0)
        else:
            _draw_bitmap_letter(draw, xy, anchor, letter, font)
    return np.asarray(picture)


def _letter_font() -> Any:
    """Pillow's scalable default font at LETTER_PX, or where Pillow cannot size it (older than 10.1, as Slicer's may
    be, or built without FreeType), its fixed bitmap font, about as tall."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=LETTER_PX)
    except (TypeError, ImportError, OSError):  # ImportError, OSError: a Pillow built without FreeType
        return ImageFont.load_default()


def _draw_bitmap_letter(draw: Any, xy: Tuple[float, float], anchor: str, letter: str, font: Any) -> None:
    """Draw `letter` at `xy` placed as the two-letter `anchor` says, white outlined in black, with a bitmap font
    (which takes neither anchors nor strokes: the place comes from the letter's size, the outline from shifted
    copies)."""
    w, h = font.getmask(letter).size
    x = xy[0] - {"l": 0, "m": w / 2, "r": w}[anchor[0]]
    y = xy[1] - {"t": 0, "m": h / 2, "b": h}[anchor[1]]
    for dx, dy in ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)):
        draw.text((round(x) + dx, round(y) + dy), letter, fill=0, font=font)
    draw.text((round(x), round(y)), letter, fill=255, font=font)


def _letter_room(shape_hw: Tuple[int, int]) -> bool:
    """Whether a view fits its four letters apart: three letter heights down and across."""
    return min(shape_hw) >= 3 * LETTER_PX - 4


def contact_sheet(images: Sequence[np.ndarray], columns: int = 4, captions: Optional[Sequence[str]] = None) -> np.ndarray:
    """Tile equally sized uint8 images in a grid, with an optional caption under each (shortened at the front
    to its tile's width, since the ends of case names tell them apart)."""
    if len(images) == 0:
        raise InputError("a contact sheet needs at least one image")
    from PIL import Image, ImageDraw

    images = [picture(i, "contact sheet tile") for i in images]
    if captions is not None and len(captions) != len(images):
        raise InputError(f"{len(captions)} captions for {len(images)} pictures: give one caption per picture")
    whole_number(columns, "contact sheet columns", 1)
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    caption_h = 14 if captions else 0
    columns = min(columns, len(images))
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("L", (columns * (w + GAP) - GAP, rows * (h + caption_h + GAP) - GAP), 0)
    draw = ImageDraw.Draw(sheet)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        x, y = c * (w + GAP), r * (h + caption_h + GAP)
        sheet.paste(Image.fromarray(image), (x, y))
        if captions:
            draw.text((x + 2, y + h + 1), _fit_caption(draw, str(captions[k]), w - 2), fill=220)
    return np.asarray(sheet)


def _fit_caption(draw: Any, text: str, width: int) -> str:
    """`text`, or its longest tail after '..' that is at most `width` pixels wide."""
    if draw.textlength(text) <= width:
        return text
    for start in range(1, len(text)):
        short = ".." + text[start:]
        if draw.textlength(short) <= width:
            return short
    return ""


def picture(image: Any, what: str = "picture") -> np.ndarray:
    """`image` as a uint8 grey (H, W) or RGB(A) (H, W, 3|4) array, or an InputError: a float MIP in [0, 1] cast to
    uint8 would be written as a black picture, and a volume is no picture."""
    array = np.asarray(image)
    if not (array.ndim == 2 or array.ndim == 3 and array.shape[-1] in (3, 4)) or 0 in array.shape:
        raise InputError(f"{what}: expected a 2D picture (e.g. from mip_panel), not a volume; got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    whole = array.dtype.kind in "iu" and array.size and 0 <= array.min() and array.max() <= 255
    if not whole:
        raise InputError(f"{what}: expected 0-255 grey levels (uint8, as mip_panel makes from a MIP's 0-1), got "
                         f"{array.dtype}{' values beyond them' if array.dtype.kind in 'iu' else ''}: scale it to 0-255")
    return array.astype(np.uint8)


def save_png(path: Union[str, Path], image: np.ndarray, text: Optional[Dict[str, str]] = None) -> Path:
    """Write a uint8 grey or RGB image as PNG, atomically, with optional text chunks (e.g. which tool wrote it)."""
    from PIL import Image, PngImagePlugin

    pixels = picture(image, "PNG image")
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    return atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=info))


def save_gif(path: Union[str, Path], frames: List[np.ndarray], fps: float = 10.0) -> Path:
    """Write uint8 frames as a looping animated GIF, atomically."""
    from PIL import Image

    if not frames:
        raise InputError("a GIF needs at least one frame")
    pictures = [Image.fromarray(picture(f, "GIF frame")) for f in frames]
    duration = max(20, int(round(1000.0 / finite_number(fps, "GIF frames per second", 0, above_low=True))))
    return atomic_write(path, lambda tmp: pictures[0].save(tmp, format="GIF", save_all=True,
                                                           append_images=pictures[1:], duration=duration, loop=0))
