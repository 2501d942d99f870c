"""Machine-text detection: was this text written by a language model? Zero-shot detectors whose
statistic is a sum of per-token terms, so every detection comes with the tokens (or sentences)
that drove it.

A :class:`MachineTextTask` (kind ``"machine_text"``) puts a text in front of a scoring ``model``
and, for the two-model detectors, a ``reference`` model (Fast-DetectGPT's sampling model,
Binoculars' performer; by default the scoring model itself). Both are
:class:`~attribkit.models.next_token.NextTokenModel` s (an HF causal LM through
:class:`~attribkit.models.next_token.HFNextToken` — a plain
:class:`~attribkit.models.lm.LanguageModel` is wrapped automatically — or the in-repo n-gram LM)
sharing one vocabulary. The methods (``attribkit methods --kind machine_text``:
``log_perplexity``, ``fast_detectgpt``, ``binoculars``, ``detectgpt``) each return an Attribution
whose ``extras["statistic"]`` is the detector statistic, oriented so that HIGHER = MORE LIKELY
MACHINE-GENERATED, and whose per-token terms (``extras["token_terms"]``, one per token of the
text) add up to it. The scores are those terms summed per unit:

- ``units="tokens"`` (default): one unit per token with its character span (tokens sharing a
  character, e.g. the bytes of one emoji, are merged into one unit and their terms added);
- ``units="sentences"``: co-authored text as sentence-level scores, the per-token terms summed
  per sentence (sentences by :meth:`~attribkit.core.units.TextUnits.sentences`, the offline
  rule-based splitter: ``.``, ``!``, ``?`` followed by whitespace and a capital, a digit or a
  quote, abbreviations and initials excepted, and every line break). A token belongs to the
  sentence in which its first non-space character lies (a whitespace-only token to the sentence
  it follows; tokens before the first sentence to the first). A sentence's score is its share of the WHOLE text's statistic (the statistic is
  computed once on the whole text), so it grows with the sentence's length;
  ``extras["unit_tokens"]`` gives the tokens per unit to normalise by.

Every token of the text is scored, the first one from the model's start state (the HF
adapter's BOS token); the detectors' reference code drops the first token instead.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.task import Task
from attribkit.core.units import TextUnits
from attribkit.models.next_token import NextTokenModel, as_next_token, same_vocabulary

__all__ = [
    "DEFAULT_METHOD",
    "MachineTextTask",
    "TokenStats",
    "align_tokens",
    "attribute_machine_text",
]

DEFAULT_METHOD = "fast_detectgpt"
_GRANULARITY = ("tokens", "sentences")


@dataclass
class TokenStats:
    """What the detectors read at each of the T tokens of one sequence.

    ``logp[t]`` = log p_t(x_t) under the scoring model; with a sampling distribution q (the
    reference model), ``mean[t]`` = Σ_v q_t(v) log p_t(v) and ``var[t]`` =
    Σ_v q_t(v) (log p_t(v) − mean[t])² (None when only ``logp`` was asked for).
    """

    logp: np.ndarray
    mean: np.ndarray | None = None
    var: np.ndarray | None = None


def _whole(text: str, i: int, j: int) -> bool:
    """Whether ``text[i:j]`` neither starts nor ends inside a run of letters or digits."""
    before = text[i - 1] if i > 0 else " "
    after = text[j] if j < len(text) else " "
    inside_left = text[i].isalnum() and before.isalnum()
    inside_right = text[j - 1].isalnum() and after.isalnum()
    return not (inside_left or inside_right)


def _locate(text: str, low: str, tok: str, pos: int, missing: int) -> tuple[int, int] | None:
    """Where token string ``tok`` lies in ``text`` at or after ``pos`` (see align_tokens)."""
    cands = [(text, tok), (text, tok.strip()), (low, tok.strip().lower())]
    cands = [(hay, c) for hay, c in cands if c]
    if missing:  # after unlocated tokens: a whole-word match skipping <= 1 word per token
        found = []
        for hay, c in cands:
            i, tries = hay.find(c, pos), 0
            while i >= 0 and tries < 64 and len(text[pos:i].split()) <= missing:
                if _whole(text, i, i + len(c)):
                    found.append((i, i + len(c)))
                    break
                i, tries = hay.find(c, i + 1), tries + 1
        if found:
            return min(found)
    for hay, c in cands:  # a match right here (after whitespace only)
        i = hay.find(c, pos)
        if i >= 0 and not text[pos:i].strip():
            return i, i + len(c)
    ahead = [(hay.find(c, pos), len(c)) for hay, c in cands]
    ahead = [(i, n) for i, n in ahead if i >= 0]
    if ahead:  # else the nearest match ahead
        i, n = min(ahead)
        return i, i + n
    return None


def align_tokens(text: str, strings: Sequence[str]) -> list[tuple[int, int]]:
    """The character span of each token string in ``text``, found left to right (for models
    without ``token_spans``). Each token is looked for as written, stripped, then
    case-insensitively: right at the current position (after whitespace only), else the nearest
    match ahead. A token found nowhere (``<unk>``, part of a byte) is *unlocated*: the token
    after it is first looked for as a whole word skipping at most one word per unlocated token,
    and the first token of a run of unlocated ones gets the non-space text between its located
    neighbours (the unknown word itself); the others get empty spans (they join the next unit).
    No model calls."""
    low = text.lower()
    spans: list[tuple[int, int]] = []
    found: list[bool] = []
    pos = missing = 0
    for tok in strings:
        span = _locate(text, low, str(tok), pos, missing)
        if span is None:
            spans.append((pos, pos))
            found.append(False)
            missing += 1
            continue
        spans.append(span)
        found.append(True)
        pos, missing = span[1], 0
    k = 0
    while k < len(spans):  # each run of unlocated tokens takes the text between its neighbours
        if found[k]:
            k += 1
            continue
        run_end = k
        while run_end < len(spans) and not found[run_end]:
            run_end += 1
        left = spans[k - 1][1] if k > 0 else 0
        right = spans[run_end][0] if run_end < len(spans) else len(text)
        gap = text[left:right]
        if gap.strip():
            s = left + len(gap) - len(gap.lstrip())
            e = left + len(gap.rstrip())
            spans[k] = (s, e)
            for j in range(k + 1, run_end):
                spans[j] = (e, e)
        k = run_end
    return spans


def _token_units(text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], TextUnits]:
    """One unit per token; tokens sharing characters are merged into one unit and empty-span
    tokens join the next unit (the last unit at the end). Returns each token's unit index."""
    index = [-1] * len(spans)
    unit_spans: list[list[int]] = []
    pending: list[int] = []
    for k, (s, e) in enumerate(spans):
        if e <= s:
            pending.append(k)
            continue
        if unit_spans and s < unit_spans[-1][1]:
            unit_spans[-1][1] = max(unit_spans[-1][1], e)
        else:
            unit_spans.append([s, e])
        for j in [*pending, k]:
            index[j] = len(unit_spans) - 1
        pending = []
    if not unit_spans:
        raise InputError("no token of the text could be located in it; check the tokenizer")
    for j in pending:
        index[j] = len(unit_spans) - 1
    return index, TextUnits(text, [(s, e) for s, e in unit_spans])


def _sentence_units(text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], TextUnits]:
    """Sentence units and each token's sentence: the one holding its first non-space
    character (a whitespace-only token: the one it follows; the first for tokens before it)."""
    units = TextUnits.sentences(text)
    starts = [u.start for u in units]
    index = []
    for s, e in spans:
        piece = text[s:e]
        anchor = s + (len(piece) - len(piece.lstrip())) if piece.strip() else s
        index.append(max(0, bisect.bisect_right(starts, anchor) - 1))
    return index, units


def _order(model: Any) -> int:
    order = getattr(model, "order", None)
    return int(order) if isinstance(order, int) and not isinstance(order, bool) else 0


class MachineTextTask(Task):
    """A text to test for machine generation (task kind ``"machine_text"``).

    Args:
        text: the text (non-empty; at least 2 tokens, and at least the n-gram ``order`` of a
            model that has one).
        model: the scoring model (a NextTokenModel, or a LanguageModel, wrapped in
            :class:`~attribkit.models.next_token.HFNextToken`).
        reference: the second model (Fast-DetectGPT's sampling model, Binoculars' performer);
            None = ``model``. Must share ``model``'s vocabulary.
        units: ``"tokens"`` (default) or ``"sentences"`` (see the module docstring).

    All model work of the methods is counted on :attr:`meter` (the task's own meter, to which
    the models' own counts are added call by call). Building the task costs no model call.
    """

    kind = "machine_text"

    def __init__(
        self,
        text: str,
        model: Any,
        reference: Any | None = None,
        units: str = "tokens",
    ) -> None:
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text is empty: give the text to test for machine generation")
        if units not in _GRANULARITY:
            raise InputError(f"units must be one of {', '.join(_GRANULARITY)}, got {units!r}")
        self.text = text
        self.model: NextTokenModel = as_next_token(model)
        self.reference: NextTokenModel = (
            self.model if reference is None or reference is model else as_next_token(reference)
        )
        same_vocabulary(self.model, self.reference)
        self.ids = [int(i) for i in self.model.encode(text)]
        need = max(2, _order(self.model), _order(self.reference))
        if len(self.ids) < need:
            why = "" if need == 2 else f" (the n-gram order of the model is {need})"
            raise InputError(
                f"the text encodes to {len(self.ids)} token(s), fewer than {need}{why}: a "
                "detector compares token probabilities along the text; give a longer text"
            )
        if min(self.ids) < 0 or max(self.ids) >= int(self.model.vocab_size):
            raise ScorerError(f"{self.model.name!r}.encode gave ids outside its vocabulary")
        spans_of = getattr(self.model, "token_spans", None)
        if callable(spans_of):
            spans = [(int(s), int(e)) for s, e in spans_of(text)]
        else:
            spans = align_tokens(text, self.model.token_strings(self.ids))
        if len(spans) != len(self.ids):
            raise ScorerError(
                f"{self.model.name!r} gave {len(spans)} token spans for {len(self.ids)} tokens"
            )
        self.token_spans = spans
        self.granularity = units
        build = _token_units if units == "tokens" else _sentence_units
        self.token_unit, self.units = build(text, spans)
        self._meter = CostMeter()

    # --- the Task contract ----------------------------------------------------------------------
    @property
    def meter(self) -> CostMeter:
        """The task's meter: every call into ``model`` or ``reference`` is added to it."""
        return self._meter

    @property
    def n_tokens(self) -> int:
        """How many tokens the text has."""
        return len(self.ids)

    @property
    def target_info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": (
                "zero-shot machine-text detection: the detector statistic (extras['statistic'], "
                "higher = more likely machine-generated) as a sum of per-token terms"
            ),
            "model": self.model.name,
            "reference": self.reference.name,
            "n_tokens": self.n_tokens,
            "units": self.granularity,
        }

    def unit_sums(self, terms: np.ndarray) -> np.ndarray:
        """Per-token values (one per token) added up per unit. No model calls."""
        out = np.zeros(len(self.units))
        np.add.at(out, np.asarray(self.token_unit), np.asarray(terms, dtype=float))
        return out

    def result(
        self, scores: np.ndarray, method: str, params: dict[str, Any], cost: Cost, **extras: Any
    ) -> Attribution:
        """The Attribution over this task's units. ``scores`` is either one per-token term per
        token (added up per unit, and kept as ``extras["token_terms"]``) or one score per unit.
        No model calls."""
        scores = np.asarray(scores, dtype=float)
        if scores.shape == (self.n_tokens,):
            extras = {"token_terms": scores.tolist(), **extras}
            scores = self.unit_sums(scores)
        counts = np.bincount(np.asarray(self.token_unit), minlength=len(self.units))
        extras = {
            **extras,
            "tokens": self.model.token_strings(self.ids),
            "token_unit": list(self.token_unit),
            "unit_tokens": counts.tolist(),
        }
        return super().result(scores, method, params, cost, **extras)

    @property
    def input_info(self) -> dict[str, Any]:
        """The text's units and their granularity (tokens or sentences)."""
        return {**self.units.to_dict(), "granularity": self.granularity}

    # --- model work -------------------------------------------------------------------------------
    def _logprobs(self, model: NextTokenModel, seqs: list[list[int]]) -> list[np.ndarray]:
        """``model.logprobs(seqs)``, checked, with the model's own count added to the task's
        meter (one pass per sequence and one batch when the model counted nothing)."""
        before = model.meter.cost.copy()
        arrays = model.logprobs(seqs)
        spent = model.meter.cost - before
        if spent.forward_passes == 0:
            spent = Cost(forward_passes=len(seqs), batches=1)
        spent.seconds = 0.0  # the task's measure() times the whole method
        self._meter.cost = self._meter.cost + spent
        if len(arrays) != len(seqs):
            raise ScorerError(
                f"{model.name!r} returned {len(arrays)} arrays for {len(seqs)} sequences"
            )
        out = []
        for s, a in zip(seqs, arrays, strict=True):
            a = np.asarray(a, dtype=np.float64)
            if a.shape != (len(s), int(model.vocab_size)):
                raise ScorerError(
                    f"{model.name!r} returned log-probabilities of shape {a.shape} for "
                    f"{len(s)} tokens; expected ({len(s)}, {model.vocab_size})"
                )
            if np.isnan(a).any():
                raise ScorerError(
                    f"the model {model.name!r} returned NaN log-probabilities; check its weights "
                    "and dtype (float16 on CPU can overflow)"
                )
            out.append(a)
        return out

    def token_stats(
        self, sequences: Sequence[Sequence[int]] | None = None, *, expected: bool = False
    ) -> list[TokenStats]:
        """:class:`TokenStats` of each sequence (default: the text's tokens): ``logp`` under
        ``model``, and with ``expected=True`` its mean and variance under ``reference``'s
        next-token distribution. Sequences run in chunks of the model's ``batch_size`` (8 if it
        has none), reduced at once (the full (T, V) arrays are never all held). Costs one
        forward pass per sequence of ``model``, plus one of ``reference`` when ``expected`` and
        it is a distinct model; counted on :attr:`meter`."""
        seqs = [self.ids] if sequences is None else [[int(i) for i in s] for s in sequences]
        if any(not s for s in seqs):
            raise InputError("a sequence to score is empty: score at least one token")
        chunk = max(1, int(getattr(self.model, "batch_size", 8)))
        two = expected and self.reference is not self.model
        out: list[TokenStats] = []
        for b in range(0, len(seqs), chunk):
            part = seqs[b : b + chunk]
            lp = self._logprobs(self.model, part)
            lq = self._logprobs(self.reference, part) if two else lp
            for s, p, q in zip(part, lp, lq, strict=True):
                out.append(self._stats(s, p, q if expected else None))
        return out

    def _stats(self, ids: list[int], logp: np.ndarray, logq: np.ndarray | None) -> TokenStats:
        t = np.arange(len(ids))
        lp = logp[t, np.asarray(ids)]
        if not np.isfinite(lp).all():
            k = int(np.flatnonzero(~np.isfinite(lp))[0])
            raise ScorerError(
                f"the model {self.model.name!r} gives token {k} probability 0 (log p = -inf); "
                "use a smoothed model"
            )
        if logq is None:
            return TokenStats(lp)
        q = np.exp(logq)
        used = q > 0
        lpz = np.where(used, logp, 0.0)
        mean = (q * lpz).sum(axis=1)
        if not np.isfinite(mean).all():
            raise ScorerError(
                f"{self.reference.name!r} puts probability on tokens that {self.model.name!r} "
                "gives probability 0, so the expected log-probability is -inf; use a smoothed "
                "scoring model"
            )
        var = (q * np.where(used, lpz - mean[:, None], 0.0) ** 2).sum(axis=1)
        return TokenStats(lp, mean, var)


def attribute_machine_text(
    text: str,
    model: Any,
    method: str = DEFAULT_METHOD,
    *,
    reference: Any | None = None,
    units: str = "tokens",
    **params: Any,
) -> Attribution:
    """Test ``text`` for machine generation with a zero-shot detector (``log_perplexity``,
    ``fast_detectgpt`` (default), ``binoculars``, ``detectgpt``) and return its Attribution:
    ``extras["statistic"]`` (higher = more likely machine-generated) and per-unit scores that
    add up to it. Costs the method's model calls (``attribkit methods --kind machine_text``)."""
    task = MachineTextTask(text, model, reference=reference, units=units)
    return task.attribute(method, **params)
