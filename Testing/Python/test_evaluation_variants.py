"""Variant vectors of labelled sets: label maps found beside images and TopCoW frequencies."""

from __future__ import annotations

import re

import numpy as np
import pytest

from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.evaluation.variants import find_label_maps, pattern_distance, variant_frequencies, variant_table
from CircleOfWillisGANLib.volume_io import default_affine, save_volume


def _labels(with_acom: bool) -> np.ndarray:
    lab = np.zeros((8, 16, 16), np.uint8)
    lab[4, 2:5, 2] = 6    # L-ICA
    lab[4, 5:8, 2] = 12   # L-ACA touching it: L-A1 present
    lab[4, 2:5, 12] = 4   # R-ICA
    lab[4, 5:8, 12] = 11  # R-ACA touching it: R-A1 present
    if with_acom:
        lab[4, 8, 6:9] = 10
    return lab


def test_phantom_label_maps_are_found_beside_their_images_and_counted(tmp_path):
    for i, acom in enumerate((True, True, False, True)):
        save_volume(tmp_path / f"phantom_{i:05d}_image.nii.gz", np.zeros((8, 16, 16), np.float32), default_affine((8, 16, 16)))
        save_volume(tmp_path / f"phantom_{i:05d}_label.nii.gz", _labels(acom), default_affine((8, 16, 16)), dtype=np.uint8)
    names = [f"phantom_{i:05d}_image.nii.gz" for i in range(4)]
    found = find_label_maps(names, tmp_path)
    assert sorted(found) == names
    freq = variant_frequencies(variant_table(found))
    assert freq["n"] == 4 and freq["segment_present"]["Acom"] == 0.75 and freq["segment_present"]["L-A1"] == 1.0
    assert freq["patterns"] == {"1101/0000": 0.75, "1001/0000": 0.25}


def test_nnunet_style_label_folders_match_images_without_the_channel_suffix(tmp_path):
    (tmp_path / "labels").mkdir()
    save_volume(tmp_path / "labels" / "topcow_mr_001.nii.gz", _labels(True), default_affine((8, 16, 16)), dtype=np.uint8)
    found = find_label_maps(["topcow_mr_001_0000.nii.gz"], tmp_path, tmp_path / "labels")
    assert found["topcow_mr_001_0000.nii.gz"].name == "topcow_mr_001.nii.gz"


def test_a_label_folder_holding_the_images_too_gives_each_image_its_label_map_not_itself(tmp_path):
    for i in range(2):  # as `cowgan phantoms` writes them: --real-labels can name the folder of the images
        save_volume(tmp_path / f"phantom_{i:05d}_image.nii.gz", np.zeros((8, 16, 16), np.float32), default_affine((8, 16, 16)))
        save_volume(tmp_path / f"phantom_{i:05d}_label.nii.gz", _labels(True), default_affine((8, 16, 16)), dtype=np.uint8)
    names = [f"phantom_{i:05d}_image.nii.gz" for i in range(2)]
    found = find_label_maps(names, tmp_path / "elsewhere", tmp_path)
    assert {name: path.name for name, path in found.items()} == {
        name: name.replace("_image", "_label") for name in names}


def test_pattern_distance_is_zero_for_equal_and_one_for_disjoint_distributions():
    assert pattern_distance({"patterns": {"a": 0.5, "b": 0.5}}, {"patterns": {"b": 0.5, "a": 0.5}}) == 0.0
    assert pattern_distance({"patterns": {"a": 1.0}}, {"patterns": {"b": 1.0}}) == 1.0


@pytest.mark.parametrize("made, message", [
    (lambda lab: np.random.default_rng(0).random(lab.shape).astype(np.float32),
     "is a grey image, not a label map .*: pass the TopCoW label map, not the image"),
    (lambda lab: (lab > 0).astype(np.uint8),
     "holds only ids 0 and 1, so it is a binary vessel mask, not a TopCoW multi-class label map"),
    (lambda lab: np.where(lab > 0, 255, 0).astype(np.uint8),
     "holds only ids 0 and 255, so it is a binary vessel mask, not a TopCoW multi-class label map"),
    (lambda lab: np.zeros_like(lab, dtype=np.uint8), r"holds no labels \(every voxel is 0\)"),
    (lambda lab: np.where(np.isin(lab, (4, 6)), 0, lab).astype(np.uint8),
     r"holds no ICA \(TopCoW ids 4 and 6; .*not a TopCoW multi-class label map"),
])
def test_a_label_file_that_is_not_a_topcow_label_map_is_refused_naming_it_not_counted_as_absent_segments(tmp_path, made,
                                                                                                         message):
    path = tmp_path / "case_label.nii.gz"
    volume = made(_labels(True))
    save_volume(path, volume, default_affine(volume.shape), dtype=volume.dtype.type)
    with pytest.raises(InputError, match=f"label map {re.escape(str(path))} {message}"):
        variant_table({"case": path})
