"""A causal language model with the few operations attribution needs.

:class:`LanguageModel` wraps a Hugging Face causal LM and its tokenizer. It formats chat prompts,
generates greedily, scores responses (per-token and summed log-probabilities, batched with left
padding) and builds a :class:`~attribkit.core.gradient.GradientScorer` over input embeddings.
It is a :class:`~attribkit.core.cost.CostMeter`: ``lm.cost`` counts every sequence it evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.gradient import GradientScorer
from attribkit.core.units import TextUnits, Units
from attribkit.models.pairs import broadcast_pairs

__all__ = ["LanguageModel"]


class LanguageModel(CostMeter):
    """A causal LM plus tokenizer.

    Args:
        model: a Hugging Face causal LM (``AutoModelForCausalLM``); it is put in eval mode.
        tokenizer: its tokenizer (a fast tokenizer is needed for gradient units).
        name: a short name used in results and reprs (e.g. ``"smollm2"``).

    Cost accounting (``self.cost``): ``forward_passes`` += one per sequence evaluated,
    ``batches`` += one per model call; ``generate`` counts one forward pass per generated token.
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
        Costs one forward pass per generated token."""
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
        return str(self.tokenizer.decode(new, skip_special_tokens=True)).strip()

    # ------------------------------------------------------------------ scoring

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
        # Kept positions t-r_max-1 .. t-1; position j predicts token j+1, so drop the last.
        logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
        res = []
        for i, (_, r) in enumerate(pairs):
            rt = torch.tensor(r, dtype=torch.long, device=logp.device)
            rows = logp[i, r_max - len(r) :]
            res.append(rows.gather(-1, rt[:, None])[:, 0].double().cpu().numpy())
        return res

    def token_logprobs(
        self,
        prompts: str | Sequence[str],
        responses: str | Sequence[str],
        chat: bool = True,
        batch_size: int = 8,
    ) -> list[np.ndarray]:
        """log p(response token | prompt, earlier response tokens) for each pair: a list of arrays,
        one value per response token. Prompts are chat-formatted unless ``chat=False``.
        Costs one forward pass per pair, in ``ceil(n / batch_size)`` model calls."""
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        pairs = self.encode_pairs(prompts, responses, chat)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        result: list[np.ndarray | None] = [None] * len(pairs)
        with self.timed(), torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                vals = self._score_batch([pairs[i] for i in idx])
                for i, v in zip(idx, vals, strict=True):
                    if not np.isfinite(v).all():
                        raise ScorerError(
                            "the model returned a non-finite log-probability; check the model "
                            "weights and dtype (float16 on CPU can overflow)"
                        )
                    result[i] = v
                self.cost.forward_passes += len(idx)
                self.cost.batches += 1
        return [r for r in result if r is not None]

    def logprob(
        self,
        prompts: str | Sequence[str],
        responses: str | Sequence[str],
        chat: bool = True,
        batch_size: int = 8,
    ) -> np.ndarray:
        """Summed log-probability of each response given its prompt: an array, one per pair.
        Costs one forward pass per pair (see :meth:`token_logprobs`)."""
        return np.array(
            [v.sum() for v in self.token_logprobs(prompts, responses, chat, batch_size)]
        )

    # ------------------------------------------------------------------ gradients

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
        Building it costs nothing; each row evaluated costs one forward (+ one backward) pass.
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
        if isinstance(baseline, torch.Tensor):
            base = baseline.to(x)
        elif baseline == "zero":
            base = torch.zeros_like(x)
        elif baseline == "pad":
            with torch.no_grad():
                pad = emb(torch.tensor([self.pad_id], device=self.device)).float()
            base = pad.expand_as(x).clone()
        else:
            raise InputError(f"unknown baseline {baseline!r}: use 'zero', 'pad' or a tensor")

        n_resp, t = len(resp), len(ids) + len(resp)
        targets = torch.tensor(resp, dtype=torch.long, device=self.device)
        model, dtype = self.model, self.dtype

        def forward(xb: torch.Tensor) -> torch.Tensor:
            b = xb.shape[0]
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

    # ------------------------------------------------------------------ saving

    def save(self, path: str | Path) -> Path:
        """Write the model (safetensors) and tokenizer to ``path`` atomically; ``load(path)``
        reads it back. No model calls."""
        from attribkit.models.loading import save_model

        return save_model(self.model, self.tokenizer, Path(path))
