"""One evaluation: features of the real and generated sets (and the real halves), every metric, and the
pictures the report shows. Pure computation; writing files is report.py's job."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from ..errors import InputError
from ..latents import check_seed
from ..mip import mip_panel
from .cache import FeatureCache
from .compare import CompareConfig, compare_features, guarded
from .distances import standardise, univariate_distances
from .features import Extractor, SetFeatures, extract, inception_extractor, medicalnet_extractor, morphology_extractor
from .medicalnet import MEDICALNET_SHA256
from .memorisation import MatchAccumulator, MemorisationConfig, flag_near_copies, query_matrix, summary
from .morphology import FEATURE_DESCRIPTIONS, FEATURE_NAMES, MorphologyConfig
from .ms_ssim import MSSSIMConfig, pairwise_ms_ssim
from .volumes import VolumeSet, check_same_grid

log = logging.getLogger(__name__)
NEAREST_PAIRS_SHOWN = 4


@dataclass
class EvaluationConfig:
    """Everything that decides the numbers; the defaults reproduce the paper's settings where it had any."""

    seed: int = 0
    compare: CompareConfig = field(default_factory=CompareConfig)
    morphology: MorphologyConfig = field(default_factory=MorphologyConfig)
    memorisation: MemorisationConfig = field(default_factory=MemorisationConfig)
    ms_ssim: MSSSIMConfig = field(default_factory=MSSSIMConfig)
    diversity_volumes: int = 32
    baseline: bool = True
    medicalnet_weights: Optional[str] = None
    medicalnet_sha256: Optional[str] = MEDICALNET_SHA256
    inception_weights: Optional[str] = None
    device: str = "cpu"
    cache_dir: Optional[Path] = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_seed(self.seed)


@dataclass
class EvaluationResult:
    """The metrics (JSON-ready) and the pictures (uint8 images, by name) of one evaluation."""

    metrics: Dict[str, Any]
    images: Dict[str, np.ndarray]
    real_features: SetFeatures
    fake_features: SetFeatures


def _extractors(config: EvaluationConfig, real: VolumeSet, skipped: Dict[str, str]) -> List[Extractor]:
    from ..files import file_sha256

    extractors = [morphology_extractor(real, config.morphology)]
    if config.medicalnet_weights:
        from .medicalnet import load_medicalnet

        model = load_medicalnet(config.medicalnet_weights, config.medicalnet_sha256, config.device)
        extractors.append(medicalnet_extractor(model, file_sha256(config.medicalnet_weights), config.seed))
    else:
        skipped["medicalnet"] = ("MedicalNet distance skipped: no weights given; pass --medicalnet "
                                 "resnet_10_23dataset.pth (from the MedicalNet release) to compute the paper's MD")
    from .fid2d import InceptionSliceFeatures, fid2d_status

    status = fid2d_status(config.inception_weights)
    if status.available:
        model = InceptionSliceFeatures(status, config.device)
        extractors.append(inception_extractor(model, file_sha256(status.weights)))  # type: ignore[arg-type]
    else:
        skipped["fid2d"] = status.message
    return extractors


def _halves(n: int, seed: int) -> Optional[tuple]:
    if n < 4:
        return None
    order = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return np.sort(order[:half]), np.sort(order[half: 2 * half])


def _space_metrics(real: np.ndarray, fake: np.ndarray, halves: Optional[tuple], config: EvaluationConfig,
                   standardised: bool) -> Dict[str, Any]:
    if standardised:
        _, real, fake = standardise(real, real, fake)
    out = {"generated_vs_real": compare_features(real, fake, config.compare)}
    if halves is not None and config.baseline:
        out["real_vs_real"] = compare_features(real[halves[0]], real[halves[1]], config.compare)
    out["standardised_by_real"] = standardised
    return out


def _fid2d(real: SetFeatures, fake: SetFeatures, halves: Optional[tuple], config: EvaluationConfig) -> Dict[str, Any]:
    from .distances import frechet_distance

    out = {"generated_vs_real": guarded(lambda: {"value": frechet_distance(real.matrix("inception2d"), fake.matrix("inception2d"))})}
    if halves is not None and config.baseline:
        out["real_vs_real"] = guarded(lambda: {"value": frechet_distance(real.matrix("inception2d", halves[0]),
                                                                         real.matrix("inception2d", halves[1]))})
    return out


def _morphology_table(real: np.ndarray, fake: np.ndarray, halves: Optional[tuple]) -> Dict[str, Any]:
    table = {}
    for j, name in enumerate(FEATURE_NAMES):
        row = {"description": FEATURE_DESCRIPTIONS[name],
               "real": {"mean": float(real[:, j].mean()), "sd": float(real[:, j].std())},
               "generated": {"mean": float(fake[:, j].mean()), "sd": float(fake[:, j].std())},
               "generated_vs_real": univariate_distances(real[:, j], fake[:, j])}
        if halves is not None:
            row["real_vs_real"] = univariate_distances(real[halves[0], j], real[halves[1], j])
        table[name] = row
    return table


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def _diversity(real: VolumeSet, fake: VolumeSet, config: EvaluationConfig) -> Dict[str, Any]:
    ms_ssim = config.ms_ssim.fitted_to(fake.shape)  # both sets share one grid
    out: Dict[str, Any] = {"scales": ms_ssim.scales, "kernel_size": ms_ssim.kernel_size}
    for label, volume_set in (("generated", fake), ("real", real)):
        def run(volume_set: VolumeSet = volume_set) -> Dict[str, Any]:
            pick = _sample(len(volume_set), config.diversity_volumes, config.seed)
            values = pairwise_ms_ssim([volume_set.items[i].load() for i in pick], ms_ssim, config.progress)
            return {"mean": float(values.mean()), "sd": float(values.std()), "volumes": int(len(pick)),
                    "pairs": int(len(values)), "values": values.round(5).tolist()}

        out[label] = guarded(run)
    return out


def _side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    height = max(left.shape[0], right.shape[0])
    out = np.full((height, left.shape[1] + gap + right.shape[1]), 255, dtype=np.uint8)
    out[: left.shape[0], : left.shape[1]] = left
    out[: right.shape[0], left.shape[1] + gap:] = right
    return out


def _memorisation(real: VolumeSet, fake: VolumeSet, train: VolumeSet, config: EvaluationConfig,
                  images: Dict[str, np.ndarray]) -> Dict[str, Any]:
    cfg = config.memorisation
    fake_q = query_matrix((item.load() for item in fake.items), cfg.pool)
    real_q = query_matrix((item.load() for item in real.items), cfg.pool)
    acc = MatchAccumulator(np.concatenate([fake_q, real_q]), cfg)
    for item in tqdm(train.items, desc="memorisation: training set", unit="volume", disable=None if config.progress else True):
        acc.add(item.load())
    matches = acc.result()
    n = len(fake.items)
    gen, held = matches.correlation[:n], matches.correlation[n:]
    flags = flag_near_copies(gen, held, cfg)
    order = np.argsort(-gen, kind="stable")[:NEAREST_PAIRS_SHOWN]
    pairs = []
    spacing = real.spacing()
    for i in order:
        t = int(matches.train_index[i])
        train_volume = train.items[t].load()
        if matches.mirrored[i]:
            train_volume = np.flip(train_volume, axis=1)
        images[f"pair_{len(pairs)}"] = _side_by_side(mip_panel(fake.items[i].load(), spacing, scale=1.0),
                                                     mip_panel(train_volume, spacing, scale=1.0))
        pairs.append({"generated": fake.items[i].name, "train": train.items[t].name, "correlation": float(gen[i]),
                      "mirrored": bool(matches.mirrored[i]), "near_copy": bool(flags[i]), "image": f"pair_{len(pairs)}"})
    return {"config": asdict(cfg), "n_train": len(train.items), "summary": summary(gen, held, flags),
            "generated": [{"volume": item.name, "correlation": float(c), "train": train.items[int(t)].name,
                           "mirrored": bool(m), "near_copy": bool(f)}
                          for item, c, t, m, f in zip(fake.items, gen, matches.train_index[:n], matches.mirrored[:n], flags)],
            "held_out": [float(c) for c in held], "nearest_pairs": pairs}


def _variants(real: VolumeSet, fake: VolumeSet, labels: Dict[str, Optional[str]]) -> Dict[str, Any]:
    from .variants import find_label_maps, pattern_distance, variant_frequencies, variant_table

    out: Dict[str, Any] = {}
    for key, volume_set in (("real", real), ("generated", fake)):
        sources = {Path(item.source).parent for item in volume_set.items if Path(item.source).is_file()}
        if len(sources) != 1:
            continue
        label_folder = labels.get(key)
        found = find_label_maps([item.name for item in volume_set.items], sources.pop(),
                                Path(label_folder) if label_folder else None)
        if found:
            rows = variant_table(found)
            out[key] = {"frequencies": variant_frequencies(rows), "volumes": rows}
    if "real" in out and "generated" in out:
        out["pattern_total_variation"] = pattern_distance(out["real"]["frequencies"], out["generated"]["frequencies"])
    return out


def evaluate(real: VolumeSet, fake: VolumeSet, train: Optional[VolumeSet] = None,
             config: EvaluationConfig = EvaluationConfig(), labels: Optional[Dict[str, Optional[str]]] = None) -> EvaluationResult:
    """Every metric of generated (`fake`) against `real` volumes (on the same grid), with the real-vs-real
    baseline on two seeded halves of the real set and, given a training set, the memorisation check."""
    for name, volumes in (("real", real), ("generated", fake), ("training", train)):
        if volumes is not None and not isinstance(volumes, VolumeSet):
            raise InputError(f"the {name} volumes must be a VolumeSet (from folder_set or array_set), "
                             f"got {type(volumes).__name__}")
    if len(real) < 2 or len(fake) < 2:
        raise InputError(f"an evaluation needs at least 2 real and 2 generated volumes, got {len(real)} and {len(fake)}")
    fake = check_same_grid(real, fake, resample=False)
    if train is not None:
        train = check_same_grid(real, train, resample=False)
    skipped: Dict[str, str] = {}
    cache = FeatureCache(config.cache_dir)
    extractors = _extractors(config, real, skipped)
    real_f = extract(real, extractors, cache, config.progress)
    fake_f = extract(fake, extractors, cache, config.progress)
    halves = _halves(len(real), config.seed) if config.baseline else None
    if config.baseline and halves is None:
        skipped["real_vs_real"] = f"real-vs-real baseline skipped: it needs at least 4 real volumes, got {len(real)}"
    spaces: Dict[str, Any] = {"morphology": _space_metrics(real_f.matrix("morphology"), fake_f.matrix("morphology"),
                                                            halves, config, True)}
    if "medicalnet" in real_f.values:
        spaces["medicalnet"] = _space_metrics(real_f.matrix("medicalnet"), fake_f.matrix("medicalnet"), halves, config,
                                              False)
    images: Dict[str, np.ndarray] = {}
    metrics: Dict[str, Any] = {
        "feature_spaces": spaces,
        "fid2d": _fid2d(real_f, fake_f, halves, config) if "inception2d" in real_f.values else {"skipped": skipped["fid2d"]},
        "morphology": _morphology_table(real_f.matrix("morphology"), fake_f.matrix("morphology"), halves),
        "diversity": _diversity(real, fake, config),
        "memorisation": _memorisation(real, fake, train, config, images) if train is not None else
        {"skipped": "memorisation check skipped: pass --train DIR (the model's training volumes) to run it"},
        "variants": _variants(real, fake, labels or {}),
        "per_volume": {key: {item.name: dict(zip(FEATURE_NAMES, map(float, row)))
                             for item, row in zip(s.items, f.matrix("morphology"))}
                       for key, s, f in (("real", real, real_f), ("generated", fake, fake_f))},
        "skipped": skipped,
        "notes": sorted(set(real.notes + fake.notes + (train.notes if train is not None else []))),
        "feature_cache": {"directory": str(cache.root) if cache.root else None,  # None: off, or not writable
                          "hits": cache.hits, "misses": cache.misses},
    }
    if "medicalnet" in spaces:
        metrics["md"] = spaces["medicalnet"]["generated_vs_real"]["frechet_distance"]
    skipped.update(_skipped_inside(metrics))
    return EvaluationResult(metrics, images, real_f, fake_f)


def _skipped_inside(metrics: Dict[str, Any], path: str = "") -> Dict[str, str]:
    """Every metric skipped deep in the results ({"skipped": reason} anywhere), keyed by its dotted path and said
    with that path, so the top-level "skipped" that the command prints lists them all (each reason once)."""
    found: Dict[str, str] = {}
    for key, value in metrics.items():
        where = f"{path}.{key}" if path else key
        if key == "skipped" and path and isinstance(value, str):
            found[path] = value if "skipped" in value else f"{path} skipped: {value}"
        elif isinstance(value, dict) and where != "skipped":
            found.update(_skipped_inside(value, where))
    top = set(metrics.get("skipped", {}).values()) if not path else set()
    return {k: v for k, v in found.items() if v not in top}
