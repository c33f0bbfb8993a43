"""The training run: resume or start, step until the kimg budget or --max-time, save on schedule and on signals.

Every process runs this loop; process 0 writes files. Decisions that depend on the clock or on signals are
taken together (one small all-reduce per step), so every process stops and saves at the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch

from CircleOfWillisGANLib import __version__
from CircleOfWillisGANLib.architecture import NOISE_MODES
from CircleOfWillisGANLib.benchmark import machine_description
from CircleOfWillisGANLib.errors import CheckpointError, CoWGANError, InputError, OutputError
from CircleOfWillisGANLib.outputs import timestamp
from CircleOfWillisGANLib.files import is_within, write_json
from CircleOfWillisGANLib.networks.discriminator import std_group_size
from CircleOfWillisGANLib.reference_import import is_reference_checkpoint, reference_networks

from .config import TrainConfig, coerce_setting
from .dataset import RealVolumes
from .distributed import ProcessGroup, all_reduce_sum, barrier
from .guard import NanGuard
from .lock import LOCK, lock_owner, run_folder_lock
from .progress import Progress
from .metrics import MorphologyDistance
from .samples import sample_volumes, write_sample_sheet
from .state import find_state, load_state, remove_abandoned_temporaries, save_state, to_cpu
from .trainer import Trainer

log = logging.getLogger(__name__)
# The recipe stays; micro_batch only splits the same batch differently (as another number of processes does)
RESUMABLE_OVERRIDES = ("total_kimg", "checkpoint_minutes", "snapshot_kimg", "max_rollbacks", "compile", "micro_batch")
RUN_CONFIG = "config.json"
# torchrun forwards a terminal's Ctrl-C to workers that got it themselves about 1 ms before: within this many seconds
# of the first, a Ctrl-C is that echo, not a second press, and must not interrupt the save
SECOND_CTRL_C_GRACE_S = 3.0


@dataclasses.dataclass
class RunResult:
    """How a call to `train` ended."""

    step: int
    kimg: float
    seconds: float
    finished: bool
    reason: str
    checkpoint: Optional[Path]


class StopRequests:
    """Turns SIGINT/SIGTERM into a request to save and stop at the end of the current step (a second Ctrl-C, later
    than SECOND_CTRL_C_GRACE_S after the first request, interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._first_request = 0.0
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested, self._first_request = True, time.monotonic()
        elif signum == signal.SIGINT and time.monotonic() - self._first_request > SECOND_CTRL_C_GRACE_S:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resolve_config(run_dir: Path, preset: TrainConfig, overrides: Dict[str, Any]) -> TrainConfig:
    """The config of a resumed run (its own, with only safe overrides) or `preset` with `overrides` for a new one;
    only the config that will run is validated (a resumed run's batch is its own, not the preset's)."""
    stored = Path(run_dir) / RUN_CONFIG
    state = find_state(run_dir)
    if state is None:
        return preset.replace(**overrides)
    if not stored.is_file():  # only checkpoints/ was copied: the resume state carries the recipe too
        saved = _stored_config(load_state(state)["config"], state)
    else:
        try:
            text = json.loads(stored.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{stored} is damaged ({exc.__class__.__name__}: {exc}): restore it from a backup, or "
                             "start a new run with another --out (`cowgan train --init` can start it from this run)"
                             ) from None
        if not _is_run_config(stored):
            raise OutputError(_foreign_config(run_dir))
        saved = _stored_config(text["config"], stored)
    changed = {k: v for k, v in overrides.items() if _differs(k, getattr(saved, k), v)}
    refused = sorted(k for k in changed if k not in RESUMABLE_OVERRIDES)
    if "architecture" in refused:
        raise InputError(f"{run_dir} is a run of the {saved.architecture} preset and a resumed run keeps its preset: "
                         f"drop --preset, or start a new run with another --out")
    if refused:
        raise InputError(f"{run_dir} is a run started with different {', '.join(refused)}; a resumed run can only "
                         f"change {', '.join(RESUMABLE_OVERRIDES)}: start a new run with another --out")
    return saved.replace(**changed)


def _stored_config(settings: Dict[str, Any], source: Path) -> TrainConfig:
    """The config a run stored in `source`, or an InputError saying the file was edited (train never writes a bad
    setting), with the way back."""
    try:
        return TrainConfig.from_dict(settings)
    except InputError as exc:
        raise InputError(f"{source} holds a setting no run can have ({exc}); the file was edited or damaged: undo the "
                         "edit or restore it from a backup; settings a resumed run may change are given with --set") from None


def _differs(name: str, saved: Any, value: Any) -> bool:
    """Whether a setting given for a resumed run changes the run's own (augmentations as a set: their order and
    repeats change nothing)."""
    value = coerce_setting(name, value)
    return set(saved) != set(value) if name == "augment" else saved != value


def train(cfg: TrainConfig, data_dir: Path, run_dir: Path, group: ProcessGroup, max_time_s: Optional[float] = None,
          bar: bool = True, guard_every: int = 200) -> RunResult:
    """Train (or resume) the run in `run_dir` on the dataset in `data_dir`; return how it ended. Refused while another
    `cowgan train` runs in `run_dir`: both would write the same resume states."""
    run_dir = Path(run_dir)
    with _run_folder_held(run_dir, Path(data_dir), group):
        return _train_locked(cfg, Path(data_dir), run_dir, group, max_time_s, bar, guard_every)


@contextlib.contextmanager
def _run_folder_held(run_dir: Path, data_dir: Path, group: ProcessGroup) -> Iterator[None]:
    """Check --out on every process and hold its lock on the main one for the block. Every process stops when one of
    them cannot start (a refused folder, a lock that cannot be created, another run holding it): a process left
    waiting for the others would hang until torchrun's timeout."""
    with contextlib.ExitStack() as stack:
        refused: Optional[CoWGANError] = None
        held = True
        try:
            _check_run_folder(run_dir, data_dir)
            held = stack.enter_context(run_folder_lock(run_dir, enabled=group.is_main))
        except (InputError, OutputError) as exc:
            refused = exc
        in_use, failed = all_reduce_sum(torch.tensor([0.0 if held else 1.0, 0.0 if refused is None else 1.0]), group)
        if refused is not None:
            raise refused
        if failed:
            raise OutputError(f"another process of this run cannot use --out {run_dir}: its error says why; fix that "
                              "and start the run again")
        if in_use:
            owner = lock_owner(run_dir)
            raise OutputError(f"--out {run_dir} is in use by another `cowgan train`{f' ({owner})' if owner else ''}: "
                              "wait for it to end or stop it, or choose another --out")
        yield


def _train_locked(cfg: TrainConfig, data_dir: Path, run_dir: Path, group: ProcessGroup, max_time_s: Optional[float],
                  bar: bool, guard_every: int) -> RunResult:
    """The run itself, on the process that holds the folder's lock and the processes that follow it."""
    data = RealVolumes.open(Path(data_dir), group.device)
    # first: it needs scipy and scikit-image, and says so before any work or a run folder that would be left behind
    metric = MorphologyDistance(data, data.manifest.get("data", {}).get("spacing_mm", (1.0, 1.0, 1.0)))
    source = _init_source(Path(cfg.init)) if cfg.init and find_state(run_dir) is None else None
    if source and source.noise_mode and source.noise_mode != cfg.noise_mode:
        cfg = cfg.replace(noise_mode=source.noise_mode)  # the networks were trained on that noise; they keep it
    trainer = Trainer(cfg, data, group)
    resumed = _resume(trainer, run_dir, data)
    _check_same_start(trainer.step_index, run_dir, group)
    origin = resumed.get("init_from") if resumed else (_initialise(trainer, source) if source else None)
    if not resumed:
        _check_minibatch_groups(cfg)
    if group.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_abandoned_temporaries(run_dir)
        write_json(run_dir / RUN_CONFIG, {"config": cfg.to_dict(), "architecture": trainer.arch.to_dict(),
                                          "dataset": {"path": str(Path(data_dir).resolve()), "count": data.count,
                                                      "fingerprint": data.fingerprint},
                                          "software_version": __version__})
    barrier(group)
    total_steps = math.ceil(cfg.total_kimg * 1000 / cfg.batch)
    progress = Progress(run_dir, total_steps, trainer.step_index, cfg.batch, enabled=group.is_main, bar=bar)
    if resumed:
        progress.message(f"resumed {run_dir} at step {trainer.step_index} ({trainer.kimg:.2f} kimg)")
    elif origin:
        progress.message(f"fine-tuning the networks of {origin['state']}"
                         + (f" ({origin['kimg']:.2f} kimg)" if origin["kimg"] is not None else " (a reference run)"))
    guard = NanGuard(trainer, every=guard_every, max_rollbacks=cfg.max_rollbacks)
    elapsed_before = float(resumed.get("elapsed_s", 0.0)) if resumed else 0.0
    start = last_save = time.monotonic()
    snapshot_steps = max(1, round(cfg.snapshot_kimg * 1000 / cfg.batch))
    reason, finished, sampled = "budget reached", True, None
    idle = bool(resumed) and trainer.step_index >= total_steps  # a finished run's command run again
    try:
        with StopRequests() as stop:
            while trainer.step_index < total_steps:
                stats = trainer.step()
                if stats["nonfinite"]:
                    guard.rollback(stats)
                    progress.message(f"non-finite loss: rolled back to step {trainer.step_index}")
                    continue
                guard.after_step()
                progress.update(trainer.step_index, trainer.kimg, stats)
                if trainer.step_index % snapshot_steps == 0:
                    _samples(trainer, run_dir, progress, metric)
                    sampled = trainer.step_index
                now = time.monotonic()
                flags = all_reduce_sum(torch.tensor([
                    float(stop.requested),
                    float(max_time_s is not None and now - start >= max_time_s),
                    float(now - last_save >= cfg.checkpoint_minutes * 60)]), group)
                if flags[0] or flags[1]:
                    reason = "stopped by a signal" if flags[0] else "--max-time reached"
                    finished = False
                    break
                if flags[2]:
                    _save(trainer, run_dir, data, elapsed_before + now - start, group, origin)
                    last_save = now
            if not finished and trainer.step_index >= total_steps:  # the stop came with the last step: it is done
                reason, finished = "budget reached", True
            seconds = elapsed_before + time.monotonic() - start
            # still under the stop handler, so a Ctrl-C echoed by torchrun or pressed again within the grace period,
            # or a SIGTERM, does not cut the save short; a save with no step would rotate the last state into
            # previous.pt and lose the older fallback
            path = find_state(run_dir) if idle else _save(trainer, run_dir, data, seconds, group, origin)
            if finished and not idle and sampled != trainer.step_index:  # the last step's snapshot is the final sheet
                _samples(trainer, run_dir, progress, metric)
    finally:
        progress.close()
    return RunResult(trainer.step_index, trainer.kimg, seconds, finished, reason, path)


def _check_run_folder(run_dir: Path, data_dir: Path) -> None:
    """--out is a new folder, an empty one or a run of `cowgan train`, never the dataset or another folder of files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"--out {run_dir} is a file, not a folder: pass a new or existing run folder")
    if is_within(run_dir, data_dir):
        raise OutputError(f"--out {run_dir} is inside the dataset {data_dir}: choose a run folder outside it")
    config = run_dir / RUN_CONFIG
    has_state = find_state(run_dir) is not None
    if has_state and config.exists() and not _is_run_config(config):  # the run would overwrite it
        raise OutputError(_foreign_config(run_dir))
    is_run = has_state or _is_run_config(config)  # a checkpoints/ folder alone is any program's
    if run_dir.is_dir() and not is_run and any(entry.name != LOCK for entry in run_dir.iterdir()):
        raise OutputError(f"--out {run_dir} holds other files and no training run: choose a new or empty folder "
                          "(or the folder of the run to resume)")


def _is_run_config(path: Path) -> bool:
    """Whether `path` is a config.json that `cowgan train` wrote (another program's file of that name is not)."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(stored, dict) and {"config", "architecture", "dataset"} <= set(stored)
            and isinstance(stored["config"], dict))


def _foreign_config(run_dir: Path) -> str:
    """The refusal for a resume state beside a config.json of another program, which the run would overwrite."""
    return (f"--out {run_dir} holds a {RUN_CONFIG} that `cowgan train` did not write, which a run would overwrite: "
            "choose another --out (or, if the folder's checkpoints/ are a run of `cowgan train`, move that file out)")


def _resume(trainer: Trainer, run_dir: Path, data: RealVolumes) -> Dict[str, Any]:
    path = find_state(run_dir)
    if path is None:
        return {}
    state = load_state(path)
    if state["dataset"]["fingerprint"] != data.fingerprint:
        raise CheckpointError(f"{run_dir} was trained on a different dataset (fingerprint "
                              f"{state['dataset']['fingerprint']}, this one {data.fingerprint}): pass the run's --data "
                              "or start a new run with another --out")
    before = state["dataset"].get("preparation")  # absent in states of older versions
    if before is not None and before != data.preparation:
        changed = [key for key in sorted({**before["data"], **data.preparation["data"]})
                   if before["data"].get(key) != data.preparation["data"].get(key)]
        if before["shape_dhw"] != data.preparation["shape_dhw"]:
            changed.insert(0, "shape")
        if before["preparation"] != data.preparation["preparation"]:
            changed.append("preparation settings")
        raise CheckpointError(f"{run_dir} was trained on these volumes prepared otherwise ({', '.join(changed)} "
                              "differ): pass the dataset the run was trained on, or start a new run with another --out")
    if state["architecture"] != trainer.arch.to_dict():
        raise CheckpointError(f"{run_dir} holds a {state['architecture']} model, not {trainer.arch.to_dict()}: "
                              "use the run's own --preset or start a new run")
    _check_same_groups(_stored_config(state["config"], path), trainer.cfg, run_dir)
    trainer.load_state_dict(state["trainer"])
    return state["progress"]


def _groups(cfg: TrainConfig) -> int:
    """How many volumes D's minibatch_std layer compares (the largest group that divides a micro-batch); 0: no layer."""
    return std_group_size(cfg.micro_batch, cfg.minibatch_std) if cfg.minibatch_std else 0


def _check_minibatch_groups(cfg: TrainConfig) -> None:
    """A new run's minibatch_std must divide its micro_batch: otherwise D silently compares smaller groups (with
    micro_batch 1 none at all, and the layer tells it nothing)."""
    used = _groups(cfg)
    if used != cfg.minibatch_std:
        fix = f"--set minibatch_std={used}" if used > 1 else "--set minibatch_std=0 (no layer)"
        raise InputError(f"minibatch_std {cfg.minibatch_std} does not divide micro_batch {cfg.micro_batch}, so the "
                         f"discriminator would compare groups of {used} volume(s), not {cfg.minibatch_std}: use a "
                         f"--micro-batch that is a multiple of {cfg.minibatch_std}, or {fix}")


def _check_same_groups(saved: TrainConfig, cfg: TrainConfig, run_dir: Path) -> None:
    """A resumed run's new micro_batch must keep the group size that D's minibatch_std layer was trained with."""
    before, after = _groups(saved), _groups(cfg)
    if before != after:
        others = f" or another multiple of {before}" if before == saved.minibatch_std else ""
        raise InputError(f"{run_dir}'s discriminator compares groups of {before} volumes in its minibatch_std layer "
                         f"(micro_batch {saved.micro_batch}); micro_batch {cfg.micro_batch} would make them {after}: "
                         f"resume with --micro-batch {saved.micro_batch}{others}")


def _check_same_start(step: int, run_dir: Path, group: ProcessGroup) -> None:
    """Every process starts from the same step, or all stop: a process that found no resume state (a run folder on
    a node's own disk) would average its gradients with another's weights, and the run would hang."""
    if not group.distributed:
        return
    total, squares = all_reduce_sum(torch.tensor([step, step * step], dtype=torch.float64), group).tolist()
    if group.world_size * squares != total * total:  # equal steps everywhere, exactly then
        raise CheckpointError(f"the processes start from different steps (this one from {step}): each looks for its "
                              f"resume state in {run_dir}, so pass an --out on storage every node shares")


@dataclasses.dataclass(frozen=True)
class InitSource:
    """What `--init` names: a resume state of `cowgan train`, or a checkpoint of the published reference."""

    path: Path
    reference: bool
    noise_mode: Optional[str]  # the convention its generator was trained with, where known before loading it


def _init_source(source: Path) -> InitSource:
    """The file `--init` starts from and its kind, found before the trainer is built (which needs the noise
    convention). A reference checkpoint too damaged to be recognised, but named like one (model_N.pt outside a
    run's checkpoints/), stays one, so its reader names the damage."""
    path = find_state(source) if source.is_dir() else source
    if path is None or not path.is_file():
        raise InputError(f"--init {source} holds no resume state: pass a run folder written by `cowgan train` "
                         "(or its checkpoints/latest.pt, or a reference run's models/NAME/model_N.pt)")
    if is_reference_checkpoint(path):
        return InitSource(path, True, "reference")
    if path.name.lower().endswith(".safetensors"):
        raise InputError(f"--init {path} is a model file, which holds the generator for generation only; fine-tuning "
                         "needs a run's resume state with its discriminator: pass the run folder it was exported from")
    if re.fullmatch(r"model_\d+\.pt", path.name) and path.parent.name != "checkpoints":
        return InitSource(path, True, None)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    try:
        mode = json.loads((run / RUN_CONFIG).read_text(encoding="utf-8"))["architecture"]["noise_mode"]
    except (OSError, ValueError, KeyError, TypeError):
        mode = None  # no readable config.json: the state's own architecture is compared when it is loaded
    return InitSource(path, False, mode if mode in NOISE_MODES else None)


def _initialise(trainer: Trainer, source: InitSource) -> Dict[str, Any]:
    """Load the networks, not the optimisers, step or augmentation strength, of another run: fine-tuning."""
    if source.reference:
        return _initialise_from_reference(trainer, source.path)
    path = source.path
    state = load_state(path)
    if state["architecture"] != trainer.arch.to_dict():
        noise = state["architecture"].get("noise_mode")
        fix = (f"add --set noise_mode={noise}" if dict(state["architecture"], noise_mode=trainer.arch.noise_mode)
               == trainer.arch.to_dict() else "use the --preset of that run and a dataset of its volume shape")
        raise CheckpointError(f"--init {path} holds a {state['architecture']} model, but this run trains "
                              f"{trainer.arch.to_dict()}: {fix}")
    source_std = _stored_config(state["config"], path).minibatch_std
    if source_std != trainer.cfg.minibatch_std:
        raise CheckpointError(f"--init {path} has a discriminator with minibatch_std={source_std}, but this run asks "
                              f"for {trainer.cfg.minibatch_std}: add --set minibatch_std={source_std}")
    for name in ("G", "D", "G_ema"):
        getattr(trainer, name).load_state_dict(state["trainer"][name])
    return {"state": str(path.resolve()), "step": state["progress"]["step"], "kimg": state["progress"]["kimg"],
            "dataset_fingerprint": state["dataset"]["fingerprint"]}


def _initialise_from_reference(trainer: Trainer, path: Path) -> Dict[str, Any]:
    """Load a reference run's live generator (S, G), EMA generator (SE, GE) and discriminator D, converted exactly.
    No file records the reference's slice count, so it is this run's (its dataset's), as `import-reference --depth`."""
    arch, networks = reference_networks(str(path))
    depth, side = trainer.arch.output_shape[0], arch.output_shape[1]
    if depth > side:
        raise CheckpointError(f"--init {path} is a reference run of image size {side}, which makes at most {side} "
                              f"slices, but this run's volumes have {depth}: prepare the dataset with at most {side} "
                              f"slices (`cowgan prepare --shape {min(side, 32)} {side} {side}`)")
    arch = dataclasses.replace(arch, output_shape=(depth, side, side))
    if arch != trainer.arch:
        raise CheckpointError(f"--init {path} is a reference run of {arch.to_dict()}, but this run trains "
                              f"{trainer.arch.to_dict()}: use the --preset of its configuration (paper for the "
                              f"published one) and a dataset of {arch.output_shape[1]} x {arch.output_shape[2]} voxels "
                              "in-plane; a reference run of another configuration matches no preset")
    if trainer.cfg.minibatch_std:
        raise CheckpointError(f"--init {path}: the reference's discriminator has no minibatch standard-deviation layer, "
                              f"but this run asks for minibatch_std={trainer.cfg.minibatch_std}: add --set "
                              "minibatch_std=0")
    for name, state in networks.items():
        getattr(trainer, name).load_state_dict(state)
    return {"state": str(path.resolve()), "step": None, "kimg": None, "dataset_fingerprint": None}


def _save(trainer: Trainer, run_dir: Path, data: RealVolumes, seconds: float, group: ProcessGroup,
          origin: Optional[Dict[str, Any]]) -> Optional[Path]:
    path = None
    if group.is_main:
        path = save_state(run_dir, {
            "trainer": to_cpu(trainer.state_dict()), "config": trainer.cfg.to_dict(),
            "architecture": trainer.arch.to_dict(),
            "dataset": {"fingerprint": data.fingerprint, "count": data.count, "manifest_data": data.manifest.get("data", {}),
                        "preparation": data.preparation},
            "progress": {"elapsed_s": seconds, "step": trainer.step_index, "kimg": trainer.kimg, "saved": timestamp(),
                         "device": machine_description(group.device), "world_size": group.world_size,
                         "precision": str(trainer.precision.dtype).replace("torch.", ""), "init_from": origin},
        })
    barrier(group)
    return path


def _samples(trainer: Trainer, run_dir: Path, progress: Progress, metric: MorphologyDistance) -> None:
    """Sample sheet of the EMA generator and its morphology distance to the real set, on the main process."""
    if not progress.enabled:
        return
    seeds = trainer.cfg.sample_seeds
    volumes = sample_volumes(trainer.G_ema, seeds, trainer.device)
    path = run_dir / "samples" / f"kimg{trainer.kimg:010.3f}.png"
    progress.image("samples/ema", write_sample_sheet(path, volumes, seeds, metric.spacing), trainer.step_index)
    if len(seeds) >= 2:
        distance = metric(volumes)
        progress.scalar("metrics/morphology_frechet_distance", distance, trainer.step_index)
        progress.message(f"kimg {trainer.kimg:.2f}: morphology Fréchet distance to the real set {distance:.3g}")
