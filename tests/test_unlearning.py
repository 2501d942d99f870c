"""Masked unlearning (GradDiff, NPO): confinement to the mask, the stopping rule, the cost, and
the toy of the design notes (§6.4: a 2-layer Llama trained from scratch on invented facts)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError
from attribkit.internals.unlearning import unlearn
from attribkit.internals.weights import weight_mask
from attribkit.models.lm import LanguageModel
from attribkit.tasks.unlearning_cases import make_people_facts, split_facts, train_toy_lm

FORGET = [("The cat sat on the", " mat"), ("Alice went to the", " market")]
RETAIN = [
    ("The capital of France is", " Paris"),
    ("The dog ran in the", " park"),
    ("Rome is the capital of", " Italy"),
]


def _copy(lm: LanguageModel) -> LanguageModel:
    return LanguageModel(copy.deepcopy(lm.model), lm.tokenizer, name="copy")


@pytest.mark.parametrize("loss", ["graddiff", "npo"])
def test_unselected_weights_stay_bit_identical(tiny_lm, loss):
    lm = _copy(tiny_lm)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    mask = weight_mask(lm, FORGET, RETAIN, "wagle", ratio=0.3)
    result = unlearn(
        lm, FORGET, RETAIN, loss=loss, mask=mask, steps=4, lr=1e-2, weight_decay=0.1,
        batch_size=2,
    )  # fmt: skip
    assert result.steps == result.optimizer_steps == 4
    moved = 0
    for name, p in lm.model.named_parameters():
        m = mask.masks[name]
        assert torch.equal(p.detach()[~m], before[name][~m]), name
        moved += int((p.detach()[m] != before[name][m]).sum())
        assert p.requires_grad  # frozen tensors are given back
    assert moved > 0.5 * mask.n_selected


def test_weight_decay_without_mask_moves_every_weight(tiny_lm):
    lm = _copy(tiny_lm)
    w = lm.model.model.layers[0].mlp.up_proj.weight
    before = w.detach().clone()
    unlearn(lm, FORGET, RETAIN, steps=1, lr=1e-2, weight_decay=0.1, batch_size=2)
    assert bool((w.detach() != before).all())


def test_bad_inputs(tiny_lm):
    lm = _copy(tiny_lm)
    with pytest.raises(InputError, match="both the forget and the retain"):
        unlearn(lm, FORGET, RETAIN + FORGET[1:], steps=1)
    with pytest.raises(InputError, match="unknown unlearning loss"):
        unlearn(lm, FORGET, RETAIN, loss="ga", steps=1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="steps or epochs"):
        unlearn(lm, FORGET, RETAIN, steps=1, epochs=1)
    mask = weight_mask(lm, None, None, "magnitude", ratio=0.5)
    bad = {n: m[..., :1] for n, m in mask.masks.items()}
    with pytest.raises(InputError, match="shape"):
        unlearn(lm, FORGET, RETAIN, mask=bad, steps=1)
    with pytest.raises(InputError, match="does not fit this model"):
        unlearn(lm, FORGET, RETAIN, mask={"w": torch.ones(2, dtype=torch.bool)}, steps=1)
    with pytest.raises(InputError, match="not a causal language model"):
        unlearn(torch.nn.Linear(2, 2), FORGET, RETAIN, tokenizer=lm.tokenizer, steps=1)


# --- the toy of the notes -------------------------------------------------------------------------

N_PEOPLE, N_FORGET = 80, 8


@pytest.fixture(scope="module")
def toy():
    """The toy LM trained once (seeded), its unlearning split and its trained weights."""
    facts = make_people_facts(N_PEOPLE, seed=0)
    lm = train_toy_lm(facts, seed=0)
    split = split_facts(facts, N_FORGET, relation="city", seed=0)
    return lm, split, copy.deepcopy(lm.model.state_dict())


def _run(toy, mask_method, seed, loss="graddiff"):
    lm, split, state = toy
    lm.model.load_state_dict(state)
    mask = None
    if mask_method is not None:
        mask = weight_mask(lm, split.forget, split.retain, mask_method, ratio=0.2, seed=seed)
    return unlearn(
        lm, split.forget, split.retain, loss=loss, mask=mask, lr=1e-3, steps=200,
        until_forget_accuracy=0.0, eval_sets={"jobs": split.other}, seed=seed,
    )  # fmt: skip


def test_toy_model_learnt_the_facts(toy):
    lm, split, state = toy
    lm.model.load_state_dict(state)
    result = unlearn(
        lm, split.forget, split.retain, steps=1, lr=1e-12, eval_sets={"jobs": split.other}
    )
    assert result.accuracy_before["forget"] >= 0.85
    assert result.accuracy_before["retain"] >= 0.85
    assert result.accuracy_before["jobs"] >= 0.85


def test_magnitude_mask_keeps_more_retain_accuracy_than_no_mask(toy):
    """Notes §6.4 (3 seeds): all weights 0.63 retain, magnitude 20 % 0.77, both at forget 0."""
    runs = {m: [_run(toy, m, seed) for seed in range(3)] for m in (None, "magnitude")}
    for rs in runs.values():
        for r in rs:
            assert r.stopped and r.accuracy_after["forget"] == 0.0
            assert r.trajectory[-1].step == r.steps and r.trajectory[0].step == 0
    retain = {m: float(np.mean([r.accuracy_after["retain"] for r in rs])) for m, rs in runs.items()}
    assert retain["magnitude"] > retain[None], retain
    # a mask slows forgetting: more steps to reach forget accuracy 0
    assert np.mean([r.steps for r in runs["magnitude"]]) > np.mean([r.steps for r in runs[None]])


def test_npo_reaches_zero_forget_accuracy_and_counts_its_cost(toy):
    r = _run(toy, "wagle", 0, loss="npo")
    assert r.stopped and r.accuracy_after["forget"] == 0.0
    n_forget = N_FORGET
    n_eval = n_forget + (N_PEOPLE - N_FORGET) + N_PEOPLE
    # step 0 and the last step evaluate every set; the others only the forget set; NPO's
    # reference NLL is one pass per forget example; each step a forget and a retain batch of 8
    forward = 2 * n_eval + (r.steps - 1) * n_forget + n_forget + r.steps * 16
    assert r.cost.forward_passes == forward
    assert r.cost.backward_passes == r.steps * 16
    assert r.optimizer_steps == r.steps
    losses = [s.loss for s in r.trajectory[1:]]
    assert all(np.isfinite(losses))
