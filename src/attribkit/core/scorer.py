"""The scorer: a model plus a target, asked "how much do you still believe this output when only
these units are present?" for a batch of unit masks at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from attribkit.core.cost import Budget, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.units import Units

ValueFn = Callable[[Any], Sequence[float] | np.ndarray]


class Scorer(CostMeter):
    """``scorer(masks) -> one float per mask``: batched, cached and counted.

    ``fn`` receives a batch of composed inputs (what ``units.compose_batch`` returns: a list of
    strings for text, an array for features and images) and returns one number per input — a
    log-probability, a class probability, a judge's verdict. Repeated masks are answered from a
    cache and cost nothing; ``cost.forward_passes`` counts inputs the model actually evaluated.

    Args:
        units: how the input is split and rebuilt.
        fn: the batched value function.
        target: a JSON-serialisable description of what is being explained (stored in results).
        batch_size: most inputs sent to ``fn`` in one call.
        budget: optional cap on forward passes / seconds; exceeding it raises ``BudgetExhausted``.
        progress: optional callback receiving the number of new forward passes after each batch.
        meter: optional :class:`CostMeter` (e.g. the model adapter) whose forward passes and
            batches during each call are counted instead of one pass per input — for value
            functions that answer some inputs from their own cache.
        task_kind: the kind of the task this scorer belongs to, recorded in its results.
    """

    def __init__(
        self,
        units: Units,
        fn: ValueFn,
        target: Any = None,
        batch_size: int = 32,
        cache: bool = True,
        budget: Budget | None = None,
        progress: Callable[[int], None] | None = None,
        meter: CostMeter | None = None,
        task_kind: str | None = None,
    ) -> None:
        super().__init__()
        self.meter, self.task_kind = meter, task_kind
        if len(units) == 0:
            raise InputError("there are no units to attribute: the input is empty")
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        self.units, self.fn, self.target = units, fn, target
        self.batch_size, self.budget, self.progress = batch_size, budget, progress
        self._cache: dict[bytes, float] | None = {} if cache else None

    @property
    def n_units(self) -> int:
        return len(self.units)

    def __repr__(self) -> str:
        return f"Scorer({self.units!r}, target={self.target!r}, cost={self.cost})"

    def __call__(self, masks: Any) -> np.ndarray:
        """Return the value of every mask (shape (B,)); evaluates only masks not seen before."""
        m = self.units.check_masks(masks)
        keys = [np.packbits(row).tobytes() + len(row).to_bytes(4, "little") for row in m]
        cache = self._cache if self._cache is not None else {}
        todo: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in cache and k not in todo:
                todo[k] = i
        self.cost.cache_hits += len(keys) - len(todo)
        if todo and self.budget is not None:
            self.budget.check(self.cost, extra_forward=len(todo))
        order = list(todo.items())
        fresh: dict[bytes, float] = {}
        with self.timed():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                rows = m[[i for _, i in chunk]]
                before = self.meter.cost.copy() if self.meter is not None else None
                values = self._evaluate(rows)
                fresh.update(zip((k for k, _ in chunk), values, strict=True))
                if before is not None and self.meter is not None:
                    spent = self.meter.cost - before
                    passes, batches = spent.forward_passes, spent.batches
                else:
                    passes, batches = len(chunk), 1
                self.cost.forward_passes += passes
                self.cost.batches += batches
                if self.progress is not None:
                    self.progress(len(chunk))
        if self._cache is not None:
            self._cache.update(fresh)
        lookup = {**fresh, **cache} if self._cache is None else cache
        return np.array([lookup[k] for k in keys], dtype=float)

    def _evaluate(self, rows: np.ndarray) -> np.ndarray:
        out = np.asarray(self.fn(self.units.compose_batch(rows)), dtype=float).reshape(-1)
        if out.shape[0] != rows.shape[0]:
            raise ScorerError(
                f"the value function returned {out.shape[0]} values for {rows.shape[0]} inputs; "
                "it must return exactly one number per input"
            )
        bad = ~np.isfinite(out)
        if bad.any():
            kept = np.nonzero(rows[int(np.argmax(bad))])[0].tolist()
            raise ScorerError(
                f"the value function returned {out[bad][0]} for the input that keeps units {kept}; "
                "scores must be finite numbers — check the model output and the target "
                "(e.g. a probability of exactly 0 has log -inf)"
            )
        return out

    def full(self) -> float:
        """Value with every unit kept, f(all). One forward pass unless cached."""
        return float(self(np.ones(self.n_units, dtype=bool))[0])

    def empty(self) -> float:
        """Value with every unit removed, f(none). One forward pass unless cached."""
        return float(self(np.zeros(self.n_units, dtype=bool))[0])

    def clear_cache(self) -> None:
        if self._cache is not None:
            self._cache.clear()
