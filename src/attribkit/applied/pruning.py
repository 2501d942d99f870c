"""Prompt pruning: remove units (tokens, demonstrations) of a prompt template to keep or raise its
fitness — by search (TAPruning, PromptQuine) or by one attribution (drop the units whose removal
raises the fitness most), against a random pruning of the same size.

Every function takes a :class:`~attribkit.tasks.prompt.PromptTask` (or any task with a mask
scorer, or a bare :class:`~attribkit.core.scorer.Scorer` — then the "prompt" is the composed
input and a fitness call is one pass) and returns a :class:`PruneResult`: the pruned prompt, the
kept mask, fitness before and after, every evaluated mask with its fitness, and the cost. A
*fitness call* scores one new mask (|fitness set| forward passes on a PromptTask); no search
scores a mask twice.

Searches from Wang, Hu & Bing, "Evolving Prompts In-Context: An Open-ended, Self-replicating
Perspective" (ICML 2025; code ``jianyu-cs/PromptQuine``). Deviations from the reference code,
each on purpose: seeded ``numpy`` randomness instead of ``random.seed(time.time())``; the units
are fixed character spans, so a TAPruning sweep never re-tokenises the pruned text (the reference
decodes and re-tokenises between sweeps, which can move token boundaries); PromptQuine's budget
counts real evaluations only (the reference adds ``reproduction`` to its count every generation
even when duplicates were skipped, so it over-counts), a child already evaluated earlier is
answered from the cache and costs nothing, and GGA also skips a child that repeats an earlier
child of the same generation (the reference checks the population only); the tournament draws
⌈0.2·|pop|⌉ (the reference floors it; both give 6 at the default 30). The reference's final
selection (re-score the top 10 % on a validation set) is left to the caller: PromptQuine returns
its fittest evaluated prompt and the whole trace.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.jsonio import to_json
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task

__all__ = [
    "PruneResult",
    "attribution_prune",
    "promptquine",
    "random_prune",
    "tapruning",
]


def _bits(mask: np.ndarray) -> str:
    return "".join("1" if b else "0" for b in mask)


@dataclass
class PruneResult:
    """What a pruning run kept and what it cost.

    ``prompt`` is the pruned template (slot and protected text intact), ``kept`` one bool per
    unit, ``fitness_before`` / ``fitness_after`` the fitness of the full and the pruned prompt,
    ``trace`` every mask the run evaluated with its fitness, in order, ``fitness_calls`` how many
    masks were scored by the model, ``cost`` the forward passes and seconds (an attribution
    method's passes included).
    """

    method: str
    prompt: str
    kept: np.ndarray
    fitness_before: float
    fitness_after: float
    trace: list[tuple[np.ndarray, float]]
    fitness_calls: int
    cost: Cost
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        """How many units the prompt has (prunable ones)."""
        return len(self.kept)

    @property
    def n_kept(self) -> int:
        """How many units the pruned prompt keeps."""
        return int(np.sum(self.kept))

    @property
    def n_removed(self) -> int:
        """How many units were pruned."""
        return self.n_units - self.n_kept

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (masks as '1'/'0' strings, '1' = kept)."""
        d = {
            "method": self.method,
            "prompt": self.prompt,
            "kept": _bits(self.kept),
            "n_units": self.n_units,
            "n_kept": self.n_kept,
            "fitness_before": self.fitness_before,
            "fitness_after": self.fitness_after,
            "trace": [{"mask": _bits(m), "fitness": float(f)} for m, f in self.trace],
            "fitness_calls": self.fitness_calls,
            "cost": self.cost.to_dict(),
            "params": self.params,
            "extras": self.extras,
        }
        return to_json(d)  # type: ignore[no-any-return]

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict())

    def __repr__(self) -> str:
        return (
            f"PruneResult({self.method}: kept {self.n_kept}/{self.n_units}, fitness "
            f"{self.fitness_before:.3f} -> {self.fitness_after:.3f}, {self.fitness_calls} fitness "
            f"calls, {self.cost})"
        )


class _Fitness:
    """The fitness of masks for one run: the task's cached scorer, a seen-mask table (a mask is
    never scored twice), the trace, and an optional budget of fitness calls."""

    def __init__(self, task: Any, budget: int | None = None) -> None:
        if isinstance(task, Scorer):
            self.scorer, self.render = task, lambda m: str(task.units.compose(m))
        elif hasattr(task, "scorer") and hasattr(task, "render"):  # a PromptTask
            self.scorer, self.render = task.scorer, task.render
        elif isinstance(task, Task):
            scorer = task.unit_scorer({})
            self.scorer, self.render = scorer, lambda m: str(scorer.units.compose(m))
        else:
            raise InputError(
                f"cannot prune a {type(task).__name__}: pass a PromptTask (attribkit.tasks."
                "prompt), a task with a mask scorer, or a Scorer"
            )
        if budget is not None and budget < 1:
            raise InputError("budget (fitness calls) must be >= 1 or None")
        self.task, self.budget = task, budget
        # the meter every pass of the run is counted on (the LM for a PromptTask)
        self.meter = task.meter if isinstance(task, Task) else self.scorer
        self.n = self.scorer.n_units
        self.seen: dict[bytes, float] = {}
        self.trace: list[tuple[np.ndarray, float]] = []

    @property
    def calls(self) -> int:
        return len(self.trace)

    @property
    def left(self) -> int | None:
        return None if self.budget is None else self.budget - self.calls

    def known(self, mask: np.ndarray) -> float | None:
        return self.seen.get(np.packbits(mask).tobytes())

    def __call__(self, masks: Sequence[np.ndarray]) -> np.ndarray:
        """Fitness of each mask: new ones scored in one batched call (and traced), seen ones
        from the table. The caller keeps within the budget."""
        keys = [np.packbits(m).tobytes() for m in masks]
        new: dict[bytes, np.ndarray] = {}
        for k, m in zip(keys, masks, strict=True):
            if k not in self.seen and k not in new:
                new[k] = np.asarray(m, dtype=bool).copy()
        if self.left is not None and len(new) > self.left:
            raise RuntimeError("fitness budget exceeded")  # pragma: no cover - callers guard
        if new:
            values = self.scorer(np.stack(list(new.values())))
            for (k, m), v in zip(new.items(), values, strict=True):
                self.seen[k] = float(v)
                self.trace.append((m, float(v)))
        return np.array([self.seen[k] for k in keys])

    def result(
        self, method: str, kept: np.ndarray, before: float, cost: Cost, params: dict[str, Any],
        **extras: Any,
    ) -> PruneResult:  # fmt: skip
        after = self.known(kept)
        assert after is not None
        return PruneResult(
            method, self.render(kept), kept.copy(), before, after, list(self.trace), self.calls,
            cost, params, extras,
        )  # fmt: skip


def _check_ratio_fitness(best: float) -> None:
    if not best > 0:
        raise InputError(
            f"the full prompt's fitness is {best:.4g}: a ratio threshold (fitness / best) needs a "
            "positive fitness; use fitness='accuracy' or a positive reward (a margin fitness "
            "that is > 0 on the full prompt)"
        )


def tapruning(
    task: Any,
    threshold: float = 0.96,
    max_rounds: int | None = None,
    seed: int = 0,
    *,
    order: str = "left_to_right",
    budget: int | None = None,
    min_kept: int = 1,
    select: str = "best",
) -> PruneResult:
    """TAPruning (threshold accepting; Wang, Hu & Bing, "Evolving Prompts In-Context", ICML
    2025): sweep the units left to right, drop one, keep the drop if fitness / best ≥
    ``threshold`` (best only moves up), else restore it; repeat sweeps until one removes nothing
    (or ``max_rounds`` sweeps, or ``budget`` fitness calls). ``select="best"`` returns the last
    accepted prompt with the highest fitness (the reference's selection protocol), ``"final"``
    the end of the accepted path (it can be below the best by up to the threshold);
    ``extras`` holds the other (``final_kept`` / ``final_fitness``). ``order="random"``
    sweeps in a seeded random order instead. At least ``min_kept`` units stay.

    Cost: one fitness call for the full prompt plus one per tried removal (≈ units × rounds;
    |fitness set| forward passes each on a PromptTask), never one for a mask already scored.
    InputError when the full prompt's fitness is ≤ 0 (the ratio test is meaningless there)."""
    if not 0 < threshold <= 1:
        raise InputError(f"threshold must be in (0, 1], got {threshold}")
    if select not in ("best", "final"):
        raise InputError("select must be 'best' or 'final'")
    if order not in ("left_to_right", "random"):
        raise InputError("order must be 'left_to_right' or 'random'")
    if max_rounds is not None and max_rounds < 1:
        raise InputError("max_rounds must be >= 1 or None")
    fit = _Fitness(task, budget)
    rng = np.random.default_rng(seed)
    params = {"threshold": threshold, "max_rounds": max_rounds, "seed": seed, "order": order,
              "budget": budget, "min_kept": min_kept, "select": select}  # fmt: skip
    with measure(fit.meter) as cost:
        mask = np.ones(fit.n, dtype=bool)
        best = before = float(fit([mask])[0])
        _check_ratio_fitness(best)
        accepted = [(mask.copy(), best)]
        rounds, exhausted = 0, False
        while (max_rounds is None or rounds < max_rounds) and not exhausted:
            removed = False
            idx = np.arange(fit.n) if order == "left_to_right" else rng.permutation(fit.n)
            for i in idx:
                if not mask[i] or mask.sum() <= min_kept:
                    continue
                cand = mask.copy()
                cand[i] = False
                if fit.known(cand) is None and fit.left == 0:
                    exhausted = True
                    break
                f = float(fit([cand])[0])
                if f / best >= threshold:
                    mask, removed = cand, True
                    best = max(best, f)
                    accepted.append((mask.copy(), f))
            rounds += 1
            if not removed:
                break
        top = max(f for _, f in accepted)
        kept = [m for m, f in accepted if f == top][-1] if select == "best" else accepted[-1][0]
    return fit.result("tapruning", kept, before, cost, params, rounds=rounds,
                      accepted=len(accepted) - 1, final_fitness=accepted[-1][1],
        final_kept=_bits(accepted[-1][0]))  # fmt: skip


def promptquine(
    task: Any,
    mode: str = "gga",
    population: int = 30,
    reproduction: int = 50,
    budget: int = 1000,
    min_length: int = 15,
    seed: int = 0,
    *,
    max_mutation: int = 4,
    max_stalled: int = 20,
) -> PruneResult:
    """PromptQuine (Wang, Hu & Bing, "Evolving Prompts In-Context", ICML 2025): evolve pruned
    prompts from a population of ``population`` copies of the full prompt. Each generation makes
    ``reproduction`` children: a parent = the fittest of a tournament of ⌈0.2·|pop|⌉ draws with
    replacement, the child = the parent minus k ∈ {1..``max_mutation``} random kept units (k <
    kept units), skipped when its text is already in the population. ``mode="gga"`` scores a
    generation's children together; ``"ssga"`` scores each child at once and adds it to the
    population, so later children of the generation can descend from it. Then the population
    is the best ``population`` of the last ``reproduction`` entries (regularised evolution).
    Stops when ``budget`` fitness calls are spent, the mean kept units of the population is
    ≤ ``min_length``, or ``max_stalled`` generations in a row scored nothing new. Returns the
    fittest prompt evaluated (ties: fewer units kept, then the earliest).

    Cost: at most ``budget`` fitness calls (the full prompt's included; |fitness set| forward
    passes each on a PromptTask); a mask scored before is answered from the cache for free.
    Deterministic under ``seed``."""
    if mode not in ("gga", "ssga"):
        raise InputError(f"mode must be 'gga' or 'ssga', got {mode!r}")
    if population < 1 or reproduction < 1:
        raise InputError("population and reproduction must be >= 1")
    if max_mutation < 1:
        raise InputError("max_mutation must be >= 1")
    if budget is None or budget < 1:
        raise InputError("PromptQuine needs a budget of fitness calls >= 1 (e.g. budget=500)")
    fit = _Fitness(task, budget)
    rng = np.random.default_rng(seed)
    params = {"mode": mode, "population": population, "reproduction": reproduction,
              "budget": budget, "min_length": min_length, "seed": seed,
              "max_mutation": max_mutation}  # fmt: skip
    key = _bits
    with measure(fit.meter) as cost:
        full = np.ones(fit.n, dtype=bool)
        before = float(fit([full])[0])
        pop: list[tuple[np.ndarray, float]] = [(full, before)] * population
        generations = stalled = 0
        while fit.left and np.mean([m.sum() for m, _ in pop]) > min_length:
            calls_before = fit.calls
            entries = list(pop)
            pool = {key(m) for m, _ in pop}
            children: list[np.ndarray] = []
            for _ in range(reproduction):
                child = _mutate(entries if mode == "ssga" else pop, rng, max_mutation)
                if child is None or key(child) in pool:
                    continue
                if mode == "gga":
                    pool.add(key(child))
                    children.append(child)
                    continue
                if fit.known(child) is None and not fit.left:
                    break
                f = float(fit([child])[0])
                entries.append((child, f))
                pool.add(key(child))
            if mode == "gga":
                children = _within_budget(children, fit)
                if children:
                    entries += list(zip(children, fit(children), strict=True))
            last = entries[-reproduction:]
            order = sorted(range(len(last)), key=lambda i: -last[i][1])[:population]
            pop = [last[i] for i in order]
            generations += 1
            stalled = stalled + 1 if fit.calls == calls_before else 0
            if stalled >= max_stalled:
                break
        best_f = max(f for _, f in fit.trace)
        ties = [(m.sum(), i) for i, (m, f) in enumerate(fit.trace) if f == best_f]
        kept = fit.trace[min(ties)[1]][0]
    return fit.result("promptquine", kept, before, cost, params, generations=generations,
                      population_mean_kept=float(np.mean([m.sum() for m, _ in pop])),
                      population_best=float(max(f for _, f in pop)))  # fmt: skip


def _mutate(
    pop: Sequence[tuple[np.ndarray, float]], rng: np.random.Generator, max_mutation: int
) -> np.ndarray | None:
    """A child of the tournament winner with k random kept units removed (None when the parent
    has too few units: k must stay below its kept count, ten draws of k as in the reference)."""
    size = max(1, math.ceil(0.2 * len(pop)))
    draws = rng.integers(len(pop), size=size)
    parent = pop[int(max(draws, key=lambda i: (pop[int(i)][1], -int(i))))][0]
    kept = np.flatnonzero(parent)
    for _ in range(10):
        k = int(rng.integers(1, max_mutation + 1))
        if k < len(kept):
            child = parent.copy()
            child[rng.choice(kept, size=k, replace=False)] = False
            return child
    return None


def _within_budget(children: list[np.ndarray], fit: _Fitness) -> list[np.ndarray]:
    """The children in order, cut where the next one would need a fitness call beyond the
    budget (already-scored children cost nothing)."""
    out, new = [], 0
    for c in children:
        if fit.known(c) is None:
            if fit.left is not None and new >= fit.left:
                break
            new += 1
        out.append(c)
    return out


def attribution_prune(
    task: Any, method: str = "loo", n_remove: int = 1, **params: Any
) -> PruneResult:
    """Attribution-guided pruning: run the attribution ``method`` (any perturbation method:
    ``loo``, ``shapley``, ``kernel_shap``...; ``params`` go to it) on the task's fitness and
    drop the ``n_remove`` units with the lowest scores — those whose removal raises the fitness
    most (ties: the earlier unit). The baseline the PromptQuine paper reports attribution to
    lose against.

    Cost: the method's own (LOO: units + 1 fitness calls) plus the pruned prompt's fitness call
    (cached masks free)."""
    from attribkit.core.registry import attribute

    fit = _Fitness(task)
    _check_n_remove(n_remove, fit.n)
    with measure(fit.meter) as cost:
        before = float(fit([np.ones(fit.n, dtype=bool)])[0])
        if isinstance(task, Scorer):
            attribution = attribute(task, method, **params)
        else:
            attribution = attribute(fit.task, method, **params)
        scores = np.nan_to_num(np.asarray(attribution.vector, dtype=float), nan=np.inf)
        drop = np.argsort(scores, kind="stable")[:n_remove]
        kept = np.ones(fit.n, dtype=bool)
        kept[drop] = False
        fit([kept])
    calls = _calls_of(fit, cost)
    result = fit.result(f"attribution_prune:{method}", kept, before, cost,
                        {"method": method, "n_remove": n_remove, **_plain(params)},
                        scores=[float(s) for s in attribution.vector])  # fmt: skip
    result.fitness_calls = calls
    return result


def random_prune(task: Any, n_remove: int, seed: int = 0) -> PruneResult:
    """The same-size random baseline: drop ``n_remove`` units drawn uniformly without
    replacement (seeded). Cost: two fitness calls (full and pruned prompt; cached masks free)."""
    fit = _Fitness(task)
    _check_n_remove(n_remove, fit.n)
    rng = np.random.default_rng(seed)
    with measure(fit.meter) as cost:
        before = float(fit([np.ones(fit.n, dtype=bool)])[0])
        kept = np.ones(fit.n, dtype=bool)
        kept[rng.choice(fit.n, size=n_remove, replace=False)] = False
        fit([kept])
    return fit.result("random_prune", kept, before, cost, {"n_remove": n_remove, "seed": seed})


def _check_n_remove(n_remove: int, n: int) -> None:
    if not isinstance(n_remove, int | np.integer) or not 0 <= n_remove < n:
        raise InputError(
            f"n_remove must be an integer in [0, {n - 1}] (the prompt has {n} units and at least "
            f"one must stay), got {n_remove!r}"
        )


def _calls_of(fit: _Fitness, cost: Cost) -> int:
    """Masks the model scored during a run that also called an attribution method: passes over
    passes per fitness call (exact on a task whose cache was cold for those masks)."""
    per = int(getattr(fit.task, "passes_per_fitness_call", 1))
    return int(cost.forward_passes // per)


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is None or isinstance(v, str | int | float | bool)}
