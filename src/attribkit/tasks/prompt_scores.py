"""Teacher-forced scores of one fixed continuation after many prompts, cached per prompt: what
the context and reasoning tasks value their unit subsets with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attribkit.core.cost import Cost, CostMeter


def lm_meter(lm: Any) -> CostMeter:
    """The LM's own meter when it has one (it counts every sequence it scores), else a new
    meter that the caller counts on."""
    return lm if isinstance(getattr(lm, "cost", None), Cost) else CostMeter()


class PromptLogprobs:
    """Per-token log-probabilities of ``continuation`` after each prompt, cached per prompt.

    With a local LM (one that has ``set_reference``) and ``reuse_prefix``, the first call
    scores ``reference`` (the full prompt) in one pass and keeps its key-value cache; every
    later prompt then runs only the tokens after its common prefix with it. Passes are counted
    on ``meter`` when the LM has no meter of its own. ``score_kw`` (e.g. ``chat=False``) goes
    to the LM's ``set_reference`` and ``token_logprobs``.
    """

    def __init__(
        self,
        lm: Any,
        continuation: str,
        reference: str,
        meter: CostMeter,
        *,
        reuse_prefix: bool = True,
        **score_kw: Any,
    ) -> None:
        self.lm, self.continuation, self.reference, self.meter = lm, continuation, reference, meter
        self.reuse_prefix, self.score_kw = reuse_prefix, score_kw
        self.cache: dict[str, np.ndarray] = {}
        self._reference_set = False

    def _count(self, passes: int) -> None:
        if self.meter is not self.lm:  # an LM without a meter: count here
            self.meter.cost.forward_passes += passes
            self.meter.cost.batches += 1

    def __call__(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """One array per prompt. Costs one forward pass per prompt not seen before (the first
        with prefix reuse is the full reference prompt)."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if todo:
            kwargs = dict(self.score_kw)
            if self.reuse_prefix and hasattr(self.lm, "set_reference"):
                if not self._reference_set:
                    full = self.lm.set_reference(self.reference, self.continuation, **self.score_kw)
                    self._reference_set = True
                    self._count(1)
                    if full is not None:
                        self.cache[self.reference] = np.asarray(full, dtype=float)
                        todo = [p for p in todo if p != self.reference]
                kwargs["reuse_prefix"] = True
            if todo:
                values = self.lm.token_logprobs(todo, self.continuation, **kwargs)
                self._count(len(todo))
                self.cache.update(
                    zip(todo, (np.asarray(v, dtype=float) for v in values), strict=True)
                )
        return [self.cache[p] for p in prompts]
