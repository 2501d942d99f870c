"""Log-probabilities of responses: batched, left-padded scoring and prefix key-value reuse.

:class:`ScoringMixin` gives :class:`~attribkit.models.lm.LanguageModel` ``token_logprobs`` /
``logprob`` (pairs sorted by length and run ``batch_size`` at a time, left-padded, with explicit
position ids) and the reference cache behind ``reuse_prefix=True``: :meth:`set_reference` runs one
sequence and keeps its per-layer keys and values; a later prompt sharing a long token prefix with
it runs only the tokens after that prefix, over a copy of the cache cut to the prefix. The suffix
gets the same absolute positions as in a full pass, so the cached keys (already rotated by RoPE at
those positions) are reused as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.models.pairs import broadcast_pairs

__all__ = ["ScoringMixin"]


@dataclass
class _Reference:
    """Token ids of the reference sequence and the per-layer (key, value) tensors of its cache,
    each [1, kv_heads, len(ids), head_dim]. Never written to: reuse slices and copies it."""

    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]


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


def left_padded(
    seqs: Sequence[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` of token id lists padded on the left to one
    length, positions counted from each sequence's first real token (as the batched scorers
    and every batched read-out of a last position need). No model calls."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, t - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, t - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def _rebase_is_cheaper(pairs: Sequence[tuple[list[int], list[int]]], reuse: Sequence[int]) -> bool:
    """Whether ``pairs`` share one prompt and running the first pair as a new reference (then
    each other pair only from the end of the prompt) processes fewer tokens than reusing the
    current reference for ``reuse`` tokens of each pair."""
    prompt = pairs[0][0]
    if len(pairs) < 2 or any(p != prompt for p, _ in pairs[1:]):
        return False
    keep = sum(len(p) + len(r) - n for (p, r), n in zip(pairs, reuse, strict=True))
    rebase = len(prompt) + len(pairs[0][1]) + sum(len(r) + 1 for _, r in pairs[1:])
    return rebase < keep


class ScoringMixin(CostMeter):
    """Response scoring for :class:`~attribkit.models.lm.LanguageModel` (see the module
    docstring); counts every pass on ``self.cost`` and ``self.tokens_processed``."""

    if TYPE_CHECKING:  # provided by LanguageModel
        model: Any
        pad_id: int
        tokens_processed: int
        _reference: _Reference | None
        _cache_kw: str

        @property
        def device(self) -> torch.device: ...
        def _prompt_ids(self, prompt: str, chat: bool, system: str | None = None) -> list[int]: ...
        def _response_ids(self, response: str) -> list[int]: ...

    #: The shortest shared prefix (in tokens) worth reusing from the reference cache.
    reuse_min_prefix: int = 16

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
        r_max = max(len(r) for _, r in pairs)
        ids, mask, pos = left_padded([p + r for p, r in pairs], self.pad_id, self.device)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            logits_to_keep=r_max + 1,
            use_cache=False,
        )
        self.tokens_processed += sum(lens)
        # Kept positions t-r_max-1 .. t-1; position j predicts token j+1 (_gather drops the last).
        return [self._gather(out.logits[i], r) for i, (_, r) in enumerate(pairs)]

    def next_token_logprobs(
        self, prompts: Sequence[str], chat: bool = True, batch_size: int = 8
    ) -> np.ndarray:
        """An (n_prompts, vocab) float32 array: log p(next token | prompt) at the end of each
        prompt (chat-formatted unless ``chat=False``, then raw text as ``token_logprobs(...,
        chat=False)`` reads it). Costs one forward pass per prompt, longest first, in
        ``ceil(n / batch_size)`` model calls; only the last position's logits are computed."""
        if isinstance(prompts, str):
            raise InputError("prompts must be a list of strings, not one string")
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        seqs = [self._prompt_ids(p, chat) for p in prompts]
        out = np.empty((len(seqs), 0), dtype=np.float32)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        with self.timed(), torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask, pos = left_padded([seqs[i] for i in idx], self.pad_id, self.device)
                logits = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=pos,
                    logits_to_keep=1,
                    use_cache=False,
                ).logits[:, -1]
                rows = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
                if out.shape[1] == 0:
                    out = np.empty((len(seqs), rows.shape[1]), dtype=np.float32)
                out[idx] = rows
                self.cost.forward_passes += len(idx)
                self.cost.batches += 1
                self.tokens_processed += sum(len(seqs[i]) for i in idx)
        return out

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
        no pair can use the current reference (none set, or another prompt family), or all pairs
        share one prompt that the reference covers so little that running it afresh costs fewer
        tokens (a judge's options after a new prompt), the first pair is run alone with its cache
        kept and becomes the reference. Results equal ``reuse_prefix=False`` up to float
        rounding.

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
                if not any(reuse) or _rebase_is_cheaper(pairs, reuse):
                    # no reference for this prompt family, or one prompt with many responses that
                    # shares too little with it: the first pair sets the reference
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
