"""Creating sessions: reproducible by seed, balanced as asked, every case on one grid and one normalisation."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from CircleOfWillisGANLib.errors import InputError, OutputError
from CircleOfWillisGANLib.turing import SessionConfig, TuringSession
from CircleOfWillisGANLib.turing.create import plan_cases, read_key
from CircleOfWillisGANLib.turing.grid import DisplayGrid, to_display
from CircleOfWillisGANLib.volume_io import default_affine, save_volume
from turing_data import GENERATED_SHAPE, make_sources, vessel_volume


@pytest.fixture()
def sources(tmp_path):
    return make_sources(tmp_path)


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "answer_key.json"}


def test_same_seed_gives_identical_rater_files_and_truths(tmp_path, sources):
    real, generated = sources
    a = TuringSession.create(tmp_path / "a", real, generated, n_cases=12, seed=7)
    b = TuringSession.create(tmp_path / "b", real, generated, n_cases=12, seed=7)
    assert _digest(a.folder) == _digest(b.folder)
    assert read_key(a.key_path)[1] == read_key(b.key_path)[1]
    assert [c["source"] for c in read_key(a.key_path)[0]["cases"]] == [c["source"] for c in read_key(b.key_path)[0]["cases"]]


def test_different_seeds_draw_different_orders(tmp_path, sources):
    real, generated = sources
    a = TuringSession.create(tmp_path / "a", real, generated, n_cases=12, seed=1)
    b = TuringSession.create(tmp_path / "b", real, generated, n_cases=12, seed=2)
    assert read_key(a.key_path)[1] != read_key(b.key_path)[1]


def test_fixed_fraction_is_exactly_balanced():
    for seed in range(20):
        plan = plan_cases(SessionConfig(n_cases=60, real_fraction=0.5, seed=seed), 100, 100)
        assert sum(c.truth == "real" for c in plan) == 30
        assert len({c.case_id for c in plan}) == 60


def test_randomised_fraction_stays_within_40_to_60_percent_and_varies():
    counts = {sum(c.truth == "real" for c in plan_cases(SessionConfig(n_cases=60, real_fraction=None, seed=s), 100, 100))
              for s in range(200)}
    assert min(counts) >= 24 and max(counts) <= 36
    assert len(counts) >= 8
    for n, expected in ((6, (3, 3)), (7, (3, 4)), (10, (4, 6)), (3, (2, 2))):
        assert SessionConfig(n_cases=n, real_fraction=None).n_real_range() == expected  # never outside 40-60% but at 3


def test_truth_is_not_ordered_by_case_id():
    plan = plan_cases(SessionConfig(n_cases=60, seed=3), 100, 100)
    truths = [c.truth for c in plan]
    assert truths != sorted(truths) and truths != sorted(truths, reverse=True)
    runs = 1 + sum(a != b for a, b in zip(truths, truths[1:]))
    assert runs > 15


def test_each_source_volume_is_shown_at_most_once(tmp_path, sources):
    real, generated = sources
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=16, seed=0)
    paths = [c["source"]["path"] for c in read_key(created.key_path)[0]["cases"]]
    assert len(paths) == len(set(paths)) == 16
    assert not any("label" in p for p in paths)


def test_every_case_file_has_the_same_grid_dtype_header_and_size(tmp_path, sources):
    real, generated = sources
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=12, seed=0)
    files = sorted((created.folder / "cases").iterdir())
    headers = {f.read_bytes()[:352] for f in files}
    assert len(headers) == 1
    assert len({f.stat().st_size for f in files}) == 1
    for f in files:
        image = nib.load(str(f))
        assert image.get_data_dtype() == np.uint8
        assert image.shape == (GENERATED_SHAPE[1], GENERATED_SHAPE[2], GENERATED_SHAPE[0])
        data = np.asarray(image.dataobj)
        assert data.min() == 0 and data.max() == 255


def test_no_case_file_exists_until_every_volume_is_made_so_creation_times_cannot_tell_sources_apart(tmp_path, sources,
                                                                                                     monkeypatch):
    import CircleOfWillisGANLib.turing.sources as turing_sources

    real, generated = sources
    made = []
    file_loader = turing_sources._file_loader

    def spying(path):
        load = file_loader(path)

        def load_and_look():
            made.append(sorted(p.name for p in tmp_path.rglob("case-*.nii") if p.parent.name == "cases"))
            return load()
        return load_and_look

    monkeypatch.setattr(turing_sources, "_file_loader", spying)
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=12, seed=3)
    assert len(made) == 12 and all(seen == [] for seen in made)
    assert sorted(p.name for p in (created.folder / "cases").iterdir()) == [f"case-{k:03d}.nii" for k in range(1, 13)]
    assert not list(created.folder.rglob(".drafts"))


def test_display_depends_on_the_anatomy_not_on_how_the_file_stores_it():
    rng = np.random.default_rng(0)
    anatomy = np.clip(vessel_volume(rng, GENERATED_SHAPE), 0, 1)
    as_generated = to_display(anatomy, default_affine(GENERATED_SHAPE), DisplayGrid(GENERATED_SHAPE))
    lps = default_affine(GENERATED_SHAPE)
    lps[:2] *= -1
    stored_like_a_scanner = np.round(anatomy[:, ::-1, ::-1] * 900 + 40).astype(np.int16)
    as_real = to_display(stored_like_a_scanner, lps, DisplayGrid(GENERATED_SHAPE))
    assert np.abs(as_real.astype(int) - as_generated.astype(int)).max() <= 1


def test_display_contrast_comes_from_the_shown_voxels_not_from_a_scans_cropped_away_surroundings():
    rng = np.random.default_rng(1)
    anatomy = np.clip(vessel_volume(rng, GENERATED_SHAPE), 0, 1) * 700 + 60
    grid = DisplayGrid(GENERATED_SHAPE)
    alone = to_display(anatomy, default_affine(GENERATED_SHAPE), grid)
    d, h, w = GENERATED_SHAPE
    whole_head = np.zeros((3 * d, 3 * h, 3 * w), np.float32)  # air around the same voxels, as a larger scan has
    whole_head[d:2 * d, h:2 * h, w:2 * w] = anatomy
    whole_head[d:2 * d, :h // 2, :] = 3000.0  # and a bright structure outside the shown grid
    embedded = to_display(whole_head, default_affine(whole_head.shape), grid)
    assert np.array_equal(embedded, alone)


def test_display_normalisation_turns_lps_to_ras_and_resamples():
    grid = DisplayGrid((4, 8, 8), (1.0, 1.0, 1.0))
    v = np.zeros((4, 16, 16), np.float32)
    v[:, 0:2, :] = 1.0  # first rows of H = the lowest i, which runs to the LEFT in an LPS file
    affine = default_affine((4, 16, 16), (0.5, 0.5, 1.0))
    affine[:2] *= -1
    out = to_display(v, affine, grid)
    assert out.shape == (4, 8, 8) and out.dtype == np.uint8
    assert out[:, -1, :].mean() > 200 and out[:, 0, :].mean() < 50


def test_resampling_to_the_display_spacing_keeps_distances_and_the_centre_in_place():
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in (32, 128, 128)], indexing="ij")
    blobs = [(4, 64, 64), (27, 64, 64), (16, 40, 10), (16, 40, 117)]  # 23 voxels apart in z, 107 along W, at 0.62 mm
    v = sum(np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) / 4.5) for z, y, x in blobs).astype(np.float32)
    v[:8, :16, :16] = 2.0  # sets the white level, so that the points' peaks are not clipped
    out = to_display(v, default_affine(v.shape, (0.62,) * 3), DisplayGrid((16, 64, 64), (1.24,) * 3)).astype(float)

    def peaks(profile):
        index, half = np.arange(len(profile)), len(profile) // 2
        return [(profile[part] * index[part]).sum() / profile[part].sum() for part in (slice(0, half), slice(half, None))]

    (z0, z1), (w0, w1) = peaks(out[:, 32, 32]), peaks(out[8, 20, :])
    assert (z1 - z0) * 1.24 == pytest.approx(23 * 0.62, abs=0.05) and (z0 + z1) / 2 == pytest.approx(7.5, abs=0.01)
    assert (w1 - w0) * 1.24 == pytest.approx(107 * 0.62, abs=0.05) and (w0 + w1) / 2 == pytest.approx(31.5, abs=0.01)


def test_constant_volume_is_refused_with_advice():
    with pytest.raises(InputError, match="constant"):
        to_display(np.ones((4, 8, 8), np.float32), default_affine((4, 8, 8)), DisplayGrid((4, 8, 8)))


def test_session_folder_must_be_new(tmp_path, sources):
    real, generated = sources
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "old.txt").write_text("x")
    with pytest.raises(OutputError, match="not an empty folder"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=4)


def test_too_few_volumes_is_an_input_error_naming_the_fix(tmp_path, sources):
    real, generated = sources
    with pytest.raises(InputError, match="ask for fewer cases"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=40)
    assert not (tmp_path / "s").exists()


def test_an_existing_empty_folder_is_filled_in_place(tmp_path, sources):
    real, generated = sources
    folder = tmp_path / "mount_point"
    folder.mkdir()
    inode = folder.stat().st_ino
    created = TuringSession.create(folder, real, generated, n_cases=6)
    assert folder.stat().st_ino == inode
    assert sorted(p.name for p in folder.iterdir()) == ["answer_key.json", "cases", "journal", "session.json"]
    assert len(list((folder / "cases").iterdir())) == created.n_cases


def test_a_nan_volume_is_named_and_leaves_the_folder_and_key_as_they_were(tmp_path, sources):
    real, generated = sources
    for path in sorted(real.glob("REAL_*.nii.gz")):
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
        data[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(data, image.affine), str(path))
    (tmp_path / "s").mkdir()
    (tmp_path / "private").mkdir()
    with pytest.raises(InputError, match=r"REAL_.*NaN"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=6, key_path=tmp_path / "private" / "key.json")
    assert list((tmp_path / "s").iterdir()) == [] and list((tmp_path / "private").iterdir()) == []


def test_a_real_folder_with_a_2d_or_damaged_first_file_is_an_input_error(tmp_path, sources):
    real, generated = sources
    first = sorted(p for p in real.iterdir() if "label" not in p.name)[0]
    first.write_bytes(b"not gzip")
    with pytest.raises(InputError, match="cannot read volume"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=4)
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(first))
    with pytest.raises(InputError, match="a single 3D volume"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=4)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_4d_file_anywhere_in_the_folder_is_refused_whatever_the_draw_before_anything_is_made(tmp_path, sources, seed):
    real, generated = sources
    last = sorted(p for p in real.iterdir() if "label" not in p.name)[-1]
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), str(last))
    with pytest.raises(InputError, match=f"a single 3D volume is needed; remove it from .*{real.name} or replace it"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=4, seed=seed)
    assert not list(tmp_path.glob("*s*partial*")) and not (tmp_path / "s").exists()


@pytest.mark.parametrize("setting, message", [({"raters": "alice"}, "list of ids"), ({"n_cases": 6.5}, "whole number"),
                                              ({"seed": 1.5}, "whole number"), ({"time_limit": "soon"}, "seconds")])
def test_settings_of_the_wrong_kind_are_named_instead_of_silently_converted(tmp_path, sources, setting, message):
    real, generated = sources
    with pytest.raises(InputError, match=message):
        TuringSession.create(tmp_path / "s", real, generated, **{"n_cases": 6, **setting})
    assert not (tmp_path / "s").exists()


def test_key_can_be_written_outside_the_shared_folder(tmp_path, sources):
    real, generated = sources
    (tmp_path / "private").mkdir()
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=6, key_path=tmp_path / "private" / "key.json")
    assert created.key_path.is_file() and not (tmp_path / "s" / "answer_key.json").exists()


def test_model_source_generates_only_the_drawn_seeds(tmp_path, sources, tiny_generator):
    real, _ = sources
    created = TuringSession.create(tmp_path / "s", real, model=tiny_generator, seeds=range(100, 110), n_cases=6, seed=2)
    key, truth = read_key(created.key_path)
    seeds = [c["source"]["seed"] for c in key["cases"] if c["truth"] == "fake"]
    assert len(seeds) == 3 and all(100 <= s < 110 for s in seeds)
    session = json.loads((created.folder / "session.json").read_text())
    assert session["grid"]["shape_dhw"] == list(tiny_generator.arch.output_shape)


def test_volumes_smaller_than_the_display_grid_are_named_in_a_warning_and_their_coverage_kept(tmp_path, caplog):
    real, generated = make_sources(tmp_path)
    first = sorted(real.glob("*.nii*"))[0]
    image = nib.load(str(first))
    half = image.shape[0] // 2
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:half], image.affine, image.header), str(first))
    with caplog.at_level("WARNING"):
        created = TuringSession.create(tmp_path / "s", real, generated, n_cases=20, seed=1)
    key = json.loads(created.key_path.read_text())
    coverage = {Path(c["source"].get("path", "")).name: c["grid_coverage"] for c in key["cases"]}
    assert coverage[first.name] == pytest.approx(0.5, abs=0.02)
    assert all(v > 0.99 for name, v in coverage.items() if name != first.name)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("1 case volume(s) fill less than 90% of the display grid")
    assert f"{first.name} 5" in warnings[0]


def test_the_same_folder_as_real_and_generated_or_a_constant_volume_is_refused_by_name(tmp_path):
    real, generated = make_sources(tmp_path)
    with pytest.raises(InputError, match="the real and the generated volumes are the same folder"):
        TuringSession.create(tmp_path / "s", real, real, n_cases=10)
    constant = sorted(generated.glob("*.nii*"))[0]
    save_volume(constant, np.zeros((8, 16, 16), np.float32), default_affine((8, 16, 16)))
    with pytest.raises(InputError, match=f"{constant.name}: a case volume is constant"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=20, seed=1)


def test_a_mistyped_real_folder_is_named_before_the_generated_volumes_are_read(tmp_path):
    _, generated = make_sources(tmp_path)
    constant = sorted(generated.glob("*.nii*"))[0]  # reading the generated volumes would stop at this one
    save_volume(constant, np.zeros((8, 16, 16), np.float32), default_affine((8, 16, 16)))
    with pytest.raises(InputError, match=f"volume folder {re.escape(str(tmp_path / 'rael'))} does not exist"):
        TuringSession.create(tmp_path / "s", tmp_path / "rael", generated, n_cases=10)


def test_a_key_path_inside_the_session_folder_is_refused(tmp_path):
    real, generated = make_sources(tmp_path)
    with pytest.raises(OutputError, match="is inside the session folder .* which the raters share"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=10, key_path=tmp_path / "s" / "key.json")
    assert not (tmp_path / "s").exists()


def test_skull_stripped_scans_named_masked_are_images_and_label_maps_are_skipped_as_evaluate_does(tmp_path):
    from CircleOfWillisGANLib.turing.sources import folder_source

    names = ("sub1_TOF_masked.nii.gz", "sub2_TOF_masked.nii.gz", "sub1_label.nii.gz", "seg_sub2.nii.gz")
    for k, name in enumerate(names):
        save_volume(tmp_path / name, np.random.default_rng(k).random((8, 16, 16)), default_affine((8, 16, 16)))
    source = folder_source(tmp_path)
    assert sorted(Path(i.provenance["path"]).name for i in source.items) == ["sub1_TOF_masked.nii.gz",
                                                                            "sub2_TOF_masked.nii.gz"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_volume_twice_in_a_source_folder_is_refused_naming_both_files_whatever_the_seed(tmp_path, seed):
    real, generated = make_sources(tmp_path, n_real=4, n_generated=6)
    nib.save(nib.load(str(real / "REAL_subject02.nii.gz")), str(real / "REAL_subject02.nii"))  # decompressed beside it
    with pytest.raises(InputError, match=r"REAL_subject02.nii and REAL_subject02.nii.gz in .*real_src hold the same "
                                         "volume: remove one of them so that no case is shown twice"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=6, seed=seed)
    (real / "REAL_subject02.nii").unlink()
    copy = generated / "FAKE_copy.nii.gz"
    copy.write_bytes((generated / "FAKE_seed0003.nii.gz").read_bytes())
    with pytest.raises(InputError, match="FAKE_copy.nii.gz and FAKE_seed0003.nii.gz in .*generated_src hold the same"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=6, seed=seed)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("seed", range(4))
def test_a_constant_or_nan_real_volume_stops_create_whatever_the_seed(tmp_path, seed):
    real, generated = make_sources(tmp_path)
    flat = real / "REAL_subject05.nii.gz"
    image = nib.load(str(flat))
    nib.save(nib.Nifti1Image(np.full(image.shape, 40, np.int16), image.affine), str(flat))
    with pytest.raises(InputError, match=r"REAL_subject05.nii.gz: a case volume is constant: it has no vessels to "
                                         r"show; remove it from .*real_src or replace it"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=6, seed=seed)
    data = np.asarray(image.dataobj, dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(flat))
    with pytest.raises(InputError, match=r"REAL_subject05.nii.gz contains NaN"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=6, seed=seed)
    assert not (tmp_path / "s").exists()


def test_too_few_volumes_for_the_largest_draw_is_refused_whatever_the_seed(tmp_path):
    real, generated = make_sources(tmp_path, n_real=5, n_generated=5)
    for seed in range(8):  # randomised 10 cases draw 4 to 6 real ones: 5 of each kind fits only some draws
        with pytest.raises(InputError, match="the session needs up to 6 (real|generated) volumes but"):
            TuringSession.create(tmp_path / f"s{seed}", real, generated, n_cases=10, real_fraction="randomised",
                                 seed=seed)
    with pytest.raises(InputError, match="the session needs up to 6 generated volumes but only 5 are available"):
        plan_cases(SessionConfig(n_cases=10, real_fraction=None), 6, 5)


def test_one_seed_for_two_generated_sources_draws_unrelated_patterns_and_rater_orders(tmp_path, tiny_generator):
    real, generated_a = make_sources(tmp_path / "a")
    _, generated_b = make_sources(tmp_path / "b", seed=99)  # another model's volumes
    a = TuringSession.create(tmp_path / "study_a", real, generated_a, n_cases=12, seed=2024)
    b = TuringSession.create(tmp_path / "study_b", real, generated_b, n_cases=12, seed=2024)
    truth_a, truth_b = read_key(a.key_path)[1], read_key(b.key_path)[1]
    assert truth_a != truth_b, "a reader of both sessions would find the real cases where they were before"
    orders = [TuringSession.open(s.folder, "reader01") for s in (a, b)]
    assert orders[0].order != orders[1].order
    for s in orders:
        s.close()
    by_psi = [read_key(TuringSession.create(tmp_path / f"psi{psi}", real, model=tiny_generator, seeds=range(1, 13),
                                            psi=psi, n_cases=8, seed=2024).key_path)[1] for psi in (1.0, 0.7)]
    assert by_psi[0] != by_psi[1]


def test_sessions_made_before_orders_differed_between_sessions_keep_each_raters_order(tmp_path, sources):
    from CircleOfWillisGANLib.turing.rater import rater_order

    real, generated = sources
    created = TuringSession.create(tmp_path / "s", real, generated, n_cases=12, seed=1)
    path = created.folder / "session.json"
    description = json.loads(path.read_text())
    assert description["order_per_session"] is True
    del description["order_per_session"]  # as an earlier version wrote it
    path.write_text(json.dumps(description))
    s = TuringSession.open(created.folder, "reader01")
    assert s.order == rater_order("reader01", description["cases"])
    s.close()


@pytest.mark.parametrize("model_only", [{"seeds": [1, 2, 3]}, {"psi": 0.5}, {"device": "cuda"}])
def test_model_settings_given_with_a_generated_folder_are_refused_not_ignored(sources, tmp_path, model_only):
    real, generated = sources
    with pytest.raises(InputError, match=f"{next(iter(model_only))} only apply to generating from a model"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=8, **model_only)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("raters, message", [(["r1", "R1"], "rater ids 'r1' and 'R1' differ only in case"),
                                             (["r1", "r1"], "rater id 'r1' is given twice")])
def test_rater_ids_equal_ignoring_case_are_refused_as_they_would_share_a_journal_file(tmp_path, sources, raters, message):
    real, generated = sources
    with pytest.raises(InputError, match=message):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=6, raters=raters)
    created = TuringSession.create(tmp_path / "open", real, generated, n_cases=6)  # open to any id
    TuringSession.open(created.folder, "r1").close()
    with pytest.raises(InputError, match="rater id 'R1' differs only in case from rater 'r1', who has a journal"):
        TuringSession.open(created.folder, "R1")


@pytest.mark.parametrize("seed", range(4))
def test_a_real_volume_constant_where_the_display_grid_shows_it_stops_create_whatever_the_seed(tmp_path, seed):
    real, generated = make_sources(tmp_path)
    v = np.full((8, 64, 64), 100, np.int16)
    v[:, :8, :] = 900  # varies only in a border that the centred 8 x 16 x 16 display grid crops away
    nib.save(nib.Nifti1Image(v.transpose(1, 2, 0), default_affine(v.shape, (0.31, 0.31, 0.62))), str(real / "REAL_edge.nii.gz"))
    with pytest.raises(InputError, match=r"REAL_edge.nii.gz in .*real_src: a case volume is constant where it is shown"):
        TuringSession.create(tmp_path / "s", real, generated, n_cases=4, seed=seed)
    assert not (tmp_path / "s").exists()
