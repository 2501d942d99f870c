"""Reading a language model's attention for context attribution: which prompt tokens belong to
which unit, and the attention the target rows pay to them.

The attention methods (``attntrace``, ``attention_heads``) and the head selection read the
attention that the rows predicting the response (or the span's tokens) pay to the prompt tokens,
recomputed by :meth:`LanguageModel.attention_rows` from one forward pass, and map prompt tokens
to context units by character overlap (:func:`unit_token_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attribkit.core.cost import Cost
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.units import TextUnits

__all__ = [
    "Head",
    "all_heads",
    "attention_lm",
    "check_heads",
    "head_unit_features",
    "model_shape",
    "read_attention",
    "unit_token_mask",
]

Head = tuple[int, int]


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


def attention_lm(task: Any) -> Any:
    """The task's language model, checked to read attention (``attention_rows``); InputError
    naming the perturbation methods otherwise. No model calls."""
    lm = task.lm
    if not callable(getattr(lm, "attention_rows", None)):
        raise InputError(
            f"attention methods read the model's attention and need a local LanguageModel; "
            f"{type(lm).__name__} has no attention_rows. Use a perturbation method "
            "(e.g. 'loo', 'contextcite') for remote or black-box models"
        )
    return lm


def model_shape(lm: Any) -> tuple[int, int] | None:
    """(layers, query heads per layer) of the LM's model, None if unknown."""
    layers, heads = getattr(lm, "n_layers", None), getattr(lm, "n_heads", None)
    if isinstance(layers, int) and isinstance(heads, int):
        return layers, heads
    cfg = getattr(getattr(lm, "model", None), "config", None)
    layers = getattr(cfg, "num_hidden_layers", None)
    heads = getattr(cfg, "num_attention_heads", None)
    return (int(layers), int(heads)) if layers and heads else None


def all_heads(lm: Any) -> list[Head]:
    """Every (layer, head) of the LM's model, layer-major. No model calls."""
    shape = model_shape(lm)
    if shape is None:
        raise InputError("cannot list the model's heads: its config has no layer/head counts")
    return [(layer, head) for layer in range(shape[0]) for head in range(shape[1])]


def check_heads(lm: Any, heads: Sequence[Sequence[int]]) -> list[Head]:
    """``heads`` as (layer, head) int pairs, checked against the model's shape when known;
    InputError on a malformed, empty or out-of-range list. No model calls."""
    out = []
    for h in heads:
        if len(h) != 2:
            raise InputError(f"a head is a (layer, head) pair, got {h!r}")
        out.append((int(h[0]), int(h[1])))
    if not out:
        raise InputError("no heads given: pass heads=[(layer, head), ...] or heads='all'")
    shape = model_shape(lm)
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


def read_attention(
    task: Any, prompt: str, units: TextUnits, heads: Any
) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass: attention of the target rows, averaged over rows, ``[n_heads, T]``,
    and the unit/token membership ``[n_units, T]``."""
    lm = attention_lm(task)
    attn, spans = lm.attention_rows(prompt, task.response, heads=heads, chat=True)
    if task.meter is not lm:  # an LM without a meter of its own: count its pass on the task's
        task.meter.cost.forward_passes += 1
        task.meter.cost.batches += 1
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
    lm = attention_lm(task)
    heads = heads if isinstance(heads, str) else check_heads(lm, heads)
    attn, member = read_attention(task, task.prompt(), task.units, heads)
    return attn @ member.T.astype(np.float64)


def finish_cost(cost: Cost, calls: int) -> Cost:
    """``cost`` with at least ``calls`` forward passes: an LM adapter that does not meter its
    own passes still reports the calls an attention method made."""
    cost.forward_passes = max(cost.forward_passes, calls)
    return cost
