"""Reasoning traces as sentence units (Thought Anchors' rules, given chunks, problem folders), the
reasoning task through the one ``attribute`` and the forced-answer sweep with key-value reuse."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import attribkit as ak
from attribkit.tasks.reasoning import (
    ANSWER_CUE,
    ReasoningTask,
    ReasoningTrace,
    locate_chunks,
    thought_anchor_spans,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "thought_anchors"
FOLDERS = sorted(DATA.glob("*/*/problem_*")) if DATA.is_dir() else []
needs_data = pytest.mark.skipif(
    not FOLDERS, reason=f"no Thought Anchors problem folders under {DATA} (../shared is absent)"
)

PROBLEM = "What is 2 + 3?"
TRACE = "I need to add 2 and 3. First, 2 + 3 = 5. Let me check: 5 - 3 = 2.\n\nSo the answer is 5."


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _texts(text: str) -> list[str]:
    return [text[s:e] for s, e in thought_anchor_spans(text)]


class Recording:
    """Proxies a LanguageModel and keeps every raw prompt it scores and the sequences it runs."""

    def __init__(self, lm: Any) -> None:
        self._lm, self.prompts, self.rows = lm, [], 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lm, name)

    def set_reference(self, prompt: str, *args: Any, **kw: Any) -> Any:
        self.prompts.append(prompt)
        self.rows += 1
        return self._lm.set_reference(prompt, *args, **kw)

    def token_logprobs(self, prompts: Any, *args: Any, **kw: Any) -> Any:
        self.prompts.extend(prompts)
        self.rows += len(prompts)
        return self._lm.token_logprobs(prompts, *args, **kw)


# --- sentence units --------------------------------------------------------------------------------
def test_splitter_follows_thought_anchors_rules_and_keeps_the_trailing_text() -> None:
    text = "We want x. Is it 3.5? No! Try x = 7 instead.\n\nA new paragraph without a stop"
    assert _texts(text) == [
        "We want x.",  # 10 characters: not merged
        "Is it 3.5?",  # "3.5" is no boundary
        "No! Try x = 7 instead.",  # "No!" is short: merged into the next chunk
        "A new paragraph without a stop",  # the trailing, unterminated text is kept
    ]
    # a blank line ends a chunk even without a stop; a stop needs a space or newline after it
    assert _texts("First part, no stop\n\nSecond part.Still second") == [
        "First part, no stop",
        "Second part.Still second",
    ]


def test_splitter_merges_short_chunks_as_the_authors_do() -> None:
    # a short last chunk goes into the one before it
    assert _texts("The total is 12 apples. Done.") == ["The total is 12 apples. Done."]
    # lengths count merged chunks joined by one space (4 + 1 + 3 = 8 < 10: merged again),
    # although the span itself ("Hmm.\n\n\n\nOk.", 11 characters) is longer
    text = "Hmm.\n\n\n\nOk.\n\nThen we compute the sum. It is twelve."
    assert _texts(text) == ["Hmm.\n\n\n\nOk.\n\nThen we compute the sum.", "It is twelve."]
    assert _texts("Short.") == ["Short."]  # a lone short chunk stays


def test_units_have_exact_offsets() -> None:
    text = "  Leading space. Then a sentence? Yes it is.\n\nWait. Let me redo this sum.  "
    trace = ReasoningTrace(PROBLEM, text, answer="5")
    assert trace.sentences == [
        "Leading space.",
        "Then a sentence?",
        "Yes it is.",
        "Wait. Let me redo this sum.",
    ]
    for (s, e), sentence in zip(trace.spans, trace.sentences, strict=True):
        assert text[s:e] == sentence == sentence.strip()
    assert len(trace) == 4 and trace.units.text == text


def test_given_chunks_align_one_to_one() -> None:
    text = "Correct.\n\nSo, 6 * 20 = 120. Yep, that's right. Yep, that's right."
    # the authors join merged chunks with one space; the spans are located in the text anyway
    chunks = ["Correct. So, 6 * 20 = 120.", "Yep, that's right.", "Yep, that's right."]
    trace = ReasoningTrace(PROBLEM, text, chunks=chunks, labels={"kl": [0.1, 0.2, 0.3]})
    assert trace.sentences == ["Correct.\n\nSo, 6 * 20 = 120.", *chunks[1:]]
    assert trace.spans[1] != trace.spans[2]  # a repeat is located after the previous chunk
    assert trace.labels == {"kl": [0.1, 0.2, 0.3]}
    with pytest.raises(ak.InputError, match=r"chunk 1 .* does not occur in the text after chunk 0"):
        locate_chunks(text, ["Yep, that's right.", "Correct."])  # out of order
    with pytest.raises(ak.InputError, match="chunk 0"):
        ReasoningTrace(PROBLEM, text, chunks=["Not in the text."])
    with pytest.raises(ak.InputError, match="3 sentences"):
        ReasoningTrace(PROBLEM, text, chunks=chunks, labels={"kl": [0.1]})


def test_head_keeps_the_first_sentences_and_their_labels() -> None:
    trace = ReasoningTrace(PROBLEM, TRACE, answer="5", labels={"tag": ["a", "b", "c", "d"]})
    head = trace.head(2)
    assert head.sentences == trace.sentences[:2] and head.labels == {"tag": ["a", "b"]}
    assert head.text == TRACE[: trace.spans[1][1]] and head.answer == "5"


@needs_data
def test_from_folder_reads_a_shipped_problem() -> None:
    folder = FOLDERS[0]
    trace = ReasoningTrace.from_folder(folder)
    items = json.loads((folder / "chunks_labeled.json").read_text())
    problem = json.loads((folder / "problem.json").read_text())
    assert len(trace) == len(items) > 1
    assert trace.problem == problem["problem"] and trace.answer == problem["gt_answer"]
    assert "<think>" not in trace.text and "</think>" not in trace.text
    assert [_norm(s) for s in trace.sentences] == [_norm(it["chunk"]) for it in items]
    for key in (
        "counterfactual_importance_kl",
        "resampling_importance_kl",
        "forced_importance_kl",
        "function_tags",
    ):
        assert trace.labels[key] == [it[key] for it in items]
    assert trace.meta["source"] == str(folder)


@needs_data
def test_the_rules_reproduce_every_shipped_chunk_list() -> None:
    # the shipped labels were made by the authors' splitter with the trailing chunk kept
    for folder in FOLDERS:
        trace = ReasoningTrace.from_folder(folder)
        items = json.loads((folder / "chunks_labeled.json").read_text())
        assert [_norm(s) for s in _texts(trace.text)] == [_norm(it["chunk"]) for it in items]


def test_from_folder_refuses_what_is_not_a_problem_folder(tmp_path: Path) -> None:
    with pytest.raises(ak.InputError, match="not a folder"):
        ReasoningTrace.from_folder(tmp_path / "missing")
    with pytest.raises(ak.InputError, match="not a Thought Anchors problem folder"):
        ReasoningTrace.from_folder(tmp_path)


def test_bad_traces() -> None:
    with pytest.raises(ak.InputError, match="problem is empty"):
        ReasoningTrace("  ", TRACE)
    with pytest.raises(ak.InputError, match="reasoning text is empty"):
        ReasoningTrace(PROBLEM, "\n\n")
    with pytest.raises(ak.InputError, match="answer is empty"):
        ReasoningTrace(PROBLEM, TRACE, answer="")


# --- the task and the forced-answer sweep ----------------------------------------------------------
def test_task_prompt_is_the_papers(tiny_lm: Any) -> None:
    task = ReasoningTask(tiny_lm, ReasoningTrace(PROBLEM, TRACE, answer="5"))
    assert task.prompt() == (
        "Solve this math problem step by step. You MUST put your final answer in \\boxed{}. "
        f"Problem: {PROBLEM} Solution: \n<think>\n{TRACE}" + ANSWER_CUE
    )
    assert ANSWER_CUE == "\n</think>\n\nTherefore, the final answers is \\boxed{"
    assert task.prompt("").endswith("<think>\n" + ANSWER_CUE)
    assert task.kind == "reasoning" and task.target_info["answer"] == "5"


def test_no_answer_and_a_trace_past_the_window(tiny_lm: Any) -> None:
    with pytest.raises(ak.InputError, match="no answer to explain"):
        ReasoningTask(tiny_lm, ReasoningTrace(PROBLEM, TRACE))
    assert ReasoningTask(tiny_lm, ReasoningTrace(PROBLEM, TRACE), answer="5").answer == "5"
    long = ReasoningTrace(PROBLEM, " ".join(f"Step {i} adds one more apple." for i in range(80)))
    with pytest.raises(ak.InputError, match=r"window is 512.*trace\.head"):
        ReasoningTask(tiny_lm, long, answer="5")
    ReasoningTask(tiny_lm, long.head(5), answer="5")  # fits


def test_forced_answer_sweep_equals_uncached_scoring(tiny_lm: Any) -> None:
    trace = ReasoningTrace(PROBLEM, TRACE, answer="5")
    task = ReasoningTask(tiny_lm, trace)
    tokens = tiny_lm.tokens_processed
    a = ak.attribute(task, "forced_answer")
    cached_tokens = tiny_lm.tokens_processed - tokens
    values = np.array(a.extras["values"])
    n = len(trace)
    assert a.task == "reasoning" and a.scores.shape == (n,) and values.shape == (n + 1,)
    np.testing.assert_array_equal(a.scores, np.diff(values))
    # every prefix scored alone, the full way (no reference cache): the same curve
    prompts = [task.prompt(trace.text[: trace.spans[i][1]]) for i in range(n)]
    tiny_lm.clear_reference()
    tokens = tiny_lm.tokens_processed
    direct = tiny_lm.logprob([task.prompt(""), *prompts], "5", chat=False)
    full_tokens = tiny_lm.tokens_processed - tokens
    np.testing.assert_allclose(values, direct, atol=1e-4, rtol=0)
    uncached = ak.attribute(ReasoningTask(tiny_lm, trace, reuse_prefix=False), "forced_answer")
    np.testing.assert_allclose(uncached.scores, a.scores, atol=1e-4, rtol=0)
    assert uncached.cost.forward_passes == a.cost.forward_passes == n + 1
    # the sweep ran one full sequence and only short suffixes after it
    assert cached_tokens < 0.5 * full_tokens


def test_forced_answer_cost_counts_the_passes_the_model_ran(tiny_lm: Any) -> None:
    rows = []
    hook = tiny_lm.model.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(int(kw["input_ids"].shape[0])), with_kwargs=True
    )
    try:
        task = ReasoningTask(tiny_lm, ReasoningTrace(PROBLEM, TRACE, answer="5"))
        a = ak.attribute(task, "forced_answer")
        n = len(task.units)
        assert a.cost.forward_passes == sum(rows) == n + 1
        assert a.cost.batches == len(rows) == n + 1  # 1 reference + one call per suffix
        again = ak.attribute(task, "forced_answer")  # every prompt is cached by the task
        assert again.cost.forward_passes == 0 and sum(rows) == n + 1
        np.testing.assert_array_equal(again.scores, a.scores)
    finally:
        hook.remove()


def test_perturbation_methods_delete_sentences_by_offsets(tiny_lm: Any) -> None:
    text = (
        "Let me check the sum again. The sum is 5 here. "
        "Let me check the sum again. So the answer is 5."
    )
    lm = Recording(tiny_lm)
    task = ReasoningTask(lm, ReasoningTrace(PROBLEM, text, answer="5"))
    a = ak.attribute(task, "loo")
    assert a.task == "reasoning" and a.scores.shape == (4,) and np.isfinite(a.scores).all()
    assert a.cost.forward_passes == lm.rows == 5
    # removing the repeat at position 2 keeps the one at position 0 (str.replace removes both)
    assert task.prompt("Let me check the sum again. The sum is 5 here. So the answer is 5.") in (
        lm.prompts
    )
    assert task.prompt("The sum is 5 here. Let me check the sum again. So the answer is 5.") in (
        lm.prompts
    )
    assert a.scores[0] != a.scores[2]
    shap = ak.attribute(task, "shapley")  # exact: 2^4 coalitions
    assert shap.task == "reasoning" and np.isfinite(shap.scores).all()
    # 5 prompts were scored by loo; {0} and {2}, {0, 3} and {2, 3} give the same text
    assert shap.cost.forward_passes == 16 - 5 - 2
    np.testing.assert_allclose(shap.scores.sum(), task.values([text])[0] - task.values([""])[0])


def test_one_sentence_trace_is_refused_by_methods(tiny_lm: Any) -> None:
    task = ReasoningTask(tiny_lm, ReasoningTrace(PROBLEM, "I need to add 2 and 3.", answer="5"))
    for method in ("forced_answer", "loo"):
        with pytest.raises(ak.InputError, match="only 1 unit"):
            ak.attribute(task, method)


def test_attribute_reasoning_runs_forced_answer_by_default(tiny_lm: Any) -> None:
    a = ak.attribute_reasoning(tiny_lm, ReasoningTrace(PROBLEM, TRACE), answer="5")
    assert a.method == "forced_answer" and a.target["answer"] == "5"
    assert a.input["problem"] == PROBLEM and a.input["text"] == TRACE
    b = ak.Attribution.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.task == "reasoning" and b.extras["values"] == a.extras["values"]
    assert "forced_answer" in [s.name for s in ak.list_methods("reasoning")]


# --- the real model ------------------------------------------------------------------------------
@pytest.mark.model
@needs_data
def test_forced_answer_on_a_shipped_trace_with_smollm2(smollm2: Any) -> None:
    trace = ReasoningTrace.from_folder(FOLDERS[0]).head(12)
    task = ReasoningTask(smollm2, trace)
    a = ak.attribute(task, "forced_answer")
    assert a.scores.shape == (12,) and np.isfinite(a.scores).all()
    assert a.cost.forward_passes == 13
    assert len(trace.labels["counterfactual_importance_kl"]) == 12  # aligned with the labels
    uncached = ak.attribute(ReasoningTask(smollm2, trace, reuse_prefix=False), "forced_answer")
    np.testing.assert_allclose(uncached.extras["values"], a.extras["values"], atol=1e-4, rtol=0)
