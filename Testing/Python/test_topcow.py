"""TopCoW label logic: variant vectors and measurements, on synthetic label maps and the real TopCoW maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from CircleOfWillisGANLib import topcow
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.volume_io import default_affine

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "topcow-roi-mr"
REAL_FILES = sorted(REAL.glob("topcow_mr_roi_*.nii.gz")) if REAL.is_dir() else []


def _blocks(*placements):
    """A small label map with rectangular blocks: each placement is (label, d0, d1, h0, h1, w0, w1)."""
    lab = np.zeros((10, 20, 20), np.uint8)
    for label, d0, d1, h0, h1, w0, w1 in placements:
        lab[d0:d1, h0:h1, w0:w1] = label
    return lab


def test_a1_is_present_when_the_aca_touches_the_ica_diagonally():
    lab = _blocks((topcow.R_ICA, 2, 4, 2, 4, 2, 4), (topcow.R_ACA, 4, 6, 4, 6, 4, 6))
    assert topcow.variant_vectors(lab).anterior[3] == 1


def test_a1_is_absent_when_one_voxel_separates_aca_and_ica():
    lab = _blocks((topcow.L_ICA, 2, 4, 2, 4, 2, 4), (topcow.L_ACA, 5, 7, 2, 4, 2, 4))
    assert topcow.variant_vectors(lab).anterior[0] == 0


def test_p1_follows_pca_basilar_contact_and_pcom_follows_label_existence():
    lab = _blocks((topcow.BA, 0, 5, 8, 12, 8, 12), (topcow.R_PCA, 4, 5, 12, 16, 8, 10),
                  (topcow.L_PCA, 4, 5, 2, 6, 8, 10), (topcow.L_PCOM, 4, 5, 0, 2, 14, 18))
    assert topcow.variant_vectors(lab).posterior == [1, 0, 1, 0]


def test_label_13_counts_as_third_a2():
    lab = _blocks((13, 1, 3, 1, 3, 1, 3), (topcow.ACOM, 5, 6, 5, 6, 5, 6))
    assert topcow.variant_vectors(lab).anterior[1:3] == [1, 1]
    assert topcow.THIRD_A2 in np.unique(topcow.normalise_labels(lab))


def test_a_complete_circle_is_exactly_topcows_complete_vectors_so_a_third_a2_makes_it_a_variant():
    assert topcow.VariantVectors([1, 1, 0, 1], [1, 1, 1, 1]).complete
    assert not topcow.VariantVectors([1, 1, 1, 1], [1, 1, 1, 1]).complete
    assert not topcow.VariantVectors([1, 1, 0, 1], [0, 1, 1, 1]).complete


def test_unknown_label_ids_are_rejected_with_a_fix():
    with pytest.raises(InputError, match="not TopCoW labels"):
        topcow.variant_vectors(_blocks((42, 1, 2, 1, 2, 1, 2)))


def test_an_intensity_image_passed_as_labels_is_named_as_one(tmp_path):
    from CircleOfWillisGANLib.volume_io import save_volume

    image = np.random.default_rng(0).random((8, 16, 16)).astype(np.float32)
    save_volume(tmp_path / "scan.nii.gz", image, default_affine(image.shape))
    with pytest.raises(InputError, match=r"label map \S*scan\.nii\.gz is a grey image, not a label map"):
        topcow.load_label_map(tmp_path / "scan.nii.gz")


@pytest.mark.parametrize("radius_vox", [1.5, 2.5, 4.0, 6.0])
def test_radius_of_a_straight_cylinder_is_its_equal_area_radius_within_a_quarter_voxel(radius_vox):
    d, h, w = np.mgrid[0:16, 0:40, 0:40]
    disc = ((h - 20) ** 2 + (w - 20) ** 2) <= radius_vox ** 2
    lab = disc.astype(np.uint8) * topcow.BA
    equal_area_mm = 0.5 * np.sqrt(disc[0].sum() / np.pi)
    measured = topcow.radius_per_class(lab, default_affine(lab.shape, (0.5, 0.5, 0.5)))["BA"]
    assert abs(measured - equal_area_mm) < 0.125


@pytest.mark.skipif(not REAL_FILES, reason="real TopCoW label maps not available")
def test_real_topcow_maps_have_the_published_geometry():
    for path in REAL_FILES:
        lab, affine = topcow.load_label_map(path)
        m = topcow.measure(lab, affine)
        assert 27.0 <= m.ica_ica_mm <= 34.0
        assert 14.0 <= m.acom_to_basilar_tip_mm <= 23.0
        assert 0.6 <= m.radius_mm["BA"] <= 1.8


@pytest.mark.skipif(not REAL_FILES, reason="real TopCoW label maps not available")
def test_real_case_023_is_a_right_fetal_pca_without_a_left_a1():
    path = REAL / "topcow_mr_roi_023.nii.gz"
    lab, _ = topcow.load_label_map(path)
    assert topcow.variant_vectors(lab).as_dict() == {"anterior": [0, 1, 0, 1], "posterior": [0, 1, 0, 1]}


def test_topcow_imports_nothing_from_the_evaluation_that_reads_its_label_maps():
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", "import sys, CircleOfWillisGANLib.topcow; "
                             "print(sorted(m for m in sys.modules if m.startswith('CircleOfWillisGANLib.')))"],
                            capture_output=True, text=True, check=True).stdout
    assert "evaluation" not in loaded

