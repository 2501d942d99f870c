"""Direct logit attribution: components sum to the logit, heads sum to their layer's attention
term, the foil version is a logit difference; on the tiny random Llama and the real SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest

from attribkit.core.errors import InputError
from attribkit.methods.generation.dla import direct_logit_attribution
from attribkit.tasks.generation import GenerationTask

PROMPT, RESPONSE = "hello there world", "the cat sat"


def _check_exact(a, n_layers: int) -> None:
    logit = a.extras["logit"]
    assert len(a.units) == 1 + 2 * n_layers
    assert [u.label for u in a.units[:3]] == ["embed", "L0.attn", "L0.mlp"]
    assert abs(a.scores.sum() - logit) <= 1e-3 * max(1.0, abs(logit))
    assert a.extras["sum"] == pytest.approx(a.scores.sum())
    assert a.extras["error"] == pytest.approx(abs(a.extras["sum"] - logit))
    heads = np.array(a.extras["heads"])
    assert heads.shape[0] == n_layers
    np.testing.assert_allclose(heads.sum(1), a.scores[1::2], rtol=1e-6, atol=1e-6)
    assert a.cost.forward_passes == 1


def test_components_sum_to_logit_tiny(tiny_lm):
    for row in range(3):
        a = direct_logit_attribution(tiny_lm, PROMPT, RESPONSE, row=row)
        _check_exact(a, 2)
        assert np.array(a.extras["heads"]).shape == (2, 4)
        assert a.extras["token_id"] == GenerationTask(tiny_lm, PROMPT, RESPONSE).response_ids[row]
        assert a.extras["final_norm_scale"] > 0


def test_foil_is_difference_of_two_logits_tiny(tiny_lm):
    a = direct_logit_attribution(tiny_lm, PROMPT, RESPONSE, row=1)
    other = direct_logit_attribution(tiny_lm, PROMPT, RESPONSE, row=1, token=7)
    c = direct_logit_attribution(tiny_lm, PROMPT, RESPONSE, row=1, foil=7)
    assert c.extras["logit"] == pytest.approx(a.extras["logit"] - other.extras["logit"], abs=1e-5)
    np.testing.assert_allclose(c.scores, a.scores - other.scores, atol=1e-6)
    assert c.extras["error"] < 1e-3 * max(1.0, abs(c.extras["logit"]))


def test_task_input_and_errors(tiny_lm):
    task = GenerationTask(tiny_lm, PROMPT, RESPONSE)
    a = direct_logit_attribution(task, row=2, heads=False)
    b = direct_logit_attribution(tiny_lm, PROMPT, RESPONSE, row=2)
    np.testing.assert_allclose(a.scores, b.scores)
    assert "heads" not in a.extras
    with pytest.raises(InputError, match="out of range"):
        direct_logit_attribution(task, row=99)
    with pytest.raises(InputError, match="foil is the target"):
        direct_logit_attribution(task, row=0, foil=task.response_ids[0])


def test_unsupported_architecture_is_named(tiny_lm):
    from transformers import GPT2Config, GPT2LMHeadModel

    from attribkit.models.lm import LanguageModel

    cfg = GPT2Config(vocab_size=len(tiny_lm.tokenizer), n_embd=16, n_layer=1, n_head=2)
    gpt2 = LanguageModel(GPT2LMHeadModel(cfg), tiny_lm.tokenizer, name="gpt2-tiny")
    with pytest.raises(InputError, match=r"Llama-family.*gpt2"):
        direct_logit_attribution(gpt2, PROMPT, RESPONSE)


@pytest.mark.model
def test_dla_real_model(smollm2):
    prompt, response = "What is the capital of France?", "The capital of France is Paris."
    a = direct_logit_attribution(smollm2, prompt, response, row=5)
    assert a.extras["token"] == " Paris"
    _check_exact(a, 30)
    assert np.array(a.extras["heads"]).shape == (30, 9)
    other = direct_logit_attribution(smollm2, prompt, response, row=5, token=" London")
    c = direct_logit_attribution(smollm2, prompt, response, row=5, foil=" London")
    assert c.extras["logit"] == pytest.approx(a.extras["logit"] - other.extras["logit"], abs=1e-4)
    assert c.extras["logit"] > 0  # Paris beats London
    assert abs(c.scores.sum() - c.extras["logit"]) <= 1e-3 * max(1.0, abs(c.extras["logit"]))
