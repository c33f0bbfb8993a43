"""TopCoW variant vectors of labelled volume sets (phantoms, TopCoW-style label maps) and their frequencies."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import InputError
from ..files import path_problem
from .volumes import LABEL_NAME, NIFTI_SUFFIXES, is_label_file

NNUNET_CHANNEL = "_0000"
IMAGE_NAME = re.compile(r"[_\-.](image|img)$", re.IGNORECASE)


def _stem(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _label_stem(name: str) -> str:
    """A label file's stem with its label token removed: case_001_label -> case_001, seg_001 -> 001."""
    stem = _stem(name)
    match = LABEL_NAME.search(stem)
    if not match:
        return stem
    before, after = stem[: match.start()], stem[match.end():]
    return before + (match.group(1) if before and after else "") + after


def find_label_maps(image_names: Sequence[str], image_folder: Path, label_folder: Optional[Path] = None) -> Dict[str, Path]:
    """Label map of each image, matched by stem: in `label_folder` (same stem, or the stem without nnU-Net's
    '_0000' or an '_image' suffix) or beside the images (stem plus a label/seg/mask token). Images without a label map are left out."""
    named: Dict[str, Path] = {}  # files named as label maps: they win over a same-stem file in a mixed folder
    others: Dict[str, Path] = {}
    if label_folder is not None:
        problem = path_problem(label_folder, folder=True)
        if problem:
            raise InputError(f"label folder {label_folder} {problem}: pass a folder of TopCoW label maps")
        for p in sorted(Path(label_folder).iterdir()):
            if p.name.endswith(NIFTI_SUFFIXES):
                candidates = named if is_label_file(p) else others
                candidates.setdefault(_stem(p.name), p)
                candidates.setdefault(_label_stem(p.name), p)
    else:
        for p in sorted(Path(image_folder).iterdir()):
            if p.name.endswith(NIFTI_SUFFIXES) and is_label_file(p):
                named.setdefault(_label_stem(p.name), p)
    found = {}
    for name in image_names:
        stem = _stem(name)
        keys = [key for key in (stem, stem[: -len(NNUNET_CHANNEL)] if stem.endswith(NNUNET_CHANNEL) else None,
                                IMAGE_NAME.sub("", stem)) if key is not None]
        match = next((candidates[key] for candidates in (named, others) for key in keys if key in candidates), None)
        if match is not None:
            found[name] = match
    if label_folder is not None and not found:
        example = next(iter(image_names), "")
        raise InputError(f"no label map in {label_folder} matches the images (e.g. {example} needs {_stem(example)}.nii.gz "
                         f"or {_stem(example)}_label.nii.gz there): pass the folder of their TopCoW label maps")
    return found


def variant_table(label_maps: Dict[str, Path]) -> List[Dict[str, object]]:
    """One row per labelled volume: its name, variant vectors and whether the circle is complete."""
    from ..topcow import load_label_map, variant_vectors

    rows = []
    for name, path in label_maps.items():
        vectors = variant_vectors(load_label_map(path)[0])
        rows.append({"volume": name, "labels": str(path), **vectors.as_dict(), "complete": vectors.complete})
    return rows


def variant_frequencies(rows: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """Share of volumes with each segment present, share of complete circles, and the most frequent patterns."""
    from ..topcow import ANTERIOR_KEYS, POSTERIOR_KEYS

    n = len(rows)
    if n == 0:
        return {"n": 0}
    segments = {}
    for group, keys in (("anterior", ANTERIOR_KEYS), ("posterior", POSTERIOR_KEYS)):
        for i, key in enumerate(keys):
            segments[key] = sum(int(r[group][i]) for r in rows) / n  # type: ignore[index]
    patterns = Counter(f"{''.join(map(str, r['anterior']))}/{''.join(map(str, r['posterior']))}" for r in rows)  # type: ignore[arg-type]
    return {"n": n, "segment_present": segments, "complete_circle": sum(bool(r["complete"]) for r in rows) / n,
            "patterns": {k: v / n for k, v in patterns.most_common()}}


def pattern_distance(a: Dict[str, object], b: Dict[str, object]) -> Optional[float]:
    """Total variation distance between two sets' variant-pattern distributions (0 = same, 1 = disjoint)."""
    pa, pb = a.get("patterns"), b.get("patterns")
    if not pa or not pb:
        return None
    keys = set(pa) | set(pb)  # type: ignore[arg-type]
    return 0.5 * sum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in keys)  # type: ignore[union-attr]
