"""Attention-based context attribution: AttnTrace and learned attention heads (AT2-lite).

Both methods read the attention that the rows predicting the response (or the span's tokens)
pay to the prompt tokens, recomputed by :meth:`LanguageModel.attention_rows` from one forward
pass, and map prompt tokens to context units by character overlap (:func:`unit_token_mask`).

- ``"attntrace"`` (Wang, Geng, Chen, Jia, 2025): attention averaged over *all* layers and heads,
  top-``avg_k`` token averaging inside each unit, and context subsampling (B forward passes on
  prompts that keep ``⌊q·n⌋`` units each).
- ``"attention_heads"`` (AT2-lite, after Cohen-Wang, Chuang, Mądry, 2025): one forward pass; each
  unit's score is a weighted sum, over a small learned set of heads, of the attention mass the
  target rows put on the unit. The heads are selected per model by :func:`select_heads` and
  shipped as JSON in ``attribkit/data/heads/<model>.json``; regenerate SmolLM2's file with
  ``python -m attribkit.methods.attention select --model smollm2 --out PATH``.

On SmolLM2-135M-Instruct the plain all-heads average (and so AttnTrace) falls on an attention
sink when distractor sentences share the needle's shape; a handful of selected heads do not (the
measured numbers are in the shipped heads file, under ``held_out``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, Cost, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import check_units
from attribkit.core.units import TextUnits

__all__ = [
    "HEADS_FORMAT",
    "attention_heads",
    "attntrace",
    "head_unit_features",
    "heads_path",
    "load_heads",
    "select_heads",
    "unit_token_mask",
]

HEADS_FORMAT = "attribkit.heads"
HEADS_VERSION = 1

Head = tuple[int, int]

# --------------------------------------------------------------------------- tokens -> units


def unit_token_mask(
    prompt: str, units: TextUnits, token_spans: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Which prompt tokens belong to which unit: a boolean array ``[n_units, n_tokens]``.

    ``token_spans`` are the character spans of the prompt tokens relative to ``prompt`` (as
    returned by ``lm.prompt_token_spans(prompt)``; ``(-1, -1)`` for chat-template tokens). The
    units' text sits in ``prompt`` at ``prompt.find(units.text)``; token ``t`` belongs to unit
    ``u`` when its span overlaps ``[u.start, u.end)`` shifted by that offset (a token straddling
    two units belongs to both; separators between units belong to none). No model calls.
    """
    offset = prompt.find(units.text)
    if offset < 0:
        raise InputError(
            "the units' text does not occur in the prompt, so tokens cannot be mapped to units; "
            "build the units over the context that the prompt template inserts"
        )
    spans = np.asarray(list(token_spans), dtype=np.int64).reshape(-1, 2)
    starts = np.array([u.start for u in units], dtype=np.int64)[:, None] + offset
    ends = np.array([u.end for u in units], dtype=np.int64)[:, None] + offset
    s, e = spans[None, :, 0], spans[None, :, 1]
    mask = (s >= 0) & (e > s) & (s < ends) & (e > starts)
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise InputError(
            f"unit(s) {empty[:5].tolist()} cover no prompt token; check that the token spans "
            "belong to this prompt"
        )
    return mask


def _subsample_units(units: TextUnits, keep: np.ndarray) -> TextUnits:
    """The context composed from the kept units, as TextUnits over the composed text."""
    text, bounds = units.text, [*(u.start for u in list(units)[1:]), len(units.text)]
    parts, spans, pos = [text[: units[0].start]], [], units[0].start
    for u, b, k in zip(units, bounds, keep, strict=True):
        if k:
            spans.append((pos, pos + u.end - u.start))
            piece = text[u.start : b]
        elif units.removal != "delete":
            piece = units.removal + text[u.end : b]
        else:
            piece = ""
        parts.append(piece)
        pos += len(piece)
    composed = "".join(parts)
    if composed != units.compose(keep):  # pragma: no cover (guards against a compose change)
        raise RuntimeError("subsampled context does not match TextUnits.compose")
    return TextUnits(composed, spans, units.removal)


# --------------------------------------------------------------------------- attention reading


def _attention_lm(task: Any) -> Any:
    lm = task.lm
    if not callable(getattr(lm, "attention_rows", None)):
        raise InputError(
            f"attention methods read the model's attention and need a local LanguageModel; "
            f"{type(lm).__name__} has no attention_rows. Use a perturbation method "
            "(e.g. 'loo', 'contextcite') for remote or black-box models"
        )
    return lm


def _model_shape(lm: Any) -> tuple[int, int] | None:
    """(layers, query heads per layer) of the LM's model, None if unknown."""
    layers, heads = getattr(lm, "n_layers", None), getattr(lm, "n_heads", None)
    if isinstance(layers, int) and isinstance(heads, int):
        return layers, heads
    cfg = getattr(getattr(lm, "model", None), "config", None)
    layers = getattr(cfg, "num_hidden_layers", None)
    heads = getattr(cfg, "num_attention_heads", None)
    return (int(layers), int(heads)) if layers and heads else None


def _all_heads(lm: Any) -> list[Head]:
    shape = _model_shape(lm)
    if shape is None:
        raise InputError("cannot list the model's heads: its config has no layer/head counts")
    return [(layer, head) for layer in range(shape[0]) for head in range(shape[1])]


def _check_heads(lm: Any, heads: Sequence[Sequence[int]]) -> list[Head]:
    out = []
    for h in heads:
        if len(h) != 2:
            raise InputError(f"a head is a (layer, head) pair, got {h!r}")
        out.append((int(h[0]), int(h[1])))
    if not out:
        raise InputError("no heads given: pass heads=[(layer, head), ...] or heads='all'")
    shape = _model_shape(lm)
    if shape is not None:
        bad = [h for h in out if not (0 <= h[0] < shape[0] and 0 <= h[1] < shape[1])]
        if bad:
            raise InputError(
                f"heads {bad[:5]} do not exist in a model with {shape[0]} layers of {shape[1]} "
                "heads; layers and heads count from 0"
            )
    return out


def _target_rows(task: Any, n_rows: int) -> np.ndarray:
    """Boolean mask of the attention rows that predict the target tokens (the span's, if any)."""
    if task.span is None:
        return np.ones(n_rows, dtype=bool)
    rows = np.asarray(task.span_token_mask, dtype=bool)
    if rows.shape != (n_rows,):
        raise InputError(
            f"the span mask has {rows.size} response tokens but the model returned {n_rows} "
            "attention rows; the LM tokenizes the response inconsistently"
        )
    return rows


def _read(task: Any, prompt: str, units: TextUnits, heads: Any) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass: attention of the target rows, averaged over rows, ``[n_heads, T]``,
    and the unit/token membership ``[n_units, T]``."""
    lm = _attention_lm(task)
    attn, spans = lm.attention_rows(prompt, task.response, heads=heads, chat=True)
    attn = np.asarray(attn, dtype=np.float64)
    if not np.isfinite(attn).all():
        raise ScorerError(
            "the model returned non-finite attention weights; check the model weights and dtype "
            "(float16 on CPU can overflow)"
        )
    if attn.ndim != 3 or attn.shape[2] != len(spans):
        raise InputError(
            f"attention_rows returned shape {attn.shape} for {len(spans)} prompt tokens; "
            "expected [n_heads, response rows, prompt tokens]"
        )
    rows = _target_rows(task, attn.shape[1])
    return attn[:, rows].mean(axis=1), unit_token_mask(prompt, units, spans)


def head_unit_features(task: Any, heads: str | Sequence[Sequence[int]] = "all") -> np.ndarray:
    """AT2's per-head unit features for a ContextTask: ``[n_heads, n_units]``.

    Entry ``[h, u]`` is the attention that head ``h`` pays from the target rows (the rows that
    predict the response tokens, or only the span's) to the tokens of unit ``u``, summed over
    the unit's tokens and averaged over the rows. ``heads="all"`` lists every (layer, head) in
    layer-major order. Costs one forward pass.
    """
    lm = _attention_lm(task)
    heads = heads if isinstance(heads, str) else _check_heads(lm, heads)
    attn, member = _read(task, task.prompt(), task.units, heads)
    return attn @ member.T.astype(np.float64)


def _finish(cost: Cost, calls: int) -> Cost:
    # An LM adapter that does not meter its own passes still reports the calls made here.
    cost.forward_passes = max(cost.forward_passes, calls)
    return cost


def _result(
    task: Any, scores: np.ndarray, name: str, params: dict, cost: Cost, **extras: Any
) -> Attribution:
    return task.result(scores, name, params, cost, **extras)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- AttnTrace


def attntrace(
    task: Any,
    *,
    avg_k: int = 5,
    q: float = 0.4,
    B: int = 30,
    heads: str | Sequence[Sequence[int]] = "all",
    seed: int | None = 0,
    budget: Budget | None = None,
) -> Attribution:
    """AttnTrace: attention averaged over all layers and heads, with top-K token averaging and
    context subsampling.

    For each of ``B`` subsamples, ``max(1, ⌊q·n⌋)`` units are drawn without replacement (kept in
    their original order) and the prompt is rebuilt from them; one forward pass gives the
    attention of the target rows (the response's, or only the span's) to every prompt token,
    averaged over rows and over ``heads`` (all layers and heads by default, as in the paper).
    A unit's score in a subsample is the mean of its ``avg_k`` largest token values; its final
    score is the mean over the subsamples that contained it. Units never drawn get NaN (ranked
    last; ``extras["times_sampled"]`` says how often each unit was drawn): with the defaults a
    unit is missed with probability 0.6^30 ≈ 2e-7, but a tight budget can leave units unscored.
    When ``⌊q·n⌋ ≥ n`` every subsample is the full context and one pass is made.

    ``budget.forward_passes`` caps ``B``; ``budget.seconds`` stops drawing subsamples once spent
    (after at least one). Returns an Attribution over the task's units.
    Costs ``B`` forward passes, each on a shorter prompt (≈ ``q`` of the context tokens).

    On SmolLM2-135M-Instruct this is at chance on "needle" cases whose distractors share the
    needle's sentence shape (the all-heads average is dominated by an attention sink); prefer
    ``"attention_heads"`` there.
    """
    check_units(task)
    if avg_k < 1:
        raise InputError(f"avg_k must be >= 1, got {avg_k}")
    if not 0 < q <= 1:
        raise InputError(f"q (the fraction of units kept per subsample) must be in (0, 1], got {q}")
    if B < 1:
        raise InputError(f"B (the number of subsamples) must be >= 1, got {B}")
    lm = _attention_lm(task)
    heads = heads if isinstance(heads, str) else _check_heads(lm, heads)
    n = task.n_units
    k = min(n, max(1, math.floor(q * n)))
    n_draws = 1 if k == n else int(B)
    if budget is not None:
        budget.check(Cost(), 1)
        if budget.forward_passes is not None:
            n_draws = min(n_draws, budget.forward_passes)
    rng = np.random.default_rng(seed)
    totals, counts = np.zeros(n), np.zeros(n, dtype=int)
    calls = 0
    with measure(task.meter) as cost:
        start = time.perf_counter()
        for _ in range(n_draws):
            kept = np.sort(rng.choice(n, size=k, replace=False))
            keep = np.zeros(n, dtype=bool)
            keep[kept] = True
            units = task.units if k == n else _subsample_units(task.units, keep)
            prompt = task.template.format(context=units.text, query=task.query)
            attn, member = _read(task, prompt, units, heads)
            calls += 1
            token_values = attn.mean(axis=0)
            for j, unit in enumerate(kept):
                vals = np.sort(token_values[member[j]])[::-1][:avg_k]
                totals[unit] += vals.mean()
                counts[unit] += 1
            spent = time.perf_counter() - start
            if budget is not None and budget.seconds is not None and spent > budget.seconds:
                break
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    params = {"avg_k": avg_k, "q": q, "B": B, "heads": _jsonable_heads(heads), "seed": seed}
    return _result(
        task,
        scores,
        "attntrace",
        params,
        _finish(cost, calls),
        subsamples=calls,
        subsample_size=k,
        times_sampled=counts.tolist(),
    )


def _jsonable_heads(heads: Any) -> Any:
    return heads if isinstance(heads, str) else [list(h) for h in heads]


# --------------------------------------------------------------------------- learned heads


def _heads_key(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "_", str(name).lower()).strip("._") or "model"


def heads_path(model: Any) -> Any:
    """The packaged heads file for ``model`` (a LanguageModel or a model name):
    ``attribkit/data/heads/<name>.json`` as an importlib.resources Traversable (may not exist)."""
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    return resources.files("attribkit").joinpath("data", "heads", f"{_heads_key(name)}.json")


def load_heads(model: Any) -> dict[str, Any]:
    """The shipped head selection for ``model`` (a LanguageModel or a model name), as a dict.

    For a LanguageModel the file's model identity (layers, heads per layer) must match the
    model's config. InputError when no file exists, naming :func:`select_heads` as the fix.
    No model calls.
    """
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    path = heads_path(model)
    if not path.is_file():
        raise InputError(
            f"no attention-head file for model {name!r} (looked for {path}). Select heads for it "
            "with attribkit.methods.attention.select_heads(lm, cases) and pass them as "
            "attention_heads(task, heads=spec['heads'], weights=spec['weights']), or write the "
            "file with `python -m attribkit.methods.attention select --model NAME --out FILE`; "
            "or use method 'attntrace' or a perturbation method"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("format") != HEADS_FORMAT or spec.get("version") != HEADS_VERSION:
        raise InputError(f"{path} is not an attribkit heads file of version {HEADS_VERSION}")
    shape = None if isinstance(model, str) else _model_shape(model)
    ident = spec.get("model", {})
    if shape is not None and (ident.get("num_layers"), ident.get("num_heads")) != shape:
        raise InputError(
            f"the heads file for {name!r} was fit on a model with {ident.get('num_layers')} "
            f"layers × {ident.get('num_heads')} heads, but this model has {shape[0]} × "
            f"{shape[1]}; select heads for this model with select_heads(lm, cases)"
        )
    return spec


def attention_heads(
    task: Any,
    *,
    heads: str | Sequence[Sequence[int]] | None = None,
    weights: Sequence[float] | None = None,
    budget: Budget | None = None,
) -> Attribution:
    """AT2-lite: unit score = Σ_h w_h · (attention of head h from the target rows to the unit).

    The feature of head ``h`` for unit ``u`` is the attention summed over ``u``'s tokens and
    averaged over the rows that predict the target tokens (the response, or only the span's), as
    in AT2. With ``heads=None`` the heads and weights come from the model's shipped file
    (:func:`load_heads`; InputError if there is none). ``heads=[(layer, head), ...]`` uses those
    (``weights`` default to equal, 1/len); ``heads="all"`` averages every layer and head (the
    naive baseline). Returns an Attribution over the task's units; ``extras["features"]`` holds
    the per-head unit features. Costs one forward pass.
    """
    check_units(task)
    lm = _attention_lm(task)
    source = "given"
    if heads is None:
        if weights is not None:
            raise InputError("weights= needs heads= (the (layer, head) pairs they weigh)")
        spec = load_heads(lm)
        heads, weights, source = spec["heads"], spec["weights"], f"file:{heads_path(lm).name}"
    head_list = _all_heads(lm) if isinstance(heads, str) and heads == "all" else None
    if isinstance(heads, str) and head_list is None:
        raise InputError(f"heads must be None, 'all' or a list of (layer, head), got {heads!r}")
    head_list = head_list or _check_heads(lm, heads)  # type: ignore[arg-type]
    if weights is None:
        w = np.full(len(head_list), 1.0 / len(head_list))
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != (len(head_list),) or not np.isfinite(w).all():
            raise InputError(
                f"weights must be {len(head_list)} finite numbers, one per head; got {w.shape[0]}"
            )
    if budget is not None:
        budget.check(Cost(), 1)
    with measure(task.meter) as cost:
        features = head_unit_features(task, head_list)
    scores = w @ features
    params = {
        "heads": "all" if heads == "all" else [list(h) for h in head_list],
        "weights": w.tolist(),
        "source": source,
    }
    extras = {"features": features.tolist()} if len(head_list) <= 64 else {}
    return _result(task, scores, "attention_heads", params, _finish(cost, 1), **extras)


# --------------------------------------------------------------------------- head selection


def _case_task(lm: Any, case: Any, template: str | None = None) -> Any:
    from attribkit.tasks.context import PROMPT_TEMPLATE, ContextTask

    sentences = [str(s) for s in case.context]
    return ContextTask(
        lm,
        " ".join(sentences),
        case.query,
        case.response,
        units=sentences,
        template=template or PROMPT_TEMPLATE,
    )


def _ranks(scores: np.ndarray, gold: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores`` [H, n]: hit@1 (top unit is gold) and 1/rank of the best gold unit.
    Ties are broken pessimistically (a gold unit tied with a non-gold unit ranks below it)."""
    g = np.zeros(scores.shape[1], dtype=bool)
    g[list(gold)] = True
    best_gold = np.where(g[None], scores, -np.inf).max(axis=1)
    above = (np.where(g[None], -np.inf, scores) >= best_gold[:, None]).sum(axis=1)
    return (above == 0).astype(float), 1.0 / (above + 1)


def case_features(lm: Any, cases: Sequence[Any], template: str | None = None) -> dict[str, Any]:
    """All-heads features of each case: ``{"features": [[L·H, n] arrays], "gold": [...],
    "heads": [(layer, head), ...], "seconds": [...]}``. One forward pass per case."""
    heads = _all_heads(lm)
    feats, golds, secs = [], [], []
    for case in cases:
        task = _case_task(lm, case, template)
        t0 = time.perf_counter()
        feats.append(head_unit_features(task, heads))
        secs.append(time.perf_counter() - t0)
        golds.append([int(g) for g in case.gold])
    return {"features": feats, "gold": golds, "heads": heads, "seconds": secs}


def evaluate_heads(
    data: dict[str, Any], heads: Sequence[Sequence[int]] | str, weights: Sequence[float] | None
) -> dict[str, float]:
    """P@1, recall of the gold units in the top |gold| and mean reciprocal rank of the best gold
    unit for a weighted head set, on features from :func:`case_features` (no model calls).
    ``heads="all"`` = the plain all-heads average."""
    index = {h: i for i, h in enumerate(data["heads"])}
    if isinstance(heads, str):
        idx = np.arange(len(index))
    else:
        idx = np.array([index[(int(h[0]), int(h[1]))] for h in heads])
    w = np.full(idx.size, 1.0 / idx.size) if weights is None else np.asarray(weights, float)
    hits, rr, recall = [], [], []
    for f, gold in zip(data["features"], data["gold"], strict=True):
        scores = w @ f[idx]
        h, r = _ranks(scores[None], gold)
        hits.append(h[0])
        rr.append(r[0])
        top = np.argsort(-scores, kind="stable")[: len(gold)]
        recall.append(len(set(top.tolist()) & set(gold)) / len(gold))
    return {
        "p_at_1": float(np.mean(hits)),
        "recall_at_gold": float(np.mean(recall)),
        "mrr": float(np.mean(rr)),
        "n_cases": len(hits),
    }


def select_heads(
    lm: Any,
    cases: Sequence[Any],
    n_heads: int = 8,
    *,
    template: str | None = None,
    description: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Choose the attention heads whose attention points at the supporting context units.

    ``cases`` are training cases with ``.context`` (list of sentences = the units), ``.query``,
    ``.response`` and ``.gold`` (indices of the supporting sentences), e.g. from
    :func:`attribkit.tasks.context_cases.make_cases`. For every (layer, head), its AT2 feature
    (attention from the response rows summed over each unit's tokens) ranks the units of each
    case; heads are ordered by P@1 (the top unit is a gold one), ties by the mean reciprocal rank
    of the best-ranked gold unit, and the first ``n_heads`` are kept with equal weights 1/n_heads.

    Returns a JSON-able dict in the format of the shipped heads files (``format``, ``version``,
    ``model`` identity, ``heads``, ``weights``, ``selection`` (criterion, ``description``),
    ``train`` metrics and the top-ranked heads); write it with ``json.dump`` to
    ``attribkit/data/heads/<model name>.json`` to make it the default for ``attention_heads``.
    Costs one forward pass per case (attention of all heads, recomputed from hidden states).
    """
    if n_heads < 1:
        raise InputError(f"n_heads must be >= 1, got {n_heads}")
    cases = list(cases)
    if not cases:
        raise InputError(
            "select_heads needs training cases (with .context, .query, .response, .gold)"
        )
    _attention_lm(_case_task(lm, cases[0], template))
    data = case_features(lm, cases, template)
    heads = data["heads"]
    hits = np.zeros(len(heads))
    rr = np.zeros(len(heads))
    for f, gold in zip(data["features"], data["gold"], strict=True):
        h, r = _ranks(f, gold)
        hits += h
        rr += r
    hits /= len(cases)
    rr /= len(cases)
    order = np.lexsort((-rr, -hits))  # P@1 first, then MRR
    chosen = [heads[i] for i in order[: min(n_heads, len(heads))]]
    weights = [1.0 / len(chosen)] * len(chosen)
    shape = _model_shape(lm)
    return {
        "format": HEADS_FORMAT,
        "version": HEADS_VERSION,
        "model": {
            "name": getattr(lm, "name", None),
            "architecture": type(getattr(lm, "model", lm)).__name__,
            "num_layers": shape[0] if shape else None,
            "num_heads": shape[1] if shape else None,
        },
        "heads": [list(h) for h in chosen],
        "weights": weights,
        "selection": {
            "criterion": "each (layer, head) ranks the units of every training case by its AT2 "
            "feature (attention from the response rows summed over the unit's tokens); heads "
            "sorted by P@1, ties by mean reciprocal rank of the gold unit; top n_heads kept "
            "with equal weights",
            "n_heads": len(chosen),
            "n_cases": len(cases),
            "template": template or _case_task(lm, cases[0]).template,
            "chat": True,
            **(description or {}),
        },
        "train": {
            "selected": evaluate_heads(data, chosen, weights),
            "all_heads": evaluate_heads(data, "all", None),
            "top_heads": [
                {"head": list(heads[i]), "p_at_1": float(hits[i]), "mrr": float(rr[i])}
                for i in order[:20]
            ],
            "seconds_per_case": float(np.mean(data["seconds"])),
        },
    }


# --------------------------------------------------------------------------- command line


def _select_command(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attribkit.models.loading import load
    from attribkit.tasks.context_cases import make_cases

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load(args.model)
    families = [f for f in args.families.split(",") if f]
    train = [c for f in families for c in make_cases(f, args.n_sentences, args.n_cases, args.seed)]
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
    say(f"selecting {args.n_heads} heads of {lm.name} on {len(train)} cases ({families})")
    spec = select_heads(
        lm,
        train,
        args.n_heads,
        description={
            "families": families,
            "n_sentences": args.n_sentences,
            "cases_per_family": args.n_cases,
            "seed": args.seed,
            "generator": "attribkit.tasks.context_cases.make_cases",
            "command": (
                f"python -m attribkit.methods.attention select --model {args.model} "
                f"--families {args.families} --n-sentences {args.n_sentences} "
                f"--n-cases {args.n_cases} --seed {args.seed} --n-heads {args.n_heads} "
                f"--eval {args.eval} --eval-cases {args.eval_cases} --eval-seed {args.eval_seed}"
            ),
        },
    )
    say(f"heads: {spec['heads']}; train {spec['train']['selected']}")
    held_out = []
    for item in args.eval.split(","):
        family, n = item.split(":")
        cases = make_cases(family, int(n), args.eval_cases, args.eval_seed)
        data = case_features(lm, cases)
        row = {
            "family": family,
            "n_sentences": int(n),
            "seed": args.eval_seed,
            "n_cases": len(cases),
            "selected": evaluate_heads(data, spec["heads"], spec["weights"]),
            "all_heads": evaluate_heads(data, "all", None),
            "seconds_per_case_all_heads_pass": float(np.mean(data["seconds"])),
        }
        say(
            f"held out {family} n={n}: selected P@1 {row['selected']['p_at_1']:.2f}, "
            f"all heads {row['all_heads']['p_at_1']:.2f}"
        )
        held_out.append(row)
    spec["held_out"] = held_out
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(dumps_heads(spec))
    say(f"wrote {args.out}")
    return spec


def dumps_heads(spec: dict[str, Any]) -> str:
    """A heads dict as indented JSON with each (layer, head) pair on one line."""
    text = json.dumps(spec, indent=1, ensure_ascii=False)
    return re.sub(r"\[\s+(-?\d+),\s+(-?\d+)\s+\]", r"[\1, \2]", text) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attribkit.methods.attention select --model smollm2 --out FILE``: select heads
    on synthetic cases, evaluate them on held-out cases and write the heads file."""
    parser = argparse.ArgumentParser(prog="python -m attribkit.methods.attention")
    sub = parser.add_subparsers(dest="command", required=True)
    sel = sub.add_parser("select", help="select attention heads for a model and write the file")
    sel.add_argument("--model", default="smollm2")
    sel.add_argument("--out", required=True)
    sel.add_argument("--families", default="needle,birthplace")
    sel.add_argument("--n-sentences", type=int, default=10)
    sel.add_argument("--n-cases", type=int, default=20, help="training cases per family")
    sel.add_argument("--seed", type=int, default=0)
    sel.add_argument("--n-heads", type=int, default=8)
    sel.add_argument(
        "--eval",
        default=(
            "needle:10,birthplace:10,injection:10,two_hop:10,redundant_injection:10,"
            "needle:50,needle:200"
        ),
        help="held-out sets, family:n_sentences, comma-separated",
    )
    sel.add_argument("--eval-cases", type=int, default=20)
    sel.add_argument("--eval-seed", type=int, default=1)
    sel.add_argument("--threads", type=int, default=0)
    sel.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    _select_command(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
