"""GrAInS returns steering vectors, not an Attribution, so it has its own conformance checks in
the spirit of ``attribkit.testing.check_method``: its reported cost equals what the model ran
(counted independently by a hook), it is deterministic, and a broken model or bad input gives a
clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attribkit as ak
from attribkit import testing

EXAMPLES = [("hello there world", "the cat sat", "a dog ran"), ("the world is big", "yes", "no")]


def _counted_lm() -> tuple[object, list[int]]:
    lm = testing.tiny_language_model()
    rows = [0]

    def hook(module, args, kwargs):  # every sequence the model runs, with or without gradient
        x = kwargs.get("input_ids")
        x = kwargs.get("inputs_embeds") if x is None else x
        rows[0] += int(x.shape[0])

    lm.model.register_forward_pre_hook(hook, with_kwargs=True)
    return lm, rows


def test_reported_cost_is_what_the_model_ran() -> None:
    lm, rows = _counted_lm()
    before = lm.cost.copy()
    v = ak.grains_vectors(lm, EXAMPLES, k=2, n_steps=4)
    assert v.cost.forward_passes == rows[0] > 0
    assert v.cost.backward_passes == 2 * 2 * 4  # 2 examples × (preferred + dispreferred) × steps
    assert v.cost.seconds > 0
    spent = lm.cost - before  # the one meter: the LM's own counters saw the same passes
    assert spent.forward_passes == v.cost.forward_passes
    assert spent.backward_passes == v.cost.backward_passes


def test_deterministic() -> None:
    a = ak.grains_vectors(testing.tiny_language_model(), EXAMPLES, k=2, n_steps=4)
    b = ak.grains_vectors(testing.tiny_language_model(), EXAMPLES, k=2, n_steps=4)
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_broken_model_and_bad_input() -> None:
    lm = testing.tiny_language_model()
    with torch.no_grad():
        lm.model.get_input_embeddings().weight.fill_(float("nan"))
    with pytest.raises(ak.ScorerError):
        ak.grains_vectors(lm, EXAMPLES, k=2, n_steps=2)
    with pytest.raises(ak.InputError, match="at least one"):
        ak.grains_vectors(testing.tiny_language_model(), [], k=2)
