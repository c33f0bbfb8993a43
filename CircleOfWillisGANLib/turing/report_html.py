"""The HTML report: one self-contained file with tables and inline SVG charts (no scripts, no downloads)."""

from __future__ import annotations

from html import escape
from typing import List, Optional, Sequence, Tuple

from .config import CONFIDENCE_LEVELS
from .report import ReaderStats, TuringReport
from .stats import Proportion, format_p_value

WIDTH, HEIGHT, MARGIN = 560, 240, 40
COLOURS = ("#3b6ea5", "#d08b2c", "#6a9a4b")
STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
         "th{background:#eee}td:first-child{text-align:left}.note{background:#f6f6f0;padding:.6em;border-left:4px solid #bb9}"
         ".problem{color:#a33}svg{display:block;margin:1em 0}")


def bar_chart(categories: Sequence[str], series: Sequence[Tuple[str, Sequence[Optional[Proportion]]]],
              title: str, reference: Optional[float] = 0.5) -> str:
    """Grouped bars of proportions with 95% interval whiskers and a dashed reference line, as inline SVG."""
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    group_w = plot_w / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(series))

    def y(v: float) -> float:
        return MARGIN + plot_h * (1.0 - v)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 20}" role="img">',
             f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{MARGIN}" x2="{WIDTH - MARGIN}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{MARGIN - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="10">{tick:.0%}</text>')
    for g, category in enumerate(categories):
        x0 = MARGIN + g * group_w + group_w * 0.1
        for s, (_, values) in enumerate(series):
            value = values[g]
            if value is None or value.value is None:
                continue
            x = x0 + s * bar_w
            lo, hi = value.ci
            parts.append(f'<rect x="{x:.1f}" y="{y(value.value):.1f}" width="{bar_w * 0.9:.1f}" '
                         f'height="{plot_h * value.value:.1f}" fill="{COLOURS[s % len(COLOURS)]}"/>'
                         f'<line x1="{x + bar_w * 0.45:.1f}" x2="{x + bar_w * 0.45:.1f}" y1="{y(lo):.1f}" y2="{y(hi):.1f}" '
                         f'stroke="#222"/><text x="{x + bar_w * 0.45:.1f}" y="{y(hi) - 3:.1f}" text-anchor="middle" '
                         f'font-size="9">n={value.n}</text>')
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{HEIGHT - MARGIN + 14}" text-anchor="middle" '
                     f'font-size="11">{escape(category)}</text>')
    if reference is not None:
        parts.append(f'<line x1="{MARGIN}" x2="{WIDTH - MARGIN}" y1="{y(reference):.1f}" y2="{y(reference):.1f}" '
                     'stroke="#a33" stroke-dasharray="5,4"/>')
    for s, (name, _) in enumerate(series):
        parts.append(f'<rect x="{MARGIN + s * 150}" y="{HEIGHT + 4}" width="10" height="10" fill="{COLOURS[s % len(COLOURS)]}"/>'
                     f'<text x="{MARGIN + s * 150 + 14}" y="{HEIGHT + 13}" font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], title: str, bins: int = 12) -> str:
    """A histogram of reading times as inline SVG."""
    if not values:
        return ""
    top = max(values) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(v / top * bins))] += 1
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    most = max(counts)
    bar_w = plot_w / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">',
             f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for b, count in enumerate(counts):
        h = plot_h * count / most
        parts.append(f'<rect x="{MARGIN + b * bar_w:.1f}" y="{MARGIN + plot_h - h:.1f}" width="{bar_w * 0.9:.1f}" '
                     f'height="{h:.1f}" fill="{COLOURS[0]}"/>')
    parts.append(f'<text x="{MARGIN}" y="{HEIGHT - MARGIN + 14}" font-size="10">0 s</text>'
                 f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - MARGIN + 14}" text-anchor="end" font-size="10">{top:.0f} s</text>'
                 f'<text x="{MARGIN - 4}" y="{MARGIN + 4}" text-anchor="end" font-size="10">{most}</text></svg>')
    return "".join(parts)


def _pct(p: Proportion) -> str:
    if p.value is None:
        return "-"
    lo, hi = p.ci
    return f"{p.value:.1%} ({p.k}/{p.n}; {lo:.1%}-{hi:.1%})"


def _num(value: Optional[float], fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _stats_table(rows: List[ReaderStats], answered: dict) -> str:
    head = ("<tr><th>rater</th><th>answered</th><th>accuracy (95% CI)</th><th>p (exact, vs 50%)</th>"
            "<th>sensitivity for fake</th><th>specificity for fake</th><th>balanced accuracy</th><th>called generated</th>"
            "<th>p (truth x call, Fisher)</th><th>mean time (s)</th><th>median time (s)</th><th>over time limit</th></tr>")
    body = "".join(
        f"<tr><td>{escape(s.name)}</td><td>{answered.get(s.name, s.accuracy.n)}</td><td>{_pct(s.accuracy)}</td>"
        f"<td>{_p(s.p_value)}</td><td>{_pct(s.sensitivity)}</td><td>{_pct(s.specificity)}</td>"
        f"<td>{_num(s.balanced_accuracy, '{:.1%}')}</td><td>{_pct(s.called_fake)}</td><td>{_p(s.discrimination_p)}</td>"
        f"<td>{_num(s.mean_time_s)}</td><td>{_num(s.median_time_s)}</td><td>{s.over_limit}</td></tr>" for s in rows)
    return f"<table>{head}{body}</table>"


def _p(value: Optional[float]) -> str:
    return "-" if value is None else escape(format_p_value(value))


def _confidence_table(rows: List[ReaderStats]) -> str:
    head = "<tr><th>rater</th>" + "".join(f"<th>confidence {c}</th>" for c in CONFIDENCE_LEVELS) + "</tr>"
    body = "".join(f"<tr><td>{escape(s.name)}</td>" + "".join(f"<td>{_pct(s.by_confidence[c])}</td>"
                                                            for c in CONFIDENCE_LEVELS) + "</tr>" for s in rows)
    return f"<table>{head}{body}</table>"


def render_html(report: TuringReport, most_missed: int = 10) -> str:
    """The whole report as one HTML string."""
    everyone = report.raters + [report.pooled]
    names = [s.name for s in everyone]
    agreement = "Inter-rater agreement needs at least two raters."
    if report.agreement:
        method, value, n = report.agreement
        agreement = f"{method}: {_num(value, '{:.3f}')} on the {n} cases every rater answered."
    missed = [c for c in report.cases if c.wrong][:most_missed]
    missed_rows = "".join(f"<tr><td>{escape(c.case_id)}</td><td>{c.truth}</td><td>{c.wrong} of {c.readings}</td>"
                          f"<td>{escape(c.source)}</td></tr>" for c in missed)
    problems = "".join(f'<li class="problem">{escape(p)}</li>' for p in report.problems)
    return "".join([
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Visual Turing test report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Visual Turing test report</h1><p>Session <code>{escape(str(report.session))}</code>: {report.n_cases} cases "
        f"({report.n_real} real, {report.n_fake} generated); {len(report.raters)} rater(s), {len(report.readings)} readings. "
        "'Positive' means generated (fake): sensitivity is the share of generated cases called fake, specificity the "
        "share of real cases called real.</p>",
        "<h2>Accuracy</h2>", _stats_table(everyone, report.answered),
        bar_chart(names, [("accuracy", [s.accuracy for s in everyone])], "Accuracy with exact 95% intervals (dashed: chance)"),
        bar_chart(names, [("sensitivity (fake called fake)", [s.sensitivity for s in everyone]),
                          ("specificity (real called real)", [s.specificity for s in everyone])],
                  "Sensitivity and specificity for 'fake'"),
        f'<p class="note">{escape(report.note)} The pooled test treats every reading as independent, which readings of '
        "the same case by different raters are not: read it together with the per-rater tests. When the session is "
        "not 50:50, a rater who cannot tell the kinds apart but favours one answer scores away from 50% (always "
        "'Generated' on 36 generated and 24 real cases is 60%), so the test against 50% alone can call such a rater "
        "significant; Fisher's exact test of truth x call and the balanced accuracy ask only whether the calls "
        "depend on the truth.</p>",
        "<h2>Accuracy by confidence</h2>", _confidence_table(everyone),
        bar_chart([str(c) for c in CONFIDENCE_LEVELS], [("pooled", [report.pooled.by_confidence[c] for c in CONFIDENCE_LEVELS])],
                  "Pooled accuracy by confidence (1 = guess, 5 = certain)"),
        "<h2>Agreement</h2>", f"<p>{escape(agreement)}</p>",
        "<h2>Reading time</h2>", histogram([r.elapsed_s for r in report.readings], "Time per case (s)"),
        "<h2>Cases most often called wrongly</h2>",
        (f"<table><tr><th>case</th><th>truth</th><th>wrong</th><th>source</th></tr>{missed_rows}</table>" if missed_rows
         else "<p>No case was called wrongly.</p>"),
        f"<h2>Journal problems</h2><ul>{problems}</ul>" if problems else "",
        "</body></html>\n"])
