"""What the panel computes, without any GUI: panel state in, volume + MIP + vessel surface out; exports.

The panel's controller (panel_controller.py) runs these calls on a worker thread; the Slicer module, the
standalone explorer and the tests all share them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .directions import Direction, apply_directions, directions_for
from .checks import finite_number
from .errors import CheckpointError, InputError
from .latents import lerp, slerp
from .mip import mip_panel
from .volume_io import spacing_of

MAX_UI_SEED = 2**31 - 1  # Qt spin boxes hold signed 32-bit integers
PROJECTION_PSI = 1.0  # a projection's w+ is used as projected, untruncated, and so is a second seed mixed into it
PANEL_SURFACE_FORMATS = ("stl", "obj", "vtp", "ply")  # surface.SURFACE_FORMATS in the order of the panel's combo box


def _field(default: Any, lo: Any = None, hi: Any = None, choices: Tuple[Any, ...] = ()) -> Any:
    meta = {"range": (lo, hi)} if lo is not None else {}
    if choices:
        meta["choices"] = choices
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _clamped(name: str, value: Any, lo: float, hi: float, kind: type) -> Any:
    """A slider value clamped into [lo, hi] (the UI's semantics); text, NaN or infinity is an InputError."""
    return kind(min(max(finite_number(value, f"panel setting {name}"), lo), hi))


@dataclasses.dataclass
class PanelState:
    """Everything the panel shows; ranges and choices are declared next to each field."""

    seed: int = _field(1, 0, MAX_UI_SEED)
    psi: float = _field(0.7, 0.0, 2.0)
    noise_follows_seed: bool = _field(True)
    noise_seed: int = _field(1, 0, MAX_UI_SEED)
    directions: List[float] = _field([], -3.0, 3.0)  # in standard deviations of w along each direction
    mixing: bool = _field(False)
    mix_seed: int = _field(2, 0, MAX_UI_SEED)
    crossover: int = _field(3, 1, 64)  # first block taken from mix_seed
    interpolate: bool = _field(False)
    seed_b: int = _field(2, 0, MAX_UI_SEED)
    t: float = _field(0.0, 0.0, 1.0)
    space: str = _field("z", choices=("z", "w"))
    surface: bool = _field(True)
    auto_threshold: bool = _field(True)
    threshold: float = _field(0.3, 0.0, 1.0)
    smoothing: int = _field(15, 0, 100)
    frames: int = _field(16, 2, 200)
    surface_format: str = _field("stl", choices=PANEL_SURFACE_FORMATS)
    output_dir: str = _field("")
    model: str = _field("demo")
    device: str = _field("cpu")
    projection: str = _field("")  # a projection.safetensors: its w+ and noise replace seed, psi and interpolation

    def validated(self) -> "PanelState":
        """A copy with every number clamped into its range and every choice checked."""
        values = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            lo, hi = f.metadata.get("range", (None, None))
            v = values[f.name]
            if f.default is dataclasses.MISSING:  # the list fields (directions) have a default factory
                if not isinstance(v, (list, tuple)):
                    raise InputError(f"panel setting {f.name} must be a list of numbers, got {v!r}")
                values[f.name] = [_clamped(f.name, x, lo, hi, float) for x in v]
            elif lo is not None:
                values[f.name] = _clamped(f.name, v, lo, hi, type(f.default))
            elif isinstance(f.default, bool):  # 0 and 1 as a JSON writer may have stored them, nothing else
                if not (isinstance(v, (bool, int)) and v in (0, 1)):
                    raise InputError(f"panel setting {f.name} must be true or false, got {v!r}")
                values[f.name] = bool(v)
            elif isinstance(f.default, str) and not isinstance(v, str):
                raise InputError(f"panel setting {f.name} must be text, got {v!r}")
            if f.metadata.get("choices") and v not in f.metadata["choices"]:
                raise InputError(f"{f.name} must be one of {', '.join(f.metadata['choices'])}, got {v!r}")
        return PanelState(**values)

    def noise(self) -> int:
        """The noise seed actually used."""
        return self.seed if self.noise_follows_seed else self.noise_seed

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "PanelState":
        """Rebuild from `to_dict` output (e.g. a saved scene), ignoring unknown keys."""
        if not isinstance(data, dict):
            raise InputError(f"a saved panel state must be a JSON object of settings, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass
class RenderResult:
    """One generated volume and what is shown of it."""

    state: PanelState
    volume: np.ndarray  # (D, H, W) float32 in [0, 1]
    affine: np.ndarray
    mip: np.ndarray  # uint8 panel: axial | coronal over sagittal
    surface: Any = None  # vtkPolyData in RAS mm, or None
    threshold: Optional[float] = None
    generate_s: float = 0.0
    surface_s: float = 0.0
    request_id: int = 0
    surface_note: str = ""  # why there is no surface (a threshold outside the volume's range), shown in the status


class PanelEngine:
    """A loaded generator plus its latent directions; turns a PanelState into a RenderResult."""

    def __init__(self, generator: Any) -> None:
        if not hasattr(generator, "checkpoint") or not hasattr(generator, "synthesize"):
            raise InputError(f"the panel needs a loaded generator (load_generator(...)), got {type(generator).__name__}")
        self.generator = generator
        self.directions: List[Direction] = directions_for(generator)
        self._projections: Dict[str, Any] = {}

    @property
    def affine(self) -> np.ndarray:
        return self.generator.affine

    def affine_for(self, state: PanelState) -> np.ndarray:
        """Where a state's volume lies in RAS: on the projected scan's grid for a projection (so it overlays the
        patient), else the model's own grid."""
        if state.projection:
            affine = self.projection(state.projection).metadata.get("affine")
            if affine is not None:
                return np.asarray(affine, dtype=float)
        return self.generator.affine

    def projection(self, path: str) -> Any:
        """The projection saved at `path` (read once, checked against this model)."""
        from .projection_io import check_projection_fits, load_projection

        if path not in self._projections:
            latent = load_projection(path)
            check_projection_fits(latent, self.generator)
            self._projections = {path: latent}
        return self._projections[path]

    def project_volume(self, volume_path: str, out_dir: str, config: Any = None,
                       progress: Optional[Callable[[int, int], None]] = None, source: str = "") -> str:
        """Project a NIfTI/NRRD scan (brought to the model's grid as `cowgan project` does), write the results into
        `out_dir`; return the latent's path. `source` names the scan where `volume_path` is a temporary copy of it."""
        from .outputs import prepare_output_dir
        from .preprocess import scan_on_model_grid
        from .projection import ProjectionConfig, project
        from .projection_io import projection_source, write_projection_outputs

        gen = self.generator
        prepare_output_dir(out_dir, create=False)  # an unwritable folder stops before minutes of optimisation
        scan = scan_on_model_grid(Path(volume_path), gen.arch.output_shape, spacing_of(gen.affine),
                                  normalisation=gen.normalisation)
        config = config or ProjectionConfig()
        result = project(gen, scan.volume, config, progress)
        if progress:  # once more after the final pass: a Cancel pressed during it stops here, before anything is written
            progress(config.total_steps, config.total_steps)
        out = prepare_output_dir(out_dir)
        paths = write_projection_outputs(out, result, scan.affine, gen, config, coverage=scan.coverage, plot=False,
                                         source=projection_source(volume_path, source))
        self._projections.pop(str(paths["latent"]), None)  # a projection written again over one read before
        return str(paths["latent"])

    def styles(self, state: PanelState) -> torch.Tensor:
        """The per-block w (1, num_ws, latent) for a state: projection, seed or interpolation, mixing, psi, directions."""
        gen = self.generator
        if state.projection:
            ws = self.projection(state.projection).ws[None].clone()
            if state.mixing and gen.num_ws > 1:
                ws = gen.styles(w=ws, psi=PROJECTION_PSI,
                                style_mix=([state.mix_seed], min(max(1, state.crossover), gen.num_ws - 1)))
            return apply_directions(ws, self.directions, state.directions[: len(self.directions)])
        if state.interpolate:
            za, zb = gen.z_from_seeds([state.seed]), gen.z_from_seeds([state.seed_b])
            w = gen.mapping(slerp(za, zb, state.t)) if state.space == "z" else lerp(gen.mapping(za), gen.mapping(zb), state.t)
        else:
            w = gen.mapping(gen.z_from_seeds([state.seed]))
        mix = None
        if state.mixing and gen.num_ws > 1:
            mix = ([state.mix_seed], min(max(1, state.crossover), gen.num_ws - 1))
        ws = gen.styles(w=w, psi=state.psi, style_mix=mix)
        return apply_directions(ws, self.directions, state.directions[: len(self.directions)])

    def psi_used(self, state: PanelState) -> float:
        """The truncation psi a state's volume is made with: the slider's, or 1 for a projection (see styles)."""
        return PROJECTION_PSI if state.projection else state.psi

    def volume(self, state: PanelState) -> np.ndarray:
        """The (D, H, W) volume in [0, 1] for a state."""
        ws = self.styles(state)
        if state.projection:
            noise = self.projection(state.projection).noise
            return self.generator.synthesize(ws, noise=noise).clamp_(0.0, 1.0).numpy()[0]
        return self.generator.synthesize(ws, noise_seed=state.noise()).clamp_(0.0, 1.0).numpy()[0]

    def render(self, state: PanelState, request_id: int = 0) -> RenderResult:
        """Generate the volume, its MIP panel and (if asked) its vessel surface, timing each."""
        state = state.validated()
        start = time.perf_counter()
        volume = self.volume(state)
        affine = self.affine_for(state)
        result = RenderResult(state, volume, affine, mip_panel(volume, spacing_of(affine), orientation_letters=True),
                              generate_s=time.perf_counter() - start, request_id=request_id)
        if state.surface:
            start = time.perf_counter()
            try:
                result.surface, result.threshold = self.surface(volume, state)
            except InputError as exc:  # the slider can reach thresholds this volume has no voxel above
                result.surface_note = f"{str(exc).split(':')[0]}: move the threshold or tick Automatic threshold"
            else:
                if result.surface.GetNumberOfPoints() == 0:
                    result.surface_note = (f"no vessel surface at threshold {result.threshold:.3f}: move the threshold "
                                           "or tick Automatic threshold")
            result.surface_s = time.perf_counter() - start
        return result

    def surface(self, volume: np.ndarray, state: PanelState) -> Tuple[Any, float]:
        """The vessel surface of a volume and the threshold used (automatic or the state's)."""
        from .surface import vessel_surface, vessel_threshold

        level = vessel_threshold(volume) if state.auto_threshold else float(state.threshold)
        return vessel_surface(volume, self.affine_for(state), level, smoothing_iterations=state.smoothing), level

    def sidecar(self, state: PanelState) -> Dict[str, Any]:
        """Provenance for an exported volume: model, seeds, psi, noise, mixing, interpolation, directions."""
        gen = self.generator
        record: Dict[str, Any] = {
            "model": {"path": gen.source, "name": gen.metadata.get("name"), "content_sha256": gen.checkpoint.sha256 or None},
            "noise_mode": gen.arch.noise_mode, "w": self.styles(state)[0].tolist(), "device": str(gen.device),
            "created_with": "CircleOfWillisGAN panel",
        }
        if state.projection:  # its own w+ and noise: the seed, psi and interpolation settings played no part
            record["projection"] = {"latent": state.projection,
                                    "source": self.projection(state.projection).metadata.get("source")}
        else:
            record.update(seed=state.seed, psi=state.psi, noise_seed=state.noise())
        if state.mixing:  # psi truncates the second seed's w too: a projection's mixing takes it untruncated
            record["style_mixing"] = {"second_seed": state.mix_seed, "crossover_block": state.crossover,
                                      "psi": self.psi_used(state)}
        if state.interpolate and not state.projection:
            record["interpolation"] = {"seed_a": state.seed, "seed_b": state.seed_b, "t": state.t, "space": state.space,
                                       "method": "slerp" if state.space == "z" else "lerp"}
        moved = [{"label": d.label, "amount_sd": a, "layers": list(d.layers), "method": d.method}
                 for d, a in zip(self.directions, state.directions) if a]
        if moved:
            record["directions"] = moved
        return record

    def stem(self, state: PanelState) -> str:
        """A file name stem that says what was generated."""
        if state.projection:
            return "cow_projected"
        if state.interpolate:
            return f"cow_interp_{state.seed}_{state.seed_b}_t{state.t:.2f}".replace(".", "p")
        return f"cow_seed{state.seed:04d}"

    def export_volume(self, state: PanelState, out_dir: str) -> Dict[str, Path]:
        """Write NIfTI + JSON sidecar + MIP PNG and the vessel surface, with the CLI's writer."""
        from .outputs import prepare_output_dir, unused_stem, volume_output_names, write_volume_outputs

        state = state.validated()
        out = prepare_output_dir(out_dir)
        volume = self.volume(state)
        threshold = None if state.auto_threshold else state.threshold
        stem = unused_stem(out, self.stem(state), lambda s: volume_output_names(s, "." + state.surface_format))
        return write_volume_outputs(out, stem, volume, self.affine_for(state), self.sidecar(state), surface=True,
                                    surface_format="." + state.surface_format, threshold=threshold,
                                    smoothing_iterations=state.smoothing)

    def export_interpolation(self, state: PanelState, out_dir: str,
                             progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
        """Write the interpolation from seed to seed B as one MIP PNG per frame and an animated GIF."""
        from .outputs import prepare_output_dir, unused_stem
        from .files import write_json
        from .mip import save_gif, save_png

        state = dataclasses.replace(state.validated(), interpolate=True)
        if state.projection:
            raise InputError("an interpolation runs from seed to seed B, not from a projection: press Clear projection, "
                             "then export it")
        out = prepare_output_dir(out_dir)
        name = unused_stem(out, f"cow_interp_{state.seed}_{state.seed_b}",
                           lambda s: [f"{s}.gif", f"{s}.json"] + [f"{s}_{i:03d}.png" for i in range(state.frames)])
        frames, pngs = [], []
        for i in range(state.frames):
            frame_state = dataclasses.replace(state, t=i / (state.frames - 1))
            picture = mip_panel(self.volume(frame_state), spacing_of(self.affine), orientation_letters=True)
            pngs.append(save_png(out / f"{name}_{i:03d}.png", picture))
            frames.append(picture)
            if progress:
                progress(i + 1, state.frames)
        gif = save_gif(out / f"{name}.gif", frames, fps=8)
        sidecar = self.sidecar(dataclasses.replace(state, t=0.0))
        sidecar.pop("w")
        sidecar["interpolation"].update(frames=state.frames, t="0 to 1 in equal steps")
        return {"frames": pngs, "gif": gif, "sidecar": write_json(out / f"{name}.json", sidecar)}


def model_card_summary(generator: Any) -> str:
    """A few lines for the panel: name, what it generates, where it came from, and its licence."""
    meta = generator.metadata
    arch = generator.arch
    d, h, w = arch.output_shape
    spacing = spacing_of(generator.affine)
    params = sum(t.numel() for t in generator.checkpoint.state_dict.values())
    lines = [f"{meta.get('name') or Path(str(generator.source)).name}",
             f"Output {h} x {w} x {d} voxels of {spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.2f} mm; "
             f"latent {arch.latent_dim}, {generator.num_ws} style blocks, {params / 1e6:.1f} M parameters"]
    card = meta.get("model_card") if isinstance(meta.get("model_card"), dict) else {}
    for key in ("description", "training", "dataset", "intended_use", "license", "source"):
        value = meta.get(key) or card.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        if value:
            text = str(value)
            lines.append(f"{key.replace('_', ' ').capitalize()}: {text[:200]}")
    if str(generator.source).startswith("random:"):
        lines.append("Random weights: for testing only, not anatomy.")
    return "\n".join(lines)


def default_engine_loader(source: str, device: str) -> PanelEngine:
    """Load a model by path or "demo" and compute (or read) its latent directions."""
    from .generator import load_generator
    from .resources import demo_model_path

    if source == "demo":
        try:
            demo_model_path()
        except CheckpointError:
            raise CheckpointError("no demo model is bundled with this installation: press 'Open model...' and choose a "
                                  "CircleOfWillisGAN .safetensors model or a reference model_N.pt") from None
    return PanelEngine(load_generator(source, device=device))
