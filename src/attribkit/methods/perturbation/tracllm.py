"""TracLLM: informed (hierarchical) search over groups of units with an ensemble of base scores.

Wang, Zou, Geng & Jia, 'TracLLM: A Generic Framework for Attributing Long Context LLMs', USENIX
Security 2025 (arXiv 2506.04202). Written from the paper and the design notes; the algorithm
follows the authors' reference code (``Wang-Yanting/TracLLM``), minus its quirks: units are
identified by index (duplicate texts are fine), n <= k works, every unit pruned on the way keeps
the score of the group it was pruned in (``extras['pruned_scores']``), and a forward-pass budget
stops the descent instead of failing.

The search, run separately for every base score function::

    nodes = [all units]
    while some node has more than one unit:
        split every multi-unit node into halves (left half = first floor(len/2) units)
        if len(nodes) <= k: continue              # no scoring at shallow levels
        score the nodes on the context made of the surviving nodes only
        nodes = the k best nodes (kept in original order)

The ensemble then gives each unit in some function's final list ``max_f w_f · s_f(unit)`` with
``w_loo = loo_weight`` and ``w_f = 1`` otherwise; other units stay NaN (unscored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import comb
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import BudgetExhausted, InputError
from attribkit.core.registry import check_units
from attribkit.core.scorer import Scorer
from attribkit.methods.numerics import (
    marginal_contributions,
    prefix_masks,
    random_permutations,
)

SCORE_FUNCS = ("stc", "loo", "shapley", "denoised_shapley")
"""Base score functions TracLLM can search with (each runs its own search)."""

ESTIMATE_MARGIN = 1.1
"""With a budget, a function is started only if 1.1 × its expected cost fits what is left: the
estimate is within a few percent, and overshooting wastes a whole search, undershooting only
skips a function that would barely have fitted."""

Node = tuple[int, int]
"""A node of the search: the contiguous units ``range(lo, hi)`` (halves of ranges are ranges)."""


# --- base scores ---------------------------------------------------------------------------------
def _group_masks(nodes: Sequence[Node], n: int) -> np.ndarray:
    """(m, n) boolean masks: row j keeps the units of node j only."""
    masks = np.zeros((len(nodes), n), dtype=bool)
    for j, (lo, hi) in enumerate(nodes):
        masks[j, lo:hi] = True
    return masks


def _level_plan(
    func: str,
    nodes: Sequence[Node],
    n: int,
    n_permutations: int,
    beta: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The masks one scoring level needs and how to turn their values into node scores.

    Units outside ``nodes`` are removed from every mask: the context is the surviving nodes only.
    STC: [∅, G_1, ..., G_m]; LOO: [S, S∖G_1, ..., S∖G_m] with S the union of the nodes;
    (denoised) Shapley: the m + 1 prefix coalitions of ``n_permutations`` random orders of the
    nodes (each coalition in original unit order, as masks are).
    """
    groups = _group_masks(nodes, n)
    m = len(nodes)
    if func == "stc":
        masks = np.vstack([np.zeros((1, n), dtype=bool), groups])
        return masks, lambda v: v[1:] - v[0]
    if func == "loo":
        alive = groups.any(axis=0)
        masks = np.vstack([alive[None], alive[None] & ~groups])
        return masks, lambda v: v[0] - v[1:]
    # Shapley by permutations (Castro et al. 2009), TracLLM's sh_N random orders of the groups.
    perms = random_permutations(rng, n_permutations, m)
    rank = np.argsort(perms, axis=1)  # rank[p, j] = position of node j in permutation p
    # coalition c of permutation p keeps the nodes ranked below c, i.e. the units of those nodes
    keep_nodes = prefix_masks(rank)  # (P, m+1, m)
    node_of = np.argmax(groups, axis=0)  # unit -> its node (0 for dead units, masked below)
    masks = (keep_nodes[:, :, node_of] & groups.any(axis=0)).reshape(-1, n)
    top = max(1, int(n_permutations * beta + 1e-9))  # the reference's max(1, int(len·beta))

    def scores(v: np.ndarray) -> np.ndarray:
        v = v.reshape(n_permutations, m + 1)
        marginals = marginal_contributions(v, rank)
        if func == "shapley":
            return marginals.mean(axis=0)
        # denoised Shapley: mean of each node's top-beta fraction of marginals (at least one)
        return -np.sort(-marginals, axis=0)[:top].mean(axis=0)

    return masks, scores


def _split(nodes: Sequence[Node]) -> list[Node]:
    """Every multi-unit node split into halves, the left half holding floor(len/2) units."""
    out: list[Node] = []
    for lo, hi in nodes:
        if hi - lo > 1:
            mid = lo + (hi - lo) // 2
            out += [(lo, mid), (mid, hi)]
        else:
            out.append((lo, hi))
    return out


def _next_level(nodes: Sequence[Node], k: int) -> list[Node] | None:
    """Split until there are more than ``k`` nodes (the next level to score); None when every
    node is a single unit before that (the search is over). Costs nothing."""
    nodes = list(nodes)
    while any(hi - lo > 1 for lo, hi in nodes):
        nodes = _split(nodes)
        if len(nodes) > k:
            return nodes
    return None


@dataclass
class _Search:
    """One base score function's descent."""

    func: str
    weight: float
    rng: np.random.Generator
    n: int
    nodes: list[Node] = field(default_factory=list)  # survivors of the last scored level
    scores: np.ndarray | None = None  # their scores
    pending: list[Node] | None = None  # the next level to score (None: search over)
    levels: list[int] = field(default_factory=list)  # nodes scored per level
    stopped: bool = False  # stopped by the budget before ``pending`` was scored
    passes: int = 0  # forward passes this search spent
    last_score: np.ndarray = field(init=False)  # per unit: score of the last group scored in
    last_level: np.ndarray = field(init=False)  # per unit: that level (1-based), 0 = never

    def __post_init__(self) -> None:
        self.last_score = np.full(self.n, np.nan)
        self.last_level = np.zeros(self.n, dtype=int)

    def record(self, nodes: list[Node], scores: np.ndarray, k: int) -> None:
        """Keep the top-``k`` scored nodes (ties: earlier first), in original order."""
        self.levels.append(len(nodes))
        for (lo, hi), s in zip(nodes, scores, strict=True):
            self.last_score[lo:hi] = s
            self.last_level[lo:hi] = len(self.levels)
        keep = np.sort(np.argsort(-scores, kind="stable")[:k])
        self.nodes = [nodes[j] for j in keep]
        self.scores = scores[keep]
        self.pending = _next_level(self.nodes, k)


def _descend(
    s: _Search,
    scorer: Scorer,
    seen: set[bytes],
    limit: int | None,
    k: int,
    n_permutations: int,
    beta: float,
) -> None:
    """Run one function's search level by level (one scorer call per level) until its nodes are
    single units or the next level does not fit the budget (then ``s.stopped``)."""
    while s.pending is not None:
        masks, to_scores = _level_plan(s.func, s.pending, s.n, n_permutations, beta, s.rng)
        keys = set(_mask_keys(masks))
        if limit is not None and len(keys - seen) > limit - scorer.cost.forward_passes:
            s.stopped = True
            return
        try:
            values = scorer(masks)
        except BudgetExhausted:  # e.g. an uncached scorer or a time budget: stop, keep results
            s.stopped = True
            return
        seen |= keys
        s.record(s.pending, to_scores(values), k)


def _expected_passes(
    func: str, levels: Sequence[int], n_permutations: int, cached: set[str]
) -> float:
    """Expected forward passes of a search whose levels score ``levels`` groups (taken from a
    finished search on the same input, assuming the same nodes survive). STC/LOO: Σ(m + 1).
    Shapley: the expected number of distinct prefix coalitions of ``n_permutations`` random orders,
    C(m,c)·(1 − (1 − 1/C(m,c))^P) of each size c, less those the finished searches in ``cached``
    already asked for (STC: ∅ and single groups; LOO: all and all-but-one). No model calls."""
    if func in ("stc", "loo"):
        return float(sum(m + 1 for m in levels))
    total = 0.0
    for m in levels:
        sizes = np.array([comb(m, c) for c in range(m + 1)], dtype=float)
        draws = np.where(
            sizes > 1, sizes * -np.expm1(n_permutations * np.log1p(-1 / np.maximum(sizes, 2))), 1
        )
        if "stc" in cached:
            draws[:2] = 0
        if "loo" in cached:
            draws[m - 1 :] = 0
        total += float(draws.sum())
    return total


def _mask_keys(masks: np.ndarray) -> list[bytes]:
    return [np.packbits(row).tobytes() for row in masks]


def _check_params(
    k: int, score_funcs: Sequence[str], n_permutations: int, beta: float, loo_weight: float
) -> tuple[str, ...]:
    if isinstance(score_funcs, str):
        score_funcs = (score_funcs,)
    funcs = tuple(score_funcs)
    if not funcs:
        raise InputError(f"score_funcs is empty; choose from {', '.join(SCORE_FUNCS)}")
    unknown = [f for f in funcs if f not in SCORE_FUNCS]
    if unknown:
        raise InputError(
            f"unknown score function(s) {unknown}; choose from {', '.join(SCORE_FUNCS)}"
        )
    if len(set(funcs)) != len(funcs):
        raise InputError(f"score_funcs {list(funcs)} names a function twice; list each once")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer (the nodes kept per level), got {k!r}")
    if n_permutations < 1:
        raise InputError(f"n_permutations must be >= 1, got {n_permutations}")
    if not 0.0 < beta <= 1.0:
        raise InputError(f"beta must be in (0, 1] (the fraction of top marginals), got {beta}")
    if not (np.isfinite(loo_weight) and loo_weight > 0):
        raise InputError(f"loo_weight must be a positive number, got {loo_weight}")
    return funcs


def tracllm(
    scorer: Scorer,
    *,
    k: int = 5,
    score_funcs: Sequence[str] = ("stc", "loo", "denoised_shapley"),
    n_permutations: int = 20,
    beta: float = 0.2,
    loo_weight: float = 2.0,
    seed: int | None = 0,
) -> Attribution:
    """TracLLM: informed search with an ensemble of base scores. Returns an Attribution where at
    most len(score_funcs)·k units are scored and the others are NaN (their group scores are in
    ``extras['pruned_scores']``; :func:`full_ranking` orders every unit).

    Every function in ``score_funcs`` ("stc": the group alone minus nothing; "loo": all surviving
    minus all but the group; "shapley": mean permutation marginal over ``n_permutations`` orders;
    "denoised_shapley": mean of the top ``beta`` fraction of those marginals, at least one) runs
    its own descent; levels with more than ``k`` nodes are scored on the context formed by the
    surviving nodes only and pruned to the ``k`` best. A unit in some function's final list scores
    ``max_f w_f·s_f`` (``w_loo = loo_weight``, 1 otherwise). For n <= k the units are scored
    directly (one level). Ties keep the earlier node.

    The functions run one after the other, STC and LOO before the Shapley variants; each level
    is one scorer call. Budget: when ``scorer.budget.forward_passes`` is set, every level is
    priced before it runs (distinct masks not yet asked for in this run; masks cached by an
    earlier run are counted too, so it errs on the safe side). The first level that does not
    fit stops the run: that
    function keeps its current nodes' last scores (``stopped_funcs``) and the functions after it
    do not start. A function is also not started when its expected cost, estimated from a
    finished function's levels, exceeds what is left (a search that cannot finish would spend
    passes on groups the ensemble drops). Units of a multi-unit node share the node's score only
    when no function reached single units; otherwise those nodes count as pruned. A scorer that
    still refuses (no cache, a time budget) also just stops the run: BudgetExhausted is never
    raised.

    Cost: per level m + 1 passes for STC/LOO, at most ``n_permutations·(m − 1) + 2`` for Shapley,
    m <= 2k, ≈ log2(n/k) levels (LOO with k=5: 61 passes at n=200); cached masks are free.

    Extras (per function where a dict): ``levels`` (nodes scored at each level), ``depth`` (most
    levels any function ran), ``passes`` (forward passes each spent), ``final_groups`` and
    ``final_scores``, ``score_func`` (per unit, the function that gave its score, "" if none),
    ``resolved`` (every function reached single units), ``budget_stopped``, ``stopped_funcs``,
    ``skipped_funcs``, ``pruned_scores`` (per unit without a score: max over functions of
    w_f·(score of the group it was last scored in) at the deepest level any function scored it;
    NaN for scored units) and ``pruned_level`` (that level, 1-based; 0 for scored units).
    ``Attribution.ranking`` does not use them (unscored units last, by index: TracLLM's own
    output); :func:`full_ranking` ranks every unit with them.
    """
    check_units(scorer)
    funcs = _check_params(k, score_funcs, n_permutations, beta, loo_weight)
    n = scorer.n_units
    children = np.random.SeedSequence(seed).spawn(len(SCORE_FUNCS))
    searches = [
        _Search(
            f,
            loo_weight if f == "loo" else 1.0,
            np.random.default_rng(children[SCORE_FUNCS.index(f)]),
            n,
        )
        for f in funcs
    ]
    first = [(i, i + 1) for i in range(n)] if n <= k else _next_level([(0, n)], k)
    for s in searches:
        s.pending = list(first) if first is not None else None

    limit = getattr(getattr(scorer, "budget", None), "forward_passes", None)
    seen: set[bytes] = set()  # masks asked for in this run (free again when the scorer caches)
    # cheap functions first, so that a budget finishes them before Shapley starts
    order = sorted(searches, key=lambda s: s.func in ("shapley", "denoised_shapley"))
    with measure(scorer) as cost:
        for s in order:
            done = [d for d in searches if d.levels and d.pending is None]
            if limit is not None and done:
                # a search that cannot finish would spend passes on groups the ensemble drops
                levels = max((d.levels for d in done), key=len)
                need = _expected_passes(s.func, levels, n_permutations, {d.func for d in done})
                if ESTIMATE_MARGIN * need > limit - scorer.cost.forward_passes:
                    continue  # skipped: reported in extras['skipped_funcs']
            before = scorer.cost.forward_passes
            _descend(s, scorer, seen, limit, k, n_permutations, beta)
            s.passes = scorer.cost.forward_passes - before
            if s.stopped:  # the budget is spent: later (costlier) functions would stop too
                break
    scores, extras = _ensemble(searches, n)
    params = {
        "k": int(k),
        "score_funcs": list(funcs),
        "n_permutations": int(n_permutations),
        "beta": float(beta),
        "loo_weight": float(loo_weight),
        "seed": seed,
    }
    result = Attribution.from_scorer(scorer, scores, "tracllm", params, cost, **extras)
    # unscored units follow the pruned order in Attribution.ranking (a full ranking, for recall@k)
    result.extras["ranking"] = [int(u) for u in full_ranking(result)]
    return result


def _ensemble(searches: list[_Search], n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Combine the functions' final lists (max of weighted scores) and the pruned units' scores.

    A search the budget stopped still has multi-unit nodes; their units share the node's score
    only when no function reached single units (a group's score would otherwise tie with or
    outrank single-unit evidence); otherwise they count as pruned.
    """
    finished = any(s.scores is not None and s.pending is None for s in searches)
    scores = np.full(n, np.nan)
    best = [""] * n
    for s in searches:
        if s.scores is None:  # not run, or stopped before its first level
            continue
        for (lo, hi), sc in zip(s.nodes, s.scores, strict=True):
            if finished and hi - lo > 1:
                continue
            w = s.weight * float(sc)
            for i in range(lo, hi):
                if np.isnan(scores[i]) or w > scores[i]:
                    scores[i], best[i] = w, s.func
    # units without a score: the deepest level any function scored them at, best weighted score
    pruned_level = np.zeros(n, dtype=int)
    pruned = np.full(n, np.nan)
    for s in searches:
        w = s.weight * s.last_score
        deeper = s.last_level > pruned_level
        tie = (s.last_level == pruned_level) & (s.last_level > 0) & ~(w <= pruned)
        take = deeper | tie
        pruned_level[take] = s.last_level[take]
        pruned[take] = w[take]
    scored = ~np.isnan(scores)
    pruned[scored], pruned_level[scored] = np.nan, 0
    stopped = [s.func for s in searches if s.stopped]
    skipped = [s.func for s in searches if not s.stopped and s.pending is not None]
    extras: dict[str, Any] = {
        "levels": {s.func: list(s.levels) for s in searches},
        "depth": max(len(s.levels) for s in searches),
        "passes": {s.func: s.passes for s in searches},
        "final_groups": {s.func: [list(range(lo, hi)) for lo, hi in s.nodes] for s in searches},
        "final_scores": {s.func: [] if s.scores is None else s.scores.tolist() for s in searches},
        "score_func": best,
        "resolved": not (stopped or skipped),
        "budget_stopped": bool(stopped or skipped),
        "stopped_funcs": stopped,
        "skipped_funcs": skipped,
        "pruned_scores": pruned,
        "pruned_level": pruned_level.tolist(),
    }
    return scores, extras


def full_ranking(attribution: Attribution) -> np.ndarray:
    """Every unit of a TracLLM result, best first: scored units by score, then pruned units by
    the level they were pruned at (deeper first) and their ``pruned_scores``, then units never
    scored, by index. Costs no model calls."""
    v = attribution.vector
    n = len(v)
    extras = attribution.extras
    level = np.asarray(extras.get("pruned_level", np.zeros(n)), dtype=float)
    pruned = np.array(
        [np.nan if p is None else p for p in extras.get("pruned_scores", [None] * n)], dtype=float
    )
    scored = ~np.isnan(v)
    tier = np.where(scored, 2, np.where(level > 0, 1, 0))
    value = np.where(scored, v, np.where(np.isnan(pruned), -np.inf, pruned))
    # lexsort: last key is primary; index order breaks the remaining ties (stable)
    return np.lexsort((np.arange(n), -value, -np.where(scored, 0, level), -tier))
