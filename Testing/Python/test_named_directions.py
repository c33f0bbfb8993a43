"""Named directions: the variant classifier, boundaries in W, storage, reload and named sliders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from CircleOfWillisGANLib.checkpoint import save_checkpoint
from CircleOfWillisGANLib.directions import directions_for
from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.generator import build_generator, load_generator
from CircleOfWillisGANLib.named_directions import (fit_boundaries, measure_edits, measure_edits_around, named,
                                                   orthogonalise, sample_calls, store_named_directions)
from CircleOfWillisGANLib.phantoms import PhantomConfig, generate_phantom
from CircleOfWillisGANLib.variant_classifier import (LEFT_RIGHT_AXIS, MIRRORED, VARIANT_KEYS, balanced_accuracy,
                                                     evaluate_classifier,
                                                     fit_classifier, load_classifier, load_labelled_folder,
                                                     targets_from_labels, targets_from_phantom)
from benchmark_scripts import load_benchmark


def test_targets_from_a_label_map_follow_the_topcow_vectors():
    case = generate_phantom((5, 0), PhantomConfig(force=("complete",)))
    targets = targets_from_labels(case.labels, (0.62,) * 3)
    assert targets == {"pcom_left": 1, "pcom_right": 1, "fetal_pca_left": 0, "fetal_pca_right": 0,
                       "a1_left": 1, "a1_right": 1, "acom": 1}


def test_a_phantoms_recorded_variants_give_the_targets_its_label_map_shows():
    case = generate_phantom((5, 1), PhantomConfig(force=("p1_absent_left",)))
    targets = targets_from_phantom(case.variants.as_dict())
    assert targets["fetal_pca_left"] == 1 and targets["pcom_left"] == 1
    assert targets == targets_from_labels(case.labels, (0.62,) * 3)


def sided_vessels(n: int, seed: int):
    """(n, 8, 16, 16) volumes with a bright vessel on the subject's left, right, both or neither, and their targets."""
    rng = np.random.default_rng(seed)
    volumes = rng.uniform(0.0, 0.1, (n, 8, 16, 16)).astype(np.float32)
    volumes[:, 4, 8, 2:14] = 0.8  # a midline vessel in every case
    targets = []
    for i in range(n):
        left, right = (int(b) for b in rng.integers(0, 2, 2))
        volumes[i, 3:5, 3, 4:12] += 0.8 * left  # low H is the subject's left in RAS
        volumes[i, 3:5, 12, 4:12] += 0.8 * right
        targets.append({key: 1 for key in VARIANT_KEYS} | {"pcom_left": left, "pcom_right": right})
    return volumes, targets


@pytest.fixture(scope="module")
def classifier():
    volumes, targets = sided_vessels(48, seed=0)
    return fit_classifier(volumes, targets, epochs=40, batch=8)


def test_the_classifier_calls_sided_vessels_in_unseen_volumes_and_round_trips_through_a_file(classifier, tmp_path):
    volumes, targets = sided_vessels(40, seed=1)
    accuracy = evaluate_classifier(classifier, volumes, targets)
    assert set(accuracy) == set(VARIANT_KEYS)
    assert accuracy["pcom_left"] >= 0.9 and accuracy["pcom_right"] >= 0.9  # mirroring swapped the sides' labels right
    again = load_classifier(classifier.save(tmp_path / "c.safetensors"))
    assert again.shape == (8, 16, 16) and again.keys == VARIANT_KEYS
    np.testing.assert_allclose(again.probabilities(volumes), classifier.probabilities(volumes), atol=1e-6)


def test_a_variant_seen_fewer_than_ten_times_each_way_among_held_out_cases_is_unmeasured(classifier):
    volumes, targets = sided_vessels(40, seed=1)
    few = ([i for i, t in enumerate(targets) if t["pcom_left"]][:3]
           + [i for i, t in enumerate(targets) if not t["pcom_left"]][:3])
    accuracy = evaluate_classifier(classifier, volumes[few], [targets[i] for i in few])
    assert accuracy["pcom_left"] is None  # three cases of each: any threshold is passed or failed by luck
    assert evaluate_classifier(classifier, volumes, targets)["pcom_left"] is not None


def test_the_classifier_refuses_volumes_of_another_grid(classifier):
    with pytest.raises(InputError, match="grid it was trained on"):
        classifier.predict(np.zeros((2, 16, 32, 32), np.float32))


def test_the_classifier_refuses_volumes_with_nans(classifier):
    volumes, targets = sided_vessels(4, seed=2)
    volumes[1, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        classifier.predict(volumes)
    with pytest.raises(InputError, match="NaN"):
        fit_classifier(volumes, targets, epochs=1)


def test_a_file_that_is_not_a_classifier_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="train it again"):
        load_classifier(path)


def test_a_missing_folder_or_a_damaged_phantom_record_is_named_with_the_fix(tmp_path):
    import json

    from CircleOfWillisGANLib.phantoms.writer import write_phantom_set

    with pytest.raises(InputError, match="labelled folder .*absent does not exist"):
        load_labelled_folder(tmp_path / "absent", (8, 32, 32), (2.5,) * 3)
    (tmp_path / "release" / "imagesTr").mkdir(parents=True)  # TopCoW's release images without their labels
    (tmp_path / "release" / "imagesTr" / "topcow_mr_001_0000.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="NAME_image and NAME_label in one folder, or TopCoW's release folder "
                                         "\\(imagesTr/ beside cow_seg_labelsTr/\\)"):
        load_labelled_folder(tmp_path / "release" / "imagesTr", (8, 32, 32), (2.5,) * 3)
    folder = tmp_path / "phantoms"
    folder.mkdir()
    write_phantom_set(folder, 2, seed=0, config=PhantomConfig(shape=(8, 32, 32), spacing_mm=(2.5, 2.5, 2.5)))
    assert len(load_labelled_folder(folder, (8, 32, 32), (2.5,) * 3)[1]) == 2
    record = json.loads((folder / "phantom_00001.json").read_text())
    del record["variants"]["fetal_pca_left"]
    (folder / "phantom_00001.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match=r"phantom record .*phantom_00001.json is damaged \(KeyError"):
        load_labelled_folder(folder, (8, 32, 32), (2.5,) * 3)
    (folder / "phantom_00001.json").write_text("{cut")
    with pytest.raises(InputError, match=r"is damaged \(JSONDecodeError.*delete it to use the label map"):
        load_labelled_folder(folder, (8, 32, 32), (2.5,) * 3)
    for params in ([], None):
        (folder / "phantom_00001.json").write_text(json.dumps({"variants": {}, "params": params}))
        with pytest.raises(InputError, match=r"phantom_00001.json is damaged \(TypeError: its \"params\" is "
                                             + type(params).__name__ + r", not an object\): write it again"):
            load_labelled_folder(folder, (8, 32, 32), (2.5,) * 3)
    (folder / "phantom_00001.json").write_text(json.dumps({"params": []}))  # no variants: the label map decides
    assert load_labelled_folder(folder, (8, 32, 32), (2.5,) * 3).sources == ["record", "labels"]
    (folder / "phantom_00001_label.nii.gz").unlink()
    with pytest.raises(InputError, match="phantom_00001_image.nii.gz has neither a phantom JSON nor a label map"):
        load_labelled_folder(folder, (8, 32, 32), (2.5,) * 3)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _nan_in_one_artery(path: Path) -> None:
    import nibabel as nib

    image = nib.load(str(path))
    labels = np.asarray(image.dataobj).astype(np.float32)
    nib.save(nib.Nifti1Image(np.where(labels == 1, np.nan, labels), image.affine), str(path))


@pytest.mark.parametrize("damage, message", [
    (_truncate, r"truncated or damaged \(.*\): copy or export the file again"),
    (_nan_in_one_artery, "contains NaN or infinite values: copy or export it again"),
])
def test_a_truncated_or_nan_label_map_is_refused_not_read_with_its_missing_voxels_as_background(labelled_pairs,
                                                                                                 damage, message):
    label_file = labelled_pairs / "phantom_00001_label.nii.gz"
    damage(label_file)
    with pytest.raises(InputError, match=f"cannot read label map '{label_file}': {message}"):
        load_labelled_folder(labelled_pairs, (8, 32, 32), (2.5,) * 3)


@pytest.fixture
def labelled_pairs(tmp_path):
    """A folder of two phantoms as TopCoW-style image/label pairs (no JSON), on an (8, 32, 32) grid of 2.5 mm."""
    from CircleOfWillisGANLib.phantoms.writer import write_phantom_set

    write_phantom_set(tmp_path, 2, seed=0, config=PhantomConfig(shape=(8, 32, 32), spacing_mm=(2.5, 2.5, 2.5)))
    for record in tmp_path.glob("*.json"):
        record.unlink()
    return tmp_path


@pytest.mark.parametrize("made, message", [
    (lambda image, labels: image, "is a grey image, not a label map .*: pass the TopCoW label map, not the image"),
    (lambda image, labels: (labels > 0).astype(np.uint8),
     "holds only ids 0 and 1, so it is a binary vessel mask, not a TopCoW multi-class label map"),
    (lambda image, labels: np.where(np.isin(labels, (4, 6)), 0, labels).astype(np.uint8),
     r"holds no ICA \(TopCoW ids 4 and 6; .*not a TopCoW multi-class label map"),
])
def test_a_label_file_that_is_not_a_topcow_label_map_is_named_not_read_as_absent_variants(labelled_pairs, made,
                                                                                          message):
    import nibabel as nib

    assert load_labelled_folder(labelled_pairs, (8, 32, 32), (2.5,) * 3).sources == ["labels"] * 2
    label_file = labelled_pairs / "phantom_00001_label.nii.gz"
    labels = nib.load(str(label_file))
    image = np.asarray(nib.load(str(labelled_pairs / "phantom_00001_image.nii.gz")).dataobj)
    nib.save(nib.Nifti1Image(made(image, np.asarray(labels.dataobj)), labels.affine), str(label_file))
    with pytest.raises(InputError, match=f"label map {label_file} {message}"):
        load_labelled_folder(labelled_pairs, (8, 32, 32), (2.5,) * 3)


def test_a_phantom_whose_grid_cuts_its_circle_and_has_no_label_map_is_named_with_its_record(tmp_path):
    import json

    from CircleOfWillisGANLib.phantoms.writer import write_phantom_set

    write_phantom_set(tmp_path, 1, seed=0, config=PhantomConfig(shape=(8, 32, 32), spacing_mm=(2.5, 2.5, 2.5)))
    record = json.loads((tmp_path / "phantom_00000.json").read_text())
    record["params"]["circle_in_view"] = False
    (tmp_path / "phantom_00000.json").write_text(json.dumps(record))
    assert load_labelled_folder(tmp_path, (8, 32, 32), (2.5,) * 3).sources == ["labels"]
    (tmp_path / "phantom_00000_label.nii.gz").unlink()
    with pytest.raises(InputError, match=r"phantom_00000_image.nii.gz: its phantom record phantom_00000.json is not used "
                                         r"because the grid cuts part of the circle off \(params.circle_in_view is "
                                         r"false\): add the label map phantom_00000_label.nii.gz .*or leave the case out"):
        load_labelled_folder(tmp_path, (8, 32, 32), (2.5,) * 3)


@pytest.mark.parametrize("n", ["0", "-3"])
def test_the_projection_benchmark_refuses_a_case_count_below_one_before_the_model_loads(tmp_path, n):
    with pytest.raises(InputError, match=f"--n {n}: use 1 or more held-out phantoms"):
        load_benchmark("projection_quality").main(["--model", str(tmp_path / "absent.safetensors"), "--n", n])


def test_the_projection_benchmark_takes_no_variant_truth_from_a_phantom_whose_grid_cuts_its_circle():
    variant_truth = load_benchmark("projection_quality").variant_truth
    cut, whole = (generate_phantom((5, i), PhantomConfig(shape=(16, 64, 64))) for i in (4, 0))
    assert cut.params["circle_in_view"] is False and whole.params["circle_in_view"] is True
    assert variant_truth(cut) is None
    assert variant_truth(whole) == targets_from_phantom(whole.variants.as_dict())


def test_mirroring_swaps_left_and_right_along_the_left_right_axis():
    labels = generate_phantom((3, 0), PhantomConfig(shape=(16, 32, 32), spacing_mm=(2.48,) * 3)).labels
    axis = labels.ndim + LEFT_RIGHT_AXIS
    right_ica, left_ica = (np.argwhere(labels == value)[:, axis].mean() for value in (4, 6))  # TopCoW R-ICA, L-ICA
    assert right_ica > left_ica  # RAS: the subject's right at higher index
    swapped = {key: key.replace("left", "@").replace("right", "left").replace("@", "right") for key in VARIANT_KEYS}
    assert [VARIANT_KEYS[i] for i in MIRRORED] == [swapped[key] for key in VARIANT_KEYS]


def test_a_boundary_separates_w_along_the_direction_that_decides_the_variant():
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.normal(size=(400, 8)).astype(np.float32))
    calls = np.stack([(w[:, 0] > 0.3).numpy(), (w[:, 1] - w[:, 0] > 0).numpy()], 1).astype(int)
    fit = fit_boundaries(w, calls, ["pcom_left", "acom"])
    assert fit.keys == ["pcom_left", "acom"] and min(fit.accuracy.values()) > 0.8
    pcom, acom = fit.normals
    assert float(pcom[0]) > 0.5 and float(acom[1]) > 0.5  # each adds its variant
    assert abs(float(pcom[1] - pcom[0])) < 0.15  # moving towards a Pcom keeps acom's rule w1 - w0 > 0 nearly unchanged


def test_a_boundary_does_not_lean_on_a_dimension_along_which_w_hardly_varies():
    rng = np.random.default_rng(1)
    decisive = rng.normal(size=400)
    calls = (decisive + 0.3 * rng.normal(size=400) > 0).astype(int)[:, None]
    quiet_echo = 0.01 * (calls[:, 0] - 0.5) + 0.002 * rng.normal(size=400)  # separates the calls, barely varies
    w = torch.from_numpy(np.stack([decisive, quiet_echo, rng.normal(size=400)], 1).astype(np.float32))
    (normal,) = fit_boundaries(w, calls, ["acom"]).normals
    assert float(normal[0]) > 0.9 and abs(float(normal[1])) < 0.3


def test_a_variant_seen_on_one_side_only_gets_no_direction_and_a_reason():
    w = torch.randn(50, 4)
    calls = np.stack([np.ones(50), (w[:, 0] > 0).numpy()], 1).astype(int)
    fit = fit_boundaries(w, calls, ["a1_left", "acom"])
    assert fit.keys == ["acom"] and "a1_left" in fit.skipped and "samples" in fit.skipped["a1_left"]


def test_a_boundary_is_judged_on_samples_it_was_not_fitted_to():
    rng = np.random.default_rng(0)
    w = torch.tensor(rng.normal(size=(60, 256)))  # fewer samples than dimensions: any calls separate perfectly
    w[:, 0] *= 10  # the Pcom's calls follow a direction of wide spread, the Acom's none
    calls = np.stack([(w[:, 0] > 0).numpy(), rng.integers(0, 2, 60)], 1).astype(int)
    fit = fit_boundaries(w, calls, ["pcom_left", "acom"])
    assert fit.keys == ["pcom_left"] and "calls unseen samples with a balanced accuracy of" in fit.skipped["acom"]
    rare = np.zeros((60, 1), int)
    rare[[1, 2, 3, 4, 6, 7], 0] = 1  # six samples, none of them a 5th one: both classes are still held out
    w[:, 0] = torch.where(torch.from_numpy(rare[:, 0]) == 1, 30.0, -abs(w[:, 0]))
    fit = fit_boundaries(w, rare, ["fetal_pca_left"])
    assert fit.accuracy["fetal_pca_left"] == 1.0  # measured on unseen samples of both classes, not taken unmeasured
    w = torch.tensor(rng.normal(size=(600, 16)))
    fit = fit_boundaries(w, (w[:, :1] > 0).numpy().astype(int), ["pcom_left"])
    assert fit.keys == ["pcom_left"] and fit.accuracy["pcom_left"] > 0.9


def test_a_variant_the_classifier_calls_near_chance_gets_no_direction_and_a_reason():
    w = torch.randn(200, 4)
    calls = np.stack([(w[:, 0] > 0).numpy(), (w[:, 1] > 0).numpy()], 1).astype(int)
    fit = fit_boundaries(w, calls, ["pcom_left", "acom"], classifier_accuracy={"pcom_left": 1.0, "acom": 0.51})
    assert fit.keys == ["pcom_left"] and "held-out balanced accuracy of 0.51" in fit.skipped["acom"]
    with pytest.raises(InputError, match="no variant can be named: pcom_left: .*0.60.*; acom: .*0.51"):
        fit_boundaries(w, calls, ["pcom_left", "acom"], classifier_accuracy={"pcom_left": 0.6, "acom": 0.51})


def test_name_directions_refuses_a_classifier_trained_on_another_grid(classifier, tmp_path, capsys):
    from cowgan.main import main

    model = tmp_path / "tiny.safetensors"
    save_checkpoint(model, build_generator("tiny", seed=0, device="cpu").checkpoint)
    out = tmp_path / "named.safetensors"
    code = main(["name-directions", "--model", str(model), "--classifier", str(classifier.save(tmp_path / "c.safetensors")),
                 "--out", str(out), "--samples", "20"])
    assert code == 2 and "trained on volumes of shape (8, 16, 16) but the model makes (16, 32, 32)" in capsys.readouterr().err
    assert not out.exists()
    before = model.read_bytes()
    code = main(["name-directions", "--model", str(model), "--classifier", str(tmp_path / "c.safetensors"),
                 "--out", str(model), "--samples", "20", "--overwrite"])
    assert code == 2 and "is the input model: write the named copy to another file" in capsys.readouterr().err
    assert model.read_bytes() == before


def _no_variant_can_be_named(*args, **kwargs):
    raise InputError("no variant can be named: pcom_left: only 0 samples with and 20 without it")


def test_a_failure_after_training_the_classifier_says_where_it_is_kept_and_how_to_go_on(tmp_path, capsys,
                                                                                      monkeypatch):
    import CircleOfWillisGANLib.named_directions as named_directions
    import CircleOfWillisGANLib.variant_classifier as variant_classifier
    from cowgan.main import main

    model = tmp_path / "tiny.safetensors"
    save_checkpoint(model, build_generator("tiny", seed=0, device="cpu").checkpoint)
    assert main(["phantoms", "--n", "8", "--out", str(tmp_path / "ph"), "--shape", "16", "32", "32",
                 "--spacing", "1.24"]) == 0  # a grid that shows the ICAs: a label map without them is refused
    out = tmp_path / "named.safetensors"
    argv = ["name-directions", "--model", str(model), "--labelled", str(tmp_path / "ph"), "--out", str(out),
            "--samples", "20", "--classifier-epochs", "1"]
    assert main(argv) == 2  # two held-out cases out of eight cannot measure any call: refused before training
    assert "show no variant present 10 times and absent 10 times" in capsys.readouterr().err
    kept = tmp_path / "named_variant_classifier.safetensors"
    assert not kept.exists()
    monkeypatch.setattr(variant_classifier, "measurable", lambda targets, key: True)  # as if hundreds were labelled
    monkeypatch.setattr(variant_classifier, "evaluate_classifier",
                        lambda classifier, volumes, targets: {key: 1.0 for key in classifier.keys})
    monkeypatch.setattr(named_directions, "fit_boundaries", _no_variant_can_be_named)  # a failure after training
    assert main(argv) == 2
    assert f"the variant classifier trained for it is kept in {kept}: reuse it with --classifier" in capsys.readouterr().err
    assert kept.is_file() and not out.exists()
    assert main(argv) == 2 and "reuse it with --classifier" in capsys.readouterr().err  # not trained again silently


def test_each_orthogonalised_normal_is_a_unit_vector_orthogonal_to_the_other_boundaries():
    raw = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    normals = orthogonalise(raw)
    np.testing.assert_allclose(normals.norm(dim=1).numpy(), [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose([float(normals[0] @ raw[1]), float(normals[1] @ raw[0])], [0.0, 0.0], atol=1e-6)


def test_a_boundary_is_measured_against_the_span_of_the_others_even_when_two_of_them_coincide():
    from CircleOfWillisGANLib.named_directions import _residuals

    twins = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(_residuals(twins).norm(dim=1).numpy(), [0.0, 0.0, 1.0], atol=1e-12)
    rng = np.random.default_rng(0)
    free, twin = torch.tensor(rng.normal(size=16)), torch.tensor(rng.normal(size=16))
    rows = torch.stack([free, twin, twin]) / torch.stack([free, twin, twin]).norm(dim=1, keepdim=True)
    expected = free / free.norm() - (free / free.norm() @ rows[1]) * rows[1]
    np.testing.assert_allclose(_residuals(rows)[0].numpy(), expected.numpy(), atol=1e-12)


def named_generator():
    gen = build_generator("tiny", seed=0, device="cpu")
    w = gen.mapping(gen.z_from_seeds(list(range(200))))
    calls = np.stack([(w[:, 0] > w[:, 0].median()).numpy(), (w[:, 1] > w[:, 1].median()).numpy()], 1).astype(int)
    store_named_directions(gen, fit_boundaries(w, calls, ["pcom_left", "fetal_pca_right"]), {"samples": 200})
    return gen


class BrightnessCalls:
    """A stand-in classifier with known rules: Left Pcom = bright volume, Right Pcom = brighter upper half, Acom =
    a coin flip derived from the voxels (so its calls are noise, as its recorded held-out accuracy says)."""

    keys = ("pcom_left", "pcom_right", "acom")
    info = {"held_out_balanced_accuracy": {"pcom_left": 1.0, "pcom_right": 1.0, "acom": 0.5}}

    def __init__(self, thresholds=(0.0, 0.0)):
        self.thresholds = thresholds

    def scores(self, volumes):
        half = volumes.shape[1] // 2
        return volumes.mean((1, 2, 3)), volumes[:, half:].mean((1, 2, 3)) - volumes[:, :half].mean((1, 2, 3))

    def predict(self, volumes):
        bright, upper = self.scores(volumes)
        coin = (volumes.sum((1, 2, 3)) * 1e4).astype(np.int64) % 2
        return np.stack([bright > self.thresholds[0], upper > self.thresholds[1], coin], 1).astype(np.int64)


@pytest.fixture(scope="module")
def brightness_named():
    """A tiny model with Left and Right Pcom directions fitted to BrightnessCalls, and those calls."""
    gen = build_generator("tiny", seed=0, device="cpu")
    calls = BrightnessCalls()
    calls.thresholds = tuple(float(np.median(s)) for s in calls.scores(gen.generate(seeds=list(range(200)))))
    w, labels = sample_calls(gen, calls, 200)
    store_named_directions(gen, fit_boundaries(w, labels, ["pcom_left", "pcom_right"]), {"samples": 200})
    return gen, calls


def test_moving_a_named_direction_flips_its_call_and_pools_only_reliably_called_others(brightness_named):
    gen, calls = brightness_named
    reports = measure_edits(gen, calls, directions_for(gen), samples=40, amount=3.0)
    assert [r.label for r in reports] == ["Left Pcom", "Right Pcom"]
    for report, other in zip(reports, ["pcom_right", "pcom_left"]):
        assert report.samples == 40 and report.flipped >= 0.8
        assert set(report.kept_by_variant) == {other, "acom"}
        assert report.others_kept == report.kept_by_variant[other]  # the coin-flip Acom is left out of the pool
        assert report.at_chance == ["acom"]


def test_named_sliders_are_measured_around_given_w_plus_and_noise_as_around_seeds(brightness_named):
    gen, calls = brightness_named
    seeds = list(range(500, 530))
    ws = gen.broadcast_w(gen.mapping(gen.z_from_seeds(seeds)))
    around_seeds = measure_edits(gen, calls, directions_for(gen), samples=30, seed=500)
    assert measure_edits_around(gen, calls, directions_for(gen), ws, gen.noise(seeds)) == around_seeds
    ws[:, 1:] += 0.3 * torch.randn(ws[:, 1:].shape, generator=torch.Generator().manual_seed(0))  # w+ as projections have
    around_projections = measure_edits_around(gen, calls, directions_for(gen), ws, gen.noise(list(range(30))))
    assert around_projections != around_seeds
    assert all(r.samples == 30 and r.flipped >= 0.8 for r in around_projections)


def test_the_bundled_classifier_calls_held_out_phantoms_and_the_demo_models_pcom_sliders_flip_its_calls():
    from CircleOfWillisGANLib.resources import demo_model_path

    classifier = load_classifier(demo_model_path().with_name("demo_variant_classifier.safetensors"))
    config = PhantomConfig(shape=(16, 64, 64), spacing_mm=(1.24, 1.24, 1.24))
    cases = [generate_phantom((9001, i), config) for i in range(24)]  # a set seed the classifier was not trained on
    truth = np.array([[targets_from_phantom(c.variants.as_dict())[k] for k in classifier.keys] for c in cases])
    calls = classifier.predict(np.stack([c.image for c in cases]))
    reliable = [i for i, k in enumerate(classifier.keys) if k != "acom"]  # the Acom is not callable at 1.24 mm
    assert (calls[:, reliable] == truth[:, reliable]).mean() >= 0.95
    assert 0 < truth[:, 0].sum() < len(cases)  # both calls of the Left Pcom occur
    gen = load_generator("demo", device="cpu")
    reports = measure_edits(gen, classifier, directions_for(gen), samples=20, amount=3.0)
    assert [r.label for r in reports] == ["Left Pcom", "Right Pcom"]
    for report in reports:
        assert report.flipped >= 0.8 and report.others_kept >= 0.8
        assert min(report.kept_by_variant[k] for k in ("fetal_pca_left", "fetal_pca_right", "a1_left", "a1_right")) >= 0.9


def test_named_directions_are_stored_in_the_model_and_reloaded(tmp_path):
    gen = named_generator()
    path = tmp_path / "named.safetensors"
    save_checkpoint(path, gen.checkpoint)
    reloaded = directions_for(load_generator(path, device="cpu"))
    assert [d.label for d in named(reloaded)] == ["Left Pcom", "Right fetal PCA"]
    assert len(reloaded) == len(named(reloaded)) + 8  # after the SeFa and PCA directions


def test_the_panel_shows_named_directions_as_named_sliders(tmp_path):
    pytest.importorskip("PySide6.QtUiTools")
    from PySide6.QtWidgets import QApplication

    from CircleOfWillisGANLib.explorer.window import panel_ui_path
    from CircleOfWillisGANLib.panel_controller import PanelController
    from CircleOfWillisGANLib.qt_pyside6 import load_panel_pyside6, pyside6_qt
    from CircleOfWillisGANLib.panel_engine import PanelEngine

    app = QApplication.instance() or QApplication([])
    root, ui = load_panel_pyside6(str(panel_ui_path()))
    controller = PanelController(ui, pyside6_qt())
    try:
        controller.set_engine(PanelEngine(named_generator()))
        assert controller.wait_idle(app=app)
        labels = controller.direction_names
        assert labels[-2:] == ["Left Pcom", "Right fetal PCA"] and len(controller.direction_sliders) == len(labels)
    finally:
        controller.close()
        root.deleteLater()


def test_labelled_images_stored_mirrored_or_finer_reach_the_model_grid_as_the_same_anatomy(tmp_path, caplog):
    import shutil

    import nibabel as nib

    from CircleOfWillisGANLib.phantoms.writer import write_phantom_set

    ras, las, fine = tmp_path / "ras", tmp_path / "las", tmp_path / "fine"
    for folder in (ras, las, fine):
        folder.mkdir()
    write_phantom_set(ras, 2, seed=3, config=PhantomConfig(shape=(8, 32, 32), spacing_mm=(2.5, 2.5, 2.5)))
    write_phantom_set(fine, 2, seed=3, config=PhantomConfig(shape=(16, 64, 64), spacing_mm=(1.25, 1.25, 1.25)))
    for image in sorted(ras.glob("*_image.nii.gz")):  # the same voxels stored right-to-left (LAS, as FSL writes)
        stored = nib.load(str(image))
        affine = stored.affine.copy()
        affine[:3, 3] += affine[:3, 0] * (stored.shape[0] - 1)
        affine[:3, 0] *= -1
        nib.save(nib.Nifti1Image(np.asarray(stored.dataobj)[::-1], affine), str(las / image.name))
        shutil.copy(ras / image.name.replace("_image.nii.gz", ".json"), las)
    grid = ((8, 32, 32), (2.5,) * 3)
    reference, truth, _, sources = load_labelled_folder(ras, *grid)
    mirrored_storage, mirrored_truth, _, _ = load_labelled_folder(las, *grid)
    np.testing.assert_allclose(mirrored_storage, reference, atol=1e-5)
    assert mirrored_truth == truth
    pairs = tmp_path / "pairs"  # TopCoW-style: image and label map, no phantom JSON
    pairs.mkdir()
    for path in list(ras.glob("*_image.nii.gz")) + list(ras.glob("*_label.nii.gz")):
        shutil.copy(path, pairs)
    paired, paired_truth, _, paired_sources = load_labelled_folder(pairs, *grid)
    np.testing.assert_allclose(paired, reference, atol=1e-6)
    same = ("pcom_left", "pcom_right", "a1_left", "a1_right")  # fetal PCA: 2.5 mm voxels do not show a thin P1
    assert [{k: t[k] for k in same} for t in paired_truth] == [{k: t[k] for k in same} for t in truth]
    assert (sources, paired_sources) == (["record"] * 2, ["labels"] * 2)
    assert "2 label maps have voxels coarser than 0.67 mm (phantom_00000_label.nii.gz, phantom_00001_label.nii.gz), " \
           "too coarse to show a P1 under 1 mm wide" in caplog.records[-1].getMessage()
    finer, finer_truth, _, _ = load_labelled_folder(fine, *grid)
    assert finer.shape == reference.shape and finer_truth == truth
    assert np.corrcoef(finer.ravel(), reference.ravel())[0, 1] > 0.8  # the same phantoms drawn at twice the resolution
    with caplog.at_level("WARNING"):
        load_labelled_folder(ras, (8, 64, 64), (2.5,) * 3)
    assert "2 of 2 labelled images fill less than 90% of the model's grid" in caplog.records[-1].getMessage()


def test_variants_whose_calls_say_nothing_new_or_were_never_tested_both_ways_get_no_direction():
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.normal(size=(400, 16)))
    left = (w[:, 0] > 0).numpy().astype(int)
    calls = np.stack([left, left, (w[:, 1] > 0).numpy().astype(int)], axis=1)  # right Pcom called exactly as left
    fit = fit_boundaries(w, calls, ["pcom_left", "pcom_right", "acom"])
    assert fit.keys[-1] == "acom" and len(fit.keys) == 2
    dropped = next(k for k in ("pcom_left", "pcom_right") if k not in fit.keys)
    assert "lies along the other variants'" in fit.skipped[dropped]
    with pytest.raises(InputError, match="pcom_left: the classifier's held-out cases show it present, or absent, too "
                                         "rarely to measure how well it is called; acom: the classifier calls it with "
                                         "a held-out balanced accuracy of nan"):
        fit_boundaries(w, calls[:, [0, 2]], ["pcom_left", "acom"], classifier_accuracy={"pcom_left": None,
                                                                                      "acom": float("nan")})
    assert balanced_accuracy([1, 1, 1], [1, 1, 0]) is None and balanced_accuracy([1, 0], [1, 1]) == 0.5


def test_named_sliders_keep_the_unit_of_untruncated_w_and_moves_must_be_positive(brightness_named):
    gen, calls = brightness_named
    untruncated, _ = sample_calls(gen, calls, 16)
    sampled_w, labels = sample_calls(gen, calls, 16, psi=0.5)
    assert torch.equal(sampled_w, untruncated)  # w as the mapping makes it: its SD is every slider's unit
    assert not np.array_equal(labels, sample_calls(gen, calls, 16)[1])  # while the calls are of truncated volumes
    for amount in (-3.0, 0.0, float("nan")):
        with pytest.raises(InputError, match="the move must be a positive number of standard deviations"):
            measure_edits(gen, calls, directions_for(gen), samples=2, amount=amount)


def test_boundaries_take_numpy_w_and_refuse_mismatched_or_non_finite_inputs():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(200, 8))
    calls = (w[:, :1] > 0).astype(int)
    assert fit_boundaries(w, calls, ["pcom_left"]).keys == ["pcom_left"]
    with pytest.raises(InputError, match=r"must be \(N, latent\) and \(N, 2 or more\)"):
        fit_boundaries(w, calls, ["pcom_left", "acom"])
    with pytest.raises(InputError, match=r"must be \(N, latent\)"):
        fit_boundaries(w[:50], calls, ["pcom_left"])
    w[3, 2] = np.nan
    with pytest.raises(InputError, match="w contains NaN"):
        fit_boundaries(w, calls, ["pcom_left"])


def test_the_classifier_refuses_bad_training_inputs_in_one_line():
    targets = [targets_from_phantom(generate_phantom((1, i), PhantomConfig(shape=(8, 32, 32))).variants.as_dict())
               for i in range(4)]
    volumes = np.random.default_rng(0).random((4, 8, 16, 16)).astype(np.float32)
    for kwargs, message in (({"epochs": 0}, "epochs must be a whole number of at least 1"),
                            ({"volumes": volumes * 255}, r"scaled to \[0, 1\]"),
                            ({"volumes": volumes[:, :4]}, "at least 8 voxels per axis"),
                            ({"targets": [{"pcom_left": 1}] * 4}, "a target set lacks")):
        with pytest.raises(InputError, match=message):
            fit_classifier(**{"volumes": volumes, "targets": targets, "epochs": 1, **kwargs})


def test_a_sample_count_no_run_could_finish_is_refused_before_the_model_loads(tmp_path, capsys):
    from cowgan.main import main

    out = tmp_path / "named.safetensors"
    assert main(["name-directions", "--model", "demo", "--classifier", str(tmp_path / "c.safetensors"), "--out", str(out),
                 "--samples", "99999999999"]) == 2
    assert "--samples 99999999999 cannot fit boundaries: use from 20 to 1,000,000" in capsys.readouterr().err


def test_the_input_classifier_is_never_the_output_even_with_overwrite(classifier, tmp_path, capsys):
    from cowgan.main import main

    model = tmp_path / "tiny.safetensors"
    save_checkpoint(model, build_generator("tiny", seed=0, device="cpu").checkpoint)
    kept = classifier.save(tmp_path / "c.safetensors")
    before = kept.read_bytes()
    code = main(["name-directions", "--model", str(model), "--classifier", str(kept), "--out", str(kept),
                 "--samples", "20", "--overwrite"])
    assert code == 2 and "is the --classifier file: write the named model to another file" in capsys.readouterr().err
    assert kept.read_bytes() == before



def test_topcows_release_layout_is_read_around_the_labelled_circle_leaving_its_cta_cases_out(tmp_path, caplog):
    import shutil

    import nibabel as nib

    from CircleOfWillisGANLib.phantoms.writer import write_phantom_set
    from CircleOfWillisGANLib.preprocess import scan_on_model_grid

    crops, release = tmp_path / "crops", tmp_path / "TopCoW2024_Data_Release"
    crops.mkdir()
    (release / "imagesTr").mkdir(parents=True)
    (release / "cow_seg_labelsTr").mkdir()
    write_phantom_set(crops, 3, seed=4, config=PhantomConfig(shape=(16, 64, 64), spacing_mm=(1.25, 1.25, 1.25)))
    for index, record in enumerate(sorted(crops.glob("*.json"))):
        record.unlink()
        stem = record.name[:-len(".json")]
        for kind, name in (("image", f"imagesTr/topcow_mr_{index:03d}_0000.nii.gz"),
                           ("label", f"cow_seg_labelsTr/topcow_mr_{index:03d}.nii.gz")):
            stored = nib.load(str(crops / f"{stem}_{kind}.nii.gz"))
            pad = ((40, 0), (0, 30), (12, 0))  # the rest of the head, mostly on one side of the circle
            affine = stored.affine.copy()
            affine[:3, 3] -= affine[:3, :3] @ np.array([before for before, _ in pad], float)
            whole_head = np.pad(np.asarray(stored.dataobj), pad)
            nib.save(nib.Nifti1Image(whole_head.astype(stored.get_data_dtype()), affine), str(release / name))
    shutil.copy(release / "imagesTr" / "topcow_mr_000_0000.nii.gz", release / "imagesTr" / "topcow_ct_000_0000.nii.gz")
    grid = ((8, 32, 32), (2.5,) * 3)
    cropped = load_labelled_folder(crops, *grid)
    around_circle = []
    for label in sorted(crops.glob("*_label.nii.gz")):
        stored = nib.load(str(label))
        labelled = np.argwhere(np.asarray(stored.dataobj) > 0)
        centre = nib.affines.apply_affine(stored.affine, (labelled.min(axis=0) + labelled.max(axis=0)) / 2)
        around_circle.append(scan_on_model_grid(crops / label.name.replace("_label", "_image"), *grid, warn=False,
                                                centre_ras=centre).volume)
    with caplog.at_level("WARNING"):
        for folder in (release, release / "imagesTr"):
            cases = load_labelled_folder(folder, *grid)
            assert cases.names == ["topcow_mr_000", "topcow_mr_001", "topcow_mr_002"]
            assert cases.targets == cropped.targets and cases.sources == ["labels"] * 3
            for whole_head, crop in zip(cases.volumes, around_circle):  # the same anatomy; only the fill beyond the
                assert np.corrcoef(whole_head.ravel(), crop.ravel())[0, 1] > 0.95  # crop's edge differs
    head_centre = scan_on_model_grid(release / "imagesTr" / "topcow_mr_000_0000.nii.gz", *grid, warn=False).volume
    assert np.corrcoef(head_centre.ravel(), cases.volumes[0].ravel())[0, 1] < 0.3  # the head's centre misses it
    assert "1 CTA cases of the TopCoW release left out (topcow_ct_000_0000.nii.gz)" in caplog.text
    gzipped = release / "cow_seg_labelsTr" / "topcow_mr_002.nii.gz"  # a .nii label map beside a .nii.gz image
    nib.save(nib.load(str(gzipped)), str(gzipped.with_name("topcow_mr_002.nii")))
    gzipped.unlink()
    assert load_labelled_folder(release, *grid).targets == cropped.targets
    (release / "cow_seg_labelsTr" / "topcow_mr_001.nii.gz").unlink()
    with pytest.raises(InputError, match="topcow_mr_001_0000.nii.gz has no label map .*topcow_mr_001.nii.gz: add it"):
        load_labelled_folder(release, *grid)


def _tilted_las(degrees: float) -> np.ndarray:
    """A 1 mm affine stored right-to-left (as FSL writes), the head tilted forward and turned by `degrees`."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    tilt, turn = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ tilt @ np.diag([-1.0, 1.0, 1.0])
    affine[:3, 3] = (30.0, -40.0, -20.0)
    return affine


@pytest.mark.parametrize("orientation_codes", [1, 0])  # 0: a header with no orientation, placed as ITK places it
def test_a_release_scan_is_centred_on_its_labelled_arteries_whatever_its_storage(tmp_path, orientation_codes):
    import nibabel as nib

    release = tmp_path / "release"
    (release / "imagesTr").mkdir(parents=True)
    (release / "labelsTr").mkdir()
    labels = np.zeros((60, 70, 50), np.uint8)  # stored (i, j, k): far from the middle of the "head"
    labels[42:48, 12:18, 35:41] = 4
    labels[42:48, 18:24, 35:41] = 6
    image = np.where(labels > 0, 0.9, 0.1).astype(np.float32)
    for data, name in ((image, "imagesTr/topcow_mr_007_0000.nii.gz"), (labels, "labelsTr/topcow_mr_007.nii.gz")):
        stored = nib.Nifti1Image(data, None)
        stored.set_sform(_tilted_las(20.0), code=orientation_codes)
        stored.set_qform(_tilted_las(20.0), code=orientation_codes)
        nib.save(stored, str(release / name))
    volume = load_labelled_folder(release, (8, 16, 16), (2.0,) * 3).volumes[0]
    bright = np.argwhere(volume > 0.5 * volume.max())
    np.testing.assert_allclose(bright.mean(axis=0), (3.5, 7.5, 7.5), atol=1.0)


def _release_pair(release: Path, label_affine: np.ndarray) -> None:
    """One TopCoW release case (image 0.5 mm, RAS) whose label map's header is `label_affine`."""
    import nibabel as nib

    (release / "imagesTr").mkdir(parents=True)
    (release / "cow_seg_labelsTr").mkdir()
    labels = np.zeros((80, 80, 60), np.uint8)
    labels[50:56, 20:26, 40:46] = 4
    labels[50:56, 26:32, 40:46] = 6
    image = np.where(labels > 0, 0.9, 0.1).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([0.5, 0.5, 0.5, 1.0])), str(release / "imagesTr/topcow_mr_001_0000.nii.gz"))
    nib.save(nib.Nifti1Image(labels, label_affine), str(release / "cow_seg_labelsTr/topcow_mr_001.nii.gz"))


def test_a_release_label_map_with_a_sheared_header_is_named_not_a_traceback(tmp_path):
    sheared = np.diag([0.5, 0.5, 0.5, 1.0])
    sheared[0, 1] = 0.2
    _release_pair(tmp_path / "release", sheared)
    with pytest.raises(InputError, match=r"^cannot place label map .*topcow_mr_001\.nii\.gz': its voxel axes are not "
                                         r"perpendicular .*: fix its header$"):
        load_labelled_folder(tmp_path / "release", (8, 16, 16), (2.0,) * 3)


def test_a_release_label_map_placed_outside_its_image_names_both_files(tmp_path):
    moved = np.diag([0.5, 0.5, 0.5, 1.0])
    moved[:3, 3] = (150.0, 0.0, 0.0)
    _release_pair(tmp_path / "release", moved)
    with pytest.raises(InputError, match=r"^the arteries labelled in topcow_mr_001\.nii\.gz lie outside its image "
                                         r"topcow_mr_001_0000\.nii\.gz \(at RAS \(176\.2, 12\.8, 21\.2\) mm\)"):
        load_labelled_folder(tmp_path / "release", (8, 16, 16), (2.0,) * 3)
    inside = np.diag([0.5, 0.5, 0.5, 1.0])
    inside[:3, 3] = (5.0, 0.0, 0.0)  # a few mm apart, still inside: read, centred where the label map says
    (tmp_path / "release2").mkdir()
    _release_pair(tmp_path / "release2" / "r", inside)
    assert load_labelled_folder(tmp_path / "release2" / "r", (8, 16, 16), (2.0,) * 3).volumes.shape == (1, 8, 16, 16)


def test_a_release_given_twice_once_by_its_imagestr_is_refused_as_one_folder(tmp_path, capsys):
    from cowgan.main import main

    release = tmp_path / "TopCoW2024_Data_Release"
    for name in ("imagesTr", "cow_seg_labelsTr"):
        (release / name).mkdir(parents=True)
    model = tmp_path / "tiny.safetensors"
    save_checkpoint(model, build_generator("tiny", seed=0, device="cpu").checkpoint)
    assert main(["name-directions", "--model", str(model), "--labelled", str(release), str(release / "imagesTr"),
                 "--out", str(tmp_path / "named.safetensors")]) == 2
    assert "--labelled names one folder twice" in capsys.readouterr().err


@pytest.mark.parametrize("dimensions", [4, 2])
def test_a_label_map_that_is_not_3d_is_named_as_such(labelled_pairs, dimensions):
    import nibabel as nib

    label_file = labelled_pairs / "phantom_00001_label.nii.gz"
    stored = nib.load(str(label_file))
    values = np.asarray(stored.dataobj)
    values = values[..., None] if dimensions == 4 else values[:, :, values.shape[2] // 2]
    nib.save(nib.Nifti1Image(values, stored.affine), str(label_file))
    with pytest.raises(InputError, match="a label map must be 3D, got shape"):
        load_labelled_folder(labelled_pairs, (8, 32, 32), (2.5,) * 3)
