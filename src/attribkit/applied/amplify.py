"""AMPLIFY: few-shot demonstrations chosen by a proxy's misclassification confidence, each with a
rationale naming the proxy's top-attributed words (Krishna, Ma, Slack, Ghandeharioun, Singh,
Lakkaraju, "Post Hoc Explanations of Language Models Can Improve Language Models", NeurIPS 2023).

Steps (:func:`amplify`):

1. run the language model with the base prompt (``template``) on the validation set and keep
   its errors;
2. rank them by the proxy's Misclassification Confidence Score,
   ``MCS(x) = max_{c ≠ gold} f_proxy(x)[c] − f_proxy(x)[gold]`` (highest first), and take
   ``n_shots`` (:func:`select_by_mcs`; when the LM errs on fewer items than ``n_shots`` the rest
   come from its correctly answered items, also by MCS, highest first);
3. explain the proxy toward the *gold* label and keep its ``k_words`` top words, stop words left
   out (:func:`rationale_words`), written with AMPLIFY's template "The key words: 'w1' and 'w2'
   are important clues to predict 'positive' as the correct answer." (:func:`rationale_text`);
4. the few-shot prompt: (input, rationale, answer) demonstrations, then the base prompt with its
   slot (:func:`few_shot_template`).

Proxies (:class:`Proxy`): :class:`LinearProxy` (default: scikit-learn logistic regression on
word counts, trained in process; its exact gradient × input, coefficient × count, is the
attribution over words) and :class:`SelfProxy` (Self-AMPLIFY: Bhan, Vittaut, Chesneau,
Lesot, "Self-AMPLIFY: Improving Small Language Models with Self Post Hoc Explanations", EMNLP
2024 — the LM explains its own label probability, by a perturbation method over word units).

Controls (mandatory: on "but"-sentiment a rationale naming *random* words repaired SmolLM2 as
well as AMPLIFY's, design note prompt_knowledge.md §4): :func:`random_shots` and
:func:`random_word_prompts` (the same template naming words drawn at random from each
demonstration's input, re-drawn for every test prompt, seeded).

Deviations from the paper, all deliberate: the LM is scored, not asked to generate — each label is
read from the log-probability of its verbalizer right after the answer cue, so the test input
gets no rationale of its own (the paper's LLM writes one before its answer); the proxy is a
linear model (or the LM itself), not a fine-tuned GPT-2/BERT; labels are quoted as given (the
paper capitalises its dataset's label names); ``balanced=True`` (not in the paper) takes the
same number of shots per label.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, CostMeter, measure
from attribkit.core.errors import InputError
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.units import TextUnits
from attribkit.tasks.prompt import PromptEvaluation, evaluate_prompt, fill, label_logprobs
from attribkit.tasks.prompt_cases import LabeledExample
from attribkit.tasks.prompt_scores import lm_meter

__all__ = [
    "DEFAULT_TEMPLATE",
    "AmplifyResult",
    "LinearProxy",
    "Proxy",
    "SelfProxy",
    "Shot",
    "amplify",
    "few_shot_template",
    "misclassification_confidence",
    "random_shots",
    "random_word_prompts",
    "random_word_rationale",
    "rationale_text",
    "rationale_words",
    "select_by_mcs",
    "word_key",
]

#: the base prompt: the input fills ``{input}``, the label's verbalizer follows "Answer:"
DEFAULT_TEMPLATE = "Input: {input}\nAnswer:"
#: between demonstrations, and between the last one and the test input
SEPARATOR = "\n\n"
_PUNCT = "\"'`.,;:!?()[]{}<>«»“”‘’-–—…"
_KEY = re.compile(r"[a-z0-9']+")


# --- words ----------------------------------------------------------------------------------


def word_key(word: str) -> str:
    """A word unit's feature name: lower case, surrounding punctuation stripped (``"Lovely."`` →
    ``"lovely"``); ``""`` for a word with no letter or digit. No model calls."""
    found = _KEY.findall(word.lower())
    return "".join(found).strip("'")


def _display(word: str) -> str:
    """The word as a rationale quotes it: surrounding punctuation stripped, case kept."""
    return word.strip(_PUNCT + " ")


@functools.cache
def _stop_words() -> frozenset[str]:
    """scikit-learn's English stop-word list (318 words), loaded on first use."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def _content_words(units: Sequence[Any], stop_words: frozenset[str]) -> list[int]:
    """Indices of the units whose key is a non-empty non-stop word, first occurrence of each key."""
    seen: set[str] = set()
    out = []
    for i, u in enumerate(units):
        key = word_key(u.label)
        if key and key not in stop_words and key not in seen:
            seen.add(key)
            out.append(i)
    return out


# --- proxies --------------------------------------------------------------------------------


@runtime_checkable
class Proxy(Protocol):
    """What AMPLIFY needs from a proxy model: ``labels`` (the order of its probabilities),
    ``meter`` (the :class:`CostMeter` its model calls are counted on), ``probabilities(texts)``
    → (n, labels) array, and ``explain(text, label)`` → an :class:`Attribution` over the words of
    ``text`` (``TextUnits.words``) toward ``label``, higher = more evidence for it."""

    labels: list[str]
    meter: CostMeter

    def probabilities(self, texts: Sequence[str]) -> np.ndarray: ...

    def explain(self, text: str, label: str) -> Attribution: ...


class LinearProxy(CostMeter):
    """A logistic-regression proxy on word counts (the words of :func:`word_key`), trained in
    process with scikit-learn; its own meter.

    Its attribution toward a label is exact gradient × input: with ``w_c`` the gradient of
    label ``c``'s logit with respect to the counts (binary: ``+coef`` for the second class,
    ``−coef`` for the first; several labels: the class's coefficient row), the score of a word
    feature is ``w_c[j] · count_j``; every occurrence of a word gets ``w_c[j]``, so the scores
    of a feature's occurrences sum to it. Costs: ``probabilities`` one forward pass per text,
    ``explain`` one backward pass (the analytic gradient), both counted on ``self.cost``.
    """

    def __init__(
        self,
        labels: Sequence[str],
        vocabulary: Sequence[str],
        coef: np.ndarray,
        intercept: np.ndarray,
        *,
        binary: bool = False,
    ) -> None:
        super().__init__()
        self.labels = list(labels)
        #: a two-class logistic model: its rows are ±z, the class probabilities softmax(±z/2)
        self.binary = binary
        self.vocabulary = {w: j for j, w in enumerate(vocabulary)}
        coef, intercept = np.atleast_2d(np.asarray(coef, float)), np.ravel(intercept)
        if coef.shape != (len(self.labels), len(self.vocabulary)) or intercept.shape != (
            len(self.labels),
        ):
            raise InputError(
                f"coef {coef.shape} / intercept {intercept.shape} do not fit "
                f"{len(self.labels)} labels × {len(self.vocabulary)} words"
            )
        #: (labels, words): the gradient of each label's logit with respect to the counts
        self.weights = coef
        self.intercept = intercept

    @classmethod
    def fit(
        cls,
        examples: Sequence[LabeledExample],
        labels: Sequence[str] | None = None,
        *,
        c: float = 1.0,
        seed: int = 0,
    ) -> LinearProxy:
        """Train on ``examples`` (word counts → label). ``labels`` fixes the order of the
        probabilities (default: sorted labels of the examples); a label with no example gets
        probability 0. ``c`` is the inverse L2 strength. The fit's seconds are counted on the
        returned proxy's cost (no model calls)."""
        from sklearn.linear_model import LogisticRegression

        examples = list(examples)
        if not examples:
            raise InputError("the proxy needs training examples: pass a non-empty train list")
        labels = sorted({e.label for e in examples}) if labels is None else list(labels)
        present = sorted({e.label for e in examples})
        if len(present) < 2:
            raise InputError(
                f"the proxy needs examples of at least two labels; train has only {present}"
            )
        unknown = sorted(set(present) - set(labels))
        if unknown:
            raise InputError(f"train labels {unknown} are not among the labels {labels}")
        start = time.perf_counter()
        vocab = sorted({k for e in examples for k in map(word_key, e.text.split()) if k})
        x = _counts([e.text for e in examples], {w: j for j, w in enumerate(vocab)})
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        model.fit(x, [e.label for e in examples])
        classes = [str(k) for k in model.classes_]
        coef = np.zeros((len(labels), len(vocab)))
        intercept = np.full(len(labels), -np.inf)
        if len(classes) == 2:  # one row: the logit of classes[1]; classes[0]'s logit is minus it
            for sign, name in ((-1.0, classes[0]), (1.0, classes[1])):
                coef[labels.index(name)] = sign * model.coef_[0]
                intercept[labels.index(name)] = sign * model.intercept_[0]
        else:
            for row, name in enumerate(classes):
                coef[labels.index(name)] = model.coef_[row]
                intercept[labels.index(name)] = model.intercept_[row]
        proxy = cls(labels, vocab, coef, intercept, binary=len(classes) == 2)
        proxy.cost.seconds += time.perf_counter() - start
        return proxy

    @property
    def meter(self) -> CostMeter:
        """The proxy itself: its calls are counted on ``self.cost``."""
        return self

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, words) word counts of the proxy's vocabulary (unknown words ignored). No
        model calls."""
        return _counts(list(texts), self.vocabulary)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, labels) probabilities, columns in :attr:`labels` order. One forward pass per
        text (one batch)."""
        with self.timed():
            logits = self.features(texts) @ self.weights.T + self.intercept
            if self.binary:  # logistic: the two logits are ±z/2 away from each other
                logits = np.where(np.isfinite(logits), logits / 2, logits)
            logits = logits - logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
        self.cost.forward_passes += len(texts)
        self.cost.batches += 1
        return p

    def explain(self, text: str, label: str) -> Attribution:
        """Gradient × input toward ``label`` over the words of ``text``: each word scores the
        weight of its feature toward ``label`` (0 for a word outside the vocabulary). One
        backward pass."""
        if label not in self.labels:
            raise InputError(f"unknown label {label!r}; the proxy knows {self.labels}")
        start = time.perf_counter()
        units = TextUnits.words(text)
        w = self.weights[self.labels.index(label)]
        scores = np.array(
            [
                w[self.vocabulary[k]] if (k := word_key(u.label)) in self.vocabulary else 0.0
                for u in units
            ]
        )
        cost = Cost(backward_passes=1, batches=1, seconds=time.perf_counter() - start)
        self.cost += cost
        return Attribution(
            units=list(units),
            scores=scores,
            method="linear_gradient_x_input",
            target={"kind": "proxy_label", "label": label, "description": f"logit({label})"},
            params={"proxy": "logistic regression on word counts"},
            cost=cost,
            input=units.to_dict(),
        )

    def __repr__(self) -> str:
        return f"LinearProxy({len(self.labels)} labels, {len(self.vocabulary)} words)"


def _counts(texts: list[str], vocabulary: dict[str, int]) -> np.ndarray:
    x = np.zeros((len(texts), len(vocabulary)))
    for i, t in enumerate(texts):
        for word in t.split():
            j = vocabulary.get(word_key(word))
            if j is not None:
                x[i, j] += 1
    return x


class SelfProxy:
    """Self-AMPLIFY's proxy: the language model itself (Bhan et al., "Self-AMPLIFY: Improving
    Small Language Models with Self Post Hoc Explanations", EMNLP 2024).

    ``probabilities`` are the label probabilities the LM gives with the base prompt
    (``label_logprobs`` renormalised over the labels: one forward pass per text);
    ``explain(text, label)`` runs the perturbation ``method`` (default ``"loo"``: Captum's
    FeatureAblation in Self-AMPLIFY; ``"kernel_shap"``, ``"lime"`` ... with ``params``) over the
    words of ``text`` on the value log p(label | prompt) renormalised over the labels — the
    method's cost (LOO: words + 1 forward passes). Passes are counted on the LM's meter.
    """

    def __init__(
        self,
        lm: Any,
        verbalizers: dict[str, str],
        template: str = DEFAULT_TEMPLATE,
        slot: str = "{input}",
        *,
        method: str = "loo",
        batch_size: int = 8,
        **params: Any,
    ) -> None:
        _check_template(template, slot)
        _check_verbalizers(verbalizers)
        self.lm, self.verbalizers, self.template, self.slot = lm, dict(verbalizers), template, slot
        self.labels = list(verbalizers)
        self.meter = lm_meter(lm)
        self.method, self.batch_size, self.params = method, batch_size, params
        self._cache: dict[str, np.ndarray] = {}

    def remember(self, texts: Sequence[str], logprobs: np.ndarray) -> None:
        """Cache the LM's label log-probabilities of ``texts`` with the base prompt, already
        computed elsewhere (e.g. by the validation run), so they cost nothing again."""
        for t, row in zip(texts, np.asarray(logprobs, float), strict=True):
            self._cache[t] = row

    def _label_logprobs(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            prompts = [fill(self.template, t, self.slot) for t in todo]
            raw = label_logprobs(self.lm, prompts, self.verbalizers, batch_size=self.batch_size)
            self.remember(todo, raw)
        raw = np.array([self._cache[t] for t in texts], dtype=float).reshape(len(texts), -1)
        return raw - np.logaddexp.reduce(raw, axis=1, keepdims=True)  # type: ignore[no-any-return]

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, labels) probabilities of the LM with the base prompt, renormalised over the
        labels. One forward pass per text."""
        return np.exp(self._label_logprobs(texts))

    def explain(self, text: str, label: str) -> Attribution:
        """The perturbation method's attribution over the words of ``text`` toward ``label``
        (value: the label's log-probability renormalised over the labels). Costs the method's
        passes (LOO: words + 1)."""
        if label not in self.labels:
            raise InputError(f"unknown label {label!r}; the verbalizers have {self.labels}")
        j = self.labels.index(label)
        scorer = Scorer(
            TextUnits.words(text),
            lambda texts: self._label_logprobs(texts)[:, j],
            target={"kind": "proxy_label", "label": label, "description": f"log p({label})"},
            batch_size=self.batch_size,
            meter=self.meter if self.meter is self.lm else None,
        )
        result = attribute(scorer, self.method, **self.params)
        if self.meter is not self.lm:  # an LM without its own meter: count here
            self.meter.cost += scorer.cost
        return result  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"SelfProxy({getattr(self.lm, 'name', type(self.lm).__name__)}, {self.method})"


# --- the pieces of AMPLIFY ------------------------------------------------------------------


def misclassification_confidence(probabilities: np.ndarray, gold: Sequence[int]) -> np.ndarray:
    """AMPLIFY's Misclassification Confidence Score per item: the highest probability of a wrong
    label minus the gold label's, ``max_{c ≠ gold} p[c] − p[gold]`` (in [−1, 1]; positive when
    the proxy is confidently wrong). No model calls."""
    p = np.asarray(probabilities, dtype=float)
    g = np.asarray(gold, dtype=int)
    if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] != g.shape[0]:
        raise InputError(
            f"need (items, labels ≥ 2) probabilities and one gold index per item; got "
            f"{p.shape} and {g.shape[0]} gold indices"
        )
    rows = np.arange(len(g))
    other = p.copy()
    other[rows, g] = -np.inf
    return other.max(axis=1) - p[rows, g]  # type: ignore[no-any-return]


def select_by_mcs(
    mcs: np.ndarray,
    lm_correct: np.ndarray,
    n_shots: int,
    labels: Sequence[str] | None = None,
    balanced: bool = False,
) -> list[int]:
    """Indices of the demonstrations AMPLIFY picks: the LM's errors by MCS (highest first; ties
    by index), then — the fallback when the LM made fewer than ``n_shots`` errors — its correct
    items by MCS, highest first. ``balanced`` (with the items' ``labels``) takes ⌊n/L⌋ per label
    (one more for the first ``n mod L`` labels in order of their best candidate), filling from
    the overall order when a label runs short. Returned in selection order. No model calls."""
    mcs, lm_correct = np.asarray(mcs, float), np.asarray(lm_correct, bool)
    if n_shots < 1:
        raise InputError(f"n_shots must be >= 1, got {n_shots}")
    errors = [i for i in np.argsort(-mcs, kind="stable") if not lm_correct[i]]
    correct = [i for i in np.argsort(-mcs, kind="stable") if lm_correct[i]]
    order = [int(i) for i in errors + correct]
    if not balanced:
        return order[:n_shots]
    if labels is None or len(labels) != len(order):
        raise InputError("balanced selection needs one label per item")
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(labels[i], []).append(i)
    names = list(groups)  # in order of each label's best candidate
    quota = {
        name: n_shots // len(names) + (k < n_shots % len(names)) for k, name in enumerate(names)
    }
    picked = {i for name in names for i in groups[name][: quota[name]]}
    for i in order:  # a label with too few items: fill from the overall order
        if len(picked) >= n_shots:
            break
        picked.add(i)
    return [i for i in order if i in picked]


def rationale_words(
    attribution: Attribution, k: int, stop_words: frozenset[str] | None = None
) -> list[str]:
    """The ``k`` top-scoring words of ``attribution`` (word units), stop words left out
    (scikit-learn's English list unless ``stop_words``), each word once (by :func:`word_key`),
    quoted without surrounding punctuation. Fewer when the input has fewer content words; when
    it has none, the top words of all. No model calls."""
    if k < 1:
        raise InputError(f"k_words must be >= 1, got {k}")
    stop = _stop_words() if stop_words is None else stop_words
    units = attribution.units
    if not _content_words(units, stop):  # only stop words: rank them all
        stop = frozenset()
    out: list[str] = []
    seen: set[str] = set()
    for i in attribution.ranking:
        key = word_key(units[int(i)].label)
        if key and key not in stop and key not in seen:
            seen.add(key)
            out.append(_display(units[int(i)].label))
            if len(out) == k:
                break
    return out


def rationale_text(words: Sequence[str], label: str) -> str:
    """AMPLIFY's rationale: "The key words: 'w1' and 'w2' are important clues to predict
    'label' as the correct answer." (one word: "The key word: 'w1' is an important clue ...").
    No model calls."""
    if not words:
        raise InputError("a rationale needs at least one word")
    quoted = [f"'{w}'" for w in words]
    if len(quoted) == 1:
        return f"The key word: {quoted[0]} is an important clue to predict '{label}' as the correct answer."
    listed = ", ".join(quoted[:-1]) + " and " + quoted[-1]
    return (
        f"The key words: {listed} are important clues to predict '{label}' as the correct answer."
    )


def random_word_rationale(
    text: str, label: str, k: int, rng: np.random.Generator
) -> tuple[list[str], str]:
    """The control rationale: ``k`` distinct content words of ``text`` drawn at random (the same
    pool as :func:`rationale_words`), in AMPLIFY's template. Returns (words, rationale). No
    model calls."""
    if k < 1:
        raise InputError(f"k_words must be >= 1, got {k}")
    units = TextUnits.words(text)
    pool = _content_words(units, _stop_words()) or _content_words(units, frozenset())
    picks = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
    words = [_display(units[pool[int(p)]].label) for p in picks]
    return words, rationale_text(words, label)


def few_shot_template(
    shots: Sequence[LabeledExample],
    verbalizers: dict[str, str],
    template: str = DEFAULT_TEMPLATE,
    slot: str = "{input}",
    rationales: Sequence[str | None] | None = None,
) -> str:
    """The few-shot prompt: one demonstration per shot — the base template filled with its
    input, its rationale on the line after the input (when given), the cue and the label's
    verbalizer — then the base template with its slot, separated by blank lines. No model
    calls."""
    _check_template(template, slot)
    _check_labels(shots, verbalizers, "shots")
    rationales = [None] * len(shots) if rationales is None else list(rationales)
    if len(rationales) != len(shots):
        raise InputError(f"{len(rationales)} rationales for {len(shots)} shots; give one per shot")
    prefix, suffix = template.split(slot, 1)
    demos = [
        prefix + s.text + (f"\n{r}" if r else "") + suffix + verbalizers[s.label]
        for s, r in zip(shots, rationales, strict=True)
    ]
    return SEPARATOR.join([*demos, template])


def random_shots(
    pool: Sequence[LabeledExample], n_shots: int, seed: int = 0, balanced: bool = False
) -> list[LabeledExample]:
    """The random-shot control: ``n_shots`` items of ``pool`` drawn without replacement
    (``balanced``: the same per-label quotas as :func:`select_by_mcs`). No model calls."""
    pool = list(pool)
    if not pool:
        raise InputError("the pool of shots is empty: pass labelled examples")
    order = np.random.default_rng(seed).permutation(len(pool))
    picked = select_by_mcs(
        -np.argsort(order).astype(float),  # a random order as a score
        np.zeros(len(pool), bool),
        min(n_shots, len(pool)),
        [e.label for e in pool],
        balanced,
    )
    return [pool[i] for i in picked]


def random_word_prompts(
    shots: Sequence[LabeledExample],
    texts: Sequence[str],
    verbalizers: dict[str, str],
    *,
    template: str = DEFAULT_TEMPLATE,
    slot: str = "{input}",
    k_words: int = 2,
    seed: int = 0,
) -> list[str]:
    """The random-word control, one prompt per test text: the shots with rationales in AMPLIFY's
    template naming ``k_words`` words drawn at random from each shot's own input, re-drawn for
    every prompt (one seeded generator, in order), the test text in the slot. No model calls."""
    if k_words < 1:
        raise InputError(f"k_words must be >= 1, got {k_words}")
    rng = np.random.default_rng(seed)
    out = []
    for text in texts:
        rationales = [random_word_rationale(s.text, s.label, k_words, rng)[1] for s in shots]
        prompt = few_shot_template(shots, verbalizers, template, slot, rationales)
        out.append(fill(prompt, text, slot))
    return out


# --- AMPLIFY --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """One chosen demonstration: the example, its index in the validation list, its MCS, whether
    the LM answered it correctly with the base prompt, the rationale's words and text (None
    without rationales) and the proxy's attribution behind them."""

    example: LabeledExample
    index: int
    mcs: float
    lm_correct: bool
    words: list[str] = field(default_factory=list)
    rationale: str | None = None
    attribution: Attribution | None = None


@dataclass
class AmplifyResult:
    """What :func:`amplify` built: ``template`` (the few-shot prompt, test slot ``slot`` last),
    the ``shots``, the base prompt's evaluation on the validation set, every validation item's
    MCS, how many LM errors there were and how many shots came from the fallback (correct
    items), and the cost: ``lm_cost`` (the validation run), ``proxy_cost`` (proxy training,
    probabilities and explanations; for :class:`SelfProxy` these are LM passes too) and
    ``cost`` (their sum, seconds = wall time of the call)."""

    template: str
    slot: str
    verbalizers: dict[str, str]
    shots: list[Shot]
    validation: PromptEvaluation
    mcs: np.ndarray
    n_errors: int
    n_fallback: int
    proxy: Any
    cost: Cost
    lm_cost: Cost
    proxy_cost: Cost
    params: dict[str, Any] = field(default_factory=dict)

    def prompt(self, text: str) -> str:
        """The few-shot prompt with ``text`` in the test slot. No model calls."""
        return fill(self.template, text, self.slot)

    def without_rationales(self) -> str:
        """The same shots without rationales (the "selected shots" row of the benchmark). No
        model calls."""
        base = self.params["template"]
        return few_shot_template([s.example for s in self.shots], self.verbalizers, base, self.slot)

    def evaluate(
        self, lm: Any, examples: Sequence[LabeledExample], batch_size: int = 8
    ) -> PromptEvaluation:
        """The few-shot prompt on ``examples`` (:func:`evaluate_prompt`): one forward pass per
        example."""
        return evaluate_prompt(
            lm,
            self.template,
            list(examples),
            self.verbalizers,
            slot=self.slot,
            batch_size=batch_size,
        )


def amplify(
    lm: Any,
    train: Sequence[LabeledExample],
    validation: Sequence[LabeledExample],
    verbalizers: dict[str, str],
    *,
    proxy: Proxy | str = "linear",
    n_shots: int = 4,
    k_words: int = 2,
    template: str = DEFAULT_TEMPLATE,
    slot: str = "{input}",
    balanced: bool = False,
    rationales: bool = True,
    seed: int = 0,
    batch_size: int = 8,
) -> AmplifyResult:
    """AMPLIFY (Krishna et al., "Post Hoc Explanations of Language Models Can Improve Language
    Models", NeurIPS 2023): the LM's errors on ``validation`` with the base ``template``, ranked
    by the proxy's MCS, become ``n_shots`` demonstrations with ``k_words``-word rationales from
    the proxy's attribution toward the gold label (see the module docstring).

    ``proxy``: ``"linear"`` (a :class:`LinearProxy` trained on ``train``), ``"self"`` (a
    :class:`SelfProxy`: Self-AMPLIFY, ``train`` unused) or any :class:`Proxy`. ``balanced``
    takes the same number of shots per label; ``rationales=False`` leaves them out (the
    selection alone); ``seed`` seeds the proxy's training.

    Costs: one LM forward pass per validation item, the proxy's probabilities on the validation
    set (one pass each) and one explanation per shot (linear: one backward pass; self: the
    method's passes, LOO = words + 1)."""
    t0 = time.perf_counter()
    validation, train = list(validation), list(train)
    if not validation:
        raise InputError("the validation set is empty: AMPLIFY picks shots among its items")
    if k_words < 1:
        raise InputError(f"k_words must be >= 1, got {k_words}")
    if n_shots < 1:
        raise InputError(f"n_shots must be >= 1, got {n_shots}")
    _check_verbalizers(verbalizers)
    _check_template(template, slot)
    _check_labels(validation, verbalizers, "validation")
    labels = list(verbalizers)
    proxy_cost = Cost()
    if isinstance(proxy, str):
        if proxy == "linear":
            if not train:
                raise InputError(
                    "the train set is empty: the linear proxy is trained on it; pass labelled "
                    "examples, or proxy='self' / a trained proxy"
                )
            _check_labels(train, verbalizers, "train")
            proxy = LinearProxy.fit(train, labels, seed=seed)
            proxy_cost += proxy.cost
        elif proxy == "self":
            proxy = SelfProxy(lm, verbalizers, template, slot, batch_size=batch_size)
        else:
            raise InputError(f"unknown proxy {proxy!r}: use 'linear', 'self' or a Proxy object")
    elif not isinstance(proxy, Proxy):
        raise InputError(
            f"{type(proxy).__name__} is not a proxy: it needs labels, meter, probabilities(texts) "
            "and explain(text, label)"
        )
    if list(proxy.labels) != labels:
        raise InputError(
            f"the proxy's labels {list(proxy.labels)} differ from the verbalizers' {labels}; "
            "give them in the same order"
        )
    evaluation = evaluate_prompt(
        lm, template, validation, verbalizers, slot=slot, batch_size=batch_size
    )
    lm_correct = np.asarray(evaluation.correct, bool)
    if isinstance(proxy, SelfProxy) and (proxy.template, proxy.slot) == (template, slot):
        proxy.remember([e.text for e in validation], evaluation.logprobs)  # same passes
    with measure(proxy.meter) as spent:
        probs = np.asarray(proxy.probabilities([e.text for e in validation]), float)
        mcs = misclassification_confidence(probs, [labels.index(e.label) for e in validation])
        picked = select_by_mcs(
            mcs, lm_correct, min(n_shots, len(validation)), [e.label for e in validation], balanced
        )
        shots = []
        for i in picked:
            ex = validation[i]
            words: list[str] = []
            text, explanation = None, None
            if rationales:
                explanation = proxy.explain(ex.text, ex.label)
                words = rationale_words(explanation, k_words)
                text = rationale_text(words, ex.label)
            shots.append(Shot(ex, i, float(mcs[i]), bool(lm_correct[i]), words, text, explanation))
    proxy_cost += spent
    prompt = few_shot_template(
        [s.example for s in shots], verbalizers, template, slot, [s.rationale for s in shots]
    )
    total = evaluation.cost + proxy_cost
    total.seconds = time.perf_counter() - t0
    n_errors = int((~lm_correct).sum())
    return AmplifyResult(
        template=prompt,
        slot=slot,
        verbalizers=dict(verbalizers),
        shots=shots,
        validation=evaluation,
        mcs=mcs,
        n_errors=n_errors,
        n_fallback=sum(s.lm_correct for s in shots),
        proxy=proxy,
        cost=total,
        lm_cost=evaluation.cost,
        proxy_cost=proxy_cost,
        params={
            "n_shots": n_shots,
            "k_words": k_words,
            "template": template,
            "balanced": balanced,
            "rationales": rationales,
            "seed": seed,
            "proxy": repr(proxy),
        },
    )


# --- checks ---------------------------------------------------------------------------------


def _check_template(template: str, slot: str) -> None:
    if not isinstance(template, str) or template.count(slot) != 1:
        raise InputError(
            f"the template must contain the slot {slot!r} exactly once (where the input goes), "
            f"got {template!r}"
        )


def _check_verbalizers(verbalizers: dict[str, str]) -> None:
    if not isinstance(verbalizers, dict) or len(verbalizers) < 2:
        raise InputError(
            "verbalizers must map at least two labels to their completions, e.g. "
            "{'negative': ' negative', 'positive': ' positive'}"
        )


def _check_labels(
    examples: Sequence[LabeledExample], verbalizers: dict[str, str], what: str
) -> None:
    unknown = sorted({e.label for e in examples} - set(verbalizers))
    if unknown:
        raise InputError(
            f"{what} has labels {unknown} that are not in the verbalizers {sorted(verbalizers)}; "
            "add a verbalizer for each label or fix the examples"
        )
