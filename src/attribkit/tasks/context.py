"""Context attribution: which sentences or passages of a context made an LM give its response.

This module holds the task's scorer — the value of a subset of context units is the
log-probability of the response given the prompt rebuilt from those units alone, under the same
chat template the response was generated with — and ``attribute_context`` which runs any
registered perturbation method on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget
from attribkit.core.errors import InputError
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.units import TextUnits

PROMPT_TEMPLATE = "Context: {context}\n\nQuery: {query}"


class ScoringLM(Protocol):
    """What the task needs from a language model (local or behind an HTTP endpoint)."""

    def generate(self, prompt: str, max_new_tokens: int = ...) -> str: ...

    def logprob(self, prompts: Sequence[str] | str, responses: Sequence[str] | str) -> Any: ...


def context_units(context: str | Sequence[str] | TextUnits, units: str = "sentences") -> TextUnits:
    """Split ``context`` into :class:`TextUnits`.

    ``context`` is a string or a list of passages; ``units`` is ``"sentences"`` (offline
    rule-based splitter) or ``"passages"`` (the given list, or blank-line separated paragraphs of a
    string). A ready :class:`TextUnits` is returned unchanged. Costs no model calls.
    """
    if isinstance(context, TextUnits):
        return context
    if isinstance(context, str):
        if not context.strip():
            raise InputError("the context is empty: give the text the response should be traced to")
        if units == "sentences":
            return TextUnits.sentences(context)
        if units == "passages":
            return TextUnits.paragraphs(context)
    else:
        passages = list(context)
        if not passages or not any(str(p).strip() for p in passages):
            raise InputError("the context is empty: give at least one non-empty passage")
        if units == "passages":
            return TextUnits.passages(passages)
        if units == "sentences":
            return TextUnits.sentences("\n\n".join(passages))
    raise InputError(f"unknown units {units!r}: use 'sentences' or 'passages'")


def context_scorer(
    lm: ScoringLM,
    context: str | Sequence[str] | TextUnits,
    query: str,
    response: str | None = None,
    units: str = "sentences",
    template: str = PROMPT_TEMPLATE,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    budget: Budget | None = None,
    progress: Callable[[int], None] | None = None,
) -> Scorer:
    """A :class:`Scorer` whose value for a mask is log p(response | template(kept units, query)).

    ``response=None`` generates it greedily from the full context first (one generation).
    Each evaluated mask costs one forward pass over prompt + response.
    """
    text_units = context_units(context, units)
    if not query or not query.strip():
        raise InputError("the query is empty: give the question the response answers")
    if response is None:
        response = lm.generate(
            template.format(context=text_units.text, query=query), max_new_tokens=max_new_tokens
        )
    if not response.strip():
        raise InputError(
            "the response is empty: there is nothing to attribute; pass response= or a different query"
        )

    def value(contexts: list[str]) -> Any:
        prompts = [template.format(context=c, query=query) for c in contexts]
        return lm.logprob(prompts, response)

    target = {
        "kind": "response_logprob",
        "description": f"log p(response | context, query) with response {response!r}",
        "query": query,
        "response": response,
        "template": template,
        "model": getattr(lm, "name", type(lm).__name__),
    }
    return Scorer(
        text_units, value, target=target, batch_size=batch_size, budget=budget, progress=progress
    )


def attribute_context(
    lm: ScoringLM,
    context: str | Sequence[str] | TextUnits,
    query: str,
    response: str | None = None,
    units: str = "sentences",
    method: str = "loo",
    budget: Budget | None = None,
    **params: Any,
) -> Attribution:
    """Attribute an LM's response to the units of its context with a registered method.

    Returns an Attribution over the context units (``target`` holds the response). Costs one
    generation when ``response`` is None, plus the method's forward passes (``loo``: n + 1).
    """
    scorer = context_scorer(lm, context, query, response, units=units, budget=budget)
    return attribute(scorer, method, **params)
