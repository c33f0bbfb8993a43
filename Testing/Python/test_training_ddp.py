"""Data parallelism: two gloo processes on the CPU compute the same gradients as one process."""

from __future__ import annotations

import os
import socket
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
