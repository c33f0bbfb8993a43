"""What the library writes and draws for a volume (NIfTI, MIP panel, vessel surface) refuses inputs that
would give a wrong, empty or unreadable result, and says what to pass instead."""

from __future__ import annotations

import numpy as np
import pytest

from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.mip import contact_sheet, mip_panel, save_gif
from CircleOfWillisGANLib.volume_io import default_affine, load_volume, save_volume

VOLUME = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
AFFINE = default_affine(VOLUME.shape)


@pytest.mark.parametrize("name, volume, affine, dtype, message", [
    ("v.png", VOLUME, AFFINE, np.float32, "use a .nii or .nii.gz"),
    ("v.nii.gz", VOLUME, np.eye(3), np.float32, "4 x 4"),
    ("v.nii.gz", VOLUME, np.zeros((4, 4)), np.float32, "invertible"),
    ("v.nii.gz", np.where(VOLUME > 0.5, np.nan, VOLUME), AFFINE, np.float32, "NaN"),
    ("v.nii.gz", VOLUME, AFFINE, np.uint8, "would change its values"),
    ("v.nii.gz", VOLUME * 1000, AFFINE, np.int8, "would change its values"),
    ("v.nii.gz", np.zeros((0, 8, 8)), AFFINE, np.float32, "at least one voxel"),
])
def test_a_volume_that_cannot_be_stored_faithfully_is_refused_and_nothing_is_written(tmp_path, name, volume, affine,
                                                                                     dtype, message):
    with pytest.raises(InputError, match=message):
        save_volume(tmp_path / name, volume, affine, dtype=dtype)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("affine", [AFFINE, np.diag([-0.5, 0.7, 0.8, 1.0]),
                                    np.array([[0, 1, 0, 3], [-1, 0, 0, 2], [0, 0, 2, 1], [0, 0, 0, 1.0]])])
def test_a_saved_volume_carries_its_orientation_in_the_qform_as_well_as_the_sform(tmp_path, affine):
    import nibabel as nib

    save_volume(tmp_path / "v.nii.gz", VOLUME, affine)
    header = nib.load(str(tmp_path / "v.nii.gz")).header
    assert header["qform_code"] == header["sform_code"] == 2
    np.testing.assert_allclose(header.get_qform(), affine, atol=1e-6)
    np.testing.assert_allclose(header.get_sform(), affine, atol=1e-6)


def test_an_affine_with_shear_is_kept_in_the_sform_alone_since_a_qform_cannot_hold_it(tmp_path):
    import nibabel as nib

    sheared = np.array([[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    save_volume(tmp_path / "v.nii.gz", VOLUME, sheared)
    header = nib.load(str(tmp_path / "v.nii.gz")).header
    assert header["qform_code"] == 0 and header["sform_code"] == 2
    np.testing.assert_allclose(header.get_sform(), sheared, atol=1e-6)


def test_whole_numbers_round_trip_as_integers(tmp_path):
    labels = (VOLUME > 0.5).astype(np.float32) * 7
    save_volume(tmp_path / "labels.nii", labels, AFFINE, dtype=np.uint8)
    np.testing.assert_array_equal(load_volume(tmp_path / "labels.nii")[0], labels)


@pytest.mark.parametrize("kwargs, message", [
    ({"spacing_mm": (0, 1, 1)}, "three positive millimetres"),
    ({"spacing_mm": 1.0}, "three positive millimetres"),
    ({"scale": 0}, r"MIP scale \(pixels per finest voxel\) must be a finite number above 0"),
    ({"scale": 1000}, "would exceed"),
    ({"window": (1.0, 0.0)}, "low < high"),
])
def test_mip_panel_settings_that_give_no_sensible_picture_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        mip_panel(VOLUME, **kwargs)


@pytest.mark.parametrize("volume", [VOLUME[0], VOLUME[None], np.full((4, 8, 8), np.nan)])
def test_mip_panel_needs_one_finite_3d_volume(volume):
    with pytest.raises(InputError, match="3D|NaN"):
        mip_panel(volume)


@pytest.mark.parametrize("view", ["axial", "coronal", "sagittal"])
def test_each_views_letters_name_the_patient_side_its_edges_show(view):
    from CircleOfWillisGANLib.mip import VIEW_LETTERS, mip

    d, h, w = 8, 20, 30  # volume axes (D, H, W) run towards superior, the patient's right and anterior
    sides = {"R": (4, h - 1, 15), "L": (4, 0, 15), "A": (4, 10, w - 1), "P": (4, 10, 0), "S": (d - 1, 10, 15),
             "I": (0, 10, 15)}
    for edge, letter in zip(("left", "right", "top", "bottom"), VIEW_LETTERS[view]):
        volume = np.zeros((d, h, w), np.float32)
        volume[sides[letter]] = 1.0
        picture = mip(volume, view)
        row, col = np.argwhere(picture == 1.0)[0]
        at = {"left": col, "right": picture.shape[1] - 1 - col, "top": row, "bottom": picture.shape[0] - 1 - row}
        assert at[edge] == 0, f"{view}: a voxel at the patient's {letter} is not at the view's {edge} edge"


def _glyph(pixels):
    """The white (fill) pixels of one drawn letter, cropped to their box."""
    ys, xs = np.nonzero(pixels >= 128)
    return pixels[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1] >= 128


def _letter_likeness(glyph, letter):
    """Overlap (intersection over union) of a glyph with `letter` drawn alone in the letters' font."""
    from PIL import Image, ImageDraw

    from CircleOfWillisGANLib.mip import _letter_font

    canvas = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(canvas).text((20, 20), letter, fill=255, font=_letter_font(), anchor="mm", stroke_width=1,
                                stroke_fill=0)
    template = _glyph(np.asarray(canvas))
    h, w = max(glyph.shape[0], template.shape[0]), max(glyph.shape[1], template.shape[1])
    a, b = np.zeros((h, w), bool), np.zeros((h, w), bool)
    a[: glyph.shape[0], : glyph.shape[1]], b[: template.shape[0], : template.shape[1]] = glyph, template
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("view", ["axial", "coronal", "sagittal"])
def test_each_edge_shows_its_own_letter_not_the_opposite_sides(view):
    from CircleOfWillisGANLib.mip import VIEW_LETTERS, _letter_view

    lettered = _letter_view(np.zeros((100, 120), np.uint8), view)
    crops = {"left": lettered[35:65, :20], "right": lettered[35:65, -20:], "top": lettered[:20, 45:75],
             "bottom": lettered[-20:, 45:75]}
    opposite = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
    for edge, letter in zip(("left", "right", "top", "bottom"), VIEW_LETTERS[view]):
        glyph = _glyph(crops[edge])
        assert _letter_likeness(glyph, letter) > max(0.6, _letter_likeness(glyph, opposite[letter])), (view, edge)


def test_mip_pictures_are_lettered_only_when_asked_so_blind_pictures_stay_as_they_were():
    blank = np.zeros((16, 64, 64), np.float32)
    assert not mip_panel(blank).any()
    lettered = mip_panel(blank, orientation_letters=True)
    axial = lettered[:128, :128]
    for edge in (axial[54:74, :10], axial[54:74, -10:], axial[:12, 54:74], axial[-12:, 54:74]):
        assert edge.max() > 200  # a white letter (outlined in black) at the middle of every edge
    assert not axial[20:108, 20:108].any()  # and nothing over the view's inside


def test_a_written_mip_picture_carries_the_orientation_letters(tmp_path):
    from PIL import Image

    from CircleOfWillisGANLib.outputs import write_volume_outputs

    volume = np.random.default_rng(1).random((16, 64, 64)).astype(np.float32)
    affine = default_affine(volume.shape)
    write_volume_outputs(tmp_path, "v", volume, affine, {})
    picture = np.asarray(Image.open(tmp_path / "v_mip.png"))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    assert np.array_equal(picture, mip_panel(volume, spacing, orientation_letters=True))


@pytest.mark.parametrize("failure", [TypeError("load_default() got an unexpected keyword argument 'size'"),
                                     ImportError("The _imagingft C module is not installed")],
                         ids=["pillow-before-10.1", "pillow-without-freetype"])
def test_pillow_without_a_sizable_default_font_letters_with_its_bitmap_font(tmp_path, monkeypatch, failure):
    from PIL import Image, ImageFont

    from CircleOfWillisGANLib.outputs import write_volume_outputs

    def load_default_before_10_1(*args, **kwargs):  # no sizable font: only the bitmap one
        if args or kwargs:
            raise failure
        return ImageFont.load_default_imagefont()

    monkeypatch.setattr(ImageFont, "load_default", load_default_before_10_1)
    write_volume_outputs(tmp_path, "v", np.zeros((16, 64, 64), np.float32), default_affine((16, 64, 64)), {})
    axial = np.asarray(Image.open(tmp_path / "v_mip.png"))[:128, :128]
    for edge in (axial[54:74, :10], axial[54:74, -10:], axial[:12, 54:74], axial[-12:, 54:74]):
        assert edge.max() > 200  # a white letter at the middle of every edge, as with the scalable font
    assert not axial[20:108, 20:108].any()


def test_contact_sheets_and_gifs_check_their_layout(tmp_path):
    import torch
    from PIL import Image

    from CircleOfWillisGANLib.mip import mip, save_png

    tile = mip_panel(VOLUME)
    with pytest.raises(InputError, match="one caption per picture"):
        contact_sheet([tile, tile], captions=["a"])
    with pytest.raises(InputError, match="contact sheet columns must be a whole number of at least 1"):
        contact_sheet([tile], columns=0)
    with pytest.raises(InputError, match="contact sheet tile: expected a 2D picture"):
        contact_sheet([VOLUME])
    with pytest.raises(InputError, match="a contact sheet needs at least one image"):
        contact_sheet(np.zeros((0, 4, 4), np.uint8))
    axial = mip(VOLUME, "axial")  # float 0-1: as uint8 it would be a black picture
    for write in (lambda: save_png(tmp_path / "a.png", axial), lambda: contact_sheet([axial]),
                  lambda: save_gif(tmp_path / "a.gif", [axial]), lambda: save_png(tmp_path / "a.png", axial.astype(int) - 1)):
        with pytest.raises(InputError, match=": expected 0-255 grey levels .*: scale it to 0-255"):
            write()
    assert not list(tmp_path.iterdir())
    save_png(tmp_path / "a.png", (axial * 255).astype(np.int64))  # whole grey levels of any integer type are taken
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), (axial * 255).astype(np.uint8))
    with pytest.raises(InputError, match="a MIP needs real-valued voxels, got complex ones"):
        mip(VOLUME.astype(np.complex64), "axial")
    assert np.array_equal(mip(torch.from_numpy(VOLUME).requires_grad_(), "axial"), axial)
    with pytest.raises(InputError, match="frames per second"):
        save_gif(tmp_path / "a.gif", [tile], fps=0)


@pytest.mark.parametrize("volume, affine, threshold, message", [
    (VOLUME, AFFINE, 5.0, "not inside the volume's range"),
    (VOLUME, AFFINE, float("nan"), "not inside the volume's range"),
    (VOLUME, AFFINE, float(VOLUME.min()), "not inside the volume's range"),  # every voxel inside: no surface
    (VOLUME[:1], AFFINE, 0.5, "at least 2 voxels"),
    (VOLUME, np.eye(3), 0.5, "4 x 4"),
])
def test_a_surface_request_that_would_give_an_empty_or_misplaced_mesh_is_refused(volume, affine, threshold, message):
    from CircleOfWillisGANLib.surface import vessel_surface

    pytest.importorskip("vtk")
    with pytest.raises(InputError, match=message):
        vessel_surface(volume, affine, threshold)


@pytest.mark.parametrize("suffix", [".vtp", ".stl", ".obj", ".ply"])
def test_a_saved_surface_holds_lps_coordinates_marked_as_3d_slicer_reads_them(tmp_path, suffix):
    from CircleOfWillisGANLib.surface import save_surface, vessel_surface

    vtk = pytest.importorskip("vtk")
    blob = np.zeros((12, 16, 16), np.float32)
    blob[4:8, 10:14, 2:6] = 1.0  # a bright block at the right, anterior of the volume's centre (RAS axes)
    ras = vessel_surface(blob, default_affine(blob.shape), threshold=0.5, smoothing_iterations=0)
    path = save_surface(ras, tmp_path / f"s{suffix}")
    reader = {".vtp": vtk.vtkXMLPolyDataReader, ".stl": vtk.vtkSTLReader, ".obj": vtk.vtkOBJReader,
              ".ply": vtk.vtkPLYReader}[suffix]()
    reader.SetFileName(str(path))
    reader.Update()
    marker = {".vtp": lambda: reader.GetOutput().GetFieldData().GetAbstractArray("SPACE").GetValue(0),
              ".stl": lambda: reader.GetHeader(), ".obj": lambda: reader.GetComment(),
              ".ply": lambda: " ".join(reader.GetComments().GetValue(i)
                                       for i in range(reader.GetComments().GetNumberOfValues()))}[suffix]()
    assert "LPS" in marker and "RAS" not in marker
    points = lambda mesh: np.array([mesh.GetPoint(i) for i in range(mesh.GetNumberOfPoints())])
    np.testing.assert_allclose(points(reader.GetOutput()).mean(0), points(ras).mean(0) * [-1, -1, 1], atol=1e-3)


def _tube_across_the_volume() -> np.ndarray:
    """A bright bent tube (radius about 2 voxels) across a (16, 48, 48) volume, entering at one x face and leaving at
    the other: an open surface, cut by the volume's edge."""
    grid = np.stack(np.mgrid[:16, :48, :48], axis=-1).astype(np.float32)
    tube = np.zeros((16, 48, 48), np.float32)
    for s in np.linspace(0.0, 1.0, 200):
        centre = np.array([10.0, 47.0 * s, 26.0 - 11.0 * s + 6.0 * np.sin(np.pi * s)], np.float32)
        tube = np.maximum(tube, np.exp(-((grid - centre) ** 2).sum(-1) / (2 * 1.5 ** 2)))
    return tube


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("suffix", [".vtp", ".stl", ".obj", ".ply"])
def test_surface_faces_of_a_vessel_cut_by_the_volume_edge_point_out_of_it(tmp_path, suffix, mirrored):
    from scipy.ndimage import map_coordinates

    from CircleOfWillisGANLib.surface import save_surface, vessel_surface

    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy

    tube = _tube_across_the_volume()
    affine = default_affine(tube.shape, (0.6, 0.7, 0.8)) @ np.diag([-1.0 if mirrored else 1.0, 1, 1, 1])
    to_voxels = np.linalg.inv(affine)

    def intensity(ras: np.ndarray) -> np.ndarray:
        ijk = (to_voxels @ np.c_[ras, np.ones(len(ras))].T)[:3]
        return map_coordinates(tube.transpose(1, 2, 0), ijk, order=1, mode="nearest")

    surface = vessel_surface(tube, affine, threshold=0.5)
    points = vtk_to_numpy(surface.GetPoints().GetData()).astype(float)
    normals = vtk_to_numpy(surface.GetPointData().GetNormals()).astype(float)
    assert np.all(intensity(points + 0.3 * normals) < intensity(points))
    reader = {".vtp": vtk.vtkXMLPolyDataReader, ".stl": vtk.vtkSTLReader, ".obj": vtk.vtkOBJReader,
              ".ply": vtk.vtkPLYReader}[suffix]()
    reader.SetFileName(str(save_surface(surface, tmp_path / f"s{suffix}")))
    faces = vtk.vtkPolyDataNormals()  # normals from each face's winding alone, as a renderer or 3D printer reads it
    faces.SetInputConnection(reader.GetOutputPort())
    faces.ComputeCellNormalsOn()
    faces.ConsistencyOff()
    faces.AutoOrientNormalsOff()
    faces.SplittingOff()
    centres = vtk.vtkCellCenters()
    centres.SetInputConnection(faces.GetOutputPort())
    centres.Update()
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    centre = vtk_to_numpy(centres.GetOutput().GetPoints().GetData()) * lps_to_ras
    outward = vtk_to_numpy(faces.GetOutput().GetCellData().GetNormals()) * lps_to_ras
    assert np.all(intensity(centre + 0.3 * outward) < intensity(centre))


def test_a_failed_overwrite_keeps_the_volume_it_was_to_replace_whole(tmp_path, monkeypatch):
    from CircleOfWillisGANLib import outputs

    volume = np.zeros((8, 16, 16), np.float32)
    volume[3:5, 4:12, 6:10] = 1.0
    outputs.write_volume_outputs(tmp_path, "seed0001", volume, default_affine(volume.shape), {"seed": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(path, picture):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "save_png", disk_full)
    with pytest.raises(OSError, match="No space left"):
        outputs.write_volume_outputs(tmp_path, "seed0001", volume * 0.5, default_affine(volume.shape), {"seed": 1})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_folder_of_a_volume_file_s_name_is_never_set_aside(tmp_path):
    from CircleOfWillisGANLib.errors import OutputError
    from CircleOfWillisGANLib.outputs import write_volume_outputs

    (tmp_path / "seed0001.nii.gz").mkdir()
    with pytest.raises(OutputError, match="seed0001.nii.gz is a folder where this volume's file would be written"):
        write_volume_outputs(tmp_path, "seed0001", np.random.default_rng(0).random((8, 16, 16)).astype(np.float32),
                             default_affine((8, 16, 16)), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0001.nii.gz"]


def test_a_short_write_on_a_full_disk_is_called_a_full_disk(tmp_path, monkeypatch):
    import collections
    import shutil

    from CircleOfWillisGANLib.errors import OutputError
    from CircleOfWillisGANLib.files import atomic_write

    def numpy_short_write(tmp):  # NumPy's own words when the disk fills during np.save
        raise OSError("65536 requested and 18368 written")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(OutputError, match=r"shard.npy: the disk is full \(65536 requested and 18368 written\); choose a"):
        atomic_write(tmp_path / "shard.npy", numpy_short_write)
    assert list(tmp_path.iterdir()) == []


def _write_raw_nifti(path, data, affine):
    """A NIfTI file as another tool might write it: any data type, any affine, no checks."""
    import nibabel as nib

    image = nib.Nifti1Image(data, None)
    image.header["sform_code"] = 2
    for row, name in enumerate(("srow_x", "srow_y", "srow_z")):
        image.header[name] = affine[row]
    nib.save(image, str(path))
    return path


@pytest.mark.parametrize("data, affine, message", [
    (VOLUME.transpose(1, 2, 0), np.zeros((4, 4)), "affine that is all zero, not finite or singular"),
    (VOLUME.transpose(1, 2, 0), np.full((4, 4), np.nan), "affine that is all zero, not finite or singular"),
    (VOLUME.transpose(1, 2, 0).astype(np.complex64), AFFINE, "is complex-valued; a magnitude image is needed"),
])
def test_a_volume_whose_header_cannot_be_used_is_refused_naming_the_file(tmp_path, data, affine, message):
    from CircleOfWillisGANLib.volume_io import volume_grid

    path = _write_raw_nifti(tmp_path / "odd.nii.gz", data, affine)
    for read in (load_volume, volume_grid):
        with pytest.raises(InputError, match=message) as caught:
            read(path)
        assert "odd.nii.gz" in str(caught.value) and "\n" not in str(caught.value)


def test_a_volume_beyond_its_dtype_or_in_float16_is_refused_before_a_file_that_would_not_read_back(tmp_path):
    with pytest.raises(InputError, match=r"holds values beyond float32's range \(up to 1e\+39\): nothing was written"):
        save_volume(tmp_path / "big.nii", np.full((2, 2, 2), 1e39), AFFINE)
    with pytest.raises(InputError, match="not float16: use float32, int16 or uint8"):
        save_volume(tmp_path / "half.nii", VOLUME, AFFINE, dtype=np.float16)
    with pytest.raises(InputError, match="a volume is saved to a file path \\(str or Path\\), got NoneType"):
        save_volume(None, VOLUME, AFFINE)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("shape, spacing, message", [
    ((2, 2), (1.0, 1.0, 1.0), "a grid needs three sizes"),
    ((2, 0, 2), (1.0, 1.0, 1.0), "every grid size must be a whole number of at least 1"),
    ((2, 2, 2), (float("nan"), 1.0, 1.0), "three positive millimetres"),
])
def test_a_default_affine_of_an_impossible_grid_is_refused_not_made_of_nan(shape, spacing, message):
    with pytest.raises(InputError, match=message):
        default_affine(shape, spacing)


def test_volume_outputs_take_a_surface_format_without_its_dot_and_refuse_a_bad_threshold_or_sidecar(tmp_path):
    pytest.importorskip("vtk")
    from CircleOfWillisGANLib.outputs import write_volume_outputs

    blob = np.zeros((8, 16, 16), np.float32)
    blob[2:6, 4:12, 4:12] = 1.0
    paths = write_volume_outputs(tmp_path, "a", blob, default_affine(blob.shape), {}, surface=True,
                                 surface_format="STL", threshold=0.5)
    assert paths["surface"].name == "a_surface.stl" and paths["surface"].stat().st_size > 0
    for options, message in (({"surface_format": "vtk"}, "unknown surface format '.vtk': use one of .vtp"),
                             ({"threshold": "abc"}, "the surface threshold must be a number, got 'abc'")):
        with pytest.raises(InputError, match=message):
            write_volume_outputs(tmp_path, "b", blob, default_affine(blob.shape), {}, surface=True, **options)
    with pytest.raises(InputError, match="the sidecar must be a dict"):
        write_volume_outputs(tmp_path, "b", blob, default_affine(blob.shape), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.nii.gz", "a_mip.png", "a_surface.stl"]
