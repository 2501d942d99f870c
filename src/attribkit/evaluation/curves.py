"""Deletion and insertion curves: remove (or add back) units in ranking order and watch the score.

Petsiuk et al., 'RISE: Randomized Input Sampling for Explanation of Black-box Models', 2018
(deletion/insertion); Samek et al., 'Evaluating the Visualization of What a Deep Neural Network
Has Learned', 2017 (MoRF/LeRF perturbation curves).

Reading the area under the curve (AUC, over the fraction axis 0..1):

- deletion, ``order="most"`` (MoRF): the most relevant units go first; a faithful attribution
  makes the score collapse early, so **lower AUC is better**;
- deletion, ``order="least"`` (LeRF): the least relevant units go first; the score should hold,
  so **higher AUC is better**;
- insertion, ``order="most"``: the most relevant units come back first; the score should recover
  early, so **higher AUC is better** (and for ``order="least"`` lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError

Order = Literal["most", "least"]


def rank_units(attribution: Attribution, order: Order = "most") -> np.ndarray:
    """Unit indices in removal order: ``"most"`` = highest score first, ``"least"`` = lowest
    first. Unscored (NaN) units always come last; ties keep unit order."""
    if order not in ("most", "least"):
        raise InputError(f"order must be 'most' (MoRF) or 'least' (LeRF), got {order!r}")
    v = attribution.vector
    key = -v if order == "most" else v
    key = np.where(np.isnan(key), np.inf, key)
    return np.argsort(key, kind="stable")


def _check_scorer(attribution: Attribution, scorer: Any) -> int:
    n = len(attribution)
    if scorer.n_units != n:
        raise InputError(
            f"the attribution has {n} units but the scorer has {scorer.n_units}; evaluate an "
            "attribution with the scorer (same input and units) that produced it"
        )
    return n


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    if len(x) < 2:
        return float("nan")
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


@dataclass
class Curve:
    """A deletion or insertion curve.

    Attributes:
        fractions: x axis, the fraction of units removed (deletion) or inserted (insertion), 0..1.
        counts: the number of units removed/inserted at each point.
        values: the scorer's value at each point; ``values[0]`` is f(all) for deletion and
            f(none) for insertion, ``values[-1]`` the other one.
        auc: trapezoid area under ``values`` over ``fractions`` (in the scorer's units).
        normalized_auc: the same area after rescaling every value to
            ``(v - f(none)) / (f(all) - f(none))``, so the curve runs from 1 to 0 (deletion) or
            0 to 1 (insertion) whatever the input's raw score scale; 0.5 is what a straight line
            between the endpoints gives. ``NaN`` when f(all) == f(none).
        order: ``"most"`` (MoRF) or ``"least"`` (LeRF).
        kind: ``"deletion"`` or ``"insertion"``.
        full_value, empty_value: f(all) and f(none).
        cost: what evaluating the curve cost the scorer.
    """

    fractions: np.ndarray
    counts: np.ndarray
    values: np.ndarray
    auc: float
    normalized_auc: float
    order: str
    kind: str
    full_value: float
    empty_value: float
    cost: Cost = field(default_factory=Cost)

    @property
    def normalized_values(self) -> np.ndarray:
        """``(values - f(none)) / (f(all) - f(none))`` (all NaN when the endpoints are equal)."""
        span = self.full_value - self.empty_value
        if span == 0 or not np.isfinite(span):
            return np.full_like(self.values, np.nan)
        return (self.values - self.empty_value) / span

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite floats become None)."""
        from attribkit.core.jsonio import to_json

        return to_json(
            {
                "kind": self.kind,
                "order": self.order,
                "fractions": self.fractions,
                "counts": self.counts,
                "values": self.values,
                "auc": self.auc,
                "normalized_auc": self.normalized_auc,
                "full_value": self.full_value,
                "empty_value": self.empty_value,
                "cost": self.cost.to_dict(),
            }
        )


def _counts(n: int, steps: int | None) -> np.ndarray:
    if steps is None:
        return np.arange(n + 1)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise InputError(f"steps must be an integer >= 2 (number of curve points), got {steps!r}")
    return np.unique(np.round(np.linspace(0, n, min(int(steps), n + 1))).astype(int))


def _curve(
    attribution: Attribution, scorer: Any, steps: int | None, order: Order, kind: str
) -> Curve:
    n = _check_scorer(attribution, scorer)
    ranked = rank_units(attribution, order)
    counts = _counts(n, steps)
    # position[i] = where unit i sits in the removal/insertion order
    position = np.empty(n, dtype=int)
    position[ranked] = np.arange(n)
    touched = position[None, :] < counts[:, None]  # (points, n): units removed/inserted so far
    masks = ~touched if kind == "deletion" else touched
    with measure(scorer) as cost:
        values = np.asarray(scorer(masks), dtype=float)
    if kind == "deletion":
        full, empty = float(values[0]), float(values[-1])
    else:
        full, empty = float(values[-1]), float(values[0])
    fractions = counts / n
    span = full - empty
    normalized = _trapezoid((values - empty) / span, fractions) if span != 0 else float("nan")
    return Curve(
        fractions=fractions,
        counts=counts,
        values=values,
        auc=_trapezoid(values, fractions),
        normalized_auc=normalized,
        order=order,
        kind=kind,
        full_value=full,
        empty_value=empty,
        cost=cost,
    )


def deletion(
    attribution: Attribution, scorer: Any, steps: int | None = None, order: Order = "most"
) -> Curve:
    """Deletion curve: start with every unit kept and remove units in ranking order.

    ``order="most"`` removes the most relevant unit first (MoRF; **lower AUC is better**),
    ``"least"`` the least relevant first (LeRF; higher AUC is better). Unscored units go last.
    ``steps`` is the number of curve points: ``None`` gives every count 0..n (n + 1 points),
    otherwise evenly spaced counts (always including 0 and n).

    Cost: one scorer call with ``steps`` (default n + 1) masks; repeated masks are cached.
    """
    return _curve(attribution, scorer, steps, order, "deletion")


def insertion(
    attribution: Attribution, scorer: Any, steps: int | None = None, order: Order = "most"
) -> Curve:
    """Insertion curve: start with no unit kept and add units back in ranking order.

    ``order="most"`` inserts the most relevant unit first (**higher AUC is better**),
    ``"least"`` the least relevant first. Unscored units go last. ``steps`` as in
    :func:`deletion`.

    Cost: one scorer call with ``steps`` (default n + 1) masks; repeated masks are cached.
    """
    return _curve(attribution, scorer, steps, order, "insertion")


@dataclass
class DeletionInsertion:
    """Both MoRF curves and ``difference = insertion.auc - deletion.auc`` (higher is better)."""

    deletion: Curve
    insertion: Curve
    difference: float
    normalized_difference: float
    cost: Cost

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        from attribkit.core.jsonio import to_json

        return to_json(
            {
                "deletion": self.deletion.to_dict(),
                "insertion": self.insertion.to_dict(),
                "difference": self.difference,
                "normalized_difference": self.normalized_difference,
                "cost": self.cost.to_dict(),
            }
        )


def deletion_insertion(
    attribution: Attribution, scorer: Any, steps: int | None = None
) -> DeletionInsertion:
    """MoRF deletion and insertion curves plus the AUC difference (insertion − deletion).

    A larger difference means the ranking both destroys the score when its top units are removed
    and rebuilds it when they are inserted. Cost: two scorer calls (one per curve); for
    full-resolution curves 2n distinct masks, since f(all) and f(none) are shared via the cache.
    """
    d = deletion(attribution, scorer, steps=steps, order="most")
    i = insertion(attribution, scorer, steps=steps, order="most")
    return DeletionInsertion(
        deletion=d,
        insertion=i,
        difference=i.auc - d.auc,
        normalized_difference=i.normalized_auc - d.normalized_auc,
        cost=d.cost + i.cost,
    )
