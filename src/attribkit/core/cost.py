"""Cost accounting: how many model calls and seconds an attribution took, and budgets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

from attribkit.core.errors import BudgetExhausted


@dataclass
class Cost:
    """Model calls and wall time.

    ``forward_passes`` counts inputs evaluated by the model (one sequence, one image, one row of
    features), whatever the batch size; ``batches`` counts calls into the model (one batched
    forward); ``backward_passes`` counts gradient computations per input; ``cache_hits`` counts
    evaluations answered from the cache at no model cost; ``generated_tokens`` counts tokens a
    model generated (resampling, judges' answers); ``judge_calls`` counts requests to a judge
    model (local or remote).
    """

    forward_passes: int = 0
    backward_passes: int = 0
    batches: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    generated_tokens: int = 0
    judge_calls: int = 0

    def copy(self) -> Cost:
        return Cost(**asdict(self))

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __sub__(self, other: Cost) -> Cost:
        return Cost(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    @property
    def model_calls(self) -> int:
        """Forward plus backward passes: the number the papers report as cost."""
        return self.forward_passes + self.backward_passes

    def to_dict(self) -> dict[str, float | int]:
        d: dict[str, float | int] = asdict(self)
        d["model_calls"] = self.model_calls
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Cost:
        return cls(**{f.name: d.get(f.name, 0) for f in fields(cls)})

    def __str__(self) -> str:
        parts = [f"{self.forward_passes} forward"]
        if self.backward_passes:
            parts.append(f"{self.backward_passes} backward")
        if self.cache_hits:
            parts.append(f"{self.cache_hits} cached")
        if self.generated_tokens:
            parts.append(f"{self.generated_tokens} generated tokens")
        if self.judge_calls:
            parts.append(f"{self.judge_calls} judge calls")
        return ", ".join(parts) + f", {self.seconds:.2f}s"


@dataclass
class Budget:
    """Upper bounds on what a method may spend. ``None`` means unbounded.

    Methods that can stop early (search, sampling) read it; the scorer enforces
    ``forward_passes`` and raises :class:`BudgetExhausted` beyond it.
    """

    forward_passes: int | None = None
    seconds: float | None = None

    def check(self, spent: Cost, extra_forward: int = 0) -> None:
        """Raise BudgetExhausted if spending ``extra_forward`` more passes would break the budget."""
        if (
            self.forward_passes is not None
            and spent.forward_passes + extra_forward > self.forward_passes
        ):
            raise BudgetExhausted(
                f"budget of {self.forward_passes} forward passes exhausted "
                f"({spent.forward_passes} spent, {extra_forward} more requested); "
                "raise Budget(forward_passes=...) or choose a cheaper method"
            )
        if self.seconds is not None and spent.seconds > self.seconds:
            raise BudgetExhausted(
                f"budget of {self.seconds:.1f}s exhausted ({spent.seconds:.1f}s spent); "
                "raise Budget(seconds=...) or choose a cheaper method"
            )


class CostMeter:
    """A cumulative :class:`Cost` owned by anything that calls a model (scorers, adapters,
    tasks). Everything that runs a model adds what it ran to ``meter.cost``; a method reports
    ``with measure(meter) as cost: ...`` — the one way cost is counted in attribkit."""

    def __init__(self) -> None:
        self.cost = Cost()

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.cost.seconds += time.perf_counter() - start


@contextmanager
def measure(meter: CostMeter) -> Iterator[Cost]:
    """Yield a Cost that, on exit, holds what ``meter`` spent inside the block, with wall time.

    Usage: ``with measure(scorer) as cost: ...`` then read ``cost`` after the block.
    """
    before = meter.cost.copy()
    start = time.perf_counter()
    out = Cost()
    try:
        yield out
    finally:
        delta = meter.cost - before
        delta.seconds = time.perf_counter() - start
        for f in fields(Cost):
            setattr(out, f.name, getattr(delta, f.name))
