"""Smooth vessel centrelines: splines through control points, tortuosity, and arc-length resampling."""

from __future__ import annotations

import numpy as np

STEP_MM = 0.5


def catmull_rom(control: np.ndarray, samples_per_span: int = 16) -> np.ndarray:
    """A centripetal Catmull-Rom curve through (K, 3) control points, densely sampled, ends included."""
    c = np.asarray(control, dtype=float)
    if len(c) < 2:
        raise ValueError("a curve needs at least two control points")
    if len(c) == 2:
        t = np.linspace(0.0, 1.0, samples_per_span + 1)[:, None]
        return c[0] + t * (c[1] - c[0])
    padded = np.vstack([2 * c[0] - c[1], c, 2 * c[-1] - c[-2]])
    pieces = []
    for k in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[k - 1: k + 3]
        t0 = 0.0
        t1 = t0 + max(np.linalg.norm(p1 - p0), 1e-6) ** 0.5
        t2 = t1 + max(np.linalg.norm(p2 - p1), 1e-6) ** 0.5
        t3 = t2 + max(np.linalg.norm(p3 - p2), 1e-6) ** 0.5
        t = np.linspace(t1, t2, samples_per_span, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        pieces.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    pieces.append(c[-1:])
    return np.vstack(pieces)


def arc_length(points: np.ndarray) -> np.ndarray:
    """Cumulative arc length (mm) at each point of a polyline, starting at 0."""
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def resample(points: np.ndarray, step: float = STEP_MM) -> np.ndarray:
    """The polyline resampled at (about) equal arc-length steps, ends kept."""
    s = arc_length(points)
    n = max(2, int(np.ceil(s[-1] / step)) + 1)
    targets = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(targets, s, points[:, k]) for k in range(3)], axis=1)


def _perpendiculars(direction: np.ndarray) -> np.ndarray:
    d = direction / max(np.linalg.norm(direction), 1e-9)
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    n1 = np.cross(d, helper)
    n1 /= np.linalg.norm(n1)
    return np.stack([n1, np.cross(d, n1)])


def tortuous(points: np.ndarray, rng: np.random.Generator, amplitude_mm: float, waves: int = 3,
             keep_start_direction: bool = True) -> np.ndarray:
    """Add smooth random bends perpendicular to the chord, zero at both ends, at most ~`amplitude_mm`."""
    if amplitude_mm <= 0:
        return points
    s = arc_length(points)
    u = s / max(s[-1], 1e-9)
    normals = _perpendiculars(points[-1] - points[0])
    window = np.sin(np.pi * u) ** (2 if keep_start_direction else 1)
    offset = np.zeros_like(points)
    for n in normals:
        shape = np.zeros_like(u)
        for k in range(1, waves + 1):
            shape += rng.normal(0.0, 1.0 / k) * np.sin(np.pi * k * u + rng.uniform(0, 2 * np.pi))
        offset += np.outer(shape * window, n)
    return points + amplitude_mm * 0.6 * offset


def smooth_curve(control: np.ndarray, rng: np.random.Generator, tortuosity_mm: float) -> np.ndarray:
    """Spline through the control points, made tortuous, resampled every STEP_MM millimetres."""
    dense = catmull_rom(control)
    length = arc_length(dense)[-1]
    amplitude = tortuosity_mm * min(1.0, length / 15.0)
    return resample(tortuous(dense, rng, amplitude))
