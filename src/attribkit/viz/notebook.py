"""Attributions in notebooks: the HTML fragment behind ``Attribution._repr_html_``.

One view per task kind, like the viewer's: a context result as its context with each unit
shaded by its score (query and response above it); a generation result as a token heat map
(one row per generated token, one column per input token, blank where a row cannot see the
column); an image result as its map over the image beside the image; a reasoning result as
its problem, its chain of thought shaded by sentence, its answer and, when the method gives one
(``extras["matrix"]``), the sentence×sentence matrix as a heat map grid; an agents result
(failure attribution over a multi-agent log) as its decision (agent, step, reason; the gold
mistake beside it when the target records one), its turns (their labels: an agents result holds
no turn text) shaded by score with the decided turn marked, and its agents' totals, highest
first; a provenance result (which source produced a text, or "unknown") as its decision
(the prediction with the rejection rule applied and the explained source), a bar per source
(highest first, the prediction marked) with an "unknown" row saying whether the rule fired, and
its text with each unit shaded; a tabular result as signed bars per feature (name, value,
score) with each feature's responsiveness marked when the result carries it (the convention of
:func:`attribkit.viz.html.feature_recourse`) and whether the row is fixed; a time-series result
as each channel's line (inline SVG) with its attribution map shaded under it, and its top units;
a bare Scorer's result over features (task None) as signed
horizontal bars; anything else as its text with shaded units,
or a ranked table. A result whose ``extras`` hold a finite ``statistic`` (a zero-shot
machine-text detector's) shows it in the header. Inline styles only, no script; every piece of text (tokens, labels, the
prompt, the response, the target, the method) is escaped with ``html.escape(..., quote=True)``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.viz.html import (
    UNKNOWN,
    detector_statistic,
    feature_recourse,
    responsiveness_mark,
    series_svg,
    series_view,
    source_decision,
)

__all__ = ["notebook_html"]

_POS = (230, 85, 13)  # orange-red: raises the target
_NEG = (33, 102, 172)  # blue: lowers the target
_FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"
_MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,monospace"
#: at most this many rows of a ranked table or bar chart
MAX_ROWS = 30


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.4g}"


def _colour(score: float, scale: float, alpha: float = 0.8) -> str:
    if not math.isfinite(score) or scale <= 0:
        return "transparent"
    r, g, b = _POS if score >= 0 else _NEG
    return f"rgba({r},{g},{b},{alpha * min(1.0, abs(score) / scale):.3f})"


def _scale(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


def _target_text(att: Attribution) -> str:
    t = att.target
    if isinstance(t, dict):
        if "description" in t:
            return str(t["description"])
        if "class" in t:
            label = t.get("label")
            return f"class {t['class']}" + (f" ({label})" if label is not None else "")
        return ", ".join(f"{k}={v}" for k, v in t.items())
    return "" if t is None else str(t)


def _header(att: Attribution) -> str:
    kind = att.task or att.input.get("kind") or "attribution"
    parts = [
        f'<div style="font-weight:600;font-size:1.05em">{_e(att.method)} '
        f'<span style="font-weight:400;color:#6a737d">· {_e(kind)} · {len(att)} units · '
        f"{_e(att.cost)}</span></div>"
    ]
    target = _target_text(att)
    if target:
        parts.append(f'<div style="color:#444">target: {_e(target)}</div>')
    statistic = detector_statistic(att)
    if statistic is not None:
        parts.append(
            f'<div style="color:#444">detector statistic: <b>{_e(f"{statistic:.4g}")}</b>'
            ' <span style="color:#6a737d">(higher = more machine-like)</span></div>'
        )
    return "".join(parts)


def _block(title: str, text: str) -> str:
    return (
        f'<div style="margin-top:.4em"><b>{_e(title)}</b>'
        f'<div style="white-space:pre-wrap;word-break:break-word">{_e(text)}</div></div>'
    )


def _text_units(att: Attribution, v: np.ndarray) -> str | None:
    """The attribution's text with each unit shaded, or None when its units have no offsets."""
    text = att.input.get("text")
    if not isinstance(text, str) or not att.units:
        return None
    spans = [(u.start, u.end, u.index) for u in att.units]
    if any(s is None or e is None for s, e, _ in spans):
        return None
    spans.sort()
    scale, parts, pos = _scale(v), [], 0
    for s, e, i in spans:
        if s < pos or e > len(text):
            return None
        parts.append(_e(text[pos:s]))
        score = float(v[i])
        dashed = "" if math.isfinite(score) else "outline:1px dashed #999;"
        parts.append(
            f'<span style="background:{_colour(score, scale)};border-radius:3px;{dashed}" '
            f'title="{_e(f"unit {i} · score {_fmt(score)}")}">{_e(text[s:e])}</span>'
        )
        pos = e
    parts.append(_e(text[pos:]))
    return (
        '<div style="white-space:pre-wrap;word-break:break-word;border:1px solid #ddd;'
        f'border-radius:6px;padding:.6em;margin-top:.4em;line-height:1.7">{"".join(parts)}</div>'
    )


def _bars(
    att: Attribution, v: np.ndarray, order: np.ndarray, *, values: bool, limit: int = MAX_ROWS
) -> str:
    """Signed horizontal bars, one per unit (the first ``limit`` in ``order``), right of the
    axis for a positive score, left for a negative one."""
    scale, rows = _scale(v), []
    pad = "padding:.1em .5em .1em 0"
    for i in order[:limit]:
        unit, score = att.units[int(i)], float(v[int(i)])
        if math.isfinite(score) and scale > 0:
            w = 50.0 * min(1.0, abs(score) / scale)
            left = 50.0 if score >= 0 else 50.0 - w
            colour = "rgb({},{},{})".format(*(_POS if score >= 0 else _NEG))
            bar = (
                f'<div style="position:absolute;top:0;bottom:0;left:{left:.1f}%;width:{w:.1f}%;'
                f'background:{colour}"></div>'
            )
        else:
            bar = ""
        value = unit.meta.get("value") if values else None
        shown = "" if value is None else f"= {_e(value)}"
        rows.append(
            "<tr>"
            f'<td style="font-weight:600;white-space:pre-wrap;word-break:break-word;{pad}">'
            f"{_e(unit.label)}</td>"
            f'<td style="color:#6a737d;white-space:nowrap;{pad}">{shown}</td>'
            f'<td style="width:16em;{pad}"><div style="position:relative;height:.8em;'
            f'background:#f0f2f4;width:16em">{bar}<div style="position:absolute;left:50%;'
            'top:-2px;bottom:-2px;width:1px;background:#b8bec5"></div></div></td>'
            f'<td style="text-align:right;font-variant-numeric:tabular-nums">{_e(_fmt(score))}'
            "</td></tr>"
        )
    more = len(order) - limit
    tail = f'<div style="color:#6a737d">… {more} more units</div>' if more > 0 else ""
    return f'<table style="border-collapse:collapse;margin-top:.4em">{"".join(rows)}</table>{tail}'


def _ranked(att: Attribution, v: np.ndarray, limit: int = MAX_ROWS) -> str:
    return _bars(att, v, att.ranking, values=False, limit=limit)


_CELL = "min-width:1.4em;height:1.4em;padding:0;border-radius:2px"


def _grid_rows(m: np.ndarray, row_heads: list[str], title: Callable[[int, int, float], str]) -> str:
    """Table rows of a heat map: each row's ready header cell, then one coloured cell per
    value (its ``title(i, j, value)`` escaped), blank where the value is not finite."""
    scale = _scale(m)
    rows = []
    for i, head in enumerate(row_heads):
        cells = "".join(
            f'<td style="{_CELL};background:{_colour(float(x), scale, 0.85)}" '
            f'title="{_e(title(i, j, float(x)))}"></td>'
            if math.isfinite(x)
            else f'<td style="{_CELL}"></td>'
            for j, x in enumerate(m[i])
        )
        rows.append(f"<tr>{head}{cells}</tr>")
    return "".join(rows)


def _token_map(att: Attribution) -> str:
    """Rows = generated tokens, columns = input tokens; blank cells for unscored pairs."""
    scores = np.asarray(att.scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[None, :]
    target = att.target if isinstance(att.target, dict) else {}
    rows = [str(x) for x in target.get("row_labels") or []]
    if len(rows) != scores.shape[0]:
        rows = ["all rows"] if scores.shape[0] == 1 else [f"row {i}" for i in range(len(scores))]
    head = "".join(
        f'<th style="writing-mode:vertical-rl;white-space:pre;{_MONO};font-weight:400;'
        "vertical-align:bottom;max-height:8em;overflow:hidden;padding:.1em 0;"
        f'{"color:#b4460a;" if u.meta.get("role") == "response" else ""}" '
        f'title="{_e(f"input token #{j}")}">{_e(u.label)}</th>'
        for j, u in enumerate(att.units)
    )
    body = _grid_rows(
        scores,
        [
            f'<th style="text-align:right;white-space:pre;{_MONO};font-weight:400;'
            f'padding-right:.5em">{_e(label)}</th>'
            for label in rows
        ],
        lambda i, j, x: f"{rows[i]} ← {att.units[j].label}: {_fmt(x)}",
    )
    return (
        '<div style="overflow:auto;max-height:32em;margin-top:.4em">'
        '<table style="border-collapse:separate;border-spacing:1px;font-size:.85em">'
        f'<thead><tr><th style="color:#6a737d;font-weight:400;text-align:right;'
        f'vertical-align:bottom;padding-right:.5em">generated ↓ · input →</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _sentence_matrix(att: Attribution) -> str | None:
    """A reasoning result's ``extras["matrix"]`` (N×N, None = no value) as a heat map grid of
    sentence numbers (their text in the titles); None when there is no N×N matrix."""
    raw = att.extras.get("matrix")
    n = len(att)
    if not isinstance(raw, list | tuple | np.ndarray) or len(raw) != n:
        return None
    try:
        m = np.array([[np.nan if x is None else float(x) for x in row] for row in raw])
    except (TypeError, ValueError):
        return None
    if m.shape != (n, n):
        return None
    th = f"{_MONO};font-weight:400;color:#444"
    head = "".join(
        f'<th style="{th}" title="{_e(f"#{j}: {u.label}")}">#{j}</th>'
        for j, u in enumerate(att.units)
    )
    body = _grid_rows(
        m,
        [
            f'<th style="{th};text-align:right;padding-right:.5em" title="{_e(u.label)}">#{i}</th>'
            for i, u in enumerate(att.units)
        ],
        lambda i, j, x: f"#{i} ← #{j}: {_fmt(x)}",
    )
    return (
        '<div style="margin-top:.4em"><b>Sentence × sentence</b> '
        '<span style="color:#6a737d">(row: the sentence affected; column: the sentence removed '
        "or suppressed; blank: no value)</span></div>"
        '<div style="overflow:auto;max-height:32em;margin-top:.2em">'
        '<table style="border-collapse:separate;border-spacing:1px;font-size:.85em">'
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


_BADGE = "display:inline-block;font-size:.78em;font-weight:600;padding:0 .5em;border-radius:4px"
_DECIDED = f'<span style="{_BADGE};background:#fde7d6;color:#8a3a06">decision</span>'
_GOLD = f'<span style="{_BADGE};background:#dcf3e2;color:#1a5c2b">gold</span>'
_CELL_PAD = "padding:.15em .6em"


def _step_of(value: Any) -> int | None:
    """A turn's step as an int (ints and strings of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float | np.number) else math.nan


def _agents(att: Attribution, v: np.ndarray) -> str:
    """An agents result: the decision (and the gold mistake when the target records one), the
    turns' labels shaded by score (decided and gold turns marked) and the agents' totals,
    highest first."""
    target = att.target if isinstance(att.target, dict) else {}
    raw = att.extras.get("decision")
    decision = raw if isinstance(raw, dict) else {}
    d_agent, d_step = decision.get("agent"), _step_of(decision.get("step"))
    gold = target.get("mistake_agent") is not None or target.get("mistake_step") is not None
    g_agent, g_step = target.get("mistake_agent"), _step_of(target.get("mistake_step"))

    def shown(x: Any) -> str:
        return "none" if x is None else _e(x)

    parts = ['<div style="margin-top:.4em;border-left:4px solid #b4460a;padding:.3em .8em">']
    if decision:
        parts.append(f"{_DECIDED} agent <b>{shown(d_agent)}</b> at step <b>{shown(d_step)}</b>")
        if decision.get("reason"):
            parts.append(
                f'<div style="color:#444;white-space:pre-wrap">{_e(decision["reason"])}</div>'
            )
    else:
        parts.append("no decision recorded")
    if gold:
        parts.append(
            f'<div style="margin-top:.2em">{_GOLD} agent <b>{shown(g_agent)}</b> at step '
            f"<b>{shown(g_step)}</b></div>"
        )
    path = [s for s in (_step_of(x) for x in att.extras.get("path") or []) if s is not None]
    if path:
        chain = " → ".join(f"Step {s}" for s in path)
        parts.append(f'<div style="color:#444">dependency path: {_e(chain)}</div>')
    parts.append("</div>")

    scale, rows = _scale(v), []
    for i, unit in enumerate(att.units):
        score, step = float(v[i]), _step_of(unit.meta.get("step"))
        decided = bool(decision) and step is not None and step == d_step
        is_gold = gold and step is not None and step == g_step
        marks = (_DECIDED if decided else "") + (_GOLD if is_gold else "")
        edge = "box-shadow:inset 4px 0 0 #b4460a;font-weight:600;" if decided else ""
        dashed = "" if math.isfinite(score) else "outline:1px dashed #999;"
        rows.append(
            f'<tr style="background:{_colour(score, scale)};{edge}{dashed}" '
            f'title="{_e(f"turn {i} · score {_fmt(score)}")}">'
            f'<td style="{_CELL_PAD};white-space:pre-wrap;word-break:break-word">'
            f'{_e(unit.label)}</td><td style="padding:.15em .4em">{marks}</td>'
            f'<td style="{_CELL_PAD};text-align:right;font-variant-numeric:tabular-nums">'
            f"{_e(_fmt(score))}</td></tr>"
        )
    parts.append(
        '<div style="margin-top:.4em"><b>Turns</b> <span style="color:#6a737d">(each shaded by '
        "its score)</span></div>"
        f'<table style="border-collapse:collapse;margin-top:.2em">{"".join(rows)}</table>'
    )

    totals = att.extras.get("agent_scores")
    if isinstance(totals, dict) and totals:
        first = {u.meta.get("agent"): i for i, u in reversed(list(enumerate(att.units)))}

        def key(kv: tuple[Any, Any]) -> tuple[bool, float, int]:
            x = _number(kv[1])
            return (not math.isfinite(x), -x if math.isfinite(x) else 0.0, first.get(kv[0], 0))

        agent_rows = []
        for agent, total in sorted(totals.items(), key=key):
            marks = (_DECIDED if decision and agent == d_agent else "") + (
                _GOLD if gold and agent == g_agent else ""
            )
            agent_rows.append(
                f'<tr><td style="{_CELL_PAD};font-weight:600;white-space:pre-wrap;'
                f'word-break:break-word">{_e(agent)}</td><td style="padding:.15em .4em">{marks}'
                f'</td><td style="{_CELL_PAD};text-align:right;'
                f'font-variant-numeric:tabular-nums">{_e(_fmt(_number(total)))}</td></tr>'
            )
        parts.append(
            '<div style="margin-top:.4em"><b>Agents</b> <span style="color:#6a737d">(total of '
            "their turns' scores)</span></div>"
            f'<table style="border-collapse:collapse;margin-top:.2em">{"".join(agent_rows)}'
            "</table>"
        )
    return "".join(parts)


_GREY = "rgb(140,148,158)"


def _provenance(decision: dict[str, Any]) -> str:
    """A provenance decision: the prediction with its rule, the explained source, a bar per
    source (probability 0..1, highest first, the prediction marked) and an "unknown" row."""
    unknown = decision["unknown"]
    prediction = decision["prediction"] if decision["prediction"] is not None else "none recorded"
    parts = [
        '<div style="margin-top:.4em;border-left:4px solid #b4460a;padding:.3em .8em">'
        f"{_DECIDED} <b>{_e(prediction)}</b> "
        f'<span style="color:#6a737d">({_e(decision["rule"])})</span>'
    ]
    if decision["source"] is not None:
        parts.append(
            f'<div style="color:#444">explained source: <b>{_e(decision["source"])}</b> '
            '<span style="color:#6a737d">(the text\'s units are scored by their effect on its '
            "probability)</span></div>"
        )
    parts.append("</div>")
    rows = []
    for name, p in decision["sources"]:
        predicted = not unknown and name == decision["prediction"]
        width = 0.0 if p is None else 100.0 * min(1.0, max(0.0, p))
        colour = "rgb({},{},{})".format(*_POS) if predicted else _GREY
        rows.append(
            f'<tr><td style="{_CELL_PAD};font-weight:600;white-space:pre-wrap;'
            f'word-break:break-word">{_e(name)}</td>'
            f'<td style="padding:.15em .4em">{_DECIDED if predicted else ""}</td>'
            f'<td style="width:16em;{_CELL_PAD}"><div style="position:relative;height:.8em;'
            f'background:#f0f2f4;width:16em"><div style="position:absolute;top:0;bottom:0;'
            f'left:0;width:{width:.1f}%;background:{colour}"></div></div></td>'
            f'<td style="{_CELL_PAD};text-align:right;font-variant-numeric:tabular-nums">'
            f"{'n/a' if p is None else f'{p:.3f}'}</td></tr>"
        )
    fired = (
        f'<span style="{_BADGE};background:#f9dede;color:#8a1f1f">fired</span>'
        if unknown
        else f'<span style="{_BADGE};background:#e6eef7;color:#164a80">not fired</span>'
    )
    rows.append(
        f'<tr style="border-top:1px solid #ddd"><td style="{_CELL_PAD};font-weight:600">'
        f'{_e(UNKNOWN)}</td><td style="padding:.15em .4em">{_DECIDED if unknown else ""}</td>'
        f'<td colspan="2" style="{_CELL_PAD};color:#444">{fired} {_e(decision["rule"])}</td></tr>'
    )
    parts.append(
        '<div style="margin-top:.4em"><b>Sources</b> <span style="color:#6a737d">(probability '
        "of each known source on the full text, highest first)</span></div>"
        f'<table style="border-collapse:collapse;margin-top:.2em">{"".join(rows)}</table>'
    )
    return "".join(parts)


def _image(att: Attribution) -> str | None:
    """The map over the image beside the image (PNG data URLs), or None without both."""
    from attribkit.core.errors import InputError
    from attribkit.core.png import png_data_url
    from attribkit.viz.image import image_of, overlay

    if att.image_map is None:
        return None
    try:
        picture = image_of(att)
    except InputError:
        return None
    if picture.shape[:2] != att.image_map.shape:
        return None
    figures = []
    for url, caption in (
        (png_data_url(overlay(picture, att.image_map)), "map over the image"),
        (png_data_url(np.asarray(picture)), "image"),
    ):
        figures.append(
            f'<figure style="margin:0"><img src="{_e(url)}" alt="{_e(caption)}" '
            'style="width:16em;max-width:100%;border-radius:4px">'
            f'<figcaption style="color:#6a737d;font-size:.85em">{_e(caption)}</figcaption>'
            "</figure>"
        )
    return (
        f'<div style="display:flex;gap:1em;flex-wrap:wrap;margin-top:.4em">{"".join(figures)}</div>'
    )


_MARKS = {
    "yes": "background:#dcf3e2;color:#1a5c2b",
    "no": "background:#f9dede;color:#8a1f1f",
    "immutable": "background:#eceff2;color:#555",
}


def _tabular(att: Attribution, v: np.ndarray) -> str:
    """Signed bars per feature (name, value, score) with their responsiveness marks, and
    whether the row is fixed (:func:`attribkit.viz.html.feature_recourse`)."""
    names = [u.label for u in att.units]
    values = [u.meta.get("value") for u in att.units]
    info = feature_recourse(names, values, v, att.method, att.extras)
    scale, rows = _scale(v), []
    pad = "padding:.1em .5em .1em 0"
    for f in info["features"]:
        score = math.nan if f["score"] is None else f["score"]
        bar = ""
        if math.isfinite(score) and scale > 0:
            w = 50.0 * min(1.0, abs(score) / scale)
            left = 50.0 if score >= 0 else 50.0 - w
            colour = "rgb({},{},{})".format(*(_POS if score >= 0 else _NEG))
            bar = (
                f'<div style="position:absolute;top:0;bottom:0;left:{left:.1f}%;width:{w:.1f}%;'
                f'background:{colour}"></div>'
            )
        mark = responsiveness_mark(f, info["kind"])
        mark_html = (
            "" if mark is None else f'<span style="{_BADGE};{_MARKS[mark[0]]}">{_e(mark[1])}</span>'
        )
        value = "" if f["value"] is None else f"= {f['value']:.4g}"
        rows.append(
            "<tr>"
            f'<td style="font-weight:600;white-space:pre-wrap;word-break:break-word;{pad}">'
            f"{_e(f['name'])}</td>"
            f'<td style="color:#6a737d;white-space:nowrap;{pad}">{_e(value)}</td>'
            f'<td style="width:16em;{pad}"><div style="position:relative;height:.8em;'
            f'background:#f0f2f4;width:16em">{bar}<div style="position:absolute;left:50%;'
            'top:-2px;bottom:-2px;width:1px;background:#b8bec5"></div></div></td>'
            f'<td style="text-align:right;font-variant-numeric:tabular-nums;{pad}">'
            f"{_e(_fmt(score))}</td><td>{mark_html}</td></tr>"
        )
    head = ""
    if info["fixed"]:
        head = (
            f'<div style="margin-top:.4em"><span style="{_BADGE};{_MARKS["no"]}">fixed</span> '
            "no single-feature action flips the decision</div>"
        )
    elif info["fixed"] is False and info["denied"] is not False:
        head = (
            f'<div style="margin-top:.4em"><span style="{_BADGE};{_MARKS["yes"]}">not fixed'
            "</span> some action flips the decision</div>"
        )
    return head + f'<table style="border-collapse:collapse;margin-top:.4em">{"".join(rows)}</table>'


def _series(att: Attribution) -> str | None:
    """Each channel's line (inline SVG) over its attribution map, shaded by score."""
    view = series_view(att.input, att.extras)
    if view is None:
        return None
    lo, hi = view["value_range"]
    figures = "".join(
        '<figure style="margin:.4em 0"><figcaption style="font-weight:600;font-size:.9em;'
        f'white-space:pre-wrap;word-break:break-word">{_e(ch["name"])}</figcaption>'
        '<div style="width:100%;max-width:48em;height:7em;border:1px solid #ddd;'
        'border-radius:4px">'
        + series_svg(ch, view["steps"], view["scale"], lo, hi).replace(
            "<svg ", '<svg style="width:100%;height:100%;display:block" ', 1
        )
        + "</div></figure>"
        for ch in view["channels"]
    )
    return (
        '<div style="margin-top:.4em;color:#6a737d">each channel\'s line over its attribution '
        "map: orange raises the class score, blue lowers it</div>" + figures
    )


def notebook_html(attribution: Attribution) -> str:
    """An HTML fragment (no ``<html>``, no script, inline styles) showing ``attribution`` the way
    the viewer does for its task kind (see the module docstring). All text is escaped. Costs no
    model calls (an image result encodes two PNGs)."""
    att = attribution
    v = att.vector
    target = att.target if isinstance(att.target, dict) else {}
    body = [_header(att)]
    if att.task == "context":
        for key in ("query", "response"):
            if isinstance(target.get(key), str):
                body.append(_block(key.capitalize(), target[key]))
        body.append(_text_units(att, v) or _ranked(att, v))
    elif att.task == "generation":
        for key in ("prompt", "response", "foil"):
            if isinstance(target.get(key), str):
                body.append(_block(key.capitalize(), target[key]))
        body.append(_token_map(att))
    elif att.task == "reasoning":
        problem = target.get("problem", att.input.get("problem"))
        if isinstance(problem, str):
            body.append(_block("Problem", problem))
        body.append(_text_units(att, v) or _ranked(att, v))
        if target.get("answer") is not None:
            body.append(_block("Answer", str(target["answer"])))
        body.append(_sentence_matrix(att) or "")
    elif att.task == "agents":
        body.append(_agents(att, v))
    elif att.task == "provenance":
        decision = source_decision(att.target)
        if decision is not None:
            body.append(_provenance(decision))
            body.append(
                '<div style="margin-top:.4em"><b>Text</b> <span style="color:#6a737d">(each '
                f"unit shaded by its effect on p({_e(decision['source'])}))</span></div>"
            )
        body.append(_text_units(att, v) or _ranked(att, v))
    elif att.task == "image":
        body.append(_image(att) or "")
        body.append(_ranked(att, v, limit=10))
    elif att.task == "tabular":
        body.append(_tabular(att, v))
    elif att.task == "timeseries":
        body.append(_series(att) or "")
        body.append(_ranked(att, v, limit=10))
    elif att.input.get("kind") == "features" or (
        att.units and all("value" in u.meta for u in att.units)
    ):
        body.append(_bars(att, v, np.arange(len(att)), values=True))
    else:
        body.append(_text_units(att, v) or _ranked(att, v))
    return (
        f'<div class="attribkit-attribution" style="{_FONT};line-height:1.45;max-width:60em">'
        + "".join(body)
        + "</div>"
    )
