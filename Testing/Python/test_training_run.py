"""Training on the CPU with the tiny preset: steps run, resume is bit-identical, the NaN guard rolls back, export loads."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from CircleOfWillisGANLib.errors import CheckpointError, InputError
from training.config import TrainConfig, training_preset
from training.dataset import DataOrder, RealVolumes
from training.distributed import ProcessGroup
from training.guard import NanGuard
from training.loop import resolve_config, train
from training.state import find_state, load_state
from training.trainer import Trainer, resolve_training_precision
from training_fixtures import write_tube_dataset

CPU = ProcessGroup(device=torch.device("cpu"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_tube_dataset(tmp_path_factory.mktemp("data") / "ds", count=6)


def _trainer(dataset: Path, **overrides) -> Trainer:
    cfg = training_preset("tiny").replace(**overrides)
    return Trainer(cfg, RealVolumes.open(dataset, CPU.device), CPU)


def _tensors(state, prefix=""):
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for k, v in state.items():
            yield from _tensors(v, f"{prefix}/{k}")
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _tensors(v, f"{prefix}/{i}")


def test_a_few_tiny_steps_train_with_every_regulariser_and_finite_losses(dataset):
    trainer = _trainer(dataset)
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    stats = [trainer.step() for _ in range(3)]
    assert trainer.step_index == 3
    assert all(np.isfinite([s["loss_d"], s["loss_g"], s["penalty_gp"], s["path_length"]]).all() for s in stats)
    assert stats[0]["gp_applied"] == 1.0 and stats[1]["gp_applied"] == 0.0 and stats[2]["pl_applied"] == 1.0
    assert stats[2]["penalty_pl"] > 0  # the first path-length step sets the target, the next is penalised
    assert any(not torch.equal(before[k], v) for k, v in trainer.G.state_dict().items())
    assert trainer.pl_mean is not None and trainer.pl_mean > 0


def test_a_penalty_overflowing_under_a_loss_scaler_backs_the_scale_off_instead_of_rolling_back(dataset, monkeypatch):
    overflowing = lambda reals, logits, kind, scale=1.0: torch.full((reals.shape[0],), float("inf"))  # noqa: E731
    monkeypatch.setattr("training.trainer.gradient_penalty", overflowing)
    trainer = _trainer(dataset)
    trainer.scaler_D = torch.amp.GradScaler("cpu", init_scale=1024.0)  # as fp16 training has on a GPU
    before = [p.detach().clone() for p in trainer.D.parameters()]
    stats = trainer.step(gp=True, pl=False)
    assert (stats["nonfinite"], stats["overflow_d"], stats["overflow_g"]) == (0.0, 1.0, 0.0)
    assert trainer.scaler_D.get_scale() == 512.0 and trainer.step_index == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.D.parameters()))  # D skipped this step
    unscaled = _trainer(dataset)  # without a scaler nothing else would catch it: the step fails, to be rolled back
    assert unscaled.step(gp=True, pl=False)["nonfinite"] == 1.0 and unscaled.step_index == 0


def test_a_discriminator_with_minibatch_std_trains_with_finite_losses_and_resumes_with_it(dataset, tmp_path):
    trainer = _trainer(dataset, minibatch_std=2)
    assert trainer.D.minibatch_std is not None and trainer.D.minibatch_std.group == 2
    stats = [trainer.step() for _ in range(2)]
    assert all(np.isfinite([s["loss_d"], s["loss_g"], s["penalty_gp"]]).all() for s in stats)
    cfg = training_preset("tiny").replace(total_kimg=0.004, minibatch_std=2)
    train(cfg, dataset, tmp_path / "run", CPU, bar=False)
    resumed = resolve_config(tmp_path / "run", training_preset("tiny"), {})
    assert resumed.minibatch_std == 2


def test_a_minibatch_std_group_that_the_micro_batch_would_shrink_is_refused(dataset, tmp_path):
    tiny = training_preset("tiny").replace(total_kimg=0.004)  # micro_batch 2
    for settings, message in (({"minibatch_std": 4}, "minibatch_std 4 does not divide micro_batch 2, so the "
                               "discriminator would compare groups of 2 volume\\(s\\), not 4: use a --micro-batch that is a "
                               "multiple of 4, or --set minibatch_std=2"),
                              ({"minibatch_std": 2, "micro_batch": 1}, r"groups of 1 volume\(s\), not 2: .*"
                               r"--set minibatch_std=0 \(no layer\)")):
        with pytest.raises(InputError, match=message):
            train(tiny.replace(**settings), dataset, tmp_path / "new", CPU, bar=False)
    assert not (tmp_path / "new").exists()
    train(tiny.replace(minibatch_std=2), dataset, tmp_path / "run", CPU, bar=False)
    with pytest.raises(InputError, match="compares groups of 2 volumes in its minibatch_std layer \\(micro_batch 2\\); "
                                         "micro_batch 1 would make them 1: resume with --micro-batch 2 or another "
                                         "multiple of 2"):
        train(resolve_config(tmp_path / "run", tiny, {"micro_batch": 1, "total_kimg": 0.008}), dataset,
              tmp_path / "run", CPU, bar=False)
    bigger = resolve_config(tmp_path / "run", tiny, {"micro_batch": 4, "total_kimg": 0.008})  # groups of 2 still
    assert train(bigger, dataset, tmp_path / "run", CPU, bar=False).step == 2


def test_resuming_from_a_saved_state_gives_bit_identical_next_steps(dataset, tmp_path):
    cfg = training_preset("tiny").replace(total_kimg=0.012)  # 3 steps of 4 volumes: GP + PL, plain, GP + PL
    straight = train(cfg, dataset, tmp_path / "straight", CPU, bar=False)
    first = train(cfg, dataset, tmp_path / "resumed", CPU, max_time_s=1e-9, bar=False)
    assert (first.step, first.finished) == (1, False)
    second = train(cfg, dataset, tmp_path / "resumed", CPU, bar=False)
    assert straight.step == second.step == 3
    a = dict(_tensors(load_state(find_state(tmp_path / "straight"))["trainer"]))
    b = dict(_tensors(load_state(find_state(tmp_path / "resumed"))["trainer"]))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


def test_running_a_finished_runs_command_again_keeps_both_resume_states_and_samples(dataset, tmp_path):
    from CircleOfWillisGANLib.files import file_sha256

    cfg = training_preset("tiny").replace(total_kimg=0.008)
    train(cfg.replace(total_kimg=0.004), dataset, tmp_path / "run", CPU, bar=False)
    train(cfg, dataset, tmp_path / "run", CPU, bar=False)

    def files():
        return {p.relative_to(tmp_path).as_posix(): file_sha256(p) for folder in ("checkpoints", "samples")
                for p in (tmp_path / "run" / folder).iterdir()}

    before = files()
    assert sorted(before) == ["run/checkpoints/latest.pt", "run/checkpoints/previous.pt",
                              "run/samples/kimg000000.004.png", "run/samples/kimg000000.008.png"]
    again = train(cfg, dataset, tmp_path / "run", CPU, bar=False)
    assert (again.step, again.finished, again.checkpoint) == (2, True, tmp_path / "run" / "checkpoints" / "latest.pt")
    assert files() == before  # previous.pt is still step 1's fallback


def test_a_run_folder_writes_samples_tensorboard_logs_and_a_config(dataset, tmp_path):
    result = train(training_preset("tiny").replace(total_kimg=0.008), dataset, tmp_path / "run", CPU, bar=False)
    assert result.finished and result.reason == "budget reached"
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["kimg000000.008.png"]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "config.json").is_file()


def test_a_last_step_on_a_snapshot_step_makes_one_final_sample_sheet_not_two(dataset, tmp_path, caplog):
    cfg = training_preset("tiny").replace(total_kimg=0.008, snapshot_kimg=0.004)  # snapshots at steps 1 and 2, the last
    with caplog.at_level(logging.INFO, logger="training.progress"):
        train(cfg, dataset, tmp_path / "run", CPU, bar=False)
    sheets = [r.getMessage().split(":")[0] for r in caplog.records if "morphology Fréchet distance" in r.getMessage()]
    assert sheets == ["kimg 0.00", "kimg 0.01"]


def test_without_the_bar_a_run_logs_its_progress(dataset, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="training.progress"):
        train(training_preset("tiny").replace(total_kimg=0.004), dataset, tmp_path / "run", CPU, bar=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "training.progress"]
    assert lines and lines[0].startswith("step 1 of 1 | kimg 0.00 | ") and " vol/s | D " in lines[0]


def test_bfloat16_on_the_cpu_runs_the_discriminators_small_blocks_in_float32(dataset):
    trainer = _trainer(dataset, precision="bf16")
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)
        return hook

    for name in ("blocks.0", "blocks.3", "final_conv"):
        trainer.D.get_submodule(name).register_forward_hook(record(name))
    stats = trainer.step()
    assert stats["nonfinite"] == 0.0
    assert seen == {"blocks.0": torch.bfloat16, "blocks.3": torch.float32, "final_conv": torch.float32}


@pytest.mark.parametrize("fast", [True, False])
def test_bfloat16_training_on_a_cpu_that_emulates_it_warns_to_use_float32(monkeypatch, caplog, fast):
    monkeypatch.setattr("training.trainer.cpu_has_fast_bf16", lambda: fast)
    with caplog.at_level(logging.WARNING, logger="training.trainer"):
        assert resolve_training_precision("bf16", torch.device("cpu"), channels_last=False).dtype == torch.bfloat16
        resolve_training_precision("fp32", torch.device("cpu"), channels_last=False)
    warnings = [r.getMessage() for r in caplog.records if r.name == "training.trainer"]
    assert len(warnings) == (0 if fast else 1)
    assert fast or "no bfloat16 kernels" in warnings[0] and warnings[0].endswith("start the run with --precision fp32")


def test_a_run_saved_without_a_loss_scaler_resumes_where_the_precision_needs_one_and_back(dataset, tmp_path,
                                                                                           monkeypatch):
    from training.trainer import Precision

    cfg = training_preset("tiny").replace(total_kimg=0.004)
    train(cfg, dataset, tmp_path / "run", CPU, bar=False)  # fp32 on the CPU: no scaler, an empty scaler state
    assert load_state(find_state(tmp_path / "run"))["trainer"]["scaler_G"] == {}
    with monkeypatch.context() as patch:  # as auto precision resolves to fp16 + scaler on a GPU without bf16
        patch.setattr("training.trainer.resolve_training_precision", lambda *args: Precision(torch.float32, True, False))
        result = train(cfg.replace(total_kimg=0.008), dataset, tmp_path / "run", CPU, bar=False)
    scaler = load_state(find_state(tmp_path / "run"))["trainer"]["scaler_G"]
    assert result.step == 2 and scaler["scale"] == torch.amp.GradScaler("cpu").get_scale()  # a fresh scaler
    assert train(cfg.replace(total_kimg=0.012), dataset, tmp_path / "run", CPU, bar=False).step == 3  # and back


def test_a_resumed_run_keeps_its_recipe_and_refuses_to_change_it(dataset, tmp_path):
    cfg = training_preset("tiny").replace(total_kimg=0.004)
    train(cfg, dataset, tmp_path / "run", CPU, bar=False)
    longer = resolve_config(tmp_path / "run", training_preset("paper"), {"total_kimg": 0.008})
    assert longer == cfg.replace(total_kimg=0.008)
    with pytest.raises(InputError, match="different g_lr"):
        resolve_config(tmp_path / "run", cfg, {"g_lr": 1.0})
    assert resolve_config(tmp_path / "run", cfg, {"architecture": "tiny"}) == cfg
    with pytest.raises(InputError, match="run of the tiny preset .* drop --preset"):
        resolve_config(tmp_path / "run", training_preset("paper"), {"architecture": "paper"})
    typed = {"adam_betas": [0.0, 0.99], "gp_interval": 2.0, "sample_seeds": [0, 1, 2, 3]}  # as --set parses them
    assert resolve_config(tmp_path / "run", cfg, typed) == cfg
    reordered = {"augment": ("contrast", "brightness", "cutout", "translation", "flip")}  # augment() ignores order
    assert resolve_config(tmp_path / "run", cfg, reordered) == cfg
    with pytest.raises(InputError, match="different augment"):
        resolve_config(tmp_path / "run", cfg, {"augment": ("contrast", "brightness", "cutout", "translation")})
    assert resolve_config(tmp_path / "run", cfg, {"micro_batch": 1}) == cfg.replace(micro_batch=1)  # more GPUs, less memory
    (tmp_path / "run" / "config.json").unlink()  # only checkpoints/ copied to another machine: the state has the recipe
    with pytest.raises(InputError, match="different g_lr"):
        resolve_config(tmp_path / "run", training_preset("tiny"), {"g_lr": 0.5})
    assert resolve_config(tmp_path / "run", training_preset("paper"), {"total_kimg": 0.008}) == cfg.replace(total_kimg=0.008)


def test_a_resumed_runs_new_micro_batch_is_checked_against_its_own_batch_not_the_presets(dataset, tmp_path, capsys):
    from cowgan.main import main

    run = ["train", "--data", str(dataset), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*run, "--preset", "tiny", "--batch", "12", "--micro-batch", "4", "--kimg", "0.012"]) == 0
    assert main([*run, "--micro-batch", "3", "--kimg", "0.024"]) == 0  # 3 divides the run's 12, not paper's 32
    state = load_state(find_state(tmp_path / "run"))
    assert (state["trainer"]["step"], state["config"]["batch"], state["config"]["micro_batch"]) == (2, 12, 3)
    capsys.readouterr()
    assert main([*run, "--micro-batch", "5"]) == 2
    assert "batch 12 must be a positive multiple of micro_batch 5" in capsys.readouterr().err


def test_compile_on_the_cpu_is_refused_before_the_run_folder_is_written(dataset, tmp_path):
    (tmp_path / "mine").mkdir()
    for out in (tmp_path / "run", tmp_path / "new" / "runs" / "run", tmp_path / "mine"):
        with pytest.raises(InputError, match="--compile needs a CUDA GPU .*this run is on cpu: leave it out"):
            train(training_preset("tiny").replace(compile=True), dataset, out, CPU, bar=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"] and list((tmp_path / "mine").iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: run folders are not locked on Windows")
def test_a_run_folder_in_use_is_refused_until_its_run_ends_even_by_a_kill(dataset, tmp_path, capsys):
    import subprocess

    from cowgan.main import main

    run = tmp_path / "run"
    train(training_preset("tiny").replace(total_kimg=0.004), dataset, run, CPU, bar=False)
    saved = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    hold = ("import sys, time; from pathlib import Path; from training.lock import run_folder_lock\n"
            "with run_folder_lock(Path(sys.argv[1])) as held:\n    print(held, flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert holder.stdout.readline() == "True\n"  # as a `cowgan train` on the same --out holds it
        command = ["train", "--data", str(dataset), "--out", str(run), "--kimg", "0.008", "--no-progress"]
        assert main(command) == 2
        assert f"is in use by another `cowgan train` (process {holder.pid} on " in capsys.readouterr().err
        assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == saved
    finally:
        holder.kill()  # as a crash or the OOM killer ends a run: the system lets its lock go
        holder.wait()
    assert main(command) == 0 and load_state(find_state(run))["trainer"]["step"] == 2


def test_the_nan_guard_rolls_back_to_the_last_good_state_and_says_so(dataset, caplog):
    trainer = _trainer(dataset)
    guard = NanGuard(trainer, every=2)
    for _ in range(2):
        trainer.step()
        guard.after_step()
    good = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    trainer.step()
    guard.after_step()
    with torch.no_grad():
        trainer.G.synthesis.blocks[0].conv1.weight.fill_(float("nan"))
    stats = trainer.step()
    assert stats["nonfinite"] == 1.0 and trainer.step_index == 3
    with caplog.at_level(logging.WARNING):
        guard.rollback(stats)
    assert "step 3: non-finite discriminator loss or gradient; rolled back to step 2" in caplog.text
    assert trainer.step_index == 2 and trainer.rollbacks == 1
    assert all(torch.equal(good[k], v) for k, v in trainer.G.state_dict().items())
    assert trainer.step()["nonfinite"] == 0.0
    from training.guard import TrainingDiverged

    guard.consecutive = guard.max_rollbacks  # one more failure is one too many; the advice must work on a saved run
    with pytest.raises(TrainingDiverged, match=r"lower the learning rate \(--lr\) or use --precision fp32; a run that "
                                               r"has saved keeps its own settings, so start a new one .*--init RUN "
                                               r"--out NEW_RUN"):
        guard.rollback(stats)


def test_the_data_order_shows_every_volume_once_per_epoch_and_is_reproducible():
    order = DataOrder(count=5, seed=3)
    first = order.indices(0, 10)
    assert sorted(first[:5].tolist()) == sorted(first[5:].tolist()) == [0, 1, 2, 3, 4]
    assert not torch.equal(first[:5], first[5:])
    assert torch.equal(DataOrder(5, 3).indices(3, 4), first[3:7])


def test_a_batch_that_does_not_split_over_processes_is_explained():
    with pytest.raises(InputError, match="multiple of 16"):
        TrainConfig(batch=24, micro_batch=8).accumulation(2)


def test_a_ctrl_c_echoed_within_the_grace_period_is_ignored_and_a_later_one_interrupts(monkeypatch):
    import os
    import signal
    import time

    from training.loop import StopRequests

    with StopRequests() as stop:  # under torchrun a worker gets the terminal's Ctrl-C and torchrun's copy 1 ms later
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.002)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        except KeyboardInterrupt:
            pytest.fail("the echoed Ctrl-C interrupted the run instead of letting it save")
        assert stop.requested
        monkeypatch.setattr("training.loop.SECOND_CTRL_C_GRACE_S", 0.05)
        time.sleep(0.1)
        with pytest.raises(KeyboardInterrupt):  # a deliberate second Ctrl-C still stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)


@pytest.mark.parametrize("signals", [("SIGTERM",), ("SIGINT", "SIGINT")])
def test_sigterm_or_an_echoed_ctrl_c_saves_the_resume_state_and_exits_cleanly(dataset, tmp_path, signals):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cowgan", "train", "--data", str(dataset), "--out", str(run),
                             "--preset", "tiny", "--kimg", "100", "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((run / "tensorboard").glob("events.*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    for name in signals:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.002)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("stopped by a signal: step ") and "run the same command to resume" in out
    assert load_state(find_state(run))["trainer"]["step"] >= 1


def test_a_second_ctrl_c_or_a_sigterm_during_the_final_save_does_not_cut_it_short(dataset, tmp_path, monkeypatch):
    import signal

    import training.loop

    saving = training.loop._save

    def save_under_signals(*args, **kwargs):  # the signals arrive while the state is written, within the grace period
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        return saving(*args, **kwargs)

    monkeypatch.setattr(training.loop, "_save", save_under_signals)
    result = train(training_preset("tiny").replace(total_kimg=0.008), dataset, tmp_path / "run", CPU, bar=False)
    assert result.checkpoint is not None and load_state(result.checkpoint)["trainer"]["step"] == result.step == 2


def test_a_stop_that_comes_with_the_last_step_finishes_the_run_with_its_final_sample_sheet(dataset, tmp_path):
    run = tmp_path / "run"
    result = train(training_preset("tiny").replace(total_kimg=0.004), dataset, run, CPU, max_time_s=0.0, bar=False)
    assert (result.finished, result.reason, result.step) == (True, "budget reached", 1)
    assert len(list((run / "samples").glob("*.png"))) == 1


def test_a_temporary_state_left_by_a_save_killed_before_its_rename_is_removed_by_the_next_run(dataset, tmp_path):
    import shutil
    import socket
    import subprocess

    run = tmp_path / "run"
    cfg = training_preset("tiny").replace(total_kimg=0.004)
    train(cfg, dataset, run, CPU, bar=False)
    dying_save = ("import os, signal, sys, torch\nfrom training import state\nsave = torch.save\n"
                  "def dying_save(*args):\n    save(*args); os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer\n"
                  "torch.save = dying_save\nstate.save_state(sys.argv[1], state.load_state(state.find_state(sys.argv[1])))")
    killed = subprocess.Popen([sys.executable, "-c", dying_save, str(run)],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert killed.wait() == -9
    host, dead, alive = socket.gethostname(), killed.pid, os.getppid()
    left = run / "checkpoints" / f".latest.pt.{host}@{dead}.tmp"
    assert [p.name for p in (run / "checkpoints").glob(".*.tmp")] == [left.name]
    kept = [f".latest.pt.{host}@{alive}.tmp", f".latest.pt.other-host@{dead}.tmp"]  # may still be writing
    for name in (f".latest.pt.{dead}.tmp", *kept):  # the first as older versions named it
        shutil.copy(left, run / "checkpoints" / name)
    train(cfg.replace(total_kimg=0.008), dataset, run, CPU, bar=False)
    assert sorted(p.name for p in (run / "checkpoints").glob(".*.tmp")) == sorted(kept)


def test_the_nan_guards_snapshot_survives_the_steps_after_a_rollback(dataset):
    # Optimizer.load_state_dict keeps CPU tensors as they are: the snapshot must not become the live Adam state.
    trainer = _trainer(dataset)
    guard = NanGuard(trainer, every=1000)
    trainer.step()
    guard.remember()
    snapshot = {k: v.clone() for k, v in _tensors(guard._good)}
    guard.rollback({"loss_d": float("nan")})
    trainer.step()
    trainer.step()
    assert all(torch.equal(snapshot[k], v) for k, v in _tensors(guard._good))


def test_training_settings_of_the_wrong_type_are_explained():
    for name, value in (("ema_beta", "abc"), ("total_kimg", "abc"), ("adam_betas", 0.5), ("sample_seeds", 5),
                        ("gp_interval", 2.5), ("compile", "yes")):
        with pytest.raises(InputError, match=name):
            training_preset("tiny").replace(**{name: value})
    with pytest.raises(InputError, match="seed -1 is out of range"):
        training_preset("tiny").replace(seed=-1)  # as generate and project refuse it
    assert training_preset("tiny").replace(gp_interval=4.0, g_lr=1, adam_betas=[0, 0.9]).gp_interval == 4


def test_an_ada_speed_of_zero_that_would_freeze_p_against_a_target_is_refused():
    with pytest.raises(InputError, match="ada_kimg must be positive while ada_target is 0.6, got 0.0: .* or set "
                                         "ada_target=0 to keep p fixed"):
        training_preset("demo").replace(ada_kimg=0.0)
    assert training_preset("demo").replace(ada_kimg=0.0, ada_target=0.0).ada_kimg == 0.0  # p fixed: no speed needed


def test_a_negative_budget_or_decay_outside_zero_to_one_is_refused():
    for name, value in (("total_kimg", -1.0), ("pl_decay", 2.0), ("checkpoint_minutes", 0.0), ("adam_betas", (0.5, 1.5)),
                        ("sample_seeds", ()), ("g_lr", float("nan")), ("total_kimg", float("inf")),
                        ("gp_weight", float("nan")), ("minibatch_std", -1), ("ada_target", 60), ("ada_target", 1.0),
                        ("sample_seeds", tuple(range(65))), ("pl_start", -5), ("ema_start", -1),
                        ("max_rollbacks", -1)):
        with pytest.raises(InputError, match=name):
            training_preset("tiny").replace(**{name: value})


def test_a_damaged_run_config_is_named_with_what_to_do(tmp_path):
    import json

    from training.loop import RUN_CONFIG, resolve_config

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"state")
    (tmp_path / RUN_CONFIG).write_text("{")
    with pytest.raises(InputError, match="is damaged.*another --out"):
        resolve_config(tmp_path, training_preset("tiny"), {})
    stored = {"config": training_preset("tiny").to_dict(), "architecture": {}, "dataset": {}}
    for setting, value in (("batch", -4), ("architecture", "tiny2"), ("g_lr", "fast")):
        (tmp_path / RUN_CONFIG).write_text(json.dumps(dict(stored, config=dict(stored["config"], **{setting: value}))))
        with pytest.raises(InputError, match=f"config.json holds a setting no run can have \\(.*{setting}.*\\); the "
                                             "file was edited or damaged: undo the edit or restore it"):
            resolve_config(tmp_path, training_preset("tiny"), {})


@pytest.mark.parametrize("missing, package", [("scipy", "scipy"), ("skimage", "scikit-image")])
def test_a_missing_metrics_package_is_named_before_a_run_folder_is_made(dataset, tmp_path, monkeypatch, missing,
                                                                        package):
    from CircleOfWillisGANLib.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(MissingDependencyError, match=f"needs the Python package '{package}'"):
        train(training_preset("tiny").replace(total_kimg=0.004), dataset, tmp_path / "run", CPU, bar=False)
    assert not (tmp_path / "run").exists()


def test_a_run_folder_that_is_a_file_is_explained(dataset, tmp_path):
    from CircleOfWillisGANLib.errors import OutputError

    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        train(training_preset("tiny"), dataset, tmp_path / "run", CPU, bar=False)


def test_the_dataset_or_a_folder_of_other_files_is_refused_as_a_run_folder(dataset, tmp_path):
    from CircleOfWillisGANLib.errors import OutputError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's notes")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"model_type": "my own settings"}')
    for out, message in ((dataset, "is inside the dataset"), (dataset / "run", "is inside the dataset"),
                         (tmp_path / "mine", "holds other files and no training run"),
                         (tmp_path / "project", "holds other files and no training run")):
        with pytest.raises(OutputError, match=message):
            train(training_preset("tiny").replace(total_kimg=0.004), dataset, out, CPU, bar=False)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"] and not (dataset / "run").exists()
    assert (tmp_path / "project" / "config.json").read_text() == '{"model_type": "my own settings"}'


def test_another_programs_folder_with_checkpoints_keeps_its_config_json(dataset, tmp_path):
    import shutil

    from CircleOfWillisGANLib.errors import OutputError

    theirs = '{"model_type": "my own settings"}'
    (tmp_path / "tool" / "checkpoints").mkdir(parents=True)  # e.g. PyTorch Lightning's layout
    (tmp_path / "tool" / "checkpoints" / "epoch=1.ckpt").write_bytes(b"their weights")
    (tmp_path / "tool" / "config.json").write_text(theirs)
    cfg = training_preset("tiny").replace(total_kimg=0.004)
    with pytest.raises(OutputError, match="holds other files and no training run"):
        train(cfg, dataset, tmp_path / "tool", CPU, bar=False)
    train(cfg, dataset, tmp_path / "run", CPU, bar=False)
    shutil.copytree(tmp_path / "run" / "checkpoints", tmp_path / "mixed" / "checkpoints")  # a state beside their file
    (tmp_path / "mixed" / "config.json").write_text(theirs)
    for attempt in (lambda: train(cfg, dataset, tmp_path / "mixed", CPU, bar=False),
                    lambda: resolve_config(tmp_path / "mixed", cfg, {})):
        with pytest.raises(OutputError, match="config.json that `cowgan train` did not write, which a run would "
                                              "overwrite: choose another --out"):
            attempt()
    assert (tmp_path / "tool" / "config.json").read_text() == (tmp_path / "mixed" / "config.json").read_text() == theirs
    assert sorted(p.name for p in (tmp_path / "tool").iterdir()) == ["checkpoints", "config.json"]


def test_a_dataset_of_one_volume_or_with_a_damaged_shard_is_refused_before_training(tmp_path):
    one = write_tube_dataset(tmp_path / "one", count=1)
    with pytest.raises(InputError, match=r"holds 1 volume\(s\); training needs at least 2"):
        RealVolumes.open(one, CPU.device)
    data = write_tube_dataset(tmp_path / "ds", count=6)
    shard = sorted((data / "shards").glob("*.npy"))[1]
    array = np.load(shard)
    array[1, 3, 4, 5] = np.nan
    np.save(shard, array)
    with pytest.raises(InputError, match=f"shard .*{shard.name} holds NaN or infinite values \\(its volume 1\\): "
                                         "prepare the dataset again"):
        RealVolumes.open(data, CPU.device)


def test_resuming_on_the_same_volumes_prepared_otherwise_is_refused_naming_what_changed(tmp_path):
    import json

    from CircleOfWillisGANLib.errors import CheckpointError

    data = write_tube_dataset(tmp_path / "ds", count=4)
    train(training_preset("tiny").replace(total_kimg=0.004), data, tmp_path / "run", CPU, bar=False)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["data"]["normalisation"] = {"method": "percentile", "percentiles": [0.5, 99.9]}
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"prepared otherwise \(normalisation differ\)"):
        train(training_preset("tiny").replace(total_kimg=0.008), data, tmp_path / "run", CPU, bar=False)


def test_a_new_run_can_start_from_another_runs_networks_and_records_where_from(dataset, tmp_path):
    from CircleOfWillisGANLib.errors import CheckpointError

    cfg = training_preset("tiny").replace(total_kimg=0.008)
    train(cfg, dataset, tmp_path / "base", CPU, bar=False)
    base = load_state(find_state(tmp_path / "base"))
    other = write_tube_dataset(tmp_path / "other", count=5)
    tuned = cfg.replace(init=str(tmp_path / "base"), total_kimg=0.0, seed=1)
    train(tuned, other, tmp_path / "tuned", CPU, bar=False)
    state = load_state(find_state(tmp_path / "tuned"))
    assert state["trainer"]["step"] == 0 and state["progress"]["init_from"]["kimg"] == pytest.approx(0.008)
    for name in ("G", "D", "G_ema"):
        for key, value in base["trainer"][name].items():
            assert torch.equal(state["trainer"][name][key], value), f"{name}.{key}"
    assert state["trainer"]["opt_G"]["state"] == {}
    from training.export import export_run

    exported = export_run(tmp_path / "tuned", tmp_path / "tuned.safetensors")
    assert exported.metadata["provenance"]["init_from"] == state["progress"]["init_from"]

    averaging = tuned.replace(total_kimg=0.004, ema_start=100, ema_beta=0.9)  # one step, long before ema_start
    train(averaging, other, tmp_path / "averaging", CPU, bar=False)
    after = load_state(find_state(tmp_path / "averaging"))["trainer"]
    assert not torch.equal(after["G_ema"]["synthesis.const"], after["G"]["synthesis.const"])
    for key, source_ema in base["trainer"]["G_ema"].items():  # the source's EMA moved a tenth towards G, not replaced
        assert torch.allclose(after["G_ema"][key], source_ema.lerp(after["G"][key], 0.1), atol=1e-6), key

    with pytest.raises(InputError, match="holds no resume state"):
        train(cfg.replace(init=str(tmp_path / "missing")), other, tmp_path / "a", CPU, bar=False)
    smaller = write_tube_dataset(tmp_path / "smaller", count=5, shape=(8, 32, 32))
    with pytest.raises(CheckpointError, match="use the --preset of that run"):
        train(cfg.replace(init=str(tmp_path / "base")), smaller, tmp_path / "b", CPU, bar=False)
    reference = Path(__file__).resolve().parents[1] / "data" / "claim-golden" / "model_0.pt"
    with pytest.raises(CheckpointError, match="is a reference run of .*'latent_dim': 64.*but this run trains .*: use the "
                                              "--preset of its configuration .* a dataset of 64 x 64 voxels in-plane"):
        train(cfg.replace(init=str(reference)), other, tmp_path / "c", CPU, bar=False)
    with pytest.raises(InputError, match="is a model file, which holds the generator for generation only; .*pass the "
                                         "run folder it was exported from"):
        train(cfg.replace(init=str(tmp_path / "tuned.safetensors")), other, tmp_path / "d", CPU, bar=False)
    assert not any((tmp_path / name).exists() for name in "cd")
    with pytest.raises(CheckpointError, match="minibatch_std=0, but this run asks for 4: add --set minibatch_std=0"):
        train(cfg.replace(init=str(tmp_path / "base"), minibatch_std=4), other, tmp_path / "c", CPU, bar=False)


def _as_reference_checkpoint(G, D, G_ema, arch) -> dict:
    """Networks of this project written under the reference trainer's names (S, G live; SE, GE EMA; D), as
    REFERENCE.md lists them, with D's last layer negated (the reference scores real volumes low): the inverse of
    the import, to check that fine-tuning takes each tensor to its place."""
    gan = {}
    for live, (mapping, synthesis) in ((G, ("S", "G")), (G_ema, ("SE", "GE"))):
        state = live.state_dict()
        for i in range(arch.mapping_layers):
            for p in ("weight", "bias"):
                gan[f"{mapping}.net.{2 * i}.{p}"] = state[f"mapping.layers.{i}.{p}"]
        gan[f"{synthesis}.initial_block"] = state["synthesis.const"]
        for p in ("weight", "bias"):
            gan[f"{synthesis}.initial_conv.{p}"] = state[f"synthesis.input_conv.{p}"]
        for i in range(arch.num_blocks):
            src, dst = f"synthesis.blocks.{i}", f"{synthesis}.blocks.{i}"
            for n in (1, 2):
                gan[f"{dst}.conv{n}.weight"] = state[f"{src}.conv{n}.weight"]
                gan[f"{dst}.to_style{n}.weight"] = state[f"{src}.conv{n}.affine.weight"]
                gan[f"{dst}.to_style{n}.bias"] = state[f"{src}.conv{n}.affine.bias"]
                gan[f"{dst}.to_noise{n}.weight"] = state[f"{src}.noise{n}.weight"][:, None]
                gan[f"{dst}.to_noise{n}.bias"] = state[f"{src}.noise{n}.bias"]
            gan[f"{dst}.to_grayscale.conv.weight"] = state[f"{src}.to_image.weight"]
            gan[f"{dst}.to_grayscale.to_style.weight"] = state[f"{src}.to_image.affine.weight"]
            gan[f"{dst}.to_grayscale.to_style.bias"] = state[f"{src}.to_image.affine.bias"]
    names = {"residual": "conv_res", "conv1": "net.0", "conv2": "net.2", "down": "downsample.1"}
    for key, value in D.state_dict().items():
        parts = key.split(".")
        gan["D." + (".".join(parts[:2] + [names[parts[2]], parts[3]]) if parts[0] == "blocks" else key)] = (
            -value if parts[0] == "to_logit" else value)
    return {"GAN": gan}


def test_a_run_of_the_published_reference_is_fine_tuned_from_its_live_networks_ema_and_discriminator(dataset,
                                                                                                      tmp_path):
    from CircleOfWillisGANLib.generator import load_generator
    from CircleOfWillisGANLib.generator_model import GeneratorModel, init_weights
    from CircleOfWillisGANLib.networks.discriminator import Discriminator
    from training.export import export_run
    from training.trainer import dataset_architecture

    arch = dataset_architecture("tiny", (16, 32, 32), "reference")
    G, G_ema = (init_weights(GeneratorModel(arch), seed) for seed in (1, 2))
    D = init_weights(Discriminator(arch), 3)
    torch.save(_as_reference_checkpoint(G, D, G_ema, arch), tmp_path / "model_7.pt")
    (tmp_path / ".config.json").write_text('{"image_size": 32, "network_capacity": 1}')
    cfg = training_preset("tiny").replace(init=str(tmp_path / "model_7.pt"), total_kimg=0.0)
    train(cfg, dataset, tmp_path / "tuned", CPU, bar=False)
    state = load_state(find_state(tmp_path / "tuned"))
    assert state["config"]["noise_mode"] == "reference" and state["architecture"]["noise_mode"] == "reference"
    assert state["progress"]["init_from"]["state"] == str((tmp_path / "model_7.pt").resolve())
    for name, source in (("G", G), ("G_ema", G_ema), ("D", D)):
        for key, value in source.state_dict().items():
            assert torch.equal(state["trainer"][name][key], value), f"{name}.{key}"
    resumed = resolve_config(tmp_path / "tuned", cfg, {"total_kimg": 0.004})  # as `cowgan train` resumes it
    assert resumed.noise_mode == "reference"
    train(resumed, dataset, tmp_path / "tuned", CPU, bar=False)
    export_run(tmp_path / "tuned", tmp_path / "tuned.safetensors")
    gen = load_generator(tmp_path / "tuned.safetensors", device="cpu")
    assert gen.arch.noise_mode == "reference" and gen.generate(seeds=[1]).shape[-3:] == (16, 32, 32)
    noise = _trainer(dataset, noise_mode="reference")._noise(torch.Generator().manual_seed(0), 2)
    assert noise.shape == (2, 32, 32, 32, 1) and 0 <= noise.min() and noise.max() < 1  # the reference's cube
    with pytest.raises(CheckpointError, match="no minibatch standard-deviation layer, but this run asks for "
                                              "minibatch_std=2: add --set minibatch_std=0"):
        train(cfg.replace(minibatch_std=2), dataset, tmp_path / "std", CPU, bar=False)
    from safetensors.torch import save_file

    as_safetensors = tmp_path / "stored" / "model_7.safetensors"  # the GAN state dict saved as safetensors
    as_safetensors.parent.mkdir()
    save_file({k: v.contiguous() for k, v in _as_reference_checkpoint(G, D, G_ema, arch)["GAN"].items()},
              str(as_safetensors))
    train(cfg.replace(init=str(as_safetensors)), dataset, tmp_path / "from-safetensors", CPU, bar=False)
    stored = load_state(find_state(tmp_path / "from-safetensors"))["trainer"]
    assert all(torch.equal(stored["D"][key], value) for key, value in D.state_dict().items())
    again = training_preset("tiny").replace(init=str(tmp_path / "tuned"), total_kimg=0.0)  # a run tuned from one
    train(again, dataset, tmp_path / "again", CPU, bar=False)
    assert load_state(find_state(tmp_path / "again"))["architecture"]["noise_mode"] == "reference"
    deep = write_tube_dataset(tmp_path / "deep", count=3, shape=(64, 32, 32))
    with pytest.raises(CheckpointError, match="image size 32, which makes at most 32 slices, but this run's volumes "
                                              "have 64: prepare the dataset with at most 32 slices"):
        train(cfg, deep, tmp_path / "deep-run", CPU, bar=False)
    damaged = tmp_path / "cut" / "model_7.pt"
    damaged.parent.mkdir()
    damaged.write_bytes((tmp_path / "model_7.pt").read_bytes()[:20_000])
    with pytest.raises(CheckpointError, match="reference checkpoint .*model_7.pt is truncated or corrupt .*copy it "
                                              "again from the reference run's models/NAME/ folder"):
        train(cfg.replace(init=str(damaged)), dataset, tmp_path / "cut-run", CPU, bar=False)


def test_set_takes_true_false_and_seed_ranges_as_the_docs_write_them():
    import argparse

    from cowgan.commands.train import FLAGS, overrides_from

    args = argparse.Namespace(**{flag: None for flag in FLAGS}, compile=False,
                              set=["channels_last=false", "compile=True", "sample_seeds=0-3", "ema_beta=0.99"])
    from training.config import coerce_setting

    settings = overrides_from(args)
    assert settings == {"channels_last": False, "compile": True, "sample_seeds": (0, 1, 2, 3), "ema_beta": 0.99}
    assert {name: coerce_setting(name, value) for name, value in settings.items()} == settings  # the recipe takes them
