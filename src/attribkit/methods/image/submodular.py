"""Model-free subset searches for submodular attribution: greedy (SMDL) and bidirectional (LiMA).

Both rank ``m`` units by growing a subset S under a set function F, evaluated in batches:
``score(masks) -> values`` takes a (B, m) boolean array (row b keeps the units where it is
True) and returns B numbers. Each selection step sends all of its candidates in one call.

- :func:`greedy_order` — Chen et al., 'Less is More: Fewer Interpretable Region via Submodular
  Subset Selection', ICLR 2024: each step adds argmax_c F(S ∪ {c}) until every unit is placed;
  the order of selection is the ranking. F evaluations: m + (m − 1) + ... + 1 = m(m + 1)/2.
- :func:`bidirectional_order` — Chen et al., 'Less is More: Efficient Black-box Attribution via
  Minimal Interpretable Subset Selection', 2025 (LiMA): each iteration adds the best candidate
  to S and, among the ``pending`` candidates that scored lowest for S, the one with the lowest
  F(D ∪ {c}) to a list D of unimportant units; the ranking is S followed by D reversed. While
  more than ``pending`` units remain an iteration places two units for r + pending evaluations
  (r remaining); afterwards one unit for r evaluations; the last unit is placed without one.
  See :func:`bidirectional_evaluations` (833 at m = 50, pending = 8, against 1,275 for greedy:
  0.65×, the notes' 1,668 against 2,550 forward passes at two passes per evaluation, less the
  two passes LiMA spends on the full and the empty image after the search).

Ties go to the lowest unit index, so both searches are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from attribkit.core.errors import InputError, ScorerError

__all__ = [
    "SetFunction",
    "SubsetSearch",
    "bidirectional_evaluations",
    "bidirectional_order",
    "greedy_evaluations",
    "greedy_order",
]

#: A batched set function: (B, m) boolean masks → B values.
SetFunction = Callable[[np.ndarray], Sequence[float] | np.ndarray]


@dataclass
class SubsetSearch:
    """What a subset search found.

    ``order``: every unit index, most important first. ``values[j]``: F of the first j + 1 units
    of ``order`` where the search evaluated that prefix, else NaN (greedy evaluates every
    prefix; bidirectional only those of S). ``decrease_values[j]``: F(D_{j+1}), the first j + 1
    units put on the unimportant list (bidirectional only). ``evaluations``: masks sent to the
    set function; ``calls``: batched calls to it; ``n_selected``: units placed by argmax (the
    rest came from D, or, for the last one, by elimination).
    """

    order: np.ndarray
    values: np.ndarray
    evaluations: int
    calls: int
    n_selected: int
    decrease_values: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _check(m: int, what: str = "subset search") -> None:
    if not isinstance(m, (int, np.integer)) or m < 2:
        raise InputError(
            f"a {what} ranks units against each other and needs at least 2 units, got {m!r}; "
            "split the input into more units (e.g. more superpixels)"
        )


def _masks(m: int, base: list[int], candidates: Sequence[int]) -> np.ndarray:
    masks = np.zeros((len(candidates), m), dtype=bool)
    if base:
        masks[:, base] = True
    masks[np.arange(len(candidates)), list(candidates)] = True
    return masks


class _Counted:
    """Calls the set function and counts masks and calls; checks the answer's shape."""

    def __init__(self, score: SetFunction) -> None:
        self.score, self.evaluations, self.calls = score, 0, 0

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        out = np.asarray(self.score(masks), dtype=float).reshape(-1)
        if out.shape[0] != masks.shape[0]:
            raise ScorerError(
                f"the set function returned {out.shape[0]} values for {masks.shape[0]} subsets; "
                "it must return one number per mask row"
            )
        if not np.isfinite(out).all():
            raise ScorerError("the set function returned a non-finite value; scores must be finite")
        self.evaluations += masks.shape[0]
        self.calls += 1
        return out


def greedy_order(m: int, score: SetFunction) -> SubsetSearch:
    """Rank ``m`` units by naive greedy maximisation of F (SMDL): step j evaluates F(S ∪ {c})
    for every remaining c in one call and appends the argmax to S.

    Cost: m(m + 1)/2 set-function evaluations in m calls (:func:`greedy_evaluations`).
    """
    _check(m)
    f = _Counted(score)
    chosen: list[int] = []
    values = np.full(m, np.nan)
    remaining = list(range(m))
    for j in range(m):
        vals = f(_masks(m, chosen, remaining))
        best = int(np.argmax(vals))  # first maximum: the lowest unit index wins a tie
        values[j] = vals[best]
        chosen.append(remaining.pop(best))
    return SubsetSearch(np.array(chosen), values, f.evaluations, f.calls, m)


def bidirectional_order(m: int, score: SetFunction, pending: int = 8) -> SubsetSearch:
    """Rank ``m`` units by LiMA's bidirectional greedy search.

    Each iteration scores F(S ∪ {c}) for every remaining c (one call) and appends the argmax to
    S; while more than ``pending`` units remain it also takes the ``pending`` other candidates
    with the lowest F(S ∪ {c}), scores F(D ∪ {c}) for them (a second call) and appends the
    argmin to D. A single remaining unit joins S unevaluated. Returns the ranking S + reversed(D).

    Cost: :func:`bidirectional_evaluations` (m, pending) set-function evaluations.
    """
    _check(m)
    if not isinstance(pending, (int, np.integer)) or pending < 1:
        raise InputError(f"pending must be an integer >= 1 (LiMA uses 8), got {pending!r}")
    f = _Counted(score)
    inc: list[int] = []
    dec: list[int] = []
    inc_values: list[float] = []
    dec_values: list[float] = []
    remaining = list(range(m))
    while remaining:
        if len(remaining) == 1:
            inc.append(remaining.pop())
            inc_values.append(np.nan)
            break
        vals = f(_masks(m, inc, remaining))
        best = int(np.argmax(vals))
        placed = [remaining[best]]
        if len(remaining) > pending:
            others = [i for i in np.argsort(vals, kind="stable") if i != best][:pending]
            low = [remaining[i] for i in others]
            dvals = f(_masks(m, dec, low))
            worst = int(np.argmin(dvals))
            dec.append(low[worst])
            dec_values.append(float(dvals[worst]))
            placed.append(low[worst])
        inc.append(remaining[best])
        inc_values.append(float(vals[best]))
        remaining = [u for u in remaining if u not in placed]
    order = np.array(inc + dec[::-1])
    values = np.full(m, np.nan)
    values[: len(inc_values)] = inc_values
    n_selected = len(inc) - 1 if np.isnan(inc_values[-1]) else len(inc)
    return SubsetSearch(order, values, f.evaluations, f.calls, n_selected, np.array(dec_values))


def greedy_evaluations(m: int) -> int:
    """Set-function evaluations of :func:`greedy_order` on ``m`` units: m(m + 1)/2 (two
    forward passes each for the image score: m(m + 1), as in the SMDL paper's count)."""
    return m * (m + 1) // 2


def bidirectional_evaluations(m: int, pending: int = 8) -> int:
    """Set-function evaluations of :func:`bidirectional_order` on ``m`` units: r + pending for
    each iteration that starts with r > pending units left (it places two), then r for each
    r = min(r, pending) ... 2 (one each). 833 at m = 50, pending = 8."""
    total, r = 0, m
    while r > pending:
        total += r + pending
        r -= 2
    while r >= 2:
        total += r
        r -= 1
    return total
