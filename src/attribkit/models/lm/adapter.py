"""A causal language model with the few operations attribution needs.

:class:`LanguageModel` wraps a Hugging Face causal LM and its tokenizer. It formats chat prompts,
generates greedily, scores responses (per-token and summed log-probabilities, batched with left
padding) and builds a :class:`~attribkit.core.gradient.GradientScorer` over input embeddings.
It is a :class:`~attribkit.core.cost.CostMeter`: ``lm.cost`` counts every sequence it evaluated,
and ``lm.tokens_processed`` every token the model ran on.

For context attribution it also offers: prefix key-value reuse (:meth:`LanguageModel.set_reference`
and ``token_logprobs(..., reuse_prefix=True)``: many prompts sharing a long prefix, e.g.
leave-one-out over context sentences, only recompute what follows the shared prefix), token
character spans (:meth:`~LanguageModel.prompt_token_spans`,
:meth:`~LanguageModel.response_token_spans`), the context window
(:attr:`~LanguageModel.max_positions`, :meth:`~LanguageModel.count_tokens`) and attention rows
recomputed from the attention inputs without a T×T matrix (:meth:`~LanguageModel.attention_rows`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.gradient import GradientScorer
from attribkit.core.units import TextUnits, Units
from attribkit.models.pairs import broadcast_pairs

__all__ = ["ROW_FAMILIES", "LanguageModel"]

#: Model types whose attention rows :meth:`LanguageModel.attention_rows` recomputes from the
#: attention inputs (q/k projections, optional per-head q/k norm, rotate-half RoPE, GQA).
ROW_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")

Spans = list[tuple[int, int]]


@dataclass
class _Reference:
    """Token ids of the reference sequence and the per-layer (key, value) tensors of its cache,
    each [1, kv_heads, len(ids), head_dim]. Never written to: reuse slices and copies it."""

    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]


class _StopForward(Exception):
    """Raised by an attention hook once the last needed layer is read, to skip the rest."""


def _cache_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The per-layer (key, value) tensors of a transformers cache (new ``layers`` API, the older
    ``key_cache``/``value_cache`` lists, or a legacy tuple); None if unreadable."""
    if cache is None:
        return None
    layers = getattr(cache, "layers", None)
    if layers is not None:
        kv = [(layer.keys, layer.values) for layer in layers]
    elif hasattr(cache, "key_cache"):
        kv = list(zip(cache.key_cache, cache.value_cache, strict=True))
    elif isinstance(cache, tuple | list):
        kv = [(k, v) for k, v, *_ in cache]
    else:
        return None
    if not kv or any(not isinstance(k, torch.Tensor) or k.dim() != 4 for k, _ in kv):
        return None
    return kv


def _make_cache(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A new DynamicCache holding ``kv`` (the tensors are copied in on the first update)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(ddp_cache_data=kv)
    except TypeError:  # transformers < 4.56
        return DynamicCache.from_legacy_cache(tuple(kv))


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LanguageModel(CostMeter):
    """A causal LM plus tokenizer.

    Args:
        model: a Hugging Face causal LM (``AutoModelForCausalLM``); it is put in eval mode.
        tokenizer: its tokenizer (a fast tokenizer is needed for gradient units).
        name: a short name used in results and reprs (e.g. ``"smollm2"``).

    Cost accounting (``self.cost``): ``forward_passes`` += one per sequence evaluated,
    ``batches`` += one per model call; ``generate`` counts one forward pass per generated token.
    ``self.tokens_processed`` adds up the tokens the model actually ran on (padding excluded; with
    prefix reuse only the recomputed suffix; ``generate``: prompt + new tokens), so benchmarks
    can report token-equivalents (tokens / context length).
    """

    #: The shortest shared prefix (in tokens) worth reusing from the reference cache.
    reuse_min_prefix: int = 16

    def __init__(self, model: Any, tokenizer: Any, name: str | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", None) or type(model).__name__
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        if pad is None:
            pad = 0
        self.pad_id = int(pad)
        self.stop_ids = self._stop_ids()
        self.tokens_processed = 0
        self._reference: _Reference | None = None
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed ``past_key_values`` to ``cache``.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ basics

    def __repr__(self) -> str:
        cfg = self.model.config
        n = sum(p.numel() for p in self.model.parameters())
        return (
            f"LanguageModel({self.name!r}, {type(self.model).__name__}, "
            f"{getattr(cfg, 'num_hidden_layers', '?')} layers, {n / 1e6:.1f}M params, "
            f"{self.dtype}, {self.device}, cost={self.cost})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def max_positions(self) -> int | None:
        """The context window in tokens: the config's ``max_position_embeddings`` (or
        ``n_positions`` / ``max_sequence_length`` / ``seq_length``), else the tokenizer's
        ``model_max_length`` when it is a real limit (< 10M); None when neither says. No model
        calls."""
        cfg = self.model.config
        get_text = getattr(cfg, "get_text_config", None)
        if callable(get_text):
            cfg = get_text()
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            v = getattr(cfg, key, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        v = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(v, int) and 0 < v < 10_000_000:
            return v
        return None

    def count_tokens(
        self, prompt: str, response: str | None = None, chat: bool = True, system: str | None = None
    ) -> int:
        """Number of tokens the model sees for ``prompt`` (chat-formatted unless ``chat=False``)
        plus ``response`` if given, exactly as :meth:`token_logprobs` tokenizes them. Compare with
        :attr:`max_positions`. No model calls."""
        n = len(self._prompt_ids(prompt, chat, system))
        if response is not None:
            n += len(self._response_ids(response))
        return n

    def _stop_ids(self) -> list[int]:
        ids: list[int] = []
        eos = self.tokenizer.eos_token_id
        if eos is not None:
            ids.append(int(eos))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for e in [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or []):
            if e is not None and int(e) not in ids:
                ids.append(int(e))
        vocab = self.tokenizer.get_vocab()
        for t in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
            if t in vocab and vocab[t] not in ids:
                ids.append(int(vocab[t]))
        return ids

    def format_prompt(self, prompt: str, system: str | None = None) -> str:
        """The chat template applied to one user message (plus optional system message), with the
        generation prompt added. Without a chat template the prompt is returned unchanged.
        No model calls."""
        if not self.has_chat_template:
            return prompt if system is None else f"{system}\n\n{prompt}"
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": prompt})
        out = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return str(out)

    def _prompt_ids(self, prompt: str, chat: bool, system: str | None = None) -> list[int]:
        if chat and self.has_chat_template:
            text = self.format_prompt(prompt, system)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = prompt if system is None else f"{system}\n\n{prompt}"
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if not ids:
            start = self.tokenizer.bos_token_id
            if start is None:
                start = self.tokenizer.eos_token_id
            if start is None:
                raise InputError(
                    "the prompt tokenizes to zero tokens and the tokenizer has no BOS/EOS token "
                    "to start from; pass a non-empty prompt"
                )
            ids = [int(start)]
        return list(ids)

    def _response_ids(self, response: str) -> list[int]:
        if not response:
            raise InputError("the response is empty: pass the text whose probability to explain")
        ids = self.tokenizer(response, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InputError(
                f"the response {response!r} tokenizes to zero tokens; pass a response with text"
            )
        return list(ids)

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 128,
        chat: bool = True,
        system: str | None = None,
    ) -> str:
        """Greedy continuation of ``prompt`` (chat-formatted unless ``chat=False``), stopped at end
        of turn / EOS; returns only the new text without special tokens.
        Costs one forward pass per generated token; ``tokens_processed`` += prompt + new tokens."""
        ids = torch.tensor([self._prompt_ids(prompt, chat, system)], device=self.device)
        with self.timed(), torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=self.stop_ids or None,
                pad_token_id=self.pad_id,
            )
        new = out[0, ids.shape[1] :]
        self.cost.forward_passes += int(new.numel())
        self.cost.batches += int(new.numel())
        self.tokens_processed += int(ids.shape[1]) + int(new.numel())
        return str(self.tokenizer.decode(new, skip_special_tokens=True)).strip()

    # ------------------------------------------------------------------ batched scoring

    def encode_pairs(
        self,
        prompts: str | Sequence[str],
        responses: str | Sequence[str],
        chat: bool = True,
    ) -> list[tuple[list[int], list[int]]]:
        """Token ids ``(prompt_ids, response_ids)`` for each pair; a single prompt or response is
        broadcast to the other list's length. No model calls."""
        resp_cache: dict[str, list[int]] = {}
        out = []
        for p, r in broadcast_pairs(prompts, responses):
            if r not in resp_cache:
                resp_cache[r] = self._response_ids(r)
            out.append((self._prompt_ids(p, chat), resp_cache[r]))
        return out

    @staticmethod
    def _gather(logits: torch.Tensor, r: list[int]) -> np.ndarray:
        """log p of the tokens ``r`` from the ``len(r) + 1`` last logit rows of one sequence."""
        logp = torch.log_softmax(logits[-len(r) - 1 : -1].float(), dim=-1)
        rt = torch.tensor(r, dtype=torch.long, device=logp.device)
        return logp.gather(-1, rt[:, None])[:, 0].double().cpu().numpy()

    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[np.ndarray]:
        """Per-token log-probs of the responses of one batch of (prompt, response) id pairs."""
        lens = [len(p) + len(r) for p, r in pairs]
        t = max(lens)
        r_max = max(len(r) for _, r in pairs)
        ids = torch.full((len(pairs), t), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(pairs), t), dtype=torch.long)
        for i, (p, r) in enumerate(pairs):
            seq = torch.tensor(p + r, dtype=torch.long)
            ids[i, t - len(seq) :] = seq
            mask[i, t - len(seq) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        out = self.model(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=pos.to(dev),
            logits_to_keep=r_max + 1,
            use_cache=False,
        )
        self.tokens_processed += sum(lens)
        # Kept positions t-r_max-1 .. t-1; position j predicts token j+1 (_gather drops the last).
        return [self._gather(out.logits[i], r) for i, (_, r) in enumerate(pairs)]

    # ------------------------------------------------------------------ prefix reuse

    def _run_reference(self, ids: list[int], n_logits: int) -> torch.Tensor:
        """One unpadded forward over ``ids`` that keeps its key-value cache as the reference;
        returns the last ``n_logits`` logit rows. Counts one pass."""
        dev = self.device
        x = torch.tensor([ids], dtype=torch.long, device=dev)
        out = self.model(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            position_ids=torch.arange(len(ids), device=dev)[None],
            logits_to_keep=n_logits,
            use_cache=True,
        )
        self.cost.forward_passes += 1
        self.cost.batches += 1
        self.tokens_processed += len(ids)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        kv = _cache_kv(cache)
        # Only a full cache (every layer holds every position, no sliding-window trimming) can be
        # cut at any prefix length; otherwise prefix reuse falls back to full passes.
        if kv is not None and all(k.shape[0] == 1 and k.shape[-2] == len(ids) for k, _ in kv):
            self._reference = _Reference(list(ids), kv)
        else:
            self._reference = None
        return out.logits[0]

    def set_reference(
        self,
        prompt: str,
        response: str | None = None,
        chat: bool = True,
        system: str | None = None,
    ) -> np.ndarray | None:
        """Run ``prompt`` (chat-formatted unless ``chat=False``) plus ``response`` if given once
        and keep its key-value cache, so that ``token_logprobs(..., reuse_prefix=True)`` only
        recomputes what follows each prompt's longest common token prefix with it. Typical use:
        ``lm.set_reference(full_prompt, response)`` then
        ``lm.logprob(masked_prompts, response, reuse_prefix=True)``. Replaces any earlier
        reference (its memory: 2·layers·kv_heads·head_dim floats per token).

        Returns the per-token log-probabilities of ``response`` after ``prompt`` (as
        :meth:`token_logprobs` would), or None without a response: the full prompt's value comes
        with the reference at no extra cost. Costs one forward pass over the whole sequence."""
        ids = self._prompt_ids(prompt, chat, system)
        resp = self._response_ids(response) if response is not None else []
        with self.timed(), torch.inference_mode():
            logits = self._run_reference(ids + resp, len(resp) + 1)
            return self._check(self._gather(logits, resp)) if resp else None

    def clear_reference(self) -> None:
        """Drop the reference key-value cache (frees its memory). No model calls."""
        self._reference = None

    @property
    def reference_ids(self) -> list[int] | None:
        """Token ids of the current reference sequence, or None. No model calls."""
        return None if self._reference is None else list(self._reference.ids)

    def _reuse_length(self, p: list[int], r: list[int]) -> int:
        """How many leading tokens of ``p + r`` can come from the reference cache: the common
        prefix with the reference, capped so that every response token's logits are recomputed;
        0 when below :attr:`reuse_min_prefix`."""
        if self._reference is None:
            return 0
        n = min(_common_prefix(self._reference.ids, p + r), len(p) - 1)
        return n if n >= max(self.reuse_min_prefix, 1) else 0

    def _score_with_prefix(self, p: list[int], r: list[int], n: int) -> np.ndarray:
        """Per-token log-probs of ``r`` after ``p``, running the model only on ``(p + r)[n:]``
        over a copy of the reference cache cut to ``n`` tokens (the reference is untouched)."""
        assert self._reference is not None
        ids = p + r
        dev = self.device
        cache = _make_cache([(k[..., :n, :], v[..., :n, :]) for k, v in self._reference.kv])
        out = self.model(
            input_ids=torch.tensor([ids[n:]], dtype=torch.long, device=dev),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=dev),
            position_ids=torch.arange(n, len(ids), device=dev)[None],
            logits_to_keep=len(r) + 1,
            use_cache=True,
            **{self._cache_kw: cache},
        )
        self.tokens_processed += len(ids) - n
        return self._gather(out.logits[0], r)

    # ------------------------------------------------------------------ log-probabilities

    def token_logprobs(
        self,
        prompts: str | Sequence[str],
        responses: str | Sequence[str],
        chat: bool = True,
        batch_size: int = 8,
        reuse_prefix: bool = False,
    ) -> list[np.ndarray]:
        """log p(response token | prompt, earlier response tokens) for each pair: a list of arrays,
        one value per response token. Prompts are chat-formatted unless ``chat=False``.

        ``reuse_prefix=True`` reuses the reference key-value cache (see :meth:`set_reference`):
        a pair sharing at least :attr:`reuse_min_prefix` leading tokens with the reference is run
        alone on the tokens after the shared prefix; the others go through the batched path. If
        no pair can use the current reference (none set, or another prompt family), the first
        pair is run alone with its cache kept and becomes the reference. Results equal
        ``reuse_prefix=False`` up to float rounding.

        Costs one forward pass per pair, in ``ceil(n / batch_size)`` model calls (with reuse: one
        call per reused pair); ``tokens_processed`` grows by the tokens actually run."""
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        pairs = self.encode_pairs(prompts, responses, chat)
        result: list[np.ndarray | None] = [None] * len(pairs)
        batched = list(range(len(pairs)))
        with self.timed(), torch.inference_mode():
            if reuse_prefix and pairs:
                reuse = [self._reuse_length(p, r) for p, r in pairs]
                if not any(reuse):  # no reference for this prompt family: the first pair sets it
                    p0, r0 = pairs[0]
                    logits = self._run_reference(p0 + r0, len(r0) + 1)
                    result[0] = self._check(self._gather(logits, r0))
                    reuse = [0] + [self._reuse_length(p, r) for p, r in pairs[1:]]
                batched = []
                for i, (p, r) in enumerate(pairs):
                    if result[i] is not None:
                        continue
                    n = reuse[i]
                    if n == 0:
                        batched.append(i)
                        continue
                    result[i] = self._check(self._score_with_prefix(p, r, n))
                    self.cost.forward_passes += 1
                    self.cost.batches += 1
            order = sorted(batched, key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                vals = self._score_batch([pairs[i] for i in idx])
                for i, v in zip(idx, vals, strict=True):
                    result[i] = self._check(v)
                self.cost.forward_passes += len(idx)
                self.cost.batches += 1
        return [r for r in result if r is not None]

    @staticmethod
    def _check(v: np.ndarray) -> np.ndarray:
        if not np.isfinite(v).all():
            raise ScorerError(
                "the model returned a non-finite log-probability; check the model "
                "weights and dtype (float16 on CPU can overflow)"
            )
        return v

    def logprob(
        self,
        prompts: str | Sequence[str],
        responses: str | Sequence[str],
        chat: bool = True,
        batch_size: int = 8,
        reuse_prefix: bool = False,
    ) -> np.ndarray:
        """Summed log-probability of each response given its prompt: an array, one per pair.
        Costs one forward pass per pair (see :meth:`token_logprobs`, also for ``reuse_prefix``)."""
        vals = self.token_logprobs(prompts, responses, chat, batch_size, reuse_prefix=reuse_prefix)
        return np.array([v.sum() for v in vals])

    def response_token_spans(self, response: str) -> Spans:
        """The character span ``(start, end)`` in ``response`` of each response token, in order,
        for exactly the ids :meth:`token_logprobs` scores (so span k belongs to value k). Tokens
        holding part of one character (byte-level BPE) share that character's span.
        Needs a fast tokenizer. No model calls."""
        ids = self._response_ids(response)
        try:
            enc = self.tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError as e:
            raise InputError(
                "token spans need a fast tokenizer with offset mappings; "
                "load the tokenizer with use_fast=True"
            ) from e
        if list(enc["input_ids"]) != ids:
            raise InputError("the tokenizer gives different ids with offsets; use a fast tokenizer")
        return [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    # ------------------------------------------------------------------ token spans, gradients

    def prompt_token_spans(
        self, prompt: str, chat: bool = True, system: str | None = None
    ) -> Spans:
        """The character span ``(start, end)`` relative to ``prompt`` of each token of the prompt
        as :meth:`token_logprobs` tokenizes it (chat-formatted unless ``chat=False``); tokens
        outside the user prompt (chat template, system message, BOS) get ``(-1, -1)``. Raises
        InputError if the chat template rewrites the prompt text. Needs a fast tokenizer.
        No model calls."""
        return self._prompt_offsets(prompt, chat, system)[1]

    def _prompt_offsets(
        self, prompt: str, chat: bool, system: str | None
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Prompt token ids and each token's character span relative to ``prompt`` (spans of
        tokens outside the user prompt are (-1, -1))."""
        if chat and self.has_chat_template:
            text, special = self.format_prompt(prompt, system), False
        else:
            text = prompt if system is None else f"{system}\n\n{prompt}"
            special = True
        start = text.rfind(prompt)
        if start < 0:
            raise InputError(
                "the chat template changed the prompt text (it no longer occurs in the formatted "
                "prompt), so tokens cannot be mapped to it; pass chat=False"
            )
        try:
            enc = self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        except NotImplementedError as e:
            raise InputError(
                "gradient units need a fast tokenizer with offset mappings; "
                "load the tokenizer with use_fast=True"
            ) from e
        ids = list(enc["input_ids"])
        spans = []
        end = start + len(prompt)
        for s, e in enc["offset_mapping"]:
            if e <= start or s >= end:
                spans.append((-1, -1))
            else:
                spans.append((max(s, start) - start, min(e, end) - start))
        if not ids:
            return self._prompt_ids(prompt, chat, system), [(-1, -1)]
        return ids, spans

    @staticmethod
    def _token_units(prompt: str, spans: list[tuple[int, int]]) -> tuple[list[int], TextUnits]:
        """One unit per prompt token (tokens sharing characters are merged into one unit)."""
        index = [-1] * len(spans)
        unit_spans: list[list[int]] = []
        pending: list[int] = []  # zero-width tokens waiting for the next unit
        for k, (s, e) in enumerate(spans):
            if s < 0:
                continue
            if e <= s:
                pending.append(k)
                continue
            if unit_spans and s < unit_spans[-1][1]:
                unit_spans[-1][1] = max(unit_spans[-1][1], e)
            else:
                unit_spans.append([s, e])
            for j in [*pending, k]:
                index[j] = len(unit_spans) - 1
            pending = []
        for j in pending:
            if unit_spans:
                index[j] = len(unit_spans) - 1
        if not unit_spans:
            raise InputError("the prompt has no tokens to attribute; pass a non-empty prompt")
        return index, TextUnits(prompt, [(s, e) for s, e in unit_spans])

    @staticmethod
    def _map_units(prompt: str, spans: list[tuple[int, int]], units: TextUnits) -> list[int]:
        """Map each token to the unit it overlaps most (by characters), -1 if none."""
        offset = prompt.find(units.text)
        if offset < 0:
            raise InputError(
                "the units' text does not occur in the prompt; build the units over a part of "
                "the prompt (e.g. the context inside 'Context: ...\\n\\nQuery: ...')"
            )
        bounds = [(u.start + offset, u.end + offset) for u in units]  # type: ignore[operator]
        index = []
        for s, e in spans:
            best, best_ov = -1, 0
            if s >= 0:
                for ui, (us, ue) in enumerate(bounds):
                    ov = min(e, ue) - max(s, us)
                    if ov > best_ov:
                        best, best_ov = ui, ov
            index.append(best)
        missing = sorted(set(range(len(units))) - set(index))
        if missing:
            labels = ", ".join(repr(units[i].label[:30]) for i in missing[:5])
            raise InputError(
                f"{len(missing)} unit(s) cover no token of their own ({labels}): they lie inside "
                "tokens shared with neighbouring units; use coarser units (words, sentences)"
            )
        return index

    @property
    def space_id(self) -> int:
        """The id of the token a single space encodes to (content-free text; the default
        baseline of the gradient methods)."""
        ids = self.tokenizer(" ", add_special_tokens=False)["input_ids"]
        if not ids:
            raise InputError("this tokenizer encodes ' ' to nothing; use baseline='pad'")
        return int(ids[-1])

    def baseline_like(self, x: torch.Tensor, baseline: str | torch.Tensor) -> torch.Tensor:
        """A (positions, d) baseline for embeddings ``x``: ``"zero"``, ``"pad"`` (the pad
        token's embedding at every position), ``"space"`` (the embedding of the token a single
        space encodes to) or a tensor like ``x``. No model calls."""
        if isinstance(baseline, torch.Tensor):
            base = baseline.to(x)
            if base.shape != x.shape:
                raise InputError(
                    f"baseline shape {tuple(base.shape)} differs from {tuple(x.shape)}"
                )
            return base
        if baseline == "zero":
            return torch.zeros_like(x)
        if baseline in ("pad", "space"):
            token = self.space_id if baseline == "space" else self.pad_id
            emb = self.model.get_input_embeddings()
            with torch.no_grad():
                vec = emb(torch.tensor([token], device=self.device)).float()
            return vec.expand_as(x).clone()
        raise InputError(f"unknown baseline {baseline!r}: use 'space', 'pad', 'zero' or a tensor")

    def gradient_scorer(
        self,
        prompt: str,
        response: str,
        units: Units | None = None,
        chat: bool = True,
        baseline: str | torch.Tensor = "zero",
        system: str | None = None,
        batch_size: int = 8,
    ) -> GradientScorer:
        """A :class:`GradientScorer` over the input embeddings of prompt + response.

        ``x`` is the (T, d) embedding matrix of the full sequence; ``forward(xb)`` the summed
        log-probability of the response tokens for each row of ``xb`` (B, T, d). By default each
        token of ``prompt`` is a unit; pass ``units`` (a :class:`TextUnits` whose text occurs in
        ``prompt``) to group tokens by character overlap. Template and response tokens belong to
        no unit (they keep their real embeddings). ``baseline``: ``"zero"`` (zero embeddings),
        ``"pad"`` (the pad/EOS token's embedding) or a tensor like ``x``.
        Building it costs nothing; each row evaluated costs one forward (+ one backward) pass,
        counted on the scorer (its tokens are added to this model's ``tokens_processed``).
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("the prompt is empty: there is nothing to attribute")
        resp = self._response_ids(response)
        ids, spans = self._prompt_offsets(prompt, chat, system)
        if units is None:
            index, units = self._token_units(prompt, spans)
        elif isinstance(units, TextUnits):
            index = self._map_units(prompt, spans, units)
        else:
            raise InputError(
                f"gradient units over a prompt must be TextUnits, got {type(units).__name__}"
            )
        index = index + [-1] * len(resp)
        all_ids = torch.tensor(ids + resp, dtype=torch.long, device=self.device)
        emb = self.model.get_input_embeddings()
        with torch.no_grad():
            x = emb(all_ids).detach().float()
        base = self.baseline_like(x, baseline)

        n_resp, t = len(resp), len(ids) + len(resp)
        targets = torch.tensor(resp, dtype=torch.long, device=self.device)
        model, dtype = self.model, self.dtype

        def forward(xb: torch.Tensor) -> torch.Tensor:
            b = xb.shape[0]
            self.tokens_processed += b * t
            pos = torch.arange(t, device=xb.device).expand(b, t)
            out = model(
                inputs_embeds=xb.to(dtype),
                attention_mask=torch.ones(b, t, dtype=torch.long, device=xb.device),
                position_ids=pos,
                logits_to_keep=n_resp + 1,
                use_cache=False,
            )
            logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
            return logp.gather(-1, targets.expand(b, n_resp)[..., None])[..., 0].sum(-1)

        target = {"model": self.name, "prompt": prompt, "response": response, "chat": chat}
        return GradientScorer(
            forward,
            x,
            baseline=base,
            unit_index=torch.tensor(index, dtype=torch.long)[:, None],
            units=units,
            target=target,
            batch_size=batch_size,
        )

    # ------------------------------------------------------------------ attention rows

    @property
    def n_layers(self) -> int:
        """Number of transformer layers (``config.num_hidden_layers``). No model calls."""
        return int(self._text_config().num_hidden_layers)

    @property
    def n_heads(self) -> int:
        """Query heads per layer (``config.num_attention_heads``). No model calls."""
        return int(self._text_config().num_attention_heads)

    def _text_config(self) -> Any:
        cfg = self.model.config
        get_text = getattr(cfg, "get_text_config", None)
        return get_text() if callable(get_text) else cfg

    def _row_support(self) -> str | None:
        """None if :meth:`attention_rows` can recompute rows for this model, else why not."""
        cfg = self._text_config()
        kind = getattr(cfg, "model_type", None)
        name = type(self.model).__name__
        if kind not in ROW_FAMILIES:
            return f"{name} (model type {kind!r}) is not one of the supported families"
        layers = getattr(getattr(self.model, "model", None), "layers", None)
        if layers is None or len(layers) != self.n_layers:
            return f"{name} has no model.layers list with one entry per layer"
        for part in ("q_proj", "k_proj", "head_dim", "scaling"):
            if not all(hasattr(getattr(layer, "self_attn", None), part) for layer in layers):
                return f"the attention modules of {name} have no {part}"
        if getattr(cfg, "partial_rotary_factor", 1.0) not in (None, 1.0):
            return f"{name} uses partial rotary embeddings"
        return None

    def _select_heads(
        self, heads: Literal["all"] | Sequence[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        n_layers, n_heads = self.n_layers, self.n_heads
        if isinstance(heads, str):
            if heads != "all":
                raise InputError(f"heads={heads!r}: pass 'all' or a list of (layer, head) pairs")
            return [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
        sel = []
        for item in heads:
            try:
                layer, h = (int(v) for v in item)
            except (TypeError, ValueError) as e:
                raise InputError(f"heads must be (layer, head) pairs of ints, got {item!r}") from e
            if not (0 <= layer < n_layers and 0 <= h < n_heads):
                raise InputError(
                    f"head ({layer}, {h}) is out of range: this model has {n_layers} layers "
                    f"(0..{n_layers - 1}) of {n_heads} query heads (0..{n_heads - 1})"
                )
            sel.append((layer, h))
        if not sel:
            raise InputError("heads is empty: pass 'all' or at least one (layer, head) pair")
        return sel

    def _layer_rows(
        self,
        attn: Any,
        hidden: torch.Tensor,
        pos_emb: tuple[torch.Tensor, torch.Tensor] | None,
        heads: list[int],
        n_prompt: int,
    ) -> torch.Tensor:
        """Attention probabilities [len(heads), R, n_prompt] of one layer from its attention
        input ``hidden`` [1, T, d] (already normalised): only the R response-predicting rows."""
        t = hidden.shape[1]
        hd = int(attn.head_dim)
        x = hidden[0]
        q = attn.q_proj(x[n_prompt - 1 : t - 1])
        k = attn.k_proj(x[: t - 1])
        q = q.view(q.shape[0], -1, hd)  # [R, Hq, hd]
        k = k.view(k.shape[0], -1, hd)  # [T-1, Hkv, hd]
        if hasattr(attn, "q_norm") and hasattr(attn, "k_norm"):  # Qwen3: per-head RMSNorm
            q, k = attn.q_norm(q), attn.k_norm(k)
        if pos_emb is None:
            pos = torch.arange(t, device=hidden.device)[None]
            pos_emb = self.model.model.rotary_emb(hidden, pos)
        cos, sin = (e[0] if e.dim() == 3 else e for e in pos_emb)  # [T, hd]
        cq, sq = cos[n_prompt - 1 : t - 1, None], sin[n_prompt - 1 : t - 1, None]
        ck, sk = cos[: t - 1, None], sin[: t - 1, None]
        q = q * cq + _rotate_half(q) * sq
        k = k * ck + _rotate_half(k) * sk
        n_rep = (
            q.shape[1] // k.shape[1]
        )  # grouped-query attention: query head h reads kv h // n_rep
        h_idx = torch.tensor(heads, device=q.device)
        qs = q[:, h_idx].transpose(0, 1).float()  # [n, R, hd]
        ks = k[:, h_idx // n_rep].transpose(0, 1).float()  # [n, T-1, hd]
        scores = (qs @ ks.transpose(1, 2)) * float(attn.scaling)  # [n, R, T-1]
        q_pos = torch.arange(n_prompt - 1, t - 1, device=q.device)[:, None]
        k_pos = torch.arange(t - 1, device=q.device)[None, :]
        visible = k_pos <= q_pos
        window = getattr(attn, "sliding_window", None)
        if window is None and getattr(self._text_config(), "model_type", None) == "mistral":
            window = getattr(self._text_config(), "sliding_window", None)
        if window:
            visible &= k_pos > q_pos - int(window)
        scores = scores.masked_fill(~visible, float("-inf"))
        return torch.softmax(scores, dim=-1)[..., :n_prompt]

    def _recomputed_rows(
        self, ids: list[int], n_prompt: int, sel: list[tuple[int, int]]
    ) -> np.ndarray:
        by_layer: dict[int, list[int]] = {}
        for layer, h in sel:
            if h not in by_layer.setdefault(layer, []):
                by_layer[layer].append(h)
        last = max(by_layer)
        got: dict[int, torch.Tensor] = {}
        layers = self.model.model.layers

        def hook_for(layer: int) -> Any:
            def hook(module: Any, args: tuple, kwargs: dict) -> None:
                hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
                pos_emb = kwargs.get("position_embeddings")
                got[layer] = self._layer_rows(module, hidden, pos_emb, by_layer[layer], n_prompt)
                if layer == last:
                    raise _StopForward  # later layers and the LM head are not needed

            return hook

        handles = [
            layers[layer].self_attn.register_forward_pre_hook(hook_for(layer), with_kwargs=True)
            for layer in by_layer
        ]
        dev = self.device
        x = torch.tensor([ids], dtype=torch.long, device=dev)
        try:
            self.model(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                position_ids=torch.arange(len(ids), device=dev)[None],
                logits_to_keep=1,
                use_cache=False,
            )
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if set(got) != set(by_layer):
            raise ScorerError(
                "the attention hooks did not see every requested layer; this model's forward "
                "does not call model.layers[i].self_attn as the Llama family does"
            )
        out = [got[layer][by_layer[layer].index(h)] for layer, h in sel]
        return torch.stack(out).cpu().numpy().astype(np.float32)

    def _eager_rows(self, ids: list[int], n_prompt: int, sel: list[tuple[int, int]]) -> np.ndarray:
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.model(
            input_ids=x, attention_mask=torch.ones_like(x), output_attentions=True, use_cache=False
        )
        att = getattr(out, "attentions", None)
        if not att or any(a is None for a in att):
            raise InputError(
                f"{type(self.model).__name__} returned no attention weights; load it with "
                "attn_implementation='eager'"
            )
        t = len(ids)
        rows = [att[layer][0, h, n_prompt - 1 : t - 1, :n_prompt].float() for layer, h in sel]
        return torch.stack(rows).cpu().numpy().astype(np.float32)

    def attention_rows(
        self,
        prompt: str,
        response: str,
        heads: Literal["all"] | Sequence[tuple[int, int]] = "all",
        chat: bool = True,
        system: str | None = None,
    ) -> tuple[np.ndarray, Spans]:
        """Attention from the response-predicting query rows to the prompt, per selected head.

        Returns ``(rows, spans)``: ``rows`` is a float32 array ``[n_selected, R, T_prompt]``
        where ``rows[i, k, j]`` is the attention probability of head ``heads[i]`` = (layer, head)
        from query position ``T_prompt - 1 + k`` (the one that predicts response token ``k``;
        R = number of response tokens) to prompt key position ``j`` (rows sum to at most 1: the
        rest goes to earlier response tokens). ``heads="all"`` means every (layer, query head) in
        layer-major order. ``spans`` is :meth:`prompt_token_spans` (``(-1, -1)`` for template
        tokens). The prompt is chat-formatted unless ``chat=False``; tokenization is the one of
        :meth:`token_logprobs`.

        For the Llama family (:data:`ROW_FAMILIES`: Llama incl. SmolLM2, Mistral, Qwen2, Qwen3) the
        rows are recomputed, under any attention implementation (sdpa included), from each needed
        layer's attention input (captured by a hook: normalised hidden states and the model's
        RoPE cos/sin): q/k projections → RoPE → GQA head mapping → softmax(q·kᵀ·scale + causal
        mask) for the R rows only; no T×T matrix is built, only the needed layers are computed
        and the forward stops after the last one. Other models must be loaded with
        ``attn_implementation="eager"``; their rows are read from ``output_attentions`` (T×T per
        layer and head). Costs one forward pass (counted, T tokens) plus
        O(layers·heads·R·T·head_dim) for the rows.
        """
        ids, spans = self._prompt_offsets(prompt, chat, system)
        resp = self._response_ids(response)
        sel = self._select_heads(heads)
        why = self._row_support()
        eager = getattr(self.model.config, "_attn_implementation", None) == "eager"
        if why is not None and not eager:
            raise InputError(
                f"attention_rows recomputes attention only for the Llama family "
                f"({', '.join(ROW_FAMILIES)}): {why}. Load the model with "
                "attn_implementation='eager' (attribkit.models.loading.load(..., "
                "attn_implementation='eager') or model.set_attn_implementation('eager')) so the "
                "rows can be read from output_attentions instead (memory: layers·heads·T² floats)"
            )
        with self.timed(), torch.inference_mode():
            if why is None:
                rows = self._recomputed_rows(ids + resp, len(ids), sel)
            else:
                rows = self._eager_rows(ids + resp, len(ids), sel)
        self.cost.forward_passes += 1
        self.cost.batches += 1
        self.tokens_processed += len(ids) + len(resp)
        return rows, spans

    # ------------------------------------------------------------------ saving

    def save(self, path: str | Path) -> Path:
        """Write the model (safetensors) and tokenizer to ``path`` atomically; ``load(path)``
        reads it back. No model calls."""
        from attribkit.models.loading import save_model

        return save_model(self.model, self.tokenizer, Path(path))
