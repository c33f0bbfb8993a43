"""Fetal PCA from label maps: a thin P1 is measured, so label maps and phantom records call the same variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from CircleOfWillisGANLib import topcow
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.fetal_pca import PosteriorCalibre, fetal_pca, posterior_calibre, resolves_hypoplastic_p1
from CircleOfWillisGANLib.phantoms import PhantomConfig, generate_phantom
from CircleOfWillisGANLib.phantoms.variants import VariantPrevalence

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "topcow-roi-mr"
FETAL_WITH_THIN_P1 = VariantPrevalence(fetal_pca_left=0.5, fetal_pca_right=0.5, fetal_pca_bilateral=0.25,
                                       p1_absent_given_fetal=0.0, pcom_absent_left=0.2, pcom_absent_right=0.2,
                                       pcom_absent_both=0.1)


def phantom_spacing_dhw(config: PhantomConfig):
    x, y, z = config.spacing_mm
    return z, x, y


@pytest.mark.parametrize("shape, spacing, cases", [
    ((32, 128, 128), (0.62, 0.62, 0.62), range(8)),
    ((40, 256, 256), (0.3, 0.3, 0.6), range(5)),  # TopCoW's MRA grid: thin in-plane voxels, 0.6 mm slices
])
def test_label_maps_call_the_fetal_pcas_that_phantoms_drew_with_a_thin_p1(shape, spacing, cases):
    config = PhantomConfig(shape=shape, spacing_mm=spacing, prevalence=FETAL_WITH_THIN_P1)
    thin = 0
    for index in cases:
        case = generate_phantom((21, index), config)
        drawn = case.variants.as_dict()
        called = fetal_pca(case.labels, phantom_spacing_dhw(config))
        assert called == {side: int(drawn[f"fetal_pca_{side}"]) for side in ("left", "right")}, index
        thin += sum(drawn[f"fetal_pca_{side}"] and not drawn[f"p1_absent_{side}"] for side in ("left", "right"))
    assert thin >= 3  # the P1s are labelled, so the variant vectors alone would call these not fetal


def test_a_thin_p1_is_measured_under_1_mm_wide_and_a_normal_one_wider_than_its_pcom():
    config = PhantomConfig(prevalence=FETAL_WITH_THIN_P1)
    measured = {"fetal": [], "normal": []}
    for index in range(6):
        case = generate_phantom((22, index), config)
        calibre = posterior_calibre(case.labels, phantom_spacing_dhw(config))
        for side in ("left", "right"):
            if case.variants.as_dict()[f"pcom_absent_{side}"]:
                assert calibre[side].pcom_mm is None
                continue
            measured["fetal" if case.variants.as_dict()[f"fetal_pca_{side}"] else "normal"].append(calibre[side])
    assert measured["fetal"] and measured["normal"]
    assert all(c.p1_mm < 0.5 < c.pcom_mm for c in measured["fetal"])
    assert all(c.p1_mm > 0.7 and c.p1_mm >= c.pcom_mm for c in measured["normal"])


def test_the_calibre_does_not_depend_on_the_label_maps_storage_order():
    config = PhantomConfig(prevalence=FETAL_WITH_THIN_P1)
    case = generate_phantom((22, 0), config)
    spacing = (0.62, 0.5, 0.4)
    stored = np.transpose(case.labels, (2, 0, 1))[::-1]  # another axis order, one axis flipped
    turned = posterior_calibre(stored, (spacing[2], spacing[0], spacing[1]))
    calibre = posterior_calibre(case.labels, spacing)
    for side in ("left", "right"):  # equal-cost centrelines may differ by a voxel step: radii within 2%
        for name in ("p1_mm", "pcom_mm"):
            expected = getattr(calibre[side], name)
            assert getattr(turned[side], name) == (None if expected is None else pytest.approx(expected, rel=0.02))


@pytest.mark.skipif(not REAL.is_dir(), reason="real TopCoW label maps not available")
def test_real_case_003_has_a_right_fetal_pca_with_a_thin_p1_and_case_023_one_without_a_p1():
    labels, affine = topcow.load_label_map(REAL / "topcow_mr_roi_003.nii.gz")
    spacing = topcow.spacing_dhw(affine)
    assert topcow.variant_vectors(labels).posterior == [1, 1, 1, 1]  # both P1s labelled
    calibre = posterior_calibre(labels, spacing)
    assert calibre["right"].p1_mm < 0.6 * calibre["right"].pcom_mm
    assert calibre["left"].p1_mm > 0.7 * calibre["left"].pcom_mm
    assert fetal_pca(labels, spacing) == {"left": 0, "right": 1}
    labels, affine = topcow.load_label_map(REAL / "topcow_mr_roi_023.nii.gz")
    assert fetal_pca(labels, topcow.spacing_dhw(affine)) == {"left": 0, "right": 1}


def test_voxels_coarser_than_two_thirds_of_a_millimetre_cannot_show_a_hypoplastic_p1():
    assert resolves_hypoplastic_p1((0.62, 0.62, 0.62)) and resolves_hypoplastic_p1((0.6, 0.3, 0.3))
    assert not resolves_hypoplastic_p1((1.24, 1.24, 1.24)) and not resolves_hypoplastic_p1((0.7, 0.3, 0.3))


@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.5, 0.0, 0.5), (0.5, float("nan"), 0.5), "0.5", None])
def test_a_spacing_that_is_not_three_positive_sizes_is_refused(spacing):
    with pytest.raises(InputError, match="voxel spacing must be three"):
        resolves_hypoplastic_p1(spacing)
    no_pcoms = generate_phantom((22, 1), PhantomConfig(force=("pcom_absent_both",))).labels  # nothing to measure
    with pytest.raises(InputError, match="voxel spacing must be three"):
        fetal_pca(no_pcoms, spacing)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_topcow_style_pairs_at_their_own_resolution_give_the_targets_their_phantoms_recorded(tmp_path, suffix):
    import json

    import SimpleITK as sitk

    from CircleOfWillisGANLib.phantoms.writer import write_phantom_set
    from CircleOfWillisGANLib.variant_classifier import load_labelled_folder, targets_from_phantom

    write_phantom_set(tmp_path, 3, seed=23, config=PhantomConfig(spacing_mm=(0.62, 0.5, 0.62),
                                                                 prevalence=FETAL_WITH_THIN_P1))
    recorded = []
    for record in sorted(tmp_path.glob("phantom_*.json")):
        recorded.append(targets_from_phantom(json.loads(record.read_text())["variants"]))
        record.unlink()
        label = tmp_path / record.name.replace(".json", "_label.nii.gz")
        if suffix == ".nrrd":
            sitk.WriteImage(sitk.ReadImage(str(label)), str(label.with_name(label.name.replace(".nii.gz", ".nrrd"))))
            label.unlink()
    cases = load_labelled_folder(tmp_path, (8, 32, 32), (2.5,) * 3)
    assert cases.sources == ["labels"] * 3 and cases.targets == recorded
    assert sum(t["fetal_pca_left"] + t["fetal_pca_right"] for t in recorded) >= 2


@pytest.mark.parametrize("p1_mm, pcom_mm, hypoplastic", [
    (0.45, 0.6, True),  # under 1 mm wide, though not much narrower than its (thin) Pcom
    (0.6, 1.0, True),  # over 1 mm wide, but under 70% of its Pcom
    (0.6, 0.8, False),
    (0.45, None, True),
    (None, 1.2, False),  # no P1 to measure: the variant vectors decide
])
def test_a_p1_is_hypoplastic_under_1_mm_wide_or_under_70_percent_of_its_pcom(p1_mm, pcom_mm, hypoplastic):
    assert PosteriorCalibre(p1_mm, pcom_mm).hypoplastic_p1 is hypoplastic


def _two_icas(shape):
    """A small label map holding a right and a left ICA block, stored in `shape`."""
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 1:3, 1:3], labels[4:6, 1:3, 1:3] = topcow.R_ICA, topcow.L_ICA
    return labels


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_a_label_files_voxel_sizes_follow_the_axes_of_the_labels_read(tmp_path, suffix):
    import SimpleITK as sitk

    from CircleOfWillisGANLib.variant_classifier import _label_map

    path = tmp_path / f"case_label{suffix}"
    image = sitk.GetImageFromArray(_two_icas((8, 10, 12)))  # (k, j, i)
    image.SetSpacing((0.3, 0.5, 0.7))  # (i, j, k)
    sitk.WriteImage(image, str(path))
    read = _label_map(path)
    np.testing.assert_allclose(sorted(zip(read.labels.shape, read.spacing)), [(8, 0.7), (10, 0.5), (12, 0.3)],
                               rtol=1e-6)


def test_a_label_file_without_a_voxel_size_is_named(tmp_path):
    import nibabel as nib

    from CircleOfWillisGANLib.variant_classifier import _label_map

    path = tmp_path / "case_label.nii"
    stored = nib.Nifti1Image(_two_icas((8, 10, 12)), None)
    stored.set_sform(None, code=0)
    stored.set_qform(None, code=0)
    nib.save(stored, str(path))
    data = bytearray(path.read_bytes())
    data[88:92] = np.float32(np.nan).tobytes()  # pixdim[3], the only placement a header without forms has
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"label map {path}: the voxel spacing must be three positive millimetres "
                                         r".*, got \[1.0, 1.0, nan\]: fix its header"):
        _label_map(path)


def _tube_distance(points: np.ndarray, start, end) -> np.ndarray:
    start, end = np.asarray(start, float), np.asarray(end, float)
    t = np.clip((points - start) @ (end - start) / ((end - start) @ (end - start)), 0.0, 1.0)
    return np.linalg.norm(points - (start + t[..., None] * (end - start)), axis=-1)


def _posterior_circle(spacing, p1_width_mm: float, pcom_width_mm: float, slice_offset_mm: float) -> np.ndarray:
    """Label map (axes z, y, x in mm) of a basilar tip, both P1s, P2s, Pcoms and ICAs, exact to the voxel centres."""
    axes = [np.arange(lo, hi, step) for (lo, hi), step in zip(((-10, 6), (-11, 13), (-13, 13)), spacing)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    points = np.stack([x, y, z + slice_offset_mm], axis=-1)
    labels = np.zeros(z.shape, np.uint8)
    for sign, pca, pcom, ica in ((-1, topcow.R_PCA, topcow.R_PCOM, topcow.R_ICA),
                                 (1, topcow.L_PCA, topcow.L_PCOM, topcow.L_ICA)):
        for label, start, end, radius in ((ica, (9 * sign, 12, -9), (9 * sign, 12, 5), 2.0),
                                          (pca, (7 * sign, 0, 0), (12 * sign, -10, 0), 1.0),
                                          (pca, (0, 0, 0), (7 * sign, 0, 0), p1_width_mm / 2),
                                          (pcom, (7 * sign, 0, 0), (9 * sign, 12, 0), pcom_width_mm / 2)):
            labels[(_tube_distance(points, start, end) <= radius) & (labels == 0)] = label
    labels[(_tube_distance(points, (0, 0, -10), (0, 0, 0)) <= 1.5) & (labels == 0)] = topcow.BA
    return labels


@pytest.mark.parametrize("slice_offset_mm", [0.0, 0.2, 0.4])
def test_on_thick_slices_a_p1_is_called_by_its_width_not_by_where_it_lies_between_them(slice_offset_mm):
    spacing = (0.6, 0.297, 0.297)  # TopCoW's MRA grid: 0.6 mm slices, the P1 runs along them
    for p1_width, fetal in ((0.8, 1), (1.6, 0)):
        labels = _posterior_circle(spacing, p1_width, 1.3, slice_offset_mm)
        calibre = posterior_calibre(labels, spacing)
        for side in ("left", "right"):
            assert calibre[side].p1_mm == pytest.approx(p1_width / 2, abs=0.15), (p1_width, side)
            assert calibre[side].pcom_mm == pytest.approx(0.65, abs=0.15), side
        assert fetal_pca(labels, spacing) == {"left": fetal, "right": fetal}, p1_width
