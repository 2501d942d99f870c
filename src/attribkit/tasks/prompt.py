"""The prompt task: a classification prompt template whose tokens (or demonstrations) are the
units, valued by its fitness — accuracy or label margin — over a labelled fitness set.

A template is raw completion text with one slot (``"{input}"`` by default) that each example's
text fills; the model's next-token distribution after the filled prompt is read at the first
token of each label's verbalizer (``" negative"`` / ``" positive"``), one forward pass per
prompt (:func:`label_logprobs`). :func:`evaluate_prompt` scores one template on a set of
examples; :class:`PromptTask` makes the template attributable: every perturbation method
(``loo``, ``shapley``, ``kernel_shap``...) runs on it through ``attribkit.attribute(task,
"loo")``, and the pruning searches of :mod:`attribkit.applied.pruning` (TAPruning, PromptQuine)
run on its fitness. The slot and any protected span are never units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from attribkit.core.cost import Cost, CostMeter, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import TextUnits
from attribkit.tasks.prompt_cases import LabeledExample

__all__ = [
    "FITNESSES",
    "PromptEvaluation",
    "PromptTask",
    "TemplateUnits",
    "evaluate_prompt",
    "label_logprobs",
    "label_margins",
]

#: the fitness functions of a :class:`PromptTask`
FITNESSES: tuple[str, ...] = ("accuracy", "margin")
_UNIT_KINDS = ("tokens", "demonstrations")


# ---------------------------------------------------------------------------------- scoring


def _check_lm(lm: Any) -> None:
    for attr in ("tokenizer", "next_token_logprobs", "_response_ids", "cost"):
        if not hasattr(lm, attr):
            raise InputError(
                f"label_logprobs needs a local LanguageModel (attribkit.models.lm), got "
                f"{type(lm).__name__} without {attr!r}; load one with attribkit.load(...)"
            )


def _label_token_ids(lm: Any, verbalizers: Mapping[str, str]) -> list[int]:
    """The first token id of each verbalizer (distinct across labels)."""
    if not isinstance(verbalizers, Mapping) or len(verbalizers) < 2:
        raise InputError(
            "verbalizers must map at least two labels to their completions, e.g. "
            "{'negative': ' negative', 'positive': ' positive'}"
        )
    ids = []
    for label, text in verbalizers.items():
        if not isinstance(text, str) or not text:
            raise InputError(f"the verbalizer of label {label!r} must be a non-empty string")
        ids.append(int(lm._response_ids(text)[0]))
    if len(set(ids)) < len(ids):
        firsts = {k: lm.tokenizer.decode([i]) for k, i in zip(verbalizers, ids, strict=True)}
        raise InputError(
            f"two verbalizers start with the same token ({firsts}); give verbalizers whose first "
            "tokens differ (e.g. ' negative' / ' positive')"
        )
    return ids


def label_logprobs(
    lm: Any,
    prompts: Sequence[str],
    verbalizers: Mapping[str, str],
    batch_size: int = 8,
    *,
    normalize: bool = False,
) -> np.ndarray:
    """An (n_prompts, n_labels) array: log p(first token of each verbalizer | prompt), the prompt
    taken as a raw completion (no chat template, tokenised exactly as
    ``lm.token_logprobs(prompt, verbalizer, chat=False)`` does, so column j equals that call's
    first value). Not normalised over the labels unless ``normalize=True`` (then each row is a
    log-softmax over the labels' log-probabilities).

    Costs one forward pass per prompt (only the next-token distribution at the last position is
    read), run ``batch_size`` prompts at a time, longest first, left-padded; counted on the LM's
    meter (``lm.cost``: passes and batches; ``lm.tokens_processed``)."""
    _check_lm(lm)
    if isinstance(prompts, str):
        raise InputError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    if batch_size < 1:
        raise InputError("batch_size must be >= 1")
    label_ids = _label_token_ids(lm, verbalizers)
    if not prompts:
        return np.empty((0, len(label_ids)), dtype=float)
    rows = lm.next_token_logprobs(prompts, chat=False, batch_size=batch_size)
    out = rows[:, label_ids].astype(float)
    if not np.isfinite(out).all():
        raise ScorerError(
            "the model returned a non-finite label log-probability; check the model's dtype "
            "(float16 on CPU can overflow)"
        )
    if normalize:
        out = out - np.logaddexp.reduce(out, axis=1, keepdims=True)
    return out


def label_margins(logprobs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per example p̃(gold) − max p̃(other), p̃ = the label probabilities renormalised over the
    labels (softmax of ``logprobs``' rows): the RLPrompt reward's margin (Deng et al., "RLPrompt:
    Optimizing Discrete Text Prompts with Reinforcement Learning", 2022) without its ×200/×180
    scaling, in [−1, 1], > 0 exactly when the prediction is right. No model calls."""
    lp = np.asarray(logprobs, dtype=float)
    p = np.exp(lp - np.logaddexp.reduce(lp, axis=1, keepdims=True))
    rows = np.arange(len(gold))
    true = p[rows, gold]
    other = p.copy()
    other[rows, gold] = -np.inf
    return np.asarray(true - other.max(axis=1))


@dataclass
class PromptEvaluation:
    """One template scored on labelled examples: ``accuracy``, mean ``margin`` (see
    :func:`label_margins`), the predicted labels, a boolean ``correct`` per example, the raw
    (n, labels) ``logprobs`` and the ``cost`` (one forward pass per example)."""

    accuracy: float
    margin: float
    predictions: list[str]
    correct: np.ndarray
    logprobs: np.ndarray
    cost: Cost

    @property
    def n(self) -> int:
        """How many examples were scored."""
        return len(self.correct)

    @property
    def n_correct(self) -> int:
        """How many were predicted right."""
        return int(np.sum(self.correct))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "accuracy": self.accuracy,
            "margin": self.margin,
            "predictions": list(self.predictions),
            "correct": [bool(c) for c in self.correct],
            "logprobs": np.asarray(self.logprobs).tolist(),
            "cost": self.cost.to_dict(),
        }


def _check_examples(
    examples: Sequence[LabeledExample], verbalizers: Mapping[str, str], what: str
) -> list[LabeledExample]:
    examples = list(examples)
    if not examples:
        raise InputError(f"the {what} is empty: pass at least one LabeledExample")
    for i, ex in enumerate(examples):
        if not isinstance(ex, LabeledExample):
            raise InputError(
                f"{what} item {i} is a {type(ex).__name__}; pass LabeledExample(text, label)"
            )
        if ex.label not in verbalizers:
            raise InputError(
                f"{what} item {i} has label {ex.label!r}, which is not a verbalizer key "
                f"({sorted(verbalizers)}); fix the label or add its verbalizer"
            )
    return examples


def _check_slot(template: str, slot: str) -> None:
    if not isinstance(template, str) or not isinstance(slot, str) or not slot:
        raise InputError("the template and its slot must be strings (slot e.g. '{input}')")
    if slot not in template:
        raise InputError(
            f"the template has no slot {slot!r} for the example's text; add it (e.g. "
            f"'Review: {slot}\\nSentiment:') or pass slot=... naming the placeholder it uses"
        )


def fill(template: str, text: str, slot: str = "{input}") -> str:
    """The template with every ``slot`` replaced by ``text`` (plain replacement: other braces in
    the template stay as they are). No model calls."""
    return template.replace(slot, text)


def _scores_of(
    logprobs: np.ndarray, examples: Sequence[LabeledExample], labels: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction index, correct, margin) per example."""
    gold = np.array([labels.index(ex.label) for ex in examples])
    pred = np.argmax(logprobs, axis=1)
    return pred, pred == gold, label_margins(logprobs, gold)


def evaluate_prompt(
    lm: Any,
    template: str,
    examples: Sequence[LabeledExample],
    verbalizers: Mapping[str, str],
    slot: str = "{input}",
    batch_size: int = 8,
) -> PromptEvaluation:
    """Accuracy and mean label margin of ``template`` on ``examples`` (each fills ``slot``; the
    prediction is the label whose verbalizer's first token is most probable). Costs one forward
    pass per example (:func:`label_logprobs`), counted on the LM's meter."""
    _check_slot(template, slot)
    examples = _check_examples(examples, verbalizers, "example set")
    labels = list(verbalizers)
    with measure(lm) as cost:
        lp = label_logprobs(lm, [fill(template, ex.text, slot) for ex in examples], verbalizers,
                            batch_size)  # fmt: skip
    pred, correct, margin = _scores_of(lp, examples, labels)
    return PromptEvaluation(
        accuracy=float(correct.mean()),
        margin=float(margin.mean()),
        predictions=[labels[i] for i in pred],
        correct=correct,
        logprobs=lp,
        cost=cost,
    )


# ---------------------------------------------------------------------------------- units


class TemplateUnits(TextUnits):
    """Spans of a prompt template (its tokens or its demonstrations); removing a unit deletes
    exactly its characters. The text between units (the slot, protected spans) always stays."""

    kind = "prompt_template"

    def __init__(
        self, text: str, spans: Sequence[tuple[int, int]], unit_kind: str = "tokens"
    ) -> None:
        super().__init__(text, spans, removal="delete")
        self.unit_kind = unit_kind
        self.removal = f"delete the {unit_kind[:-1]}'s characters (slot and protected text stay)"

    def compose(self, mask: np.ndarray) -> str:
        """The template with the units where ``mask`` is False deleted. No model calls."""
        mask = self.check_masks(mask)[0]
        parts = [self._prefix]
        for keep, piece, gap in zip(mask, self._pieces, self._gaps, strict=True):
            parts.append(piece if keep else gap)
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The template, the unit kind and the units' spans (JSON-serialisable)."""
        return {
            "kind": self.kind,
            "removal": self.removal,
            "text": self.text,
            "unit_kind": self.unit_kind,
            "spans": [[u.start, u.end] for u in self.units],
        }


def _overlaps(span: tuple[int, int], blocked: list[tuple[int, int]]) -> bool:
    s, e = span
    return any(s < be and bs < e for bs, be in blocked)


def _protected_ranges(
    template: str, slot: str, protected: Sequence[str | tuple[int, int]]
) -> list[tuple[int, int]]:
    """Character ranges of every slot occurrence and every protected string / span."""
    out = []
    for needle in [slot, *[p for p in protected if isinstance(p, str)]]:
        if not needle:
            raise InputError("a protected string is empty; pass text that occurs in the template")
        pos = template.find(needle)
        if pos < 0:
            raise InputError(f"protected text {needle!r} does not occur in the template")
        while pos >= 0:
            out.append((pos, pos + len(needle)))
            pos = template.find(needle, pos + 1)
    for p in protected:
        if not isinstance(p, str):
            s, e = (int(v) for v in p)
            if not 0 <= s < e <= len(template):
                raise InputError(f"protected span {p} is not inside the template")
            out.append((s, e))
    return out


def _token_spans(lm: Any, template: str) -> list[tuple[int, int]]:
    """Character spans of the template's tokens by the LM's tokenizer (tokens sharing a
    character merged into one span, as the LM's token units do)."""
    spans = lm.prompt_token_spans(template, chat=False)
    _, units = lm._token_units(template, spans)
    return [(int(u.start), int(u.end)) for u in units]


# ---------------------------------------------------------------------------------- the task


class PromptTask(Task):
    """A prompt template as units — its tokens (``units="tokens"``, by the LM's tokenizer) or its
    demonstrations (``units="demonstrations"``, see :meth:`from_demonstrations`) — valued by its
    fitness over ``fitness_set``: ``"accuracy"`` or ``"margin"`` (the mean RLPrompt-style margin
    p̃(gold) − max p̃(other) over the labels, :func:`label_margins`), the search space of
    PromptQuine / TAPruning (Wang, Hu & Bing, "Evolving Prompts In-Context: An Open-ended,
    Self-replicating Perspective", ICML 2025).

    The slot and every ``protected`` string or (start, end) span are never units; a token that
    overlaps them is protected too. Removing a unit deletes its characters (PromptQuine decodes
    the kept token ids, which gives the same text for a byte-level BPE).

    Cost: building it tokenises the template (no model call). One *fitness call* (one template)
    costs ``len(fitness_set)`` forward passes, counted on the LM's meter (:attr:`meter`); fitness
    values are cached by template text, so a template seen before is never re-scored.
    """

    kind: ClassVar[str] = "prompt"

    def __init__(
        self,
        lm: Any,
        template: str,
        fitness_set: Sequence[LabeledExample],
        verbalizers: Mapping[str, str],
        units: str = "tokens",
        fitness: str = "accuracy",
        slot: str = "{input}",
        *,
        protected: Sequence[str | tuple[int, int]] = (),
        demonstration_spans: Sequence[tuple[int, int]] | None = None,
        batch_size: int = 8,
    ) -> None:
        _check_lm(lm)
        _check_slot(template, slot)
        if fitness not in FITNESSES:
            raise InputError(f"unknown fitness {fitness!r}; choose one of {FITNESSES}")
        if units not in _UNIT_KINDS:
            raise InputError(f"unknown units {units!r}; choose 'tokens' or 'demonstrations'")
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        self.lm, self.template, self.slot = lm, template, slot
        self.verbalizers = dict(verbalizers)
        _label_token_ids(lm, self.verbalizers)
        self.fitness_set = _check_examples(fitness_set, self.verbalizers, "fitness set")
        self.fitness_name, self.batch_size = fitness, int(batch_size)
        self.unit_kind = units
        blocked = _protected_ranges(template, slot, protected)
        if units == "tokens":
            spans = [s for s in _token_spans(lm, template) if not _overlaps(s, blocked)]
        else:
            if not demonstration_spans:
                raise InputError(
                    "units='demonstrations' needs the demonstrations' spans: build the task with "
                    "PromptTask.from_demonstrations(...) or pass demonstration_spans=[(start, end)]"
                )
            spans = sorted((int(s), int(e)) for s, e in demonstration_spans)
            if any(_overlaps(s, blocked) for s in spans):
                raise InputError("a demonstration span covers the slot or a protected span")
        if not spans:
            raise InputError(
                "the template has no prunable units outside the slot and protected spans; "
                "give a template with text around the slot"
            )
        self.units = TemplateUnits(template, spans, units)
        self.demonstration_spans = [tuple(s) for s in demonstration_spans or []]
        self._values: dict[str, tuple[float, float]] = {}
        self._scorer: Scorer | None = None

    @classmethod
    def from_demonstrations(
        cls,
        lm: Any,
        demonstrations: Sequence[LabeledExample],
        fitness_set: Sequence[LabeledExample],
        verbalizers: Mapping[str, str],
        *,
        example_format: str = "Review: {input}\nSentiment:{label}\n\n",
        query_format: str = "Review: {input}\nSentiment:",
        instruction: str = "",
        units: str = "demonstrations",
        slot: str = "{input}",
        **kwargs: Any,
    ) -> PromptTask:
        """A task whose template is ``instruction`` + one ``example_format`` per demonstration
        (its text in the slot, its verbalizer in ``{label}``) + ``query_format``; the
        demonstrations' spans (each with its trailing separator) are recorded, so
        ``units="demonstrations"`` makes each demonstration one unit (``units="tokens"``: every
        token). No model calls."""
        verbalizers = dict(verbalizers)
        demos = _check_examples(demonstrations, verbalizers, "demonstration list")
        _check_slot(example_format, slot)
        _check_slot(query_format, slot)
        text, spans = instruction, []
        for i, d in enumerate(demos):
            if slot in d.text:
                raise InputError(f"demonstration {i} contains the slot {slot!r}; rename the slot")
            piece = fill(example_format, d.text, slot).replace("{label}", verbalizers[d.label])
            spans.append((len(text), len(text) + len(piece)))
            text += piece
        return cls(
            lm, text + query_format, fitness_set, verbalizers, units, slot=slot,
            demonstration_spans=spans, **kwargs,
        )  # fmt: skip

    # --- Task contract ------------------------------------------------------------------------
    @property
    def meter(self) -> CostMeter:
        """The LM: every forward pass of a fitness call is counted on ``lm.cost``."""
        return self.lm  # type: ignore[no-any-return]

    @property
    def target_info(self) -> dict[str, Any]:  # type: ignore[override]
        """The fitness explained: its name, the fitness-set size and the verbalizers."""
        return {
            "kind": "prompt_fitness",
            "description": f"{self.fitness_name} of the prompt over {len(self.fitness_set)} "
            "fitness examples",
            "fitness": self.fitness_name,
            "n_examples": len(self.fitness_set),
            "verbalizers": dict(self.verbalizers),
        }

    @property
    def input_info(self) -> dict[str, Any]:
        """The template units' description plus the slot."""
        return {**self.units.to_dict(), "slot": self.slot}

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """A mask :class:`Scorer` of the fitness (takes ``budget`` from ``params``); it shares
        this task's fitness cache, so masks any search or method saw cost nothing."""
        budget = params.pop("budget", None)
        if budget is None:
            return self.scorer
        return self._make_scorer(budget)

    # --- fitness --------------------------------------------------------------------------------
    @property
    def scorer(self) -> Scorer:
        """The task's shared fitness scorer (masks → fitness, cached and counted)."""
        if self._scorer is None:
            self._scorer = self._make_scorer(None)
        return self._scorer

    def _make_scorer(self, budget: Any) -> Scorer:
        return Scorer(
            self.units,
            self._fitness_of_templates,
            target=self.target_info,
            batch_size=8,
            budget=budget,
            meter=self.lm,
            task_kind=self.kind,
        )

    @property
    def passes_per_fitness_call(self) -> int:
        """Forward passes one fitness call (one new template) costs: ``len(fitness_set)``."""
        return len(self.fitness_set)

    def render(self, mask: Any = None) -> str:
        """The template with the units kept by ``mask`` (all when None). No model calls."""
        return self.template if mask is None else self.units.compose(mask)

    def _fitness_of_templates(self, templates: Sequence[str]) -> np.ndarray:
        """Fitness of each template (value function of the scorer): new templates are scored in
        one batched :func:`label_logprobs` call, |fitness set| passes each."""
        todo = [t for t in dict.fromkeys(templates) if t not in self._values]
        if todo:
            prompts = [fill(t, ex.text, self.slot) for t in todo for ex in self.fitness_set]
            lp = label_logprobs(self.lm, prompts, self.verbalizers, self.batch_size)
            k = len(self.fitness_set)
            labels = list(self.verbalizers)
            for j, t in enumerate(todo):
                _, correct, margin = _scores_of(lp[j * k : (j + 1) * k], self.fitness_set, labels)
                self._values[t] = (float(correct.mean()), float(margin.mean()))
        col = FITNESSES.index(self.fitness_name)
        return np.array([self._values[t][col] for t in templates])

    def fitness(self, masks: Any) -> np.ndarray:
        """The fitness of each mask (shape (B,), or one value per row of a (B, n) array). Costs
        ``len(fitness_set)`` forward passes per template not seen before."""
        return self.scorer(masks)

    def fitness_values(self, mask: Any = None) -> dict[str, float]:
        """Both fitnesses (``accuracy`` and ``margin``) of one mask (all units when None); one
        fitness call unless cached."""
        m = np.ones(self.n_units, dtype=bool) if mask is None else mask
        self.fitness(m)
        acc, margin = self._values[self.render(m)]
        return {"accuracy": acc, "margin": margin}

    def evaluate(self, examples: Sequence[LabeledExample], mask: Any = None) -> PromptEvaluation:
        """:func:`evaluate_prompt` of the template kept by ``mask`` (all units when None) on
        ``examples`` (held-out data: never the fitness set). One forward pass per example."""
        return evaluate_prompt(
            self.lm, self.render(mask), examples, self.verbalizers, self.slot, self.batch_size
        )

    def __repr__(self) -> str:
        return (
            f"PromptTask({self.n_units} {self.unit_kind}, fitness={self.fitness_name!r} over "
            f"{len(self.fitness_set)} examples, labels={list(self.verbalizers)})"
        )
