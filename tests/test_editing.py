"""Closed-form multi-layer editing (MEMIT / PMET as ACE applies it): the copy is edited and the
original is not, the written ΔW are what changed, errors, and on SmolLM2 an edit that moves the
Eiffel Tower to Italy while unrelated facts stay within a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError
from attribkit.internals.editing import (
    EditRequest,
    edit,
    edit_report,
    module_covariance,
)
from attribkit.tasks.editing_cases import (
    COVARIANCE_TEXT,
    KNOWN_FACTS,
    chains,
    make_edit_cases,
)

TINY_REQ = {"prompt": "The cat sat on the mat", "subject": "cat", "target_new": " dog"}


def _weights(lm):
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def test_edit_writes_a_copy_and_its_deltas(tiny_lm):
    before = _weights(tiny_lm)
    passes = tiny_lm.cost.forward_passes
    res = edit(tiny_lm, TINY_REQ, [[0], [1]], texts=COVARIANCE_TEXT[:6], steps=3, n_context=1)
    after = _weights(tiny_lm)
    assert all(torch.equal(before[k], after[k]) for k in before)  # original untouched
    assert res.lm is not tiny_lm and res.lm.model is not tiny_lm.model
    assert sorted(res.deltas) == ["L0.down_proj", "L0.o_proj", "L1.down_proj", "L1.o_proj"]
    for name, d in res.deltas.items():
        layer, mod = int(name[1]), name.split(".")[1]
        block = res.lm.model.model.layers[layer]
        lin = block.self_attn.o_proj if mod == "o_proj" else block.mlp.down_proj
        orig = before[
            f"model.layers.{layer}.{'self_attn' if mod == 'o_proj' else 'mlp'}.{mod}.weight"
        ]
        assert torch.allclose(lin.weight.detach() - orig, d, atol=1e-5)
        assert torch.linalg.matrix_rank(d.double(), rtol=1e-6) == 1  # one rank-one update
    assert res.groups == [[0], [1]] and len(res.losses) == 2
    assert res.cost.backward_passes > 0 and res.cost.forward_passes > 0
    assert tiny_lm.cost.forward_passes - passes == res.cost.forward_passes
    rep = edit_report(tiny_lm, res, TINY_REQ, unrelated=[("Hello there", " world")])
    assert set(rep.sections) == {"efficacy", "specificity"}
    assert rep.sections["efficacy"]["cost"].forward_passes == 2


def test_covariance_is_the_mean_outer_product(tiny_lm):
    cov = module_covariance(tiny_lm, ["a b c", "the cat"], [1], ["down_proj"])
    c = cov["L1.down_proj"]
    assert c.shape == (64, 64) and torch.allclose(c, c.T)
    assert torch.linalg.eigvalsh(c).min() > -1e-8


def test_edit_errors(tiny_lm):
    with pytest.raises(InputError, match="does not occur"):
        edit(tiny_lm, {**TINY_REQ, "subject": "horse"}, [0], texts=["a b"])
    with pytest.raises(InputError, match="lacks"):
        EditRequest.of({"prompt": "x"})
    with pytest.raises(InputError, match="outside"):
        edit(tiny_lm, TINY_REQ, [5], texts=["a b"])
    with pytest.raises(InputError, match="module"):
        edit(tiny_lm, TINY_REQ, [0], modules=("q_proj",), texts=["a b"])


def test_edit_cases_are_seeded_and_clean():
    cases = make_edit_cases(chains()[:4], ["Italy", "Spain", "Germany"], seed=3)
    again = make_edit_cases(chains()[:4], ["Italy", "Spain", "Germany"], seed=3)
    assert [c.new_country for c in cases] == [c.new_country for c in again]
    for c in cases:
        assert c.new_country != c.chain.country
        for p, a in c.unrelated:
            assert c.chain.landmark not in p and c.new_country not in p + a


@pytest.mark.model
def test_edit_changes_the_fact_and_spares_unrelated_ones_on_smollm2(smollm2):
    """Eiffel Tower → Italy at layers 14–16: the new answer's log p rises by ≥ 2 nats (or it
    becomes top-1); unrelated facts move by < 0.5 nats on average and ≥ 80 % keep their top-1."""
    before = _weights(smollm2)
    req = {
        "prompt": "The Eiffel Tower is located in the country of",
        "subject": "Eiffel Tower",
        "target_new": " Italy",
        "target_true": " France",
    }
    res = edit(smollm2, req, [14, 15, 16], texts=COVARIANCE_TEXT, steps=12, n_context=1)
    unrelated = [f for f in KNOWN_FACTS if "Eiffel" not in f[0] and "Ital" not in f[0]]
    rep = edit_report(smollm2, res, req, unrelated=unrelated)
    eff, spec = rep.sections["efficacy"], rep.sections["specificity"]
    assert eff["top1"] == 1.0 or eff["rise"] >= 2.0
    assert spec["mean_abs_change"] < 0.5 and spec["unchanged"] >= 0.8
    after = _weights(smollm2)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.isfinite(list(rep.summary().values())).all()
