"""Any Python callable as a black-box model: only its outputs are seen, never its gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.scorer import Scorer
from attribkit.core.units import Units


class CallableModel(CostMeter):
    """A black-box model ``fn(batch) -> (B,) or (B, C)`` values.

    Args:
        fn: with ``batched=True`` (default), called on a whole batch of composed inputs (a list of
            strings, an array of feature rows or images: what ``Units.compose_batch`` builds) and
            returning one value or one row of C values per input. With ``batched=False``, called
            on one input at a time and returning a number or a length-C vector.
        batched: see ``fn``.
        name: a name stored in scorer targets (default: the function's name).

    ``cost.forward_passes`` counts inputs evaluated; ``cost.batches`` counts calls to ``fn``.
    """

    def __init__(
        self, fn: Callable[[Any], Any], batched: bool = True, name: str | None = None
    ) -> None:
        super().__init__()
        if not callable(fn):
            raise InputError(f"CallableModel needs a callable, got {type(fn).__name__}")
        self.fn, self.batched = fn, batched
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__

    def __repr__(self) -> str:
        return f"CallableModel({self.name!r}, batched={self.batched}, cost={self.cost})"

    @staticmethod
    def _as_array(out: Any, what: str) -> np.ndarray:
        if hasattr(out, "detach"):  # a torch tensor
            out = out.detach().cpu().numpy()
        try:
            return np.asarray(out, dtype=float)
        except (TypeError, ValueError) as e:
            raise ScorerError(
                f"{what} returned {type(out).__name__} that is not numeric: {e}"
            ) from e

    def predict(self, inputs: Any) -> np.ndarray:
        """Outputs for a batch of inputs: shape (B,) or (B, C).

        Costs one forward pass per input: one call to ``fn`` if batched, else one per input.
        """
        if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__len__"):
            raise InputError(
                f"predict takes a batch of inputs (a list or an array with a batch axis), got "
                f"{type(inputs).__name__}; wrap a single input in a list"
            )
        n = len(inputs)
        if n == 0:
            raise InputError("predict got an empty batch: pass at least one input")
        with self.timed():
            if self.batched:
                out = self._as_array(self.fn(inputs), self.name)
                self.cost.batches += 1
            else:
                # The only per-input loop in attribkit: the user declared fn unbatched.
                rows = []
                for item in inputs:
                    rows.append(self._as_array(self.fn(item), self.name))
                    self.cost.batches += 1
                shapes = {r.shape for r in rows}
                if len(shapes) != 1:
                    raise ScorerError(
                        f"{self.name} returned outputs of different shapes {sorted(shapes)} for "
                        "different inputs; it must return a number or a fixed-length vector"
                    )
                out = np.stack(rows)
            self.cost.forward_passes += n
        if out.ndim == 0 or out.shape[0] != n or out.ndim > 2:
            raise ScorerError(
                f"{self.name} returned shape {out.shape} for {n} inputs; it must return "
                f"({n},) values or ({n}, n_outputs)"
                + ("" if self.batched else " (a number or a vector per input)")
            )
        return out

    def scorer(
        self, units: Units, target: int | None = None, batch_size: int = 32, **scorer_kw: Any
    ) -> Scorer:
        """A :class:`Scorer` whose value for a mask is ``fn`` on ``units.compose(mask)``.

        When ``fn`` returns (B, C) outputs, ``target`` is the column to explain (required);
        when it returns (B,), leave ``target`` None. Costs nothing to build; each evaluated mask
        costs one forward pass. Extra keyword arguments (``budget``, ``progress``, ``cache``) go
        to :class:`Scorer`.
        """
        if target is not None and (
            isinstance(target, (bool, np.bool_))
            or not isinstance(target, (int, np.integer))
            or target < 0
        ):
            raise InputError(f"target must be a non-negative column index, got {target!r}")

        def value(batch: Any) -> np.ndarray:
            out = self.predict(batch)
            if out.ndim == 1:
                if target is not None:
                    raise InputError(
                        f"target={target} was given but {self.name} returns one value per input; "
                        "leave target=None"
                    )
                return out
            if target is None:
                raise InputError(
                    f"{self.name} returns {out.shape[1]} values per input: pass target=<column> "
                    f"(0 to {out.shape[1] - 1}) to choose which one to explain"
                )
            if target >= out.shape[1]:
                raise InputError(
                    f"target column {target} is out of range: {self.name} returns {out.shape[1]} "
                    f"values per input (0 to {out.shape[1] - 1})"
                )
            return out[:, target]

        desc = {
            "kind": "callable_output",
            "model": self.name,
            "column": None if target is None else int(target),
        }
        return Scorer(units, value, target=desc, batch_size=batch_size, **scorer_kw)
