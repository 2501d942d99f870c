"""An in-repo word or character n-gram language model that serves the full next-token
distribution: interpolated Kneser-Ney (Kneser and Ney, "Improved backing-off for m-gram language
modeling", 1995; the interpolated form of Chen and Goodman, "An Empirical Study of Smoothing
Techniques for Language Modeling", 1998) or interpolated absolute discounting (Ney, Essen and
Kneser, "On structuring probabilistic dependences in stochastic language modelling", 1994).

:class:`NGramLM` implements the next-token model protocol by duck typing (``name``,
``vocab_size``, ``meter``, ``encode``, ``token_strings``, ``logprobs``), so the machine-text
detectors run on it as on a Hugging Face causal LM, and it samples texts (forgeries for
:func:`attribkit.evaluation.impersonation.impersonation_report`, machine text for detectors).

Tokens. ``level="word"``: the lower-cased text split by the regular expression
``[a-z]+|[0-9]+|[^\\sa-z0-9]`` (runs of letters, runs of digits, and every other non-space
character on its own), so "Don't stop." is ``don ' t stop .``. ``level="char"``: every character
of the text as it is (case kept, whitespace included). The vocabulary is ``<unk>`` (id 0), the
end-of-text token ``</s>`` (id 1), then the training tokens seen at least ``min_count`` times,
most frequent first (ties in code-point order); any other token is encoded as ``<unk>``. The start
state is ``order - 1`` start symbols that are context only, never predicted (not in the
vocabulary). Every next-token distribution is a proper distribution over the whole vocabulary:
it sums to 1 and no token, ``<unk>`` and ``</s>`` included, has probability 0 (the lowest order
interpolates with the uniform distribution over the vocabulary).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError

__all__ = ["END", "UNK", "NGramLM", "detokenize_words", "word_tokens"]

UNK = "<unk>"
END = "</s>"
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")
_NO_SPACE_BEFORE = set(".,;:!?)]}%'")
_NO_SPACE_AFTER = set("([{$'")
_SMOOTHING = ("kneser-ney", "absolute")
#: the context-distribution cache holds at most this many floats (80 MB)
_CACHE_FLOATS = 10_000_000


def word_tokens(text: str) -> list[str]:
    """The word-level tokens of ``text``: lower-cased ``[a-z]+``, ``[0-9]+`` runs and every
    other non-space character on its own. No model calls."""
    return _WORD.findall(text.lower())


def detokenize_words(tokens: Sequence[str]) -> str:
    """Text whose :func:`word_tokens` are ``tokens`` (when no token is ``<unk>``/``</s>``):
    tokens joined by single spaces, except none before closing punctuation (``. , ; : ! ? ) ]
    } % '``) or after opening punctuation (``( [ { $ '``) — cosmetic only, since a
    punctuation token is one character and never merges with its neighbours; two letter or digit
    runs are always separated. No model calls."""
    out: list[str] = []
    prev = ""
    for tok in tokens:
        if out and (
            (tok[0].isalnum() and prev[-1:].isalnum())
            or not (tok in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER)
        ):
            out.append(" ")
        out.append(tok)
        prev = tok
    return "".join(out)


class _Level:
    """The counts of one order: for each context (a tuple of ids), the slice of ``ids`` seen
    after it with their discounted probabilities ``(c - D) / total`` in ``disc``, and the
    context's back-off weight ``D * types / total``."""

    def __init__(self, rows: np.ndarray, counts: np.ndarray, discount: float) -> None:
        self.discount = discount
        width = rows.shape[1] - 1
        if width == 0:
            starts = np.array([0])
        else:
            ctx = rows[:, :width]
            change = np.any(ctx[1:] != ctx[:-1], axis=1)
            starts = np.concatenate([[0], np.flatnonzero(change) + 1])
        ends = np.append(starts[1:], len(rows))
        c = counts.astype(np.float64)
        totals = np.add.reduceat(c, starts)
        self.ids = rows[:, width].astype(np.intp)
        self.disc = (c - discount) / np.repeat(totals, ends - starts)
        backoff = discount * (ends - starts) / totals
        keys = map(tuple, rows[starts, :width].tolist())
        self.table: dict[tuple[int, ...], tuple[int, int, float]] = dict(
            zip(
                keys,
                zip(starts.tolist(), ends.tolist(), backoff.tolist(), strict=True),
                strict=True,
            )
        )


def _unique_rows(rows: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_counts=True)`` for rows of ids in [0, base): through one
    int64 key per row when base ** width fits (much faster), row by row otherwise."""
    width = rows.shape[1]
    if width == 0 or base**width >= 2**62:
        return np.unique(rows, axis=0, return_counts=True)
    key = np.zeros(len(rows), dtype=np.int64)
    for j in range(width):
        key = key * base + rows[:, j]
    uniq, counts = np.unique(key, return_counts=True)
    out = np.empty((len(uniq), width), dtype=np.int64)
    for j in range(width - 1, -1, -1):
        out[:, j] = uniq % base
        uniq = uniq // base
    return out, counts


def _discount(counts: np.ndarray) -> float:
    """Ney's estimate D = n1 / (n1 + 2 n2) from the counts of counts, kept in [0.05, 0.95]
    (0.5 when nothing occurs once or twice)."""
    n1 = int(np.sum(counts == 1))
    n2 = int(np.sum(counts == 2))
    if n1 + n2 == 0:
        return 0.5
    return float(min(max(n1 / (n1 + 2 * n2), 0.05), 0.95))


class NGramLM:
    """A word or character n-gram language model with the full next-token distribution
    (interpolated Kneser-Ney, Kneser and Ney 1995 / Chen and Goodman 1998, by default).

    Args:
        order: n, the number of tokens in an n-gram (context of ``order - 1`` tokens); >= 1.
        level: ``"word"`` or ``"char"`` (see the module docstring for the tokenisation).
        smoothing: ``"kneser-ney"`` (interpolated; lower orders use continuation counts, the
            number of distinct tokens seen before an n-gram) or ``"absolute"`` (interpolated
            absolute discounting: raw counts at every order). Both discount every seen count by
            D_k (one per order) and give the mass removed to the next lower order, down to the
            uniform distribution over the vocabulary.
        discount: D for every order, in (0, 1]; ``None`` (default) estimates one per order as
            n1 / (n1 + 2 n2) (Ney et al. 1994), kept in [0.05, 0.95].
        min_count: training tokens seen fewer times become ``<unk>`` (which then has counts).
        name: the model's name (default ``"ngram-<level>-<order>"``).

    Costs: :meth:`logprobs` counts one forward pass per sequence scored (``meter.cost``), one
    batch per call; :meth:`sample` one forward pass per sample and generated token, one batch
    per step, and ``generated_tokens``. Fitting counts nothing.
    """

    def __init__(
        self,
        order: int = 3,
        level: str = "word",
        smoothing: str = "kneser-ney",
        *,
        discount: float | None = None,
        min_count: int = 1,
        name: str | None = None,
    ) -> None:
        if not isinstance(order, int) or isinstance(order, bool) or order < 1:
            raise InputError(f"order (n of the n-grams) must be an integer >= 1, got {order!r}")
        if level not in ("word", "char"):
            raise InputError(f"level must be 'word' or 'char', got {level!r}")
        if smoothing not in _SMOOTHING:
            raise InputError(f"smoothing must be one of {', '.join(_SMOOTHING)}, got {smoothing!r}")
        if discount is not None and not (isinstance(discount, (int, float)) and 0 < discount <= 1):
            raise InputError(f"discount must be in (0, 1] or None (estimated), got {discount!r}")
        if not isinstance(min_count, int) or min_count < 1:
            raise InputError(f"min_count must be an integer >= 1, got {min_count!r}")
        self.order, self.level, self.smoothing = order, level, smoothing
        self.discount, self.min_count = discount, min_count
        self.name = name or f"ngram-{level}-{order}"
        self.meter = CostMeter()
        self.vocab: list[str] = []
        self._index: dict[str, int] = {}
        self._levels: list[_Level] = []
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()

    # ----------------------------------------------------------------- protocol
    @property
    def cost(self) -> Cost:
        """What this model has spent (``meter.cost``)."""
        return self.meter.cost

    @property
    def vocab_size(self) -> int:
        """V: ``<unk>``, ``</s>`` and the training tokens (0 before :meth:`fit`)."""
        return len(self.vocab)

    @property
    def unk_id(self) -> int:
        """The id of ``<unk>`` (0)."""
        return 0

    @property
    def end_id(self) -> int:
        """The id of the end-of-text token ``</s>`` (1)."""
        return 1

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return bool(self._levels)

    def __repr__(self) -> str:
        return (
            f"NGramLM(order={self.order}, level={self.level!r}, smoothing={self.smoothing!r}, "
            f"vocab_size={self.vocab_size})"
        )

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``text`` at this model's level (before the vocabulary lookup).
        No model calls."""
        if not isinstance(text, str):
            raise InputError(f"a text must be a string, got {type(text).__name__}")
        return word_tokens(text) if self.level == "word" else list(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no start or end token); unknown tokens get the ``<unk>`` id.
        No model calls."""
        self._check_fitted()
        return [self._index.get(t, 0) for t in self.tokenize(text)]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character span in ``text`` of each token of ``encode(text)``. No
        model calls."""
        if self.level == "char":
            return [(i, i + 1) for i in range(len(self.tokenize(text)))]
        self.tokenize(text)  # type check
        origin: list[int] = []
        low = []
        for i, ch in enumerate(text):
            lc = ch.lower()
            low.append(lc)
            origin.extend([i] * len(lc))
        return [(origin[m.start()], origin[m.end() - 1] + 1) for m in _WORD.finditer("".join(low))]

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """The display text of each id: the word or character, ``<unk>``, ``</s>``. No model
        calls."""
        self._check_fitted()
        return [self.vocab[i] for i in self._check_ids(ids)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids (``<unk>`` and ``</s>`` written as such); for ids without them,
        ``encode(decode(ids)) == ids``. No model calls."""
        toks = self.token_strings(ids)
        return detokenize_words(toks) if self.level == "word" else "".join(toks)

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """For each sequence of T ids a float64 (T, V) array whose row t is log p(next token |
        ids[:t]) over the whole vocabulary; row 0 is conditioned on the start state. Costs one
        forward pass per sequence (one batch per call); context distributions are cached."""
        self._check_fitted()
        if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
            raise InputError("logprobs takes a list of id sequences (use encode(text) for each)")
        checked = []
        for i, seq in enumerate(sequences):
            ids = self._check_ids(seq)
            if not ids:
                raise InputError(f"sequence {i} is empty: there is no token to score")
            checked.append(ids)
        out = []
        with self.meter.timed():
            for ids in checked:
                rows = np.empty((len(ids), self.vocab_size))
                for t, ctx in enumerate(self._contexts(ids)):
                    np.log(self._dist(ctx), out=rows[t])
                out.append(rows)
            self.meter.cost.forward_passes += len(checked)
            self.meter.cost.batches += 1 if checked else 0
        return out

    # ----------------------------------------------------------------- training
    def fit(self, texts: Sequence[str]) -> NGramLM:
        """Count the n-grams of ``texts`` (each padded with ``order - 1`` start symbols and
        ended by ``</s>``) and return ``self``. No model calls. Raises InputError for an empty
        corpus or when every text is shorter than the n-gram order."""
        if isinstance(texts, str) or not hasattr(texts, "__len__"):
            raise InputError("fit takes a list of texts, not a single string")
        if len(texts) == 0:
            raise InputError("the training corpus is empty: pass at least one text")
        toks = [self.tokenize(t) for t in texts]
        if max(len(t) for t in toks) < self.order:
            raise InputError(
                f"every training text is shorter than the n-gram order ({self.order} "
                f"{self.level} tokens; the longest has {max(len(t) for t in toks)}): pass longer "
                "texts or lower the order"
            )
        freq: dict[str, int] = {}
        for seq in toks:
            for t in seq:
                freq[t] = freq.get(t, 0) + 1
        kept = sorted(
            (t for t, c in freq.items() if c >= self.min_count), key=lambda t: (-freq[t], t)
        )
        self.vocab = [UNK, END, *kept]
        self._index = {t: i for i, t in enumerate(self.vocab)}
        self._cache.clear()
        start = len(self.vocab)  # the start symbol: context only, never predicted
        n = self.order
        windows = []
        for seq in toks:
            padded = np.array(
                [start] * (n - 1) + [self._index.get(t, 0) for t in seq] + [1], dtype=np.int64
            )
            windows.append(np.lib.stride_tricks.sliding_window_view(padded, n))
        grams = np.concatenate(windows)  # every n-gram ending at a predicted position
        base = start + 1
        types, counts = _unique_rows(grams, base)
        levels: list[_Level] = [None] * n  # type: ignore[list-item]
        levels[n - 1] = _Level(types, counts, self._d(counts))
        for k in range(n - 1, 0, -1):  # k-grams: the last k columns
            if self.smoothing == "kneser-ney":
                # continuation counts: the distinct tokens seen before each k-gram, read from
                # the (k + 1)-gram types (every k-gram ending at a predicted position has one)
                types, counts = _unique_rows(types[:, 1:], base)
            else:
                types, counts = _unique_rows(grams[:, n - k :], base)
            levels[k - 1] = _Level(types, counts, self._d(counts))
        self._levels = levels
        return self

    def _d(self, counts: np.ndarray) -> float:
        return float(self.discount) if self.discount is not None else _discount(counts)

    # ----------------------------------------------------------------- distributions
    def _check_fitted(self) -> None:
        if not self._levels:
            raise InputError("this NGramLM is not fitted: call fit(texts) first")

    def _check_ids(self, ids: Any) -> list[int]:
        if isinstance(ids, (str, bytes)):
            raise InputError("pass token ids (encode(text)), not a string")
        try:
            out = [int(i) for i in ids]
        except (TypeError, ValueError) as e:
            raise InputError(f"token ids must be integers: {e}") from e
        bad = [i for i in out if not 0 <= i < self.vocab_size]
        if bad:
            raise InputError(f"token ids out of range [0, {self.vocab_size}): {bad[:5]}")
        return out

    def _contexts(self, ids: Sequence[int]) -> list[tuple[int, ...]]:
        """The (order - 1)-token context before each position of ``ids``."""
        w = self.order - 1
        padded = [self.vocab_size] * w + list(ids)
        return [tuple(padded[t : t + w]) for t in range(len(ids))]

    def _dist(self, ctx: tuple[int, ...]) -> np.ndarray:
        """p(. | ctx) over the vocabulary for a context of ``order - 1`` ids (cached; the
        returned array must not be modified)."""
        hit = self._cache.get(ctx)
        if hit is not None:
            self._cache.move_to_end(ctx)
            return hit
        k = len(ctx)  # the level of this context is k + 1
        lower = self._dist(ctx[1:]) if k else np.full(self.vocab_size, 1.0 / self.vocab_size)
        level = self._levels[k]
        entry = level.table.get(ctx)
        if entry is None:
            p = lower
        else:
            a, b, backoff = entry
            p = lower * backoff
            p[level.ids[a:b]] += level.disc[a:b]
        self._cache[ctx] = p
        if len(self._cache) > max(64, _CACHE_FLOATS // max(self.vocab_size, 1)):
            self._cache.popitem(last=False)
        return p

    def next_token_distribution(self, text: str = "") -> np.ndarray:
        """p(next token | the tokens of ``text``) over the vocabulary, a float64 (V,) array that
        sums to 1 with no zeros (the start state for ``""``). No forward pass is counted."""
        self._check_fitted()
        ids = self.encode(text)
        return self._dist(self._contexts([*ids, 0])[-1]).copy()

    def token_logprobs(self, text: str, *, end: bool = False) -> np.ndarray:
        """log p of each token of ``text`` given the tokens before it (from the start state),
        and of ``</s>`` after the last one when ``end=True``: a float64 (T,) or (T + 1,) array.
        Raises InputError when the text has fewer tokens than the n-gram order. Costs one
        forward pass."""
        ids = self.encode(text)
        if len(ids) < self.order:
            raise InputError(
                f"the text has {len(ids)} {self.level} tokens, fewer than the n-gram order "
                f"({self.order}): score a longer text or use a lower-order model"
            )
        seq = [*ids, self.end_id] if end else ids
        rows = self.logprobs([seq])[0]
        return rows[np.arange(len(seq)), seq]

    def perplexity(self, text: str) -> float:
        """exp of the mean negative log-probability of the text's tokens and its end token.
        Raises InputError for a text shorter than the n-gram order. Costs one forward pass."""
        return float(np.exp(-np.mean(self.token_logprobs(text, end=True))))

    # ----------------------------------------------------------------- sampling
    def sample(
        self,
        n: int,
        length: int,
        temperature: float = 1.0,
        seed: int | None = 0,
        prompt: str | None = None,
        *,
        stop_at_end: bool = False,
    ) -> list[str]:
        """``n`` sampled continuations of ``prompt`` (the start state when None), each of
        ``length`` tokens, returned as text without the prompt.

        Sampling draws from p ** (1 / temperature), renormalised (the log-probabilities scaled
        by 1 / temperature); ``temperature=0`` is greedy. ``<unk>`` is never drawn; ``</s>`` is
        not drawn either unless ``stop_at_end=True``, when it ends that sample early. Word
        samples are detokenised by :func:`detokenize_words`, so ``encode(sample)`` gives back the
        sampled ids. The same ``seed`` gives the same list (``np.random.default_rng(seed)``).
        Costs one forward pass per sample and step, one batch per step, and ``n x length``
        generated tokens at most (counted as generated)."""
        self._check_fitted()
        for arg, v in (("n", n), ("length", length)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{arg} must be an integer >= 1, got {v!r}")
        if not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature >= 0
        ):
            raise InputError(
                f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}"
            )
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise InputError(f"seed must be an integer or None, got {seed!r}")
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"prompt must be a string or None, got {type(prompt).__name__}")
        rng = np.random.default_rng(seed)
        banned = [self.unk_id] if stop_at_end else [self.unk_id, self.end_id]
        if self.vocab_size <= len(banned):
            raise InputError("the vocabulary has no token to sample: fit on a non-empty corpus")
        w = self.order - 1
        start = [self.vocab_size] * w + (self.encode(prompt) if prompt else [])
        seqs: list[list[int]] = [list(start) for _ in range(n)]
        done = [False] * n
        new: list[list[int]] = [[] for _ in range(n)]
        with self.meter.timed():
            for _ in range(length):
                live = [i for i in range(n) if not done[i]]
                if not live:
                    break
                draws = rng.random(len(live))
                for j, i in enumerate(live):
                    ctx = tuple(seqs[i][len(seqs[i]) - w :]) if w else ()
                    p = self._dist(ctx).copy()
                    p[banned] = 0.0
                    if temperature == 0:
                        tok = int(np.argmax(p))
                    else:
                        if temperature != 1:
                            lp = np.log(p, where=p > 0, out=np.full_like(p, -np.inf))
                            lp /= temperature
                            p = np.exp(lp - lp.max())
                        c = np.cumsum(p)
                        tok = int(
                            min(np.searchsorted(c, draws[j] * c[-1], side="right"), len(c) - 1)
                        )
                    if tok == self.end_id:
                        done[i] = True
                    else:
                        seqs[i].append(tok)
                        new[i].append(tok)
                self.meter.cost.forward_passes += len(live)
                self.meter.cost.batches += 1
                self.meter.cost.generated_tokens += len(live)
        return [self.decode(ids) for ids in new]
