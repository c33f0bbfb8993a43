"""What a run shows while it trains: a live bar (kimg, volumes/s, losses, augmentation p, ETA), or without the bar
a log line a minute (batch jobs), and TensorBoard."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

log = logging.getLogger(__name__)
# Scalar -> the stats flag that says it was computed this step (None: every step).
SCALARS = {"loss_d": None, "loss_g": None, "augment_p": None, "penalty_gp": "gp_applied",
           "penalty_pl": "pl_applied", "path_length": "pl_applied"}
LOG_LINE_SECONDS = 60.0


class Progress:
    """Progress of the main process; other processes get a silent instance (enabled=False)."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, batch: int, enabled: bool = True,
                 bar: bool = True) -> None:
        self.enabled = enabled
        self.batch = batch
        self.total_steps = total_steps
        self.rate: Optional[float] = None
        self._last = time.perf_counter()
        self._last_write = 0.0
        self._bar = None
        self._writer = None
        if not enabled:
            return
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", file=sys.stderr, dynamic_ncols=True,
                             desc="train")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except ImportError:
            log.warning("TensorBoard logging is off: `pip install tensorboard` to get loss curves in RUN/tensorboard")

    def update(self, step: int, kimg: float, stats: Dict[str, float]) -> None:
        """Record one finished step."""
        now = time.perf_counter()
        rate = self.batch / max(now - self._last, 1e-9)
        self._last = now
        self.rate = rate if self.rate is None else 0.9 * self.rate + 0.1 * rate
        if not self.enabled:
            return
        summary = (f"kimg {kimg:.2f} | {self.rate:.1f} vol/s | D {stats['loss_d']:.3f} G {stats['loss_g']:.3f} | "
                   f"p {stats['augment_p']:.2f}")
        if self._bar is not None:
            self._bar.update(1)
            if now - self._last_write > 0.5:
                self._bar.set_postfix_str(summary, refresh=False)
                self._last_write = now
        elif now - self._last_write >= LOG_LINE_SECONDS:
            log.info("step %d of %d | %s", step, self.total_steps, summary)
            self._last_write = now
        if self._writer is not None:
            for name, flag in SCALARS.items():
                if flag is None or stats[flag]:
                    self._writer.add_scalar(f"train/{name}", stats[name], step)
            self._writer.add_scalar("speed/volumes_per_s", self.rate, step)
            self._writer.add_scalar("progress/kimg", kimg, step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Log one scalar (e.g. a metric) to TensorBoard."""
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log a uint8 grey picture (the sample sheet)."""
        if self._writer is not None:
            self._writer.add_image(tag, image[None], step, dataformats="CHW")

    def message(self, text: str) -> None:
        """A line above the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            log.info(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
