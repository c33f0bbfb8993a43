"""`cowgan prepare`: volumes in, validated RAS shards and a manifest out; bad files listed; the input untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from CircleOfWillisGANLib.errors import InputError, OutputError
from CircleOfWillisGANLib.volume_io import default_affine, save_volume
from CircleOfWillisGANLib.preprocess import PrepareOptions
from training.prepare import prepare_dataset
from training.shards import open_shards, read_manifest
from training_fixtures import tube_volume, write_tube_volumes

SHAPE = (16, 32, 32)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _volumes(root: Path) -> np.ndarray:
    manifest = read_manifest(root)
    shards, _ = open_shards(root, manifest)
    return np.concatenate([np.asarray(s, dtype=np.float32) for s in shards])


def test_volumes_at_the_target_shape_come_out_min_max_normalised_and_unchanged(tmp_path):
    write_tube_volumes(tmp_path / "in", 3, SHAPE)
    manifest = prepare_dataset(tmp_path / "in", tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    volumes = _volumes(tmp_path / "ds")
    assert manifest["count"] == 3 and volumes.shape == (3, *SHAPE)
    for i in range(3):
        v = tube_volume(SHAPE, i)
        np.testing.assert_allclose(volumes[i], (v - v.min()) / (v.max() - v.min()), atol=1e-3)
    assert manifest["data"]["orientation"] == "RAS" and manifest["data"]["spacing_mm"] == [0.62, 0.62, 0.62]
    assert [v["source"] for v in manifest["volumes"]] == ["case000.nii.gz", "case001.nii.gz", "case002.nii.gz"]
    assert (tmp_path / "ds" / "preview.png").is_file()


def test_an_lps_nrrd_is_reoriented_to_the_same_volume_as_the_ras_nifti(tmp_path):
    import SimpleITK as sitk

    v = tube_volume(SHAPE, 0)
    (tmp_path / "nifti").mkdir()
    save_volume(tmp_path / "nifti" / "a.nii.gz", v, default_affine(SHAPE))
    # The same voxels stored with identity (LPS) direction: the i and j axes are flipped relative to RAS.
    image = sitk.GetImageFromArray(np.ascontiguousarray(v.transpose(0, 2, 1)[:, ::-1, ::-1]))
    image.SetSpacing((0.62, 0.62, 0.62))
    (tmp_path / "nrrd").mkdir()
    sitk.WriteImage(image, str(tmp_path / "nrrd" / "a.nrrd"))
    prepare_dataset(tmp_path / "nifti", tmp_path / "ds1", PrepareOptions(shape=SHAPE), progress=False)
    prepare_dataset(tmp_path / "nrrd", tmp_path / "ds2", PrepareOptions(shape=SHAPE), progress=False)
    np.testing.assert_array_equal(_volumes(tmp_path / "ds1"), _volumes(tmp_path / "ds2"))


def test_bad_files_are_skipped_with_reasons_and_the_input_folder_is_not_modified(tmp_path):
    import nibabel as nib

    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    (src / "broken.nii.gz").write_bytes(b"not a nifti")
    nib.save(nib.Nifti1Image(np.full((20, 20, 20), 3.0, np.float32), np.eye(4)), str(src / "constant.nii"))
    nib.save(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), str(src / "flat.nii"))
    nan = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    nan[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(src / "nan.nii"))
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32),
                             np.diag([50.0, 50.0, 50.0, 1.0])), str(src / "huge_voxels.nii"))
    apart = nib.Nifti1Image(np.random.default_rng(2).random((20, 20, 20)).astype(np.float32), np.eye(4))
    apart.set_qform(np.eye(4), code=1)
    apart.set_sform(np.array([[1, 0, 0, 20], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), code=2)  # aligned: ITK's qform
    nib.save(apart, str(src / "sform_qform.nii"))
    complex_valued = np.random.default_rng(1).random((20, 20, 20)).astype(np.complex64)
    nib.save(nib.Nifti1Image(complex_valued, np.eye(4)), str(src / "complex.nii"))
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    nib.save(nib.Nifti1Image(np.random.default_rng(3).random((20, 20, 20)).astype(np.float32), sheared),
             str(src / "sheared.nii"))
    (src / "readme.txt").write_text("notes")
    before = _snapshot(src)
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), workers=2, progress=False)
    assert _snapshot(src) == before
    assert manifest["count"] == 2
    reasons = {s["source"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"broken.nii.gz", "constant.nii", "flat.nii", "nan.nii", "huge_voxels.nii", "complex.nii",
                            "sform_qform.nii", "sheared.nii"}
    assert reasons["sheared.nii"].startswith("its voxel axes are not perpendicular (a sheared affine")
    assert reasons["sform_qform.nii"].startswith("its sform and qform place it 20.0 mm apart")
    assert reasons["complex.nii"].startswith("complex-valued; a magnitude image is needed")
    assert reasons["broken.nii.gz"].startswith("unreadable")
    assert reasons["constant.nii"] == "constant (every voxel is 3)"
    assert reasons["flat.nii"] == "not 3D (size (20, 20))"
    assert reasons["nan.nii"] == "contains NaN or infinite values"
    assert reasons["huge_voxels.nii"].startswith("spacing (50.0, 50.0, 50.0) mm")
    assert manifest["ignored"] == [{"source": "readme.txt", "reason": "not a NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr) file"}]


def test_copies_links_and_files_in_hidden_folders_are_not_trained_on_twice(tmp_path):
    import shutil

    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    first = sorted(src.glob("*.nii.gz"))[0]
    shutil.copy(first, src / "copy.nii.gz")
    (src / "link.nii.gz").symlink_to(first)
    (src / ".snapshot").mkdir()
    shutil.copy(sorted(src.glob("case*.nii.gz"))[1], src / ".snapshot" / "old.nii.gz")
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert manifest["count"] == 2 and ".snapshot/old.nii.gz" not in [r["source"] for r in manifest["volumes"]]
    reasons = {s["source"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {name: f"the same file as {first.name} (a copy or a link)" for name in ("copy.nii.gz", "link.nii.gz")}


def _tilted_scan_of_a_vertical_vessel(path: Path, shape, degrees: float) -> Path:
    """A scan whose slab is tilted `degrees` about the left-right axis, of a vessel running straight up (along S)
    through the scanner's origin: the anatomy is upright, only the voxel grid is turned."""
    import nibabel as nib
    from scipy.spatial.transform import Rotation

    affine = default_affine(shape)
    affine[:3, :3] = Rotation.from_euler("x", degrees, degrees=True).as_matrix() @ affine[:3, :3]
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape[::-1]) - 1) / 2.0  # the grid's centre at the origin
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape[::-1]], indexing="ij"), -1)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    tissue = 100.0 + 10.0 * np.random.default_rng(0).random(ijk.shape[:3])
    image = np.where(np.hypot(ras[..., 0], ras[..., 1]) < 2.0, 1000.0, tissue).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return path


def test_a_tilted_scan_is_resampled_upright_with_spacing_and_warned_about_without(tmp_path, caplog):
    import nibabel as nib
    from training.prepare import tilt_degrees

    src = tmp_path / "in"
    src.mkdir()
    _tilted_scan_of_a_vertical_vessel(src / "tilted.nii.gz", SHAPE, 20.0)
    spacing = float(np.linalg.norm(default_affine(SHAPE)[:3, 0]))
    with caplog.at_level("WARNING"):
        manifest = prepare_dataset(src, tmp_path / "upright", PrepareOptions(shape=SHAPE, spacing=spacing), progress=False)
    assert not [r for r in caplog.records if "is tilted" in r.getMessage()]
    record = manifest["volumes"][0]
    affine = np.asarray(record["affine"])
    assert tilt_degrees(affine) < 1e-6
    save_volume(tmp_path / "upright.nii.gz", _volumes(tmp_path / "upright")[0], affine)
    upright = nib.load(str(tmp_path / "upright.nii.gz"))
    data = np.asarray(upright.dataobj)
    bright = np.argwhere(data > 0.5)
    ras = bright @ upright.affine[:3, :3].T + upright.affine[:3, 3]
    assert np.hypot(ras[:, 0], ras[:, 1]).max() < 2.5  # the vessel where it is in the scanner ...
    centres = np.array([bright[bright[:, 2] == k, :2].mean(0) for k in range(SHAPE[0])])  # ... up one voxel axis
    assert np.ptp(centres, axis=0).max() < 0.5

    with caplog.at_level("WARNING"):
        prepare_dataset(src, tmp_path / "kept", PrepareOptions(shape=SHAPE), progress=False)
    warnings = [r.getMessage() for r in caplog.records if "is tilted" in r.getMessage()]
    assert warnings == ["tilted.nii.gz is tilted 20 degrees from the RAS axes and its volume keeps the tilt, unlike the "
                        "dataset's axis-aligned affine: pass --spacing to resample every scan onto the RAS axes, or "
                        "--template to bring every scan to the template's orientation"]


def test_registration_to_a_template_aligns_a_shifted_volume(tmp_path):
    shape = (32, 48, 48)
    template = tube_volume(shape, 0)
    save_volume(tmp_path / "template.nii.gz", template, default_affine(shape))
    moved = np.roll(template, (2, 4, -3), axis=(0, 1, 2))
    (tmp_path / "in").mkdir()
    save_volume(tmp_path / "in" / "moved.nii.gz", moved, default_affine(shape))
    crop = (16, 32, 32)
    plain = prepare_dataset(tmp_path / "in", tmp_path / "plain", PrepareOptions(shape=crop), progress=False)
    registered = prepare_dataset(tmp_path / "in", tmp_path / "reg",
                                 PrepareOptions(shape=crop, template=str(tmp_path / "template.nii.gz")), progress=False)
    target = template[8:24, 8:40, 8:40]
    target = (target - target.min()) / (target.max() - target.min())

    def corr(a):
        return float(np.corrcoef(a.ravel(), target.ravel())[0, 1])

    assert corr(_volumes(tmp_path / "reg")[0]) > 0.9 > corr(_volumes(tmp_path / "plain")[0]) + 0.2
    assert registered["preparation"]["template"]["sha256"]
    assert registered["data"]["affine"] == registered["volumes"][0]["affine"]
    assert plain["preparation"]["template"] is None


def test_registration_with_the_default_seed_gives_the_same_transform_every_run():
    import time

    import SimpleITK as sitk
    from CircleOfWillisGANLib.registration import register_rigid

    shape = (32, 48, 48)
    template = sitk.GetImageFromArray(tube_volume(shape, 0))
    moving = sitk.GetImageFromArray(np.roll(tube_volume(shape, 0), (2, 4, -3), axis=(0, 1, 2)))
    first = register_rigid(template, moving, seed=0)[0].GetParameters()
    time.sleep(1.1)  # ITK's seed 0 is the wall clock in seconds
    np.testing.assert_allclose(register_rigid(template, moving, seed=0)[0].GetParameters(), first, rtol=0, atol=1e-9)


def test_a_pattern_selects_images_and_lists_the_other_volumes_as_ignored(tmp_path):
    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    (src / "case000.nii.gz").rename(src / "case000_image.nii.gz")
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False,
                               pattern="*_image.nii.gz")
    assert [v["source"] for v in manifest["volumes"]] == ["case000_image.nii.gz"]
    assert manifest["ignored"] == [{"source": "case001.nii.gz", "reason": "does not match --pattern '*_image.nii.gz'"}]


def test_label_maps_beside_the_images_are_skipped_as_label_maps(tmp_path):
    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    labels = (tube_volume(SHAPE, 0) > 0.5).astype(np.uint8) * np.uint8(3)
    save_volume(src / "case000_label.nii.gz", labels, default_affine(SHAPE))
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert manifest["count"] == 2
    assert [s["source"] for s in manifest["skipped"]] == ["case000_label.nii.gz"]
    assert manifest["skipped"][0]["reason"].startswith("a label map, not an image (2 whole-number values, 0 to 3)")


def test_a_grey_image_stored_with_few_intensity_levels_is_prepared_not_taken_for_a_label_map(tmp_path):
    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    coarse = np.round(tube_volume(SHAPE, 5) / tube_volume(SHAPE, 5).max() * 40).astype(np.uint8)  # 41 levels
    save_volume(src / "case002.nii.gz", coarse, default_affine(SHAPE, (0.62,) * 3))
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert (manifest["count"], manifest["skipped"]) == (3, [])


def test_a_truncated_volume_is_skipped_with_the_reason_not_read_as_zeros(tmp_path):
    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    whole = (src / "case001.nii.gz").read_bytes()
    (src / "case001.nii.gz").write_bytes(whole[: len(whole) // 2])  # SimpleITK alone would fill the rest with zeros
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert [v["source"] for v in manifest["volumes"]] == ["case000.nii.gz"]
    assert [s["source"] for s in manifest["skipped"]] == ["case001.nii.gz"]
    assert manifest["skipped"][0]["reason"].startswith("truncated or damaged")
    assert manifest["skipped"][0]["reason"].endswith("copy or export the file again")


def test_a_nifti_itk_places_elsewhere_than_nibabel_is_skipped_and_one_with_qform_set_to_sform_is_prepared(tmp_path):
    import nibabel as nib

    src = write_tube_volumes(tmp_path / "in", 1, SHAPE)
    sform_only = nib.Nifti1Image(tube_volume(SHAPE, 1).transpose(1, 2, 0), None)  # pixdim 1 mm, sform 0.62 mm
    sform_only.set_sform(default_affine(SHAPE, (0.62,) * 3), code=2)
    sform_only.set_qform(None, code=0)
    nib.save(sform_only, str(src / "sform_only.nii.gz"))
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert [s["source"] for s in manifest["skipped"]] == ["sform_only.nii.gz"]
    assert manifest["skipped"][0]["reason"].startswith(
        "ITK (prepare, project, 3D Slicer) places it up to 17.6 mm from where nibabel and FSL do (spacing 1, 1, 1 mm "
        "against 0.62, 0.62, 0.62 mm from the sform): rewrite its header so that both agree")
    sform_only.set_qform(sform_only.affine, code=1)  # the fix the message gives
    nib.save(sform_only, str(src / "sform_only.nii.gz"))
    assert prepare_dataset(src, tmp_path / "ds2", PrepareOptions(shape=SHAPE), progress=False)["skipped"] == []


def test_a_nifti_without_orientation_is_prepared_as_before_with_a_warning_that_its_sides_cannot_be_trusted(tmp_path,
                                                                                                          caplog):
    import nibabel as nib

    src = tmp_path / "in"
    src.mkdir()
    no_orientation = nib.Nifti1Image(tube_volume(SHAPE, 1).transpose(1, 2, 0), None)  # sform and qform codes 0
    no_orientation.header.set_zooms((0.62, 0.62, 0.62))
    nib.save(no_orientation, str(src / "no_orientation.nii.gz"))
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert [v["source"] for v in manifest["volumes"]] == ["no_orientation.nii.gz"] and manifest["skipped"] == []
    assert "no_orientation.nii.gz carries no orientation (its sform and qform codes are 0)" in caplog.text
    assert "left/right and front/back cannot be trusted" in caplog.text


@pytest.mark.parametrize("shear_mm", [0.0, 1e-5, 1e-4])
def test_an_oblique_volume_the_project_writes_is_read_where_nibabel_places_it(tmp_path, shear_mm):
    import nibabel as nib
    from scipy.spatial.transform import Rotation

    from CircleOfWillisGANLib.preprocess import ras_affine, read_canonical

    affine = default_affine(SHAPE, (0.62,) * 3)
    affine[:3, :3] = Rotation.from_euler("xyz", [10, -7, 25], degrees=True).as_matrix() @ affine[:3, :3]
    affine[0, 1] += shear_mm  # rounding in a composed affine: within save_volume's qform tolerance
    save_volume(tmp_path / "oblique.nii.gz", tube_volume(SHAPE, 1), affine)
    canonical = nib.as_closest_canonical(nib.load(str(tmp_path / "oblique.nii.gz")))
    np.testing.assert_allclose(ras_affine(read_canonical(tmp_path / "oblique.nii.gz")), canonical.affine, atol=1e-3)


def test_percentile_normalisation_clips_to_zero_and_one(tmp_path):
    write_tube_volumes(tmp_path / "in", 1, SHAPE)
    prepare_dataset(tmp_path / "in", tmp_path / "ds", PrepareOptions(shape=SHAPE, normalisation="percentile",
                                                                    percentiles=(1.0, 99.0)), progress=False)
    v = _volumes(tmp_path / "ds")[0]
    assert v.min() == 0.0 and v.max() == 1.0 and (v == 1.0).mean() >= 0.01


def test_resampling_to_a_spacing_keeps_the_centre_of_the_volume(tmp_path):
    write_tube_volumes(tmp_path / "in", 1, (32, 64, 64), spacing=0.3)
    manifest = prepare_dataset(tmp_path / "in", tmp_path / "ds", PrepareOptions(shape=SHAPE, spacing=0.6), progress=False)
    assert manifest["data"]["spacing_mm"] == [0.6, 0.6, 0.6]
    centre = np.asarray(manifest["volumes"][0]["affine"]) @ [15.5, 15.5, 7.5, 1.0]
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)


def test_a_volume_smaller_than_the_grid_is_kept_with_its_coverage_and_a_warning(tmp_path, caplog):
    write_tube_volumes(tmp_path / "in", 1, SHAPE)
    save_volume(tmp_path / "in" / "small.nii.gz", tube_volume((16, 32, 16), 5) * 500.0, default_affine((16, 32, 16), (0.62,) * 3))
    with caplog.at_level("WARNING"):
        manifest = prepare_dataset(tmp_path / "in", tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert [(v["source"], v["coverage"]) for v in manifest["volumes"]] == [("case000.nii.gz", 1.0), ("small.nii.gz", 0.5)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["small.nii.gz fills only 50% of the 20 x 20 x 10 mm output grid; the rest is padded with its "
                        "background intensity: pass whole scans, or a smaller --shape or --spacing"]


def test_an_output_inside_the_input_or_an_existing_dataset_is_refused(tmp_path):
    src = write_tube_volumes(tmp_path / "in", 1, SHAPE)
    with pytest.raises(OutputError, match="inside --in"):
        prepare_dataset(src, src / "ds", PrepareOptions(shape=SHAPE), progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        prepare_dataset(src, tmp_path / "full", PrepareOptions(shape=SHAPE), progress=False)
    with pytest.raises(InputError, match="no NIfTI or NRRD volumes"):
        prepare_dataset(tmp_path / "full", tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)


def test_the_cli_prepares_a_dataset_and_reports_user_errors_in_one_line(tmp_path, capsys):
    from cowgan.main import main

    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    assert main(["prepare", "--in", str(src), "--out", str(tmp_path / "ds"), "--shape", "16", "32", "32",
                 "--workers", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["count"] == 2
    assert main(["prepare", "--in", str(tmp_path / "missing"), "--out", str(tmp_path / "ds2"), "--no-progress"]) == 2
    assert "input folder" in capsys.readouterr().err
    one_file = next(src.iterdir())
    assert main(["prepare", "--in", str(one_file), "--out", str(tmp_path / "ds2"), "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_an_existing_empty_output_folder_is_filled_in_place_and_left_empty_on_failure(tmp_path):
    src = write_tube_volumes(tmp_path / "in", 1, SHAPE)
    out = tmp_path / "mount_point"
    out.mkdir()
    inode = out.stat().st_ino
    prepare_dataset(src, out, PrepareOptions(shape=SHAPE), progress=False)
    assert out.stat().st_ino == inode and (out / "manifest.json").is_file()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "flat.nii.gz").write_bytes(b"not a volume")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="none of the 1 volumes"):
        prepare_dataset(bad, empty, PrepareOptions(shape=SHAPE), progress=False)
    assert list(empty.iterdir()) == []


def test_training_on_raw_volumes_or_a_newer_or_foreign_manifest_says_what_to_do(tmp_path):
    from training.shards import read_manifest

    write_tube_volumes(tmp_path / "scans", 1, SHAPE)
    with pytest.raises(InputError, match=r"no manifest.json\): run `cowgan prepare --in .*scans --out scans-prepared`"):
        read_manifest(tmp_path / "scans")
    write_tube_volumes(tmp_path / "in", 2, SHAPE)
    prepare_dataset(tmp_path / "in", tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    for change, message in (({"format_version": 9}, "written by a newer CircleOfWillisGAN"),
                            ({"format_version": "1"}, "is not a cowgan-dataset manifest"),
                            ({"format": "other"}, "is not a cowgan-dataset manifest"),
                            ({"shards": None}, "lists no shards"),
                            ({"shards": [{"file": "shards/00000.npy"}]}, "a shard entry without a file name and a positive"),
                            ({"shape_dhw": [16, 32]}, "has no valid shape_dhw"),
                            ({"shards": [dict(manifest["shards"][0], sha256=7)]}, "a shard entry whose sha256 is not"),
                            ({"data": []}, "has a data entry that is not an object")):
        (tmp_path / "ds" / "manifest.json").write_text(json.dumps(dict(manifest, **change)))
        with pytest.raises(InputError, match=message):
            read_manifest(tmp_path / "ds")
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps({"format": "cowgan-dataset", "format_version": 1}))
    with pytest.raises(InputError, match="has no valid shape_dhw .*: the manifest was edited or damaged; prepare"):
        read_manifest(tmp_path / "ds")


def test_a_shard_replaced_by_another_of_the_same_shape_is_refused_when_the_dataset_is_opened(tmp_path):
    write_tube_volumes(tmp_path / "in", 3, SHAPE)
    prepare_dataset(tmp_path / "in", tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert len(_volumes(tmp_path / "ds")) == 3
    shard = tmp_path / "ds" / "shards" / "00000.npy"
    np.save(shard, np.asarray(np.load(shard))[::-1])
    with pytest.raises(InputError, match=r"shard .*00000.npy is not the one the dataset was prepared with .*: prepare"):
        _volumes(tmp_path / "ds")


def test_a_template_that_is_a_folder_or_a_label_map_is_named_with_a_template_fix(tmp_path):
    from CircleOfWillisGANLib.preprocess import scan_on_model_grid

    write_tube_volumes(tmp_path / "in", 1, SHAPE)
    labels = save_volume(tmp_path / "labels.nii.gz", (tube_volume(SHAPE, 0) > 0.5).astype(np.uint8) * np.uint8(4),
                         default_affine(SHAPE))
    for template, message in ((tmp_path / "in", "is a folder, not a file"),
                              (labels, "a label map, not an image .*: pass a grey 3D volume with --template")):
        with pytest.raises(InputError, match=f"template .* {message}"):
            prepare_dataset(tmp_path / "in", tmp_path / "ds", PrepareOptions(shape=SHAPE, template=str(template)),
                            progress=False)
    with pytest.raises(InputError, match="template .*in is a folder, not a file"):
        scan_on_model_grid(tmp_path / "in" / "case000.nii.gz", SHAPE, (0.62,) * 3, template=tmp_path / "in")


def test_preparation_options_are_checked_where_they_are_made(tmp_path, capsys):
    from cowgan.main import main

    for kwargs, message in (({"normalisation": "zscore"}, "normalisation 'zscore' is unknown"),
                            ({"percentiles": (99.0, 1.0)}, "0 <= LOW < HIGH <= 100"),
                            ({"spacing": 0.0}, "three positive millimetres"), ({"shape": (16, 32)}, "three whole numbers")):
        with pytest.raises(InputError, match=message):
            PrepareOptions(**kwargs)
    write_tube_volumes(tmp_path / "in", 1, SHAPE)
    assert main(["prepare", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "ds"), "--percentiles", "1", "99"]) == 2
    assert "--percentiles only applies with --normalise percentile" in capsys.readouterr().err


def test_broken_links_and_linked_folders_are_listed_not_dropped_silently(tmp_path):
    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    (src / "gone.nii.gz").symlink_to(tmp_path / "missing.nii.gz")
    write_tube_volumes(tmp_path / "elsewhere", 1, SHAPE)
    (src / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), progress=False)
    assert manifest["count"] == 2
    assert {e["source"]: e["reason"] for e in manifest["ignored"]} == {
        "gone.nii.gz": "a broken link: its target does not exist",
        "more": "a linked folder, which is not searched: pass its target with --in"}


def test_the_provenance_of_a_detached_nrrd_changes_with_its_voxels_not_only_its_header(tmp_path):
    import nrrd

    from CircleOfWillisGANLib.preprocess import volume_sha256

    header = tmp_path / "scan.nhdr"
    nrrd.write(str(header), tube_volume(SHAPE, 0).astype(np.float32), detached_header=True)
    text, before = header.read_bytes(), volume_sha256(header)
    nrrd.write(str(header), tube_volume(SHAPE, 1).astype(np.float32), detached_header=True)
    header.write_bytes(text)  # the same header (pynrrd stamps the time in it), other voxels in its data file
    assert volume_sha256(header) != before


@pytest.mark.parametrize("shape", [("16", "48", "48"), ("4", "32", "32")])
def test_a_grid_the_generator_cannot_make_is_refused_with_one_rule(tmp_path, capsys, shape):
    from cowgan.main import main

    src = write_tube_volumes(tmp_path / "in", 1, SHAPE)
    assert main(["prepare", "--in", str(src), "--out", str(tmp_path / "ds"), "--shape", *shape]) == 2
    assert f"--shape {' '.join(shape)}: each size must be a power of two of at least 8" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_a_nifti_without_a_usable_affine_or_with_a_name_itk_cannot_open_is_skipped_with_the_fix(tmp_path, capfd):
    import os

    import nibabel as nib

    src = write_tube_volumes(tmp_path / "in", 2, SHAPE)
    for name, row in (("zero.nii", [0.0] * 4), ("nan.nii", [np.nan] * 4)):
        image = nib.Nifti1Image(np.random.default_rng(4).random((20, 20, 20)).astype(np.float32), None)
        image.header["sform_code"] = 2
        for field in ("srow_x", "srow_y", "srow_z"):
            image.header[field] = row
        nib.save(image, str(src / name))
    nib.save(nib.Nifti1Image(np.random.default_rng(5).random((20, 20, 20)).astype(np.float32), np.eye(4)),
             str(src / "renamed.nii"))
    bad_name = os.fsdecode(b"bad\xff_image.nii")
    os.rename(src / "renamed.nii", src / bad_name)
    manifest = prepare_dataset(src, tmp_path / "ds", PrepareOptions(shape=SHAPE), workers=2, progress=False)
    assert manifest["count"] == 2
    reasons = {s["source"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"zero.nii", "nan.nii", r"bad\xff_image.nii"}  # undecodable bytes shown as escapes
    for name in ("zero.nii", "nan.nii"):
        assert reasons[name].startswith("its affine is all zero, not finite or singular") and "fix its header" in reasons[name]
    assert reasons[r"bad\xff_image.nii"] == (r"its name 'bad\xff_image.nii' is not valid UTF-8 text, which ITK cannot "
                                             "open: rename it with a name of plain letters and digits")
    assert "orthonormal" not in capfd.readouterr().err


def test_prepare_names_a_file_whose_name_is_not_utf8_on_a_console_that_takes_only_utf8(tmp_path):
    import os
    import subprocess
    import sys

    src = write_tube_volumes(tmp_path / "in", 1, SHAPE)
    (src / os.fsdecode(b"bad\xff_image.nii")).write_bytes(b"not a volume")
    done = subprocess.run([sys.executable, "-m", "cowgan", "prepare", "--in", str(src), "--out", str(tmp_path / "ds"),
                           "--no-progress"], capture_output=True, env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]  # a strict console refused the raw name
    assert r"skipped bad\xff_image.nii: its name 'bad\xff_image.nii' is not valid UTF-8" in done.stdout.decode()
    assert b"Logging error" not in done.stderr


@pytest.mark.parametrize("spacing", [["1.24"], ["1.2", "1.2", "1.5"]])
def test_phantoms_written_as_a_dataset_are_what_prepare_makes_of_them_without_simpleitk(tmp_path, spacing,
                                                                                         monkeypatch):
    import sys

    from cowgan.main import main

    prepared = tmp_path / "prepared"
    assert main(["phantoms", "--n", "5", "--out", str(tmp_path / "ph"), "--seed", "3", "--shape", "16", "64", "64",
                 "--spacing", *spacing]) == 0
    prepare_dataset(tmp_path / "ph", prepared, PrepareOptions(shape=(16, 64, 64), spacing=1.24 if len(spacing) == 1
                                                              else None), progress=False, pattern="*_image.nii.gz")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # a GPU machine's image: no SimpleITK to import
    direct = tmp_path / "direct"
    assert main(["phantoms", "--n", "5", "--out", str(tmp_path / "ph2"), "--seed", "3", "--shape", "16", "64", "64",
                 "--spacing", *spacing, "--dataset", str(direct)]) == 0
    made, expected = read_manifest(direct), read_manifest(prepared)
    for key in ("shape_dhw", "count", "dtype", "data", "preparation"):
        assert made[key] == expected[key], key
    assert [(v["source"], v["sha256"], v["input_size"]) for v in made["volumes"]] == \
        [(v["source"], v["sha256"], v["input_size"]) for v in expected["volumes"]]
    np.testing.assert_allclose(_volumes(direct), _volumes(prepared), atol=2e-3)  # float16 steps, interpolation noise
    assert sum(len(shard) for shard in open_shards(direct, made)[0]) == 5  # what `cowgan train --data` opens


def test_a_dataset_folder_inside_the_phantom_set_or_not_empty_is_refused_before_any_phantom_is_made(tmp_path,
                                                                                                   capsys):
    from cowgan.main import main

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("kept")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "file").write_text("a file, not a folder")
    for out, dataset, shape, message in (
            ("ph", "ph/data", "16 64 64", "is inside --out"),
            ("data/ph", "data", "16 64 64", "is inside --dataset"),
            ("ph", "full", "16 64 64", "is not empty"),
            ("ph", "locked/file/data", "16 64 64", "cannot be created in"),  # its parent is a file: mkdir would fail
            ("ph", "data", "12 32 40", "each size must be a power of two")):  # `cowgan train` could not use it
        assert main(["phantoms", "--n", "3", "--out", str(tmp_path / out), "--shape", *shape.split(),
                     "--spacing", "1.24", "--dataset", str(tmp_path / dataset)]) == 2
        assert message in capsys.readouterr().err, message
        assert not (tmp_path / "ph").exists() or not any((tmp_path / "ph").iterdir())
        assert not (tmp_path / "data").exists()
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["notes.txt"]
    assert (tmp_path / "full" / "notes.txt").read_text() == "kept"
