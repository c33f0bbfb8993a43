"""The morphology distance a run logs at every sample sheet: zero for the real volumes, large for noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.dataset import RealVolumes
from training.metrics import MorphologyDistance
from training_fixtures import write_tube_dataset


@pytest.fixture
def real(tmp_path):
    return RealVolumes.open(write_tube_dataset(tmp_path / "data", count=6), torch.device("cpu"))


def test_the_real_volumes_themselves_are_at_distance_zero(real):
    metric = MorphologyDistance(real, (0.62, 0.62, 0.62))
    volumes = real.gather(torch.arange(real.count))[:, 0].numpy()
    assert metric(volumes) == pytest.approx(0.0, abs=1e-6)


def test_noise_is_far_from_the_real_volumes(real):
    metric = MorphologyDistance(real, (0.62, 0.62, 0.62))
    noise = np.random.default_rng(0).random((6, 16, 32, 32), dtype=np.float32)
    assert metric(noise) > 10.0


def test_a_run_logs_the_distance_with_its_sample_sheets(tmp_path, caplog):
    from training.config import training_preset
    from training.distributed import ProcessGroup
    from training.loop import train

    data = write_tube_dataset(tmp_path / "data", count=6)
    cfg = training_preset("tiny").replace(total_kimg=0.008, snapshot_kimg=0.004)
    with caplog.at_level("INFO"):
        train(cfg, data, tmp_path / "run", ProcessGroup(device=torch.device("cpu")), bar=False)
    assert "morphology Fréchet distance to the real set" in caplog.text
    assert list((tmp_path / "run" / "samples").glob("*.png"))


def test_a_missing_metric_package_is_named_before_training_starts(real, monkeypatch):
    import sys

    from CircleOfWillisGANLib.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "skimage", None)  # as if scikit-image were not installed
    with pytest.raises(MissingDependencyError, match="pip install scikit-image"):
        MorphologyDistance(real, (1.0, 1.0, 1.0))


def test_a_feature_constant_up_to_rounding_in_the_real_set_does_not_blow_up_the_distance(real, monkeypatch):
    metric = MorphologyDistance(real, (0.62, 0.62, 0.62))
    features = np.random.default_rng(0).random((6, 4))
    features[:, 3] = [0.3, 0.1 + 0.2, 0.3, 0.1 + 0.2, 0.3, 0.3]  # 0.1 + 0.2 is one rounding step above 0.3
    assert 0 < features[:, 3].std() < 1e-15
    metric._real = features
    monkeypatch.setattr(metric, "_features", lambda volumes: features + np.array([0.0, 0.0, 0.0, 1e-9]))
    assert metric(np.zeros((6, 16, 32, 32), np.float32)) < 1e-6  # a coarse grid's constant feature printed 1e+30
