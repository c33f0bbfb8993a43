"""The one-stop API: `TuringSession.create` for organisers, `TuringSession.open` for raters, `report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from ..checks import whole_number
from ..errors import InputError
from ..latents import check_seed, seed_list
from .config import SessionConfig
from .create import CreatedSession, Progress, check_session_outputs, create_session
from .grid import DisplayGrid
from .rater import RaterSession
from .report import TuringReport, build_report, write_report
from .sources import folder_source, model_source, volume_files

PathLike = Union[str, Path]
RANDOMISED = ("randomised", "randomized", "random")


def parse_real_fraction(value: Any) -> Optional[float]:
    """A float share of real cases, or None for 'randomised' (drawn within 40-60%)."""
    if value is None or str(value).strip().lower() in RANDOMISED:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"real fraction {value!r} is not a number: use e.g. 0.5, or 'randomised' for 40-60%") from None


class TuringSession(RaterSession):
    """A rater's view of a session; `create` makes new sessions."""

    @classmethod
    def create(cls, folder: PathLike, real: PathLike, generated: Optional[PathLike] = None, model: Any = None,
               seeds: Optional[Sequence[int]] = None, psi: float = 1.0, n_cases: int = 60,
               real_fraction: Any = 0.5, display: str = "all", time_limit: Optional[float] = None,
               allow_back: bool = False, seed: int = 0, raters: Sequence[str] = (), key_path: Optional[PathLike] = None,
               grid: Optional[DisplayGrid] = None, device: str = "auto",
               progress: Optional[Progress] = None) -> CreatedSession:
        """Draw and write a session from a real folder and a generated folder or a model (path, 'demo' or loaded).

        Without `seeds`, a model offers seeds 1..n_cases to draw from."""
        if isinstance(raters, str):
            raise InputError(f"raters must be a list of ids, e.g. ['{raters}'], not the text {raters!r}")
        try:
            limit = None if time_limit in (None, 0) else float(time_limit)
        except (TypeError, ValueError):
            raise InputError(f"time limit {time_limit!r} must be a number of seconds, or unset for no limit") from None
        config = SessionConfig(whole_number(n_cases, "number of cases"), parse_real_fraction(real_fraction), display,
                               limit, bool(allow_back), check_seed(seed), list(raters)).validate()
        if (generated is None) == (model is None):
            raise InputError("give the generated volumes as exactly one of a folder or a model (with seeds)")
        ignored = [name for name, given in (("seeds", seeds is not None), ("psi", psi != 1.0), ("device", device != "auto"))
                   if given]
        if generated is not None and ignored:
            raise InputError(f"{', '.join(ignored)} only apply to generating from a model, not to a folder of generated "
                             "volumes: leave them out, or pass a model")
        if generated is not None and Path(real).resolve() == Path(generated).resolve():
            raise InputError(f"the real and the generated volumes are the same folder {real}: pass the generated "
                             "volumes' own folder, or a model")
        check_session_outputs(folder, key_path, {"real": real, "generated": generated})
        volume_files(real)  # a mistyped or empty real folder is named before the generated side is read
        if generated is not None:
            generated_source = folder_source(generated, grid)
        else:
            if isinstance(model, (str, Path)):
                from ..generator import load_generator

                model = load_generator(model, device=device)
            generated_source = model_source(model, seed_list(seeds) if seeds is not None
                                            else list(range(1, config.n_cases + 1)), psi)
        real_source = folder_source(real, grid or generated_source.grid)  # each checked where the grid shows it
        return create_session(folder, real_source, generated_source, config, grid=grid, key_path=key_path,
                              progress=progress)

    @classmethod
    def open(cls, folder: PathLike, rater: str) -> "TuringSession":
        """Open (or resume) the session as `rater`; the answer key is never read."""
        return cls(folder, rater)


def report(folder: PathLike, key: Optional[PathLike] = None, out: Optional[PathLike] = None,
           overwrite: bool = False) -> Tuple[TuringReport, Dict[str, Path]]:
    """Compute the results of a session and write CSV + HTML (by default beside the session folder); an earlier
    report there is refused unless `overwrite`, so none is replaced by surprise."""
    result = build_report(folder, key)
    return result, write_report(result, out, overwrite)
