"""The :class:`LanguageModel` adapter: a Hugging Face causal LM and its tokenizer.

This module holds the class itself — construction, chat formatting, token ids, character offsets
and token units, generation (greedy or sampled), saving — combined with the mixins that do the model work:
:mod:`~attribkit.models.lm.scoring` (log-probabilities, batching, prefix key-value reuse),
:mod:`~attribkit.models.lm.attention` (attention rows) and
:mod:`~attribkit.models.lm.gradients` (the embedding-level gradient scorer).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from attribkit.core.errors import InputError
from attribkit.core.units import TextUnits
from attribkit.models.lm.attention import AttentionMixin
from attribkit.models.lm.gradients import GradientMixin
from attribkit.models.lm.scoring import ScoringMixin, _Reference
from attribkit.models.sampling import check_sampling

__all__ = ["LanguageModel", "Spans"]

Spans = list[tuple[int, int]]


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (CPU, and ``device`` when it is an accelerator) for the block and
    restore the previous states after it, so a seeded call leaves the caller's RNG untouched."""
    devices = [device] if device.type != "cpu" else []
    kind = device.type if device.type != "cpu" else "cuda"
    with torch.random.fork_rng(devices=devices, device_type=kind):
        torch.manual_seed(seed)
        yield


class LanguageModel(ScoringMixin, AttentionMixin, GradientMixin):
    """A causal LM plus tokenizer.

    Args:
        model: a Hugging Face causal LM (``AutoModelForCausalLM``); it is put in eval mode.
        tokenizer: its tokenizer (a fast tokenizer is needed for gradient units).
        name: a short name used in results and reprs (e.g. ``"smollm2"``).

    Cost accounting (``self.cost``): ``forward_passes`` += one per sequence evaluated,
    ``batches`` += one per model call; ``generate`` counts one model call per decoding step and
    one forward pass per step and row (one per generated token for a single answer), and its new
    tokens in ``generated_tokens``.
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
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        n: int = 1,
        prefill: str | None = None,
    ) -> str | list[str]:
        """Continuation of ``prompt`` (chat-formatted unless ``chat=False``), stopped at end of
        turn / EOS; returns only the new text without special tokens: a ``str`` for ``n == 1``,
        a list of ``n`` strings for ``n > 1``.

        ``temperature=0`` (the default) is greedy decoding, exactly as before; ``temperature > 0``
        samples from the softmax at that temperature, restricted to the nucleus ``top_p`` (no
        top-k cut). ``seed`` makes sampling reproducible without touching the caller's global
        torch RNG (its state is saved and restored around the call); ``seed=None`` draws from the
        global RNG. ``n > 1`` samples ``n`` answers in one batched ``model.generate`` call (the
        same seed and ``n`` give the same list; sample ``i`` of a batch of ``n`` is not the
        ``n == 1`` sample). Greedy with ``n > 1`` runs once and returns ``n`` copies.
        ``prefill``: text the answer starts with, placed after the chat template's assistant
        header (or after the raw prompt with ``chat=False``) and tokenized on its own as a
        response is; it is not part of the returned text, whose leading whitespace is then kept
        (``prefill + text`` is the whole answer).

        Costs, per decoding step, one model call (``cost.batches``) running every row of the
        batch (``cost.forward_passes`` += rows, i.e. ``n`` while sampling, 1 greedy: one pass per
        generated token when ``n == 1``); ``cost.generated_tokens`` += the real new tokens of all
        answers (up to and including each one's stop token, no padding);
        ``tokens_processed`` += rows x (prompt + prefill) + those new tokens.
        """
        check_sampling(max_new_tokens, temperature, top_p, seed, n, prefill)
        pre_ids = self.tokenizer(prefill, add_special_tokens=False)["input_ids"] if prefill else []
        ids = torch.tensor([self._prompt_ids(prompt, chat, system) + list(pre_ids)])
        ids = ids.to(self.device)
        sample = temperature > 0
        rows = n if sample else 1
        if sample:
            opts: dict[str, Any] = {
                "do_sample": True,
                "temperature": float(temperature),
                "top_p": float(top_p),
                "top_k": 0,
                "num_return_sequences": rows,
            }
        else:
            opts = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        with self.timed(), torch.inference_mode(), self._rng(seed if sample else None):
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                eos_token_id=self.stop_ids or None,
                pad_token_id=self.pad_id,
                **opts,
            )
        new = out[:, ids.shape[1] :]
        steps = int(new.shape[1])
        stops = set(self.stop_ids)
        texts, real = [], 0
        for row in new.tolist():
            k = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            real += k
            texts.append(self._decode_new(row[:k], list(pre_ids)))
        self.cost.forward_passes += rows * steps
        self.cost.batches += steps
        self.cost.generated_tokens += real
        self.tokens_processed += rows * int(ids.shape[1]) + real
        if n == 1:
            return texts[0]
        return texts if sample else texts * n

    def _decode_new(self, new: list[int], pre_ids: list[int]) -> str:
        """The text of the new tokens ``new`` without special tokens: stripped, or with a prefill
        (``pre_ids``) decoded after it so that word boundaries come out right, right-stripped."""
        if not pre_ids:
            return str(self.tokenizer.decode(new, skip_special_tokens=True)).strip()
        full = str(self.tokenizer.decode(pre_ids + new, skip_special_tokens=True))
        head = str(self.tokenizer.decode(pre_ids, skip_special_tokens=True))
        if full.startswith(head):
            return full[len(head) :].rstrip()
        return str(self.tokenizer.decode(new, skip_special_tokens=True)).rstrip()

    def _rng(self, seed: int | None) -> contextlib.AbstractContextManager[Any]:
        """A context seeding torch's RNG with ``seed`` and restoring the caller's RNG state (CPU
        and this model's accelerator) afterwards; a no-op for ``seed=None``."""
        if seed is None:
            return contextlib.nullcontext()
        return _seeded(seed, self.device)

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
