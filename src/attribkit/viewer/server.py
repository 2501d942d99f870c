"""The browser viewer: a small Starlette app over a run store, and ``serve`` to run it locally.

The app serves one static page (``static/index.html`` + ``app.js`` + ``app.css``, no build step,
nothing fetched from the network) and a JSON API:

- ``GET /api/info`` — the store, the live model (if any), the number of runs;
- ``GET /api/runs?task=&method=&model=&dataset=&limit=`` — run summaries, newest first, with the
  values each filter can take;
- ``GET /api/runs/{id}`` — one run: summary, parameters, inputs, its Attribution dict, one score
  per unit (``vector``), how to draw it (``view``, from the task kind the Attribution records:
  ``context``, ``generation``, ``image``, ``reasoning``, ``agents``, ``provenance``,
  ``tabular``, ``timeseries``; ``features``,
  ``text`` or
  ``generic`` for a bare Scorer's result), a generation run's token matrix (``tokens``), an
  image run's map over its image (``overlay``, a PNG data URL), a reasoning run's problem, answer
  and sentence×sentence matrix (``reasoning``), an agents run's agent totals, decision, gold
  (when stored) and dependency path (``agents``), a provenance run's source distribution,
  prediction (a source or "unknown") and rejection rule (``provenance``), a tabular run's
  features with their values, scores and responsiveness (``tabular``), a time-series run's
  channels with the attribution map (``series``), a detector's
  ``statistic`` (``extras["statistic"]``, e.g. a machine-text run's; None without one), its
  stored span results, the character ranges of its response's sentences, and the other runs on
  the same input (to compare with);
- ``POST /api/runs/{id}/span`` ``{"start": s, "end": e}`` — the sources of one span of a context
  run's response: a stored span result when there is one, else (with a live model) computed,
  stored and returned with ``live: true`` and its cost; 409 when neither is possible;
- ``GET /api/compare?a=&b=&k=`` — two runs on the same units side by side with their rank
  agreement (:func:`attribkit.evaluation.agreement.agreement`).

Every response carries a strict Content-Security-Policy and ``X-Content-Type-Options: nosniff``;
the page builds its DOM from text nodes only, so stored contexts are shown, never run.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import attribkit.store as _store
from attribkit.core import jsonio
from attribkit.core.attribution import Attribution
from attribkit.core.errors import AttribkitError, InputError, StoreError
from attribkit.core.jsonio import to_json
from attribkit.core.segment import sentence_spans
from attribkit.store.runs import RunStore, StoredRun

STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


class _SecurityHeaders:
    """ASGI middleware: security headers on every response; with ``allowed_hosts``, requests whose
    ``Host`` is not one of them are refused (a DNS-rebinding page cannot read the store)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {h for h, _ in SECURITY_HEADERS}
                ]
                message = {**message, "headers": headers + SECURITY_HEADERS}
            await send(message)

        if self.allowed is not None:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.allowed:
                response = JSONResponse(
                    {"error": f"host {host!r} is not served here; open the URL serve printed"},
                    status_code=400,
                )
                await response(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8765
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json(data: Any, status: int = 200) -> Response:
    body = json.dumps(to_json(data), ensure_ascii=False, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json")


def unit_vector(data: dict[str, Any]) -> list[float | None]:
    """One score per unit of an Attribution dict (:func:`attribkit.core.jsonio.unit_vector`);
    None = unscored."""
    v = jsonio.unit_vector(jsonio.scores_from_json(data.get("scores")))
    return [None if not np.isfinite(x) else float(x) for x in v]


def view_kind(run: StoredRun) -> str:
    """How the page draws a run, decided by the task kind its Attribution records:
    ``context`` (the response traced to its context, with span queries), ``generation`` (a
    token heat map), ``image`` (the map over the image; a detection run's target box is drawn
    on it and the caption names class, score and box), ``reasoning`` (the problem, the chain
    of thought shaded by sentence, the answer and, when the method gives one, the
    sentence×sentence matrix), ``program`` (a GenerationPrograms output sentence, its node tree
    with each node's cited sentences, and the context with the cited sentences shaded), ``agents`` (a multi-agent log's turns shaded by score, the
    agents' totals and the decision), ``provenance`` (the source distribution with "unknown"
    beside the text, its units shaded by score; needs the target's ``scores``), ``tabular``
    (signed bars per feature with its value and, when the run carries it, its responsiveness:
    :func:`tabular_payload`), ``timeseries`` (each channel's line with the attribution map shaded
    under it; needs ``input["series"]`` and ``extras["map"]`` of one shape), ``neurons`` (a
    neuron or head attribution: its layer × unit map and top units; needs ``extras["layer_map"]``); for a bare
    Scorer's result (no task) or a task kind without its own view (e.g. ``machine_text``)
    by its units: ``features`` (signed bars), ``image`` (image units over the stored picture),
    ``text`` (text units over their text); else ``generic`` (a ranked list)."""
    data = run.data
    task = run.task_kind
    units = data.get("units") or []
    inp = data.get("input") or {}
    target = data.get("target")
    has_ranges = bool(units) and all("start" in u for u in units)
    text = isinstance(inp.get("text"), str)
    image = "image_png" in {**inp, **run.inputs}
    if task == "context":
        ok = isinstance(target, dict) and "response" in target and text and has_ranges
        return "context" if ok else "generic"
    if task == "generation":
        return "generation" if units else "generic"
    if task == "image":
        return "image" if image else "generic"
    if task == "reasoning":
        return "reasoning" if text and has_ranges else "generic"
    if task == "program":
        tree = (data.get("extras") or {}).get("program")
        return "program" if isinstance(tree, dict) and text and has_ranges else "generic"
    if task == "agents":
        return "agents" if units else "generic"
    if task == "provenance":
        ok = isinstance(target, dict) and isinstance(target.get("scores"), dict)
        return "provenance" if ok else "generic"
    if task == "tabular":
        return "tabular" if units else "generic"
    if task == "timeseries":
        return "timeseries" if _has_series(inp, data.get("extras")) else "generic"
    if inp.get("kind") in ("neurons", "heads") and _has_layer_map(data):
        return "neurons"
    if units and all("box" in u for u in units) and image:
        return "image"
    if inp.get("kind") == "features" or (
        units and all("value" in u.get("meta", {}) for u in units)
    ):
        return "features"
    if text and has_ranges:
        return "text"
    return "generic"


def _has_layer_map(data: dict[str, Any]) -> bool:
    """Whether a neuron run stores its (layers × units) score matrix as a list of equal rows."""
    m = (data.get("extras") or {}).get("layer_map")
    return (
        isinstance(m, list)
        and bool(m)
        and all(isinstance(r, list) and len(r) == len(m[0]) and r for r in m)
    )


def neurons_payload(data: dict[str, Any]) -> dict[str, Any]:
    """A neuron run's layer × unit map as a PNG data URL (:func:`attribkit.viz.image.colorize`
    on a scale symmetric around 0, so the middle colour is 0), its shape, the unit word
    (``neuron`` or ``head``), the explained token and its log-probability, and the top units
    ``[layer, unit, score]`` (highest first)."""
    from attribkit.core.png import png_data_url
    from attribkit.viz.image import colorize

    extras = data.get("extras") or {}
    grid = np.asarray(extras["layer_map"], dtype=float)
    finite = np.abs(grid[np.isfinite(grid)])
    scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    top = [
        [int(r[0]), int(r[1]), _finite(r[2])]
        for r in extras.get("top") or []
        if isinstance(r, list) and len(r) == 3
    ]
    if not top:
        flat = np.nan_to_num(grid.ravel(), nan=-np.inf)
        top = [
            [int(b // grid.shape[1]), int(b % grid.shape[1]), float(grid.ravel()[b])]
            for b in np.argsort(-flat, kind="stable")[:20]
        ]
    kind = (data.get("input") or {}).get("kind")
    return {
        "map_png": png_data_url(colorize(grid, vmin=-scale, vmax=scale)),
        "shape": list(grid.shape),
        "scale": scale,
        "unit": "head" if kind == "heads" else "neuron",
        "token": None if extras.get("token") is None else str(extras["token"]),
        "logprob": _finite(extras.get("logprob")),
        "top": top,
    }


def _has_series(inp: dict[str, Any], extras: Any) -> bool:
    """Whether a time-series run stores a (T, C) series and a map of the same shape (a cheap
    check of the outer lengths; :func:`series_payload` checks every value)."""
    series = inp.get("series")
    m = extras.get("map") if isinstance(extras, dict) else None
    if not (isinstance(series, list) and isinstance(m, list) and series):
        return False
    return (
        len(series) == len(m)
        and isinstance(series[0], list)
        and isinstance(m[0], list)
        and len(series[0]) == len(m[0])
    )


def token_matrix(data: dict[str, Any]) -> dict[str, Any]:
    """A generation run's heat map: ``rows`` (the generated tokens), ``columns`` (the input
    tokens, with their ``roles``: prompt or response) and ``scores`` (rows × columns, None where
    a row cannot see a column or was not scored). Scores of one row per unit become one row."""
    scores = jsonio.scores_from_json(data.get("scores"))
    if scores.ndim == 1:
        scores = scores[None, :]
    units = data.get("units") or []
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    labels = [str(x) for x in target.get("row_labels") or []]
    if len(labels) != scores.shape[0]:
        labels = ["all rows"] if scores.shape[0] == 1 else [f"row {i}" for i in range(len(scores))]
    return {
        "rows": labels,
        "columns": [str(u.get("label", "")) for u in units],
        "roles": [str((u.get("meta") or {}).get("role", "")) for u in units],
        "scores": [[None if not np.isfinite(x) else float(x) for x in row] for row in scores],
    }


def overlay_png(run: StoredRun) -> str | None:
    """An image run's map over its image as a PNG data URL (:func:`attribkit.viz.image.overlay`,
    positive evidence), or None for a run without an image map (e.g. a Scorer over image
    units, drawn as shaded units instead)."""
    from attribkit.core.png import png_data_url
    from attribkit.viz.image import image_of, overlay

    if run.data.get("heatmap") is None and "heatmap" not in (run.data.get("extras") or {}):
        return None
    a = run.attribution
    if a.image_map is None:
        return None
    try:
        picture = image_of(a)
    except InputError:
        return None
    if picture.shape[:2] != a.image_map.shape:
        return None
    return png_data_url(overlay(picture, a.image_map))


def _finite(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def reasoning_payload(data: dict[str, Any]) -> dict[str, Any]:
    """A reasoning run's ``problem``, ``answer`` and ``matrix`` (the method's
    sentence×sentence ``extras["matrix"]``, rows × columns, None where a cell has no value; None
    when the method gives no N×N matrix)."""
    inp = data.get("input") or {}
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    n = len(data.get("units") or [])
    raw = (data.get("extras") or {}).get("matrix")
    matrix = None
    if (
        isinstance(raw, list)
        and len(raw) == n
        and all(isinstance(row, list) and len(row) == n for row in raw)
    ):
        matrix = [[_finite(v) for v in row] for row in raw]
    problem = target.get("problem", inp.get("problem"))
    answer = target.get("answer")
    return {
        "problem": None if problem is None else str(problem),
        "answer": None if answer is None else str(answer),
        "matrix": matrix,
    }


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _unit_at_step(units: list[dict[str, Any]], step: int | None) -> int | None:
    """The position of the unit of turn ``step``, or None when no unit is that turn."""
    if step is None:
        return None
    for i, u in enumerate(units):
        if _int_or_none((u.get("meta") or {}).get("step")) == step:
            return i
    return None


def agents_payload(data: dict[str, Any], inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """An agents run's ``totals`` (``[agent, total]`` pairs from ``extras["agent_scores"]``,
    highest first; None for a non-finite total), ``decision`` (``agent``, ``step``, ``reason``
    and ``unit``: the index of the decided turn, None when it is not a unit), ``gold``
    (``agent``, ``step``, ``unit``, from ``mistake_agent``/``mistake_step`` in the target or the
    run's stored inputs; None when neither has them), ``path`` (backtrace's steps from the
    decided turn to the root, each ``{"step", "agent"}``; empty without one), ``n_turns`` and
    ``outcome_step`` (the scored final turn, left out of the units). Labels, agents and steps
    only: an agents run holds no turn text."""
    units = [u if isinstance(u, dict) else {} for u in data.get("units") or []]
    extras = data.get("extras") or {}
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    inp = data.get("input") or {}
    raw = extras.get("agent_scores")
    order = {
        str((u.get("meta") or {}).get("agent")): i for i, u in reversed(list(enumerate(units)))
    }
    totals: list[tuple[str, float | None]] = []
    if isinstance(raw, dict):
        totals = [(str(k), _finite(v)) for k, v in raw.items()]
    totals.sort(key=lambda kv: (kv[1] is None, -(kv[1] or 0.0), order.get(kv[0], len(order))))
    raw_decision = extras.get("decision") if isinstance(extras.get("decision"), dict) else None
    decision = None
    if raw_decision is not None:
        step = _int_or_none(raw_decision.get("step"))
        agent = raw_decision.get("agent")
        decision = {
            "agent": None if agent is None else str(agent),
            "step": step,
            "reason": str(raw_decision.get("reason") or ""),
            "unit": _unit_at_step(units, step),
        }
    gold = None
    for source in (target, inputs or {}):
        if source.get("mistake_agent") is not None or source.get("mistake_step") is not None:
            agent, step = source.get("mistake_agent"), _int_or_none(source.get("mistake_step"))
            gold = {
                "agent": None if agent is None else str(agent),
                "step": step,
                "unit": _unit_at_step(units, step),
            }
            break
    agent_of = {
        _int_or_none((u.get("meta") or {}).get("step")): str((u.get("meta") or {}).get("agent"))
        for u in units
    }
    path = []
    for s in extras.get("path") or []:
        step = _int_or_none(s)
        if step is not None:
            path.append({"step": step, "agent": agent_of.get(step)})
    return {
        "totals": [[a, v] for a, v in totals],
        "decision": decision,
        "gold": gold,
        "path": path,
        "n_turns": _int_or_none(inp.get("n_turns")),
        "outcome_step": _int_or_none(target.get("outcome_step")),
    }


def provenance_payload(data: dict[str, Any]) -> dict[str, Any] | None:
    """A provenance run's decision (:func:`attribkit.viz.html.source_decision`): ``sources``
    (``[name, probability]`` pairs, highest first), ``prediction`` (a source or "unknown"),
    ``source`` (the explained one), ``confidence``, ``threshold``, ``unknown`` (whether the
    rejection rule fired) and ``rule`` (it in words); None without a source distribution."""
    from attribkit.viz.html import source_decision

    return source_decision(data.get("target"))


def tabular_payload(data: dict[str, Any]) -> dict[str, Any]:
    """A tabular run's features (:func:`attribkit.viz.html.feature_recourse`): ``kind``
    (``"responsiveness"`` for a responsiveness run, whose scores are the responsiveness;
    ``"attribution"`` for an attribution carrying ``extras["responsiveness"]``, feature name →
    score; None without responsiveness), ``fixed``, ``denied`` and ``features`` (``index``,
    ``name``, ``value``, ``score``, ``responsiveness``, ``responsive``, ``actionable``,
    ``n_actions``, each None where unknown), in the order of the units."""
    from attribkit.viz.html import feature_recourse

    units = [u if isinstance(u, dict) else {} for u in data.get("units") or []]
    return feature_recourse(
        [str(u.get("label", "")) for u in units],
        [(u.get("meta") or {}).get("value") for u in units],
        [np.nan if v is None else v for v in unit_vector(data)],
        str(data.get("method") or ""),
        data.get("extras"),
    )


def series_payload(data: dict[str, Any]) -> dict[str, Any] | None:
    """A time-series run's series and map (:func:`attribkit.viz.html.series_view`): ``steps``,
    ``scale`` (max |map|), ``value_range`` and ``channels`` (``name``, ``values``, ``map``: one
    number per step, None where not finite), plus ``class_name`` and ``prediction_name`` from the
    target; None without a series and a map of the same (T, C) shape."""
    from attribkit.viz.html import series_view

    view = series_view(data.get("input"), data.get("extras"))
    if view is None:
        return None
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    for key in ("class_name", "prediction_name"):
        value = target.get(key)
        view[key] = None if value is None else str(value)
    return view


def statistic_of(data: dict[str, Any]) -> float | None:
    """A run's finite ``extras["statistic"]`` (a zero-shot machine-text detector's statistic,
    higher = more likely machine-generated), else None."""
    value = (data.get("extras") or {}).get("statistic")
    return None if isinstance(value, bool) else _finite(value)


def _view_payload(run: StoredRun, view: str) -> dict[str, Any]:
    """What a view needs beyond the Attribution dict: a generation run's token matrix, an
    image run's overlay, a reasoning run's problem, answer and matrix, an agents run's
    totals, decision, gold and path, a provenance run's source distribution and decision, a
    tabular run's features with their responsiveness, a time-series run's series and map."""
    if view == "generation":
        return {"tokens": token_matrix(run.data)}
    if view == "image":
        return {"overlay": overlay_png(run)}
    if view == "reasoning":
        return {"reasoning": reasoning_payload(run.data)}
    if view == "agents":
        return {"agents": agents_payload(run.data, run.inputs)}
    if view == "provenance":
        return {"provenance": provenance_payload(run.data)}
    if view == "tabular":
        return {"tabular": tabular_payload(run.data)}
    if view == "timeseries":
        return {"series": series_payload(run.data)}
    if view == "neurons":
        return {"neurons": neurons_payload(run.data)}
    return {}


def _input_key(data: dict[str, Any]) -> str:
    """A fingerprint of what was attributed (input, target and unit labels): equal keys =
    comparable runs."""
    inp = {k: v for k, v in (data.get("input") or {}).items()}
    target = data.get("target")
    if isinstance(target, dict):  # the same context and question; the same image class
        inp["query"] = target.get("query")
        inp["response"] = target.get("response")
        inp["class"] = target.get("class")
        inp["answer"] = target.get("answer")  # a reasoning run's answer
        if target.get("kind") == "agent_outcome":  # what an agents run scored
            inp["outcome"] = [target.get("outcome"), target.get("outcome_step")]
        if target.get("kind") == "source":  # the source whose probability a provenance run explains
            inp["source"] = target.get("source")
    labels = [u.get("label") for u in data.get("units") or []]
    blob = json.dumps([inp, labels], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Viewer:
    """The state behind the app: the store, the optional live model and its per-run tasks."""

    def __init__(self, store: RunStore, lm: Any = None, cache_size: int = 4) -> None:
        self.store, self.lm, self.cache_size = store, lm, cache_size
        self._tasks: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # one live computation at a time (the model is shared)

    @property
    def model_name(self) -> str | None:
        return None if self.lm is None else str(getattr(self.lm, "name", type(self.lm).__name__))

    # --- API payloads ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"store": str(self.store.path), "model": self.model_name, "runs": len(self.store)}

    def runs(self, filters: dict[str, str], limit: int | None) -> dict[str, Any]:
        every = self.store.query()
        facets = {
            name: sorted({str(getattr(r, name)) for r in every})
            for name in ("task", "method", "model")
        }
        facets["dataset"] = sorted({r.dataset for r in every if r.dataset})
        chosen = [
            r for r in every if all(str(getattr(r, k) or "") == v for k, v in filters.items() if v)
        ]
        if limit:
            chosen = chosen[:limit]
        return {
            "runs": [self._summary(r) for r in chosen],
            "total": len(every),
            "facets": facets,
        }

    def _summary(self, run: StoredRun) -> dict[str, Any]:
        s = run.summary()
        s["view"] = view_kind(run)
        return s

    def run(self, run_id: str) -> dict[str, Any]:
        run = self.store.get(run_id)
        data = run.data
        out = self._summary(run)
        out.update(
            params=run.params,
            tags=run.tags,
            inputs=run.inputs,
            attribution=data,
            vector=unit_vector(data),
            spans=[self._span_summary(c) for c in self.store.spans(run.id)],
            sentences=[],
            same_input=[],
            live=self.lm is not None,
            statistic=statistic_of(data),
        )
        out.update(_view_payload(run, out["view"]))
        target = data.get("target")
        if out["view"] == "context" and isinstance(target, dict):
            out["sentences"] = [list(s) for s in sentence_spans(str(target["response"]))]
        if run.parent is None:
            key = _input_key(data)
            out["same_input"] = [
                self._summary(r)
                for r in self.store.query(task=run.task, limit=500)
                if r.id != run.id and _input_key(r.data) == key
            ]
        return out

    def _span_summary(self, child: StoredRun) -> dict[str, Any]:
        target = child.data.get("target") or {}
        return {
            "id": child.id,
            "span": None if child.span is None else list(child.span),
            "text": target.get("span_text"),
            "cost": child.cost.to_dict(),
            "created": child.created_iso,
        }

    def span(self, run_id: str, start: int, end: int) -> tuple[dict[str, Any], int]:
        """The span result payload and HTTP status for ``[start, end)`` of run ``run_id``."""
        run = self.store.get(run_id)
        if run.parent is not None:
            run = self.store.get(run.parent)
        if view_kind(run) != "context":
            return {"error": f"run {run.id} is not a context attribution; spans need one"}, 400
        response = str(run.data["target"]["response"])
        if not 0 <= start < end <= len(response):
            return {
                "error": f"span ({start}, {end}) is not inside the response "
                f"(length {len(response)}); select text of the response"
            }, 400
        found = self.store.find_span(run.id, start, end)
        if found is not None:
            return self._span_payload(found, response, live=False, seconds=0.0), 200
        if self.lm is None:
            return {
                "error": "this span has no stored result and no model is loaded; start "
                f"`attribkit serve --model {run.model}` to compute new spans",
                "span": [start, end],
            }, 409
        if self.model_name != run.model:
            return {
                "error": f"run {run.id[:8]} was computed with model {run.model!r} but this server "
                f"has {self.model_name!r} loaded; start `attribkit serve --model {run.model}` "
                "to compute new spans of it",
                "span": [start, end],
            }, 409
        t0 = time.perf_counter()
        with self._lock:
            found = self.store.find_span(run.id, start, end)  # stored while we waited?
            if found is not None:
                return self._span_payload(found, response, live=False, seconds=0.0), 200
            result = self._compute(run, start, end)
            child_id = self.store.add_spans(run.id, [result])[0]
        stored = self.store.get(child_id)
        return self._span_payload(
            stored, response, live=True, seconds=time.perf_counter() - t0
        ), 200

    def _task(self, run: StoredRun) -> Any:
        from attribkit.tasks.context import ContextTask

        task = self._tasks.pop(run.id, None)
        if task is None:
            task = ContextTask.from_attribution(self.lm, run.attribution)
        self._tasks[run.id] = task
        while len(self._tasks) > self.cache_size:
            self._tasks.popitem(last=False)
        return task

    def _compute(self, run: StoredRun, start: int, end: int) -> Attribution:
        task = self._task(run).with_span((start, end))
        try:
            return task.attribute(run.method, **run.params)
        except (TypeError, InputError):
            # Stored params may hold values the method reports but does not take (e.g. auto's
            # chosen method); the method's defaults are the next best thing.
            return task.attribute(run.method)

    def _span_payload(
        self, child: StoredRun, response: str, *, live: bool, seconds: float
    ) -> dict[str, Any]:
        assert child.span is not None
        s, e = child.span
        return {
            "id": child.id,
            "parent": child.parent,
            "span": [s, e],
            "text": response[s:e],
            "live": live,
            "stored": not live,
            "cost": child.cost.to_dict(),
            "request_seconds": seconds,
            "attribution": child.data,
            "vector": unit_vector(child.data),
        }

    def compare(self, a: str, b: str, k: int) -> dict[str, Any]:
        from attribkit.evaluation.agreement import agreement

        ra, rb = self.store.get(a), self.store.get(b)
        result = agreement(ra.attribution, rb.attribution, k=k)
        return {
            "a": self._side(ra),
            "b": self._side(rb),
            "agreement": result,
            "same_input": _input_key(ra.data) == _input_key(rb.data),
        }

    def _side(self, run: StoredRun) -> dict[str, Any]:
        out = self._summary(run)
        out.update(
            params=run.params,
            inputs=run.inputs,
            attribution=run.data,
            vector=unit_vector(run.data),
            statistic=statistic_of(run.data),
        )
        out.update(_view_payload(run, out["view"]))
        return out


# --- the app --------------------------------------------------------------------------------------
def create_app(
    store: RunStore | str | os.PathLike[str],
    lm: Any = None,
    *,
    allowed_hosts: Sequence[str] | None = None,
    cache_size: int = 4,
) -> Starlette:
    """The viewer app over ``store`` (a :class:`RunStore` or the path of one).

    With ``lm`` (a language model such as ``attribkit.models.load("smollm2")``), span queries
    that have no stored result are computed live (the method's model calls; tasks of the last
    ``cache_size`` runs are kept so their per-prompt caches are reused) and stored. With
    ``allowed_hosts``, requests for any other ``Host`` are refused. Costs no model calls itself.
    """
    runs = store if isinstance(store, RunStore) else _store.open(store)
    viewer = Viewer(runs, lm=lm, cache_size=cache_size)

    async def index(request: Request) -> Response:
        body = (STATIC / "index.html").read_bytes()
        return Response(body, media_type="text/html; charset=utf-8", headers=_NO_CACHE)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC_FILES:
            return _error(f"no static file {name!r}", 404)
        return Response(
            (STATIC / name).read_bytes(), media_type=_STATIC_FILES[name], headers=_NO_CACHE
        )

    async def api_info(request: Request) -> Response:
        return _json(await run_in_threadpool(viewer.info))

    async def api_runs(request: Request) -> Response:
        q = request.query_params
        filters = {k: q.get(k, "") for k in ("task", "method", "model", "dataset")}
        try:
            limit = int(q["limit"]) if q.get("limit") else None
        except ValueError:
            return _error("limit must be an integer", 400)
        return _json(await run_in_threadpool(viewer.runs, filters, limit))

    async def api_run(request: Request) -> Response:
        return await _call(viewer.run, request.path_params["run_id"])

    async def api_span(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error("send the span as JSON (Content-Type: application/json)", 415)
        try:
            body = await request.json()
            start, end = int(body["start"]), int(body["end"])
        except (ValueError, KeyError, TypeError):
            return _error('send {"start": <int>, "end": <int>}, a character range', 400)
        try:
            payload, status = await run_in_threadpool(
                viewer.span, request.path_params["run_id"], start, end
            )
        except StoreError as e:
            return _error(str(e), 404)
        except AttribkitError as e:
            return _error(str(e), 400)
        return _json(payload, status)

    async def api_compare(request: Request) -> Response:
        q = request.query_params
        if not q.get("a") or not q.get("b"):
            return _error("give two run ids: /api/compare?a=<id>&b=<id>", 400)
        try:
            k = int(q.get("k", "5"))
        except ValueError:
            return _error("k must be an integer", 400)
        return await _call(viewer.compare, q["a"], q["b"], k)

    async def not_found(request: Request) -> Response:
        return _error(f"no API endpoint {request.url.path}", 404)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name}", static),
            Route("/api/info", api_info),
            Route("/api/runs", api_runs),
            Route("/api/runs/{run_id}", api_run),
            Route("/api/runs/{run_id}/span", api_span, methods=["POST"]),
            Route("/api/compare", api_compare),
            Route("/api/{rest:path}", not_found),
        ]
    )
    app.state.viewer = viewer
    app.add_middleware(_SecurityHeaders, allowed_hosts=allowed_hosts)
    return app


_NO_CACHE = {"cache-control": "no-cache"}


async def _call(fn: Any, *args: Any) -> Response:
    try:
        return _json(await run_in_threadpool(fn, *args))
    except StoreError as e:
        return _error(str(e), 404)
    except AttribkitError as e:
        return _error(str(e), 400)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise StoreError(
            f"cannot listen on {host}:{port} ({e.strerror}); pick another --port (0 = any free one)"
        ) from None
    sock.listen(128)
    return sock


class BackgroundServer:
    """A viewer served by uvicorn in a daemon thread (tests, scripts, notebooks); ``url`` is its
    address. Use as a context manager, or call :meth:`stop`."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._sock = _bind(host, port)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self._sock.getsockname()[1]}/"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise StoreError(f"the viewer did not start at {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving and wait for the thread (a few seconds at most)."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    store: RunStore | str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8765,
    model: str | None = None,
    lm: Any = None,
) -> None:
    """Serve the viewer for ``store`` at ``http://host:port/`` until interrupted (port 0 = a free
    port); prints the URL. ``model`` (a name or path for :func:`attribkit.models.load`, e.g.
    ``"smollm2"``) or ``lm`` enables live span queries; without one, only stored span results
    are shown. Binding a non-loopback host prints a warning: the viewer has no authentication.
    Costs no model calls until a span without a stored result is queried."""
    import uvicorn

    if not isinstance(store, RunStore):
        path = Path(store)
        if not path.is_file():
            raise StoreError(
                f"no run store at {path}; create one (attribkit run-dataset --store {path} ...) "
                "or pass --store with an existing store"
            )
        store = _store.open(path)
    if lm is None and model is not None:
        from attribkit.models import load

        lm = load(model, progress=True)
    loopback = _is_loopback(host)
    if not loopback:
        print(
            f"warning: serving on {host}, which is not a loopback address: anyone who can reach "
            "it can read every stored run"
            + (" and spend model time" if lm is not None else "")
            + "; there is no authentication",
            file=sys.stderr,
        )
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    allowed = [*LOOPBACK_HOSTS, "[::1]"] if loopback else None
    app = create_app(store, lm=lm, allowed_hosts=allowed)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"attribkit viewer: http://{shown}:{bound}/  ({len(store)} runs in {store.path}; "
        + (
            "live model " + str(getattr(lm, "name", "?"))
            if lm is not None
            else "no model: stored span results only"
        )
        + ")  Ctrl-C stops it",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


__all__ = [
    "CSP",
    "BackgroundServer",
    "Viewer",
    "agents_payload",
    "create_app",
    "overlay_png",
    "provenance_payload",
    "reasoning_payload",
    "series_payload",
    "serve",
    "statistic_of",
    "tabular_payload",
    "token_matrix",
    "unit_vector",
    "view_kind",
]
