"""The NaN/Inf guard: keeps a recent good state in memory and rolls the trainer back to it after a bad step."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from CircleOfWillisGANLib.errors import CoWGANError

from .state import to_cpu

log = logging.getLogger(__name__)


class TrainingDiverged(CoWGANError):
    """The losses stayed non-finite after several rollbacks."""


class NanGuard:
    """Remembers the trainer's state every `every` steps; on a non-finite step restores it with fresh randomness."""

    def __init__(self, trainer: Any, every: int = 200, max_rollbacks: int = 5) -> None:
        self.trainer = trainer
        self.every = max(1, every)
        self.max_rollbacks = max_rollbacks
        self.consecutive = 0
        self.failed_step = -1
        self._good: Optional[Dict[str, Any]] = None
        self.remember()

    def remember(self) -> None:
        """Keep a CPU copy of the current state as the rollback target."""
        self._good = to_cpu(self.trainer.state_dict())

    def after_step(self) -> None:
        """Call after every good step: refresh the rollback target on schedule, reset the failure count."""
        step = self.trainer.step_index
        if step > self.failed_step:
            self.consecutive = 0
        if step % self.every == 0:
            self.remember()

    def rollback(self, stats: Dict[str, float]) -> None:
        """Restore the last good state and change the random draws, or raise TrainingDiverged."""
        bad_step = self.trainer.step_index
        self.consecutive += 1
        self.failed_step = max(self.failed_step, bad_step)
        if self.consecutive > self.max_rollbacks:
            raise TrainingDiverged(
                f"the losses were NaN/Inf {self.consecutive} times in a row near step {bad_step}: lower the "
                "learning rate (--lr) or use --precision fp32; a run that has saved keeps its own settings, so start "
                "a new one from its last saved networks with `--init RUN --out NEW_RUN` and those options")
        rollbacks = self.trainer.rollbacks + 1
        # A copy: Optimizer.load_state_dict keeps CPU tensors as they are, so later steps would update the snapshot.
        self.trainer.load_state_dict(to_cpu(self._good))
        self.trainer.rollbacks = rollbacks
        phase = "generator" if "loss_g" in stats else "discriminator"
        log.warning("step %d: non-finite %s loss or gradient; rolled back to step %d (rollback %d of at most %d in a "
                    "row) and continuing with fresh random draws", bad_step, phase, self.trainer.step_index,
                    self.consecutive, self.max_rollbacks)
