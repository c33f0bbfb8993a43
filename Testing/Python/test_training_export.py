"""`cowgan export`: a run's EMA generator becomes a native model that load_generator reads."""

from __future__ import annotations

import re

import numpy as np
import torch

from CircleOfWillisGANLib.errors import CheckpointError
from CircleOfWillisGANLib.generator import load_generator
from training.config import training_preset
from training.distributed import ProcessGroup
from training.export import export_run
from training.loop import train
from training.samples import sample_volumes
from training.state import REQUIRED_KEYS, find_state, load_state
from training_fixtures import write_tube_dataset

import pytest


def test_an_exported_run_loads_with_load_generator_and_carries_data_geometry_and_provenance(tmp_path):
    data = write_tube_dataset(tmp_path / "ds", count=4)
    cpu = ProcessGroup(device=torch.device("cpu"))
    train(training_preset("tiny").replace(total_kimg=0.008), data, tmp_path / "run", cpu, bar=False)
    export_run(tmp_path / "run", tmp_path / "model.safetensors")
    gen = load_generator(tmp_path / "model.safetensors", device="cpu")
    state = load_state(find_state(tmp_path / "run"))
    ema = state["trainer"]["G_ema"]
    assert all(torch.equal(ema[k], v) for k, v in gen.model.state_dict().items())
    volumes = gen.generate(seeds=[1, 2])
    assert volumes.shape == (2, 16, 32, 32) and np.isfinite(volumes).all()
    sheet_volumes = sample_volumes(gen.model, [1, 2], torch.device("cpu"))
    np.testing.assert_allclose(sheet_volumes, volumes, atol=1e-6, err_msg="a seed on the sample sheet is that seed in the tools")
    meta = gen.metadata
    assert meta["data"]["orientation"] == "RAS" and meta["data"]["spacing_mm"] == [0.62, 0.62, 0.62]
    np.testing.assert_allclose(gen.affine, np.asarray(meta["data"]["affine"]))
    assert meta["provenance"]["step"] == 2 and meta["provenance"]["config"]["architecture"] == "tiny"
    torch.testing.assert_close(gen.w_avg, gen.model.mean_w(10_000))


def test_a_float16_export_is_half_the_size_and_generates_nearly_the_same_volumes(tmp_path):
    data = write_tube_dataset(tmp_path / "ds", count=4)
    train(training_preset("tiny").replace(total_kimg=0.004), data, tmp_path / "run",
          ProcessGroup(device=torch.device("cpu")), bar=False)
    export_run(tmp_path / "run", tmp_path / "full.safetensors")
    export_run(tmp_path / "run", tmp_path / "half.safetensors", dtype="float16")
    full = load_generator(tmp_path / "full.safetensors", device="cpu").generate(seeds=[3])
    half = load_generator(tmp_path / "half.safetensors", device="cpu").generate(seeds=[3])
    assert np.abs(half - full).max() < 1e-2 and np.abs(half - full).mean() < 1e-3
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * (tmp_path / "full.safetensors").stat().st_size


def test_exporting_a_folder_without_a_run_says_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match="cowgan train --out"):
        export_run(tmp_path, tmp_path / "model.safetensors")


def test_a_run_folder_that_is_missing_a_file_a_reference_model_or_an_incomplete_state_is_named(tmp_path):
    from training.state import FORMAT, save_state

    with pytest.raises(CheckpointError, match="run folder .*missing does not exist: pass the folder given to"):
        export_run(tmp_path / "missing", tmp_path / "model.safetensors")
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        export_run(tmp_path / "notes.txt", tmp_path / "model.safetensors")
    torch.save({"GAN": {}}, tmp_path / "model_150.pt")
    with pytest.raises(CheckpointError, match="checkpoint of the published reference.*cowgan import-reference"):
        export_run(tmp_path, tmp_path / "model.safetensors", state_path=tmp_path / "model_150.pt")
    state = save_state(tmp_path / "run", {"trainer": {}, "config": {}})
    with pytest.raises(CheckpointError, match="lacks architecture, dataset, progress: it is incomplete"):
        export_run(tmp_path / "run", tmp_path / "model.safetensors")
    torch.save({"format": FORMAT, "format_version": "x"}, state)
    with pytest.raises(CheckpointError, match="format_version 'x', not a whole number"):
        export_run(tmp_path / "run", tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


def test_the_cli_keeps_an_existing_model_file_unless_overwrite_is_asked(tmp_path, capsys):
    from cowgan.main import main

    data = write_tube_dataset(tmp_path / "ds", count=4)
    train(training_preset("tiny").replace(total_kimg=0.004), data, tmp_path / "run",
          ProcessGroup(device=torch.device("cpu")), bar=False)
    mine = tmp_path / "model.safetensors"
    mine.write_bytes(b"a model the user already had")
    assert main(["export", str(tmp_path / "run"), "--out", str(mine)]) == 2
    assert "--overwrite" in capsys.readouterr().err and mine.read_bytes() == b"a model the user already had"
    assert main(["export", str(tmp_path / "run"), "--out", str(mine), "--overwrite"]) == 0
    assert load_generator(mine, device="cpu").generate(seeds=[1]).shape == (1, 16, 32, 32)


def test_a_resume_state_that_is_missing_or_not_one_is_named_with_the_right_fix(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist: pass a .pt file from RUN/checkpoints/"):
        load_state(tmp_path / "nope.pt")
    (tmp_path / "notes.txt").write_text("not a state")
    with pytest.raises(CheckpointError, match="not a PyTorch file.*pass another resume state"):
        load_state(tmp_path / "notes.txt")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match="latest.pt is truncated or corrupt .*: the run has no other resume state: start"):
        load_state(tmp_path / "checkpoints" / "latest.pt")  # deleting it would start the run again, silently
    (tmp_path / "checkpoints" / "previous.pt").write_bytes(b"PK\x03\x04 an older state")
    with pytest.raises(CheckpointError, match="latest.pt is truncated or corrupt .* delete it to resume from previous.pt"):
        load_state(tmp_path / "checkpoints" / "latest.pt")


def test_a_resume_state_damaged_inside_a_tensor_is_refused_not_resumed_wrong(tmp_path):
    import zipfile

    from training.state import FORMAT

    path = tmp_path / "latest.pt"
    torch.save({"format": FORMAT, "weights": torch.arange(4096, dtype=torch.float32)}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)
        start = entry.header_offset + 30 + len(entry.filename.encode()) + len(entry.extra)
    data[start + 64] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"latest.pt is truncated or corrupt \(its entry .* fails its checksum\)"):
        load_state(path)


def test_a_resume_state_that_cannot_be_written_is_an_output_error_and_keeps_the_previous_one(tmp_path, monkeypatch):
    from CircleOfWillisGANLib.errors import OutputError
    from training.state import save_state

    def disk_full(obj, path):
        open(path, "wb").write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 10 vs 4")

    parts = {key: {} for key in REQUIRED_KEYS}
    first = save_state(tmp_path, dict(parts, step=1))
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OutputError, match="lack of disk space"):
        save_state(tmp_path, dict(parts, step=2))
    assert load_state(first)["step"] == 1 and sorted(p.name for p in first.parent.iterdir()) == ["latest.pt"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny run (checkpoints/latest.pt), trained once for the tests below, which copy it before changing it."""
    root = tmp_path_factory.mktemp("trained")
    data = write_tube_dataset(root / "ds", count=4)
    train(training_preset("tiny").replace(total_kimg=0.004), data, root / "run",
          ProcessGroup(device=torch.device("cpu")), bar=False)
    return root / "run"


def copy_run(trained_run, tmp_path):
    import shutil

    return shutil.copytree(trained_run, tmp_path / "run")


def edited_state(run, edit):
    """Rewrite run's latest.pt after `edit(state)` and return its path."""
    path = run / "checkpoints" / "latest.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


def test_a_damaged_latest_state_exports_previous_with_a_warning_naming_both_and_never_advises_deleting(
        trained_run, tmp_path, caplog):
    run = copy_run(trained_run, tmp_path)
    latest, previous = run / "checkpoints" / "latest.pt", run / "checkpoints" / "previous.pt"
    previous.write_bytes(latest.read_bytes())
    latest.write_bytes(latest.read_bytes()[:200])
    with caplog.at_level("WARNING"):
        export_run(run, tmp_path / "model.safetensors")
    assert load_generator(tmp_path / "model.safetensors", device="cpu").generate(seeds=[1]).shape == (1, 16, 32, 32)
    warning = caplog.records[-1].getMessage()
    assert str(latest) in warning and f"exporting {previous} instead" in warning and "\n" not in warning
    with pytest.raises(CheckpointError, match="latest.pt is truncated or corrupt .*: pass another --state") as info:
        export_run(run, tmp_path / "other.safetensors", state_path=latest)
    assert "delete" not in str(info.value)


def test_a_resume_state_without_an_ema_generator_is_a_one_line_error_and_exit_2(trained_run, tmp_path, capsys):
    from cowgan.main import main

    run = copy_run(trained_run, tmp_path)
    path = edited_state(run, lambda state: state["trainer"].pop("G_ema"))
    with pytest.raises(CheckpointError, match=r"incomplete resume state .*latest.pt.*trainer.G_ema.*pass another --state"):
        export_run(run, tmp_path / "model.safetensors", state_path=path)
    assert main(["export", str(run), "--out", str(tmp_path / "model.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "incomplete resume state" in err and "Traceback" not in err


def test_an_architecture_that_does_not_match_the_weights_names_the_state_and_the_fix(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    path = edited_state(run, lambda state: state["architecture"].update(latent_dim=48))
    with pytest.raises(CheckpointError, match=rf"resume state {re.escape(str(path))}: its architecture does not match its generator "
                                              r"weights \(.*\).*pass another --state") as info:
        export_run(run, tmp_path / "model.safetensors", state_path=path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "model.safetensors").exists()


def test_provenance_never_names_a_run_folder_that_does_not_exist(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    state = run / "checkpoints" / "latest.pt"
    with pytest.raises(CheckpointError, match="run folder .*no-such-run does not exist"):
        export_run(tmp_path / "no-such-run", tmp_path / "model.safetensors", state_path=state)
    ckpt = export_run(None, tmp_path / "model.safetensors", state_path=state)
    assert ckpt.metadata["provenance"]["run"] == str(run.resolve())


def test_the_cli_exports_a_state_without_run_and_records_the_run_it_belongs_to(trained_run, tmp_path):
    from cowgan.main import main

    run = copy_run(trained_run, tmp_path)
    out = tmp_path / "model.safetensors"
    assert main(["export", "--state", str(run / "checkpoints" / "latest.pt"), "--out", str(out)]) == 0
    assert load_generator(out, device="cpu").metadata["provenance"]["run"] == str(run.resolve())


def test_weights_that_map_z_to_nan_name_the_resume_state(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    path = edited_state(run, lambda state: state["trainer"]["G_ema"]["mapping.layers.0.bias"].fill_(float("nan")))
    with pytest.raises(CheckpointError, match=rf"model in resume state {re.escape(str(path))} maps finite z to NaN"):
        export_run(run, tmp_path / "model.safetensors")


def test_weights_beyond_float16_are_refused_for_a_float16_export_and_export_in_float32(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    edited_state(run, lambda state: state["trainer"]["G_ema"]["synthesis.const"].mul_(0).add_(1e5))
    with pytest.raises(CheckpointError, match=r"1 weight tensor\(s\) of .*latest.pt \(e.g. synthesis.const, \|weight\| up "
                                              r"to 1e\+05\) exceed the range of float16: export with --dtype float32"):
        export_run(run, tmp_path / "half.safetensors", dtype="float16")
    assert not (tmp_path / "half.safetensors").exists()
    export_run(run, tmp_path / "full.safetensors", dtype="float32")
    assert np.isfinite(load_generator(tmp_path / "full.safetensors", device="cpu").generate(seeds=[1])).all()


def test_a_state_outside_the_given_run_folder_is_refused_not_exported_as_that_run(trained_run, tmp_path, capsys):
    from cowgan.main import main

    other = tmp_path / "other"
    other.mkdir()
    state = trained_run / "checkpoints" / "latest.pt"
    out = tmp_path / "model.safetensors"
    assert main(["export", str(other), "--state", str(state), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--state {state} is not inside the run folder {other}: pass the state's own run folder" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main(["export", str(trained_run), "--state", str(state), "--out", str(out)]) == 0


@pytest.mark.parametrize("out", [".safetensors", "models/.safetensors"])
def test_an_out_path_with_no_name_before_the_suffix_is_told_to_add_one(tmp_path, capsys, out):
    from cowgan.main import main

    assert main(["export", str(tmp_path), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    named = tmp_path / out.replace(".safetensors", "model.safetensors")
    assert f"has no file name before .safetensors: name the model, e.g. {named}" in err
    assert "must end in" not in err and err.count("\n") == 1
