"""Projection: the optimiser recovers volumes the model made, cowgan project writes its results, the panel uses them."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from CircleOfWillisGANLib.generator import build_generator
from CircleOfWillisGANLib.preprocess import scan_on_model_grid
from CircleOfWillisGANLib.projection import ProjectionConfig, project, reconstruction_metrics
from CircleOfWillisGANLib.projection_io import load_projection, write_projection_outputs
from CircleOfWillisGANLib.volume_io import default_affine, save_volume

FAST = ProjectionConfig(w_steps=15, wplus_steps=10, noise_steps=5, candidates=8, prior_samples=500)


@pytest.fixture(scope="module")
def generator():
    return build_generator("tiny", seed=0, device="cpu")


@pytest.fixture(scope="module")
def own_volume(generator):
    w = generator.mapping(generator.z_from_seeds([7]))
    return generator.synthesize(w, noise=generator.noise([0])).clamp(0, 1).numpy()[0]


@pytest.fixture(scope="module")
def result(generator, own_volume):
    return project(generator, own_volume, FAST)


def test_projection_lowers_the_loss_in_every_phase(result):
    for phase in ("w", "w+", "noise"):
        losses = [h["loss"] for h in result.history if h["phase"] == phase]
        assert len(losses) == {"w": 15, "w+": 10, "noise": 5}[phase]
        assert losses[-1] < losses[0]


def test_projection_recovers_a_volume_the_model_made(generator, own_volume, result):
    start = generator.synthesize(generator.w_avg[None].cpu(), noise=generator.noise([0])).clamp(0, 1).numpy()[0]
    assert result.metrics["correlation"] > 0.95
    assert result.metrics["correlation"] > reconstruction_metrics(own_volume, start)["correlation"]
    assert result.ws.shape == (generator.num_ws, generator.arch.latent_dim)


def test_the_report_says_how_much_the_reconstruction_leans_on_the_fitted_noise_and_how_far_w_plus_went(generator,
                                                                                                       own_volume, result):
    from CircleOfWillisGANLib.projection import _Prior

    m = result.metrics
    start = generator.synthesize(result.ws[None], noise=generator.noise([FAST.seed]), precision="fp32").clamp(0, 1)
    assert m["vessel_dice_with_start_noise"] == pytest.approx(reconstruction_metrics(own_volume, start.numpy()[0])["vessel_dice"])
    prior = _Prior(generator, FAST.prior_samples, FAST.seed)
    assert m["w_distance_max"] == pytest.approx(float(prior.block_distances(result.ws).max()), rel=1e-5)
    assert 0.5 < m["w_distance_max_of_samples"] == pytest.approx(float(prior.block_distances(prior.samples).max()))
    assert result.precision == "fp32"


def test_a_projection_beyond_every_sample_of_the_model_is_named_where_it_is_shown():
    from CircleOfWillisGANLib.projection import beyond_samples_note
    from CircleOfWillisGANLib.projection_io import ProjectedLatent, describe_projection

    inside = {"correlation": 0.9, "vessel_dice": 0.8, "w_distance_max": 2.0, "w_distance_max_of_samples": 3.5}
    assert beyond_samples_note(inside) is None and beyond_samples_note({}) is None
    beyond = dict(inside, w_distance_max=4.2)
    assert beyond_samples_note(beyond).startswith("its w+ lies beyond every sample of the model (block distance 4.20")
    text = describe_projection(ProjectedLatent(None, None, {"source": "/data/TOF.nii.gz", "metrics": beyond}))
    assert text.startswith("projection of TOF.nii.gz (correlation 0.90") and "sliders act less reliably" in text


def test_metrics_are_perfect_for_identical_volumes(own_volume):
    metrics = reconstruction_metrics(own_volume, own_volume)
    assert metrics["correlation"] == pytest.approx(1.0) and metrics["vessel_dice"] == 1.0 and metrics["mae"] == 0.0


def test_a_volume_off_the_model_grid_is_refused_with_the_fix(generator):
    from CircleOfWillisGANLib.errors import InputError

    with pytest.raises(InputError, match="bring it to the model's grid"):
        project(generator, np.zeros((8, 8, 8), np.float32), FAST)


def test_a_volume_that_is_not_normalised_or_not_an_array_is_refused_with_the_fix(generator, own_volume):
    from CircleOfWillisGANLib.errors import InputError

    with pytest.raises(InputError, match="min-max normalise it first"):
        project(generator, own_volume * 255, FAST)
    with pytest.raises(InputError, match="load_volume"):
        project(generator, "scan.nii.gz", FAST)


@pytest.mark.parametrize("setting", [{"lr": float("nan")}, {"vessel_weight": float("inf")},
                                     {"structure_weight": -1.0}, {"coarse_weight": float("nan")}, {"w_steps": 1.5}])
def test_projection_settings_that_would_give_nan_or_nonsense_are_refused(setting):
    from CircleOfWillisGANLib.errors import InputError

    with pytest.raises(InputError, match="must be a"):
        ProjectionConfig(**setting)


def test_saved_projection_reproduces_the_reconstruction(generator, result, tmp_path):
    affine = default_affine(generator.arch.output_shape)
    paths = write_projection_outputs(tmp_path, result, affine, generator, FAST, source="own", plot=True)
    assert {p.name for p in paths.values()} >= {"projection.safetensors", "reconstruction.nii.gz", "error.nii.gz",
                                                "target.nii.gz", "projection.json", "convergence.png"}
    latent = load_projection(tmp_path)
    again = generator.synthesize(latent.ws[None], noise=latent.noise, precision="fp32").clamp(0, 1).numpy()[0]
    np.testing.assert_allclose(again, result.reconstruction, atol=1e-5)
    assert latent.metadata["metrics"]["correlation"] == pytest.approx(result.metrics["correlation"])
    from CircleOfWillisGANLib.errors import InputError

    with pytest.raises(InputError, match="projection.json is not a projection's latent: pass the projection.safetensors"):
        load_projection(paths["report"])


def test_the_projections_mip_picture_carries_the_orientation_letters_as_generated_pictures_do(generator, result,
                                                                                                 tmp_path):
    from PIL import Image

    from CircleOfWillisGANLib.mip import mip_panel
    from CircleOfWillisGANLib.volume_io import spacing_of

    paths = write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, plot=False)
    sheet = np.asarray(Image.open(paths["mips"]))
    target = mip_panel(result.target, spacing_of(generator.affine), orientation_letters=True)
    assert np.array_equal(sheet[:target.shape[0], :target.shape[1]], target)  # the first tile, above its caption


def test_the_reported_final_loss_is_the_loss_of_the_returned_latent_not_of_the_step_before(generator, result, tmp_path):
    import dataclasses
    import json

    import torch

    from CircleOfWillisGANLib.projection import coarse_sigma_voxels, leaky_clamp, vessel_loss

    unregularised = dataclasses.replace(FAST, w_prior_weight=0.0, wplus_spread_weight=0.0, noise_prior_weight=0.0)
    fitted = project(generator, result.target, unregularised)
    again = generator.synthesize(fitted.ws[None], noise=fitted.noise, precision="fp32")[:, None]
    target = torch.from_numpy(result.target)[None, None]
    mask = (target >= result.metrics["vessel_threshold"]).float()
    sigma = coarse_sigma_voxels(generator.affine)
    expected = vessel_loss(leaky_clamp(again), target, mask, FAST.vessel_weight, FAST.structure_weight,
                           FAST.coarse_weight, sigma)["loss"]
    assert fitted.final_loss == pytest.approx(float(expected), rel=1e-4)
    assert fitted.final_loss != fitted.history[-1]["loss"]
    paths = write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, plot=False)
    report = json.loads(paths["report"].read_text())
    assert report["final_loss"] == pytest.approx(result.final_loss) and report["steps"] == FAST.total_steps


def test_a_scan_already_on_the_model_grid_reaches_it_unchanged(tmp_path):
    shape, spacing = (8, 16, 16), (2.0, 2.0, 2.0)
    volume = np.random.default_rng(0).random(shape).astype(np.float32)
    scan = save_volume(tmp_path / "scan.nii.gz", volume * 300 + 20, default_affine(shape, spacing))
    out, affine, coverage = scan_on_model_grid(scan, shape, spacing)
    assert coverage == 1.0
    np.testing.assert_allclose(out, (volume - volume.min()) / (volume.max() - volume.min()), atol=1e-5)
    np.testing.assert_allclose(affine, default_affine(shape, spacing), atol=1e-5)


def test_a_rejected_scan_keeps_the_fix_its_rejection_names(tmp_path):
    from CircleOfWillisGANLib.errors import InputError

    image = nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 8)).astype(np.float32), np.eye(4))
    image.set_sform(np.zeros((4, 4)), code=1)
    image.set_qform(None, code=0)
    nib.save(image, str(tmp_path / "zero_affine.nii.gz"))
    with pytest.raises(InputError, match=r"its affine is all zero.*: fix its header \(sform/qform\)") as caught:
        scan_on_model_grid(tmp_path / "zero_affine.nii.gz", (8, 16, 16), (2.0,) * 3)
    assert "pass the grey TOF-MRA image" not in str(caught.value)
    with pytest.raises(InputError, match=r"cannot use the template .*zero_affine.nii.gz: its affine is all zero.*: fix "
                                         r"its header") as caught:
        scan_on_model_grid(save_volume(tmp_path / "scan.nii.gz", np.random.default_rng(1).random((8, 16, 16)),
                                       default_affine((8, 16, 16), (2.0,) * 3)),
                           (8, 16, 16), (2.0,) * 3, template=tmp_path / "zero_affine.nii.gz")
    assert "pass a readable 3D grey volume" not in str(caught.value)
    with pytest.raises(InputError, match=r"constant \(every voxel is 0\): pass the grey TOF-MRA image"):
        scan_on_model_grid(save_volume(tmp_path / "flat.nii.gz", np.zeros((8, 16, 16), np.float32),
                                       default_affine((8, 16, 16), (2.0,) * 3)), (8, 16, 16), (2.0,) * 3)


@pytest.mark.parametrize("shape", [(0, 0, 0), (64, 64, 0)])
def test_a_scan_without_voxels_is_one_line_naming_its_shape(tmp_path, capfd, shape):
    from cowgan.main import main

    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(tmp_path / "empty.nii.gz"))
    assert main(["project", "--volume", str(tmp_path / "empty.nii.gz"), "--out", str(tmp_path / "out")]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and f"it holds no voxels (its shape is {shape}): pass the whole scan" in err, err
    assert not (tmp_path / "out").exists()


def test_a_scan_smaller_than_the_model_grid_is_measured_and_warned_about(tmp_path, caplog):
    from CircleOfWillisGANLib.preprocess import PrepareOptions, preprocess_file

    shape, spacing = (8, 16, 16), (2.0, 2.0, 2.0)
    rng = np.random.default_rng(1)
    whole = save_volume(tmp_path / "whole.nii.gz", rng.random(shape), default_affine(shape, spacing))
    crop = save_volume(tmp_path / "crop.nii.gz", rng.random((8, 16, 8)), default_affine((8, 16, 8), spacing))
    options = PrepareOptions(shape=shape, spacing=2.0)
    assert preprocess_file(whole, options)[1]["coverage"] == 1.0
    assert preprocess_file(crop, options)[1]["coverage"] == pytest.approx(0.5)
    with caplog.at_level("WARNING"):
        scan_on_model_grid(whole, shape, spacing)
        assert not caplog.records
        scan_on_model_grid(crop, shape, spacing)
    assert caplog.records[-1].getMessage() == (
        "crop.nii.gz fills only 50% of the 32 x 32 x 16 mm output grid; the rest is padded with its background intensity: "
        "pass the whole scan, not a tighter crop")


def test_padding_is_the_scans_background_not_one_dark_artefact_voxel(tmp_path):
    from CircleOfWillisGANLib.preprocess import PrepareOptions, preprocess_file

    shape, spacing = (8, 16, 16), (2.0, 2.0, 2.0)
    crop = np.random.default_rng(2).uniform(100.0, 200.0, (8, 16, 8))
    crop[4, 8, 4] = -5000.0  # one artefact voxel
    path = save_volume(tmp_path / "crop.nii.gz", crop, default_affine((8, 16, 8), spacing))
    volume, record = preprocess_file(path, PrepareOptions(shape=shape, spacing=2.0, normalisation="percentile"))
    assert record["coverage"] == pytest.approx(0.5)
    values, counts = np.unique(volume, return_counts=True)
    assert counts.max() / volume.size == pytest.approx(0.5, abs=0.02)  # the padding: one dark value ...
    assert values[counts.argmax()] < 0.02
    assert 0.3 < np.percentile(volume, 75) < 0.7  # ... and the scan keeps its contrast (padding at -5000: 0.99)


def _oblique_partial_scan(tmp_path):
    """A scan tilted 20 degrees about the left-right axis, at another spacing, covering only part of the model's view."""
    angle = np.deg2rad(20.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.7, 1.7, 1.3])
    affine[:3, 3] = [-6.0, 4.0, -3.0]
    volume = np.random.default_rng(3).random((12, 10, 9)).astype(np.float32) * 500.0
    return save_volume(tmp_path / "oblique.nii.gz", volume, affine), affine


def test_the_panel_and_cowgan_project_bring_an_oblique_partial_scan_to_the_grid_as_prepare_does(generator, tmp_path):
    from CircleOfWillisGANLib.checkpoint import save_checkpoint
    from CircleOfWillisGANLib.panel_engine import PanelEngine, PanelState
    from CircleOfWillisGANLib.preprocess import PrepareOptions, preprocess_file
    from CircleOfWillisGANLib.volume_io import load_volume, spacing_of
    from cowgan.main import main

    scan, scan_affine = _oblique_partial_scan(tmp_path)
    scan_ijk = nib.load(str(scan)).shape
    spacing = spacing_of(generator.affine)
    prepared, record = preprocess_file(scan, PrepareOptions(shape=generator.arch.output_shape, spacing=spacing[0]))
    model = tmp_path / "tiny.safetensors"
    save_checkpoint(model, generator.checkpoint)
    assert main(["project", "--model", str(model), "--volume", str(scan), "--out", str(tmp_path / "cli"),
                 "--steps", "1", "1", "1", "--device", "cpu"]) == 0
    engine = PanelEngine(generator)
    latent = engine.project_volume(str(scan), str(tmp_path / "panel"), config=FAST)
    for folder in ("cli", "panel"):
        target, affine = load_volume(tmp_path / folder / "target.nii.gz")
        np.testing.assert_allclose(target, prepared, atol=1e-6)
        np.testing.assert_allclose(affine, record["affine"], atol=1e-4)
        np.testing.assert_allclose(affine[:3, :3], np.diag(spacing), atol=1e-5)  # upright, as the model's volumes
        centre = affine @ np.append((np.array(prepared.shape[::-1]) - 1) / 2.0, 1.0)
        np.testing.assert_allclose(centre, scan_affine @ np.append((np.array(scan_ijk) - 1) / 2.0, 1.0), atol=1e-4)
    assert 0.0 < float(prepared.mean()) < 0.5  # the scan's background fills the part of the grid it does not cover
    state = PanelState(projection=latent)  # the panel shows and exports the patient's anatomy over the patient's scan
    rendered = engine.render(state)
    np.testing.assert_allclose(rendered.affine, record["affine"], atol=1e-4)
    exported = engine.export_volume(state, str(tmp_path / "export"))
    np.testing.assert_allclose(load_volume(exported["volume"])[1], record["affine"], atol=1e-4)
    assert not np.allclose(record["affine"], generator.affine, atol=1e-2)


def test_unreadable_scans_and_anisotropic_models_are_refused_with_the_fix(tmp_path):
    from CircleOfWillisGANLib.errors import InputError

    (tmp_path / "notes.txt").write_text("not a scan")
    with pytest.raises(InputError, match="not a NIfTI or NRRD file"):
        scan_on_model_grid(tmp_path / "notes.txt", (8, 16, 16), (2.0, 2.0, 2.0))
    scan = save_volume(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((8, 16, 16)), default_affine((8, 16, 16)))
    with pytest.raises(InputError, match="not isotropic"):
        scan_on_model_grid(scan, (8, 16, 16), (1.0, 2.0, 2.0))
    (tmp_path / "mask.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="cannot use .*unreadable"):
        scan_on_model_grid(tmp_path / "mask.nii.gz", (8, 16, 16), (2.0, 2.0, 2.0))
    (tmp_path / "cut.nii.gz").write_bytes(scan.read_bytes()[:-200])
    with pytest.raises(InputError, match=r"cannot use .*cut.nii.gz: truncated or damaged \(.*\): copy or export the file again"):
        scan_on_model_grid(tmp_path / "cut.nii.gz", (8, 16, 16), (2.0, 2.0, 2.0))
    regions = np.zeros((8, 16, 16), np.uint8)
    regions[:, :8, :8], regions[:, :8, 8:], regions[:4, 8:, :], regions[4:, 8:, :8] = 1, 2, 3, 4
    labels = save_volume(tmp_path / "labels.nii.gz", regions, default_affine((8, 16, 16)), np.uint8)
    with pytest.raises(InputError, match=r"a label map, not an image \(5 whole-number values, 0 to 4\): pass the grey"):
        scan_on_model_grid(labels, (8, 16, 16), (2.0, 2.0, 2.0))


def test_cowgan_project_writes_latent_reconstruction_error_map_and_quality(generator, own_volume, tmp_path):
    from CircleOfWillisGANLib.checkpoint import save_checkpoint
    from cowgan.main import main

    model = tmp_path / "tiny.safetensors"
    save_checkpoint(model, generator.checkpoint)
    scan = save_volume(tmp_path / "scan.nii.gz", own_volume * 400.0, generator.affine)
    out = tmp_path / "out"
    assert main(["project", "--model", str(model), "--volume", str(scan), "--out", str(out), "--steps", "4", "3", "2",
                 "--device", "cpu"]) == 0
    report = load_projection(out).metadata
    assert report["metrics"]["correlation"] > 0.9 and 0.0 <= report["metrics"]["vessel_dice"] <= 1.0
    assert (out / "error.nii.gz").is_file() and (out / "convergence.png").is_file()


def test_a_failed_write_leaves_no_part_of_a_projection_and_keeps_the_earlier_one(generator, result, tmp_path, monkeypatch):
    import CircleOfWillisGANLib.projection_io as projection_io

    earlier = write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, plot=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(path, result):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(projection_io, "convergence_plot", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, plot=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing new, no hidden leftovers
    assert sorted(p.name for p in earlier.values()) == sorted(before)


def test_a_projection_written_without_its_plot_over_an_earlier_one_leaves_no_file_of_the_earlier_run(generator,
                                                                                                        result, tmp_path):
    write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, plot=True)
    assert (tmp_path / "convergence.png").is_file()
    written = write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, plot=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written.values())
    assert not (tmp_path / "convergence.png").exists()  # the earlier run's curve and numbers


def test_cowgan_project_names_its_steps_option_when_the_steps_are_unusable(tmp_path, capsys):
    from cowgan.main import main

    scan = save_volume(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((8, 16, 16)), default_affine((8, 16, 16)))
    for steps in (["0", "0", "0"], ["-5", "10", "10"], ["100000001", "0", "0"]):
        assert main(["project", "--volume", str(scan), "--out", str(tmp_path / "out"), "--steps", *steps]) == 2
        assert f"--steps {' '.join(steps)}: give the w, w+ and noise phases' steps as whole numbers from 0 to " \
               "100,000" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def panel():
    """The real panel under PySide6 (offscreen), no model in yet: (app, ui, controller)."""
    pytest.importorskip("PySide6.QtUiTools")
    from PySide6.QtWidgets import QApplication

    from CircleOfWillisGANLib.explorer.window import panel_ui_path
    from CircleOfWillisGANLib.panel_controller import PanelController
    from CircleOfWillisGANLib.qt_pyside6 import load_panel_pyside6, pyside6_qt

    app = QApplication.instance() or QApplication([])
    root, ui = load_panel_pyside6(str(panel_ui_path()))
    controller = PanelController(ui, pyside6_qt())
    yield app, ui, controller
    controller.close()
    root.deleteLater()


def test_a_projection_with_damaged_noise_or_values_is_refused_where_it_is_loaded_not_at_every_render(
        panel, generator, result, tmp_path):
    import dataclasses

    from CircleOfWillisGANLib.errors import InputError
    from CircleOfWillisGANLib.panel_engine import PanelEngine
    from CircleOfWillisGANLib.projection_io import check_projection_fits, save_projection

    (tmp_path / "good").mkdir()
    good = write_projection_outputs(tmp_path / "good", result, generator.affine, generator, FAST, plot=False)["latent"]
    metadata = load_projection(good).metadata
    short = dataclasses.replace(result, noise=result.noise.flatten()[:10])
    save_projection(tmp_path / "short.safetensors", short, metadata)
    with pytest.raises(InputError, match=r"the projection's noise has shape \(10,\) but this model takes \(1, 1, 16, "
                                         r"32, 32\): the file was damaged or edited; project the volume again"):
        check_projection_fits(load_projection(tmp_path / "short.safetensors"), generator)
    ws = result.ws.clone()
    ws[0, 0] = float("nan")
    save_projection(tmp_path / "nan.safetensors", dataclasses.replace(result, ws=ws), metadata)
    with pytest.raises(InputError, match="nan.safetensors holds NaN or infinite values in its ws: run `cowgan project`"):
        load_projection(tmp_path / "nan.safetensors")
    app, ui, controller = panel
    controller.set_engine(PanelEngine(generator))
    controller.project_volume(str(good))
    assert controller.wait_idle(app=app) and controller.last_result.state.projection == str(good)
    for damaged in ("short", "nan"):
        controller.project_volume(str(tmp_path / f"{damaged}.safetensors"))
        assert controller.wait_idle(app=app) and controller.last_result.state.projection == str(good)
        assert "project" in controller.last_error


def test_the_panel_moves_its_sliders_around_a_loaded_projection(panel, generator, result, tmp_path):
    from CircleOfWillisGANLib.errors import InputError
    from CircleOfWillisGANLib.panel_engine import PanelEngine

    paths = write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, source="/data/patient 7.nii.gz",
                                     coverage=0.6, plot=False)
    app, ui, controller = panel
    controller.set_engine(PanelEngine(generator))
    controller.direction_sliders[0].setValue(25)  # moved before projecting: the fresh projection shows unmoved
    ui.styleMixingCheckBox.setChecked(True)
    controller.project_volume(str(paths["latent"]))  # a projection written before is shown, not projected again
    assert controller.wait_idle(app=app)
    shown = controller.last_result
    assert shown.state.projection == str(paths["latent"]) and not ui.seedSpinBox.isEnabled()
    assert not any(shown.state.directions) and not shown.state.mixing
    assert np.corrcoef(shown.volume.ravel(), result.reconstruction.ravel())[0, 1] > 0.999
    assert not ui.exportInterpolationButton.isEnabled()  # an interpolation runs between seeds
    with pytest.raises(InputError, match="not from a projection: press Clear projection"):
        controller.engine.export_interpolation(shown.state, str(tmp_path / "frames"))
    sidecar = controller.engine.sidecar(shown.state)
    assert "seed" not in sidecar and "psi" not in sidecar and sidecar["projection"]["latent"] == str(paths["latent"])
    m = result.metrics
    assert ui.projectionLabel.text() == (
        f"Sliders move around the projection of patient 7.nii.gz (correlation {m['correlation']:.2f}, vessel Dice "
        f"{m['vessel_dice']:.2f}); the scan filled only 60% of the model's grid")
    assert ui.statusLabel.text().startswith("projection: generated in")
    seed_controls = ("interpolationGroupBox", "resampleNoiseButton", "noiseFollowsSeedCheckBox", "seedSpinBox")
    assert not any(getattr(ui, name).isEnabled() for name in seed_controls)  # they would change nothing
    controller.direction_sliders[-1].setValue(20)
    assert controller.wait_idle(app=app)
    assert np.abs(controller.last_result.volume - shown.volume).max() > 1e-4
    ui.clearProjectionButton.click()
    assert controller.wait_idle(app=app) and controller.last_result.state.projection == ""
    assert all(getattr(ui, name).isEnabled() for name in seed_controls + ("exportInterpolationButton",))


def test_cowgan_explore_shows_a_projection_written_by_cowgan_project(panel, generator, result, tmp_path, capsys):
    import argparse
    import types

    from cowgan.commands.explore import _initial_values
    from cowgan.main import main
    from CircleOfWillisGANLib.panel_engine import PanelEngine

    assert main(["explore", "--projection", str(tmp_path / "nothere.safetensors")]) == 2
    assert "does not exist: pass the projection.safetensors (or folder)" in capsys.readouterr().err
    (tmp_path / "garbage.safetensors").write_bytes(b"not a projection")
    assert main(["explore", "--projection", str(tmp_path / "garbage.safetensors")]) == 2  # said before a window opens
    assert "cannot read projection" in capsys.readouterr().err
    paths = write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, source="/data/scan.nii.gz",
                                     coverage=1.0, plot=False)
    app, ui, controller = panel
    controller.set_engine(PanelEngine(generator), then=lambda engine: _initial_values(
        types.SimpleNamespace(ui=ui, controller=controller),
        argparse.Namespace(seed=None, psi=None, projection=str(paths["latent"]))))
    assert controller.wait_idle(app=app)
    assert controller.last_result.state.projection == str(paths["latent"].resolve())
    assert np.corrcoef(controller.last_result.volume.ravel(), result.reconstruction.ravel())[0, 1] > 0.999


def test_bf16_optimisation_reaches_the_fp32_result_and_reports_in_fp32(generator, own_volume):
    import dataclasses

    from CircleOfWillisGANLib.errors import InputError

    bf16 = project(generator, own_volume, dataclasses.replace(FAST, precision="bf16"))
    fp32 = project(generator, own_volume, dataclasses.replace(FAST, precision="fp32"))
    assert abs(bf16.metrics["correlation"] - fp32.metrics["correlation"]) < 0.02
    assert bf16.reconstruction.dtype == np.float32
    with pytest.raises(InputError, match="precision 'fp16' is unknown"):
        ProjectionConfig(precision="fp16")


def test_a_seed_outside_the_seed_range_is_refused_before_any_work():
    from CircleOfWillisGANLib.errors import InputError
    from CircleOfWillisGANLib.evaluation.pipeline import EvaluationConfig

    for make in (ProjectionConfig, EvaluationConfig):
        with pytest.raises(InputError, match="seed -1 is out of range"):
            make(seed=-1)


def test_a_projection_belongs_to_the_weights_not_to_the_file_that_held_them(generator, result, tmp_path):
    import dataclasses

    import torch

    from CircleOfWillisGANLib.checkpoint import Checkpoint
    from CircleOfWillisGANLib.errors import InputError
    from CircleOfWillisGANLib.generator import CoWGenerator
    from CircleOfWillisGANLib.projection_io import check_projection_fits

    write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, plot=False)
    latent = load_projection(tmp_path)
    ckpt = generator.checkpoint
    renamed = CoWGenerator(dataclasses.replace(ckpt, metadata={"name": "named"}, directions={"named": torch.eye(2, 32)},
                                               sha256="another file"), "cpu")
    check_projection_fits(latent, renamed)  # same weights, other directions (as after name-directions): still fits
    state = {k: v.clone() for k, v in ckpt.state_dict.items()}
    state["synthesis.const"] += 0.01
    retrained = CoWGenerator(Checkpoint(ckpt.architecture, state, ckpt.w_avg, {}), "cpu")  # no file checksum at all
    with pytest.raises(InputError, match="made with another model \\(its weights differ\\)"):
        check_projection_fits(latent, retrained)
    other_noise = CoWGenerator(Checkpoint(dataclasses.replace(ckpt.architecture, noise_mode="reference"), state,
                                          ckpt.w_avg, {}), "cpu")  # its noise has another shape too: the model is named
    with pytest.raises(InputError, match="made with another model \\(its weights differ\\): load the model it was made"):
        check_projection_fits(latent, other_noise)
    older = dataclasses.replace(latent, metadata={**{k: v for k, v in latent.metadata.items() if k != "model_weights_sha256"},
                                                  "model_content_sha256": "file-a"})  # only the model file's checksum
    check_projection_fits(older, CoWGenerator(dataclasses.replace(ckpt, sha256="file-a"), "cpu"))
    for other in ("file-b", ""):  # another file, and a model converted in memory (no file checksum to compare)
        with pytest.raises(InputError, match="made with another model"):
            check_projection_fits(older, CoWGenerator(dataclasses.replace(ckpt, sha256=other), "cpu"))
    anonymous = dataclasses.replace(latent, metadata={k: v for k, v in latent.metadata.items() if "sha256" not in k})
    with pytest.raises(InputError, match="does not say which model made it"):
        check_projection_fits(anonymous, generator)


def test_project_refuses_to_write_over_the_scan_it_reads(tmp_path, capsys):
    from cowgan.main import main

    scan = save_volume(tmp_path / "target.nii.gz", np.random.default_rng(0).random((8, 16, 16)) * 100,
                       default_affine((8, 16, 16)))
    before = scan.read_bytes()
    assert main(["project", "--volume", str(scan), "--out", str(tmp_path), "--overwrite", "--steps", "1", "1", "1"]) == 2
    assert "is where the projection writes one of its results" in capsys.readouterr().err
    assert scan.read_bytes() == before


def test_the_panel_keeps_each_patients_projection_in_its_own_folder(tmp_path):
    from CircleOfWillisGANLib.files import write_json
    from CircleOfWillisGANLib.projection_io import projection_folder

    first, second = tmp_path / "patient1" / "TOF.nii.gz", tmp_path / "patient2" / "TOF.nii.gz"
    parent = tmp_path / "projections"
    assert projection_folder(parent, first, "model-a") == parent / "TOF"
    (parent / "TOF").mkdir(parents=True)
    write_json(parent / "TOF" / "projection.json", {"source": str(first), "model_weights_sha256": "model-a"})
    assert projection_folder(parent, first, "model-a") == parent / "TOF"  # the same scan and model again
    assert projection_folder(parent, second, "model-a") == parent / "TOF-2"
    assert projection_folder(parent, first, "model-b") == parent / "TOF-2"  # model A's projection is kept


def test_a_volume_projected_from_a_new_temporary_copy_each_time_keeps_its_folder(tmp_path):
    from CircleOfWillisGANLib.files import write_json
    from CircleOfWillisGANLib.projection_io import (ProjectedLatent, describe_projection, exported_scan_source,
                                                    projection_folder, projection_source)

    copies = [tmp_path / f"copy{i}" / "TOF.nii.gz" for i in (1, 2, 3)]
    for copy, voxels in zip(copies, (b"patient 1", b"patient 1", b"patient 2")):
        copy.parent.mkdir()
        copy.write_bytes(voxels)
    first, again, other = (exported_scan_source("TOF", copy) for copy in copies)
    assert first == again != other and first.startswith("TOF (exported, sha256 ")
    named = exported_scan_source("3: TOF/MRA", copies[0])  # a Slicer name may hold a slash: the label shows it whole
    assert describe_projection(ProjectedLatent(None, None, {"source": named})) == f"projection of {named}"
    parent = tmp_path / "projections"
    (parent / "TOF").mkdir(parents=True)
    write_json(parent / "TOF" / "projection.json", {"source": projection_source(copies[0], first),
                                                     "model_weights_sha256": "model-a"})
    assert projection_folder(parent, copies[1], "model-a", again) == parent / "TOF"  # the same volume, pressed again
    assert projection_folder(parent, copies[2], "model-a", other) == parent / "TOF-2"  # another patient's "TOF"
    assert projection_folder(parent, copies[1], "model-a") == parent / "TOF-2"  # known by the copy's path: another scan
    stored = tmp_path / "patient1" / ".." / "patient1" / "TOF.nii.gz"  # a volume read from a file is known by that file
    write_json(parent / "TOF" / "projection.json", {"source": str(stored.resolve()), "model_weights_sha256": "model-a"})
    assert projection_folder(parent, copies[0], "model-a", str(stored)) == parent / "TOF"


@pytest.mark.parametrize("setting, message", [({"prior_samples": 1}, "cannot estimate a spread of w"),
                                              ({"candidates": 40, "prior_samples": 20}, "raise prior_samples")])
def test_prior_and_candidate_counts_project_would_change_are_refused(setting, message):
    from CircleOfWillisGANLib.errors import InputError

    with pytest.raises(InputError, match=message):
        ProjectionConfig(**setting)


def test_a_cancel_pressed_after_the_last_step_still_writes_nothing(generator, tmp_path):
    from CircleOfWillisGANLib.panel_engine import PanelEngine
    from CircleOfWillisGANLib.panel_controller import ProjectionCancelled

    scan = save_volume(tmp_path / "scan.nii.gz", np.random.default_rng(3).random((8, 16, 16)) * 300,
                       default_affine((8, 16, 16), (2.0, 2.0, 2.0)))
    pressed = []

    def progress(i, n):  # Cancel is pressed as the last step is reported, during the final fp32 pass
        if pressed:
            raise ProjectionCancelled("projection cancelled: nothing was written")
        if i == n:
            pressed.append(True)

    with pytest.raises(ProjectionCancelled):
        PanelEngine(generator).project_volume(str(scan), str(tmp_path / "out"), config=FAST, progress=progress)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_cancel_pressed_while_the_starting_candidates_are_tried_stops_there(generator):
    from CircleOfWillisGANLib.panel_controller import ProjectionCancelled

    target = np.random.default_rng(4).random(generator.arch.output_shape).astype(np.float32)
    config = ProjectionConfig(w_steps=3, wplus_steps=0, noise_steps=0, candidates=8, prior_samples=16)
    heard = []

    def progress(i, n):
        heard.append(i)
        if len(heard) == 2:
            raise ProjectionCancelled("projection cancelled: nothing was written")

    with pytest.raises(ProjectionCancelled):
        project(generator, target, config, progress)
    assert heard == [0, 0]  # before the first optimisation step


def test_pressing_project_again_cancels_a_running_projection_and_writes_nothing(panel, generator, tmp_path):
    from CircleOfWillisGANLib.panel_engine import PanelEngine

    scan = save_volume(tmp_path / "scan.nii.gz", np.random.default_rng(2).random((8, 16, 16)) * 300,
                       default_affine((8, 16, 16), (2.0, 2.0, 2.0)))
    app, ui, controller = panel
    controller.set_engine(PanelEngine(generator))
    assert controller.wait_idle(app=app)
    ui.outputFolderLineEdit.setText(str(tmp_path / "exports"))
    ended = []  # the Slicer module deletes its temporary copy of the scan here
    controller.projection_listeners.append(lambda: ended.append(controller.projecting))
    controller.project_volume(str(scan))
    assert controller.projecting and ui.projectVolumeButton.text() == "Cancel projection"
    ui.projectVolumeButton.click()
    assert controller.wait_idle(120, app=app) and ended == [False]
    assert not controller.projecting and ui.projectVolumeButton.text() == "Project volume..."
    assert ui.statusLabel.text() == "Projection cancelled: nothing was written" and controller.state.projection == ""
    assert not (tmp_path / "exports" / "projections").exists()


def test_the_panel_reuses_the_folder_of_a_scan_projected_again_from_another_copy_and_records_the_scans_name(
        panel, generator, tmp_path, monkeypatch):
    import functools
    import shutil

    from CircleOfWillisGANLib.panel_engine import PanelEngine

    scan = save_volume(tmp_path / "scan.nii.gz", np.random.default_rng(2).random((8, 16, 16)) * 300,
                       default_affine((8, 16, 16), (2.0, 2.0, 2.0)))
    app, ui, controller = panel
    engine = PanelEngine(generator)
    monkeypatch.setattr(engine, "project_volume", functools.partial(engine.project_volume, config=FAST))
    controller.set_engine(engine)
    ui.outputFolderLineEdit.setText(str(tmp_path / "exports"))
    source = "TOF (exported, sha256 0123456789abcdef)"
    latents = []
    for press in (1, 2):  # the Slicer module exports the volume to a new temporary folder at each press
        copy = tmp_path / f"copy{press}" / "TOF.nii.gz"
        copy.parent.mkdir()
        shutil.copy(scan, copy)
        controller.project_volume(str(copy), source=source)
        assert controller.wait_idle(120, app=app)
        latents.append(controller.state.projection)
    folder = tmp_path / "exports" / "projections" / "TOF"
    assert latents == [str(folder / "projection.safetensors")] * 2
    assert sorted(p.name for p in folder.parent.iterdir()) == ["TOF"]
    assert load_projection(latents[0]).metadata["source"] == source
    assert ui.projectionLabel.text().startswith(f"Sliders move around the projection of {source} (correlation")


def test_the_coarse_blur_is_a_gaussian_of_the_stated_millimetres_along_each_axis():
    import torch
    from scipy.ndimage import gaussian_filter

    from CircleOfWillisGANLib.projection import COARSE_BLUR_MM, coarse_sigma_voxels, gaussian_blur

    volume = np.random.default_rng(3).random((6, 20, 24)).astype(np.float32)
    sigma = coarse_sigma_voxels(default_affine(volume.shape, (1.0, 0.5, 2.0)))  # x (H), y (W), z (D) spacing
    assert sigma == pytest.approx((COARSE_BLUR_MM / 2.0, COARSE_BLUR_MM / 1.0, COARSE_BLUR_MM / 0.5))
    blurred = gaussian_blur(torch.from_numpy(volume)[None, None], sigma)[0, 0].numpy()
    np.testing.assert_allclose(blurred, gaussian_filter(volume, sigma, mode="nearest", truncate=3.0), atol=2e-3)


def test_the_coarse_term_pulls_vessels_that_lie_beside_the_target_towards_it():
    import torch

    from CircleOfWillisGANLib.projection import vessel_loss

    target = torch.zeros(1, 1, 8, 32, 32)
    target[..., 14:16, :] = 1.0  # a vessel along W
    mask = (target > 0.5).float()
    beside = torch.roll(target, 3, dims=3)  # the same vessel 3 voxels off: no overlap, so no pull from intensity
    sharp = vessel_loss(beside, target, mask, 4.0, 1.0)
    coarse = vessel_loss(beside, target, mask, 4.0, 1.0, coarse_weight=1.0, coarse_sigma=(1.4, 1.4, 1.4))
    assert "coarse" not in sharp and 0.0 < float(coarse["coarse"]) < 1.0
    assert float(coarse["loss"]) == pytest.approx(float(sharp["loss"] + coarse["coarse"]))
    closer = torch.roll(target, 2, dims=3)
    assert float(vessel_loss(closer, target, mask, 4.0, 1.0, 1.0, (1.4, 1.4, 1.4))["coarse"]) < float(coarse["coarse"])
    assert float(vessel_loss(closer, target, mask, 4.0, 1.0)["intensity"]) == pytest.approx(float(sharp["intensity"]))


def test_a_scan_is_scaled_as_the_models_training_volumes_were(tmp_path):
    from CircleOfWillisGANLib.preprocess import PrepareOptions, preprocess_file

    shape, spacing = (8, 16, 16), (2.0, 2.0, 2.0)
    volume = np.random.default_rng(2).random(shape).astype(np.float32) * 100
    volume[4, 8, 8] = 5000.0  # one bright artefact voxel: min-max scaling would squash the rest towards 0
    scan = save_volume(tmp_path / "scan.nii.gz", volume, default_affine(shape, spacing))
    recorded = {"method": "percentile", "percentiles": [0.5, 99.9]}
    out = scan_on_model_grid(scan, shape, spacing, normalisation=recorded).volume
    prepared, _ = preprocess_file(scan, PrepareOptions(shape=shape, spacing=2.0, normalisation="percentile"))
    np.testing.assert_array_equal(out, prepared)
    assert out.max() == 1.0 and np.percentile(out, 99) > 0.9
    reference = scan_on_model_grid(scan, shape, spacing, normalisation="per-volume min-max to [0, 1]").volume
    assert reference.max() == 1.0 and np.percentile(reference, 99) < 0.03


def test_a_registered_scan_lies_over_the_patient_not_the_template(tmp_path):
    import nibabel as nib
    from scipy.ndimage import map_coordinates
    from scipy.spatial.transform import Rotation

    from training_fixtures import tube_volume

    shape, spacing, crop = (32, 48, 48), (1.0, 1.0, 1.0), (16, 32, 32)
    anatomy = tube_volume(shape, 0)
    template = save_volume(tmp_path / "template.nii.gz", anatomy, default_affine(shape, spacing))
    moved = np.eye(4)  # the patient lies 8 degrees turned and shifted in the scanner
    moved[:3, :3] = Rotation.from_euler("z", 8, degrees=True).as_matrix()
    moved[:3, 3] = (6.0, -4.0, 3.0)
    scan = save_volume(tmp_path / "scan.nii.gz", anatomy, moved @ default_affine(shape, spacing))
    volume, affine, _ = scan_on_model_grid(scan, crop, spacing, template=template)
    stored = nib.load(str(scan))
    voxels = np.stack(np.meshgrid(*(np.arange(n) for n in crop), indexing="ij"), -1).reshape(-1, 3)
    ijk = voxels[:, [1, 2, 0]]  # (D, H, W) index -> NIfTI (i, j, k) = (H, W, D)
    world = affine[:3, :3] @ ijk.T + affine[:3, 3:]
    in_scan = np.linalg.inv(stored.affine)[:3] @ np.vstack([world, np.ones(len(ijk))])
    under = map_coordinates(np.asarray(stored.dataobj, np.float32), in_scan, order=1).reshape(crop)
    assert np.corrcoef(volume.ravel(), under.ravel())[0, 1] > 0.95
    np.testing.assert_allclose(affine[:3, :3], moved[:3, :3] @ default_affine(crop, spacing)[:3, :3], atol=0.02)
