"""Phantoms: label ids, variant logic, geometry ranges, image statistics and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from CircleOfWillisGANLib import topcow
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.phantoms import PhantomConfig, VariantPrevalence, generate_phantom, sample_variants, case_rng

TOPCOW_IDS = set(topcow.LABEL_NAMES) | {0}


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom((0, 0), PhantomConfig(force=("complete",)))


def test_a_phantom_is_a_32x128x128_float_volume_in_unit_range_with_uint8_labels(phantom):
    assert phantom.image.shape == (32, 128, 128) and phantom.image.dtype == np.float32
    assert phantom.image.min() == 0.0 and phantom.image.max() == 1.0
    assert phantom.labels.shape == (32, 128, 128) and phantom.labels.dtype == np.uint8


def test_a_complete_circle_has_every_topcow_label_except_third_a2(phantom):
    assert set(np.unique(phantom.labels).tolist()) == TOPCOW_IDS - {topcow.THIRD_A2}
    assert phantom.topcow_vectors == topcow.COMPLETE_CIRCLE


def test_every_label_class_is_one_connected_piece(phantom):
    from scipy import ndimage as ndi

    for label_id in topcow.LABEL_NAMES:
        if (phantom.labels == label_id).any():
            _, pieces = ndi.label(phantom.labels == label_id, structure=np.ones((3, 3, 3)))
            assert pieces == 1, topcow.LABEL_NAMES[label_id]


@pytest.mark.parametrize("index", [3, 4, 16, 31, 35, 37])
def test_a_thick_pcom_or_the_acom_never_cuts_a_class_in_two_and_the_vectors_stay_those_drawn(index):
    from scipy import ndimage as ndi

    p = generate_phantom((11, index), PhantomConfig())  # cases whose ACA or PCA label the Acom or a fetal Pcom split
    for label_id in topcow.present_labels(p.labels):
        _, pieces = ndi.label(p.labels == label_id, structure=np.ones((3, 3, 3)))
        assert pieces == 1, topcow.LABEL_NAMES[label_id]
    assert p.topcow_vectors == p.variants.topcow() == topcow.variant_vectors(p.labels).as_dict()


def test_a_label_piece_goes_to_its_neighbour_only_if_the_variant_vectors_allow_it():
    from CircleOfWillisGANLib.phantoms.raster import merge_label_islands

    labels = np.zeros((5, 5, 9), np.uint8)
    labels[2, 2, 0:3], labels[2, 2, 3:6], labels[2, 2, 6] = 11, 10, 11  # an ACA cut by the Acom, a 1-voxel piece
    labels[0, 0, 8] = 11  # a piece touching no label: a vessel leaving and re-entering the grid stays
    merged = merge_label_islands(labels, lambda trial: True)
    assert merged[2, 2, 6] == 10 and merged[0, 0, 8] == 11 and (merged[2, 2, :6] == labels[2, 2, :6]).all()
    assert (merge_label_islands(labels, lambda trial: False) == labels).all()


def test_vessels_are_bright_on_dark_tissue_like_tof(phantom):
    vessel = phantom.image[phantom.labels > 0]
    tissue = phantom.image[phantom.labels == 0]
    assert np.median(vessel) > 0.3
    assert 0.05 < np.median(tissue) < 0.2
    assert (phantom.image > 0.3).mean() < 0.03


@pytest.mark.parametrize("force", [(), ("fetal_pca_left",), ("p1_absent_right",)])
def test_inflow_signal_fades_downstream_the_p2_never_starts_brighter_than_what_feeds_it(force):
    from CircleOfWillisGANLib.phantoms import anatomy, tof, variants

    config = PhantomConfig(force=force)
    for index in range(6):
        rng = case_rng(3, index)
        v = variants.sample_variants(rng, config.prevalence, config.force)
        landmarks, pose = anatomy.sample_landmarks(rng, config.anatomy), anatomy.sample_pose(rng, config.anatomy)
        image = tof.sample_image_params(rng, config.image)
        vessels = anatomy.build_vessels(rng, landmarks, v, pose["scale"])
        anatomy.place(vessels, pose)
        anatomy.flow_saturation(vessels)
        assert {x.name for x in vessels if x.parent is None} == {"basilar", "ica_left", "ica_right"}
        for side in ("left", "right"):
            p2 = next(x for x in vessels if x.name == f"p2_{side}")
            feeder = vessels[p2.parent]
            expected = f"pcom_{side}" if getattr(v, f"fetal_pca_{side}") or getattr(v, f"p1_absent_{side}") else f"p1_{side}"
            assert feeder.name == expected
            nearest = int(np.argmin(np.linalg.norm(feeder.points - p2.points[0], axis=1)))
            start = tof.brightness_along(p2.saturation[:1], image["saturation_length_mm"], p2.slow_flow)[0]
            feeding = tof.brightness_along(feeder.saturation[nearest:nearest + 1], image["saturation_length_mm"], 1.0)[0]
            assert start <= feeding + 1e-6


def test_geometry_matches_the_published_ranges(phantom):
    m = topcow.measure(phantom.labels, phantom.affine)
    assert 26.0 <= m.ica_ica_mm <= 36.0
    assert 13.0 <= m.acom_to_basilar_tip_mm <= 25.0
    assert 9.0 <= m.pcom_length_mm["R"] <= 18.0 and 9.0 <= m.pcom_length_mm["L"] <= 18.0
    assert 1.0 <= m.radius_mm["R-ICA"] <= 2.2 and 0.6 <= m.radius_mm["BA"] <= 1.8


@pytest.mark.parametrize("side,pcom_name", [("left", "L-Pcom"), ("right", "R-Pcom")])
def test_a_fetal_pca_has_a_thick_pcom_and_a_thin_or_absent_p1(side, pcom_name):
    normal = generate_phantom((5, 1), PhantomConfig(force=("complete",)))
    fetal = generate_phantom((5, 1), PhantomConfig(force=(f"fetal_pca_{side}",)))
    normal_pcom = topcow.measure(normal.labels, normal.affine).radius_mm[pcom_name]
    fetal_pcom = topcow.measure(fetal.labels, fetal.affine).radius_mm[pcom_name]
    assert fetal_pcom >= 0.7 and fetal_pcom > normal_pcom
    p1 = fetal.params["vessels"].get(f"p1_{side}")
    assert p1 is None or max(p1["radius_mm"]) < 0.55
    assert normal.params["vessels"][f"p1_{side}"]["radius_mm"][0] > 0.75


def test_an_absent_p1_removes_pca_basilar_contact_but_keeps_the_pcom():
    p = generate_phantom((5, 2), PhantomConfig(force=("p1_absent_left",)))
    assert p.topcow_vectors["posterior"][:2] == [1, 0]
    assert (p.labels == topcow.L_PCA).any()


def test_an_absent_a1_keeps_the_acom_and_the_a2():
    p = generate_phantom((5, 3), PhantomConfig(force=("a1_absent_right",)))
    assert p.topcow_vectors["anterior"][1:] == [1, p.topcow_vectors["anterior"][2], 0]
    assert (p.labels == topcow.R_ACA).any()


def test_without_an_acom_the_stated_tissue_gap_separates_the_left_and_right_aca_lumens_after_placement():
    from CircleOfWillisGANLib.phantoms import anatomy, tof, variants

    config = PhantomConfig(force=("acom_absent",))
    gaps = []
    for index in range(50):  # built as generate_phantom builds them: tortuosity, then the pose's scale and rotation
        rng = case_rng(5, index)
        v = variants.sample_variants(rng, config.prevalence, config.force)
        landmarks, pose = anatomy.sample_landmarks(rng, config.anatomy), anatomy.sample_pose(rng, config.anatomy)
        tof.sample_image_params(rng, config.image)
        vessels = anatomy.build_vessels(rng, landmarks, v, pose["scale"])
        anatomy.place(vessels, pose)
        sides = [[x for x in vessels if x.name in (f"a1_{side}", f"a2_{side}")] for side in ("left", "right")]
        (left_points, left_radii), (right_points, right_radii) = [
            (np.vstack([x.points for x in side]), np.concatenate([x.radii for x in side])) for side in sides]
        lumen_gaps = (np.linalg.norm(left_points[:, None] - right_points[None], axis=-1)
                      - left_radii[:, None] - right_radii[None])
        gaps.append(lumen_gaps.min())
    assert min(gaps) >= anatomy.ACOM_ABSENT_GAP_MM - 1e-9


def test_without_an_acom_the_a2s_keep_their_bends_moved_off_the_midline_not_flattened_onto_a_plane():
    from CircleOfWillisGANLib.phantoms import anatomy, tof, variants

    config = PhantomConfig(force=("acom_absent",))
    on_plane = []
    for index in range(40):
        rng = case_rng(5, index)
        v = variants.sample_variants(rng, config.prevalence, config.force)
        landmarks, pose = anatomy.sample_landmarks(rng, config.anatomy), anatomy.sample_pose(rng, config.anatomy)
        tof.sample_image_params(rng, config.image)
        for a2 in [x for x in anatomy.build_vessels(rng, landmarks, v, pose["scale"]) if x.name.startswith("a2_")]:
            clearance = anatomy.midline_clearance(a2.radii, pose["scale"])  # template frame: x = 0 is the midline
            on_plane.append(np.mean(np.isclose(np.abs(a2.points[:, 0]), clearance)))
    assert np.mean(on_plane) < 0.15  # moving each near point onto the plane left 31% of A2 points on it, straight


@pytest.mark.parametrize("index", [25, 33, 36])
def test_without_an_acom_the_left_and_right_aca_labels_never_touch(index):
    from scipy import ndimage

    p = generate_phantom((5, index), PhantomConfig(force=("acom_absent",)))  # cases whose A2s once came together
    assert p.topcow_vectors["anterior"][1] == 0  # [L-A1, Acom, 3rd A2, R-A1]
    left = ndimage.binary_dilation(p.labels == topcow.L_ACA, structure=np.ones((3, 3, 3)))  # 26-neighbourhood
    assert not (left & (p.labels == topcow.R_ACA)).any()


def test_forced_fetal_pcas_and_hypoplastic_a1s_lack_their_segment_as_often_as_sampled_ones():
    table = VariantPrevalence()
    fetal = [sample_variants(case_rng(2, i), table, force=("fetal_pca_left",)) for i in range(1500)]
    thin = [sample_variants(case_rng(3, i), table, force=("a1_hypoplastic_right",)) for i in range(1500)]
    for draws, name, share in ((fetal, "p1_absent_left", table.p1_absent_given_fetal),
                               (thin, "a1_absent_right", table.a1_absent_given_hypoplastic)):
        observed = np.mean([getattr(v, name) for v in draws])
        assert abs(observed - share) < 4 * np.sqrt(share * (1 - share) / 1500), name
    assert not any(v.a1_absent_right and v.acom_absent for v in thin)


def test_no_subject_lacks_both_a1s_and_hypoplastic_segments_stay_under_1_mm():
    table = VariantPrevalence(a1_hypoplastic_left=0.9, a1_hypoplastic_right=0.9, a1_absent_given_hypoplastic=0.9,
                              acom_absent=0.0, acom_duplicated=0.0, third_a2=0.0)
    draws = [sample_variants(case_rng(4, i), table) for i in range(400)]
    assert not any(v.a1_absent_left and v.a1_absent_right for v in draws)
    assert sum(v.a1_absent_left for v in draws) > 100 and sum(v.a1_absent_right for v in draws) > 100
    with pytest.raises(InputError, match="an absent A1 on both sides .*not both"):
        PhantomConfig(force=("a1_absent_left", "a1_absent_right"))
    for index in range(6):
        p = generate_phantom((13, index), PhantomConfig(force=("a1_hypoplastic_left", "fetal_pca_right")))
        for name in ("a1_left", "p1_right"):
            if name in p.params["vessels"]:
                assert 2 * max(p.params["vessels"][name]["radius_mm"]) < 1.0, (index, name)


@pytest.mark.parametrize("force,anterior,posterior", [
    (("pcom_absent_both",), None, [0, 1, 1, 0]),
    (("acom_absent",), [1, 0, 0, 1], None),
    (("third_a2",), [None, 1, 1, None], None),
])
def test_forced_variants_show_in_the_label_maps_vectors(force, anterior, posterior):
    p = generate_phantom((6, 0), PhantomConfig(force=force))
    for want, got in ((anterior, p.topcow_vectors["anterior"]), (posterior, p.topcow_vectors["posterior"])):
        if want is not None:
            assert [g if w is None else w for w, g in zip(want, got)] == got


@pytest.mark.parametrize("force", [("acom_absent", "acom_duplicated"), ("third_a2", "acom_absent"),
                                   ("fetal_pca_left", "pcom_absent_left"), ("a1_absent_right", "acom_absent")])
def test_forced_variants_that_exclude_each_other_are_refused(force):
    with pytest.raises(InputError, match="cannot all hold in one subject"):
        PhantomConfig(force=force)


@pytest.mark.parametrize("make, setting, message", [
    ("anatomy", {"scale": (0.0, 0.0)}, "must be positive"),
    ("anatomy", {"acom_length_mm": (3.0, 1.0)}, "low 3 above high 1"),
    ("anatomy", {"m1_length_mm": 5.0}, r"\(low, high\) range"),
    ("image", {"noise_sigma": (-1.0, -1.0)}, "at least 0"),
    ("image", {"slab_probability": 2.0}, "from 0 to 1"),
    ("config", {"shape": (16.5, 32, 32)}, "three sizes"),
    ("config", {"spacing_mm": 0.6}, "three positive millimetres"),
    ("config", {"spacing_mm": (10.0, 10.0, 10.0)}, r"spacings \(mm\) between 0.05 and 5"),
    ("config", {"spacing_mm": (200.0, 1.0, 1.0)}, r"spacings \(mm\) between 0.05 and 5"),
    ("config", {"spacing_mm": (float("nan"), 1.0, 1.0)}, r"spacings \(mm\) between 0.05 and 5"),
    ("config", {"spacing_mm": (1.0, float("inf"), 1.0)}, r"spacings \(mm\) between 0.05 and 5"),
    ("config", {"shape": (1024, 1024, 1024)}, "1074 million voxels and would need about 53 GiB of memory: use at most 67"),
    ("config", {"force": "acom_absent"}, "list of variant names"),
])
def test_configurations_that_would_draw_no_vessels_or_crash_later_are_refused(make, setting, message):
    from CircleOfWillisGANLib.phantoms.anatomy import AnatomyConfig
    from CircleOfWillisGANLib.phantoms.tof import ImageConfig

    factory = {"anatomy": AnatomyConfig, "image": ImageConfig, "config": PhantomConfig}[make]
    with pytest.raises(InputError, match=message):
        factory(**setting)


def test_complete_is_the_base_that_other_forced_variants_change_in_either_order():
    for force in (("complete", "fetal_pca_right"), ("fetal_pca_right", "complete")):
        v = generate_phantom((3, 1), PhantomConfig(force=force)).variants
        assert v.fetal_pca_right and not any(getattr(v, k) for k in ("fetal_pca_left", "acom_absent", "a1_absent_left"))


def test_label_vectors_agree_with_the_sampled_variants_over_many_cases():
    for index in range(12):
        p = generate_phantom((11, index), PhantomConfig(shape=(32, 96, 96), spacing_mm=(0.8, 0.8, 0.8)))
        assert p.topcow_vectors == p.variants.topcow(), index


def test_same_seed_and_index_give_identical_phantoms_and_different_indices_differ():
    a, b = generate_phantom((9, 4)), generate_phantom((9, 4))
    c = generate_phantom((9, 5))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) and a.params == b.params
    assert not np.array_equal(a.image, c.image)


def test_variant_frequencies_follow_the_table_over_4000_subjects():
    table = VariantPrevalence()
    draws = [sample_variants(case_rng(1, i), table) for i in range(4000)]
    for name in ("pcom_absent_left", "fetal_pca_right", "acom_absent", "third_a2"):
        observed = np.mean([getattr(v, name) for v in draws])
        expected = getattr(table, name)
        assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / 4000) + 1e-3, name
    both = np.mean([v.pcom_absent_left and v.pcom_absent_right for v in draws])
    assert abs(both - table.pcom_absent_both) < 0.03


@pytest.mark.parametrize("overrides", [
    {"pcom_absent_left": 0.5, "pcom_absent_right": 0.5, "pcom_absent_both": 0.48},
    {"fetal_pca_left": 0.5, "fetal_pca_bilateral": 0.05},
    {"fetal_pca_left": 0.5, "fetal_pca_right": 0.5, "fetal_pca_bilateral": 0.1, "pcom_absent_left": 0.45,
     "pcom_absent_right": 0.45, "pcom_absent_both": 0.1},
    {"fetal_pca_left": 0.5, "fetal_pca_right": 0.5, "fetal_pca_bilateral": 0.0, "pcom_absent_left": 0.5,
     "pcom_absent_right": 0.5, "pcom_absent_both": 0.0},
    {"fetal_pca_left": 0.4, "fetal_pca_right": 0.4, "fetal_pca_bilateral": 0.0, "pcom_absent_left": 0.55,
     "pcom_absent_right": 0.55, "pcom_absent_both": 0.1},
])
def test_pcom_frequencies_follow_the_table_even_where_fetal_pcas_crowd_out_their_absence(overrides):
    table = VariantPrevalence().with_overrides(overrides)
    n = 20000
    draws = [sample_variants(case_rng(2, i), table) for i in range(n)]
    observed = {"pcom_absent_left": np.mean([v.pcom_absent_left for v in draws]),
                "pcom_absent_right": np.mean([v.pcom_absent_right for v in draws]),
                "pcom_absent_both": np.mean([v.pcom_absent_left and v.pcom_absent_right for v in draws]),
                "fetal_pca_left": np.mean([v.fetal_pca_left for v in draws])}
    for name, value in observed.items():
        expected = getattr(table, name)
        assert abs(value - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-3, (name, value, expected)
    assert not any(v.fetal_pca_left and v.pcom_absent_left for v in draws)


def test_pcom_rates_no_subject_mix_can_meet_are_refused_with_the_fix():
    with pytest.raises(InputError, match="cannot all hold beside these fetal PCA rates.*lower pcom_absent_both"):
        VariantPrevalence().with_overrides({"fetal_pca_left": 0.3, "fetal_pca_right": 0.3, "fetal_pca_bilateral": 0.3,
                                            "pcom_absent_left": 0.7, "pcom_absent_right": 0.7,
                                            "pcom_absent_both": 0.6})  # 80% with an absent Pcom, but 30% are fetal


@pytest.mark.parametrize("overrides, message", [
    ({"fetal_pca_left": 0.5, "fetal_pca_right": 0.5, "fetal_pca_bilateral": 0.25},
     r"pcom_absent_both=0.27 exceeds 0.25, the share of subjects without a fetal PCA .*: lower it to 0.25 or less"),
    ({"fetal_pca_left": 0.6}, r"pcom_absent_left=0.43 \+ fetal_pca_left=0.6 exceed 1, but a fetal PCA needs its Pcom"),
    ({"a1_hypoplastic_left": 0.5, "a1_hypoplastic_right": 0.5, "a1_absent_given_hypoplastic": 1.0, "acom_absent": 0.5},
     r"acom_absent=0.5 is too high for the absent-A1 rate .*: lower it to 0.\d+ or less"),
    ({"acom_absent": 0.96}, r"third_a2=0.05 needs an Acom but exceeds 1 - acom_absent = 0.04: lower it to that or less"),
])
def test_a_prevalence_table_no_population_can_meet_names_the_largest_rate_that_fits(overrides, message):
    with pytest.raises(InputError, match=message):
        VariantPrevalence().with_overrides(overrides)


def test_a_fetal_pca_never_loses_its_pcom_even_when_pcoms_are_always_absent():
    table = VariantPrevalence(pcom_absent_left=0.5, pcom_absent_right=0.5, pcom_absent_both=0.45,
                              fetal_pca_left=0.5, fetal_pca_right=0.0, fetal_pca_bilateral=0.0)
    for i in range(200):
        v = sample_variants(case_rng(2, i), table)
        assert not (v.fetal_pca_left and v.pcom_absent_left)


def test_inconsistent_prevalences_are_rejected_with_a_fix():
    with pytest.raises(InputError, match="must lie between"):
        VariantPrevalence(pcom_absent_both=0.6)
    with pytest.raises(InputError, match=r"^fetal_pca_bilateral=0.5 is inconsistent with fetal_pca_left=0.11"):
        VariantPrevalence(fetal_pca_bilateral=0.5)  # named as the user wrote it, not fetal_pca_both
    with pytest.raises(InputError, match=r"set it too \(e.g. --variant fetal_pca_bilateral=0; allowed: 0\)$"):
        VariantPrevalence(fetal_pca_left=0.0)  # the both-sides rate the user never set is the one to add
    with pytest.raises(InputError, match=r"--variant pcom_absent_both=0.4; allowed: from 0 to 0.4\)$"):
        VariantPrevalence(pcom_absent_left=0.4, pcom_absent_both=0.6)
    with pytest.raises(InputError, match="unknown variant"):
        VariantPrevalence().with_overrides({"fetal_pca": 0.2})
    for value in ("x", None, True, [0.2]):
        with pytest.raises(InputError, match="fetal_pca_left must be a probability"):
            VariantPrevalence().with_overrides({"fetal_pca_left": value})


def test_shape_and_spacing_are_configurable():
    p = generate_phantom((3, 0), PhantomConfig(shape=(24, 64, 80), spacing_mm=(1.0, 1.0, 0.8)))
    assert p.image.shape == (24, 64, 80) == p.labels.shape
    assert np.allclose(np.diag(p.affine)[:3], (1.0, 1.0, 0.8))


@pytest.mark.parametrize("radius, voxel", [(0.15, 1.24), (0.3, 1.24), (0.3, 0.62), (0.8, 1.24), (2.0, 0.62)])
def test_a_tube_thinner_than_a_voxel_gets_the_signal_of_its_lumen_not_of_a_voxel_wide_vessel(radius, voxel):
    from CircleOfWillisGANLib.phantoms.raster import Grid, Tube, rasterise
    from CircleOfWillisGANLib.phantoms.tof import occupancy
    from CircleOfWillisGANLib.volume_io import default_affine

    shape = (16, 16, 16)
    grid = Grid(shape, default_affine(shape, (voxel,) * 3))
    areas = []
    for dy in np.linspace(0.0, 0.5, 4):  # where a sub-voxel tube sits between voxel centres changes its sampled sum
        for dz in np.linspace(0.0, 0.5, 4):
            points = np.array([[x, dy * voxel, dz * voxel] for x in np.linspace(-7 * voxel, 7 * voxel, 15)])
            raster = rasterise([Tube(points, np.full(15, radius), np.ones(15, np.float32), 0)], grid, 0.0)
            areas.append(occupancy(raster.sdf, voxel, raster.radius)[:, 8, :].sum() * voxel * voxel)
    assert np.mean(areas) == pytest.approx(np.pi * radius ** 2, rel=0.05)  # the bare ramp: 5.5x for 0.15 mm at 1.24


def test_a_set_over_a_million_phantoms_is_refused_before_a_case_is_written(tmp_path):
    from CircleOfWillisGANLib.phantoms.writer import iter_phantom_set

    with pytest.raises(InputError, match="--n 1000001 is too many: a set holds at most 1,000,000 phantoms"):
        next(iter_phantom_set(tmp_path, 1_000_001, seed=0, config=PhantomConfig(shape=(8, 32, 32))))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed, config, message", [
    ((1, 2, 3), None, "phantom seed \\(1, 2, 3\\) is invalid: give a non-negative integer, a \\(seed, case index\\)"),
    ((1, -1), None, "phantom seed \\(1, -1\\) is invalid"),
    (True, None, "phantom seed True is invalid"),
    (0, "x", "config must be a PhantomConfig, got str"),
])
def test_a_phantom_seed_or_config_of_the_wrong_kind_is_named(seed, config, message):
    with pytest.raises(InputError, match=message):
        generate_phantom(seed, config)
