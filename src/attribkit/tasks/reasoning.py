"""Reasoning attribution: which sentences of a chain of thought steer its final answer.

After Bogdan, Macar, Nanda & Conmy, 'Thought Anchors: Which LLM Reasoning Steps Matter?', 2025.

A :class:`ReasoningTrace` is a problem and its chain of thought split into sentences (Thought
Anchors' rules, by character offsets) or into a given chunk list (so that results align one to
one with the shipped labels); :meth:`ReasoningTrace.from_folder` reads a Thought Anchors problem
folder. A :class:`ReasoningTask` (kind ``"reasoning"``) puts a trace in front of a language model:
the value of a subset of sentences is log p(answer | the paper's prompt built from the problem,
the kept sentences and the forced-answer cue), scored teacher-forced on the raw prompt (no chat
template). Removing a sentence deletes it by its offsets (the authors' ``str.replace`` deletes
every repeat of the sentence's text); every perturbation method (``loo``, ``shapley``,
``kernel_shap``...) runs on :meth:`ReasoningTask.unit_scorer`, and the reasoning methods
(``attribkit methods --kind reasoning``) on the task itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, CostMeter
from attribkit.core.errors import InputError
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import TextUnits
from attribkit.tasks.prompt_scores import PromptLogprobs, lm_meter

__all__ = [
    "ANSWER_CUE",
    "DEFAULT_METHOD",
    "LABEL_KEYS",
    "PROMPT_TEMPLATE",
    "ReasoningTask",
    "ReasoningTrace",
    "attribute_reasoning",
    "locate_chunks",
    "thought_anchor_spans",
]

#: The Thought Anchors prompt (``generate_rollouts.py``); ``{reasoning}`` is the kept sentences.
PROMPT_TEMPLATE = (
    "Solve this math problem step by step. You MUST put your final answer in \\boxed{{}}. "
    "Problem: {problem} Solution: \n<think>\n{reasoning}"
)
#: The forced-answer cue appended after the kept sentences (typo "answers" as in the paper's code).
ANSWER_CUE = "\n</think>\n\nTherefore, the final answers is \\boxed{"
DEFAULT_METHOD = "forced_answer"
#: The per-sentence labels of a Thought Anchors ``chunks_labeled.json`` most analyses read; every
#: other key of the file is kept as well.
LABEL_KEYS = (
    "counterfactual_importance_kl",
    "resampling_importance_kl",
    "forced_importance_kl",
    "function_tags",
)
_MIN_CHUNK = 10  # chunks shorter than this many characters are merged (as the authors do)
_SENTENCE_END = ".?!"


# --- sentence units ---------------------------------------------------------------------------
def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` narrowed to ``text[start:end].strip()``."""
    piece = text[start:end]
    left = len(piece) - len(piece.lstrip())
    right = len(piece.rstrip())
    return start + left, start + right


def thought_anchor_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` by Thought Anchors' rules
    (``utils.split_solution_into_chunks``), without model calls.

    A chunk ends after ``.``, ``?`` or ``!`` followed by a space or newline, and at a blank line
    (``\\n\\n`` or ``\\r\\n\\r\\n``); each chunk is stripped of surrounding whitespace; then
    chunks shorter than 10 characters are merged into the next one (the last into the one before
    it), counting lengths as the authors do (merged text joined by one space). Differences from
    the authors' code, on purpose: the trailing text after the last boundary is KEPT as a chunk
    (their current code drops it: the "add the last chunk" lines are commented out, although the
    shipped labels were made with a version that kept it), and a merged chunk is a span of the
    original text (its inner whitespace as written, where the authors join with one space).
    """
    n = len(text)
    raw: list[tuple[int, int]] = []
    start = 0
    for i in range(n):
        para = text.startswith("\n\n", i) or text.startswith("\r\n\r\n", i)
        sentence = i < n - 1 and text[i] in _SENTENCE_END and text[i + 1] in " \n"
        if (para or sentence) and text[start : i + 1].strip():
            raw.append(_strip_span(text, start, i + 1))
            start = i + 1
    if text[start:].strip():  # the trailing, unterminated text (kept; the authors drop it)
        raw.append(_strip_span(text, start, n))
    spans = [list(s) for s in raw]
    lengths = [e - s for s, e in raw]  # the authors' lengths: merged chunks joined by one space
    i = 0
    while i < len(spans):
        if lengths[i] < _MIN_CHUNK:
            if i == len(spans) - 1:
                if i > 0:  # the last chunk goes into the one before it
                    spans[i - 1][1] = spans[i][1]
                    lengths[i - 1] += 1 + lengths[i]
                    del spans[i], lengths[i]
            else:  # any other short chunk goes into the next one
                spans[i + 1][0] = spans[i][0]
                lengths[i + 1] += 1 + lengths[i]
                del spans[i], lengths[i]
            if i == 0 and len(spans) == 1:
                break
        else:
            i += 1
    return [(s, e) for s, e in spans]


def locate_chunks(text: str, chunks: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of the given ``chunks`` in ``text``, found in order (each after the
    previous one; whitespace inside a chunk may differ from the text's, as in the authors'
    merged chunks). Raises InputError naming the first chunk not found. No model calls."""
    if isinstance(chunks, str) or not isinstance(chunks, Sequence):
        raise InputError("chunks must be a list of strings (the trace's sentences, in order)")
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, str) or not chunk.strip():
            raise InputError(f"chunk {i} is empty or not a string; give every chunk its text")
        pattern = r"\s+".join(re.escape(w) for w in chunk.split())
        found = re.compile(pattern).search(text, pos)
        if found is None:
            where = "in the text" if i == 0 else f"in the text after chunk {i - 1}"
            raise InputError(
                f"chunk {i} ({chunk[:60]!r}) does not occur {where}; chunks must be substrings "
                "of the trace (whitespace may differ), in order, without overlap"
            )
        spans.append((found.start(), found.end()))
        pos = found.end()
    if not spans:
        raise InputError("chunks is empty: give at least one sentence of the trace")
    return spans


def _non_empty(value: Any, what: str, fix: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"the {what} is empty: {fix}")
    return value


class ReasoningTrace:
    """A problem and its chain of thought, split into sentence units with exact character
    offsets. No model calls.

    Args:
        problem: the problem the reasoning solves (goes into the prompt).
        text: the chain of thought (the text between ``<think>`` and ``</think>``).
        answer: the final answer whose log-probability tasks explain (e.g. the ground truth);
            optional here, required by :class:`ReasoningTask` unless it is given one.
        chunks: the sentences as a list of strings, located in ``text`` in order (so results
            align one to one with per-sentence labels); None splits ``text`` by Thought Anchors'
            rules (:func:`thought_anchor_spans`: the trailing text is kept, where the authors'
            code drops it).
        labels: per-sentence labels, name → one value per sentence (e.g. the shipped
            ``counterfactual_importance_kl``).
        meta: anything else to keep with the trace (where it came from, the base answer...).
    """

    def __init__(
        self,
        problem: str,
        text: str,
        answer: str | None = None,
        chunks: Sequence[str] | None = None,
        labels: Mapping[str, Sequence[Any]] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.problem = _non_empty(problem, "problem", "give the problem the reasoning solves")
        self.text = _non_empty(text, "reasoning text", "give the chain of thought to attribute")
        if answer is not None:
            answer = _non_empty(answer, "answer", "give the final answer, or leave answer=None")
        self.answer = answer
        spans = thought_anchor_spans(text) if chunks is None else locate_chunks(text, chunks)
        self.units = TextUnits(text, spans)
        self.labels: dict[str, list[Any]] = {}
        for name, values in (labels or {}).items():
            values = list(values)
            if len(values) != len(self.units):
                raise InputError(
                    f"label {name!r} has {len(values)} values for {len(self.units)} sentences; "
                    "give one value per sentence"
                )
            self.labels[str(name)] = values
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def sentences(self) -> list[str]:
        """The sentence texts, as they occur in :attr:`text`."""
        return self.units.labels

    @property
    def spans(self) -> list[tuple[int, int]]:
        """The character range ``(start, end)`` of each sentence in :attr:`text`."""
        return [(int(u.start), int(u.end)) for u in self.units]  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.units)

    def __repr__(self) -> str:
        return (
            f"ReasoningTrace({len(self)} sentences, {len(self.text)} characters, "
            f"answer={self.answer!r}, labels={sorted(self.labels)})"
        )

    def head(self, n: int) -> ReasoningTrace:
        """The trace cut after its first ``n`` sentences (same units, labels cut too), e.g. to
        fit a small model's window. No model calls."""
        if n < 1:
            raise InputError(f"head(n) needs n >= 1, got {n}")
        n = min(n, len(self))
        end = self.spans[n - 1][1]
        return ReasoningTrace(
            self.problem,
            self.text[:end],
            self.answer,
            chunks=self.sentences[:n],
            labels={k: v[:n] for k, v in self.labels.items()},
            meta={**self.meta, "head": n},
        )

    @classmethod
    def from_folder(cls, path: str | Path, answer: str | None = None) -> ReasoningTrace:
        """Load a Thought Anchors problem folder (``<model>/<kind>_base_solution/problem_<id>``):
        ``problem.json`` (``problem``; ``gt_answer`` becomes the answer unless ``answer`` is
        given), ``base_solution.json`` (``full_cot``: the text between ``<think>`` and
        ``</think>``, stripped, is the reasoning) and, when present, ``chunks_labeled.json``
        (each item's ``chunk`` is a unit, in order; every other key becomes a label list, e.g.
        ``trace.labels["counterfactual_importance_kl"]``). Without ``chunks_labeled.json`` the
        text is split by Thought Anchors' rules. No model calls."""
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; pass a Thought Anchors problem folder")
        problem_file, base_file = folder / "problem.json", folder / "base_solution.json"
        if not problem_file.is_file() or not base_file.is_file():
            raise InputError(
                f"{folder} has no problem.json or no base_solution.json: it is not a Thought "
                "Anchors problem folder (e.g. .../correct_base_solution/problem_2238; scenario "
                "folders are not supported)"
            )
        problem = _read_json(problem_file)
        base = _read_json(base_file)
        full = base.get("full_cot") if isinstance(base, dict) else None
        if not isinstance(problem, dict) or not isinstance(full, str):
            raise InputError(f"{folder}: problem.json or base_solution.json lacks its fields")
        text = full.split("<think>", 1)[1] if "<think>" in full else full
        text = text.split("</think>", 1)[0].strip()
        chunks, labels = None, None
        labeled_file = folder / "chunks_labeled.json"
        if labeled_file.is_file():
            items = _read_json(labeled_file)
            if not isinstance(items, list) or not all(
                isinstance(it, dict) and "chunk" in it for it in items
            ):
                raise InputError(f"{labeled_file}: expected a list of objects with a 'chunk'")
            chunks = [it["chunk"] for it in items]
            keys = dict.fromkeys(k for it in items for k in it if k != "chunk")
            labels = {k: [it.get(k) for it in items] for k in keys}
        gt = problem.get("gt_answer")
        return cls(
            problem.get("problem", ""),
            text,
            answer if answer is not None else (str(gt) if gt not in (None, "") else None),
            chunks=chunks,
            labels=labels,
            meta={
                "source": str(folder),
                "base_answer": base.get("answer"),
                "is_correct": base.get("is_correct"),
            },
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}") from e


# --- the task ---------------------------------------------------------------------------------
class ScoringLM(Protocol):
    """What the task needs from a language model: raw-prompt scoring (``chat=False``)."""

    def token_logprobs(
        self, prompts: Sequence[str], responses: Sequence[str] | str, chat: bool = ...
    ) -> Any: ...


class ReasoningTask(Task):
    """One reasoning trace in front of a language model (task kind ``"reasoning"``: the
    reasoning methods, and every perturbation method on :meth:`scorer`).

    The value of a subset of sentences is log p(answer | prompt), the prompt being Thought
    Anchors' (``template`` with the problem and the kept sentences, stripped, then ``cue``), scored
    teacher-forced on the raw prompt (``chat=False``: no chat template). Removing a sentence
    deletes it by its offsets, with the whitespace that follows it. Building the task costs no
    model call.

    Args:
        lm: a language model whose ``token_logprobs`` takes ``chat=False`` (``LanguageModel``,
            ``OpenAICompatibleLM``); a local ``LanguageModel`` also reuses the key-value cache
            of the full prompt for every prompt that shares a prefix with it.
        trace: the :class:`ReasoningTrace` (its sentences are the units).
        answer: the answer to explain; default ``trace.answer`` (InputError if neither).
        cue: what follows the kept sentences (default: the paper's forced-answer cue).
        template: the prompt before the cue, with ``{problem}`` and ``{reasoning}``.
        reuse_prefix: reuse the key-value cache of the full prompt (local LMs only); results
            equal ``reuse_prefix=False`` up to float rounding.
    """

    kind = "reasoning"

    def __init__(
        self,
        lm: ScoringLM,
        trace: ReasoningTrace,
        answer: str | None = None,
        cue: str = ANSWER_CUE,
        template: str = PROMPT_TEMPLATE,
        reuse_prefix: bool = True,
        batch_size: int = 8,
    ) -> None:
        if not isinstance(trace, ReasoningTrace):
            raise InputError(
                f"trace must be a ReasoningTrace, got {type(trace).__name__}; build one with "
                "ReasoningTrace(problem, text) or ReasoningTrace.from_folder(path)"
            )
        if "{problem}" not in template or "{reasoning}" not in template:
            raise InputError("the template must contain {problem} and {reasoning}")
        answer = answer if answer is not None else trace.answer
        if answer is None:
            raise InputError(
                "no answer to explain: pass answer=... or give the trace one "
                "(ReasoningTrace(..., answer=...); from_folder reads problem.json's gt_answer)"
            )
        self.answer = _non_empty(answer, "answer", "pass the final answer to explain")
        self.lm, self.trace, self.cue, self.template = lm, trace, cue, template
        self.reuse_prefix, self.batch_size = reuse_prefix, batch_size
        self._meter = lm_meter(lm)
        self.units: TextUnits = trace.units
        self._check_window()
        self._scores = PromptLogprobs(
            lm, self.answer, self.prompt(), self._meter, reuse_prefix=reuse_prefix, chat=False
        )

    @property
    def meter(self) -> CostMeter:
        """The LM's own meter when it has one (every scored prompt is counted there), else the
        task's."""
        return self._meter  # type: ignore[return-value]

    @property
    def problem(self) -> str:
        return self.trace.problem

    @property
    def target_info(self) -> dict[str, Any]:
        """What is explained: log p(answer | problem, kept sentences, cue)."""
        return {
            "kind": "answer_logprob",
            "description": (
                f"log p(answer | problem, kept sentences, answer cue) with answer {self.answer!r}"
            ),
            "problem": self.problem,
            "answer": self.answer,
            "template": self.template,
            "cue": self.cue,
            "model": getattr(self.lm, "name", type(self.lm).__name__),
        }

    @property
    def input_info(self) -> dict[str, Any]:
        """The trace's sentences and its problem."""
        return {**self.units.to_dict(), "problem": self.problem}

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """:meth:`scorer`; takes ``budget`` from ``params``."""
        return self.scorer(budget=params.pop("budget", None))

    # --- prompts --------------------------------------------------------------------------------
    def prompt(self, reasoning: str | None = None) -> str:
        """The raw prompt for the kept sentences ``reasoning`` (a composed text; all sentences
        when None): the template with the problem and the stripped reasoning, then the cue."""
        kept = self.units.text if reasoning is None else reasoning
        return self.template.format(problem=self.problem, reasoning=kept.strip()) + self.cue

    def prefix_texts(self) -> list[str]:
        """The kept text with sentences 0..i for i = -1 (none) .. N-1: N + 1 composed texts."""
        n = len(self.units)
        masks = np.arange(n)[None, :] < np.arange(n + 1)[:, None]
        return list(self.units.compose_batch(masks))

    def _check_window(self) -> None:
        window = getattr(self.lm, "max_positions", None)
        count = getattr(self.lm, "count_tokens", None)
        if not window or count is None:
            return
        total = count(self.prompt(), self.answer, chat=False)
        if total > window:
            raise InputError(
                f"the prompt and answer take {total} tokens but the model's window is {window}; "
                f"cut the trace (trace.head(n) keeps its first n sentences) by about "
                f"{total - window} tokens, or use a model with a longer window"
            )

    # --- values ---------------------------------------------------------------------------------
    def token_logprobs(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Per-token log-probabilities of the answer after each raw prompt, cached per prompt.

        Costs one forward pass per prompt not seen before by this task; with a local LM (and
        ``reuse_prefix``) the first costs a full pass over the full prompt, whose key-value cache
        is kept, and each later one runs only the tokens after its common prefix with it."""
        return self._scores(prompts)

    def values(self, reasonings: Sequence[str]) -> np.ndarray:
        """log p(answer | prompt) for each kept text (composed by the units): one per text."""
        prompts = [self.prompt(r) for r in reasonings]
        return np.array([lp.sum() for lp in self.token_logprobs(prompts)], dtype=float)

    def scorer(
        self, budget: Budget | None = None, progress: Callable[[int], None] | None = None
    ) -> Scorer:
        """A mask :class:`Scorer` over the sentences for log p(answer | kept sentences).

        Forward passes are counted on the task's :attr:`meter`; prompts the task already scored
        cost nothing."""
        return Scorer(
            self.units,
            self.values,
            target=self.target_info,
            batch_size=self.batch_size,
            budget=budget,
            progress=progress,
            meter=self._meter,
            task_kind=self.kind,
        )

    def attribute(
        self, method: str = DEFAULT_METHOD, budget: Budget | None = None, **params: Any
    ) -> Attribution:
        """Run a reasoning method, or a perturbation method on :meth:`scorer`, on this task
        (:func:`attribkit.attribute`); ``budget`` caps a perturbation method's forward passes."""
        if budget is not None:
            params["budget"] = budget
        return attribute(self, method, **params)

    def __repr__(self) -> str:
        return f"ReasoningTask({len(self.units)} sentences, answer={self.answer!r})"


def attribute_reasoning(
    lm: ScoringLM,
    trace: ReasoningTrace | str | Path,
    method: str = DEFAULT_METHOD,
    answer: str | None = None,
    budget: Budget | None = None,
    **params: Any,
) -> Attribution:
    """Attribute a reasoning trace's answer to its sentences.

    ``trace`` is a :class:`ReasoningTrace` or a Thought Anchors problem folder. Returns an
    Attribution over the sentences; costs the method's model calls (``forced_answer``: N + 1
    forward passes, all but one over only the answer cue and the answer; ``loo``: N + 1).
    """
    if isinstance(trace, str | Path):
        trace = ReasoningTrace.from_folder(trace)
    task = ReasoningTask(lm, trace, answer=answer)
    return task.attribute(method, budget=budget, **params)
