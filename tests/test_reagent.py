"""ReAGent as a generation method: conformance, determinism, stopping, protection, cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError
from attribkit.methods.generation.reagent import (
    _lm_sample_sampler,
    _uniform_sampler,
    lm_sample_candidates,
    lm_top1_replacements,
    probe_sequences,
    reagent,
)
from attribkit.tasks.generation import GenerationTask
from attribkit.testing import toy_generation_task, warm_template_cache


class _Recorder:
    """Records every id sequence the task's torch model runs (a forward pre-hook). A pass that
    continues the task's cached chat template (positions starting after 0) is recorded with the
    template's ids in front."""

    def __init__(self, task: GenerationTask) -> None:
        self.seqs: list[np.ndarray] = []
        self.calls = 0
        template = np.asarray(task.ids[: task._prefix_len])

        def hook(module: object, args: tuple, kwargs: dict) -> None:
            self.calls += 1
            ids = kwargs["input_ids"].cpu().numpy()
            pos = kwargs.get("position_ids")
            start = 0 if pos is None else int(pos[0, 0])
            if start:
                assert start == len(template), "a pass continues something else than the template"
                ids = np.concatenate([np.tile(template, (len(ids), 1)), ids], axis=1)
            self.seqs.extend(ids)

        self.handle = task.lm.model.register_forward_pre_hook(hook, with_kwargs=True)


def test_same_seed_same_scores_and_rows_are_distributions() -> None:
    a = reagent(toy_generation_task(), sampler="uniform", max_steps=8, seed=3)
    b = reagent(toy_generation_task(), sampler="uniform", max_steps=8, seed=3)
    np.testing.assert_array_equal(a.scores, b.scores)
    task = toy_generation_task()
    vis = task.visible()
    assert np.isfinite(a.scores[vis]).all() and np.isnan(a.scores[~vis]).all()
    np.testing.assert_allclose(np.nansum(a.scores, 1), 1.0)


def test_no_probe_converges_gives_the_mean_of_all_probes_not_nan() -> None:
    task = toy_generation_task()
    a = reagent(task, min_steps=10, max_steps=2, sampler="uniform")  # no stop check ever runs
    assert a.extras["converged"] == [0] * task.n_rows
    assert a.extras["steps"] == [2] * task.n_rows
    vis = task.visible()
    assert np.isfinite(a.scores[vis]).all()
    np.testing.assert_allclose(np.nansum(a.scores, 1), 1.0)


def test_template_tokens_are_never_replaced() -> None:
    task = toy_generation_task()
    ids = np.asarray(task.ids)
    protected = np.asarray(task.position_unit) < 0
    assert protected.any() and (~protected).any()
    every = np.ones((2, task.n_units), bool)
    seqs = probe_sequences(task, every, np.full((2, len(ids)), 7))
    np.testing.assert_array_equal(seqs[:, protected], np.tile(ids[protected], (2, 1)))
    assert (seqs[:, ~protected] == 7).all()
    # and in every sequence the model actually ran
    warm_template_cache(task)
    rec = _Recorder(task)
    try:
        reagent(task, sampler="uniform", min_steps=1, max_steps=4)
    finally:
        rec.handle.remove()
    seqs = np.stack(rec.seqs)
    assert (seqs[:, protected] == ids[protected]).all()
    assert (seqs[1:, ~protected] != ids[~protected]).any()


def test_lm_top1_never_proposes_the_original_or_special_tokens() -> None:
    task = toy_generation_task()
    ids = torch.tensor([task.ids])
    with torch.no_grad():
        logits = task.lm.model(input_ids=ids).logits[0]
    top1 = lm_top1_replacements(task, logits)
    assert (top1 != np.asarray(task.ids)).all()
    assert not set(top1.tolist()) & set(task.lm.tokenizer.all_special_ids)


def _vocab(task: GenerationTask) -> int:
    return min(task.lm.model.get_input_embeddings().num_embeddings, len(task.lm.tokenizer))


def test_random_samplers_never_draw_special_original_or_out_of_vocab_ids() -> None:
    task = toy_generation_task()
    ids = np.asarray(task.ids)
    special = set(task.lm.tokenizer.all_special_ids)
    with torch.no_grad():
        logits = task.lm.model(input_ids=torch.tensor([task.ids])).logits[0]
    cand, prob = lm_sample_candidates(task, logits)
    assert cand.shape[0] == len(ids) and (cand != ids[:, None]).all()
    np.testing.assert_allclose(prob.sum(1), 1.0)
    for draw in (_lm_sample_sampler(cand, prob), _uniform_sampler(task)):
        a = draw(task, np.random.default_rng(0), 64)
        b = draw(task, np.random.default_rng(0), 64)
        np.testing.assert_array_equal(a, b)  # seeded
        assert a.shape == (64, len(ids))
        assert (a >= 0).all() and (a < _vocab(task)).all()
        assert not set(a.ravel().tolist()) & special
        assert (a != ids[None]).mean() > 0.95  # lm_sample: never; uniform: by chance only
    rng = np.random.default_rng(3)
    lm_draws = _lm_sample_sampler(cand, prob)(task, np.random.default_rng(1), 64)
    assert (lm_draws != ids[None]).all()
    # a fresh draw per probe and position (the tiny model's own distributions are too peaked to
    # show it: draw from flat candidate probabilities)
    flat = _lm_sample_sampler(cand, np.full(prob.shape, 1 / prob.shape[1]))
    for a in (flat(task, np.random.default_rng(2), 64), _uniform_sampler(task)(task, rng, 64)):
        assert all(len(set(a[:, p])) > 1 for p in range(len(ids)))


def _one_update(task: GenerationTask, **kw: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one update step of one probe per row (no stop check); return the scores, each row's
    replaced columns (rows × columns) and its probe's drop of the row value, from the model
    calls recorded."""
    warm_template_cache(task)
    rec = _Recorder(task)
    try:
        a = reagent(task, n_probes=1, min_steps=5, max_steps=1, sampler="uniform", **kw)
    finally:
        rec.handle.remove()
    original, *probes = rec.seqs  # the original pass, then one probe per row
    assert len(probes) == task.n_rows
    pos_unit = np.asarray(task.position_unit)
    replaced = np.zeros((task.n_rows, task.n_units), bool)
    for i, probe in enumerate(probes):
        replaced[i, pos_unit[(probe != original) & (pos_unit >= 0)]] = True
    with torch.no_grad():
        f = task.row_values(task.forward_logits(torch.tensor(np.stack([original, *probes]))))
    f = f.double().numpy()
    return a.scores, replaced, np.array([(f[0, i], f[1 + i, i]) for i in range(task.n_rows)])


def _softmax_of(replaced: np.ndarray, g: float) -> np.ndarray:
    logit = np.where(replaced, g, -g)
    return np.exp(logit - logit.max()) / np.exp(logit - logit.max()).sum()


def test_importance_update_adds_the_target_drop_to_replaced_and_subtracts_it_from_kept() -> None:
    task = toy_generation_task()
    scores, replaced, f = _one_update(task)
    vis = task.visible()
    for i in range(task.n_rows):
        assert replaced[i, vis[i]].any() and (~replaced[i, vis[i]]).any()
        g = f[i, 0] - f[i, 1]  # delta="value": g(Δ) = the drop of log p(y_t)
        want = _softmax_of(replaced[i, vis[i]], g)
        np.testing.assert_allclose(scores[i, vis[i]], want, rtol=1e-5)


def test_delta_prob_is_the_papers_probability_drop_through_the_logit() -> None:
    task = toy_generation_task()
    scores, replaced, f = _one_update(task, delta="prob")
    vis = task.visible()
    for i in range(task.n_rows):
        d = np.exp(f[i, 0]) - np.exp(f[i, 1])
        want = _softmax_of(replaced[i, vis[i]], np.log((1 + d) / (1 - d)))
        np.testing.assert_allclose(scores[i, vis[i]], want, rtol=1e-5)
    with pytest.raises(InputError):
        reagent(GenerationTask(task.lm, task.prompt, task.response, target="logit"), delta="prob")


def test_stopping_rule_stops_every_probe_at_the_first_check_when_the_target_always_hits() -> None:
    task = toy_generation_task()
    v = _vocab(task) + 100  # every token is in the top-k: the first check stops every probe
    a = reagent(task, n_probes=3, min_steps=2, max_steps=50, top_k=v, sampler="uniform")
    assert a.extras["steps"] == [2] * task.n_rows
    assert a.extras["converged"] == [3] * task.n_rows
    b = reagent(task, n_probes=3, min_steps=0, max_steps=50, top_k=v, sampler="uniform")
    assert b.extras["steps"] == [0] * task.n_rows  # checked before the first update: uniform
    vis = task.visible()
    for i in range(task.n_rows):
        np.testing.assert_allclose(b.scores[i, vis[i]], 1 / vis[i].sum())


def test_cost_counts_every_sequence_and_call() -> None:
    task = toy_generation_task()
    warm_template_cache(task)  # built before counting: the formulas are the method's own passes
    rec = _Recorder(task)
    try:
        a = reagent(task, n_probes=4, min_steps=10, max_steps=3)  # updates only, no checks
    finally:
        rec.handle.remove()
    assert a.cost.forward_passes == len(rec.seqs) == 1 + task.n_rows * 4 * 3
    assert a.cost.batches == rec.calls == 1 + 3  # the original pass, then one call per step
    rec = _Recorder(task)
    try:
        a = reagent(task, n_probes=4, min_steps=0, max_steps=3, batch_size=5)
    finally:
        rec.handle.remove()
    assert a.cost.forward_passes == len(rec.seqs) and a.cost.batches == rec.calls


def test_custom_sampler_and_bad_parameters() -> None:
    task = toy_generation_task()

    def fives(t: GenerationTask, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full((n, len(t.ids)), 5)

    a = reagent(task, sampler=fives, max_steps=3)
    assert a.params["sampler"] == "custom"
    bads = (
        {"ratio": 0.0},
        {"n_probes": 0},
        {"sampler": "roberta"},
        {"max_steps": 0},
        {"delta": "kl"},
    )
    for bad in bads:
        with pytest.raises(InputError):
            reagent(task, **bad)


@pytest.mark.model
def test_zebra_is_the_top_column_on_the_real_model(smollm2) -> None:
    task = GenerationTask(smollm2, "Say the word zebra.", "Zebra")
    a = reagent(task)
    labels = [u.label for u in a.units]
    assert "zebra" in labels[int(np.nanargmax(a.scores[0]))].lower()
    assert all(c > 0 for c in a.extras["converged"])
