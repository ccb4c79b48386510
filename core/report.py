"""Reports of kept runs: one self-contained HTML file per run or comparison (plotly.js inlined, so it opens with no
network), and the same content as JSON and CSV. Built from the run store's records, whose fields come from the
result objects' own frames and JSON (core.recording), never from page code; the History page draws the same
comparison table and figures.

Every report states the dataset and its fingerprint, the model, the date, the device, the library versions, the
protocol, every number with its interval where it has one, and each verdict in plain words.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import plotly.graph_objects as go

from .data import DataError
from .runstore import RunRecord, RunStore

FORMATS = ("html", "json", "csv")

AUC_EXPLANATION = ("AUC (area under the ROC curve) is the chance that the attacker scores a random user of one group "
                   "above a random user of another: 0.5 means no better than chance, 1.0 means it always tells them "
                   "apart.")
GAP_EXPLANATION = ("The gap |AUC − 0.5| is two-sided: an AUC far below 0.5 leaks too, because flipping the attacker's "
                   "guesses recovers the attribute; an attribute leaks when its gap is above the tolerance and "
                   "beyond what shuffled labels produce.")
NDCG_EXPLANATION = ("NDCG@20 measures recommendation quality: how high each user's held-out items rank in their top 20 "
                    "(0 to 1, higher is better); unlearning should keep it close to the original's.")
DELETION_EXPLANATION = ("A deletion run compares each method's updated model with Retrain (retrained from scratch "
                        "without the forgotten data, the gold standard). Forgotten-vs-retained AUC: the chance that a "
                        "forgotten pair scores below a retained one (higher = forgotten further); forget HR@20: the "
                        "share of forgotten pairs still in their user's top 20; MIA AUC: a membership attacker's AUC "
                        "for forgotten pairs against never-seen ones (0.5 = they look never seen). A method matches "
                        "Retrain when these are within the stated tolerance of Retrain's.")
VERDICT_WORDS = {"leaks": "leaks (an attacker recovers it beyond the tolerance)",
                 "inconclusive": "inconclusive (above the tolerance, but too few users to tell it from chance)",
                 "no leak": "no leak (within the tolerance of chance)", "": "no verdict (not an audit)",
                 # a deletion run's verdicts: each method's completeness against Retrain's (core.unlearning.deletion)
                 "matches Retrain": "matches Retrain (forgets as completely as retraining without the data, within "
                                    "the stated tolerance)",
                 "under-forgets": "under-forgets (the model still remembers the forgotten data more than a model "
                                  "retrained without it would: the deletion is incomplete)",
                 "over-forgets": "over-forgets (pushes the forgotten items further down than a model that never saw "
                                 "them would, which gives away what was deleted and harms those users)",
                 "reference": "the reference (retrained from scratch without the forgotten data)"}


# ---------------------------------------------------------------------------------------------- selecting runs


def find_runs(store: RunStore, run_ids: Sequence[str]) -> list[RunRecord]:
    """The records for these ids (a unique prefix is enough), in the order given; DataError naming an unknown id."""
    records = store.records()
    chosen = []
    for wanted in run_ids:
        matches = [r for r in records if r.run_id == wanted] or [r for r in records if r.run_id.startswith(wanted)]
        if len(matches) != 1:
            what = "matches no run" if not matches else f"matches {len(matches)} runs; give more of the id"
            raise DataError(f"run id {wanted!r} {what} in {store.location} (see the History page or "
                            "`python -m core report --list`)")
        chosen.append(matches[0])
    return chosen


# ---------------------------------------------------------------------------------------------- tables


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _with_interval(mean, low, high) -> str:
    if low is None or high is None:
        return _number(mean)
    return f"{_number(mean)} [{_number(low)}, {_number(high)}]"


def comparison_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run: when, what, on which data, its verdict, each attribute's AUC with its 95% interval, the
    worst gap, NDCG@20 and the runtime (what the History page and every report compare)."""
    rows = []
    for r in records:
        row = {"run": r.run_id, "date": r.created[:19].replace("T", " "), "kind": r.kind, "label": r.label,
               "status": r.status, "verdict": r.verdict or "–", "dataset": r.dataset, "fingerprint": r.fingerprint,
               "model": r.model, "attributes": ", ".join(r.attributes)}
        for attribute in r.attributes:
            if f"AUC {attribute}" in r.metrics:
                row[f"AUC {attribute} [95% interval]"] = _with_interval(
                    r.metrics.get(f"AUC {attribute}"), r.metrics.get(f"AUC {attribute} low"),
                    r.metrics.get(f"AUC {attribute} high"))
        row["worst |AUC − 0.5|"] = r.metrics.get("worst |AUC − 0.5|")
        row["NDCG@20"] = r.metrics.get("NDCG@20")
        row["runtime s"] = None if r.seconds is None else round(r.seconds, 2)
        row["device"] = r.device
        rows.append(row)
    return pd.DataFrame(rows)


def numbers_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Every number of every run in long form: one row per (run, metric) with its interval where it has one."""
    rows = []
    for r in records:
        base = {"run": r.run_id, "date": r.created, "kind": r.kind, "label": r.label, "status": r.status,
                "dataset": r.dataset, "fingerprint": r.fingerprint, "model": r.model, "device": r.device,
                "verdict": r.verdict}
        for name, value in r.metrics.items():
            if name.endswith((" low", " high")) and name.rsplit(" ", 1)[0] in r.metrics:
                continue
            rows.append({**base, "metric": name, "value": value, "low": r.metrics.get(f"{name} low"),
                         "high": r.metrics.get(f"{name} high")})
        if r.seconds is not None:
            rows.append({**base, "metric": "runtime s", "value": r.seconds, "low": None, "high": None})
        for attribute, v in r.verdicts.items():
            rows.append({**base, "metric": f"verdict {attribute}", "value": v.get("gap"), "low": None, "high": None,
                         "verdict": v.get("status")})
    return pd.DataFrame(rows, columns=["run", "date", "kind", "label", "status", "dataset", "fingerprint", "model",
                                       "device", "verdict", "metric", "value", "low", "high"])


# ---------------------------------------------------------------------------------------------- figures


def _short(record: RunRecord) -> str:
    return f"{record.label} ({record.run_id[:6]})"


def auc_ndcg_figure(records: Iterable[RunRecord]) -> go.Figure | None:
    """Each run's strongest attacker AUC per attribute (with its interval) against its NDCG@20: the privacy-utility
    picture across runs; None when no run has both."""
    figure = go.Figure()
    for r in records:
        ndcg = r.metrics.get("NDCG@20")
        if ndcg is None:
            continue
        for attribute in r.attributes:
            auc = r.metrics.get(f"AUC {attribute}")
            if auc is None:
                continue
            low, high = r.metrics.get(f"AUC {attribute} low"), r.metrics.get(f"AUC {attribute} high")
            error = None if low is None or high is None else {"type": "data", "array": [high - auc],
                                                               "arrayminus": [auc - low]}
            figure.add_scatter(x=[ndcg], y=[auc], error_y=error, mode="markers", marker={"size": 11},
                               name=f"{_short(r)} · {attribute}")
    if not figure.data:
        return None
    figure.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance (AUC 0.5)")
    figure.update_layout(title="Attacker AUC against recommendation quality (NDCG@20)", height=440,
                         xaxis_title="NDCG@20 on the test split (0–1, higher is better)",
                         yaxis_title="strongest attacker's AUC (0.5 = chance)", margin={"t": 50, "b": 10})
    return figure


def runtime_figure(records: Iterable[RunRecord]) -> go.Figure | None:
    """Each run's runtime in seconds; None when no run has one."""
    timed = [r for r in records if r.seconds is not None]
    if not timed:
        return None
    figure = go.Figure(go.Bar(x=[_short(r) for r in timed], y=[r.seconds for r in timed],
                              text=[f"{r.seconds:.1f} s" for r in timed], marker_color="#4c78a8"))
    figure.update_layout(title="Runtime per run", height=360, xaxis_title="run",
                         yaxis_title="runtime (seconds)", margin={"t": 50, "b": 10})
    return figure


# ---------------------------------------------------------------------------------------------- JSON and CSV


def to_json(records: Sequence[RunRecord]) -> str:
    """The report as JSON: when it was made, the explanations, each run's full record and the comparison."""
    return json.dumps({"generated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                       "explanations": {"AUC": AUC_EXPLANATION, "gap": GAP_EXPLANATION, "NDCG": NDCG_EXPLANATION},
                       "runs": [r.to_dict() for r in records],
                       "comparison": json.loads(comparison_frame(records).to_json(orient="records"))},
                      indent=1, default=str)


def to_csv(records: Sequence[RunRecord]) -> str:
    """The report as CSV: every number of every run, one row each, with its interval and the run's provenance."""
    return numbers_frame(records).to_csv(index=False)


# ---------------------------------------------------------------------------------------------- HTML

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem}th,td{border:1px solid #ccc;
padding:.25rem .5rem;text-align:left}th{background:#f3f3f3}.leaks{color:#b00020;font-weight:600}
.inconclusive{color:#a15c00;font-weight:600}.nok{color:#1b5e20;font-weight:600}dl{display:grid;
grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}.note{color:#555;font-size:.9rem}
section{border-top:2px solid #ddd;margin-top:2rem}
"""


def _table_html(records: list[dict]) -> str:
    frame = pd.DataFrame(records)
    for column in [c for c in frame.columns if f"{c} low" in frame.columns and f"{c} high" in frame.columns]:
        frame[column] = [_with_interval(m, lo, hi) for m, lo, hi in
                         zip(frame[column], frame[f"{column} low"], frame[f"{column} high"])]
        frame = frame.drop(columns=[f"{column} low", f"{column} high"])
    return frame.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.4g}", border=0)


def _verdict_class(status: str) -> str:
    return {"leaks": "leaks", "inconclusive": "inconclusive", "no leak": "nok", "under-forgets": "leaks",
            "over-forgets": "leaks", "matches Retrain": "nok"}.get(status, "")


def _run_section(r: RunRecord) -> str:
    e = html.escape
    versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
    facts = [("Run", r.run_id), ("Kind", r.kind), ("Date", r.created.replace("T", " ")),
             ("Status", r.status + (f": {r.message}" if r.message else "")),
             ("Dataset", f"{r.dataset} (fingerprint {r.fingerprint or 'not recorded'})"), ("Model", r.model or "–"),
             ("Attributes", ", ".join(r.attributes) or "–"), ("Device", r.device or "–"),
             ("Runtime", "–" if r.seconds is None else f"{r.seconds:.2f} s"), ("Recorded from", r.source or "–"),
             ("Protocol", r.results.get("protocol", "–")),
             ("Parameters", ", ".join(f"{k} = {v}" for k, v in r.params.items()) or "–"),
             ("Library versions", versions or "–")]
    parts = [f"<section><h2>{e(r.label)} <small>({e(r.kind)}, {e(r.status)})</small></h2><dl>"]
    parts += [f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in facts]
    parts.append("</dl>")
    if r.verdicts:
        parts.append("<h3>Verdicts</h3><ul>")
        for attribute, v in r.verdicts.items():
            status = v.get("status", "")
            words = VERDICT_WORDS.get(status, status)
            if "auc" not in v:  # a verdict of its own kind (a deletion method's): the words and why
                parts.append(f"<li><span class='{_verdict_class(status)}'>{e(attribute)}: {e(words)}</span>. "
                             f"<span class='note'>{e(str(v.get('explanation', '')))}</span></li>")
                continue
            interval = _with_interval(v.get("auc"), v.get("auc_low"), v.get("auc_high"))
            parts.append(f"<li><span class='{_verdict_class(status)}'>{e(attribute)}: {e(words)}</span>. "
                         f"Strongest attacker {e(str(v.get('attacker', '')))} on {e(str(v.get('representation', '')))}"
                         f": AUC {interval}, gap |AUC − 0.5| = {_number(v.get('gap'))} against the tolerance "
                         f"{_number(v.get('tolerance'))}, corrected p-value {_number(v.get('p_value'), 4)}. "
                         f"<span class='note'>{e(str(v.get('explanation', '')))}</span></li>")
        parts.append("</ul>")
    metrics = {k: v for k, v in r.metrics.items() if not k.endswith((" low", " high"))}
    if metrics and not (r.kind == "deletion" and r.results.get("tables")):  # a deletion's are all in its table
        rows = [{"metric": k, "value": _with_interval(v, r.metrics.get(f"{k} low"), r.metrics.get(f"{k} high"))}
                for k, v in metrics.items()]
        parts.append("<h3>Numbers</h3>" + pd.DataFrame(rows).to_html(index=False, border=0))
    for name, table in r.results.get("tables", {}).items():
        if table:
            parts.append(f"<h3>{e(name.capitalize())}</h3>" + _table_html(table))
    notes = r.results.get("notes") or []
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(str(n))}</li>" for n in notes) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def to_html(records: Sequence[RunRecord], title: str | None = None) -> str:
    """One self-contained HTML file: the comparison table, the figures (plotly.js inlined once: no network needed
    to open it), then every run with its provenance, verdicts in words, numbers with intervals and tables."""
    if not records:
        raise DataError("a report needs at least one run")
    title = title or (f"Run {records[0].label}" if len(records) == 1 else f"Comparison of {len(records)} runs")
    generated = _dt.datetime.now().astimezone().isoformat(timespec="seconds").replace("T", " ")
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{e(title)}</h1><p class='note'>Privacy audit for recommender systems: report generated {generated}."
             "</p>",
             "<h2>How to read it</h2><ul>" + "".join(f"<li>{e(t)}</li>" for t in (AUC_EXPLANATION, GAP_EXPLANATION,
                                                                                    NDCG_EXPLANATION)) +
             (f"<li>{e(DELETION_EXPLANATION)}</li>" if any(r.kind == "deletion" for r in records) else "") + "</ul>",
             "<h2>Runs side by side</h2>" + comparison_frame(records).to_html(index=False, na_rep="–", border=0,
                                                                            float_format=lambda v: f"{v:.4g}")]
    inlined = False
    for figure in (auc_ndcg_figure(records), runtime_figure(records)):
        if figure is not None:
            parts.append(figure.to_html(full_html=False, include_plotlyjs=not inlined, include_mathjax=False,
                                        config={"displaylogo": False}))
            inlined = True
    parts += [_run_section(r) for r in records]
    parts.append("</body></html>")
    return "\n".join(parts)


def render(records: Sequence[RunRecord], fmt: str) -> str:
    """The report in `fmt` ('html', 'json' or 'csv')."""
    if fmt not in FORMATS:
        raise DataError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return {"html": to_html, "json": to_json, "csv": to_csv}[fmt](records)


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The format asked for, else the one the file's suffix names (html when it names none)."""
    if fmt:
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"htm": "html"}.get(suffix, suffix) if suffix in (*FORMATS, "htm") else "html"


def write_report(store: RunStore, run_ids: Sequence[str], out: str | Path, fmt: str | None = None) -> Path:
    """Write the report of these runs to `out` (format from `fmt` or the suffix); returns the path."""
    records = find_runs(store, run_ids)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(records, format_for(out, fmt)), encoding="utf-8")
    return out

