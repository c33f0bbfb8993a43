"""The report's plots as PNG bytes (matplotlib, off-screen): PRD curves, feature histograms, MS-SSIM and
nearest-training-correlation distributions, and grey MIP images."""

from __future__ import annotations

import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REAL_COLOUR = "#1f77b4"
FAKE_COLOUR = "#d62728"
BASELINE_COLOUR = "#7f7f7f"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def image_png(image: np.ndarray) -> bytes:
    """A uint8 grey image as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def prd_plot(curves: Sequence[Tuple[str, Dict[str, List[float]], str]]) -> bytes:
    """PRD curves (recall on x, precision on y), one per (label, curve, colour)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for label, curve, colour in curves:
        ax.plot(curve["recall"], curve["precision"], label=label, color=colour, lw=2)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="PRD")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def histogram_grid(real: np.ndarray, fake: np.ndarray, names: Sequence[str], columns: int = 4) -> bytes:
    """One small histogram per feature column, real and generated overlaid on shared bins."""
    plt = _pyplot()
    rows = (len(names) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.2 * rows))
    for j, ax in enumerate(np.ravel(axes)):
        if j >= len(names):
            ax.axis("off")
            continue
        both = np.concatenate([real[:, j], fake[:, j]])
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        ax.hist(real[:, j], bins=bins, alpha=0.55, color=REAL_COLOUR, label="real", density=True)
        ax.hist(fake[:, j], bins=bins, alpha=0.55, color=FAKE_COLOUR, label="generated", density=True)
        ax.set_title(names[j], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=4)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.set_yticks([])
    np.ravel(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def distribution_plot(series: Sequence[Tuple[str, Sequence[float], str]], xlabel: str, title: str,
                      marker: Optional[float] = None, marker_label: str = "") -> bytes:
    """Overlaid histograms of a few 1D samples (label, values, colour), with an optional vertical marker."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    values = [np.asarray(v, dtype=float) for _, v, _ in series if len(v)]
    if values:
        both = np.concatenate(values)
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 26)
        for label, v, colour in series:
            if len(v):
                ax.hist(v, bins=bins, alpha=0.55, color=colour, label=f"{label} (n={len(v)})", density=True)
    if marker is not None:
        ax.axvline(marker, color="black", ls="--", lw=1, label=marker_label)
    ax.set(xlabel=xlabel, title=title)
    ax.set_yticks([])
    ax.legend(fontsize=8)
    return _png(fig)
