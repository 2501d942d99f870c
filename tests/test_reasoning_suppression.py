"""Attention suppression (Thought Anchors) on the reasoning task: causality of the mask, the
unmasked pass, exact cost, determinism, bad input, and planted edges on SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError, ScorerError
from attribkit.methods.reasoning.suppression import _token_kl, suppression
from attribkit.tasks.reasoning import ReasoningTask, ReasoningTrace
from attribkit.testing import TOY_PROBLEM, tiny_language_model, toy_reasoning_task


def _matrix(a) -> np.ndarray:
    return np.array(a.extras["matrix"], dtype=float)


def test_masking_sentence_i_leaves_earlier_positions_unchanged():
    task = toy_reasoning_task()
    kl, _, sentences, _, keep = _token_kl(task)
    n = len(sentences)
    assert kl.shape == (n, len(keep))
    for i in range(n):
        before = keep < sentences[i][0]  # positions that cannot see sentence i anyway
        assert before.any() or i == 0
        assert np.all(kl[i, before] == 0.0)
        assert np.all(kl[i, keep >= sentences[i][0]] >= 0.0)
        assert kl[i, keep >= sentences[i][0]].max() > 0.0  # the mask does something
    m = _matrix(suppression(task))
    upper = np.triu(np.ones((n, n), dtype=bool))
    assert np.isnan(m[upper]).all() and np.isfinite(m[~upper]).all() and (m[~upper] >= 0).all()


def test_unmasked_pass_equals_plain_forward():
    task = toy_reasoning_task()
    _, base, sentences, answer, keep = _token_kl(task)
    ids, _ = task.lm._prompt_offsets(task.prompt(), False, None)
    ids = list(ids) + task.lm._response_ids(task.answer)
    assert keep[0] == sentences[0][0] - 1 and keep[-1] == answer[-1] - 1
    with torch.no_grad():
        plain = task.lm.model(torch.tensor([ids])).logits[0, keep].numpy()
    np.testing.assert_allclose(base, plain, atol=1e-5, rtol=1e-5)


def test_sentence_tokens_follow_the_offsets():
    task = toy_reasoning_task()
    _, _, sentences, _, _ = _token_kl(task)
    _ids, spans = task.lm._prompt_offsets(task.prompt(), False, None)
    prompt = task.prompt()
    for sent, positions in zip(task.trace.sentences, sentences, strict=True):
        pieces = "".join(prompt[spans[k][0] : spans[k][1]] for k in positions)
        assert pieces.strip() == sent  # the sentence's tokens, and nothing of the problem/cue
        assert positions == list(range(positions[0], positions[-1] + 1))


def test_cost_is_n_plus_one_passes_counted_on_the_model():
    task = toy_reasoning_task()
    n = len(task.units)
    rows = []
    task.lm.model.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(int(kw["input_ids"].shape[0])), with_kwargs=True
    )
    a = suppression(task)
    assert sum(rows) == n + 1 and len(rows) == 1
    assert a.cost.forward_passes == n + 1 and a.cost.batches == 1
    rows.clear()
    b = suppression(task, batch_size=2)
    assert rows == [2, 2, 1]
    assert b.cost.forward_passes == n + 1 and b.cost.batches == 3
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-12, equal_nan=True)


def test_deterministic_scores_and_extras():
    task = toy_reasoning_task()
    a, b = suppression(task), suppression(task)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.extras == b.extras
    n = len(task.units)
    m = _matrix(a)
    np.testing.assert_allclose(a.scores[:-1], [np.nanmean(m[i + 1 :, i]) for i in range(n - 1)])
    assert np.isnan(a.scores[-1]) and a.extras["distance_controlled"][-1] is None
    assert len(a.extras["answer_kl"]) == n and a.method == "suppression"
    again = type(a).from_dict(a.to_dict())
    assert again.extras["matrix"] == a.extras["matrix"]


def test_eager_and_sdpa_agree():
    task = toy_reasoning_task()
    a = suppression(task)
    task.lm.model.set_attn_implementation("eager")
    b = suppression(task)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-12, equal_nan=True)


def test_one_sentence_trace_is_rejected():
    task = ReasoningTask(tiny_language_model(), ReasoningTrace(TOY_PROBLEM, "2 + 3 = 5.", "5"))
    with pytest.raises(InputError):
        suppression(task)


def test_nan_model_is_a_scorer_error():
    task = toy_reasoning_task()
    with torch.no_grad():
        for p in task.lm.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ScorerError):
        suppression(task)


def test_trace_longer_than_the_window_is_rejected():
    task = toy_reasoning_task()
    task.lm.model.config.max_position_embeddings = 16
    with pytest.raises(InputError, match="window"):
        suppression(task)


# Planted dependencies: each "Recall" sentence copies a rare word from one earlier sentence.
PLANTED = [
    "The first code word is zebraquill.",
    "The weather today is mild and calm.",
    "The second code word is mangotrellis.",
    "I will now think about the problem carefully.",
    "The first code word was zebraquill, as said.",
    "Some steps are easy and some are hard.",
    "Recall the second one: mangotrellis.",
    "Next, I add 4 and 7 to get 11.",
    "Then I multiply 11 by 2, which gives 22.",
    "So the answer is 22.",
]
EDGES = {(4, 0), (6, 2), (8, 7), (9, 8)}


def _auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.model
def test_planted_edges_are_recovered_on_smollm2(smollm2):
    trace = ReasoningTrace("Compute (4 + 7) * 2.", " ".join(PLANTED), "22", chunks=PLANTED)
    task = ReasoningTask(smollm2, trace)
    a = suppression(task)
    m = _matrix(a)
    n = len(PLANTED)
    assert a.cost.forward_passes == n + 1
    for j, i in EDGES:
        assert np.nanargmax(m[j]) == i, (j, i, m[j])
    pos = [m[j, i] for j, i in EDGES]
    neg = [m[j, i] for j in range(n) for i in range(j) if (j, i) not in EDGES]
    assert _auc(pos, neg) >= 0.8
