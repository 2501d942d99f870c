"""Resampling importance (Thought Anchors' black-box method) on the reasoning task: the answer KL
(golden values, smoothing, clipping, disjoint supports), answer extraction, the counterfactual
split on a stub embedder, a planted sentence on a stochastic fake generator, plumbing and exact
cost on the tiny random Llama and on SmolLM2, and bad input."""

from __future__ import annotations

import json
import math
import time
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import attribkit as ak
from attribkit.core.cost import Cost
from attribkit.core.errors import InputError, ScorerError
from attribkit.methods.reasoning.resampling import (
    ALPHA,
    _counterfactual,
    accuracy,
    answer_kl,
    extract_boxed,
    extract_last_word,
    first_sentence,
    normalize_answer,
    resampling,
)
from attribkit.tasks.reasoning import ReasoningTask, ReasoningTrace
from attribkit.testing import _CountingModel, tiny_language_model, toy_reasoning_task

A = ALPHA


# --- the answer KL ------------------------------------------------------------------------------
def test_kl_golden_two_answers():
    # p = (2/3, 1/3), q = (1/3, 2/3): KL = 2/3 ln 2 − 1/3 ln 2 = ln(2) / 3, up to α
    p_a, p_b = (2 + A) / (3 + 2 * A), (1 + A) / (3 + 2 * A)
    q_a, q_b = (1 + A) / (3 + 2 * A), (2 + A) / (3 + 2 * A)
    want = p_a * math.log(p_a / q_a) + p_b * math.log(p_b / q_b)
    got = answer_kl(["a", "a", "b"], ["a", "b", "b"])
    assert got == pytest.approx(want, abs=1e-15)
    assert got == pytest.approx(math.log(2) / 3, abs=1e-8)


def test_kl_smoothing_of_an_answer_missing_on_one_side():
    # P = {a: 2}, Q = {a: 1, b: 1}; V = {a, b}: b gets α on the P side
    p_a, p_b = (2 + A) / (2 + 2 * A), A / (2 + 2 * A)
    q_a = q_b = (1 + A) / (2 + 2 * A)
    want = p_a * math.log(p_a / q_a) + p_b * math.log(p_b / q_b)
    assert answer_kl(["a", "a"], ["a", "b"]) == pytest.approx(want, abs=1e-15)
    assert want == pytest.approx(math.log(2), abs=1e-7)
    # the other direction sees the missing answer in Q: a large, finite value
    q_rev = 0.5 * math.log(0.5 / (A / (2 + 2 * A))) + 0.5 * math.log(0.5 / ((2 + A) / (2 + 2 * A)))
    assert answer_kl(["a", "b"], ["a", "a"]) == pytest.approx(q_rev, rel=1e-9)


def test_kl_disjoint_supports_is_large_and_finite():
    # P = {a: 1}, Q = {b: 1}: KL = (1 / (1 + 2α)) ln((1 + α) / α) ≈ ln(1e9)
    want = (1 / (1 + 2 * A)) * math.log((1 + A) / A)
    got = answer_kl(["a"], ["b"])
    assert got == pytest.approx(want, rel=1e-12)
    assert got == pytest.approx(9 * math.log(10), rel=1e-6)
    assert math.isfinite(got)


def test_kl_identical_is_zero_clipped_and_counts_not_order():
    assert answer_kl(["x", "y", "y"], ["y", "x", "y"]) == 0.0
    assert answer_kl(["x", "y"], ["x", "x", "y", "y"]) == 0.0  # the same distribution
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = list(rng.choice(list("abc"), size=int(rng.integers(1, 6))))
        q = list(rng.choice(list("abc"), size=int(rng.integers(1, 6))))
        assert answer_kl(p, q) >= 0.0  # clipped at 0


def test_kl_drops_empty_answers_and_is_nan_without_any():
    assert answer_kl(["a", "", None, "b"], ["a", "b"]) == 0.0
    assert math.isnan(answer_kl([], ["a"]))
    assert math.isnan(answer_kl(["a"], ["", None]))


def test_accuracy_over_non_empty_answers():
    assert accuracy(["5", "", "4", None, "5"], "5") == pytest.approx(2 / 3)
    assert math.isnan(accuracy(["", None], "5"))


# --- answers ------------------------------------------------------------------------------------
def test_extract_boxed_nested_last_and_none():
    assert extract_boxed("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{3} then \\boxed{4}") == "4"  # the last box wins
    assert extract_boxed("\\boxed{{a}{b}}") == "{a}{b}"
    assert extract_boxed("\\boxed{7} and \\boxed{8") == "7"  # an unclosed last box is skipped
    assert extract_boxed("no box here") is None
    assert extract_boxed("\\boxed{") is None
    assert extract_boxed("\\boxed{}") == ""


def test_normalize_and_last_word_and_first_sentence():
    assert normalize_answer(" $X = 5$ ") == "x=5"
    assert normalize_answer(None) == ""
    assert extract_last_word("the answer is 12.") == "12."
    assert extract_last_word("  ") is None
    assert first_sentence("First we add them. Then we check.") == "First we add them."
    assert first_sentence("   ") == ""


# --- the counterfactual split ------------------------------------------------------------------
def _stub_embed(table: dict[str, list[float]]):
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([table[t] for t in texts], dtype=float)

    return embed, calls


def test_counterfactual_split_on_a_stub_embedder():
    s0, s1 = "Add the two numbers.", "Check the sum again."
    near, far = "Add both numbers now.", "Try another idea here."
    table = {s0: [1, 0, 0], s1: [0, 1, 0], near: [0.9, 0.1, 0], far: [0, 0, 1]}
    embed, calls = _stub_embed(table)
    # positions 0, 1, 2 (2 sentences), 3 rollouts each; rollout texts = their one sentence
    texts = [[near, far, far], [far, s1, near], [far, far, far]]
    firsts = [[first_sentence(t) for t in row] for row in texts]
    answers = [["5", "4", ""], ["4", "5", "5"], ["5", "5", "4"]]
    out = _counterfactual(embed, [s0, s1], texts, firsts, answers, "5", 0.8)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == 4  # one call, distinct
    cos_near = 0.9 / math.hypot(0.9, 0.1)
    assert out["similarities"][0] == pytest.approx([cos_near, 0.0, 0.0], abs=1e-6)
    # position 0: near is similar (S = ["5"]), D = ["4", ""]
    assert out["counterfactual_kl"][0] == pytest.approx(answer_kl(["4"], answers[1] + ["5"]))
    assert out["counterfactual_accuracy"][0] == pytest.approx(0.0 - 2 / 3)
    assert out["different_fraction"][0] == pytest.approx(2 / 3)
    assert out["overdeterminedness"][0] == pytest.approx(1 - 2 / 3)
    # position 1: s1 itself reappears (cos 1): S = ["5"], D = ["4", "5"]
    assert out["counterfactual_kl"][1] == pytest.approx(answer_kl(["4", "5"], answers[2] + ["5"]))
    # the reappearance matrix: s1 appears in 1/3 rollouts of position 1, none of position 0
    assert out["matrix"][0] == [None, pytest.approx(1 / 3 - 0.0)]
    assert out["matrix"][1] == [None, None]


def test_counterfactual_kl_is_nan_when_every_rollout_is_similar():
    s0, s1 = "Add the two numbers.", "Check the sum again."
    embed, _ = _stub_embed({s0: [1, 0], s1: [0, 1]})
    texts = [[s0, s0], [s1, s1], [s1, s0]]
    firsts = [[first_sentence(t) for t in row] for row in texts]
    out = _counterfactual(embed, [s0, s1], texts, firsts, [["5", "5"]] * 3, "5", 0.8)
    assert out["counterfactual_kl"] == [None, None]  # D is empty at both positions
    assert out["different_fraction"] == [0.0, 0.0]


def test_counterfactual_refuses_bad_embeddings():
    s0, s1 = "Add the two numbers.", "Check the sum again."
    texts = [[s0], [s1], [s1]]
    firsts = [[t] for row in texts for t in row]
    bad, _ = _stub_embed({s0: [1, math.nan], s1: [0, 1]})
    with pytest.raises(ScorerError, match="not finite"):
        _counterfactual(bad, [s0, s1], texts, firsts, [["5"]] * 3, "5", 0.8)
    with pytest.raises(ScorerError, match="one row per text"):
        _counterfactual(lambda t: np.zeros((1, 2)), [s0, s1], texts, firsts, [["5"]] * 3, "5", 0.8)


# --- a stochastic fake generator (a true boundary: what a sampling endpoint returns) -------------
PLANTED = "The key insight is that x equals seven."
SENTENCES = [
    "We start by reading the problem carefully.",
    "The unknown appears on both sides.",
    PLANTED,
    "Now we substitute back to verify.",
    "Everything is consistent with the equation.",
    "So we can write down the result.",
]
FAKE_PROBLEM = "Solve 2x + 1 = 15 for x."


class FakeSampler:
    """Answers ``\\boxed{7}`` with probability 0.9 when the prompt holds the planted sentence,
    0.1 otherwise (else ``\\boxed{3}``); one rollout in ten has no box. Counts its words as
    generated tokens and one forward pass per token on ``cost``, like an endpoint's usage."""

    def __init__(self) -> None:
        self.cost = Cost()
        self.produced = 0
        self.calls: list[dict[str, Any]] = []

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 128,
        chat: bool = True,
        system: str | None = None,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        n: int = 1,
        prefill: str | None = None,
    ) -> str | list[str]:
        self.calls.append({"prompt": prompt, "chat": chat, "seed": seed, "n": n})
        rng = np.random.default_rng(seed)
        p = 0.9 if PLANTED in prompt else 0.1
        out = []
        for _ in range(n):
            lead = ["Let me think again.", "Another way to see it."][int(rng.integers(2))]
            u = rng.random()
            if rng.random() < 0.1:
                text = f"{lead} I am not sure yet"
            else:
                text = f"{lead} So \\boxed{{{7 if u < p else 3}}}"
            words = text.split()[:max_new_tokens]
            self.produced += len(words)
            self.cost.generated_tokens += len(words)
            self.cost.forward_passes += len(words)
            self.cost.batches += 1
            out.append(" ".join(words))
        return out[0] if n == 1 else out


def _fake_task() -> tuple[ReasoningTask, FakeSampler]:
    fake = FakeSampler()
    trace = ReasoningTrace(FAKE_PROBLEM, " ".join(SENTENCES), answer="7")
    assert trace.sentences == SENTENCES
    return ReasoningTask(fake, trace), fake


def _bag_of_words(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 64))
    for k, t in enumerate(texts):
        for w in t.lower().split():
            out[k, sum(map(ord, w)) % 64] += 1.0
    return out


def test_planted_sentence_ranks_first_on_a_stochastic_generator():
    task, fake = _fake_task()
    a = resampling(task, rollouts=60, max_new_tokens=32, embed=_bag_of_words)
    n = len(SENTENCES)
    assert a.ranking[0] == 2
    assert np.isfinite(a.scores).all()
    assert a.scores[2] > 1.0 and np.delete(a.scores, 2).max() < 0.2
    acc = a.extras["accuracy"]
    assert acc[2] < 0.25 and acc[3] > 0.75  # A_2 is drawn without the planted sentence
    assert a.extras["accuracy_importance"][2] == pytest.approx(acc[3] - acc[2])
    assert int(np.nanargmax(a.extras["counterfactual_kl"])) == 2
    assert a.extras["kl_importance"] == pytest.approx(a.scores.tolist())
    # plumbing: N + 1 raw-prompt calls of R rollouts, seeds seed + i, the sentence removed
    assert len(fake.calls) == n + 1
    assert [c["seed"] for c in fake.calls] == list(range(n + 1))
    assert all(c["n"] == 60 and c["chat"] is False for c in fake.calls)
    for i, c in enumerate(fake.calls):
        assert c["prompt"].endswith("<think>\n" + " ".join(SENTENCES[:i]))
        assert all(s not in c["prompt"] for s in SENTENCES[i:])
    assert len(a.extras["answers"]) == n + 1 and all(len(r) == 60 for r in a.extras["answers"])
    answered = a.extras["answered"]  # about 1 rollout in 10 has no box
    assert all(40 < k <= 60 for k in answered) and 0.8 < sum(answered) / (60 * (n + 1)) < 0.98
    assert a.extras["first_sentences"][0][0] in ("Let me think again.", "Another way to see it.")
    # cost: everything the generator produced, counted once
    assert a.cost.generated_tokens == fake.produced == fake.cost.generated_tokens
    assert a.cost.forward_passes == fake.produced
    assert a.params["embed"] == "_bag_of_words" and a.params["extract"] == "boxed"
    json.dumps(a.to_dict(), allow_nan=False)


def test_same_seed_same_result_other_seed_other_answers():
    first = resampling(_fake_task()[0], rollouts=8, embed=False)
    second = resampling(_fake_task()[0], rollouts=8, embed=False)
    other = resampling(_fake_task()[0], rollouts=8, embed=False, seed=100)
    assert first.extras["answers"] == second.extras["answers"]
    np.testing.assert_array_equal(first.scores, second.scores)
    assert other.extras["answers"] != first.extras["answers"]
    assert "counterfactual_kl" not in first.extras and first.params["embed"] == "none"


def test_a_long_plan_warns_with_the_estimate_and_progress_runs():
    task, _ = _fake_task()
    with pytest.warns(UserWarning, match="44,800 generated tokens"):
        resampling(task, rollouts=100, max_new_tokens=64, embed=False, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resampling(task, rollouts=2, max_new_tokens=64, embed=False)  # 896 tokens: silent


def test_no_answer_anywhere_is_a_scorer_error_and_custom_extract_works():
    task, _ = _fake_task()
    with pytest.raises(ScorerError, match="no answer found"):
        resampling(task, rollouts=3, embed=False, extract=lambda text: None)

    def last_digit(text: str) -> str | None:
        digits = [c for c in text if c.isdigit()]
        return digits[-1] if digits else None

    a = resampling(task, rollouts=20, embed=False, extract=last_digit)
    assert a.params["extract"] == "last_digit" and a.ranking[0] == 2


def test_bad_input():
    task, _ = _fake_task()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="rollouts"):
            resampling(task, rollouts=bad)
    with pytest.raises(InputError, match="unknown extract"):
        resampling(task, rollouts=2, extract="nope")
    with pytest.raises(InputError, match="similarity"):
        resampling(task, rollouts=2, similarity=2.0)
    with pytest.raises(InputError, match="embed"):
        resampling(task, rollouts=2, embed="sbert")
    with pytest.raises(InputError, match="only 1 unit"):
        resampling(toy_reasoning_task(text="I need to add 2 and 3."), rollouts=2)
    with pytest.raises(InputError, match="no local model"):  # the default embedder needs one
        from attribkit.methods.reasoning.resampling import mean_pooled_embedder

        mean_pooled_embedder(FakeSampler())


def test_the_default_embedder_is_minilm_else_the_local_lm_else_none(monkeypatch):
    from attribkit.methods.reasoning import resampling as module

    task, _ = _fake_task()
    a = resampling(task, rollouts=4)  # installed by make setup: the authors' embedder
    assert a.params["embed"] == "minilm" and "counterfactual_kl" in a.extras
    monkeypatch.setattr(module, "minilm_available", lambda: False)
    a = resampling(task, rollouts=4)  # a non-local LM and no MiniLM: no counterfactual
    assert a.params["embed"] == "none" and "matrix" not in a.extras
    local = toy_reasoning_task()
    with pytest.warns(UserWarning, match="no similarity threshold is calibrated"):
        b = resampling(local, rollouts=2, max_new_tokens=2, extract="last_word")
    assert b.params["embed"] == "mean_pooled_lm" and b.params["similarity"] == 0.8


def test_the_lm_embedder_uses_its_calibrated_threshold(monkeypatch):
    from attribkit.methods.reasoning import resampling as module

    local = toy_reasoning_task()
    monkeypatch.setitem(module.LM_SIMILARITY, local.lm.name, 0.95)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a calibrated LM does not warn
        b = resampling(local, rollouts=2, max_new_tokens=2, extract="last_word", embed="lm")
    assert b.params["similarity"] == 0.95
    c = resampling(local, rollouts=2, max_new_tokens=2, extract="last_word", similarity=0.5)
    assert c.params["similarity"] == 0.5  # an explicit threshold wins


def test_calibrate_similarity_recovers_a_rescaled_threshold():
    """An embedder whose cosines are a monotone squeeze of the reference's (cos' = 0.9 + 0.1 cos)
    reproduces the reference split exactly at 0.9 + 0.1 * 0.8 = 0.98."""
    from attribkit.models.embedding import calibrate_similarity

    rng = np.random.default_rng(0)
    docs = [[f"d{d}s{i}" for i in range(12)] for d in range(4)]
    base = {s: rng.normal(size=6) for doc in docs for s in doc}
    for doc in docs:  # plant near-duplicates so some pairs pass 0.8
        base[doc[3]] = base[doc[1]] + 0.1 * rng.normal(size=6)
        base[doc[7]] = base[doc[5]] + 0.1 * rng.normal(size=6)

    def reference(texts):
        v = np.array([base[t] for t in texts])
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def squeezed(texts):  # unit vectors u' with u'·v' = 0.9 + 0.1 u·v
        u = reference(texts)
        return np.hstack([np.sqrt(0.1) * u, np.full((len(u), 1), np.sqrt(0.9))])

    out = calibrate_similarity(squeezed, docs, reference=reference, window=11)
    assert out["f1"] == 1.0 and out["similar"] >= 8
    cos = [reference(d) @ reference(d).T for d in docs]
    similar = [c[a, b] for c in cos for a in range(12) for b in range(a + 1, 12) if c[a, b] >= 0.8]
    assert len(similar) == out["similar"]
    assert out["threshold"] == pytest.approx(0.9 + 0.1 * min(similar), abs=1e-9)
    with pytest.raises(InputError, match="at least 2 sentences"):
        calibrate_similarity(squeezed, [["one"]], reference=reference)


def test_minilm_embeddings_are_unit_length_and_put_paraphrases_above_the_threshold():
    from attribkit.models.embedding import minilm_embedder

    v = minilm_embedder()(
        [
            "So I need to add 2 and 3.",
            "First, I will add two and three.",
            "The capital of France is Paris.",
            "  ",
        ]
    )
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[:3], axis=1), 1, atol=1e-5) and not v[3].any()
    cos = v @ v.T
    assert cos[0, 1] > 0.7 and abs(cos[0, 2]) < 0.2  # paraphrase vs unrelated (0.79 / -0.01)


# --- the tiny random Llama: real generation, exact cost ------------------------------------------
class _GenerateSpy:
    """Calls through to ``model.generate`` and records each call's new-token rows."""

    def __init__(self, lm: Any) -> None:
        self.lm, self.inner, self.real = lm, lm.model.generate, 0

    def __call__(self, input_ids: torch.Tensor, **kw: Any) -> torch.Tensor:
        out = self.inner(input_ids=input_ids, **kw)
        stops = set(self.lm.stop_ids)
        for row in out[:, input_ids.shape[1] :].tolist():
            self.real += next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
        return out


def test_tiny_model_plumbing_and_exact_cost(monkeypatch):
    lm = tiny_language_model()
    task = toy_reasoning_task(lm=lm)
    spy = _GenerateSpy(lm)
    monkeypatch.setattr(lm.model, "generate", spy)
    counted = _CountingModel(lm.model)
    n = len(task.units)
    a = resampling(task, rollouts=3, max_new_tokens=5, temperature=2.0, extract="last_word")
    assert a.method == "resampling" and a.scores.shape == (n,)
    assert np.isfinite(a.scores).all() and (a.scores >= 0).all()
    assert len(a.extras["answers"]) == n + 1 and all(len(r) == 3 for r in a.extras["answers"])
    assert a.cost.generated_tokens == spy.real > 0
    assert a.cost.generated_tokens <= (n + 1) * 3 * 5
    # every sequence the model ran (decoding steps x rows, then the embedding passes) is counted
    assert a.cost.forward_passes == counted.rows
    assert a.cost.seconds > 0 and len(a.extras["matrix"]) == n
    again = resampling(
        toy_reasoning_task(), rollouts=3, max_new_tokens=5, temperature=2.0, extract="last_word"
    )
    assert again.extras["answers"] == a.extras["answers"]
    json.dumps(a.to_dict(), allow_nan=False)


def test_tiny_model_that_returns_nan_is_a_scorer_error():
    task = toy_reasoning_task()
    with torch.no_grad():
        task.lm.model.get_input_embeddings().weight.fill_(float("nan"))
    with pytest.raises(ScorerError):
        resampling(task, rollouts=2, max_new_tokens=4, extract="last_word")


# --- SmolLM2 --------------------------------------------------------------------------------------
SMOL_TRACE = (
    "I need to find the sum of 12 and 30. First, I add the tens: 10 plus 30 is 40. "
    "Then I add the ones: 2 plus 0 is 2. So the total is 40 plus 2, which is 42. "
    "Let me check by subtracting: 42 minus 30 is 12. The answer is 42."
)


@pytest.mark.model
def test_smollm2_plumbing_and_cost(smollm2):
    trace = ReasoningTrace("What is 12 + 30?", SMOL_TRACE, answer="42")
    assert len(trace) == 6
    task = ReasoningTask(smollm2, trace)
    counted = _CountingModel(smollm2.model)
    start = time.perf_counter()
    a = resampling(task, rollouts=3, max_new_tokens=16, extract="last_word")
    seconds = time.perf_counter() - start
    print(f"SmolLM2 resampling 6 x 3 x 16: {seconds:.1f}s, {a.cost}")
    assert a.scores.shape == (6,) and not np.isnan(a.scores).all()
    assert len(a.extras["answers"]) == 7 and all(len(r) == 3 for r in a.extras["answers"])
    assert 0 < a.cost.generated_tokens <= 7 * 3 * 16
    assert a.cost.forward_passes == counted.rows
    assert len(a.extras["counterfactual_kl"]) == 6 and len(a.extras["matrix"]) == 6
    json.dumps(a.to_dict(), allow_nan=False)


def test_an_openai_compatible_endpoint_as_the_generator(tiny_lm):
    from attribkit.models.http_lm import OpenAICompatibleLM
    from test_adapters import serve

    with serve(tiny_lm, delay=0.0) as server:
        lm = OpenAICompatibleLM(server.url, "tiny")
        task = toy_reasoning_task(lm=lm)
        n = len(task.units)
        before = len(server.requests)
        a = resampling(
            task, rollouts=3, max_new_tokens=4, temperature=2.0, extract="last_word", embed=False
        )
        bodies = server.requests[before:]
    assert len(bodies) == n + 1  # one completions request per position, n rollouts each
    assert [(b["n"], b["seed"]) for b in bodies] == [(3, i) for i in range(n + 1)]
    for i, b in enumerate(bodies):  # the raw prompt: no chat format, sentences < i
        want = task.template.format(problem=task.problem, reasoning=task.prefix_texts()[i].strip())
        assert b["prompt"] == want
    assert a.cost.generated_tokens > 0 and a.params["embed"] == "none"
    assert a.cost.generated_tokens <= (n + 1) * 3 * 4


# --- an endpoint that is down or slow: a clear error, never the key -----------------------------
def test_unreachable_or_slow_endpoint_is_a_clear_error_without_the_key(tiny_lm):
    import socket

    from attribkit.models.http_lm import OpenAICompatibleLM
    from attribkit.testing import TOY_TRACE
    from test_adapters import serve

    trace = ReasoningTrace("What is 2 + 3?", TOY_TRACE, answer="5")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = OpenAICompatibleLM(f"http://127.0.0.1:{port}", "tiny", api_key="sk-SECRET-123")
    for method, params in (("resampling", {"rollouts": 2}), ("forced_answer", {})):
        with pytest.raises(ScorerError, match="connection refused") as err:
            ak.attribute_reasoning(down, trace, method, **params)
        assert "sk-SECRET-123" not in str(err.value) + repr(down)
    with serve(tiny_lm, delay=0.5) as server:
        slow = OpenAICompatibleLM(server.url, "tiny", api_key="sk-SECRET-123", timeout=0.1)
        with pytest.raises(ScorerError, match=r"did not answer within 0.1s") as err:
            ak.attribute_reasoning(slow, trace, "resampling", rollouts=2, max_new_tokens=2)
        assert "sk-SECRET-123" not in str(err.value)
