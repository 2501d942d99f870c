"""ERASER faithfulness: comprehensiveness and sufficiency, averaged over top-k bins (AOPC).

DeYoung et al., 'ERASER: A Benchmark to Evaluate Rationalized NLP Models', 2020.

For each fraction in ``fractions`` the top ``k = max(1, round(fraction · n))`` units of the
ranking (Python ``round``, half to even; at most n) form the "rationale":

- comprehensiveness = f(all) − f(all minus the rationale): how much the score drops when the
  top units are removed. **Higher is better.**
- sufficiency = f(all) − f(only the rationale kept): how much is lost when only the top units
  remain. **Lower is better** (it may be negative when the rationale alone scores higher).

Both are reported per bin and as their mean over bins (the AOPC form of the paper). Unscored
(NaN) units are ranked last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.jsonio import to_json
from attribkit.evaluation.curves import _check_scorer, rank_units

DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)


@dataclass
class EraserResult:
    """One ERASER metric: per-bin values and their mean.

    ``values[j] = f(all) − f(mask_j)`` where ``mask_j`` removes (comprehensiveness) or keeps only
    (sufficiency) the top ``k[j]`` units; ``mean`` is their average; ``full_value`` is f(all).
    """

    metric: str
    fractions: tuple[float, ...]
    k: list[int]
    values: np.ndarray
    mean: float
    full_value: float
    cost: Cost = field(default_factory=Cost)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return to_json(
            {
                "metric": self.metric,
                "fractions": list(self.fractions),
                "k": self.k,
                "values": self.values,
                "mean": self.mean,
                "full_value": self.full_value,
                "cost": self.cost.to_dict(),
            }
        )


def _bins(n: int, fractions: Sequence[float]) -> tuple[tuple[float, ...], list[int]]:
    fr = tuple(float(f) for f in fractions)
    if not fr:
        raise InputError("fractions is empty: give at least one fraction in (0, 1]")
    bad = [f for f in fr if not (0.0 < f <= 1.0)]
    if bad:
        raise InputError(f"fractions must lie in (0, 1]; got {bad}")
    return fr, [min(n, max(1, round(f * n))) for f in fr]


def _top_masks(attribution: Attribution, ks: list[int]) -> np.ndarray:
    """(len(ks), n) boolean masks, True on the top-k units of the ranking."""
    n = len(attribution)
    position = np.empty(n, dtype=int)
    position[rank_units(attribution, "most")] = np.arange(n)
    return position[None, :] < np.asarray(ks)[:, None]


def _run(
    attribution: Attribution, scorer: Any, fractions: Sequence[float], metrics: Sequence[str]
) -> dict[str, EraserResult]:
    n = _check_scorer(attribution, scorer)
    fr, ks = _bins(n, fractions)
    top = _top_masks(attribution, ks)
    blocks = {"comprehensiveness": ~top, "sufficiency": top}
    masks = np.concatenate([np.ones((1, n), dtype=bool), *(blocks[m] for m in metrics)])
    with measure(scorer) as cost:
        values = np.asarray(scorer(masks), dtype=float)
    full = float(values[0])
    out = {}
    for j, m in enumerate(metrics):
        v = full - values[1 + j * len(ks) : 1 + (j + 1) * len(ks)]
        out[m] = EraserResult(m, fr, ks, v, float(v.mean()), full, cost)
    return out


def comprehensiveness(
    attribution: Attribution, scorer: Any, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> EraserResult:
    """ERASER comprehensiveness (AOPC): mean over bins of f(all) − f(all minus top-k units).

    Higher is better. Cost: one scorer call with 1 + len(fractions) masks (cached ones free).
    """
    return _run(attribution, scorer, fractions, ["comprehensiveness"])["comprehensiveness"]


def sufficiency(
    attribution: Attribution, scorer: Any, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> EraserResult:
    """ERASER sufficiency (AOPC): mean over bins of f(all) − f(only the top-k units kept).

    Lower is better. Cost: one scorer call with 1 + len(fractions) masks (cached ones free).
    """
    return _run(attribution, scorer, fractions, ["sufficiency"])["sufficiency"]


def eraser(
    attribution: Attribution, scorer: Any, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, EraserResult]:
    """Both ERASER metrics, ``{"comprehensiveness": ..., "sufficiency": ...}``.

    Cost: one scorer call with 1 + 2·len(fractions) masks; both results carry that shared cost.
    """
    return _run(attribution, scorer, fractions, ["comprehensiveness", "sufficiency"])
