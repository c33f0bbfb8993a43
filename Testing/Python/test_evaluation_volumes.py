"""Specifications of the per-volume measurements: MS-SSIM, morphology, memorisation, MedicalNet, 2D FID detection."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from CircleOfWillisGANLib.errors import CheckpointError, InputError
from CircleOfWillisGANLib.evaluation.fid2d import INCEPTION_FILENAME, fid2d_status, slice_images
from CircleOfWillisGANLib.evaluation.medicalnet import (FEATURE_DIM, ResNet10Encoder, load_medicalnet,
                                                        medicalnet_features, medicalnet_input)
from CircleOfWillisGANLib.evaluation.memorisation import MatchAccumulator, MemorisationConfig, flag_near_copies, query_matrix
from CircleOfWillisGANLib.evaluation.morphology import FEATURE_NAMES, morphology_features
from CircleOfWillisGANLib.evaluation.ms_ssim import MSSSIMConfig, ms_ssim, pairwise_ms_ssim
from evaluation_fixtures import noise_volume, tube_volume

CUBE = (28, 28, 28)


def test_ms_ssim_of_a_volume_with_itself_is_one():
    v = tube_volume(0)
    assert ms_ssim(v, v) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_of_two_constant_volumes_is_their_luminance_term_by_hand():
    a, b = np.full(CUBE, 0.2, np.float32), np.full(CUBE, 0.6, np.float32)
    c1 = 0.01 ** 2
    luminance = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)  # structure terms are 1 for constant volumes
    weight = MSSSIMConfig().weights()[-1]
    assert ms_ssim(a, b) == pytest.approx(luminance ** weight, rel=1e-4)


def test_ms_ssim_of_independent_noise_is_near_zero_and_symmetric():
    a, b = noise_volume(1), noise_volume(2)
    assert ms_ssim(a, b) < 0.2
    assert ms_ssim(a, b) == pytest.approx(ms_ssim(b, a), rel=1e-6)


def test_ms_ssim_weights_are_the_first_three_scales_renormalised():
    w = MSSSIMConfig().weights()
    assert len(w) == 3 and sum(w) == pytest.approx(1.0)
    assert w[0] == pytest.approx(0.0448 / (0.0448 + 0.2856 + 0.3001))


def test_ms_ssim_refuses_volumes_too_small_for_three_scales():
    with pytest.raises(InputError, match="at least 28 voxels"):
        ms_ssim(np.zeros((16, 32, 32), np.float32), np.zeros((16, 32, 32), np.float32))


def test_ms_ssim_uses_as_many_scales_as_thin_volumes_hold():
    assert MSSSIMConfig().fitted_to((32, 128, 128)).scales == 3
    assert MSSSIMConfig().fitted_to((16, 64, 64)).scales == 2  # the demo model's grid
    assert MSSSIMConfig().fitted_to((8, 64, 64)).scales == 1
    thin = np.random.default_rng(0).random((16, 64, 64)).astype(np.float32)
    assert ms_ssim(thin, thin, MSSSIMConfig().fitted_to(thin.shape)) == pytest.approx(1.0)


def test_pairwise_ms_ssim_is_high_for_copies_and_lists_every_pair():
    v, w = tube_volume(0), tube_volume(1)
    values = pairwise_ms_ssim([v, v.copy(), w])
    assert len(values) == 3 and values[0] == pytest.approx(1.0, abs=1e-6) and values[1] < 0.9


def test_morphology_of_one_straight_tube_measures_its_length_radius_and_single_component():
    d, h, w = np.mgrid[:32, :64, :64].astype(np.float32)
    volume = np.full((32, 64, 64), 0.1, np.float32)
    # oblique tube of radius 2.5 voxels (1.55 mm) from h = 12 to 52 (40 voxels = 24.8 mm of length along h)
    on_axis = np.sqrt((d - 16 - 0.1 * (h - 32)) ** 2 + (w - 32 - 0.2 * (h - 32)) ** 2)
    volume[(on_axis <= 2.5) & (h >= 12) & (h <= 52)] = 0.8
    f = morphology_features(volume, (0.62, 0.62, 0.62))
    assert list(f) == list(FEATURE_NAMES)
    assert f["components"] == 1 and f["largest_component_share"] == 1.0
    assert f["skeleton_length_mm"] == pytest.approx(40 * 0.62 * np.sqrt(1 + 0.1 ** 2 + 0.2 ** 2), rel=0.2)
    assert f["radius_p50_mm"] == pytest.approx(2.5 * 0.62, rel=0.3)
    assert f["end_points"] == 2 and f["branch_points"] == 0
    assert f["vessel_mean"] == pytest.approx(0.8) and f["background_mean"] == pytest.approx(0.1)


def test_morphology_asymmetry_is_positive_when_the_vessel_lies_on_the_left():
    volume = np.full((32, 64, 64), 0.1, np.float32)
    volume[10:14, 4:20, 20:50] = 0.9  # low H = subject's left for an RAS affine
    assert morphology_features(volume, left_is_low_h=True)["lr_volume_asymmetry"] == 1.0
    assert morphology_features(volume, left_is_low_h=False)["lr_volume_asymmetry"] == -1.0


def test_morphology_keeps_a_centre_point_for_bars_that_thinning_erases():
    volume = np.full((32, 64, 64), 0.1, np.float32)
    volume[10:14, 10:50, 30:34] = 0.9  # axis-aligned 4 x 4 bar
    f = morphology_features(volume)
    assert f["radius_mean_mm"] > 0


def test_morphology_separates_noise_from_vessels():
    tubes, noise = morphology_features(tube_volume(0)), morphology_features(noise_volume(0))
    assert noise["vessel_fraction_pct"] > 10 * tubes["vessel_fraction_pct"]


def test_memorisation_finds_a_copied_and_a_mirrored_training_volume():
    train = [tube_volume(10 + i) for i in range(4)]
    generated = [train[2] + 0.01 * noise_volume(5), np.flip(train[1], axis=1).copy(), noise_volume(6)]
    acc = MatchAccumulator(query_matrix(generated, pool=2))
    for v in train:
        acc.add(v)
    m = acc.result()
    assert m.train_index[0] == 2 and m.correlation[0] > 0.99 and not m.mirrored[0]
    assert m.train_index[1] == 1 and m.correlation[1] > 0.99 and m.mirrored[1]
    assert m.correlation[2] < 0.2


def test_near_copies_are_flagged_above_every_held_out_volume_and_0_8_or_at_the_threshold():
    flags = flag_near_copies(np.array([0.5, 0.7, 0.85, 0.96]), np.array([0.4, 0.6]), MemorisationConfig(copy_threshold=0.95))
    assert flags.tolist() == [False, False, True, True]  # 0.7: closer than the reals, but no copy of anything
    assert flag_near_copies(np.array([0.85]), np.array([0.9]), MemorisationConfig()).tolist() == [False]


def _medicalnet_file(path, prefix="module.", extra=None):
    torch.manual_seed(0)
    state = {prefix + k: v for k, v in ResNet10Encoder().state_dict().items()}
    state.update(extra or {})
    torch.save({"state_dict": state}, path)
    return path


def test_medicalnet_loads_a_module_prefixed_state_dict_on_cpu_and_gives_512_features(tmp_path):
    path = _medicalnet_file(tmp_path / "resnet_10_23dataset.pth", extra={"module.conv_seg.0.weight": torch.zeros(2)})
    model = load_medicalnet(path, expected_sha256=None, device="cpu")
    features = medicalnet_features(model, tube_volume(0), seed=1)
    assert features.shape == (FEATURE_DIM,) and np.all(np.isfinite(features))
    assert np.array_equal(features, medicalnet_features(model, tube_volume(0), seed=1))


def test_medicalnet_refuses_a_file_with_the_wrong_checksum(tmp_path):
    path = _medicalnet_file(tmp_path / "resnet_10_23dataset.pth")
    with pytest.raises(CheckpointError, match="is not MedicalNet's resnet_10_23dataset.pth"):
        load_medicalnet(path)


def test_medicalnet_refuses_a_file_of_another_depth(tmp_path):
    path = _medicalnet_file(tmp_path / "resnet_18.pth", extra={"module.layer1.1.conv1.weight": torch.zeros(64, 64, 3, 3, 3)})
    with pytest.raises(CheckpointError, match="unexpected: layer1.1.conv1.weight"):
        load_medicalnet(path, expected_sha256=None)


def test_medicalnet_refuses_a_missing_file_without_downloading(tmp_path):
    with pytest.raises(CheckpointError, match="nothing is downloaded"):
        load_medicalnet(tmp_path / "absent.pth")


def test_medicalnet_input_is_in_nifti_axis_order_and_z_scored_on_nonzero_voxels():
    v = tube_volume(0)
    v[0] = 0.0
    x = medicalnet_input(v, seed=3)
    assert tuple(x.shape) == (1, 1, v.shape[1], v.shape[2], v.shape[0])
    nonzero = x[0, 0].numpy()[np.transpose(v, (1, 2, 0)) > 0]
    assert nonzero.mean() == pytest.approx(0.0, abs=1e-4) and nonzero.std() == pytest.approx(1.0, abs=1e-3)


def test_fid2d_is_skipped_with_instructions_when_pytorch_fid_is_missing(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    status = fid2d_status()
    assert not status.available and "pip install pytorch-fid" in status.message and INCEPTION_FILENAME in status.message


def test_fid2d_is_skipped_when_the_default_inception_weights_are_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pytorch_fid", types.ModuleType("pytorch_fid"))
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    status = fid2d_status()
    assert not status.available and "weights" in status.message and "--inception-weights" in status.message


@pytest.mark.parametrize("installed", [True, False])
def test_fid2d_asked_for_with_weights_it_cannot_use_is_an_error(monkeypatch, tmp_path, installed):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if installed else None)
    weights = tmp_path / INCEPTION_FILENAME
    if not installed:
        weights.write_bytes(b"x")
    with pytest.raises(InputError, match="--inception-weights was given but " +
                       ("the InceptionV3 weights" if installed else "the package pytorch-fid is not installed")):
        fid2d_status(weights)


def test_fid2d_is_available_when_package_and_weights_are_present(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    weights = tmp_path / INCEPTION_FILENAME
    weights.write_bytes(b"x")
    assert fid2d_status(weights).available


def test_slices_are_min_max_scaled_to_8_bit_grey_rgb():
    v = np.stack([np.linspace(2, 4, 16, dtype=np.float32).reshape(4, 4), np.full((4, 4), 7, np.float32)])
    images = slice_images(v)
    assert tuple(images.shape) == (2, 3, 4, 4)
    assert float(images[0].min()) == 0.0 and float(images[0].max()) == 1.0 and float(images[1].max()) == 0.0
    assert np.allclose((images.numpy() * 255) % 1, 0, atol=1e-4)


def test_the_evaluation_api_refuses_sets_it_cannot_compare():
    from CircleOfWillisGANLib.evaluation.pipeline import EvaluationConfig, evaluate
    from CircleOfWillisGANLib.evaluation.volumes import array_set
    from CircleOfWillisGANLib.volume_io import default_affine

    rng = np.random.default_rng(0)
    volumes = [rng.random((8, 16, 16)).astype(np.float32) for _ in range(3)]
    affine = default_affine((8, 16, 16))
    with pytest.raises(InputError, match="3 real volumes but 1 names"):
        array_set(volumes, ["a"], affine, "real", "test")
    real = array_set(volumes, ["a", "b", "c"], affine, "real", "test")
    thin = array_set([v[:4] for v in volumes], ["a", "b", "c"], affine, "generated", "test")
    config = EvaluationConfig(cache_dir=None, progress=False)
    with pytest.raises(InputError, match="generated volumes are 4x16x16 but real volumes are 8x16x16"):
        evaluate(real, thin, config=config)
    with pytest.raises(InputError, match="at least 2 real and 2 generated"):
        evaluate(real, real.subset([0], "generated"), config=config)
    with pytest.raises(InputError, match="must be a VolumeSet"):
        evaluate(volumes, real, config=config)


def test_a_constant_volume_is_named_when_medicalnet_cannot_normalise_it(tmp_path):
    from CircleOfWillisGANLib.evaluation.cache import FeatureCache
    from CircleOfWillisGANLib.evaluation.features import extract, medicalnet_extractor
    from CircleOfWillisGANLib.evaluation.volumes import array_set
    from CircleOfWillisGANLib.volume_io import default_affine

    model = load_medicalnet(_medicalnet_file(tmp_path / "resnet_10_23dataset.pth"), expected_sha256=None)
    volumes = [tube_volume(0), np.zeros(tube_volume(0).shape, np.float32)]
    generated = array_set(volumes, ["seed0000", "seed0001"], default_affine(volumes[0].shape), "generated", "model demo")
    with pytest.raises(InputError, match=r"^generated volume seed0001 \(model demo\): it is constant or empty, so it "
                                         r"cannot be normalised for MedicalNet: .*evaluate another checkpoint\)$"):
        extract(generated, [medicalnet_extractor(model, "0" * 64, seed=0)], FeatureCache(None), progress=False)


def test_a_folder_stored_in_another_orientation_is_measured_and_pictured_as_ras(tmp_path):
    from CircleOfWillisGANLib.evaluation.cache import FeatureCache
    from CircleOfWillisGANLib.evaluation.features import extract, morphology_extractor
    from CircleOfWillisGANLib.evaluation.morphology import MorphologyConfig
    from CircleOfWillisGANLib.evaluation.volumes import folder_set
    from CircleOfWillisGANLib.volume_io import default_affine, save_volume

    shape = (12, 24, 20)
    volume = np.zeros(shape, np.float32)
    volume[4:8, 2:9, 5:15] = 1.0  # vessels on the subject's left only (low i in RAS), in front of the centre
    ras = default_affine(shape)
    (tmp_path / "ras").mkdir()
    save_volume(tmp_path / "ras" / "case.nii.gz", volume, ras)
    turned = np.ascontiguousarray(volume.transpose(0, 2, 1)[:, ::-1, ::-1])  # stored P-L-S: i runs back, j to the left
    pls = np.zeros((4, 4))
    pls[:3, 0], pls[:3, 1], pls[:3, 2] = ras[:3, 1] * -1, ras[:3, 0] * -1, ras[:3, 2]
    pls[:3, 3] = ras[:3, 3] + ras[:3, 0] * (shape[1] - 1) + ras[:3, 1] * (shape[2] - 1)
    pls[3, 3] = 1.0
    (tmp_path / "pls").mkdir()
    save_volume(tmp_path / "pls" / "case.nii.gz", turned, pls)
    sets = [folder_set(str(tmp_path / name), name) for name in ("ras", "pls")]
    assert sets[1].shape == shape and np.allclose(sets[1].affine, ras)
    np.testing.assert_array_equal(sets[1].items[0].load(), sets[0].items[0].load())
    features = [extract(s, [morphology_extractor(s, MorphologyConfig())], FeatureCache(None), progress=False) for s in sets]
    asymmetry = FEATURE_NAMES.index("lr_volume_asymmetry")
    assert features[1].values["morphology"][0][asymmetry] == features[0].values["morphology"][0][asymmetry] == 1.0
    np.testing.assert_array_equal(features[1].previews[0], features[0].previews[0])


def test_a_folder_is_one_grid_when_spacings_differ_by_float_noise_and_two_when_they_really_differ(tmp_path):
    from CircleOfWillisGANLib.evaluation.volumes import folder_set
    from CircleOfWillisGANLib.volume_io import default_affine, save_volume

    shape = (8, 16, 16)
    for name, spacings in (("noise", (0.4445001, 0.4444999)), ("apart", (1.2451, 1.2549))):
        (tmp_path / name).mkdir()
        for i, spacing in enumerate(spacings):
            save_volume(tmp_path / name / f"case_{i}.nii.gz", tube_volume(i, shape, 1), default_affine(shape, (spacing,) * 3))
    assert len(folder_set(str(tmp_path / "noise"), "real")) == 2
    with pytest.raises(InputError, match=r"mixes grids: 1 of 8x16x16 voxels \(D x H x W\) of 1.245 x 1.245 x 1.245 mm, RAS "
                                         r"\(e.g. case_0.nii.gz\), 1 of 8x16x16 voxels \(D x H x W\) of 1.255 x "):
        folder_set(str(tmp_path / "apart"), "real")


def _ramps(shape, spacing):
    """Three volumes whose value is the voxel centre's RAS x, y and z (mm) on a centred grid, and that grid's affine."""
    from CircleOfWillisGANLib.volume_io import default_affine

    affine = default_affine(shape, (spacing,) * 3)
    d, h, w = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    world = np.tensordot(affine[:3, :3], np.stack([h, w, d]), 1) + affine[:3, 3, None, None, None]
    return [c.astype(np.float32) for c in world], affine


@pytest.mark.parametrize("source, target", [((8, 16, 16), (4, 8, 8)), ((4, 8, 8), (8, 16, 16))])
def test_resampling_puts_every_voxel_centre_where_it_lies_in_millimetres(source, target):
    from CircleOfWillisGANLib.evaluation.volumes import array_set, check_same_grid

    spacing = {source: 0.62, target: 1.24} if source[0] > target[0] else {source: 1.24, target: 0.62}
    ramps, affine = _ramps(source, spacing[source])
    expected, target_affine = _ramps(target, spacing[target])
    real = array_set(expected, ["x", "y", "z"], target_affine, "real", "test")
    out = check_same_grid(real, array_set(ramps, ["x", "y", "z"], affine, "generated", "test"), resample=True)
    inner = (slice(1, -1),) * 3  # edge voxels of an upsampled grid lie beyond the outermost source centres
    for item, truth in zip(out.items, expected):
        value = item.loader()[0]
        assert value.shape == target
        np.testing.assert_allclose(value[inner], truth[inner], atol=1e-4)
        np.testing.assert_allclose(value, truth, atol=0.05 if source[0] > target[0] else 0.32)


@pytest.mark.parametrize("h", [1, 4, 7, 22])
def test_downsampling_keeps_a_vessel_on_a_new_voxel_centre_unsmoothed_as_prepare_does(h):
    from CircleOfWillisGANLib.evaluation.volumes import resample_volume

    volume = np.zeros((12, 24, 24), np.float32)
    volume[:, h, :] = 1.0  # a one-voxel sheet of vessel; 3x fewer voxels per axis put new centres at h = 1, 4, 7, ...
    expected = np.zeros((4, 8, 8), np.float32)
    expected[:, (h - 1) // 3, :] = 1.0
    np.testing.assert_allclose(resample_volume(volume, (4, 8, 8)), expected, atol=1e-6)


def test_diversity_of_volumes_thinner_than_the_ms_ssim_window_is_skipped_naming_what_it_needs():
    from CircleOfWillisGANLib.evaluation.pipeline import EvaluationConfig, evaluate
    from CircleOfWillisGANLib.evaluation.volumes import array_set
    from CircleOfWillisGANLib.volume_io import default_affine

    volumes = [tube_volume(i, (6, 16, 16), 1) for i in range(4)]
    real = array_set(volumes[:2], ["a", "b"], default_affine((6, 16, 16)), "real", "test")
    fake = array_set(volumes[2:], ["c", "d"], default_affine((6, 16, 16)), "generated", "test")
    diversity = evaluate(real, fake, config=EvaluationConfig(cache_dir=None, progress=False)).metrics["diversity"]
    assert diversity["scales"] == 1
    assert diversity["generated"]["skipped"] == (
        "diversity (MS-SSIM) needs at least 7 voxels along every axis (its Gaussian window); these volumes are 6x16x16: "
        "evaluate volumes prepared on a grid of at least 7 voxels per axis (`cowgan prepare --shape D H W`)")


@pytest.mark.parametrize("radius_vox", [1.5, 2.5])
def test_evaluation_and_topcow_measure_a_vessel_radius_alike(radius_vox):
    from CircleOfWillisGANLib import topcow
    from CircleOfWillisGANLib.volume_io import default_affine

    d, h, w = np.mgrid[0:16, 0:40, 0:40]
    cylinder = ((h - 20) ** 2 + (w - 20) ** 2) <= radius_vox ** 2
    measured = topcow.radius_per_class(cylinder * topcow.BA, default_affine(cylinder.shape, (0.5, 0.5, 0.5)))["BA"]
    features = morphology_features(np.where(cylinder, 0.8, 0.1).astype(np.float32), (0.5, 0.5, 0.5))
    assert features["radius_p50_mm"] == pytest.approx(measured, abs=1e-3)
    assert abs(features["radius_p50_mm"] - 0.5 * np.sqrt(cylinder[0].sum() / np.pi)) < 0.125  # a quarter voxel


def test_features_cached_by_an_earlier_definition_are_computed_again(tmp_path):
    from dataclasses import asdict

    from CircleOfWillisGANLib.evaluation.cache import FeatureCache, extractor_key
    from CircleOfWillisGANLib.evaluation.features import extract, morphology_extractor
    from CircleOfWillisGANLib.evaluation.morphology import MorphologyConfig
    from CircleOfWillisGANLib.evaluation.volumes import array_set
    from CircleOfWillisGANLib.volume_io import default_affine

    volumes = array_set([tube_volume(0, (16, 24, 24), 1)], ["a"], default_affine((16, 24, 24)), "real", "test")
    extractor = morphology_extractor(volumes, MorphologyConfig())
    before_radius_correction = extractor_key("morphology", {"version": 1, **asdict(MorphologyConfig()),
                                                            "spacing": [0.62, 0.62, 0.62], "left_is_low_h": True})
    stale = tmp_path / before_radius_correction / f"{volumes.items[0].key()}.npy"
    stale.parent.mkdir()
    np.save(stale, np.zeros(len(FEATURE_NAMES)))
    cache = FeatureCache(tmp_path)
    features = extract(volumes, [extractor], cache, progress=False).values["morphology"][0]
    assert (cache.hits, cache.misses) == (0, 1) and features[FEATURE_NAMES.index("radius_p50_mm")] > 0
