"""Write an evaluation's `metrics.json` and its self-contained HTML report (plots embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..files import atomic_write
from . import plots
from .morphology import FEATURE_NAMES
from .pipeline import EvaluationResult

PAPER = {"fid2d": (12.17, 1.54), "md": (0.00078, 0.00018), "auc": (0.961, 0.989)}
VERDICTS = ((2.0, "close to the real-vs-real baseline"), (10.0, "clearly different from the real data"),
            (math.inf, "far from the real data"))


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _get(d: Dict[str, Any], *path: str) -> Optional[float]:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d if isinstance(d, (int, float)) else None


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None:
        return "&ndash;"
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def verdict(generated: Optional[float], baseline: Optional[float]) -> Optional[str]:
    """How a distance compares with the real-vs-real baseline, in words (ratio thresholds 2 and 10)."""
    if generated is None or baseline is None:
        return None
    if baseline <= 0:  # identical real sets: any distance from them is far, none is the baseline itself
        return VERDICTS[0][1] if generated <= 0 else VERDICTS[-1][1]
    ratio = generated / baseline
    label = next(text for limit, text in VERDICTS if ratio <= limit)
    shown = f"{ratio:.1f}" if ratio < 1000 else f"{ratio:.2g}"
    return f"{shown} times the real-vs-real baseline: {label}" if math.isfinite(ratio) else label


def _img(png: bytes, alt: str, width: Optional[int] = None) -> str:
    style = f' style="max-width:{width}px"' if width else ""
    return f'<img alt="{html.escape(alt)}"{style} src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _summary_rows(m: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for space, title in (("morphology", "morphology features"), ("medicalnet", "MedicalNet features")):
        s = m["feature_spaces"].get(space)
        if not s:
            continue
        g, b = s["generated_vs_real"], s.get("real_vs_real", {})
        fd_name = "MD (Fréchet distance, MedicalNet)" if space == "medicalnet" else "Fréchet distance, morphology (z-scored)"
        rows.append([fd_name, _fmt(_get(g, "frechet_distance", "value")), _fmt(_get(b, "frechet_distance", "value")),
                     *((_fmt(PAPER["md"][0], 2), _fmt(PAPER["md"][1], 2)) if space == "medicalnet" else ("&ndash;", "&ndash;"))])
        rows.append([f"AUC-PRD, {title}", _fmt(_get(g, "prd", "auc")), _fmt(_get(b, "prd", "auc")),
                     *((_fmt(PAPER["auc"][0]), _fmt(PAPER["auc"][1])) if space == "medicalnet" else ("&ndash;", "&ndash;"))])
        rows.append([f"F8 (recall) / F1/8 (precision), {title}",
                     f'{_fmt(_get(g, "prd", "f8_recall"))} / {_fmt(_get(g, "prd", "f1_8_precision"))}',
                     f'{_fmt(_get(b, "prd", "f8_recall"))} / {_fmt(_get(b, "prd", "f1_8_precision"))}', "&ndash;", "&ndash;"])
        rows.append([f"precision / recall (k=3), {title}",
                     f'{_fmt(_get(g, "precision_recall", "precision"))} / {_fmt(_get(g, "precision_recall", "recall"))}',
                     f'{_fmt(_get(b, "precision_recall", "precision"))} / {_fmt(_get(b, "precision_recall", "recall"))}',
                     "&ndash;", "&ndash;"])
        rows.append([f"density / coverage (k=5), {title}",
                     f'{_fmt(_get(g, "density_coverage", "density"))} / {_fmt(_get(g, "density_coverage", "coverage"))}',
                     f'{_fmt(_get(b, "density_coverage", "density"))} / {_fmt(_get(b, "density_coverage", "coverage"))}',
                     "&ndash;", "&ndash;"])
    f = m["fid2d"]
    rows.append(["FID, 2D slices (InceptionV3)", _fmt(_get(f, "generated_vs_real", "value")),
                 _fmt(_get(f, "real_vs_real", "value")), _fmt(PAPER["fid2d"][0]), _fmt(PAPER["fid2d"][1])])
    d = m["diversity"]
    rows.append(["diversity: mean pairwise MS-SSIM (lower = more diverse)", _fmt(_get(d, "generated", "mean")),
                 f'{_fmt(_get(d, "real", "mean"))} (real set)', "&ndash;", "&ndash;"])
    mem = m["memorisation"].get("summary")
    if mem:
        rows.append(["memorisation: near-copies of training volumes", f'{mem["near_copies"]} of {len(m["memorisation"]["generated"])}',
                     f'held-out max r = {_fmt(mem.get("held_out_max"))}', "&ndash;", "&ndash;"])
    return rows


def _prd_settings(m: Dict[str, Any]) -> str:
    """The PRD settings this run used, as a sentence (the paper's: 10 clusters, 10 runs, 1001 angles)."""
    for space in m["feature_spaces"].values():
        prd = space.get("generated_vs_real", {}).get("prd", {})
        if "clusters" in prd:
            paper = (prd["clusters"], prd["runs"], prd["angles"]) == (10, 10, 1001)
            return (f" PRD: {prd['clusters']} clusters, {prd['runs']} runs, {prd['angles']} angles"
                    f"{', as the paper' if paper else '; the paper used 10 clusters, 10 runs, 1001 angles'}.")
    return ""


def _table(header: List[str], rows: List[List[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.verdict{font-size:1.1em;padding:10px 14px;border-left:5px solid #d62728;background:#fff4f4}
.ok{border-left-color:#2ca02c;background:#f3fff3}.note{color:#555;font-size:0.9em}.grid{display:flex;gap:16px;flex-wrap:wrap}
figure{margin:0}figcaption{font-size:0.85em;color:#555}img{max-width:100%}"""


def render_html(result: EvaluationResult, inputs: Dict[str, Any]) -> str:
    """The report as one HTML string."""
    m = result.metrics
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>CoW-GAN evaluation</title><style>{CSS}</style></head><body>",
             "<h1>Circle of Willis GAN: evaluation report</h1>",
             "<p class='note'>" + " &middot; ".join(f"<b>{html.escape(k)}</b>: {html.escape(str(v))}" for k, v in inputs.items()) + "</p>"]
    morph = m["feature_spaces"]["morphology"]
    text = verdict(_get(morph, "generated_vs_real", "frechet_distance", "value"), _get(morph, "real_vs_real", "frechet_distance", "value"))
    if text:
        close = text.endswith(VERDICTS[0][1])
        parts.append(f"<p class='verdict{' ok' if close else ''}'>Vessel morphology of the generated volumes: Fréchet distance {text}.</p>")
    for note in m["notes"] + list(m["skipped"].values()):
        parts.append(f"<p class='note'><b>Note:</b> {html.escape(note)}</p>")
    parts.append("<h2>Summary</h2>")
    parts.append(_table(["metric", "generated vs real", "real vs real (two halves)", "paper: best model", "paper: real vs real"],
                        _summary_rows(m)))
    parts.append("<p class='note'>Fréchet distances and AUC depend on the feature space and the number of volumes: compare a "
                 "model with the real-vs-real baseline computed here, and with the paper only in the MedicalNet space with "
                 f"the paper's data.{_prd_settings(m)}</p>")
    curves = []
    for space, colour in (("morphology", plots.FAKE_COLOUR), ("medicalnet", "#ff7f0e")):
        s = m["feature_spaces"].get(space, {})
        for key, label, c in (("generated_vs_real", f"generated vs real ({space})", colour),
                              ("real_vs_real", f"real vs real ({space})", plots.BASELINE_COLOUR if space == "morphology" else "#9467bd")):
            curve = s.get(key, {}).get("prd", {}).get("curve")
            if curve:
                curves.append((label, curve, c))
    parts.append("<h2>Volumes (maximum intensity projections)</h2><div class='grid'>")
    from ..mip import contact_sheet

    for label, feats in (("real", result.real_features), ("generated", result.fake_features)):
        if feats.previews:
            parts.append(f"<figure>{_img(plots.image_png(contact_sheet(feats.previews, columns=4)), label, 540)}"
                         f"<figcaption>{label}: first {len(feats.previews)} volumes (axial | coronal over sagittal)</figcaption></figure>")
    parts.append("</div>")
    if curves:
        parts.append("<h2>Precision and recall for distributions</h2>")
        parts.append(f"<figure>{_img(plots.prd_plot(curves), 'PRD curves', 440)}<figcaption>A curve in the top right corner means "
                     "the generated volumes are both realistic (precision) and cover the real variety (recall).</figcaption></figure>")
    parts.append(_morphology_section(result))
    parts.append(_diversity_section(m["diversity"]))
    parts.append(_memorisation_section(m["memorisation"], result.images))
    parts.append(_variants_section(m["variants"]))
    parts.append("<h2>How to read this report</h2><p class='note'>See docs/evaluation.md for what each metric measures. "
                 "All numbers are in metrics.json.</p></body></html>")
    return "\n".join(parts)


def _morphology_section(result: EvaluationResult) -> str:
    m = result.metrics["morphology"]
    rows = []
    for name in FEATURE_NAMES:
        r = m[name]
        rows.append([f"<b>{name}</b><br><span class='note'>{html.escape(r['description'])}</span>",
                     f"{_fmt(r['real']['mean'])} &plusmn; {_fmt(r['real']['sd'])}",
                     f"{_fmt(r['generated']['mean'])} &plusmn; {_fmt(r['generated']['sd'])}",
                     _fmt(r["generated_vs_real"]["wasserstein_in_real_sd"], 2), _fmt(r["generated_vs_real"]["ks"], 2),
                     _fmt(r.get("real_vs_real", {}).get("ks"), 2)])
    hist = plots.histogram_grid(result.real_features.matrix("morphology"), result.fake_features.matrix("morphology"), FEATURE_NAMES)
    return ("<h2>Vessel morphology and intensity</h2>"
            + _table(["feature", "real mean &plusmn; SD", "generated mean &plusmn; SD", "Wasserstein (real SDs)", "KS", "KS real vs real"], rows)
            + f"<figure>{_img(hist, 'feature histograms')}<figcaption>Blue: real, red: generated.</figcaption></figure>")


def _diversity_section(d: Dict[str, Any]) -> str:
    series = [(label, d[key].get("values", []), colour) for key, label, colour in
              (("real", "real", plots.REAL_COLOUR), ("generated", "generated", plots.FAKE_COLOUR))]
    notes = "".join(f"<p class='note'>{html.escape(d[k]['skipped'])}</p>" for k in ("real", "generated") if "skipped" in d[k])
    if not any(len(s[1]) for s in series):
        return f"<h2>Diversity</h2>{notes}"
    png = plots.distribution_plot(series, "pairwise 3D MS-SSIM", f"MS-SSIM, {d['scales']} scales, kernel {d['kernel_size']}")
    return (f"<h2>Diversity</h2>{notes}<p>Mean pairwise MS-SSIM: generated {_fmt(_get(d, 'generated', 'mean'))}, real "
            f"{_fmt(_get(d, 'real', 'mean'))}. Generated volumes much more alike than real ones suggest mode collapse.</p>"
            f"<figure>{_img(png, 'MS-SSIM', 500)}</figure>")


def _memorisation_section(mem: Dict[str, Any], images: Dict[str, np.ndarray]) -> str:
    if "skipped" in mem:
        return f"<h2>Memorisation</h2><p class='note'>{html.escape(mem['skipped'])}</p>"
    s = mem["summary"]
    gen = [g["correlation"] for g in mem["generated"]]
    png = plots.distribution_plot([("held-out real", mem["held_out"], plots.REAL_COLOUR), ("generated", gen, plots.FAKE_COLOUR)],
                                  "highest correlation with a training volume", "Nearest training volume",
                                  s.get("held_out_max"), "held-out max")
    leak = s.get("held_out_in_training", 0)
    warning = (f"<p class='verdict'>{leak} real volume(s) correlate at &ge; 0.99 with a training volume: the real set is not "
               "held out from training, which hides memorisation. Evaluate against volumes the model never saw.</p>") if leak else ""
    floor = mem["config"].get("min_copy_correlation")
    above_reals = "above every held-out real volume's" + (f" and &ge; {floor}" if floor is not None else "")
    out = [f"<h2>Memorisation</h2>{warning}<p>{s['near_copies']} generated volume(s) flagged as near-copies (correlation "
           f"{above_reals}, or &ge; {mem['config']['copy_threshold']}). Median nearest-training correlation: generated "
           f"{_fmt(s['generated_median'])}, held-out real {_fmt(s.get('held_out_median'))}.</p>",
           f"<figure>{_img(png, 'nearest training correlation', 500)}</figure><h3>Closest generated / training pairs</h3><div class='grid'>"]
    for pair in mem["nearest_pairs"]:
        flag = " &mdash; <b style='color:#d62728'>NEAR-COPY</b>" if pair["near_copy"] else ""
        mirrored = " (mirrored)" if pair["mirrored"] else ""
        out.append(f"<figure>{_img(plots.image_png(images[pair['image']]), 'pair', 520)}<figcaption>left: generated "
                   f"{html.escape(pair['generated'])}, right: training {html.escape(pair['train'])}{mirrored}, r = "
                   f"{_fmt(pair['correlation'])}{flag}</figcaption></figure>")
    out.append("</div>")
    return "".join(out)


def _variants_section(v: Dict[str, Any]) -> str:
    if not v:
        return ("<h2>Circle of Willis variants</h2><p class='note'>No TopCoW label maps found beside the volumes (names with "
                "_label/_seg/_mask, or --real-labels / --fake-labels folders).</p>")
    from ..topcow import ANTERIOR_KEYS, POSTERIOR_KEYS

    header = ["set", "n", "complete circle"] + list(ANTERIOR_KEYS + POSTERIOR_KEYS)
    rows = []
    for key in ("real", "generated"):
        if key in v:
            f = v[key]["frequencies"]
            rows.append([key, str(f["n"]), f"{100 * f['complete_circle']:.0f}%"]
                        + [f"{100 * f['segment_present'][k]:.0f}%" for k in ANTERIOR_KEYS + POSTERIOR_KEYS])
    tv = v.get("pattern_total_variation")
    extra = f"<p>Total variation distance between the variant-pattern distributions: {_fmt(tv)}</p>" if tv is not None else ""
    return "<h2>Circle of Willis variants (TopCoW)</h2>" + _table(header, rows) + extra


REPORT_FILES = ("metrics.json", "report.html")


def write_report(out_dir: Path, result: EvaluationResult, inputs: Dict[str, Any]) -> Dict[str, Path]:
    """Write metrics.json and report.html into `out_dir` (atomically); return their paths."""
    out_dir = Path(out_dir)
    metrics = _clean({"inputs": inputs, **result.metrics})
    page = render_html(result, inputs)  # before any file, so a failure leaves no new metrics beside an old page
    json_path = atomic_write(out_dir / REPORT_FILES[0], lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=1)))
    html_path = atomic_write(out_dir / REPORT_FILES[1], lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return {"metrics": json_path, "report": html_path}
