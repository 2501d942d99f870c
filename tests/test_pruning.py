"""Prompt pruning: TAPruning on a fitness with known useless units, PromptQuine's determinism,
budget and cache, attribution and random pruning, result serialisation and errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from attribkit.applied.pruning import (
    PruneResult,
    attribution_prune,
    promptquine,
    random_prune,
    tapruning,
)
from attribkit.core.errors import InputError
from attribkit.core.scorer import Scorer
from attribkit.core.units import TextUnits
from attribkit.tasks.prompt import PromptTask
from attribkit.tasks.prompt_cases import SENTIMENT_VERBALIZERS, but_sentiment

WORDS = "alpha junk beta filler gamma noise delta spare epsilon"
USEFUL = ("alpha", "beta", "gamma", "delta", "epsilon")


def synthetic(calls: Counter | None = None, cache: bool = True) -> Scorer:
    """Fitness = 0.5 + (useful words kept) / 5: a true boundary, the useless words (junk,
    filler, noise, spare) change nothing and every useful word is worth 0.2."""

    def fn(texts: list[str]) -> list[float]:
        if calls is not None:
            calls.update(texts)
        return [0.5 + sum(w in t.split() for w in USEFUL) / len(USEFUL) for t in texts]

    return Scorer(TextUnits.words(WORDS), fn, cache=cache)


def test_tapruning_removes_exactly_the_useless_units():
    r = tapruning(synthetic(), threshold=0.96)
    assert r.prompt == "alpha beta gamma delta epsilon"
    assert r.kept.tolist() == [w in USEFUL for w in WORDS.split()]
    assert r.fitness_before == r.fitness_after == pytest.approx(1.5)
    # round 1 tries every unit once (9 + the full prompt); round 2 the 5 useful ones again, but
    # dropping the last one ("epsilon") gives the mask round 1 already scored: no new call
    assert r.fitness_calls == 1 + 9 + 4 == len(r.trace) == r.cost.forward_passes
    assert r.extras["rounds"] == 2


def test_tapruning_accepts_a_drop_within_the_threshold():
    # each useful word is worth 0.2 / 1.5 = 13 %: a 0.85 threshold lets one go, then no more
    r = tapruning(synthetic(), threshold=0.85, select="final")
    assert r.n_kept == 4
    assert r.fitness_after == pytest.approx(1.3)
    best = tapruning(synthetic(), threshold=0.85)  # the best accepted prompt: the full one
    assert best.n_kept == 9 and best.fitness_after == pytest.approx(1.5)
    assert best.extras["final_kept"].count("1") == 4


def test_tapruning_respects_budget_and_rounds():
    r = tapruning(synthetic(), budget=4)
    assert r.fitness_calls == 4
    r = tapruning(synthetic(), max_rounds=1)
    assert r.extras["rounds"] == 1


def test_tapruning_rejects_a_non_positive_fitness():
    units = TextUnits.words("a b c")
    with pytest.raises(InputError, match="accuracy"):
        tapruning(Scorer(units, lambda ts: [-0.3] * len(ts)))
    with pytest.raises(InputError):
        tapruning(synthetic(), threshold=1.5)


def run_quine(mode: str = "gga", seed: int = 0, budget: int = 40, calls: Counter | None = None):
    scorer = synthetic(calls, cache=False)
    return promptquine(scorer, mode=mode, population=8, reproduction=12, budget=budget,
                       min_length=3, seed=seed)  # fmt: skip


@pytest.mark.parametrize("mode", ["gga", "ssga"])
def test_promptquine_is_deterministic_budgeted_and_never_rescores(mode):
    calls: Counter = Counter()
    a = run_quine(mode, seed=5, budget=40, calls=calls)
    b = run_quine(mode, seed=5, budget=40)
    assert a.to_dict()["trace"] == b.to_dict()["trace"]
    assert a.kept.tolist() == b.kept.tolist()
    assert a.fitness_calls <= 40 and len(a.trace) == a.fitness_calls
    assert a.cost.forward_passes == a.fitness_calls  # the scorer's own cache is off
    assert max(calls.values()) == 1  # no text was ever sent to the model twice
    masks = [tuple(m) for m, _ in a.trace]
    assert len(set(masks)) == len(masks)
    assert a.fitness_after == max(f for _, f in a.trace)
    assert run_quine(mode, seed=6).to_dict()["trace"] != a.to_dict()["trace"]


def test_promptquine_finds_a_shorter_prompt_of_full_fitness():
    r = promptquine(synthetic(), population=10, reproduction=16, budget=150, min_length=3, seed=1)
    assert r.fitness_after == pytest.approx(r.fitness_before)
    assert r.n_kept < r.n_units
    kept_words = r.prompt.split()
    assert all(w in kept_words for w in USEFUL)  # only useless words could go at full fitness


def test_promptquine_stops_at_min_length_and_checks_arguments():
    r = promptquine(synthetic(), population=4, reproduction=6, budget=500, min_length=8, seed=0)
    assert r.fitness_calls < 500  # the population's mean length reached 8 first
    assert r.extras["population_mean_kept"] <= 8
    with pytest.raises(InputError):
        promptquine(synthetic(), mode="nsga")
    with pytest.raises(InputError):
        promptquine(synthetic(), budget=0)


def test_attribution_prune_drops_the_lowest_scored_units_and_random_prune_is_seeded():
    r = attribution_prune(synthetic(), "loo", n_remove=4)
    assert r.prompt == "alpha beta gamma delta epsilon"
    assert r.fitness_after == pytest.approx(1.5)
    assert r.fitness_calls == 1 + 9 + 1  # full, LOO's 9 masks (full cached), the pruned one
    assert len(r.extras["scores"]) == 9
    a, b = random_prune(synthetic(), 4, seed=3), random_prune(synthetic(), 4, seed=3)
    assert a.kept.tolist() == b.kept.tolist() and a.n_kept == 5
    assert a.fitness_calls == 2
    with pytest.raises(InputError):
        random_prune(synthetic(), 9)
    with pytest.raises(InputError):
        attribution_prune(synthetic(), "loo", n_remove=-1)


def test_prune_result_is_json_serialisable():
    r = tapruning(synthetic())
    d = json.loads(r.to_json())
    assert d["kept"] == "".join("1" if w in USEFUL else "0" for w in WORDS.split())
    assert d["n_kept"] == 5 and d["fitness_calls"] == len(d["trace"])
    assert isinstance(r, PruneResult) and "tapruning" in repr(r)


def test_pruning_a_prompt_task_counts_passes_per_fitness_call(tiny_lm):
    fit_set = but_sentiment(4, seed=3)
    task = PromptTask(tiny_lm, "Read it. Review: {input}\nSentiment:", fit_set,
                      SENTIMENT_VERBALIZERS, fitness="accuracy")  # fmt: skip
    if task.fitness_values()["accuracy"] == 0:
        pytest.skip("the random tiny model gets every fitness item wrong")
    r = tapruning(task, max_rounds=1)
    assert "{input}" in r.prompt
    assert r.cost.forward_passes == (r.fitness_calls - 1) * 4  # the full prompt was cached
    q = promptquine(PromptTask(tiny_lm, task.template, fit_set, SENTIMENT_VERBALIZERS),
                    population=4, reproduction=6, budget=12, min_length=2, seed=0)  # fmt: skip
    assert q.fitness_calls <= 12 and q.cost.forward_passes == q.fitness_calls * 4
    p = attribution_prune(PromptTask(tiny_lm, task.template, fit_set, SENTIMENT_VERBALIZERS),
                          "loo", n_remove=3)  # fmt: skip
    assert p.fitness_calls == task.n_units + 2 and p.n_removed == 3
    json.dumps(p.to_dict())
