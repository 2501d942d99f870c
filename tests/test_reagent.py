"""ReAGent as a generation method: conformance, determinism, stopping, protection, cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError
from attribkit.methods.generation.reagent import lm_top1_replacements, probe_sequences, reagent
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
    for bad in ({"ratio": 0.0}, {"n_probes": 0}, {"sampler": "roberta"}, {"max_steps": 0}):
        with pytest.raises(InputError):
            reagent(task, **bad)


@pytest.mark.model
def test_zebra_is_the_top_column_on_the_real_model(smollm2) -> None:
    task = GenerationTask(smollm2, "Say the word zebra.", "Zebra")
    a = reagent(task)
    labels = [u.label for u in a.units]
    assert "zebra" in labels[int(np.nanargmax(a.scores[0]))].lower()
    assert all(c > 0 for c in a.extras["converged"])
