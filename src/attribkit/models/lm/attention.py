"""Attention rows from the response-predicting positions to the prompt, per (layer, head).

:class:`AttentionMixin` gives :class:`~attribkit.models.lm.LanguageModel` ``attention_rows``. For
the Llama family (:data:`ROW_FAMILIES`) the rows are recomputed from each needed layer's
attention input, captured by a forward pre-hook: q/k projections, optional per-head q/k norm,
rotate-half RoPE with the model's own cos/sin, grouped-query head mapping, causal (and sliding
window) mask and softmax, for the response rows only; the forward stops after the last needed
layer. Other models are read from eager ``output_attentions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError

if TYPE_CHECKING:
    from attribkit.models.lm.adapter import Spans

__all__ = ["ROW_FAMILIES", "AttentionMixin"]

#: Model types whose attention rows :meth:`LanguageModel.attention_rows` recomputes from the
#: attention inputs (q/k projections, optional per-head q/k norm, rotate-half RoPE, GQA).
ROW_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


class _StopForward(Exception):
    """Raised by an attention hook once the last needed layer is read, to skip the rest."""


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class AttentionMixin(CostMeter):
    """Attention rows for :class:`~attribkit.models.lm.LanguageModel` (see the module
    docstring); one counted forward pass per call."""

    if TYPE_CHECKING:  # provided by LanguageModel
        model: Any
        tokens_processed: int

        @property
        def device(self) -> torch.device: ...
        def _prompt_offsets(
            self, prompt: str, chat: bool, system: str | None
        ) -> tuple[list[int], list[tuple[int, int]]]: ...
        def _response_ids(self, response: str) -> list[int]: ...

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
