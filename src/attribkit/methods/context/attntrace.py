"""AttnTrace: attention averaged over all layers and heads, with top-K token averaging and
context subsampling (Wang, Geng, Chen, Jia, 'AttnTrace: Attention-based Context Traceback for
Long-Context LLMs', 2025).

On SmolLM2-135M-Instruct the plain all-heads average (and so AttnTrace) falls on an attention
sink when distractor sentences share the needle's shape; a handful of selected heads
(``attention_heads``) do not (the measured numbers are in the shipped heads file, under
``held_out``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.core.units import TextUnits
from attribkit.methods.context.attention_reading import (
    attention_lm,
    check_heads,
    read_attention,
)

__all__ = ["attntrace"]


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
    lm = attention_lm(task)
    heads = heads if isinstance(heads, str) else check_heads(lm, heads)
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
            attn, member = read_attention(task, prompt, units, heads)
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
    return task.result(  # type: ignore[no-any-return]
        scores,
        "attntrace",
        params,
        cost,
        subsamples=calls,
        subsample_size=k,
        times_sampled=counts.tolist(),
    )


def _jsonable_heads(heads: Any) -> Any:
    return heads if isinstance(heads, str) else [list(h) for h in heads]
