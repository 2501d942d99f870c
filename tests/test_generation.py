"""Token attribution of generated text: the matrix, targets, methods, aggregation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError
from attribkit.methods.generation import common as gen_common
from attribkit.models.blackbox import CallableModel
from attribkit.tasks.generation import (
    GenerationTask,
    aggregate_columns,
    aggregate_rows,
    attribute_generation,
)
from attribkit.testing import warm_template_cache

PROMPT = "the cat sat on the mat"


def test_matrix_is_rows_by_columns_with_causal_nans(tiny_lm) -> None:
    task = GenerationTask(tiny_lm, PROMPT, "the cat sat")
    a = task.attribute("input_x_gradient")
    assert a.scores.shape == (task.n_rows, task.n_units)
    n_p = task.n_prompt_units
    assert task.n_units == n_p + task.n_rows - 1  # every generated token but the last is an input
    for r in range(task.n_rows):
        assert np.isfinite(a.scores[r, : n_p + r]).all()
        assert np.isnan(a.scores[r, n_p + r :]).all()  # a row never sees itself or later tokens
    assert [u.meta["role"] for u in a.units].count("response") == task.n_rows - 1
    assert a.target["row_labels"] == task.row_labels()


def test_integrated_gradients_completeness_per_row(tiny_lm) -> None:
    a = GenerationTask(tiny_lm, PROMPT, "the cat").attribute("integrated_gradients")
    sums = np.nansum(a.scores, axis=1)
    np.testing.assert_allclose(sums, a.extras["target_gap"], rtol=0.02, atol=1e-4)
    assert max(a.extras["completeness_error"]) <= 0.02
    task = GenerationTask(tiny_lm, PROMPT, "the cat")
    warm_template_cache(task)  # built before counting: the formulas are the method's own passes
    fixed = task.attribute("integrated_gradients", n_steps=8, target_error=None)
    assert fixed.extras["steps"] == [8] * fixed.target["rows"].__len__()
    assert fixed.cost.forward_passes == 2 + 9  # the two path ends, then 9 trapezoid nodes
    assert fixed.cost.backward_passes == 9 * len(fixed.target["rows"])


def test_refinement_reuses_nodes_and_only_refines_rows_above_target(tiny_lm) -> None:
    task = GenerationTask(tiny_lm, PROMPT, "the cat sat")
    warm_template_cache(task)
    a = task.attribute("integrated_gradients", n_steps=2, target_error=1e-4, max_steps=16)
    steps = a.extras["steps"]
    refined = [s for s in steps if s > 2]
    assert refined, "the tiny model needs more than 2 steps on some row"
    # nested trapezoid: the deepest level's nodes include every earlier one
    assert a.cost.forward_passes == 2 + max(steps) + 1
    assert a.cost.backward_passes < (max(steps) + 1) * task.n_rows or len(set(steps)) == 1


def test_batched_row_gradients_equal_the_row_loop(tiny_lm) -> None:
    task = GenerationTask(tiny_lm, PROMPT, "the cat sat")
    key = type(tiny_lm.model).__name__
    batched = task.attribute("input_x_gradient").scores
    gen_common._BATCHED_GRADS[key] = False
    try:
        looped = task.attribute("input_x_gradient").scores
    finally:
        gen_common._BATCHED_GRADS.pop(key)
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-7)


def _uncached_values(task: GenerationTask, ids: torch.Tensor) -> torch.Tensor:
    """Row values from one plain forward pass of the whole sequences (no template cache)."""
    with torch.no_grad():
        logits = task.lm.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    n_p = len(task.prompt_ids)
    return task.row_values(logits[:, n_p - 1 : -1])


def test_the_cached_chat_template_gives_the_full_forward_and_gradients(tiny_lm) -> None:
    task = GenerationTask(tiny_lm, PROMPT, "the cat sat")
    k = task._prefix_len
    assert 0 < k < len(task.prompt_ids)  # the template before the first prompt token is cached
    assert all(u < 0 for u in task.position_unit[:k]) and task.position_unit[k] >= 0
    ids = torch.tensor([task.ids] * 3)
    ids[1, k + 1] = tiny_lm.pad_id  # a column changed: the cache still applies
    ids[2, 0] = tiny_lm.pad_id  # the template changed: the whole sequence must run
    assert task._cached_prefix(ids[:2], None) == k and task._cached_prefix(ids, None) == 0
    expected = _uncached_values(task, ids)
    for batch in (ids[:2], ids):
        got = task.forward_ids(batch)
        torch.testing.assert_close(got, expected[: len(batch)], rtol=1e-5, atol=1e-5)
    # gradients at the embeddings: the same as without the cache at every position it runs
    x = task.embeddings()[None]
    _, cached = gen_common.row_gradients(task, x)
    k_saved, task._prefix_len = task._prefix_len, 0
    try:
        _, full = gen_common.row_gradients(task, x)
    finally:
        task._prefix_len = k_saved
    torch.testing.assert_close(cached[:, :, k:], full[:, :, k:], rtol=1e-4, atol=1e-6)
    assert (cached[:, :, :k] == 0).all()  # the template is not an input of the cached pass


def test_occlusion_is_the_drop_when_a_token_is_padded(tiny_lm) -> None:
    task = GenerationTask(tiny_lm, PROMPT, "the cat")
    warm_template_cache(task)
    a = task.attribute("occlusion")
    ids = torch.tensor([task.ids])
    full = task.forward_ids(ids)[0]
    col = 2
    hit = torch.tensor(task.position_unit) == col
    padded = task.forward_ids(torch.where(hit, tiny_lm.pad_id, ids))[0]
    np.testing.assert_allclose(a.scores[:, col], (full - padded).double().numpy(), rtol=1e-5)
    assert a.cost.forward_passes == task.n_units + 1


def test_contrastive_target_is_the_difference_with_the_foil(tiny_lm) -> None:
    plain = GenerationTask(tiny_lm, PROMPT, "cat")
    foil_as_response = GenerationTask(tiny_lm, PROMPT, "mat")
    contrast = GenerationTask(tiny_lm, PROMPT, "cat", foil="mat")
    ids = torch.tensor([plain.ids])
    expected = plain.forward_ids(ids) - foil_as_response.forward_ids(
        torch.tensor([foil_as_response.ids])
    )
    # Row 0 (both after the same prompt); later foil rows follow the real response's prefix.
    torch.testing.assert_close(contrast.forward_ids(ids)[:, 0], expected[:, 0])
    assert "foil" in contrast.target()["description"]
    with pytest.raises(InputError, match="aligned token by token"):
        GenerationTask(tiny_lm, PROMPT, "cat", foil="the mat sat")


@pytest.mark.parametrize("target", ["prob", "logit"])
def test_other_targets(tiny_lm, target) -> None:
    task = GenerationTask(tiny_lm, PROMPT, "cat", target=target)
    logp = GenerationTask(tiny_lm, PROMPT, "cat").forward_ids(torch.tensor([task.ids]))
    value = task.forward_ids(torch.tensor([task.ids]))
    if target == "prob":
        torch.testing.assert_close(value, logp.exp())
    else:
        assert not torch.allclose(value, logp)


def test_aggregation_keeps_the_totals(tiny_lm) -> None:
    a = attribute_generation(
        tiny_lm, "The cat sat on the mat. The dog ran away.", "the cat", method="occlusion"
    )
    words = aggregate_columns(a, "words")
    np.testing.assert_allclose(np.nansum(words.scores, 1), np.nansum(a.scores, 1))
    assert [u.label for u in words.units][:3] == ["The", "cat", "sat"]
    sentences = aggregate_columns(a, "sentences")
    assert [u.label for u in sentences.units][:2] == [
        "The cat sat on the mat.",
        "The dog ran away.",
    ]
    one = aggregate_rows(a)
    assert one.scores.ndim == 1
    np.testing.assert_allclose(np.nansum(one.scores), np.nansum(a.scores))
    first = aggregate_rows(a, span=(0, 1))  # the first generated token only
    np.testing.assert_allclose(first.scores, np.where(np.isnan(a.scores[0]), np.nan, a.scores[0]))


def test_bad_inputs_get_clear_errors(tiny_lm) -> None:
    with pytest.raises(InputError, match="prompt is empty"):
        GenerationTask(tiny_lm, "  ", "cat")
    with pytest.raises(InputError, match="response is empty"):
        GenerationTask(tiny_lm, PROMPT, " ")
    black_box = CallableModel(lambda texts: np.zeros(len(texts)))
    with pytest.raises(InputError, match="black box"):
        GenerationTask(black_box, PROMPT, "cat")
    with pytest.raises(InputError, match="unknown target"):
        GenerationTask(tiny_lm, PROMPT, "cat", target="loss")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="perturbation methods do not apply"):
        attribute_generation(tiny_lm, PROMPT, "cat", method="loo")
    with pytest.raises(InputError, match=r"unknown method 'nope'.*choose one of: .*reagent"):
        attribute_generation(tiny_lm, PROMPT, "cat", method="nope")


def test_a_response_that_tokenizes_differently_after_the_prompt(tiny_lm) -> None:
    """'the ca' + 't' joins into other tokens than 't' alone: rows follow the response's own
    tokens (what generation emits), and the task says so."""
    with pytest.warns(UserWarning, match="tokenizes differently"):
        task = GenerationTask(tiny_lm, "the ca", "t", chat=False)
    assert task.tokenization_note is not None
    assert task.response_ids == tiny_lm._response_ids("t")
    a = task.attribute("input_x_gradient")
    assert a.scores.shape[0] == len(task.response_ids)
    assert a.target["tokenization_note"] == task.tokenization_note


@pytest.mark.model
def test_integrated_gradients_completeness_on_the_real_model(smollm2) -> None:
    """The issue's bar: within 2 % with the default steps on the bundled model."""
    a = attribute_generation(smollm2, "Say the word zebra.", "Zebra")
    assert max(a.extras["completeness_error"]) <= 0.02
    np.testing.assert_allclose(np.nansum(a.scores, 1), a.extras["target_gap"], rtol=0.02, atol=1e-3)


@pytest.mark.model
def test_contrastive_target_moves_the_weight_to_the_deciding_token(smollm2) -> None:
    """Plain log p(' Rome') leans on the generic last token ' is' (remove it and no capital
    follows); contrasting with ' Paris' cancels that and credits ' Italy', the token that
    decides between the two."""
    prompt = "The capital of France is Paris. The capital of Italy is Rome. The capital of Italy is"
    plain = attribute_generation(smollm2, prompt, " Rome", method="occlusion", chat=False)
    contrast = attribute_generation(
        smollm2, prompt, " Rome", method="occlusion", chat=False, foil=" Paris"
    )
    assert plain.top(1)[0][0].label == " is"
    top = contrast.top(1)[0][0]
    assert top.label == " Italy" and top.start > prompt.index("Rome")  # the last 'Italy'


COPY_PROMPTS = [
    ("Say the word zebra.", "Zebra", " zebra"),
    ("Copy this word: banana", "Banana", " banana"),
    ("Type the word giraffe.", "Giraffe", " giraffe"),
]
# Measured misses (benchmarks/copy_task.py, 8 prompts): saliency's and input x gradient's top on
# the banana prompt is 'Copy' (7/8 hits each); ReAGent (8/8) is tested in test_reagent.py.
EXPECTED_MISSES = {("saliency", " banana"), ("input_x_gradient", " banana")}


@pytest.mark.model
@pytest.mark.parametrize(("prompt", "response", "word"), COPY_PROMPTS)
def test_copy_task_finds_the_word(smollm2, prompt, response, word) -> None:
    """A copy prompt: the first generated token is decided by the copied word, and the methods
    put their largest weight there (with the measured exceptions above)."""
    task = GenerationTask(smollm2, prompt, response)
    methods = ("occlusion", "saliency", "input_x_gradient", "integrated_gradients", "attention")
    for method in (*methods, "attention_rollout"):
        row = task.attribute(method).scores[0]
        hit = task.columns[int(np.nanargmax(row))].label == word
        assert hit != ((method, word) in EXPECTED_MISSES), method
    # Rolled out over every layer, attention collapses onto the first tokens (0/8): the reason
    # the default starts at the last third of the layers. Input x gradient's signed sum gives
    # the copied word its most negative score (0/8): the reason the default is the L2 norm.
    signed = task.attribute("input_x_gradient", norm=None).scores[0]
    assert task.columns[int(np.nanargmin(signed))].label == word
    row = task.attribute("attention_rollout", start_layer=0).scores[0]
    assert task.columns[int(np.nanargmax(row))].label != word
