"""`cowgan evaluate` end to end on small synthetic sets: outputs, determinism, baselines and clear refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cowgan.main import main
from evaluation_fixtures import noise_volume, tube_volume, write_set


def _digest(folder: Path) -> dict:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    write_set(root / "real", [tube_volume(i) for i in range(24)])
    write_set(root / "real_copy", [tube_volume(i) for i in range(24)])
    write_set(root / "noise", [noise_volume(100 + i) for i in range(24)])
    write_set(root / "train", [tube_volume(1000 + i) for i in range(6)])
    write_set(root / "copies", [tube_volume(1000 + i % 6) for i in range(24)])
    return root


def _evaluate(sets: Path, fake: str, out: str, *extra: str) -> dict:
    argv = ["--quiet", "evaluate", "--real", str(sets / "real"), "--fake", str(sets / fake), "--out", str(sets / out),
            "--no-cache", "--prd-runs", "2", "--diversity-volumes", "6", *extra]
    assert main(argv) == 0
    return json.loads((sets / out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def identical(sets) -> dict:
    return _evaluate(sets, "real_copy", "identical")


@pytest.fixture(scope="module")
def noise(sets) -> dict:
    return _evaluate(sets, "noise", "report_noise", "--train", str(sets / "train"))


def test_identical_sets_give_zero_distance_and_perfect_prd(identical):
    g = identical["feature_spaces"]["morphology"]["generated_vs_real"]
    assert g["frechet_distance"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert g["prd"]["auc"] > 0.99
    assert g["precision_recall"]["precision"] == 1.0 and g["density_coverage"]["coverage"] == 1.0


def test_noise_is_reported_far_from_real_data_compared_with_the_real_baseline(noise):
    s = noise["feature_spaces"]["morphology"]
    assert s["generated_vs_real"]["frechet_distance"]["value"] > 100 * s["real_vs_real"]["frechet_distance"]["value"]
    assert s["generated_vs_real"]["prd"]["auc"] < 0.05 < s["real_vs_real"]["prd"]["auc"]
    assert s["generated_vs_real"]["precision_recall"]["precision"] == 0.0


def test_report_is_one_self_contained_html_file_with_embedded_pictures(sets, noise):
    text = (sets / "report_noise" / "report.html").read_text()
    assert "data:image/png;base64," in text and "far from the real data" in text
    assert "src=\"http" not in text and "<script" not in text
    assert "PRD: 10 clusters, 2 runs, 1001 angles; the paper used 10 clusters, 10 runs, 1001 angles." in text
    prd = noise["feature_spaces"]["morphology"]["generated_vs_real"]["prd"]
    assert (prd["clusters"], prd["runs"], prd["angles"]) == (10, 2, 1001)


def test_metrics_say_why_medicalnet_and_fid_were_skipped(noise):
    assert "--medicalnet" in noise["skipped"]["medicalnet"]
    assert "pytorch-fid" in noise["skipped"]["fid2d"]


def test_memorisation_flags_copies_of_training_volumes(sets):
    m = _evaluate(sets, "copies", "report_copies", "--train", str(sets / "train"))["memorisation"]
    assert m["summary"]["near_copies"] == 24
    assert all(g["correlation"] > 0.99 for g in m["generated"])


def test_noise_is_not_flagged_as_memorised(noise):
    assert noise["memorisation"]["summary"]["near_copies"] == 0


def test_the_same_seed_gives_the_same_numbers(sets, noise):
    again = _evaluate(sets, "noise", "noise_again", "--train", str(sets / "train"))
    for key in ("feature_spaces", "morphology", "diversity", "memorisation"):
        assert again[key] == noise[key]


def test_inputs_are_never_modified(sets):
    before = {name: _digest(sets / name) for name in ("real", "noise", "train")}
    _evaluate(sets, "noise", "untouched", "--train", str(sets / "train"))
    assert {name: _digest(sets / name) for name in ("real", "noise", "train")} == before


def test_features_are_cached_by_file_hash(sets):
    argv = ["--quiet", "evaluate", "--real", str(sets / "real"), "--fake", str(sets / "real_copy"), "--out",
            str(sets / "cached"), "--cache", str(sets / "cache"), "--prd-runs", "1", "--no-baseline", "--diversity-volumes", "2",
            "--overwrite"]
    assert main(argv) == 0
    assert main(argv) == 0
    cache = json.loads((sets / "cached" / "metrics.json").read_text())["feature_cache"]
    assert cache == {"directory": str(sets / "cache"), "hits": 48, "misses": 0}
    assert len(list((sets / "cache").rglob("*.npy"))) == 24  # identical files share one entry


def test_a_cache_folder_that_cannot_be_written_slows_the_evaluation_but_does_not_stop_it(tmp_path, caplog):
    import numpy as np

    from CircleOfWillisGANLib.evaluation.cache import FeatureCache

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    cache = FeatureCache(blocker / "features")
    with caplog.at_level("WARNING"):
        first = cache.get_or_compute("morphology", "abc", lambda: np.arange(3.0))
        second = cache.get_or_compute("morphology", "def", lambda: np.ones(2))
    assert first.tolist() == [0.0, 1.0, 2.0] and second.tolist() == [1.0, 1.0] and cache.root is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "evaluating without it; pass --cache DIR for a writable folder" in warnings[0]


def test_volumes_on_another_grid_are_refused_unless_resampling_is_asked_for(sets, capsys):
    write_set(sets / "small", [noise_volume(i, shape=(16, 24, 24)) for i in range(24)])
    argv = ["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "small"), "--out", str(sets / "grid"), "--no-cache"]
    assert main(argv) == 2
    assert "--resample" in capsys.readouterr().err
    assert main(["--quiet"] + argv + ["--resample", "--prd-runs", "1", "--diversity-volumes", "2"]) == 0
    notes = json.loads((sets / "grid" / "metrics.json").read_text())["notes"]
    assert any("resampled" in n for n in notes)
    assert any("headers give a 15 x 15 x 10 mm field of view, the real volumes' 30 x 30 x 20 mm" in n for n in notes)


def test_an_existing_report_is_kept_unless_overwrite_and_real_may_not_be_the_generated_folder(sets, capsys):
    (sets / "mine").mkdir()
    (sets / "mine" / "report.html").write_text("an earlier model's report")
    argv = ["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--out", str(sets / "mine")]
    assert main(argv) == 2
    assert "report.html already exists" in capsys.readouterr().err
    assert (sets / "mine" / "report.html").read_text() == "an earlier model's report"
    assert main(["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "real"), "--out", str(sets / "x")]) == 2
    assert "--fake " + str(sets / "real") + " is the --real folder" in capsys.readouterr().err
    inside = sets / "real" / "report"
    assert main(["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--out", str(inside)]) == 2
    assert "is the --real folder or inside it: write the report to its own folder" in capsys.readouterr().err
    assert not inside.exists()


def test_the_training_folder_may_not_be_the_generated_folder(sets, capsys):
    out = sets / "train-is-fake"
    same = f"{sets}/real/../noise"  # another spelling of the --fake folder
    argv = ["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--train", same, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--train {same} is the --fake folder: every volume would match itself" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_folder_mixing_voxel_spacings_or_orientations_is_refused(tmp_path, capsys):
    from CircleOfWillisGANLib.volume_io import default_affine, save_volume

    for name, affine in (("lps", np.diag([-0.62, -0.62, 0.62, 1.0])), ("coarse", default_affine((32, 32, 32), (1.86,) * 3))):
        folder = tmp_path / name
        write_set(folder, [noise_volume(i, shape=(32, 32, 32)) for i in range(4)])
        save_volume(folder / "odd.nii.gz", noise_volume(9, shape=(32, 32, 32)), affine)
        fake = write_set(tmp_path / "fake", [noise_volume(i, shape=(32, 32, 32)) for i in range(4)])
        assert main(["evaluate", "--real", str(folder), "--fake", str(fake), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert "real folder" in err and "mixes grids" in err and "(e.g. odd.nii.gz)" in err


@pytest.mark.parametrize("flag, value", [("--n", "12"), ("--psi", "0.7")])
def test_model_options_without_a_model_are_refused_not_ignored(sets, capsys, flag, value):
    argv = ["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--out", str(sets / "x"), flag, value]
    assert main(argv) == 2
    assert f"{flag} only applies with --model: drop it or pass --model" in capsys.readouterr().err


def test_the_report_folder_may_not_be_an_input_folder(sets, capsys):
    assert main(["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--out", str(sets / "real")]) == 2
    assert "its own folder" in capsys.readouterr().err


def test_a_wrong_medicalnet_file_is_refused_in_one_line(sets, capsys):
    bogus = sets / "resnet_10_23dataset.pth"
    bogus.write_bytes(b"not a model")
    argv = ["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--out", str(sets / "md"),
            "--medicalnet", str(bogus), "--no-cache"]
    assert main(argv) == 2
    assert "is not MedicalNet's resnet_10_23dataset.pth" in capsys.readouterr().err
    argv[argv.index("--real") + 1] = str(sets / "not-read-yet")  # refused before any volume is read or generated
    assert main(argv) == 2
    assert "is not MedicalNet's resnet_10_23dataset.pth" in capsys.readouterr().err


def test_a_model_can_be_evaluated_directly(tmp_path, tiny_generator):
    from CircleOfWillisGANLib.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "tiny.safetensors", tiny_generator.checkpoint)
    write_set(tmp_path / "real", [tube_volume(i, shape=(16, 32, 32), tubes=2) for i in range(12)])
    argv = ["--quiet", "evaluate", "--real", str(tmp_path / "real"), "--model", str(tmp_path / "tiny.safetensors"),
            "--n", "12", "--out", str(tmp_path / "report"), "--no-cache", "--prd-runs", "1", "--device", "cpu"]
    assert main(argv) == 0
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert m["feature_spaces"]["morphology"]["generated_vs_real"]["n_generated"] == 12
    assert m["diversity"]["scales"] == 2 and 0.0 < m["diversity"]["generated"]["mean"] < 1.0  # 16 deep: 2 scales fit
    assert sorted(m["per_volume"]["generated"]) == [f"seed{s:04d}" for s in range(12)]


def test_a_model_on_another_grid_is_refused_before_any_volume_is_generated(tmp_path, tiny_generator, monkeypatch, capsys):
    from CircleOfWillisGANLib.checkpoint import save_checkpoint
    from CircleOfWillisGANLib.generator import CoWGenerator

    save_checkpoint(tmp_path / "tiny.safetensors", tiny_generator.checkpoint)  # 16 x 32 x 32 volumes
    write_set(tmp_path / "real", [tube_volume(i, shape=(16, 24, 24), tubes=2) for i in range(4)])
    generated = []
    generate = CoWGenerator.generate
    monkeypatch.setattr(CoWGenerator, "generate", lambda self, **kw: generated.append(kw["seeds"]) or generate(self, **kw))
    argv = ["evaluate", "--real", str(tmp_path / "real"), "--model", str(tmp_path / "tiny.safetensors"), "--n", "2",
            "--out", str(tmp_path / "report"), "--no-cache", "--prd-runs", "1", "--device", "cpu"]
    assert main(argv) == 2
    assert "generated volumes are 16x32x32 but real volumes are 16x24x24" in capsys.readouterr().err
    assert generated == []
    assert main(["--quiet"] + argv + ["--resample"]) == 0
    assert generated == [[0], [1]]
    notes = json.loads((tmp_path / "report" / "metrics.json").read_text())["notes"]
    assert [n for n in notes if "resampled" in n] == [
        "generated volumes were resampled trilinearly from 16x32x32 to 16x24x24 (D x H x W) over the same field of view "
        "to match the real grid, without smoothing, as `prepare` resamples real scans"]


def test_every_skipped_metric_is_listed_with_its_reason_where_the_command_prints_it(tmp_path, capsys):
    write_set(tmp_path / "real", [tube_volume(i, shape=(16, 32, 32), tubes=2) for i in range(6)])
    write_set(tmp_path / "fake", [tube_volume(100 + i, shape=(16, 32, 32), tubes=2) for i in range(6)])
    assert main(["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--out", str(tmp_path / "report"), "--no-cache", "--prd-runs", "1"]) == 0
    skipped = json.loads((tmp_path / "report" / "metrics.json").read_text())["skipped"]
    prd = "feature_spaces.morphology.generated_vs_real.prd"
    assert skipped[prd].startswith(f"{prd} skipped: PRD with 10 clusters needs at least 10 volumes per set (got 6)")
    assert "memorisation check skipped: pass --train DIR" in skipped["memorisation"]
    assert skipped[prd] in capsys.readouterr().out


def test_a_label_folder_that_matches_no_image_or_labels_for_a_model_are_refused(sets, tmp_path, capsys):
    (tmp_path / "labels").mkdir()
    write_set(tmp_path / "labels", [np.zeros((16, 24, 24), np.float32)], prefix="other")
    argv = ["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--out", str(tmp_path / "o"),
            "--no-cache", "--prd-runs", "1", "--diversity-volumes", "2", "--real-labels", str(tmp_path / "labels")]
    assert main(argv) == 2
    assert "no label map in " + str(tmp_path / "labels") + " matches the images (e.g. case_000.nii.gz needs" in \
        capsys.readouterr().err
    assert main(["evaluate", "--real", str(sets / "real"), "--model", "demo", "--fake-labels", str(tmp_path / "labels"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "--fake-labels goes with --fake" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_one_line_before_any_volume_is_read(sets, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = sets / "cuda-report"
    assert main(["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--out", str(out),
                 "--device", "cuda"]) == 2
    assert "device 'cuda' was asked for but PyTorch sees no CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_a_volume_without_a_usable_affine_is_one_line_naming_it(tmp_path, capsys):
    import nibabel as nib

    real = write_set(tmp_path / "real", [noise_volume(i, shape=(16, 16, 16)) for i in range(4)])
    fake = write_set(tmp_path / "fake", [noise_volume(10 + i, shape=(16, 16, 16)) for i in range(4)])
    image = nib.Nifti1Image(noise_volume(9, shape=(16, 16, 16)), None)
    image.set_sform(np.zeros((4, 4)), code=2)
    nib.save(image, str(real / "zero.nii.gz"))
    assert main(["evaluate", "--real", str(real), "--fake", str(fake), "--out", str(tmp_path / "o"), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "zero.nii.gz has an affine that is all zero" in err and "fix its header" in err and err.count("\n") == 1


@pytest.mark.parametrize("damage", [np.zeros(5), np.full(30, np.nan), np.zeros((2, 3))])
def test_a_cache_entry_of_the_wrong_shape_or_not_finite_is_recomputed_not_used(tmp_path, damage, caplog):
    from CircleOfWillisGANLib.evaluation.cache import FeatureCache
    from CircleOfWillisGANLib.evaluation.features import extract, morphology_extractor
    from CircleOfWillisGANLib.evaluation.morphology import MorphologyConfig
    from CircleOfWillisGANLib.evaluation.volumes import folder_set

    volumes = folder_set(str(write_set(tmp_path / "real", [tube_volume(i, shape=(16, 24, 24)) for i in range(2)])),
                         "real")
    extractor = morphology_extractor(volumes, MorphologyConfig())
    fresh = extract(volumes, [extractor], FeatureCache(tmp_path / "cache"), progress=False).matrix("morphology")
    for entry in (tmp_path / "cache").rglob("*.npy"):
        np.save(entry, damage)
    cache = FeatureCache(tmp_path / "cache")
    with caplog.at_level("WARNING"):
        again = extract(volumes, [extractor], cache, progress=False).matrix("morphology")
    np.testing.assert_array_equal(again, fresh)
    assert cache.misses == 2 and cache.hits == 0
    assert sum("is damaged: computing it again" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("extra, message", [
    (["--seed", "4294967290", "--n", "8"], "--seed 4294967290 with --n 8 runs past the largest seed 4294967295: "
                                           "use --seed 4294967288 or lower"),
    (["--seed", "4294967294"], "--seed 4294967294 with --n 4 runs past the largest seed"),  # --n: the 4 real volumes
    (["--n", "1000001"], "--n must be from 2 to 1,000,000, got 1000001"),
])
def test_seeds_past_the_largest_or_too_many_volumes_are_refused_before_any_is_generated(tmp_path, tiny_generator,
                                                                                        monkeypatch, capsys, extra,
                                                                                        message):
    from CircleOfWillisGANLib.checkpoint import save_checkpoint
    from CircleOfWillisGANLib.generator import CoWGenerator

    save_checkpoint(tmp_path / "tiny.safetensors", tiny_generator.checkpoint)
    write_set(tmp_path / "real", [tube_volume(i, shape=(16, 32, 32), tubes=2) for i in range(4)])
    monkeypatch.setattr(CoWGenerator, "generate", lambda self, **kw: pytest.fail("a volume was generated"))
    argv = ["evaluate", "--real", str(tmp_path / "real"), "--model", str(tmp_path / "tiny.safetensors"),
            "--out", str(tmp_path / "report"), "--no-cache", "--device", "cpu", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("folder, inside", [("real", ""), ("noise", "features")])
def test_the_cache_folder_may_not_be_an_input_folder_or_inside_one(sets, tmp_path, capsys, folder, inside):
    before = _digest(sets / folder)
    cache = sets / folder / inside if inside else sets / folder
    argv = ["evaluate", "--real", str(sets / "real"), "--fake", str(sets / "noise"), "--out", str(tmp_path / "report"),
            "--cache", str(cache)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--cache {cache} is the --{'real' if folder == 'real' else 'fake'} folder or inside it" in err
    assert len(err.strip().splitlines()) == 1
    assert _digest(sets / folder) == before and not (tmp_path / "report").exists()


def test_two_identical_real_files_are_refused_naming_both(sets, tmp_path, capsys):
    import shutil

    real = shutil.copytree(sets / "real", tmp_path / "real")
    first = sorted(real.iterdir())[0]
    shutil.copyfile(first, real / f"copy-{first.name}")
    argv = ["evaluate", "--real", str(real), "--fake", str(sets / "noise"), "--out", str(tmp_path / "report"), "--no-cache"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{first.name} and copy-{first.name} in {real} are the same file: remove one of them" in err
    assert err.count("\n") == 1 and not (tmp_path / "report").exists()


@pytest.mark.parametrize("folder, flag", [("real", "--real"), ("train", "--train")])
def test_a_label_map_named_like_an_image_or_a_blank_real_volume_is_refused_naming_it(sets, tmp_path, capsys, folder,
                                                                                   flag):
    import shutil

    import nibabel as nib

    given = shutil.copytree(sets / folder, tmp_path / folder)
    template = nib.load(str(sorted(given.iterdir())[0]))
    labels = np.zeros(template.shape, np.uint8)  # a TopCoW-style map, named as TopCoW's labelsTr names them
    labels[2:6, 4:12, 4:12], labels[2:6, 12:20, 4:12] = 4, 6
    nib.save(nib.Nifti1Image(labels, template.affine), str(given / "topcow_mr_001.nii.gz"))
    folders = {"--real": str(sets / "real"), "--fake": str(sets / "noise"), flag: str(given)}
    args = ["evaluate", *[item for pair in folders.items() for item in pair], "--out", str(tmp_path / "report"),
            "--no-cache", "--prd-runs", "2", "--diversity-volumes", "6"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{given / 'topcow_mr_001.nii.gz'} in the {folder if folder == 'real' else 'training'} folder is a label " \
           "map, not an image (3 whole-number values, 0 to 6): move it out" in err and err.count("\n") == 1
    (given / "topcow_mr_001.nii.gz").unlink()
    nib.save(nib.Nifti1Image(np.zeros(template.shape, np.float32), template.affine), str(given / "blank.nii.gz"))
    assert main(args) == 2
    assert "blank.nii.gz in the " in (err := capsys.readouterr().err) and "is constant (every voxel is 0)" in err
    assert not (tmp_path / "report").exists()
