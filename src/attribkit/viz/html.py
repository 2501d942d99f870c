"""A self-contained HTML page for one Attribution: highlighted source text or a ranked table.

A provenance result (which source produced a text, or "unknown") also shows its decision: the
prediction with the rejection rule applied, the explained source and the source distribution as
bars, highest first, with an "unknown" row. A result whose ``extras`` hold a finite
``statistic`` (a zero-shot machine-text detector's) shows it in the header. A tabular result
shows signed bars per feature (name, value, score) with each feature's responsiveness marked
when the result carries it (:func:`feature_recourse` says how); a time-series result shows each
channel of its series as an inline SVG line with its attribution map shaded under it
(:func:`series_view`).

No JavaScript, no network: inline CSS only, and a Content-Security-Policy that forbids scripts.
Every piece of text that comes from the input or the method (unit labels, the source text, the
target, the method name, parameters, the title) is escaped with ``html.escape(..., quote=True)``,
so hostile contexts such as ``<script>`` or ``<img onerror=...>`` are shown, never run.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.jsonio import to_json

_POS = (230, 85, 13)  # orange-red: the unit pushes the target up
_NEG = (33, 102, 172)  # blue: the unit pushes the target down

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:60em;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.4em;margin-bottom:.3em}h2{font-size:1.1em;margin-top:1.6em}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;margin:0}
dl.meta dt{font-weight:600;color:#555}dl.meta dd{margin:0;word-break:break-word}
.source{white-space:pre-wrap;border:1px solid #ddd;border-radius:6px;padding:1em;
background:#fafafa;font-size:.95em}
.u{border-radius:3px;padding:0 1px}.u.nan{outline:1px dashed #999}
table.rank{border-collapse:collapse;width:100%;font-size:.9em}
table.rank th,table.rank td{border-bottom:1px solid #eee;padding:.25em .5em;text-align:left;
vertical-align:top}
table.rank td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.bar{width:12em}.track{position:relative;height:.9em;background:#f3f3f3;width:12em}
.fill{position:absolute;top:0;height:100%}
td.label{white-space:pre-wrap;word-break:break-word}
.legend span{padding:0 .4em;border-radius:3px;margin-right:.5em}
.muted{color:#777}
table.sources{border-collapse:collapse;font-size:.92em}
table.sources td{padding:.2em .6em .2em 0;vertical-align:middle}
table.sources td.name{font-weight:600;white-space:pre-wrap;word-break:break-word}
table.sources .track{width:16em}table.sources tr.predicted td.name{color:#8a3a06}
.badge{font-size:.78em;font-weight:600;padding:0 .5em;border-radius:4px;background:#fde7d6;
color:#8a3a06;margin-left:.4em}.badge.fired{background:#f9dede;color:#8a1f1f}
.badge.kept{background:#e6eef7;color:#164a80}
table.tab td.name{font-weight:600;white-space:pre-wrap;word-break:break-word}
table.tab td{padding:.2em .6em .2em 0;vertical-align:middle;border-bottom:1px solid #eee}
table.tab{border-collapse:collapse;font-size:.92em}
.resp{font-size:.82em;font-weight:600;padding:0 .5em;border-radius:4px;white-space:nowrap}
.resp.yes{background:#dcf3e2;color:#1a5c2b}.resp.no{background:#f9dede;color:#8a1f1f}
.resp.immutable{background:#eceff2;color:#555}
figure.series{margin:.6em 0}figure.series figcaption{font-weight:600;font-size:.9em;
white-space:pre-wrap;word-break:break-word}
figure.series svg{width:100%;height:8em;border:1px solid #ddd;border-radius:4px;background:#fff}
"""

#: the prediction of a provenance result when the rejection rule fires
UNKNOWN = "unknown"


def _e(x: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(str(x), quote=True)


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.4g}"


def _describe(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, dict) and "description" in x:
        return str(x["description"])
    try:
        return json.dumps(to_json(x), ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(x)


def _colour(score: float, scale: float) -> str:
    if not math.isfinite(score) or scale <= 0:
        return "transparent"
    alpha = 0.85 * min(1.0, abs(score) / scale)
    r, g, b = _POS if score >= 0 else _NEG
    return f"rgba({r},{g},{b},{alpha:.3f})"


def _ranks(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranking (best first, NaN last) and each unit's 1-based rank."""
    key = np.where(np.isnan(v), np.inf, -v)
    order = np.argsort(key, kind="stable")
    rank = np.empty(len(v), dtype=int)
    rank[order] = np.arange(1, len(v) + 1)
    return order, rank


def _tooltip(i: int, score: float, rank: int, n: int) -> str:
    if not math.isfinite(score):
        return f"unit {i} · not scored"
    return f"unit {i} · score {_fmt(score)} · rank {rank} of {n}"


def _text_view(
    att: Attribution, v: np.ndarray, rank: np.ndarray, scale: float, heading: str = "Source"
) -> str | None:
    text = att.input.get("text")
    if att.input.get("kind") != "text" or not isinstance(text, str):
        return None
    spans = [(u.start, u.end, u.index) for u in att.units]
    if any(s is None or e is None for s, e, _ in spans):
        return None
    spans.sort()
    parts, pos, n = [], 0, len(att)
    for s, e, i in spans:
        if s < pos or e > len(text):
            return None  # offsets do not fit the stored text: fall back to the table
        parts.append(_e(text[pos:s]))
        score = float(v[i])
        cls = "u" if math.isfinite(score) else "u nan"
        parts.append(
            f'<span class="{cls}" style="background:{_colour(score, scale)}" '
            f'title="{_e(_tooltip(i, score, int(rank[i]), n))}">{_e(text[s:e])}</span>'
        )
        pos = e
    parts.append(_e(text[pos:]))
    return f'<h2>{_e(heading)}</h2>\n<div class="source">' + "".join(parts) + "</div>"


def _table(att: Attribution, v: np.ndarray, order: np.ndarray, scale: float) -> str:
    rows = []
    for r, i in enumerate(order, start=1):
        score = float(v[i])
        if math.isfinite(score) and scale > 0:
            w = 50.0 * min(1.0, abs(score) / scale)
            left = 50.0 if score >= 0 else 50.0 - w
            bar = (
                f'<div class="track"><div class="fill" style="left:{left:.1f}%;width:{w:.1f}%;'
                f'background:{_colour(score, scale)}"></div></div>'
            )
        else:
            bar = '<div class="track"></div>'
        label = att.units[i].label
        label = label if len(label) <= 300 else label[:297] + "..."
        rows.append(
            f'<tr title="{_e(_tooltip(int(i), score, r, len(att)))}"><td class="num">{r}</td>'
            f'<td class="num">{int(i)}</td><td class="num">{_e(_fmt(score))}</td>'
            f'<td class="bar">{bar}</td><td class="label">{_e(label)}</td></tr>'
        )
    return (
        '<h2>Ranked units</h2>\n<table class="rank"><thead><tr><th>rank</th><th>unit</th>'
        "<th>score</th><th>bar</th><th>label</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _agents_meta(att: Attribution) -> list[tuple[str, str]]:
    """An agents result's decision (agent, step, reason) and agents' totals (highest first) as
    header rows; agents, steps and scores only (an agents result holds no turn text)."""
    rows: list[tuple[str, str]] = []
    decision = att.extras.get("decision")
    if isinstance(decision, dict):
        text = f"agent {decision.get('agent')}, step {decision.get('step')}"
        if decision.get("reason"):
            text += f" ({decision['reason']})"
        rows.append(("decision", text))
    totals = att.extras.get("agent_scores")
    if isinstance(totals, dict) and totals:
        vals = {a: float(t) if isinstance(t, int | float) else math.nan for a, t in totals.items()}
        ordered = sorted(vals, key=lambda a: -vals[a] if math.isfinite(vals[a]) else math.inf)
        rows.append(("agents", ", ".join(f"{a} {_fmt(vals[a])}" for a in ordered)))
    return rows


def _probability(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float | np.number):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _pair(c: float, t: float) -> tuple[str, str]:
    """``c`` and ``t`` with 2 decimals, or more where 2 would print them equal."""
    for d in range(2, 7):
        a, b = f"{c:.{d}f}", f"{t:.{d}f}"
        if a != b or c == t:
            return a, b
    return f"{c!r}", f"{t!r}"


def source_decision(target: Any) -> dict[str, Any] | None:
    """A provenance result's decision, ready to draw, from its ``target``
    (:class:`attribkit.tasks.provenance.ProvenanceTask`): ``sources`` (``[name, probability]``
    pairs, highest first, None for a missing or non-finite probability, last), ``prediction``
    (a source or "unknown"), ``source`` (the explained source), ``confidence`` (the max
    probability, the rejection score), ``threshold`` (None: closed-set), ``unknown`` (whether
    the rejection rule fired) and ``rule`` (it in words, e.g. ``"max p 0.41 < threshold 0.60 →
    unknown"``). None when ``target`` is not a dict with a ``scores`` dict. No model calls."""
    if not isinstance(target, dict) or not isinstance(target.get("scores"), dict):
        return None
    raw = [(str(k), _probability(v)) for k, v in target["scores"].items()]
    order = {name: i for i, (name, _) in enumerate(raw)}
    sources = sorted(raw, key=lambda kv: (kv[1] is None, -(kv[1] or 0.0), order[kv[0]]))
    finite = [p for _, p in sources if p is not None]
    confidence = _probability(target.get("confidence"))
    if confidence is None and finite:
        confidence = max(finite)
    threshold = _probability(target.get("threshold"))
    prediction = target.get("prediction")
    prediction = None if prediction is None else str(prediction)
    unknown = target.get("unknown")
    unknown = bool(unknown) if isinstance(unknown, bool) else prediction == UNKNOWN
    # the rejection score: max softmax probability, or max logit (e.g. −Delta) when recorded so
    name = "max logit" if target.get("confidence_score") == "max logit" else "max p"
    if confidence is None:
        rule = "no probability recorded"
    elif threshold is None:
        rule = f"{name} {confidence:.2f}; no threshold: a closed-set decision (never unknown)"
    else:
        c, t = _pair(confidence, threshold)
        rule = (
            f"{name} {c} < threshold {t} → unknown"
            if unknown
            else f"{name} {c} ≥ threshold {t} → accepted"
        )
    source = target.get("source")
    return {
        "sources": [[name, p] for name, p in sources],
        "prediction": prediction,
        "source": None if source is None else str(source),
        "confidence": confidence,
        "threshold": threshold,
        "unknown": unknown,
        "rule": rule,
    }


def detector_statistic(att: Attribution) -> float | None:
    """A result's finite ``extras["statistic"]`` (a zero-shot machine-text detector's statistic,
    higher = more likely machine-generated), else None."""
    return _probability(att.extras.get("statistic"))


def _provenance_meta(decision: dict[str, Any]) -> list[tuple[str, str]]:
    """A provenance result's prediction (with the rule applied), explained source and source
    distribution (highest first, then the unknown decision) as header rows."""
    prediction = decision["prediction"] if decision["prediction"] is not None else "none recorded"
    dist = ", ".join(f"{n} {'n/a' if p is None else f'{p:.3f}'}" for n, p in decision["sources"])
    return [
        ("prediction", f"{prediction} ({decision['rule']})"),
        ("explained source", decision["source"] or ""),
        ("sources", f"{dist}; unknown: {'yes' if decision['unknown'] else 'no'}"),
    ]


def _sources_table(decision: dict[str, Any]) -> str:
    """The source distribution as bars (probability 0..1, highest first, the prediction marked)
    and an "unknown" row with the rejection rule and whether it fired."""
    rows = []
    for name, p in decision["sources"]:
        predicted = not decision["unknown"] and name == decision["prediction"]
        explained = name == decision["source"]
        badges = ('<span class="badge">prediction</span>' if predicted else "") + (
            '<span class="badge kept">explained</span>' if explained else ""
        )
        width = 0.0 if p is None else 100.0 * min(1.0, max(0.0, p))
        rows.append(
            f'<tr class="{"predicted" if predicted else "other"}">'
            f'<td class="name">{_e(name)}{badges}</td>'
            f'<td><div class="track"><div class="fill" style="left:0;width:{width:.1f}%;'
            f'background:rgb{_POS if predicted else (140, 148, 158)}"></div></div></td>'
            f'<td class="num">{"n/a" if p is None else f"{p:.3f}"}</td></tr>'
        )
    fired = decision["unknown"]
    badge = (
        '<span class="badge fired">fired: the prediction is unknown</span>'
        if fired
        else '<span class="badge kept">not fired</span>'
    )
    rows.append(
        f'<tr class="unknown"><td class="name">{_e(UNKNOWN)}{badge}</td>'
        f'<td colspan="2" class="muted">{_e(decision["rule"])}</td></tr>'
    )
    return (
        '<h2>Source distribution</h2>\n<table class="sources"><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


# --- tabular and time-series results ------------------------------------------------------------
def _float_or_none(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float | np.number):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def feature_recourse(
    names: list[str],
    values: list[Any],
    scores: Any,
    method: str,
    extras: dict[str, Any] | None,
) -> dict[str, Any]:
    """A tabular result's features, ready to draw as signed bars with responsiveness marked.

    The convention (one for the viewer, the HTML report and notebooks):

    - a **responsiveness result** (method ``"responsiveness"``, :func:`attribkit.methods.
      tabular.responsiveness.responsiveness`): its scores *are* the responsiveness scores
      (share of the feature's feasible actions that reach the target); ``extras`` give
      ``actionable`` (one bool per feature), ``n_actions`` (one count per feature), ``denied``
      and ``fixed``;
    - any other tabular **attribution** (KernelSHAP, LIME... of a TabularTask) carries
      responsiveness when ``extras["responsiveness"]`` maps feature name → responsiveness score
      (as ``attribkit recourse`` attaches it, with ``extras["fixed"]``); ``extras["actionable"]``
      (one bool per feature) is optional.

    A feature is *responsive* when its responsiveness is > 0. Returns ``kind``
    (``"responsiveness"``, ``"attribution"`` with responsiveness, or None without it),
    ``fixed`` and ``denied`` (bools, None when not recorded) and ``features``: one dict per
    feature in order (``index``, ``name``, ``value``, ``score``, ``responsiveness``,
    ``responsive``, ``actionable``, ``n_actions``; None where unknown). Non-finite numbers
    become None. No model calls."""
    extras = extras if isinstance(extras, dict) else {}
    n = len(names)
    v = [_float_or_none(x) for x in np.asarray(scores, dtype=float).reshape(-1)[:n]]
    v += [None] * (n - len(v))

    def per_feature(key: str, kind: type) -> list[Any]:
        raw = extras.get(key)
        if not isinstance(raw, list | tuple | np.ndarray) or len(raw) != n:
            return [None] * n
        if kind is bool:
            return [x if isinstance(x, bool | np.bool_) else None for x in raw]
        return [int(x) if _float_or_none(x) is not None else None for x in raw]

    actionable = [None if a is None else bool(a) for a in per_feature("actionable", bool)]
    n_actions = per_feature("n_actions", int) if method == "responsiveness" else [None] * n
    kind: str | None = None
    resp: list[float | None] = [None] * n
    if method == "responsiveness":
        kind, resp = "responsiveness", list(v)
    elif isinstance(extras.get("responsiveness"), dict):
        table = extras["responsiveness"]
        kind = "attribution"
        resp = [_float_or_none(table.get(name)) for name in names]
    features = [
        {
            "index": i,
            "name": str(names[i]),
            "value": _float_or_none(values[i]) if i < len(values) else None,
            "score": v[i],
            "responsiveness": resp[i],
            "responsive": None if resp[i] is None else resp[i] > 0,
            "actionable": actionable[i],
            "n_actions": n_actions[i],
        }
        for i in range(n)
    ]

    def flag(key: str) -> bool | None:
        x = extras.get(key)
        return bool(x) if isinstance(x, bool | np.bool_) else None

    return {"kind": kind, "fixed": flag("fixed"), "denied": flag("denied"), "features": features}


def responsiveness_mark(feature: dict[str, Any], kind: str | None) -> tuple[str, str] | None:
    """The mark of one feature of :func:`feature_recourse`: ``(css class, text)`` —
    ``("immutable", "immutable")`` for a feature the person cannot act on, ``("yes",
    "responsive 0.40")`` or ``("no", "not responsive")``; None when the result has no
    responsiveness."""
    if kind is None:
        return None
    if feature["actionable"] is False and not feature["responsive"]:
        return "immutable", "immutable"
    r = feature["responsiveness"]
    if r is None:
        return None
    if r > 0:
        return "yes", f"responsive {r:.2f}"
    return "no", "not responsive"


def series_view(inp: Any, extras: Any, n_max: int = 20_000) -> dict[str, Any] | None:
    """A time-series result's series and map, ready to draw: ``channels`` (one dict per
    channel: ``name``, ``values`` (T numbers, None where not finite), ``map`` (T scores, None
    where not finite)), ``steps`` (T), ``scale`` (max |map|, 0 when none is finite) and
    ``value_range`` ([min, max] of the finite values). Reads ``input["series"]`` ((T, C) nested
    lists, as :class:`attribkit.tasks.timeseries.TimeSeriesTask` stores it), ``input
    ["channels"]`` and ``extras["map"]`` ((T, C)). None when either is missing, the shapes differ
    or the series has more than ``n_max`` elements. No model calls."""
    if not isinstance(inp, dict) or not isinstance(extras, dict):
        return None
    raw_x, raw_m = inp.get("series"), extras.get("map")
    if raw_x is None or raw_m is None:
        return None
    try:
        x = np.array(
            [[np.nan if e is None else e for e in row] for row in np.asarray(raw_x, object)],
            dtype=float,
        )
        m = np.array(
            [[np.nan if e is None else e for e in row] for row in np.asarray(raw_m, object)],
            dtype=float,
        )
    except (TypeError, ValueError):
        return None
    if x.ndim != 2 or x.shape != m.shape or x.size == 0 or x.size > n_max:
        return None
    t, c = x.shape
    names = inp.get("channels")
    if not isinstance(names, list) or len(names) != c:
        names = [f"c{j}" for j in range(c)]
    finite_m, finite_x = np.abs(m[np.isfinite(m)]), x[np.isfinite(x)]

    def col(a: np.ndarray, j: int) -> list[float | None]:
        return [float(e) if math.isfinite(e) else None for e in a[:, j]]

    return {
        "steps": t,
        "scale": float(finite_m.max()) if finite_m.size else 0.0,
        "value_range": (
            [float(finite_x.min()), float(finite_x.max())] if finite_x.size else [0.0, 0.0]
        ),
        "channels": [
            {"name": str(names[j]), "values": col(x, j), "map": col(m, j)} for j in range(c)
        ],
    }


_SVG_W, _SVG_H, _SVG_PAD = 600.0, 120.0, 8.0


def series_svg(channel: dict[str, Any], steps: int, scale: float, lo: float, hi: float) -> str:
    """One channel of :func:`series_view` as an inline SVG string: a rectangle per step shaded
    by its map score (orange raises the class, blue lowers it) under the series' line. The
    channel name is escaped (in a ``<title>``). No script, no external reference."""
    w, h, pad = _SVG_W, _SVG_H, _SVG_PAD
    step_w = w / max(steps, 1)
    span = (hi - lo) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w:.0f} {h:.0f}" '
        f'preserveAspectRatio="none" role="img"><title>{_e(channel["name"])}</title>'
    ]
    for i, s in enumerate(channel["map"]):
        if s is None or scale <= 0 or s == 0:
            continue
        r, g, b = _POS if s >= 0 else _NEG
        alpha = 0.85 * min(1.0, abs(s) / scale)
        parts.append(
            f'<rect x="{i * step_w:.2f}" y="0" width="{step_w:.2f}" height="{h:.0f}" '
            f'fill="rgb({r},{g},{b})" fill-opacity="{alpha:.3f}" shape-rendering="crispEdges">'
            "<title>"
            f"{_e(f'step {i} · score {_fmt(s)}')}</title></rect>"
        )
    path, pen_up = [], True
    for i, val in enumerate(channel["values"]):
        if val is None:
            pen_up = True
            continue
        px = (i + 0.5) * step_w
        py = h - pad - (val - lo) / span * (h - 2 * pad)
        path.append(f"{'M' if pen_up else 'L'}{px:.2f},{py:.2f}")
        pen_up = False
    if path:
        parts.append(
            f'<path d="{" ".join(path)}" fill="none" stroke="#222" stroke-width="1.5" '
            'vector-effect="non-scaling-stroke"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tabular_section(att: Attribution) -> str:
    """Signed bars per feature (name, value, score) with the responsiveness marks of
    :func:`feature_recourse`, and a line saying whether the row is fixed."""
    info = feature_recourse(
        [u.label for u in att.units],
        [u.meta.get("value") for u in att.units],
        att.vector,
        att.method,
        att.extras,
    )
    finite = [abs(f["score"]) for f in info["features"] if f["score"] is not None]
    scale = max(finite) if finite else 0.0
    rows = []
    for f in info["features"]:
        score = f["score"]
        bar = '<div class="track"></div>'
        if score is not None and scale > 0:
            w = 50.0 * min(1.0, abs(score) / scale)
            left = 50.0 if score >= 0 else 50.0 - w
            bar = (
                f'<div class="track"><div class="fill" style="left:{left:.1f}%;width:{w:.1f}%;'
                f'background:{_colour(score, scale)}"></div></div>'
            )
        mark = responsiveness_mark(f, info["kind"])
        mark_html = "" if mark is None else f'<span class="resp {mark[0]}">{_e(mark[1])}</span>'
        value = "" if f["value"] is None else f"= {f['value']:.4g}"
        shown = _fmt(math.nan if score is None else score)
        rows.append(
            f'<tr><td class="name">{_e(f["name"])}</td><td class="muted">{_e(value)}</td>'
            f'<td class="bar">{bar}</td><td class="num">{_e(shown)}</td><td>{mark_html}</td></tr>'
        )
    what = {
        "responsiveness": "bar: share of the feature's feasible actions that reach the target",
        "attribution": "bar: the attribution; mark: whether some feasible action on the feature "
        "flips the decision",
        None: "bar: the attribution",
    }[info["kind"]]
    note = ""
    if info["fixed"]:
        note = (
            '<p><span class="badge fired">fixed</span> no single-feature action flips the '
            "decision</p>"
        )
    elif info["fixed"] is False and info["denied"] is not False:
        note = '<p><span class="badge kept">not fixed</span> some action flips the decision</p>'
    return (
        f'<h2>Features</h2>\n{note}<p class="muted">{_e(what)}</p>\n<table class="tab"><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _series_section(att: Attribution) -> str | None:
    """Each channel of a time-series result as an inline SVG with its map shaded under it."""
    view = series_view(att.input, att.extras)
    if view is None:
        return None
    lo, hi = view["value_range"]
    figures = "".join(
        f'<figure class="series"><figcaption>{_e(ch["name"])}</figcaption>'
        f"{series_svg(ch, view['steps'], view['scale'], lo, hi)}</figure>"
        for ch in view["channels"]
    )
    return (
        "<h2>Series</h2>\n"
        '<p class="muted">each channel\'s line over its attribution map: orange raises the class '
        "score, blue lowers it</p>\n" + figures
    )


def attribution_html(attribution: Attribution, title: str | None = None) -> str:
    """Return a complete, self-contained HTML page showing ``attribution``.

    Text units with character offsets are drawn over the source text, each unit shaded by its
    score (orange-red positive, blue negative, intensity ∝ |score| / max |score|) with a tooltip
    giving score and rank; every page also has a header (method, target, parameters, cost) and
    the ranked table of all units with bars. A provenance result adds its decision to the header
    (prediction and rejection rule, explained source, source distribution) and the distribution
    as bars with an "unknown" row; a detector's ``extras["statistic"]`` is a header row; a
    tabular result adds signed feature bars with responsiveness marks, a time-series result its
    channels as SVG lines over the shaded map. All shown text is HTML-escaped. No model calls.
    """
    att = attribution
    v = att.vector
    finite = np.abs(v[np.isfinite(v)])
    scale = float(finite.max()) if finite.size else 0.0
    order, rank = _ranks(v)
    page_title = title if title is not None else f"attribkit · {att.method}"
    target = att.target if isinstance(att.target, dict) else {}
    meta = [
        ("method", att.method),
        *[(key, str(target[key])) for key in ("model", "query", "response") if key in target],
        ("target", _describe(att.target)),
        ("units", f"{len(att)} {att.input.get('kind', '')} units"),
        ("removal", att.input.get("removal", "")),
        ("params", _describe(att.params) if att.params else "none"),
        ("cost", str(att.cost)),
        ("max |score|", _fmt(scale) if scale else "n/a"),
    ]
    if att.task == "agents":
        meta += _agents_meta(att)
    decision = source_decision(att.target) if att.task == "provenance" else None
    if decision is not None:
        meta[1:1] = _provenance_meta(decision)  # the decision first, after the method
    statistic = detector_statistic(att)
    if statistic is not None:
        meta.append(("detector statistic", f"{statistic:.4g}, higher = more machine-like"))
    n_nan = int(np.isnan(v).sum())
    if n_nan:
        meta.append(("unscored", f"{n_nan} unit(s), shown last and unshaded"))
    meta_html = "".join(f"<dt>{_e(k)}</dt><dd>{_e(val)}</dd>" for k, val in meta if val != "")
    legend = (
        f'<p class="legend muted"><span style="background:{_colour(1.0, 1.0)}">positive</span>'
        f'<span style="background:{_colour(-1.0, 1.0)}">negative</span>'
        "intensity ∝ |score| / max |score|; hover a unit for its score and rank.</p>"
    )
    body = [f"<h1>{_e(page_title)}</h1>", f'<dl class="meta">{meta_html}</dl>']
    if decision is not None:
        body.append(_sources_table(decision))
    body.append(legend)
    heading = "Source"
    if decision is not None:
        heading = f"Text: each unit shaded by its effect on p({decision['source']})"
    text_view = _text_view(att, v, rank, scale, heading)
    if text_view is not None:
        body.append(text_view)
    if att.task == "tabular":
        body.append(_tabular_section(att))
    elif att.task == "timeseries":
        body.append(_series_section(att) or "")
    body.append(_table(att, v, order, scale))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(page_title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def save_html(
    attribution: Attribution, path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Write :func:`attribution_html` to ``path`` (UTF-8, atomically). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(attribution_html(attribution, title=title))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
