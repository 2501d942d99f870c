"""Context attribution: which sentences or passages of a context made an LM give its response.

A :class:`ContextTask` holds one question — an LM, a context split into units, a query, the
response (given or generated) and optionally a span of it (a LAQuer-style localized query). The
value of a subset of units is the log-probability of the response (or of the span, given the
prompt and the response before it) when the prompt is rebuilt from those units alone, under the
same chat template the response was generated with. Removing a unit deletes its text.

Per-token log-probabilities are cached per prompt, so a second span query on the same masks costs
no model calls; with a local :class:`~attribkit.models.lm.LanguageModel` the key-value cache of
the full prompt is reused for the prefix every masked prompt shares with it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, CostMeter
from attribkit.core.errors import InputError
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.segment import sentence_spans
from attribkit.core.task import Task
from attribkit.core.units import TextUnits
from attribkit.tasks.prompt_scores import PromptLogprobs, lm_meter

PROMPT_TEMPLATE = "Context: {context}\n\nQuery: {query}"
DEFAULT_METHOD = "auto"

Value = Literal["logprob", "logit_prob"]


class ScoringLM(Protocol):
    """What the task needs from a language model (local or behind an HTTP endpoint)."""

    def generate(self, prompt: str, max_new_tokens: int = ...) -> str: ...

    def token_logprobs(self, prompts: Sequence[str], responses: Sequence[str] | str) -> Any: ...


def context_units(
    context: str | Sequence[str] | TextUnits, units: str | Sequence[str] = "sentences"
) -> TextUnits:
    """Split ``context`` into :class:`TextUnits` with exact character offsets (no model calls).

    ``context`` is a string or a list of passages (joined by blank lines). ``units`` is
    ``"sentences"`` (offline rule-based splitter), ``"passages"`` (the given list, or the
    blank-line separated paragraphs of a string), or an explicit list of unit strings that occur
    in the context in order. A ready :class:`TextUnits` is returned unchanged.
    """
    if isinstance(context, TextUnits):
        return context
    if isinstance(context, str):
        text = context
        if not text.strip():
            raise InputError("the context is empty: give the text the response should be traced to")
    else:
        passages = [str(p) for p in context]
        if not passages or not any(p.strip() for p in passages):
            raise InputError("the context is empty: give at least one non-empty passage")
        if isinstance(units, str) and units == "passages":
            return TextUnits.passages(passages)
        text = "\n\n".join(passages)
    if isinstance(units, str):
        if units == "sentences":
            return TextUnits.sentences(text)
        if units == "passages":
            return TextUnits.paragraphs(text)
        raise InputError(
            f"unknown units {units!r}: use 'sentences', 'passages' or a list of strings"
        )
    spans, pos = [], 0
    for i, unit in enumerate(units):
        start = text.find(unit, pos) if unit else -1
        if start < 0:
            raise InputError(
                f"unit {i} ({unit[:40]!r}) does not occur in the context after the previous unit; "
                "explicit units must be substrings of the context, in order, without overlap"
            )
        spans.append((start, start + len(unit)))
        pos = start + len(unit)
    return TextUnits(text, spans)


def resolve_span(response: str, span: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """Character range ``(start, end)`` of ``span`` in ``response`` (None = the whole response)."""
    if span is None:
        return None
    if isinstance(span, str):
        if not span.strip():
            raise InputError("the span is empty: pass a claim (a substring of the response)")
        start = response.find(span)
        if start < 0:
            raise InputError(
                f"the span {span!r} is not in the response {response!r}; "
                "pass an exact substring of the response or a (start, end) character range"
            )
        return start, start + len(span)
    start, end = (int(x) for x in span)
    if not 0 <= start < end <= len(response):
        raise InputError(
            f"span range ({start}, {end}) is not inside the response (length {len(response)}); "
            "pass 0 <= start < end <= len(response)"
        )
    return start, end


class ContextTask(Task):
    """One context-attribution question, ready to be attributed by any method (task kind
    ``"context"``: the context methods, and every perturbation method on :meth:`scorer`).

    Args:
        lm: a language model with ``generate`` and ``token_logprobs`` (``LanguageModel``,
            ``OpenAICompatibleLM``).
        context: a string or a list of passages.
        query: the question the response answers.
        response: the response to attribute; ``None`` generates it greedily from the full context
            (one generation, bounded by ``max_new_tokens``, stops at end of turn).
        units: ``"sentences"``, ``"passages"`` or an explicit list of unit strings.
        span: a substring or ``(start, end)`` character range of the response; the target becomes
            the log-probability of that span given the prompt and the response before it.
        template: how the user message is built from the kept context and the query.
    """

    def __init__(
        self,
        lm: ScoringLM,
        context: str | Sequence[str] | TextUnits,
        query: str,
        response: str | None = None,
        units: str | Sequence[str] = "sentences",
        span: str | tuple[int, int] | None = None,
        template: str = PROMPT_TEMPLATE,
        max_new_tokens: int = 64,
        batch_size: int = 8,
    ) -> None:
        self.lm, self.template, self.batch_size = lm, template, batch_size
        self._meter = lm_meter(lm)
        self.units = context_units(context, units)
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty: give the question the response answers")
        self.query = query
        self._check_window(response or "")
        if response is None:
            response = lm.generate(self.prompt(), max_new_tokens=max_new_tokens)
        if not response or not response.strip():
            raise InputError(
                "the response is empty: there is nothing to attribute; pass response= or a different query"
            )
        self.response = response
        self._check_window(response)
        self.span = resolve_span(response, span)
        self._span_mask: np.ndarray | None = None
        # one pass over the full prompt: its key-value cache serves every masked prompt's prefix
        self._scores = PromptLogprobs(lm, response, self.prompt(), self._meter)

    kind = "context"

    @property
    def meter(self) -> CostMeter:
        """The LM's own meter when it has one (every scored prompt is counted there), else the
        task's."""
        return self._meter  # type: ignore[return-value]

    @property
    def target_info(self) -> dict[str, Any]:
        """The default target: the response's (or span's) log-probability."""
        return self.target()

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """:meth:`scorer` for the default log-probability target; takes ``budget`` from
        ``params``."""
        return self.scorer(budget=params.pop("budget", None))

    # --- prompts --------------------------------------------------------------------------------
    @property
    def n_units(self) -> int:
        return len(self.units)

    def prompt(self, mask: Any = None) -> str:
        """The user message built from the units kept by ``mask`` (all units when None)."""
        context = self.units.text if mask is None else self.units.compose(mask)
        return self.template.format(context=context, query=self.query)

    def _check_window(self, response: str) -> None:
        window = getattr(self.lm, "max_positions", None)
        count = getattr(self.lm, "count_tokens", None)
        if not window or count is None:
            return
        query_tokens = count(self.query, None)
        if query_tokens >= window:
            raise InputError(
                f"the query alone takes {query_tokens} tokens but the model's window is {window}; "
                "shorten the query"
            )
        total = count(self.prompt(), response or None)
        if total > window:
            raise InputError(
                f"prompt and response take {total} tokens but the model's window is {window} "
                f"tokens; shorten the context by about {total - window} tokens (drop passages, or "
                "attribute chunks of it separately), or use a model with a longer window"
            )

    # --- values ---------------------------------------------------------------------------------
    @property
    def span_token_mask(self) -> np.ndarray:
        """Which response tokens the target covers (all of them without a span)."""
        if self._span_mask is None:
            spans = self._token_spans()
            if self.span is None:
                self._span_mask = np.ones(len(spans), dtype=bool)
            else:
                a, b = self.span
                self._span_mask = np.array([s < b and e > a for s, e in spans], dtype=bool)
                if not self._span_mask.any():
                    raise InputError(f"the span {self.span} covers no token of the response")
        return self._span_mask

    def _token_spans(self) -> list[tuple[int, int]]:
        spans_fn = getattr(self.lm, "response_token_spans", None)
        if spans_fn is not None:
            return list(spans_fn(self.response))
        if self.span is not None:
            raise InputError(
                f"{type(self.lm).__name__} cannot map response characters to tokens, so span "
                "queries are not available with it"
            )
        return [(0, len(self.response))] * len(self.token_logprobs([self.prompt()])[0])

    def token_logprobs(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Per-token log-probabilities of the whole response after each prompt, cached per prompt.

        Costs one forward pass per prompt not seen before by this task.
        """
        return self._scores(prompts)

    def values(self, contexts: Sequence[str], value: Value = "logprob") -> np.ndarray:
        """The target value after each composed context: summed log-probability of the span
        (``"logprob"``), or ContextCite's logit-probability log P − log(1 − P) (``"logit_prob"``)."""
        prompts = [self.template.format(context=c, query=self.query) for c in contexts]
        mask = self.span_token_mask
        logp = np.array([lp[mask].sum() for lp in self.token_logprobs(prompts)])
        if value == "logprob":
            return logp
        if value == "logit_prob":
            # log(1 − P) with P = exp(logp) < 1, computed stably.
            return logp - np.log(-np.expm1(np.minimum(logp, -1e-12)))
        raise InputError(f"unknown value {value!r}: use 'logprob' or 'logit_prob'")

    @property
    def n_span_tokens(self) -> int:
        return int(self.span_token_mask.sum())

    def target(self, value: Value = "logprob") -> dict[str, Any]:
        """JSON description of what is explained (stored in every Attribution)."""
        what = "log p" if value == "logprob" else "logit p"
        span_text = None if self.span is None else self.response[self.span[0] : self.span[1]]
        desc = f"{what}(response | context, query) with response {self.response!r}"
        if span_text is not None:
            desc = f"{what}(span {span_text!r} | context, query, response before it)"
        return {
            "kind": "response_logprob" if value == "logprob" else "response_logit_prob",
            "description": desc,
            "query": self.query,
            "response": self.response,
            "span": None if self.span is None else list(self.span),
            "span_text": span_text,
            "template": self.template,
            "model": getattr(self.lm, "name", type(self.lm).__name__),
        }

    def scorer(
        self,
        value: Value = "logprob",
        budget: Budget | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Scorer:
        """A mask :class:`Scorer` over the context units for this task's target.

        Forward passes are counted on the task's :attr:`meter`, so prompts answered from the
        task's cache cost nothing.
        """
        return Scorer(
            self.units,
            lambda contexts: self.values(contexts, value),
            target=self.target(value),
            batch_size=self.batch_size,
            budget=budget,
            progress=progress,
            meter=self._meter,
            task_kind=self.kind,
        )

    def attribute(
        self, method: str = DEFAULT_METHOD, budget: Budget | None = None, **params: Any
    ) -> Attribution:
        """Run a context method, or a perturbation method on :meth:`scorer`, on this task
        (:func:`attribkit.attribute`); ``budget`` caps its forward passes."""
        if budget is not None:
            params["budget"] = budget
        return attribute(self, method, **params)

    def with_span(self, span: str | tuple[int, int] | None) -> ContextTask:
        """The same question with another target span; shares this task's per-prompt cache, so
        re-attributing with the same masks (same method and seed) costs no model calls."""
        other = copy.copy(self)
        other.span = resolve_span(self.response, span)
        other._span_mask = None
        return other

    def sentence_spans(self) -> list[tuple[int, int]]:
        """Character ranges of the response's sentences (offline splitter; no model calls)."""
        return list(sentence_spans(self.response))

    def attribute_spans(
        self,
        method: str = DEFAULT_METHOD,
        spans: Sequence[str | tuple[int, int]] | None = None,
        budget: Budget | None = None,
        **params: Any,
    ) -> list[Attribution]:
        """One Attribution per span of the response — by default each sentence, when the
        response has more than one (a single sentence is the whole-response attribution).

        Costs the method's model calls per span, minus every prompt this task already scored:
        perturbation methods with the same masks (same method and seed) cost no new passes.
        """
        if spans is None:
            spans = self.sentence_spans()
            if len(spans) < 2:
                return []
        return [self.with_span(s).attribute(method, budget=budget, **params) for s in spans]

    @classmethod
    def from_attribution(cls, lm: ScoringLM, attribution: Attribution) -> ContextTask:
        """The task a stored context Attribution answered (same units, query, response and
        template), on ``lm`` — e.g. to run a new span query on a stored run. No model calls."""
        target, text = attribution.target, attribution.input.get("text")
        if not isinstance(target, dict) or "response" not in target or not isinstance(text, str):
            raise InputError(
                "this Attribution is not a context attribution (its target has no response or "
                "its input no text); only attribute_context results can be re-opened as a task"
            )
        units = TextUnits(
            text,
            [(int(u.start), int(u.end)) for u in attribution.units],  # type: ignore[arg-type]
            removal=attribution.input.get("removal", "delete"),
        )
        return cls(
            lm,
            units,
            target["query"],
            target["response"],
            template=target.get("template", PROMPT_TEMPLATE),
        )

    def __repr__(self) -> str:
        return (
            f"ContextTask({self.n_units} units, query={self.query!r}, response={self.response!r}, "
            f"span={self.span})"
        )


def context_scorer(
    lm: ScoringLM,
    context: str | Sequence[str] | TextUnits,
    query: str,
    response: str | None = None,
    units: str | Sequence[str] = "sentences",
    span: str | tuple[int, int] | None = None,
    budget: Budget | None = None,
    progress: Callable[[int], None] | None = None,
    **task_options: Any,
) -> Scorer:
    """A :class:`Scorer` for ``ContextTask(lm, context, query, response, units, span)``.

    Each new mask costs one forward pass over prompt + response; generating the response (when
    ``response`` is None) costs one generation.
    """
    task = ContextTask(lm, context, query, response, units=units, span=span, **task_options)
    return task.scorer(budget=budget, progress=progress)


def attribute_context(
    lm: ScoringLM,
    context: str | Sequence[str] | TextUnits,
    query: str,
    response: str | None = None,
    units: str | Sequence[str] = "sentences",
    method: str = DEFAULT_METHOD,
    span: str | tuple[int, int] | None = None,
    budget: Budget | None = None,
    **params: Any,
) -> Attribution:
    """Attribute an LM's response (or a span of it) to the units of its context.

    Returns an Attribution over the context units; its ``target`` holds the query, response and
    span. Costs one generation when ``response`` is None, plus the method's model calls (see
    ``attribkit methods``; ``loo``: n + 1 forward passes).
    """
    task = ContextTask(lm, context, query, response, units=units, span=span)
    return task.attribute(method, budget=budget, **params)
