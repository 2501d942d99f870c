"""Gradients over input embeddings: the :class:`~attribkit.core.gradient.GradientScorer` of a
prompt and response, its baselines, and the mapping of prompt tokens to units.

:class:`GradientMixin` gives :class:`~attribkit.models.lm.LanguageModel` ``gradient_scorer``,
``baseline_like`` and ``space_id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError
from attribkit.core.gradient import GradientScorer
from attribkit.core.units import TextUnits, Units

__all__ = ["GradientMixin"]


class GradientMixin(CostMeter):
    """Embedding-level gradients for :class:`~attribkit.models.lm.LanguageModel`: building a
    scorer costs nothing; its rows are counted on the scorer and their tokens on
    ``self.tokens_processed``."""

    if TYPE_CHECKING:  # provided by LanguageModel
        model: Any
        tokenizer: Any
        name: str
        pad_id: int
        tokens_processed: int

        @property
        def device(self) -> torch.device: ...
        @property
        def dtype(self) -> torch.dtype: ...
        def _prompt_offsets(
            self, prompt: str, chat: bool, system: str | None
        ) -> tuple[list[int], list[tuple[int, int]]]: ...
        def _response_ids(self, response: str) -> list[int]: ...
        @staticmethod
        def _token_units(
            prompt: str, spans: list[tuple[int, int]]
        ) -> tuple[list[int], TextUnits]: ...

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
