"""Explain an Attribution in words: a model-free template, or an instruction to a language model.

Feldhus et al., 'Saliency Map Verbalization: Comparing Feature Importance Representations from
Model-free and Instruction-based Methods', 2023. Their template verbalisations are faithful to
the scores by construction but rated less helpful; instruction-based ones (an LLM given the
scores) were rated most helpful but do not reliably follow the numbers. ``mode="template"`` is
the former (deterministic, no model calls); ``mode="llm"`` the latter (one generation; treat
its text as an unverified narrative and check it against the scores).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError

Mode = Literal["template", "llm"]

_LABEL_WIDTH = 40
_ROWS_SHOWN = 3


def _quote(label: str, width: int = _LABEL_WIDTH) -> str:
    """A unit label in double quotes, newlines/tabs/quotes escaped, truncated to ``width``."""
    s = label if len(label) <= width else label[: width - 3] + "..."
    return json.dumps(s, ensure_ascii=False)


def _fmt(x: float) -> str:
    return f"{x:+.3g}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _what(attribution: Attribution) -> str:
    """What was explained, in words, from the target (generation, context or anything else)."""
    t = attribution.target
    if isinstance(t, dict):
        response = t.get("response")
        if t.get("kind") == "generation" and isinstance(response, str):
            labels = t.get("row_labels") or []
            which = "tokens" if t.get("span") is None else "tokens of the span"
            what = f"the {len(labels)} generated {which} of the response {_quote(response, 60)}"
            if t.get("foil") is not None:
                what += f" (contrasted with the foil {_quote(str(t['foil']), 40)})"
            return what
        if t.get("span_text"):
            return f"the span {_quote(str(t['span_text']), 60)} of the response"
        if isinstance(response, str):
            return f"the response {_quote(response, 60)}"
        if "description" in t:
            return str(t["description"])
    if t is None:
        return "the model's output"
    return f"the target {_quote(str(t), 60)}"


def _row_sentence(attribution: Attribution) -> str | None:
    """For rows × units: the most influential unit of each of the first few rows."""
    scores = np.asarray(attribution.scores, dtype=float)
    if scores.ndim != 2:
        return None
    t = attribution.target if isinstance(attribution.target, dict) else {}
    labels = list(t.get("row_labels") or [f"row {i}" for i in range(scores.shape[0])])
    parts = []
    for i, row in enumerate(scores[:_ROWS_SHOWN]):
        if not np.isfinite(row).any():
            continue
        j = int(np.nanargmax(row))
        label = labels[i] if i < len(labels) else f"row {i}"
        parts.append(f"{_quote(label, 20)} ← {_quote(attribution.units[j].label, 20)}")
    if not parts:
        return None
    more = scores.shape[0] - min(scores.shape[0], _ROWS_SHOWN)
    tail = f" ({more} more generated tokens not listed)" if more > 0 else ""
    return f"Most influential input per generated token: {'; '.join(parts)}{tail}."


def _template(attribution: Attribution, k: int) -> str:
    att = attribution
    v = att.vector
    scored = np.flatnonzero(np.isfinite(v))
    n, n_scored = len(v), len(scored)
    kind = att.input.get("kind") or ""
    unit_word = kind if kind.endswith("s") else f"{kind} units".strip()
    method = att.method
    cost = att.cost
    cost_s = f"{cost.model_calls} model calls ({cost})"
    sentences: list[str] = []
    what = _what(att)
    if np.asarray(att.scores).ndim == 2:
        rows = att.scores.shape[0]
        sentences.append(
            f"The method {method!r} explains {what} over {n} {unit_word}; each unit's score "
            f"is summed over the {rows} rows (generated tokens)."
        )
    else:
        sentences.append(f"The method {method!r} explains {what} over {n} {unit_word}.")
    if n_scored == 0:
        sentences.append("It scored none of the units, so nothing can be said about them.")
        sentences.append(f"Cost: {cost_s}.")
        return " ".join(sentences)

    order = [int(i) for i in att.ranking if np.isfinite(v[int(i)])]
    x = v[scored]
    positive = float(x[x > 0].sum())
    top = order[: max(1, min(int(k), n_scored))]
    if positive > 0:
        top = [i for i in top if v[i] > 0] or top[:1]
        named = [f"{_quote(att.units[i].label)} ({_pct(v[i] / positive)})" for i in top]
        sentences.append(
            f"Most important: {named[0]}"
            + (f", then {_join(named[1:])}" if len(named) > 1 else "")
            + " of the total positive score."
        )
        if len(top) > 1:
            share = float(sum(v[i] for i in top)) / positive
            sentences.append(
                f"Together these {len(top)} units carry {_pct(share)} of the positive score."
            )
    else:
        sentences.append(
            f"No unit has a positive score; the highest is {_quote(att.units[top[0]].label)} "
            f"({_fmt(float(v[top[0]]))})."
        )
    negative = [i for i in order if v[i] < 0]
    if negative:
        worst = min(negative, key=lambda i: (v[i], i))
        sentences.append(
            f"{len(negative)} unit{'s' if len(negative) != 1 else ''} push"
            f"{'' if len(negative) != 1 else 'es'} against the target; the strongest is "
            f"{_quote(att.units[worst].label)} ({_fmt(float(v[worst]))})."
        )
    else:
        sentences.append("No unit pushes against the target.")
    if n_scored < n:
        missing = n - n_scored
        verb = "was" if missing == 1 else "were"
        sentences.append(f"{missing} of the {n} units {verb} not scored.")
    row = _row_sentence(att)
    if row:
        sentences.append(row)
    sentences.append(f"Cost: {cost_s}.")
    return " ".join(sentences)


def _llm_prompt(attribution: Attribution, k: int) -> str:
    """A short instruction with the top-k units and their scores (fits a 135M model)."""
    v = attribution.vector
    order = [int(i) for i in attribution.ranking if np.isfinite(v[int(i)])][: max(1, int(k))]
    lines = [f"{_quote(attribution.units[i].label, 30)}: {v[i]:.2f}" for i in order]
    return (
        f"An attribution method ({attribution.method}) scored how much each input part "
        f"mattered for {_what(attribution)}. Higher means more important.\n"
        + "\n".join(lines)
        + "\nIn 2-3 sentences, explain from these scores why the model produced this output."
    )


def explain(
    attribution: Attribution,
    *,
    mode: Mode = "template",
    lm: Any = None,
    k: int = 3,
    max_new_tokens: int = 96,
) -> str:
    """A natural-language explanation of ``attribution``.

    ``mode="template"`` (model-free, deterministic, no model calls): names the ``k`` top units
    (quoted, newlines escaped) with their share of the total positive score, says whether any
    unit pushes against the target (negative score), how many units were unscored (NaN), what
    was explained and by which method at what cost. For rows × units (token attribution of
    generated text) it explains the column sums and names the most influential input token of
    the first few generated tokens.

    ``mode="llm"`` (instruction-based): sends the top-``k`` units and scores with a short
    instruction to ``lm`` (any object with ``.generate(prompt, max_new_tokens=...)``, e.g. a
    :class:`LanguageModel` or :class:`OpenAICompatibleLM`; default: the bundled SmolLM2, loaded
    with ``attribkit.models.load("smollm2")``) and returns its text. Costs one generation (up to
    ``max_new_tokens`` forward passes, counted on ``lm.cost``). The text is an unverified
    narrative: LLM verbalisations need not follow the numbers (Feldhus et al., 2023).
    """
    if not isinstance(attribution, Attribution):
        raise InputError(f"explain() needs an Attribution, got {type(attribution).__name__}")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if mode == "template":
        return _template(attribution, int(k))
    if mode == "llm":
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if lm is None:
            from attribkit.models import load

            lm = load("smollm2")
        if not callable(getattr(lm, "generate", None)):
            raise InputError(
                f"{type(lm).__name__} has no generate(prompt, max_new_tokens=...); pass a "
                "LanguageModel or OpenAICompatibleLM as lm="
            )
        text = lm.generate(_llm_prompt(attribution, int(k)), max_new_tokens=max_new_tokens)
        return str(text).strip()
    raise InputError(f"unknown mode {mode!r}: use 'template' or 'llm'")


__all__ = ["explain"]
