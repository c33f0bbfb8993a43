"""Projection: the optimiser recovers volumes the model made, cowgan project writes its results, the panel uses them."""

from __future__ import annotations

import numpy as np
import pytest

from CircleOfWillisGANLib.generator import build_generator
from CircleOfWillisGANLib.model_grid import resample_to_model_grid
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


def test_metrics_are_perfect_for_identical_volumes(own_volume):
    metrics = reconstruction_metrics(own_volume, own_volume)
    assert metrics["correlation"] == pytest.approx(1.0) and metrics["vessel_dice"] == 1.0 and metrics["mae"] == 0.0


def test_a_volume_off_the_model_grid_is_refused_with_the_fix(generator):
    with pytest.raises(Exception, match="bring it to the model's grid"):
        project(generator, np.zeros((8, 8, 8), np.float32), FAST)


def test_saved_projection_reproduces_the_reconstruction(generator, result, tmp_path):
    affine = default_affine(generator.arch.output_shape)
    paths = write_projection_outputs(tmp_path, result, affine, generator, FAST, source="own", plot=True)
    assert {p.name for p in paths.values()} >= {"projection.safetensors", "reconstruction.nii.gz", "error.nii.gz",
                                                "target.nii.gz", "projection.json", "convergence.png"}
    latent = load_projection(tmp_path)
    again = generator.synthesize(latent.ws[None], noise=latent.noise, precision="fp32").clamp(0, 1).numpy()[0]
    np.testing.assert_allclose(again, result.reconstruction, atol=1e-5)
    assert latent.metadata["metrics"]["correlation"] == pytest.approx(result.metrics["correlation"])


def test_resampling_to_the_model_grid_keeps_a_volume_already_on_it():
    shape, spacing = (8, 16, 16), (2.0, 2.0, 2.0)
    volume = np.random.default_rng(0).random(shape).astype(np.float32)
    out, affine = resample_to_model_grid(volume * 300 + 20, default_affine(shape, spacing), shape, spacing)
    np.testing.assert_allclose(out, (volume - volume.min()) / (volume.max() - volume.min()), atol=1e-5)
    np.testing.assert_allclose(affine, default_affine(shape, spacing), atol=1e-9)


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


def test_the_panel_moves_its_sliders_around_a_loaded_projection(generator, result, tmp_path):
    pytest.importorskip("PySide6.QtUiTools")
    from PySide6.QtWidgets import QApplication

    from CircleOfWillisGANLib.explorer.window import panel_ui_path
    from CircleOfWillisGANLib.panel_controller import PanelController
    from CircleOfWillisGANLib.qt_pyside6 import load_panel_pyside6, pyside6_qt
    from CircleOfWillisGANLib.panel_engine import PanelEngine

    paths = write_projection_outputs(tmp_path, result, generator.affine, generator, FAST, plot=False)
    app = QApplication.instance() or QApplication([])
    root, ui = load_panel_pyside6(str(panel_ui_path()))
    controller = PanelController(ui, pyside6_qt())
    try:
        controller.set_engine(PanelEngine(generator))
        controller.use_projection(str(paths["latent"]))
        assert controller.wait_idle(app=app)
        shown = controller.last_result
        assert shown.state.projection == str(paths["latent"]) and not ui.seedSpinBox.isEnabled()
        assert np.corrcoef(shown.volume.ravel(), result.reconstruction.ravel())[0, 1] > 0.999
        controller.direction_sliders[-1].setValue(20)
        assert controller.wait_idle(app=app)
        assert np.abs(controller.last_result.volume - shown.volume).max() > 1e-4
        ui.clearProjectionButton.click()
        assert controller.wait_idle(app=app) and controller.last_result.state.projection == ""
    finally:
        controller.close()
        root.deleteLater()


def test_bf16_optimisation_reaches_the_fp32_result_and_reports_in_fp32(generator, own_volume):
    import dataclasses

    from CircleOfWillisGANLib.errors import InputError

    bf16 = project(generator, own_volume, dataclasses.replace(FAST, precision="bf16"))
    fp32 = project(generator, own_volume, dataclasses.replace(FAST, precision="fp32"))
    assert abs(bf16.metrics["correlation"] - fp32.metrics["correlation"]) < 0.02
    assert bf16.reconstruction.dtype == np.float32
    with pytest.raises(InputError, match="precision 'fp16' is unknown"):
        ProjectionConfig(precision="fp16")
