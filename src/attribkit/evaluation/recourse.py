"""Reasons without recourse: do the top features of an explanation give a denied person a way to
change the decision? (Cheon, Wernerfelt, Friedler & Ustun, 'Feature Responsiveness Scores:
Model-Agnostic Explanations for Recourse', ICLR 2025.)

Lenders tell a denied applicant the k features that mattered most (adverse-action "principal
reasons", k = 4 in the paper). A reason is *responsive* when its responsiveness score is > 0:
some feasible action on it flips the decision. :func:`reasons_without_recourse` measures, over
denied individuals, how often a method's top-k reasons are all unresponsive, include at least
one unresponsive or at least one responsive reason, and how many denied individuals are fixed
(no single-feature action flips the decision, so every reason misleads).

Which features are the "top k" (``by``):

- ``"abs"`` (default): the k largest ``|score|`` — what the authors' released code ranks by;
- ``"negative"``: the k most negative scores, the features that push most toward denial when
  the attribution explains the *favourable* class (e.g. P(approved));
- ``"positive"``: the k largest positive scores, the features that push most toward denial
  when the attribution explains the *denied* class (e.g. the predicted class of a denied row).

Features scoring exactly 0 (or NaN, or of the wrong sign) are never reasons, as in the authors'
code, so an individual may get fewer than k. *Action-aware* reasons (:func:`actionable_reasons`,
or ``action_set=`` here) keep only features the person can act on before taking the top k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.models.actions import ActionSet

__all__ = [
    "RANKINGS",
    "Reason",
    "RecourseReport",
    "actionable_reasons",
    "reasons_without_recourse",
    "top_reasons",
]

RANKINGS = ("abs", "negative", "positive")


@dataclass(frozen=True)
class Reason:
    """One reason given to a person: the feature, its attribution and (when known) its
    responsiveness."""

    index: int
    name: str
    score: float
    responsiveness: float | None = None

    @property
    def responsive(self) -> bool | None:
        return None if self.responsiveness is None else self.responsiveness > 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"feature": self.name, "index": self.index, "score": self.score}
        if self.responsiveness is not None:
            d["responsiveness"] = self.responsiveness
        return d


def _vector_and_names(a: Attribution | np.ndarray, names: Sequence[str] | None) -> tuple:
    if isinstance(a, Attribution):
        return a.vector, [u.label for u in a.units]
    v = np.asarray(a, dtype=float).reshape(-1)
    return v, list(names) if names is not None else [f"x{i}" for i in range(v.size)]


def top_reasons(
    attribution: Attribution | np.ndarray,
    k: int = 4,
    by: str = "abs",
    allowed: np.ndarray | Sequence[bool] | None = None,
    names: Sequence[str] | None = None,
) -> list[Reason]:
    """The top ``k`` reasons of one attribution ranked ``by`` (module docstring), among the
    ``allowed`` features (a boolean mask; default all). No model calls."""
    if by not in RANKINGS:
        raise InputError(f"by={by!r} is not one of {RANKINGS}")
    if k < 1:
        raise InputError("k must be >= 1")
    v, labels = _vector_and_names(attribution, names)
    key = {"abs": np.abs(v), "negative": -v, "positive": v}[by]
    ok = np.isfinite(v) & (key > 0)
    if allowed is not None:
        mask = np.asarray(allowed, dtype=bool)
        if mask.shape != v.shape:
            raise InputError(f"allowed has {mask.size} entries for {v.size} features")
        ok &= mask
    order = [int(i) for i in np.argsort(-np.where(ok, key, -np.inf), kind="stable") if ok[i]]
    return [Reason(i, labels[i], float(v[i])) for i in order[:k]]


def _actionable_mask(action_set: ActionSet, labels: Sequence[str]) -> np.ndarray:
    if list(labels) != action_set.names:
        unknown = [n for n in labels if n not in action_set.index]
        if unknown:
            raise InputError(
                f"the attribution has feature(s) {unknown[:5]} that the action set does not know"
            )
    act = action_set.actionable
    return np.array([act[action_set.index[n]] for n in labels])


def actionable_reasons(
    attribution: Attribution, action_set: ActionSet, k: int = 4, by: str = "abs"
) -> list[Reason]:
    """The action-aware variant of an explanation: its top ``k`` reasons among the features the
    person can act on (``action_set.actionable``: an actionable column or a column of an
    actionable group), ranked ``by`` as :func:`top_reasons`. Immutable features are skipped,
    never reported. An actionable reason may still be unresponsive (no feasible change flips the
    decision): check it with responsiveness scores. No model calls."""
    labels = [u.label for u in attribution.units]
    return top_reasons(attribution, k, by, allowed=_actionable_mask(action_set, labels))


@dataclass
class RecourseReport:
    """The paper's reasons-without-recourse metrics for one method over denied individuals.

    Shares of individuals with at least one reason (``n_with_reasons``): ``all_unresponsive``
    (every one of their top-k reasons scores 0 responsiveness), ``some_unresponsive`` (≥ 1 does),
    ``some_responsive`` (≥ 1 scores > 0); ``mean_responsive`` is the mean number of responsive
    reasons. ``fixed`` is the share of the ``n`` denied individuals who are fixed. ``rows`` holds
    each individual's reasons.
    """

    n: int
    k: int
    by: str
    n_with_reasons: int
    all_unresponsive: float
    some_unresponsive: float
    some_responsive: float
    mean_responsive: float
    fixed: float
    action_aware: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "k": self.k,
            "by": self.by,
            "action_aware": self.action_aware,
            "n_with_reasons": self.n_with_reasons,
            "all_unresponsive": self.all_unresponsive,
            "some_unresponsive": self.some_unresponsive,
            "some_responsive": self.some_responsive,
            "mean_responsive": self.mean_responsive,
            "fixed": self.fixed,
            "rows": self.rows,
        }


def _rows_of(
    items: Any, what: str
) -> tuple[np.ndarray, list[str] | None, list[Attribution] | None]:
    if isinstance(items, np.ndarray) or (
        isinstance(items, (list, tuple)) and items and not isinstance(items[0], Attribution)
    ):
        arr = np.asarray(items, dtype=float)
        if arr.ndim != 2:
            raise InputError(f"{what} must be (individuals, features) scores or Attributions")
        return arr, None, None
    items = list(items)
    if not items:
        raise InputError(f"{what} is empty")
    return np.stack([a.vector for a in items]), [u.label for u in items[0].units], items


def reasons_without_recourse(
    attributions: Sequence[Attribution] | np.ndarray,
    responsiveness_scores: Sequence[Attribution] | np.ndarray,
    k: int = 4,
    *,
    by: str = "abs",
    action_set: ActionSet | None = None,
    denied: Sequence[bool] | np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> RecourseReport:
    """How often a method's top-``k`` reasons give denied individuals no recourse (Cheon et al.,
    ICLR 2025).

    Args:
        attributions: one attribution per individual (Attributions, or an (n, features) array).
        responsiveness_scores: the same individuals' responsiveness (the Attributions of
            :func:`attribkit.methods.tabular.responsiveness.responsiveness`, whose extras say who
            is denied and fixed, or an (n, features) array).
        k: reasons per individual (4 in the paper).
        by: ``"abs"``, ``"negative"`` or ``"positive"`` (module docstring).
        action_set: when given, the action-aware variant: reasons only among actionable features.
        denied: which individuals were denied (default: the responsiveness extras, else all).
        names: feature names when both inputs are arrays.

    Returns a :class:`RecourseReport`. No model calls.
    """
    att, att_names, _ = _rows_of(attributions, "attributions")
    resp, resp_names, resp_items = _rows_of(responsiveness_scores, "responsiveness_scores")
    if att.shape != resp.shape:
        raise InputError(
            f"attributions {att.shape} and responsiveness scores {resp.shape} must cover the same "
            "individuals and features"
        )
    if att_names is not None and resp_names is not None and att_names != resp_names:
        raise InputError("attributions and responsiveness scores name different features")
    labels = att_names or resp_names or (list(names) if names is not None else None)
    labels = labels or [f"x{i}" for i in range(att.shape[1])]
    if denied is not None:
        who = np.asarray(denied, dtype=bool)
    elif resp_items is not None and "denied" in resp_items[0].extras:
        who = np.array([bool(a.extras["denied"]) for a in resp_items])
    else:
        who = np.ones(len(att), dtype=bool)
    if who.shape != (len(att),):
        raise InputError(f"denied has {who.size} entries for {len(att)} individuals")
    if resp_items is not None and "fixed" in resp_items[0].extras:
        fixed = np.array([bool(a.extras["fixed"]) for a in resp_items]) & who
    else:
        fixed = who & ~(resp > 0).any(axis=1)
    allowed = None if action_set is None else _actionable_mask(action_set, labels)
    rows, n_resp = [], []
    for i in np.nonzero(who)[0]:
        reasons = top_reasons(att[i], k, by, allowed=allowed, names=labels)
        reasons = [Reason(r.index, r.name, r.score, float(resp[i, r.index])) for r in reasons]
        rows.append(
            {
                "row": int(i),
                "fixed": bool(fixed[i]),
                "reasons": [r.to_dict() for r in reasons],
            }
        )
        if reasons:
            n_resp.append((sum(bool(r.responsive) for r in reasons), len(reasons)))
    m = len(n_resp)
    good = np.array([c for c, _ in n_resp], dtype=float)
    total = np.array([t for _, t in n_resp], dtype=float)

    def share(x: np.ndarray) -> float:
        return float(x.mean()) if m else float("nan")

    return RecourseReport(
        n=int(who.sum()),
        k=k,
        by=by,
        n_with_reasons=m,
        all_unresponsive=share(good == 0),
        some_unresponsive=share(good < total),
        some_responsive=share(good > 0),
        mean_responsive=share(good),
        fixed=float(fixed[who].mean()) if who.any() else float("nan"),
        action_aware=action_set is not None,
        rows=rows,
    )
