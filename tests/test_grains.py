"""GrAInS steering vectors and the steering hook, on the tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError
from attribkit.methods.generation.grains import (
    contrastive_prompt_ig,
    decoder_layers,
    grains_vectors,
    steer,
    steering_hook,
)
from attribkit.tasks.generation import GenerationTask
from attribkit.testing import warm_template_cache

EXAMPLES = [
    ("hello there world", "the cat sat", "a dog ran"),
    ("the world is big", "yes", "no way"),
    ("cat dog bird fish", "the bird", "the fish"),
]


@pytest.fixture(scope="module")
def vectors(tiny_lm):
    # the model's one-time check of the template cache, done here so that the cost is exact
    warm_template_cache(GenerationTask(tiny_lm, *EXAMPLES[0][:2]))
    return grains_vectors(tiny_lm, EXAMPLES, k=2, n_steps=8)


def test_vectors_shape_cost_and_records(tiny_lm, vectors):
    assert vectors.shape == (2, 32)
    assert np.isfinite(vectors.vectors).all() and np.abs(vectors.vectors).sum() > 0
    assert vectors.layers == [0, 1]
    assert vectors.hidden_norms.shape == (2,)
    # per example: 2·(n_steps + 2) + 3 forward (+ 2: the two responses' template caches),
    # 2·n_steps backward
    assert vectors.cost.forward_passes == 3 * (2 * 10 + 3 + 2)
    assert vectors.cost.backward_passes == 3 * 16
    assert vectors.cost.seconds > 0
    for ex in vectors.examples:
        assert 1 <= len(ex["positive_tokens"]) <= 2 and 1 <= len(ex["negative_tokens"]) <= 2
        assert ex["completeness_error"] < 0.05
    mean = grains_vectors(tiny_lm, EXAMPLES[:2], k=2, n_steps=4, method="mean", layers=[1])
    assert mean.shape == (1, 32) and np.isfinite(mean.vectors).all()
    pos = grains_vectors(tiny_lm, EXAMPLES[:2], k=2, n_steps=4, mode="pos", layers=[0])
    assert pos.shape == (1, 32)


def test_contrastive_ig_completeness(tiny_lm):
    ig = contrastive_prompt_ig(tiny_lm, *EXAMPLES[0], n_steps=16)
    assert len(ig["scores"]) == len(ig["positions"]) > 0
    assert abs(ig["scores"].sum() - ig["gap"]) <= 0.02 * max(abs(ig["gap"]), 1e-3)
    # f is the whole-response log-prob contrast
    lp_pref = tiny_lm.token_logprobs(EXAMPLES[0][0], EXAMPLES[0][1])[0].sum()
    lp_dis = tiny_lm.token_logprobs(EXAMPLES[0][0], EXAMPLES[0][2])[0].sum()
    assert ig["f"] == pytest.approx(lp_pref - lp_dis, abs=1e-3)


def _layer_out(lm, ids, layer):
    got = {}
    mod = decoder_layers(lm.model)[layer]
    h = mod.register_forward_hook(lambda m, a, o: got.update(h=o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits
    finally:
        h.remove()
    return got["h"], logits


def test_steer_moves_towards_vector_preserves_norm_and_unhooks(tiny_lm, vectors):
    ids = torch.tensor([tiny_lm._prompt_ids("hello there world", True)])
    h0, logits0 = _layer_out(tiny_lm, ids, 0)
    v = torch.as_tensor(vectors.vector(0))
    unit = v / v.norm()
    with steer(tiny_lm, vectors, 0, alpha=3.0):
        h1, logits1 = _layer_out(tiny_lm, ids, 0)
    # per-position norm over the hidden axis is preserved
    torch.testing.assert_close(h1.norm(dim=-1), h0.norm(dim=-1), rtol=1e-5, atol=1e-5)
    # every position turns towards the steering direction
    cos0 = (h0 @ unit) / h0.norm(dim=-1)
    cos1 = (h1 @ unit) / h1.norm(dim=-1)
    assert (cos1 > cos0).all()
    assert not torch.allclose(logits0, logits1)
    # negative alpha turns away
    with steer(tiny_lm, vectors, 0, alpha=-3.0):
        h2, _ = _layer_out(tiny_lm, ids, 0)
    assert (((h2 @ unit) / h2.norm(dim=-1)) < cos0).all()
    # the hook is gone afterwards: outputs identical to unsteered
    h3, logits3 = _layer_out(tiny_lm, ids, 0)
    assert torch.equal(logits3, logits0) and torch.equal(h3, h0)
    assert not decoder_layers(tiny_lm.model)[0]._forward_hooks


def test_steer_changes_generation_and_unhooks_on_error(tiny_lm, vectors):
    before = tiny_lm.generate("hello there world", max_new_tokens=6)
    with steer(tiny_lm, vectors, [0, 1], alpha=20.0):
        steered = tiny_lm.generate("hello there world", max_new_tokens=6)
    assert steered != before
    with pytest.raises(RuntimeError), steer(tiny_lm, vectors, 1, alpha=1.0):
        raise RuntimeError("boom")
    assert tiny_lm.generate("hello there world", max_new_tokens=6) == before
    with pytest.raises(InputError, match="no steering vector"), steer(tiny_lm, vectors, 5, 1.0):
        pass


def test_hook_handles_tuple_outputs():
    hook = steering_hook(torch.tensor([1.0, 0.0, 0.0]), alpha=2.0)
    h = torch.tensor([[[0.0, 3.0, 4.0]]])
    out = hook(None, (), (h, "extra"))
    assert isinstance(out, tuple) and out[1] == "extra"
    assert out[0].norm() == pytest.approx(5.0)
    assert out[0][0, 0, 0] > 0
    assert hook(None, (), h).shape == h.shape


def test_bad_arguments(tiny_lm):
    with pytest.raises(InputError, match="triple"):
        grains_vectors(tiny_lm, [("a", "b")])
    with pytest.raises(InputError, match="out of range"):
        grains_vectors(tiny_lm, EXAMPLES[:1], layers=[7])
    with pytest.raises(InputError, match="method"):
        grains_vectors(tiny_lm, EXAMPLES[:1], method="svd")


@pytest.mark.model
def test_contrastive_ig_picks_the_cue_words_on_the_real_model(smollm2):
    # A prompt with one positive and one negative cue; the preferred reply follows the positive
    # one. With the space baseline (the default) the most positive prompt token is the positive
    # cue and the most negative one the negative cue; the pad baseline picked punctuation here.
    prompt = "The food was delicious, the service was terrible. How was dinner?"
    ig = contrastive_prompt_ig(smollm2, prompt, "Dinner was delicious.", "Dinner was terrible.")
    ids = [ig["prompt_ids"][p] for p in ig["positions"]]
    tokens = [smollm2.tokenizer.decode([i]) for i in ids]
    assert tokens[int(np.argmax(ig["scores"]))] == " delicious"
    assert tokens[int(np.argmin(ig["scores"]))] == " terrible"
    # Not converged at the default 20 steps (measured 0.36): the ranking is what matters here;
    # completeness itself is tested on the tiny model above.
    assert np.isfinite(ig["completeness_error"])
