"""Receiver heads (Thought Anchors) on the reasoning task: golden vertical scores and kurtosis,
hooked sentence-block attention equal to the full output_attentions reference, one pass,
calibration on other traces without layer 0, bad input, and peak memory on SmolLM2."""

from __future__ import annotations

import json
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import MethodSpec
from attribkit.methods.reasoning.receiver_heads import (
    SELF_CALIBRATION,
    head_kurtosis,
    receiver_heads,
    select_receiver_heads,
    sentence_attention,
    vertical_scores,
)
from attribkit.methods.reasoning.suppression import _sequence
from attribkit.tasks.reasoning import ReasoningTask, ReasoningTrace
from attribkit.testing import (
    TOY_PROBLEM,
    check_method,
    tiny_language_model,
    toy_reasoning_task,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "thought_anchors"
FOLDERS = sorted(DATA.glob("*/*/problem_*")) if DATA.is_dir() else []

OTHER_TRACES = [
    "Two plus three is five. I check it by counting. One, two, three, four, five. Done, it is 5.",
    "Start with 3. Add 2 more to it. That gives 5 in total. The answer is therefore 5.",
    "I add the numbers now. The first is 2, the second 3. Their sum is 5. So I answer 5.",
]


def _reference_blocks(task: ReasoningTask) -> np.ndarray:
    """Sentence-block means of the full eager output_attentions matrices (the slow way)."""
    ids, sentences, _answer = _sequence(task)
    model = task.lm.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            att = model(torch.tensor([ids]), output_attentions=True, use_cache=False).attentions
    finally:
        model.set_attn_implementation(previous)
    n = len(sentences)
    out = np.zeros((len(att), att[0].shape[1], n, n))
    for layer, a in enumerate(att):
        w = a[0].double().numpy()
        for q in range(n):
            for k in range(n):
                out[layer, :, q, k] = w[:, sentences[q]][:, :, sentences[k]].mean((1, 2))
    return out


# --- golden values on hand-made block matrices ---------------------------------------------------
def test_vertical_scores_golden():
    a = np.arange(1.0, 37.0).reshape(6, 6)  # A[q, k] = 6 q + k + 1
    # proximity 2: column k averages rows q >= k + 2
    want = [
        np.mean([13, 19, 25, 31]),  # k=0: q=2..5
        np.mean([20, 26, 32]),  # k=1: q=3..5
        np.mean([27, 33]),  # k=2: q=4..5
        34.0,  # k=3: q=5
        np.nan,
        np.nan,
    ]
    np.testing.assert_allclose(vertical_scores(a, 2), want, equal_nan=True)
    # proximity 0 includes the diagonal; the default 4 leaves only k = 0, 1
    np.testing.assert_allclose(vertical_scores(a, 0), [16.0, 20.0, 24.0, 28.0, 32.0, 36.0])
    np.testing.assert_allclose(
        vertical_scores(a), [np.mean([25, 31]), 32.0, *[np.nan] * 4], equal_nan=True
    )
    # NaN entries are omitted, as the authors' nanmean; leading axes are kept
    b = a.copy()
    b[4, 0] = np.nan
    np.testing.assert_allclose(vertical_scores(np.stack([a, b]), 2)[1, 0], np.mean([13, 19, 31]))
    assert vertical_scores(np.zeros((2, 3, 5, 5))).shape == (2, 3, 5)


def test_vertical_scores_match_the_authors_formula():
    rng = np.random.default_rng(0)
    a = np.tril(rng.random((9, 9)))
    p = 4
    m = a.copy()  # the authors' get_vertical_scores, control_depth=False
    m[np.triu_indices_from(m, k=1)] = np.nan
    m[np.triu_indices_from(m, k=-p + 1)] = np.nan
    with warnings.catch_warnings():  # nanmean of all-NaN columns
        warnings.simplefilter("ignore", RuntimeWarning)
        want = [np.nanmean(m[i + p :, i]) if len(m[i + p :, i]) else np.nan for i in range(9)]
    np.testing.assert_allclose(vertical_scores(a, p), want, equal_nan=True)


def test_head_kurtosis_golden():
    # v = (1, 0, 0, 0): mean 1/4, m2 = 3/16, m4 = 21/256, m4 / m2^2 = 7/3, Fisher: -2/3
    np.testing.assert_allclose(head_kurtosis(np.array([1.0, 0, 0, 0])), -2 / 3)
    np.testing.assert_allclose(head_kurtosis(np.array([1.0, 0, np.nan, 0, 0])), -2 / 3)
    # one spike among many equal values: (n - 2) + 1 / (n - 1) - 3 for n = 10
    spike = np.zeros(10)
    spike[3] = 5.0
    np.testing.assert_allclose(head_kurtosis(spike), 8 + 1 / 9 - 3)
    rng = np.random.default_rng(1)
    v = rng.gamma(0.5, size=(3, 4, 12))
    v[..., -3:] = np.nan  # the last sentences have no vertical score
    want = stats.kurtosis(v, axis=-1, fisher=True, bias=True, nan_policy="omit")
    np.testing.assert_allclose(head_kurtosis(v), want, rtol=1e-12)
    # undefined: constant values, a single value, nothing finite
    assert np.isnan(head_kurtosis(np.array([[0.3, 0.3, 0.3], [1.0, np.nan, np.nan]]))).all()
    assert np.isnan(head_kurtosis(np.full(4, np.nan)))


# --- the hooked pass ----------------------------------------------------------------------------
def test_sentence_attention_equals_the_full_attention_reference():
    task = toy_reasoning_task()
    blocks = sentence_attention(task)
    ref = _reference_blocks(task)
    assert blocks.shape == ref.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(blocks, ref, atol=1e-6, rtol=0)
    assert np.all(blocks[..., np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]] == 0.0)
    np.testing.assert_allclose(sentence_attention(task, layers=[1])[0], ref[1], atol=1e-6)
    assert task.lm.model.config._attn_implementation == "sdpa"  # restored


def test_one_pass_counted_and_the_forward_stops_after_the_last_needed_layer():
    task = toy_reasoning_task()
    model = task.lm.model
    calls: list[int] = []
    layer_calls: list[int] = []
    model.register_forward_pre_hook(
        lambda _m, _a, kw: calls.append(int(kw["input_ids"].shape[0])), with_kwargs=True
    )
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.register_forward_pre_hook(lambda *_a, i=i: layer_calls.append(i))
    a = receiver_heads(task, proximity=1, top_k=2)
    assert calls == [1] and a.cost.forward_passes == 1 and a.cost.batches == 1
    assert layer_calls == [0, 1]
    calls.clear()
    layer_calls.clear()
    b = receiver_heads(task, heads=[(0, 1), (0, 3)], proximity=1)
    assert calls == [1] and b.cost.forward_passes == 1
    assert layer_calls == [0]  # layer 1 never ran


def test_scores_are_the_mean_vertical_score_of_the_heads():
    task = toy_reasoning_task()
    vert = vertical_scores(sentence_attention(task), 1)
    heads = [(1, 2), (0, 0), (1, 0)]
    a = receiver_heads(task, heads=heads, proximity=1)
    want = np.mean([vert[layer, h] for layer, h in heads], axis=0)
    np.testing.assert_allclose(a.scores, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(a.scores[-1]) and np.isfinite(a.scores[:-1]).all()
    assert a.extras["heads"] == [list(h) for h in heads]
    assert a.extras["calibration"] == "given heads"
    np.testing.assert_allclose(
        np.array(a.extras["vertical"], dtype=float), [vert[lh] for lh in heads], equal_nan=True
    )
    np.testing.assert_allclose(
        a.extras["kurtosis"], head_kurtosis(np.array([vert[lh] for lh in heads]))
    )
    again = Attribution.from_dict(json.loads(json.dumps(a.to_dict(), allow_nan=False)))
    assert again.extras == a.extras and a.method == "receiver_heads"
    # the recorded heads (JSON lists) or a numpy array run the same heads again
    for given in (again.extras["heads"], np.array(heads)):
        b = receiver_heads(task, heads=given, proximity=1)
        np.testing.assert_array_equal(b.scores, a.scores)


def test_self_calibration_excludes_layer_0_and_says_it_is_optimistic():
    task = toy_reasoning_task()
    a = receiver_heads(task, proximity=1, top_k=3)
    assert a.extras["calibration"] == SELF_CALIBRATION
    assert len(a.extras["heads"]) == 3 and all(layer != 0 for layer, _ in a.extras["heads"])
    kurt = head_kurtosis(vertical_scores(sentence_attention(task), 1))
    order = np.argsort(-kurt[1], kind="stable")[:3]
    assert a.extras["heads"] == [[1, int(h)] for h in order]
    b = receiver_heads(task, proximity=1, top_k=3)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_calibration_on_other_traces_excludes_layer_0_and_the_scored_trace():
    lm = tiny_language_model()
    scored = toy_reasoning_task(lm=lm)
    others = [toy_reasoning_task(text=t, lm=lm) for t in OTHER_TRACES]
    same = toy_reasoning_task(lm=lm)  # another task on the scored trace
    before = lm.cost.forward_passes
    heads, table = select_receiver_heads(
        [same, *others, scored], top_k=3, proximity=1, exclude=scored
    )
    assert lm.cost.forward_passes - before == len(others)  # the scored trace never ran
    assert table.shape == (2, 4) and len(heads) == 3
    assert all(layer != 0 for layer, _ in heads)
    kurt = [head_kurtosis(vertical_scores(sentence_attention(t), 1)) for t in others]
    np.testing.assert_allclose(table, np.mean(kurt, axis=0), rtol=1e-12)
    assert heads == [(1, int(h)) for h in np.argsort(-table[1], kind="stable")[:3]]
    a = receiver_heads(scored, heads=heads, proximity=1)
    assert a.extras["heads"] == [list(h) for h in heads] and a.cost.forward_passes == 1
    with pytest.raises(InputError, match="other than the one scored"):
        select_receiver_heads([same, scored], exclude=scored.trace, proximity=1)


def test_conformance_with_the_toy_params():
    spec = MethodSpec(
        "receiver_heads",
        "attribkit.methods.reasoning.receiver_heads:receiver_heads",
        "reasoning",
        cost="1 forward pass (eager attention, reduced to sentence blocks per layer)",
        cite="Bogdan, Macar, Nanda & Conmy, 'Thought Anchors', 2025",
    )
    check_method(spec, proximity=1, top_k=2)


# --- bad input ----------------------------------------------------------------------------------
def test_one_sentence_trace_is_rejected():
    task = ReasoningTask(tiny_language_model(), ReasoningTrace(TOY_PROBLEM, "2 + 3 = 5.", "5"))
    with pytest.raises(InputError):
        receiver_heads(task)


def test_nan_model_is_a_scorer_error():
    task = toy_reasoning_task()
    with torch.no_grad():
        task.lm.model.get_input_embeddings().weight.fill_(float("nan"))
    with pytest.raises(ScorerError):
        receiver_heads(task, proximity=1)
    assert task.lm.model.config._attn_implementation == "sdpa"


def test_trace_longer_than_the_window_is_rejected():
    task = toy_reasoning_task()
    task.lm.model.config.max_position_embeddings = 16
    with pytest.raises(InputError, match="window"):
        receiver_heads(task, proximity=1)


@pytest.mark.parametrize(
    "heads",
    [[(2, 0)], [(0, 4)], [(-1, 0)], [], [(1,)], [("a", 0)], "all", [(1.0, 2)]],
)
def test_bad_heads_name_the_model_shape(heads):
    task = toy_reasoning_task()
    with pytest.raises(InputError) as e:
        receiver_heads(task, heads=heads, proximity=1)
    if heads and heads != "all" and len(heads[0]) == 2 and isinstance(heads[0][0], int):
        assert "2 layers" in str(e.value) and "4 query heads" in str(e.value)


def test_too_short_for_any_vertical_score_is_a_clear_error():
    task = toy_reasoning_task()  # 4 sentences: proximity 4 leaves no query sentence
    with pytest.raises(InputError, match="proximity"):
        receiver_heads(task)
    with pytest.raises(InputError, match="proximity"):
        receiver_heads(task, heads=[(1, 0)])
    with pytest.raises(InputError, match="finite kurtosis"):
        select_receiver_heads([toy_reasoning_task(text=t) for t in OTHER_TRACES])


@pytest.mark.parametrize("params", [{"top_k": 0}, {"proximity": -1}, {"proximity": 1.5}])
def test_bad_parameters(params):
    with pytest.raises(InputError):
        receiver_heads(toy_reasoning_task(), **{"proximity": 1, **params})


def test_bad_layers():
    task = toy_reasoning_task()
    with pytest.raises(InputError, match="2 layers"):
        sentence_attention(task, layers=[2])
    with pytest.raises(InputError):
        sentence_attention(task, layers=[])


# --- peak memory on the real model --------------------------------------------------------------
def _long_task(lm, tokens: int) -> ReasoningTask:
    """A synthetic trace whose prompt and answer take at most ``tokens`` tokens."""
    sents = [
        f"Step {i}: we add {i} and {2 * i + 1} to get {3 * i + 1}, which we keep for the sum."
        for i in range(200)
    ]

    def size(n: int) -> int:
        trace = ReasoningTrace("Sum the numbers.", " ".join(sents[:n]), "42", chunks=sents[:n])
        prompt = ReasoningTask.prompt(_Shell(trace))  # type: ignore[arg-type]
        return int(lm.count_tokens(prompt, "42", chat=False))

    lo, hi = 2, len(sents)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(mid) <= tokens else (lo, mid - 1)
    trace = ReasoningTrace("Sum the numbers.", " ".join(sents[:lo]), "42", chunks=sents[:lo])
    return ReasoningTask(lm, trace)


class _Shell:
    """Just enough of a ReasoningTask to build its prompt without the window check."""

    def __init__(self, trace: ReasoningTrace) -> None:
        from attribkit.tasks.reasoning import ANSWER_CUE, PROMPT_TEMPLATE

        self.units, self.problem = trace.units, trace.problem
        self.template, self.cue = PROMPT_TEMPLATE, ANSWER_CUE


@pytest.mark.model
def test_peak_memory_at_2048_tokens_on_smollm2(smollm2):
    task = _long_task(smollm2, 2048)
    n_tokens = smollm2.count_tokens(task.prompt(), task.answer, chat=False)
    assert 1900 < n_tokens <= 2048
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    a = receiver_heads(task)
    seconds = time.perf_counter() - start
    growth_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / 1e9
    print(
        f"receiver_heads: {n_tokens} tokens, {len(task.units)} sentences, {seconds:.1f} s, "
        f"peak RSS growth {growth_gb:.2f} GB"
    )
    # output_attentions would hold 30 x 9 x T^2 floats = 4.5 GB; the hooks keep one layer's
    assert growth_gb < 2.0
    assert a.cost.forward_passes == 1 and len(a.extras["heads"]) == 20
    assert all(layer != 0 for layer, _ in a.extras["heads"])
    n = len(task.units)
    assert np.isfinite(a.scores[: n - 4]).all() and np.isnan(a.scores[n - 4 :]).all()
    assert smollm2.model.config._attn_implementation == "sdpa"


@pytest.mark.model
@pytest.mark.skipif(
    len(FOLDERS) < 3,
    reason=f"no Thought Anchors problem folders under {DATA} (../shared is absent)",
)
def test_shipped_traces_scored_with_heads_from_the_other_traces_on_smollm2(smollm2):
    tasks = [ReasoningTask(smollm2, ReasoningTrace.from_folder(f).head(12)) for f in FOLDERS[:3]]
    before = smollm2.cost.forward_passes
    heads, table = select_receiver_heads(tasks, exclude=tasks[0])  # the paper's protocol
    assert smollm2.cost.forward_passes - before == 2
    assert len(heads) == 20 and all(layer != 0 for layer, _ in heads) and table.shape == (30, 9)
    a = receiver_heads(tasks[0], heads=heads)
    assert a.cost.forward_passes == 1 and a.extras["calibration"] == "given heads"
    assert np.isfinite(a.scores[:8]).all() and np.isnan(a.scores[8:]).all()
    assert (a.scores[:8] > 0).all()
