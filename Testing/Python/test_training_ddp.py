"""Data parallelism: two gloo processes on the CPU compute the same gradients as one process."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from training.config import training_preset
from training.dataset import RealVolumes
from training.distributed import ProcessGroup, init_process_group, shutdown
from training.trainer import Trainer
from training_fixtures import write_tube_dataset

# beta1 = 0 makes Adam's first moment after one step equal to the (averaged) gradient; a vanishing learning rate
# keeps D unchanged for the generator phase, so both phases' gradients can be compared exactly.
CONFIG = dict(batch=4, micro_batch=2, adam_betas=(0.0, 0.99), g_lr=1e-30)


def _gradients(trainer: Trainer) -> dict:
    trainer.step()
    return {name: opt.state[p]["exp_avg"].clone()
            for opt, net, tag in ((trainer.opt_D, trainer.D, "D"), (trainer.opt_G, trainer.G, "G"))
            for name_p, p in net.named_parameters() for name in [f"{tag}.{name_p}"]}


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    group = init_process_group("cpu")
    trainer = Trainer(training_preset("tiny").replace(**CONFIG), RealVolumes.open(Path(data), group.device), group)
    torch.save(_gradients(trainer), Path(out) / f"rank{rank}.pt")
    shutdown(group)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_compute_the_same_gradients_as_one_process(tmp_path):
    data = write_tube_dataset(tmp_path / "ds", count=6)
    single = Trainer(training_preset("tiny").replace(**CONFIG), RealVolumes.open(data, torch.device("cpu")),
                     ProcessGroup(device=torch.device("cpu")))
    assert single.accumulation == 2
    expected = _gradients(single)
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, grad in expected.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for name, g in expected.items() if name.startswith("G."))


def _resuming_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    from CircleOfWillisGANLib.errors import CheckpointError
    from training.loop import train

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    group = init_process_group("cpu")
    try:  # each process sees its own run folder, as on nodes' own disks: only rank 0's holds the run
        train(training_preset("tiny").replace(total_kimg=0.008), Path(data), Path(out) / f"node{rank}" / "run", group,
              bar=False)
        outcome = "trained"
    except CheckpointError as exc:
        outcome = str(exc)
    (Path(out) / f"outcome{rank}.txt").write_text(outcome)
    shutdown(group)


def _run_two(worker, data: Path, out: Path) -> bool:
    """Run `worker` on two gloo processes; whether both ended within 3 minutes (mismatched collectives hang)."""
    workers = mp.spawn(worker, args=(2, _free_port(), str(data), str(out)), nprocs=2, join=False)
    deadline = time.monotonic() + 180
    finished = False
    while not finished and time.monotonic() < deadline:  # join returns as each process ends
        finished = workers.join(timeout=max(1.0, deadline - time.monotonic()))
    for process in workers.processes:  # fail, do not wait for ever
        process.kill()
    return finished


def test_processes_that_would_resume_from_different_steps_all_stop_with_the_fix(tmp_path):
    from training.loop import train

    data = write_tube_dataset(tmp_path / "ds", count=6)
    train(training_preset("tiny").replace(total_kimg=0.004), data, tmp_path / "node0" / "run",
          ProcessGroup(device=torch.device("cpu")), bar=False)
    assert _run_two(_resuming_worker, data, tmp_path), "the processes hung on mismatched steps"
    for rank in range(2):
        outcome = (tmp_path / f"outcome{rank}.txt").read_text()
        assert "the processes start from different steps" in outcome and "storage every node shares" in outcome


def _train_and_record(rank: int, world: int, port: int, data: str, out: str, run: Path) -> None:
    """Train the tiny preset on `run` as process `rank` of `world`; write how it ended to out/outcome{rank}.txt."""
    from CircleOfWillisGANLib.errors import OutputError
    from training.loop import train

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    group = init_process_group("cpu")
    try:
        result = train(training_preset("tiny").replace(total_kimg=0.004), Path(data), run, group, bar=False)
        outcome = f"trained {result.step}"
    except OutputError as exc:
        outcome = str(exc)
    (Path(out) / f"outcome{rank}.txt").write_text(outcome)
    shutdown(group)


def _shared_folder_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    _train_and_record(rank, world, port, data, out, Path(out) / "run")


def test_a_run_folder_in_use_stops_every_process_and_a_free_one_trains_on_all(tmp_path):
    from training.lock import run_folder_lock

    data = write_tube_dataset(tmp_path / "ds", count=6)
    with run_folder_lock(tmp_path / "run") as held:  # another `cowgan train` on the same --out
        assert held
        assert _run_two(_shared_folder_worker, data, tmp_path), "the other processes waited for the main one"
    assert all("is in use by another `cowgan train`" in (tmp_path / f"outcome{r}.txt").read_text() for r in range(2))
    assert _run_two(_shared_folder_worker, data, tmp_path), "the processes hung on the main one's lock"
    assert [(tmp_path / f"outcome{r}.txt").read_text() for r in range(2)] == ["trained 1", "trained 1"]


def _own_folder_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    _train_and_record(rank, world, port, data, out, Path(out) / f"node{rank}" / "run")  # as on nodes' own disks


def test_a_main_process_that_cannot_lock_its_run_folder_stops_the_others_with_it(tmp_path):
    data = write_tube_dataset(tmp_path / "ds", count=6)
    (tmp_path / "node0").write_text("a file where the main process's run folder should go")
    assert _run_two(_own_folder_worker, data, tmp_path), "the other process waited for the main one"
    assert "cannot create the run folder's lock" in (tmp_path / "outcome0.txt").read_text()
    assert "another process of this run cannot use --out" in (tmp_path / "outcome1.txt").read_text()
    assert not (tmp_path / "node1" / "run").exists()
    (tmp_path / "node0").unlink()
    (tmp_path / "node1").mkdir(exist_ok=True)
    (tmp_path / "node1" / "notes.txt").write_text("the user's file")
    (tmp_path / "node1" / "run").write_text("a file, not a run folder")
    assert _run_two(_own_folder_worker, data, tmp_path), "the main process waited for the other one"
    assert "another process of this run cannot use --out" in (tmp_path / "outcome0.txt").read_text()
    assert "is a file, not a folder" in (tmp_path / "outcome1.txt").read_text()
    assert not (tmp_path / "node0" / "run").exists() and (tmp_path / "node1" / "notes.txt").exists()
