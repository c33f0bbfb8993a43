"""A small 3D CNN that calls Circle of Willis variants in TOF-MRA volumes on a model's grid.

Targets are the seven variants the named sliders move: each Pcom present, each fetal PCA (a Pcom with an
absent or hypoplastic P1), each A1 present and the Acom present. Labels come from TopCoW label maps (the
variant vectors, and the P1's measured calibre: `fetal_pca`) or from phantoms' recorded variants. Training weighs
both classes of each variant equally (so rare variants count) and augments with left-right mirroring (which swaps
the sided labels), shifts of up to two voxels and intensity scaling, so that it also calls generated volumes, whose
pose and contrast vary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import whole_number
from .errors import InputError
from .files import path_problem, save_safetensors

NAMED_VARIANTS: Tuple[Tuple[str, str], ...] = (
    ("pcom_left", "Left Pcom"), ("pcom_right", "Right Pcom"),
    ("fetal_pca_left", "Left fetal PCA"), ("fetal_pca_right", "Right fetal PCA"),
    ("a1_left", "Left A1"), ("a1_right", "Right A1"), ("acom", "Acom"),
)
VARIANT_KEYS = tuple(key for key, _ in NAMED_VARIANTS)
VARIANT_LABELS = dict(NAMED_VARIANTS)
MIRRORED = (1, 0, 3, 2, 5, 4, 6)  # VARIANT_KEYS index of each target in the left-right mirrored volume
LEFT_RIGHT_AXIS = -2  # (N, D, H, W) volumes: H runs along RAS x (see volume_io)
METADATA_KEY = "cowgan_variant_classifier"
FORMAT = "cowgan-variant-classifier-cnn"
MIN_SIZE = 8  # voxels per axis: the network halves the volume three times
MIN_HELD_OUT_PER_CLASS = 10  # held-out cases with and without a variant needed to measure how well it is called
IMAGE_FILE = re.compile(r"(.+)_image\.(?:nii\.gz|nii|nrrd|nhdr)")  # the stem is everything before the last "_image"
RELEASE_IMAGES = "imagesTr"  # TopCoW's release: imagesTr/NAME_0000.nii.gz and cow_seg_labelsTr/NAME.nii.gz
RELEASE_LABELS = ("cow_seg_labelsTr", "labelsTr")
RELEASE_IMAGE = re.compile(r"(.+)_0000(\.nii\.gz|\.nii)")
RELEASE_CTA_PREFIX = "topcow_ct_"
log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def targets_from_labels(labels: np.ndarray, spacing: Sequence[float]) -> Dict[str, int]:
    """The seven variant targets of a TopCoW label map whose voxels are `spacing` mm along its array axes (fetal PCA:
    Pcom present with an absent or hypoplastic P1, measured by `fetal_pca`)."""
    from .fetal_pca import fetal_pca
    from .topcow import variant_vectors

    named = variant_vectors(labels).named()
    fetal = fetal_pca(labels, spacing)
    return {"pcom_left": named["L-Pcom"], "pcom_right": named["R-Pcom"],
            "fetal_pca_left": fetal["left"], "fetal_pca_right": fetal["right"],
            "a1_left": named["L-A1"], "a1_right": named["R-A1"], "acom": named["Acom"]}


def targets_from_phantom(variants: Mapping[str, Any]) -> Dict[str, int]:
    """The seven variant targets from a phantom's recorded variants (its JSON "variants" object)."""
    return {"pcom_left": int(not variants["pcom_absent_left"]), "pcom_right": int(not variants["pcom_absent_right"]),
            "fetal_pca_left": int(variants["fetal_pca_left"]), "fetal_pca_right": int(variants["fetal_pca_right"]),
            "a1_left": int(not variants["a1_absent_left"]), "a1_right": int(not variants["a1_absent_right"]),
            "acom": int(not variants["acom_absent"])}


class VariantNet(nn.Module):
    """Four resolution levels of 3x3x3 convolutions, then average and max over the volume, then one logit per variant."""

    def __init__(self, width: int = 8, variants: int = len(VARIANT_KEYS)) -> None:
        super().__init__()
        self.width = width
        channels = [width, 2 * width, 4 * width, 4 * width]
        layers: List[nn.Module] = [_conv(1, channels[0])]
        for level in range(1, len(channels)):
            layers += [nn.MaxPool3d(2), _conv(channels[level - 1], channels[level])]
            if level < len(channels) - 1:
                layers.append(_conv(channels[level], channels[level]))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels[-1], variants)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        f = self.features(volumes[:, None])
        return self.head(torch.cat([f.mean((2, 3, 4)), f.amax((2, 3, 4))], 1))


def _conv(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Conv3d(inputs, outputs, 3, padding=1), nn.GroupNorm(4, outputs), nn.SiLU())


@dataclasses.dataclass
class VariantClassifier:
    """A trained VariantNet, the volume shape it was trained on, and what is known about its training."""

    keys: Tuple[str, ...]
    net: VariantNet
    shape: Tuple[int, int, int]
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def probabilities(self, volumes: np.ndarray, batch: int = 32) -> np.ndarray:
        """(N, V) probability that each variant is present, for (N, D, H, W) volumes in [0, 1]."""
        x = _finite_volumes(volumes)
        if tuple(x.shape[1:]) != self.shape:
            raise InputError(f"the variant classifier takes volumes (N, {', '.join(map(str, self.shape))}) on the grid "
                             f"it was trained on, got {tuple(x.shape)}: train one on this model's grid")
        self.net.eval()
        with torch.no_grad():
            return torch.cat([torch.sigmoid(self.net(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()

    def predict(self, volumes: np.ndarray) -> np.ndarray:
        """(N, V) 0/1 calls at probability 0.5."""
        return (self.probabilities(volumes) >= 0.5).astype(np.int64)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the classifier as one safetensors file (weights and JSON, no code)."""
        weights = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        meta = json.dumps({"format": FORMAT, "keys": list(self.keys), "shape": list(self.shape),
                           "width": self.net.width, "info": self.info}, default=str)
        return save_safetensors(path, weights, {METADATA_KEY: meta})


def load_classifier(path: Union[str, Path]) -> VariantClassifier:
    """Read a classifier written by `VariantClassifier.save`; InputError naming the fix otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise InputError(f"variant classifier {path} {problem}: train one with `cowgan name-directions --labelled DIR`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"cannot read variant classifier {path} ({exc}): train it again") from exc
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a variant classifier of this version: train one with "
                         "`cowgan name-directions --labelled DIR`")
    net = VariantNet(int(meta["width"]), len(meta["keys"]))
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise InputError(f"variant classifier {path} does not match its recorded layout: train it again") from exc
    return VariantClassifier(tuple(meta["keys"]), net, tuple(meta["shape"]), meta.get("info", {}))


def load_classifier_for(path: Union[str, Path], shape_dhw: Sequence[int],
                        spacing_mm: Sequence[float]) -> VariantClassifier:
    """A saved classifier that calls volumes of a model's grid (its shape and spacing): one trained at another scale
    would call arteries of another size; InputError naming the fix otherwise."""
    classifier = load_classifier(path)
    shape, spacing = tuple(int(n) for n in shape_dhw), tuple(float(v) for v in spacing_mm)
    trained_spacing = classifier.info.get("spacing_mm")  # recorded since this version
    if classifier.shape != shape or trained_spacing and not np.allclose(trained_spacing, spacing, rtol=0.01):
        raise InputError(f"classifier {path} was trained on volumes of shape {classifier.shape}"
                         f"{f' at {trained_spacing} mm' if trained_spacing else ''} but the model makes {shape} at "
                         f"{tuple(round(s, 4) for s in spacing)} mm: train one on the model's grid with "
                         "`cowgan name-directions --labelled DIR`")
    if not trained_spacing:
        log.warning("classifier %s does not record the spacing it was trained at (an older file): its calls are only "
                    "right if that was the model's %s mm", path, round(spacing[0], 4))
    return classifier


def balanced_accuracy(truth: np.ndarray, calls: np.ndarray) -> Optional[float]:
    """Mean of sensitivity and specificity; None when the truth holds only one class, since a call that was never
    tested both ways is unmeasured (plain accuracy would read 1.00 for a classifier that always says "present")."""
    truth, calls = np.asarray(truth).astype(bool), np.asarray(calls).astype(bool)
    if truth.all() or not truth.any():
        return None
    return float(np.mean([(calls[truth == c] == c).mean() for c in (True, False)]))


def fit_classifier(volumes: np.ndarray, targets: Sequence[Mapping[str, int]], epochs: int = 20, width: int = 8,
                   batch: int = 16, seed: int = 0, device: Union[str, torch.device] = "cpu",
                   progress: Optional[Progress] = None) -> VariantClassifier:
    """Train the classifier on labelled volumes (N, D, H, W) in [0, 1] and their targets (one dict per volume).

    Trains on `device` and returns the classifier on the CPU. On 2,000 phantoms at 16 x 64 x 64, 20 epochs take
    about 13 minutes on two CPU cores."""
    if len(volumes) != len(targets) or len(volumes) < 4:
        raise InputError(f"need at least 4 labelled volumes with one target set each, got {len(volumes)} volumes "
                         f"and {len(targets)} target sets: pass more labelled cases")
    whole_number(epochs, "epochs", 1)
    missing = next((sorted(set(VARIANT_KEYS) - set(t)) for t in targets if set(VARIANT_KEYS) - set(t)), None)
    if missing:
        raise InputError(f"a target set lacks {', '.join(missing)}: give every case all of {', '.join(VARIANT_KEYS)} "
                         "(targets_from_phantom and targets_from_labels do)")
    x = _finite_volumes(volumes)
    y = torch.tensor([[float(t[k]) for k in VARIANT_KEYS] for t in targets])
    prior = ((y.mean(0) + y[:, list(MIRRORED)].mean(0)) / 2).clamp(1e-3, 1 - 1e-3)  # as seen through mirroring
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = VariantNet(width).to(device)
    pos_weight = ((1 - prior) / prior).to(device)
    steps_per_epoch = max(1, len(x) // batch)
    optimiser = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 2e-3, total_steps=epochs * steps_per_epoch)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=rng)
        for step in range(steps_per_epoch):
            chunk = order[step * batch:(step + 1) * batch]
            xb, yb = _augment(x[chunk], y[chunk], rng)
            loss = F.binary_cross_entropy_with_logits(net(xb.to(device)), yb.to(device), pos_weight=pos_weight)
            if not torch.isfinite(loss):
                raise InputError("variant classifier training diverged (loss is not finite): check the labelled "
                                 "volumes for NaNs, or train again with another seed")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
        if progress:
            progress(epoch + 1, epochs)
    prevalence = {key: float(y[:, v].mean()) for v, key in enumerate(VARIANT_KEYS)}
    return VariantClassifier(VARIANT_KEYS, net.cpu().eval(), tuple(x.shape[1:]),
                             {"cases": len(x), "epochs": epochs, "width": width, "seed": seed, "prevalence": prevalence})


def _finite_volumes(volumes: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(volumes, np.float32))
    if x.ndim != 4 or min(x.shape[1:], default=0) < MIN_SIZE:
        raise InputError(f"volumes must have shape (N, D, H, W) with at least {MIN_SIZE} voxels per axis (the network "
                         f"halves them three times), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError("volumes contain NaN or infinite values: fix or leave out those cases")
    if len(x) and (float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3):
        raise InputError(f"volumes must be scaled to [0, 1] as generated ones are, got values from {float(x.min()):g} to "
                         f"{float(x.max()):g}: min-max scale them (load_labelled_folder does)")
    return x


def _augment(x: torch.Tensor, y: torch.Tensor, rng: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    mirror = torch.rand(len(x), generator=rng) < 0.5
    x = torch.where(mirror[:, None, None, None], x.flip(LEFT_RIGHT_AXIS), x)
    y = torch.where(mirror[:, None], y[:, list(MIRRORED)], y)
    shift = torch.randint(-2, 3, (3,), generator=rng).tolist()
    x = torch.roll(x, shift, (1, 2, 3))
    return x * (0.85 + 0.3 * torch.rand(len(x), 1, 1, 1, generator=rng)), y


def evaluate_classifier(classifier: VariantClassifier, volumes: np.ndarray,
                        targets: Sequence[Mapping[str, int]]) -> Dict[str, Optional[float]]:
    """Balanced accuracy per variant on labelled volumes (held out from fitting); None (unmeasured) where fewer than
    MIN_HELD_OUT_PER_CLASS of them show it present, or absent: two or three cases pass any threshold by luck."""
    calls = classifier.predict(volumes)
    return {key: balanced_accuracy([t[key] for t in targets], calls[:, v]) if measurable(targets, key) else None
            for v, key in enumerate(classifier.keys)}


def measurable(targets: Sequence[Mapping[str, int]], key: str) -> bool:
    """Whether held-out `targets` show variant `key` present and absent MIN_HELD_OUT_PER_CLASS times each."""
    present = sum(int(t[key]) for t in targets)
    return min(present, len(targets) - present) >= MIN_HELD_OUT_PER_CLASS


class LabelledCases(NamedTuple):
    """Labelled volumes on a model's grid with their variant targets, and where each case's targets come from."""

    volumes: np.ndarray
    targets: List[Dict[str, int]]
    names: List[str]
    sources: List[str]  # "record" (a phantom's JSON) or "labels" (a label map)


def load_labelled_folder(folder: Union[str, Path], shape_dhw: Sequence[int], spacing_mm: Sequence[float],
                         normalisation: Any = None) -> LabelledCases:
    """Volumes and targets of a phantom folder (`cowgan phantoms`: *_image + JSON), TopCoW-style pairs (*_image +
    *_label NIfTI or NRRD) or TopCoW's release (imagesTr/ beside cow_seg_labelsTr/ or labelsTr/; its MRA cases), each
    image brought onto the model's grid as `cowgan project` brings a scan (RAS, the model's spacing around its centre,
    scaled by the model's recorded `normalisation`), so that left is left whatever the files' storage order; targets
    come from the JSON or the label values, which name the side."""
    from .fetal_pca import MAX_RESOLVING_SPACING_MM, resolves_hypoplastic_p1
    from .preprocess import MIN_COVERAGE, scan_on_model_grid

    folder = Path(folder)
    problem = path_problem(folder, folder=True)
    if problem:
        raise InputError(f"labelled folder {folder} {problem}: pass a folder written by `cowgan phantoms` or of "
                         "TopCoW-style image/label pairs")
    cases = _release_cases(folder) or _paired_cases(folder)
    volumes, targets, names, sources, padded, coarse = [], [], [], [], [], []
    for stem, image, labels, whole_head in cases:
        sidecar = image.with_name(f"{stem}.json")
        recorded = _recorded_variants(sidecar) if sidecar.is_file() else None
        centre = None
        if recorded is not None:
            targets.append(recorded)
            sources.append("record")
        elif labels:
            label_map = _label_map(labels[0])
            targets.append(targets_from_labels(label_map.labels, label_map.spacing))
            sources.append("labels")
            if not resolves_hypoplastic_p1(label_map.spacing):
                coarse.append(labels[0].name)
            centre = _centre_inside(image, label_map) if whole_head else None
        else:
            raise InputError(_no_targets_message(image, stem, sidecar))
        scan = scan_on_model_grid(image, shape_dhw, spacing_mm, warn=False, normalisation=normalisation,
                                  centre_ras=centre)
        if scan.coverage < MIN_COVERAGE:
            padded.append(f"{image.name} {scan.coverage:.0%}")
        volumes.append(scan.volume)
        names.append(stem)
    if padded:
        log.warning("%d of %d labelled images fill less than %.0f%% of the model's grid and are padded (%s): the "
                    "classifier learns them as they are, so label cases that cover the grid where you can",
                    len(padded), len(cases), 100 * MIN_COVERAGE, ", ".join(padded[:3]) + (", ..." if len(padded) > 3 else ""))
    if coarse:
        log.warning("%d label maps have voxels coarser than %.2f mm (%s), too coarse to show a P1 under 1 mm wide as "
                    "such, so their fetal PCA targets may miss a thin P1: label the scans at their acquired resolution",
                    len(coarse), MAX_RESOLVING_SPACING_MM, ", ".join(coarse[:3]) + (", ..." if len(coarse) > 3 else ""))
    return LabelledCases(np.stack(volumes).astype(np.float32), targets, names, sources)


def _paired_cases(folder: Path) -> List[Tuple[str, Path, List[Path], bool]]:
    """(stem, image, label maps, False) of each NAME_image in `folder`, with the NAME_label files beside it: crops
    around the circle, brought to the model's grid around their centre."""
    from .preprocess import SUFFIXES

    files = {p.name: p for p in folder.iterdir()}  # listed once: a phantom set holds thousands of files
    images = sorted(p for name, p in files.items() if IMAGE_FILE.fullmatch(name))
    if not images:
        raise InputError(f"no *_image.nii(.gz) or *_image.nrrd files in {folder}: pass a folder written by "
                         "`cowgan phantoms`, image/label pairs named NAME_image and NAME_label in one folder, or "
                         "TopCoW's release folder (imagesTr/ beside cow_seg_labelsTr/)")
    out = []
    for image in images:
        stem = IMAGE_FILE.fullmatch(image.name).group(1)
        labels = [files[name] for name in (f"{stem}_label{suffix}" for suffix in SUFFIXES) if name in files]
        out.append((stem, image, labels, False))
    return out


def labelled_set_folder(folder: Union[str, Path]) -> Path:
    """The folder that names a labelled set, resolved: TopCoW's release for its imagesTr/ (so that both spellings
    are one set), else the folder itself."""
    folder = Path(folder).resolve()
    if folder.name == RELEASE_IMAGES and any((folder.parent / name).is_dir() for name in RELEASE_LABELS):
        return folder.parent
    return folder


def _release_cases(folder: Path) -> List[Tuple[str, Path, List[Path], bool]]:
    """(stem, image, label maps, True) of TopCoW's release layout, `folder` being the release or its imagesTr/: each
    imagesTr/NAME_0000.nii.gz with cow_seg_labelsTr/NAME.nii.gz (labelsTr/ in nnU-Net's naming). Its images show the
    whole head, so they are brought to the model's grid around the labelled circle. Its CTA cases (topcow_ct_*) are
    left out, named in one warning: the models learn TOF-MRA. Empty for any other layout."""
    release = labelled_set_folder(folder)
    images_dir = release / RELEASE_IMAGES
    label_dirs = [release / name for name in RELEASE_LABELS if (release / name).is_dir()]
    if not images_dir.is_dir() or not label_dirs:
        return []
    out, cta = [], []
    for image in sorted(images_dir.iterdir()):
        match = RELEASE_IMAGE.fullmatch(image.name)
        if not match:
            continue
        stem, suffix = match.groups()
        if stem.startswith(RELEASE_CTA_PREFIX):
            cta.append(image.name)
            continue
        labels = [label_dirs[0] / f"{stem}{ending}" for ending in dict.fromkeys((suffix, ".nii.gz", ".nii"))]
        labels = [label for label in labels if label.is_file()]
        if not labels:
            raise InputError(f"{image} has no label map {label_dirs[0] / (stem + suffix)}: add it, or move the image "
                             f"out of {images_dir}")
        out.append((stem, image, labels[:1], True))
    if cta:
        log.warning("%d CTA cases of the TopCoW release left out (%s): the classifier learns TOF-MRA volumes",
                    len(cta), ", ".join(cta[:3]) + (", ..." if len(cta) > 3 else ""))
    if not out:
        raise InputError(f"no TOF-MRA image (NAME_0000.nii.gz, not {RELEASE_CTA_PREFIX}*) in {images_dir}: pass "
                         "the TopCoW release folder that holds imagesTr/ and cow_seg_labelsTr/")
    return out


def _no_targets_message(image: Path, stem: str, sidecar: Path) -> str:
    """Why an image has no targets: a phantom record not used because its grid cuts the circle, or nothing beside it."""
    if sidecar.is_file() and _circle_cut(sidecar):
        return (f"{image.name}: its phantom record {sidecar.name} is not used because the grid cuts part of the circle "
                f"off (params.circle_in_view is false): add the label map {stem}_label.nii.gz that `cowgan phantoms` "
                "wrote beside it, or leave the case out")
    return f"{image.name} has neither a phantom JSON nor a label map beside it: add {stem}_label.nii.gz"


def _circle_cut(sidecar: Path) -> bool:
    """Whether a (readable) phantom record says its grid cuts part of the circle off."""
    recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    params = recorded.get("params") if isinstance(recorded, dict) else None
    return isinstance(params, dict) and params.get("circle_in_view") is False


class LabelMapFile(NamedTuple):
    """A TopCoW label map read from `path`: its normalised ids in ITK's index order (i, j, k), as NIfTI stores them,
    and the voxel size (mm) along each of those axes. Each id names one artery of one side, so the order does not
    matter to the targets, and the voxel sizes let a P1's calibre be measured."""

    path: Path
    labels: np.ndarray
    spacing: Tuple[float, float, float]

    def labelled_centre_ras(self) -> Optional[np.ndarray]:
        """RAS centre (mm) of the box around the labelled voxels, placed as SimpleITK places the file, as the images
        are resampled, also where a NIfTI header holds no orientation."""
        header = _itk_header(self.path, "cannot place label map", "fix its header")
        labelled = np.argwhere(self.labels != 0)  # not empty: checked_label_map refuses a map without labels
        box_centre = (labelled.min(axis=0) + labelled.max(axis=0)) / 2.0
        direction = np.asarray(header.GetDirection(), float).reshape(3, 3)
        lps = np.asarray(header.GetOrigin(), float) + direction @ (np.asarray(header.GetSpacing(), float) * box_centre)
        return np.array([-1.0, -1.0, 1.0]) * lps


def _itk_header(path: Path, failure: str, fix: str) -> Any:
    """SimpleITK's reader of `path` with its header read (no voxels); InputError "FAILURE PATH: why: FIX" if ITK
    cannot read it."""
    from .preprocess import itk_rejection, simpleitk

    header = simpleitk().ImageFileReader()
    header.SetFileName(str(path))
    try:
        header.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{failure} {ascii(str(path))}: {itk_rejection(exc).with_fix(fix)}") from None
    return header


def _centre_inside(image: Path, label_map: LabelMapFile) -> np.ndarray:
    """The label map's labelled centre (RAS mm), refused naming both files where it lies outside the image: a label
    map of another scan, or headers that place the two apart."""
    centre = label_map.labelled_centre_ras()
    header = _itk_header(image, "cannot use", "copy or export it again")
    origin, spacing = np.asarray(header.GetOrigin(), float), np.asarray(header.GetSpacing(), float)
    direction = np.asarray(header.GetDirection(), float).reshape(3, 3)
    index = np.linalg.solve(direction * spacing, np.array([-1.0, -1.0, 1.0]) * centre - origin)
    if np.any(index < -0.5) or np.any(index > np.asarray(header.GetSize(), float) - 0.5):
        raise InputError(f"the arteries labelled in {label_map.path.name} lie outside its image {image.name} (at RAS "
                         f"{tuple(round(float(v), 1) for v in centre)} mm): the label map belongs to another scan, or "
                         "one of the two headers misplaces it; pair each image with its own label map")
    return centre


def _label_map(path: Path) -> LabelMapFile:
    """Read a TopCoW label map, refusing (naming the file) a damaged one, one holding NaN (which SimpleITK would read
    as background), one that is not 3D and what `checked_label_map` refuses."""
    from .preprocess import VolumeRejected, check_itk_name, read_nifti_as_stored, simpleitk
    from .topcow import checked_label_map

    try:
        check_itk_name(path)
        stored = read_nifti_as_stored(path)  # SimpleITK reads a truncated file's missing voxels, and NaN, as label 0
    except VolumeRejected as exc:
        raise InputError(f"cannot read label map {ascii(str(path))}: {exc.with_fix('copy or export it again')}") from None
    if stored is not None:
        image, values = stored
        labels = checked_label_map(values, path)
        return LabelMapFile(path, labels, _voxel_sizes(np.linalg.norm(np.asarray(image.affine, float)[:3, :3], axis=0),
                                                       path))
    try:
        image = simpleitk().ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read label map {path} ({str(exc).strip().splitlines()[-1][:120]}): copy or export "
                         "it again") from None
    labels = checked_label_map(np.transpose(simpleitk().GetArrayFromImage(image)), path)  # its arrays are (k, j, i)
    return LabelMapFile(path, labels, _voxel_sizes(image.GetSpacing(), path))


def _voxel_sizes(sizes: Sequence[float], path: Path) -> Tuple[float, float, float]:
    """Three voxel sizes (mm) of the label map at `path`, refused naming the file when its header holds no such."""
    from .volume_io import check_spacing

    try:
        return check_spacing(sizes)
    except InputError as exc:
        raise InputError(f"label map {path}: {exc}: fix its header") from None


def _recorded_variants(sidecar: Path) -> Optional[Dict[str, int]]:
    """The targets a phantom's JSON records, None for a JSON without "variants" or for a phantom whose grid cut
    part of its circle off (its label map says what the image shows); a damaged JSON is named."""
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(recorded, dict) or "variants" not in recorded:
            return None
        params = recorded.get("params", {})
        if not isinstance(params, dict):
            raise TypeError(f'its "params" is {type(params).__name__}, not an object')
        if params.get("circle_in_view") is False:
            return None
        return targets_from_phantom(recorded["variants"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"phantom record {sidecar} is damaged ({type(exc).__name__}: {exc}): write it again with "
                         "`cowgan phantoms`, or delete it to use the label map beside the image") from None
