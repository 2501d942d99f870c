"""Token attribution for generated text: which input tokens drove each generated token.

A :class:`GenerationTask` holds one prompt and its response as token ids (the chat-formatted
prompt followed by the response tokens, scored teacher-forced: one forward pass gives every
generated token's logits). Its *rows* are the generated tokens (or those of a span of the
response), its *columns* the input tokens: the user prompt's tokens, then the generated tokens
(row ``t`` can only depend on columns before it; later ones are NaN). Chat-template tokens are
kept as they are and belong to no column.

The value of row ``t`` is its *target*: ``"logprob"`` (default), ``"prob"`` or ``"logit"`` of
the generated token, or — with ``foil`` — the contrast of that quantity between the generated
token and the foil token aligned with it (``log p(y_t) − log p(foil_t)``): a contrastive target.
Every generation method (see ``attribkit methods``, kind ``generation``) reads the same target.
"""

from __future__ import annotations

import copy
import functools
import warnings
import weakref
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import attribute
from attribkit.core.segment import sentence_spans
from attribkit.core.task import Task
from attribkit.core.units import TextUnits, Unit, Units

Target = Literal["logprob", "prob", "logit"]
TARGETS = ("logprob", "prob", "logit")
SEPARATOR = "\n"  # between the prompt and the response in the columns' combined text
DEFAULT_METHOD = "integrated_gradients"
# Per model: does a cached chat-template prefix reproduce its full forward pass? (Checked the
# first time a model is used; see GenerationTask._build_template_cache.)
_PREFIX_CACHE_OK: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


class GenerationTask(Task):
    """One generation to explain, token by token, on a local :class:`LanguageModel` (task kind
    ``"generation"``: its units are the columns, its scores rows × columns).

    Args:
        lm: a local ``LanguageModel`` (token attribution needs the model's logits; gradient
            methods also need its embeddings).
        prompt: the user prompt (chat-formatted unless ``chat=False``).
        response: the text to explain; ``None`` generates it greedily (``max_new_tokens``).
        target: ``"logprob"``, ``"prob"`` or ``"logit"`` of each generated token.
        foil: a contrastive alternative aligned token by token with the rows (the response, or
            the span): each row's value becomes target(generated) − target(foil token).
        span: attribute only the response tokens overlapping this substring or character range.
    """

    def __init__(
        self,
        lm: Any,
        prompt: str,
        response: str | None = None,
        *,
        target: Target = "logprob",
        foil: str | None = None,
        span: str | tuple[int, int] | None = None,
        chat: bool = True,
        system: str | None = None,
        max_new_tokens: int = 16,
    ) -> None:
        if not hasattr(lm, "model") or not hasattr(lm, "_prompt_offsets"):
            raise InputError(
                f"token attribution needs a local LanguageModel (its logits and embeddings); "
                f"{type(lm).__name__} is a black box. Load one with attribkit.load(...), or "
                "attribute sentences of a context with attribute_context(..., method='loo')"
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("the prompt is empty: give the text whose tokens to attribute")
        if target not in TARGETS:
            raise InputError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
        self.lm, self.prompt, self.target_kind, self.chat, self.system = (
            lm,
            prompt,
            target,
            chat,
            system,
        )
        if response is None:
            response = lm.generate(prompt, max_new_tokens=max_new_tokens, chat=chat, system=system)
            if not response:
                raise InputError(
                    "the model generated an empty response; pass response= or another prompt"
                )
        if not isinstance(response, str) or not response.strip():
            raise InputError("the response is empty: pass the text to explain")
        self.response = response
        self.prompt_ids, prompt_spans = lm._prompt_offsets(prompt, chat, system)
        self.response_ids = lm._response_ids(response)
        self.tokenization_note = self._check_tokenization()
        token_unit, prompt_units = lm._token_units(prompt, prompt_spans)
        resp_spans = lm.response_token_spans(response)
        self.response_spans = resp_spans
        self._build_columns(token_unit, prompt_units, resp_spans)
        self.rows = self._rows_for(span, resp_spans)
        self.span = None if span is None else _char_range(response, span)
        self.foil = foil
        self.foil_ids = None if foil is None else self._foil_ids(foil)
        # the chat template before the first column: its key/value cache is built on first use
        first = next((p for p, u in enumerate(self.position_unit) if u >= 0), 0)
        self._prefix_len = first if _PREFIX_CACHE_OK.get(lm.model, True) else 0
        self._prefix_kv: Any = None
        self._template: tuple[torch.Tensor, torch.Tensor] | None = None
        self._meter = lm if isinstance(getattr(lm, "cost", None), Cost) else CostMeter()

    kind = "generation"

    @property
    def units(self) -> Units:
        """The columns: the user prompt's tokens (or units), then the generated tokens."""
        return self.columns

    @property
    def meter(self) -> CostMeter:
        """The LM's meter (``lm.cost``): every pass a generation method runs is counted there."""
        return self._meter  # type: ignore[return-value]

    @property
    def target_info(self) -> dict[str, Any]:
        """What each row explains (see :meth:`target`)."""
        return self.target()

    # --- tokens, columns, rows ------------------------------------------------------------------
    def _check_tokenization(self) -> str | None:
        """Tokens are prompt ids + response ids tokenized alone (what generation produced and
        what token_logprobs scores). Say so when the joint text would tokenize differently."""
        tok = self.lm.tokenizer
        text = tok.decode(self.prompt_ids) + self.response
        joint = tok(text, add_special_tokens=False)["input_ids"]
        if list(joint) == self.prompt_ids + self.response_ids:
            return None
        note = (
            "the response tokenizes differently after the prompt than alone; attribkit scores "
            "the prompt's tokens followed by the response's own tokens (as generation produces "
            "them), so each row is one token of the response as tokenized alone"
        )
        warnings.warn(note, stacklevel=3)
        return note

    def _build_columns(
        self, token_unit: list[int], prompt_units: TextUnits, resp_spans: list[tuple[int, int]]
    ) -> None:
        n_p = len(prompt_units)
        offset = len(self.prompt) + len(SEPARATOR)
        tok = self.lm.tokenizer
        units = [
            Unit(u.index, u.label, u.start, u.end, meta={"role": "prompt"}) for u in prompt_units
        ]
        # Every generated token but the last is an input of a later row.
        for k, (s, e) in enumerate(resp_spans[:-1]):
            label = tok.decode([self.response_ids[k]])
            units.append(
                Unit(n_p + k, label, offset + s, offset + e, meta={"role": "response", "token": k})
            )
        self.n_prompt_units = n_p
        self.columns = Units(units)
        self.columns.kind = "tokens"
        # Column of each input position (-1: chat template, and the last response token).
        self.position_unit = token_unit + [
            n_p + k if k < len(self.response_ids) - 1 else -1 for k in range(len(self.response_ids))
        ]

    def _rows_for(
        self, span: str | tuple[int, int] | None, resp_spans: list[tuple[int, int]]
    ) -> list[int]:
        if span is None:
            return list(range(len(self.response_ids)))
        a, b = _char_range(self.response, span)
        rows = [k for k, (s, e) in enumerate(resp_spans) if s < b and e > a]
        if not rows:
            raise InputError(f"the span ({a}, {b}) covers no token of the response")
        return rows

    def _foil_ids(self, foil: str) -> list[int]:
        if not isinstance(foil, str) or not foil:
            raise InputError("the foil is empty: pass the alternative text to contrast with")
        ids = self.lm._response_ids(foil)
        if len(ids) != len(self.rows):
            tok = self.lm.tokenizer
            raise InputError(
                f"the foil {foil!r} has {len(ids)} tokens {[tok.decode([i]) for i in ids]} but "
                f"{len(self.rows)} rows are attributed "
                f"{[tok.decode([self.response_ids[r]]) for r in self.rows]}; a contrastive foil "
                "is aligned token by token: pass a foil with as many tokens, or a span= of the "
                "response with as many tokens as the foil"
            )
        return ids

    @property
    def ids(self) -> list[int]:
        """Prompt ids (chat template included) followed by the response ids."""
        return self.prompt_ids + self.response_ids

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def n_units(self) -> int:
        return len(self.columns)

    def row_labels(self) -> list[str]:
        tok = self.lm.tokenizer
        return [tok.decode([self.response_ids[r]]) for r in self.rows]

    def visible(self) -> np.ndarray:
        """(rows × columns) bool: which columns row ``t`` can depend on (causal order)."""
        vis = np.ones((self.n_rows, self.n_units), dtype=bool)
        for i, r in enumerate(self.rows):
            vis[i, self.n_prompt_units + r :] = False
        return vis

    # --- the target, batched --------------------------------------------------------------------
    def row_values(self, logits: torch.Tensor) -> torch.Tensor:
        """Target value of every row from the logits that predict the response: ``logits`` is
        (B, T_response, V) (position k predicts response token k); returns (B, rows)."""
        rows = torch.tensor(self.rows, device=logits.device)
        lg = logits[:, rows].float()
        y = torch.tensor([self.response_ids[r] for r in self.rows], device=logits.device)
        value = self._value(lg, y)
        if self.foil_ids is not None:
            value = value - self._value(lg, torch.tensor(self.foil_ids, device=logits.device))
        if not torch.isfinite(value).all():
            raise ScorerError(
                "the model gave a non-finite target (NaN/inf logits); check the model's weights"
            )
        return value

    def _value(self, lg: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        idx = ids.expand(lg.shape[0], -1)[..., None]
        if self.target_kind == "logit":
            return lg.gather(-1, idx)[..., 0]
        logp = torch.log_softmax(lg, dim=-1).gather(-1, idx)[..., 0]
        return logp if self.target_kind == "logprob" else logp.exp()

    def forward_embeds(self, xb: torch.Tensor) -> torch.Tensor:
        """Row values (B, rows) for a batch of input embeddings (B, positions, d); differentiable.
        Counts nothing (callers count passes)."""
        return self.row_values(self._logits(embeds=xb.to(self.lm.dtype))[:, :-1])

    def forward_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, response tokens, V) predicting each response position, for a batch of token
        id sequences (B, positions); no gradient. Counts nothing (callers count passes)."""
        with torch.no_grad():
            return self._logits(ids=ids)[:, :-1]

    def _logits(
        self, *, ids: torch.Tensor | None = None, embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits at the last ``response + 1`` positions of a batch of id or embedding sequences.

        The chat template before the first column never changes (no method perturbs it), so when
        the batch starts with it, its keys and values come from a cache computed once per task
        and only the rest of the sequence runs: on SmolLM2's template that is 24 of ~50
        positions skipped in every forward and backward pass."""
        x = ids if ids is not None else embeds
        assert x is not None
        b, t = x.shape[0], x.shape[1]
        k = self._cached_prefix(ids, embeds)
        kw: dict[str, Any] = {"use_cache": False}
        if k:
            kw = {_cache_kwarg(type(self.lm.model)): self._prefix_cache(b), "use_cache": True}
        key = "input_ids" if ids is not None else "inputs_embeds"
        out = self.lm.model(
            **{key: x[:, k:]},
            attention_mask=torch.ones(b, t, dtype=torch.long, device=x.device),
            position_ids=torch.arange(k, t, device=x.device).expand(b, t - k),
            logits_to_keep=len(self.response_ids) + 1,
            **kw,
        )
        self.lm.tokens_processed += b * (t - k)
        return out.logits

    def _cached_prefix(self, ids: torch.Tensor | None, embeds: torch.Tensor | None) -> int:
        """Length of the template prefix the batch shares with the task's input, which the
        cache stands for (0: no cache, or a batch that changes the template). Builds the cache
        on first use."""
        k = self._prefix_len
        if k == 0:
            return 0
        if self._template is None:  # the template's ids and embeddings, looked up once
            self._template = (
                torch.tensor(self.ids[:k], device=self.lm.device),
                self.embeddings()[:k],
            )
        if ids is not None:
            same = bool((ids[:, :k] == self._template[0]).all())
        else:
            assert embeds is not None
            same = bool((embeds[:, :k].detach() == self._template[1].to(embeds.dtype)).all())
        if not same:
            return 0
        if self._prefix_kv is None:
            self._build_template_cache()
        return self._prefix_len

    def _prefix_cache(self, batch: int) -> Any:
        """A fresh copy of the prefix's key/value cache, repeated ``batch`` times (the model
        appends to the cache it is given)."""
        cache = copy.deepcopy(self._prefix_kv)
        cache.batch_repeat_interleave(batch)
        return cache

    def _build_template_cache(self) -> None:
        """The key/value cache of the template before the first column, which no method changes:
        one forward pass of those positions. The first time a model is used, two more passes
        check that the cached pass reproduces the full one; a model that fails the check (or
        has no batchable cache) runs without it from then on."""
        k, model = self._prefix_len, self.lm.model
        ids = torch.tensor([self.ids], device=self.lm.device)
        kv, passes = None, 1
        try:
            with torch.no_grad():  # not inference_mode: the cache takes part in backward passes
                kv = _prefix_pass(model, ids[:, :k])
                if kv is None or not hasattr(kv, "batch_repeat_interleave"):
                    raise TypeError("no batchable key/value cache")
                if model not in _PREFIX_CACHE_OK:
                    self._prefix_kv = kv
                    cached = self._logits(ids=ids)
                    self._prefix_len = 0
                    full = self._logits(ids=ids)
                    self._prefix_len, passes = k, 3
                    ok = torch.allclose(cached.float(), full.float(), rtol=1e-3, atol=1e-3)
                    _PREFIX_CACHE_OK[model] = ok
        except (TypeError, ValueError, AttributeError, RuntimeError):
            _PREFIX_CACHE_OK[model] = False
        finally:
            self.lm.tokens_processed += k
            self._meter.cost.forward_passes += passes
            self._meter.cost.batches += passes
        if kv is None or not _PREFIX_CACHE_OK.get(model, False):
            self._prefix_len, self._prefix_kv = 0, None
        else:
            self._prefix_kv = kv

    def forward_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Row values (B, rows) for a batch of token id sequences (B, positions); no gradient.
        Counts nothing (callers count passes)."""
        return self.row_values(self.forward_logits(ids))

    def embeddings(self) -> torch.Tensor:
        """(positions, d) input embeddings of :attr:`ids` (float32, detached). No model calls."""
        emb = self.lm.model.get_input_embeddings()
        with torch.no_grad():
            return emb(torch.tensor(self.ids, device=self.lm.device)).detach().float()

    def baseline_embeddings(self, baseline: str | torch.Tensor = "space") -> torch.Tensor:
        """Baseline input: column positions at ``"space"`` (the embedding of the token a single
        space encodes to: content-free text), ``"pad"`` (the pad token's embedding — on chat
        models often the end-of-turn token), ``"zero"``, or a given tensor; chat-template
        positions keep their real embedding."""
        x = self.embeddings()
        base = self.lm.baseline_like(x, baseline)
        keep = torch.tensor(self.position_unit, device=x.device) < 0
        return torch.where(keep[:, None], x, base)

    def to_columns(self, per_position: np.ndarray) -> np.ndarray:
        """Sum per-position scores (rows × positions) into (rows × columns), NaN where a row
        cannot see the column."""
        out = np.zeros((per_position.shape[0], self.n_units))
        for p, u in enumerate(self.position_unit):
            if u >= 0:
                out[:, u] += per_position[:, p]
        out[~self.visible()] = np.nan
        return out

    def target(self) -> dict[str, Any]:
        """JSON description of what each row explains."""
        what = {"logprob": "log p", "prob": "p", "logit": "logit"}[self.target_kind]
        desc = f"{what}(each generated token | prompt, tokens before it)"
        if self.foil is not None:
            desc = f"{what}(generated token) − {what}(foil token), foil {self.foil!r}"
        return {
            "kind": "generation",
            "task": "generation",
            "description": desc,
            "target": self.target_kind,
            "prompt": self.prompt,
            "response": self.response,
            "foil": self.foil,
            "span": None if self.span is None else list(self.span),
            "rows": self.rows,
            "row_labels": self.row_labels(),
            "row_spans": [list(self.response_spans[r]) for r in self.rows],
            "model": getattr(self.lm, "name", type(self.lm).__name__),
            "chat": self.chat,
            "tokenization_note": self.tokenization_note,
        }

    def input_dict(self) -> dict[str, Any]:
        """What an Attribution stores about the columns: the combined text they index."""
        return {
            "kind": "tokens",
            "text": self.prompt + SEPARATOR + self.response,
            "prompt_chars": len(self.prompt),
            "separator": SEPARATOR,
            "n_prompt_units": self.n_prompt_units,
        }

    def result(
        self, scores: np.ndarray, method: str, params: dict[str, Any], cost: Any, **extras: Any
    ) -> Attribution:
        """An Attribution (rows × columns) for this task."""
        return Attribution(
            units=list(self.columns),
            scores=scores,
            method=method,
            target=self.target(),
            params=params,
            cost=cost,
            input=self.input_dict(),
            extras=extras,
            task=self.kind,
        )

    def attribute(self, method: str = DEFAULT_METHOD, **params: Any) -> Attribution:
        """Run the generation method ``method`` on this task (:func:`attribkit.attribute`;
        ``attribkit methods --kind generation``)."""
        return attribute(self, method, **params)

    def __repr__(self) -> str:
        return (
            f"GenerationTask({self.n_rows} rows × {self.n_units} columns, "
            f"prompt={self.prompt!r}, response={self.response!r})"
        )


def _prefix_pass(model: Any, ids: torch.Tensor) -> Any:
    """The key/value cache of one forward pass over ``ids`` (1, k), its logits skipped where the
    model allows (``logits_to_keep``)."""
    mask = torch.ones_like(ids)
    try:
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
    except TypeError:  # an older model without logits_to_keep
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
    kv = out.get("cache")  # transformers 5; 4 calls it past_key_values
    return kv if kv is not None else out.get("past_key_values")


@functools.cache
def _cache_kwarg(model_class: type) -> str:
    """The name a model class's forward gives its key/value cache (transformers 5 renamed
    ``past_key_values`` to ``cache``); looked up once per class."""
    import inspect

    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _char_range(text: str, span: str | tuple[int, int]) -> tuple[int, int]:
    from attribkit.tasks.context import resolve_span

    found = resolve_span(text, span)
    assert found is not None
    return found


def attribute_generation(
    lm: Any,
    prompt: str,
    response: str | None = None,
    method: str = DEFAULT_METHOD,
    *,
    target: Target = "logprob",
    foil: str | None = None,
    span: str | tuple[int, int] | None = None,
    aggregate: str | None = None,
    chat: bool = True,
    max_new_tokens: int = 16,
    **params: Any,
) -> Attribution:
    """Attribute each generated token to the input tokens before it.

    Returns an Attribution whose ``scores`` are a matrix: one row per generated token (of
    ``span`` when given), one column per input token (prompt tokens, then generated tokens;
    NaN where a row cannot see the column). ``aggregate`` = ``"words"`` or ``"sentences"``
    sums columns into coarser units (:func:`aggregate_columns`); sum rows with
    :func:`aggregate_rows`. Costs one generation when ``response`` is None, plus the method's
    model calls (``attribkit methods``; e.g. integrated gradients: steps × (1 forward + rows
    backward passes))."""
    task = GenerationTask(
        lm,
        prompt,
        response,
        target=target,
        foil=foil,
        span=span,
        chat=chat,
        max_new_tokens=max_new_tokens,
    )
    result = task.attribute(method, **params)
    return result if aggregate is None else aggregate_columns(result, aggregate)


# --- aggregation -----------------------------------------------------------------------------


def aggregate_rows(
    attribution: Attribution, span: str | tuple[int, int] | None = None
) -> Attribution:
    """One row: the sum of the rows whose generated tokens overlap ``span`` of the response
    (all rows when None). Columns no summed row can see stay NaN. No model calls."""
    target = dict(attribution.target or {})
    scores = np.atleast_2d(attribution.scores)
    rows = list(range(scores.shape[0]))
    if span is not None:
        response = target.get("response")
        if not isinstance(response, str):
            raise InputError("aggregate_rows(span=...) needs a generation attribution")
        a, b = _char_range(response, span)
        spans = target.get("row_spans") or []
        rows = [i for i, (s, e) in enumerate(spans) if s < b and e > a]
        if not rows:
            raise InputError(f"no attributed token overlaps the span ({a}, {b})")
    picked = scores[rows]
    summed = np.where(np.isnan(picked).all(axis=0), np.nan, np.nansum(picked, axis=0))
    target["aggregated_rows"] = [int(r) for r in rows]
    return replace(attribution, scores=summed, target=target)


def aggregate_columns(attribution: Attribution, units: str | TextUnits = "words") -> Attribution:
    """Sum token columns into coarser units of the same combined text: ``"words"``,
    ``"sentences"``, or a :class:`TextUnits` over the prompt. A token goes to the unit it
    overlaps most; NaN columns (not visible to a row) add nothing unless all are NaN.
    No model calls."""
    info = attribution.input
    if info.get("kind") != "tokens":
        raise InputError("aggregate_columns works on token attributions (attribute_generation)")
    text, n_chars = info["text"], int(info["prompt_chars"])
    prompt, rest = text[:n_chars], text[n_chars + len(info.get("separator", "")) :]
    offset = len(text) - len(rest)
    if isinstance(units, TextUnits):
        if units.text != prompt:
            raise InputError("custom units must be TextUnits over the prompt text")
        spans = [(u.start, u.end) for u in units]
    elif units == "words":
        spans = _word_spans(prompt) + [(s + offset, e + offset) for s, e in _word_spans(rest)]
    elif units == "sentences":
        spans = list(sentence_spans(prompt)) + [
            (s + offset, e + offset) for s, e in sentence_spans(rest)
        ]
    else:
        raise InputError(f"unknown units {units!r}: use 'words', 'sentences' or TextUnits")
    index = []
    for u in attribution.units:
        best, best_ov = -1, 0
        for j, (s, e) in enumerate(spans):
            ov = min(u.end, e) - max(u.start, s)  # type: ignore[operator]
            if ov > best_ov:
                best, best_ov = j, ov
        index.append(best)
    used = sorted(set(i for i in index if i >= 0))
    remap = {j: k for k, j in enumerate(used)}
    scores = np.atleast_2d(attribution.scores)
    out = np.full((scores.shape[0], len(used)), np.nan)
    for col, j in enumerate(index):
        if j < 0:
            continue
        k = remap[j]
        v = scores[:, col]
        out[:, k] = np.where(np.isnan(out[:, k]), v, out[:, k] + np.nan_to_num(v))
    new_units = [
        Unit(k, text[spans[j][0] : spans[j][1]], spans[j][0], spans[j][1]) for j, k in remap.items()
    ]
    return replace(
        attribution,
        units=new_units,
        scores=out if attribution.scores.ndim == 2 else out[0],
        params={**attribution.params, "aggregate": units if isinstance(units, str) else "custom"},
    )


def _word_spans(text: str) -> list[tuple[int, int]]:
    import re

    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


__all__ = [
    "DEFAULT_METHOD",
    "GenerationTask",
    "aggregate_columns",
    "aggregate_rows",
    "attribute_generation",
]
