"""Selecting the attention heads of ``attention_heads`` (AT2-lite) for a model: rank every
(layer, head) by how well its attention points at the supporting context units of training
cases, evaluate a head set on held-out cases, and write the heads file.

The command line is ``attribkit select-heads --model smollm2 --out PATH`` (it runs
:func:`select_and_evaluate_heads` and writes :func:`dumps_heads` of the result).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.methods.context.attention_reading import (
    all_heads,
    attention_lm,
    head_unit_features,
)
from attribkit.methods.context.heads import heads_file_header

__all__ = [
    "DEFAULT_EVAL",
    "case_features",
    "dumps_heads",
    "evaluate_heads",
    "select_and_evaluate_heads",
    "select_heads",
]

#: The held-out sets the shipped heads files are evaluated on, ``family:n_sentences``.
DEFAULT_EVAL = (
    "needle:10,birthplace:10,injection:10,two_hop:10,redundant_injection:10,needle:50,needle:200"
)


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
    heads = all_heads(lm)
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
    attention_lm(_case_task(lm, cases[0], template))
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
    return {
        **heads_file_header(lm),
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


def dumps_heads(spec: dict[str, Any]) -> str:
    """A heads dict as indented JSON with each (layer, head) pair on one line."""
    text = json.dumps(spec, indent=1, ensure_ascii=False)
    return re.sub(r"\[\s+(-?\d+),\s+(-?\d+)\s+\]", r"[\1, \2]", text) + "\n"


def _items(value: str | Sequence[str]) -> list[str]:
    return [v for v in (value.split(",") if isinstance(value, str) else value) if v]


def select_and_evaluate_heads(
    lm: Any,
    *,
    model_name: str | None = None,
    families: str | Sequence[str] = "needle,birthplace",
    n_sentences: int = 10,
    n_cases: int = 20,
    seed: int = 0,
    n_heads: int = 8,
    eval_sets: str | Sequence[str] = DEFAULT_EVAL,
    eval_cases: int = 20,
    eval_seed: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Select ``n_heads`` heads of ``lm`` on synthetic cases and evaluate them on held-out ones:
    the content of a shipped heads file (write it with :func:`dumps_heads`).

    Training cases: ``n_cases`` per family in ``families`` (comma-separated or a list), each of
    ``n_sentences`` sentences, from :func:`attribkit.tasks.context_cases.make_cases` with
    ``seed``. Held-out sets: ``eval_sets`` items ``family:n_sentences`` (comma-separated or a
    list), ``eval_cases`` cases each with ``eval_seed``; each gets a row in ``spec["held_out"]``
    with the selected heads' and the all-heads metrics (:func:`evaluate_heads`). The selection
    records the ``attribkit select-heads`` command that reproduces it (``model_name``: the
    ``--model`` given, default ``lm.name``). ``log`` receives progress lines.

    Returns the spec dict of :func:`select_heads` plus ``held_out``. Costs one forward pass per
    training and per held-out case.
    """
    from attribkit.tasks.context_cases import make_cases

    say = log or (lambda _message: None)
    fams = _items(families)
    evals = _items(eval_sets)
    for item in evals:
        if item.count(":") != 1 or not item.split(":")[1].isdigit():
            raise InputError(f"a held-out set is family:n_sentences (e.g. needle:10), got {item!r}")
    train = [c for f in fams for c in make_cases(f, n_sentences, n_cases, seed)]
    say(f"selecting {n_heads} heads of {lm.name} on {len(train)} cases ({fams})")
    spec = select_heads(
        lm,
        train,
        n_heads,
        description={
            "families": fams,
            "n_sentences": n_sentences,
            "cases_per_family": n_cases,
            "seed": seed,
            "generator": "attribkit.tasks.context_cases.make_cases",
            "command": (
                f"attribkit select-heads --model {model_name or lm.name} "
                f"--families {','.join(fams)} --n-sentences {n_sentences} "
                f"--n-cases {n_cases} --seed {seed} --n-heads {n_heads} "
                f"--eval {','.join(evals)} --eval-cases {eval_cases} --eval-seed {eval_seed}"
            ),
        },
    )
    say(f"heads: {spec['heads']}; train {spec['train']['selected']}")
    held_out = []
    for item in evals:
        family, n = item.split(":")
        cases = make_cases(family, int(n), eval_cases, eval_seed)
        data = case_features(lm, cases)
        row = {
            "family": family,
            "n_sentences": int(n),
            "seed": eval_seed,
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
    return spec
