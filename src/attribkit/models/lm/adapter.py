"""The :class:`LanguageModel` adapter: a Hugging Face causal LM and its tokenizer.

This module holds the class itself — construction, chat formatting, token ids, character offsets
and token units, greedy generation, saving — combined with the mixins that do the model work:
:mod:`~attribkit.models.lm.scoring` (log-probabilities, batching, prefix key-value reuse),
:mod:`~attribkit.models.lm.attention` (attention rows) and
:mod:`~attribkit.models.lm.gradients` (the embedding-level gradient scorer).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from attribkit.core.errors import InputError
from attribkit.core.units import TextUnits
from attribkit.models.lm.attention import AttentionMixin
from attribkit.models.lm.gradients import GradientMixin
from attribkit.models.lm.scoring import ScoringMixin, _Reference

__all__ = ["LanguageModel", "Spans"]

Spans = list[tuple[int, int]]


class LanguageModel(ScoringMixin, AttentionMixin, GradientMixin):
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
        Costs one forward pass per generated token (also counted in ``cost.generated_tokens``);
        ``tokens_processed`` += prompt + new tokens."""
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
        self.cost.generated_tokens += int(new.numel())
        self.tokens_processed += int(ids.shape[1]) + int(new.numel())
        return str(self.tokenizer.decode(new, skip_special_tokens=True)).strip()

    # ------------------------------------------------------------------ token spans

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

    # ------------------------------------------------------------------ saving

    def save(self, path: str | Path) -> Path:
        """Write the model (safetensors) and tokenizer to ``path`` atomically; ``load(path)``
        reads it back. No model calls."""
        from attribkit.models.loading import save_model

        return save_model(self.model, self.tokenizer, Path(path))
