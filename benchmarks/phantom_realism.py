"""Realism of the CoW phantoms, measured: the same code on phantom labels and on real TopCoW MRA label maps.

Prints markdown tables (radius per class, junction distances, variant frequencies, intensity statistics)
and writes MIP pictures. Real label maps are used only if present (they are not part of the project):

    nice -n 19 .venv/bin/python benchmarks/phantom_realism.py --real ../shared/data/topcow-roi-mr \
        --n-geometry 100 --n-variants 1000 --images docs/images
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CircleOfWillisGANLib import topcow  # noqa: E402
from CircleOfWillisGANLib.errors import require, script_exit_code  # noqa: E402
from CircleOfWillisGANLib.fetal_pca import fetal_pca  # noqa: E402
from CircleOfWillisGANLib.mip import contact_sheet, mip_panel, save_png  # noqa: E402
from CircleOfWillisGANLib.phantoms import PhantomConfig, VariantPrevalence, generate_phantom  # noqa: E402

GRID_MM = 0.62
RADIUS_CLASSES = ("BA", "R-PCA", "L-PCA", "R-ICA", "L-ICA", "R-MCA", "L-MCA", "R-Pcom", "L-Pcom", "Acom",
                  "R-ACA", "L-ACA")
DOMAIN_RADIUS = {"BA": "1.55-1.8", "PCA": "0.9-1.1", "ICA": "1.8-2.5", "MCA": "1.2-1.55", "Pcom": "0.7-0.75",
                 "Acom": "0.6", "ACA": "1.0"}


def real_on_grid(path: Path, spacing_mm: float = GRID_MM) -> Tuple[np.ndarray, np.ndarray]:
    """A real TopCoW label map reoriented to RAS and resampled (nearest neighbour) to the phantom spacing."""
    import nibabel as nib

    ndi = require("scipy.ndimage", "resampling the real label maps", "scipy")
    image = nib.as_closest_canonical(nib.load(str(path)))
    data = topcow.normalise_labels(np.asarray(image.dataobj))
    zooms = image.header.get_zooms()[:3]
    resampled = ndi.zoom(data, [z / spacing_mm for z in zooms], order=0)
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] @ np.diag([spacing_mm / z for z in zooms])
    return resampled.transpose(2, 0, 1), affine


def real_native(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """A real TopCoW label map at its own resolution, (D, H, W) with its affine."""
    return topcow.load_label_map(path)


def summarise(values: Sequence[Optional[float]]) -> str:
    """'median [p5, p95]' of the values that exist, or '-'."""
    v = np.array([x for x in values if x is not None], float)
    if v.size == 0:
        return "-"
    if v.size < 5:
        return ", ".join(f"{x:.2f}" for x in v)
    return f"{np.median(v):.2f} [{np.percentile(v, 5):.2f}, {np.percentile(v, 95):.2f}]"


def geometry_rows(real: Dict[str, topcow.Measurements], phantoms: List[topcow.Measurements]) -> List[str]:
    """Markdown table of radii per class and junction distances: real cases, phantoms, literature."""
    names = list(real)
    lines = ["| measure | " + " | ".join(names) + " | phantoms median [p5, p95] | DOMAIN.md |",
             "|---" * (len(names) + 3) + "|"]
    for cls in RADIUS_CLASSES:
        row = [f"{real[n].radius_mm.get(cls, float('nan')):.2f}" if cls in real[n].radius_mm else "-" for n in names]
        ph = summarise([m.radius_mm.get(cls) for m in phantoms])
        lines.append(f"| radius {cls} (mm) | " + " | ".join(row) + f" | {ph} | {DOMAIN_RADIUS.get(cls.split('-')[-1], '')} |")
    for label, getter, lit in (
            ("ICA-ICA termini (mm)", lambda m: m.ica_ica_mm, "29-33"),
            ("Acom to basilar tip (mm)", lambda m: m.acom_to_basilar_tip_mm, "15-21"),
            ("ICA termini anterior of tip (mm)", lambda m: m.ica_terminus_anterior_of_tip_mm, "11-20"),
            ("R-Pcom length (mm)", lambda m: m.pcom_length_mm["R"], "12-15"),
            ("L-Pcom length (mm)", lambda m: m.pcom_length_mm["L"], "12-15")):
        row = [("-" if getter(real[n]) is None else f"{getter(real[n]):.1f}") for n in names]
        lines.append(f"| {label} | " + " | ".join(row) + f" | {summarise([getter(m) for m in phantoms])} | {lit} |")
    return lines


def variant_rows(n: int, seed: int) -> List[str]:
    """Markdown table: frequency of each variant measured on phantom label maps against the table."""
    table = VariantPrevalence()
    counts: Dict[str, int] = {}
    keys = ("pcom_absent_left", "pcom_absent_right", "pcom_absent_both", "fetal_pca_left", "fetal_pca_right",
            "fetal_pca_bilateral", "a1_absent_left", "a1_absent_right", "acom_absent", "third_a2", "complete")
    mismatches = fetal_mismatches = 0
    for i in range(n):
        p = generate_phantom((seed, i), PhantomConfig())
        v = topcow.VariantVectors(p.topcow_vectors["anterior"], p.topcow_vectors["posterior"]).named()
        mismatches += int(p.topcow_vectors != p.variants.topcow())
        fetal = fetal_pca(p.labels, topcow.spacing_dhw(p.affine))
        fetal_mismatches += int(fetal != {"left": p.variants.fetal_pca_left, "right": p.variants.fetal_pca_right})
        flags = {
            "pcom_absent_left": v["L-Pcom"] == 0, "pcom_absent_right": v["R-Pcom"] == 0,
            "pcom_absent_both": v["L-Pcom"] == 0 and v["R-Pcom"] == 0,
            "fetal_pca_left": fetal["left"], "fetal_pca_right": fetal["right"],
            "fetal_pca_bilateral": fetal["left"] and fetal["right"],
            "a1_absent_left": v["L-A1"] == 0, "a1_absent_right": v["R-A1"] == 0, "acom_absent": v["Acom"] == 0,
            "third_a2": v["3rd-A2"] == 1,
            "complete": topcow.VariantVectors(p.topcow_vectors["anterior"], p.topcow_vectors["posterior"]).complete,
        }
        for k, flag in flags.items():
            counts[k] = counts.get(k, 0) + int(bool(flag))
    expected = table.as_dict()
    expected["a1_absent_left"] = table.a1_hypoplastic_left * table.a1_absent_given_hypoplastic
    expected["a1_absent_right"] = table.a1_hypoplastic_right * table.a1_absent_given_hypoplastic
    lines = [f"| variant | table | measured on {n} phantom label maps (95% CI) |", "|---|---|---|"]
    for k in keys:
        f = counts.get(k, 0) / n
        half = 1.96 * np.sqrt(max(f * (1 - f), 1e-9) / n)
        lines.append(f"| {k} | {expected[k]:.3f} | {f:.3f} ({max(0, f - half):.3f}-{min(1, f + half):.3f}) |"
                     if k in expected else f"| {k} | 0.12-0.40 (literature) | {f:.3f} ({max(0, f - half):.3f}-{min(1, f + half):.3f}) |")
    lines.append(f"\nLabel-map vectors differing from the sampled variants: {mismatches} of {n}; fetal PCAs called from "
                 f"the label maps (an absent P1, or a thin one measured by `fetal_pca`) differing from the draws: "
                 f"{fetal_mismatches} of {n}.")
    return lines


def intensity_rows(images: List[np.ndarray], labels: List[np.ndarray]) -> List[str]:
    """Markdown table of intensity statistics against the DOMAIN.md facts."""
    tissue_median = [float(np.median(im[(lab == 0) & (im > 0)])) for im, lab in zip(images, labels)]
    tissue_p99 = [float(np.percentile(im[(lab == 0) & (im > 0)], 99)) for im, lab in zip(images, labels)]
    bright = [float((im > 0.3).mean() * 100) for im in images]
    vessel_median = [float(np.median(im[lab > 0])) for im, lab in zip(images, labels)]
    vessel_p95 = [float(np.percentile(im[lab > 0], 95)) for im, lab in zip(images, labels)]
    zeros = [float((im == 0).mean() * 100) for im in images]
    return ["| statistic | phantoms median [p5, p95] | DOMAIN.md (reference training data) |", "|---|---|---|",
            f"| tissue median | {summarise(tissue_median)} | ~0.10 |",
            f"| tissue 99th percentile | {summarise(tissue_p99)} | 0.24 |",
            f"| % voxels > 0.3 | {summarise(bright)} | ~0.6 |",
            f"| labelled vessel median | {summarise(vessel_median)} | 0.3-0.97 |",
            f"| labelled vessel 95th percentile | {summarise(vessel_p95)} | 0.3-0.97 |",
            f"| % exact zeros (skull-stripped) | {summarise(zeros)} | many volumes have some |"]


def pictures(out: Path, real_paths: List[Path], seed: int) -> None:
    """MIP pictures for the report: phantom images, phantom labels next to real labels, forced variants."""
    out.mkdir(parents=True, exist_ok=True)
    spacing = (GRID_MM,) * 3
    phantoms = [generate_phantom((seed, i)) for i in range(8)]
    save_png(out / "phantom-mips.png", contact_sheet([mip_panel(p.image, spacing, scale=1.5) for p in phantoms],
                                                     columns=4, captions=[f"phantom {seed}/{i}" for i in range(8)]))
    single = phantoms[0]
    save_png(out / "phantom-single.png", mip_panel(single.image, spacing, scale=3.0))
    panels, captions = [], []
    for path in real_paths:
        lab, _ = real_on_grid(path)
        canvas = np.zeros((32, 128, 128), np.float32)
        d, h, w = (min(a, b) for a, b in zip(lab.shape, canvas.shape))
        oh, ow = (128 - h) // 2, (128 - w) // 2
        canvas[:d, oh:oh + h, ow:ow + w] = lab[:d, :h, :w] > 0
        panels.append(mip_panel(canvas, spacing, scale=1.5))
        captions.append(f"real {path.name.split('_')[-1].split('.')[0]} (ROI crop)")
    for p in phantoms[:3]:
        panels.append(mip_panel((p.labels > 0).astype(np.float32), spacing, scale=1.5))
        captions.append("phantom labels")
    if panels:
        save_png(out / "phantom-labels-vs-real.png", contact_sheet(panels, columns=3, captions=captions))
    forced = [("complete", "complete circle"), ("fetal_pca_left", "fetal PCA left"), ("pcom_absent_both", "no Pcoms"),
              ("a1_absent_right", "absent right A1"), ("acom_absent", "absent Acom"), ("third_a2", "third A2")]
    save_png(out / "phantom-variants.png", contact_sheet(
        [mip_panel(generate_phantom((seed, 1), PhantomConfig(force=(f,))).image, spacing, scale=1.5) for f, _ in forced],
        columns=3, captions=[c for _, c in forced]))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "topcow-roi-mr"))
    parser.add_argument("--n-geometry", type=int, default=100)
    parser.add_argument("--n-variants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--images", default=None, help="folder for the MIP pictures (default: none)")
    args = parser.parse_args(argv)
    if args.n_variants < 1 or args.n_geometry < 0:
        parser.error(f"--n-variants {args.n_variants} must be at least 1 and --n-geometry {args.n_geometry} at least 0")
    real_paths = sorted(Path(args.real).glob("*.nii*")) if Path(args.real).is_dir() else []
    real = {f"real {p.name.split('_')[-1].split('.')[0]}": topcow.measure(*real_on_grid(p)) for p in real_paths}
    native = {f"{p.name.split('_')[-1].split('.')[0]} native": topcow.measure(*real_native(p)) for p in real_paths}
    phantoms, images, labels = [], [], []
    for i in range(args.n_geometry):
        p = generate_phantom((args.seed, i))
        phantoms.append(topcow.measure(p.labels, p.affine))
        images.append(p.image)
        labels.append(p.labels)
    print("## Geometry (real maps resampled to 0.62 mm and at native 0.3 x 0.3 x 0.6 mm)\n")
    print("\n".join(geometry_rows({**real, **native}, phantoms)))
    print("\n## Variant vectors of the real maps\n")
    for name, m in real.items():
        print(f"- {name}: anterior {m.variants['anterior']}, posterior {m.variants['posterior']}")
    print(f"\n## Intensities ({args.n_geometry} phantoms)\n")
    print("\n".join(intensity_rows(images, labels)))
    print(f"\n## Variant frequencies ({args.n_variants} phantoms)\n")
    print("\n".join(variant_rows(args.n_variants, args.seed + 1)))
    if args.images:
        pictures(Path(args.images), real_paths, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(script_exit_code(main, "phantom_realism.py"))
