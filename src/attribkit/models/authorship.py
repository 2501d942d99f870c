"""Human-author attribution ("Authorship Attribution in the Era of LLMs", Huang, Chen and Shu,
2024: the survey's first problem, attributing a text to one of several known human authors) with
three classic stylometric models behind one scikit-learn-style interface:

- :class:`BurrowsDelta`: Burrows, "'Delta': a Measure of Stylistic Difference and a Guide to
  Likely Authorship" (2002) — z-scored relative frequencies of the most frequent words, the
  mean absolute difference to each author's centroid;
- :class:`MFWLogistic`: the same most-frequent-word frequencies, standardised, in a logistic
  regression (the function-word approach of Mosteller and Wallace, "Inference and Disputed
  Authorship: The Federalist", 1964, as a discriminative linear model);
- :class:`CharNgramSVM`: character 3–5-gram TF-IDF and a linear SVM, the strong classical
  baseline the survey lists.

Every model has ``fit(texts, authors)``, ``classes_`` (author names, sorted),
``decision_function(texts) -> (n, k)`` (higher = more likely), ``predict_proba(texts) -> (n,
k)`` (rows sum to 1) and ``predict(texts)``, so :class:`RejectingClassifier` and the open-set
evaluators wrap any of them. None calls a neural model: their cost in model calls is zero.

Word tokens are the lower-cased ``[a-z]+`` runs of a text. :func:`read_author_folders` reads the
"one folder of texts per author" layout of ``attribkit authorship --known DIR``;
:func:`load_federalist` reads the Federalist Papers from ``../shared/data/federalist``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.models.open_set import RejectingClassifier, cross_validated_threshold

__all__ = [
    "METHODS",
    "AuthorshipModel",
    "BurrowsDelta",
    "CharNgramSVM",
    "FederalistPapers",
    "MFWLogistic",
    "authorship_model",
    "federalist_path",
    "load_federalist",
    "open_set_authorship",
    "read_author_folders",
    "words",
]

_WORDS = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """The lower-cased ``[a-z]+`` runs of ``text``, the word tokens of :class:`BurrowsDelta` and
    :class:`MFWLogistic`. No model calls."""
    return _WORDS.findall(text.lower())


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_texts(texts: Any, what: str = "texts") -> list[str]:
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__"):
        raise InputError(f"{what} must be a list of strings; wrap a single text in a list")
    out = list(texts)
    if not out:
        raise InputError(f"{what} is empty: pass at least one text")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] is a {type(t).__name__}, not a string")
    return out


class AuthorshipModel:
    """The interface of the authorship models: ``fit``, ``classes_``, ``decision_function``,
    ``predict_proba``, ``predict``. Subclasses implement ``_fit`` and ``_decision``."""

    classes_: list[str]

    def fit(self, texts: Sequence[str], authors: Sequence[str]) -> AuthorshipModel:
        """Learn from ``texts`` written by ``authors`` (one name per text, at least 2 distinct)
        and return ``self``. No model calls."""
        texts = _check_texts(texts)
        if isinstance(authors, str) or len(authors) != len(texts):
            raise InputError(
                f"authors must name the author of each text: got {len(texts)} texts and "
                f"{1 if isinstance(authors, str) else len(authors)} author names"
            )
        labels = [str(a) for a in authors]
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise InputError(
                f"authorship attribution needs texts of at least 2 authors, got only "
                f"{classes[0]!r}: add texts by another author"
            )
        self.classes_ = classes
        index = {a: i for i, a in enumerate(classes)}
        self._fit(texts, np.array([index[a] for a in labels]))
        return self

    def _fit(self, texts: list[str], y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decision(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise InputError(f"this {type(self).__name__} is not fitted: call fit(texts, authors)")

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """A float64 (n, k) array of scores, one column per author of ``classes_``; higher =
        more likely. No model calls."""
        self._check_fitted()
        return np.asarray(self._decision(_check_texts(texts)), dtype=np.float64)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """A float64 (n, k) array whose rows sum to 1: softmax of :meth:`decision_function`
        unless the model says otherwise. No model calls."""
        return _softmax(self.decision_function(texts))

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most likely author of each text (argmax of :meth:`decision_function`). No model
        calls."""
        return [self.classes_[i] for i in np.argmax(self.decision_function(texts), axis=1)]


class _MFWFeatures:
    """Relative frequencies of the ``n_words`` most frequent words of a training corpus."""

    def __init__(self, n_words: int) -> None:
        if not isinstance(n_words, int) or isinstance(n_words, bool) or n_words < 1:
            raise InputError(f"n_words must be an integer >= 1, got {n_words!r}")
        self.n_words = n_words

    def fit(self, texts: list[str]) -> np.ndarray:
        toks = [self._words(t, i) for i, t in enumerate(texts)]
        total = Counter(w for ts in toks for w in ts)
        self.vocabulary = [w for w, _ in sorted(total.items(), key=lambda x: (-x[1], x[0]))][
            : self.n_words
        ]
        self._index = {w: j for j, w in enumerate(self.vocabulary)}
        return self._rows(toks)

    def transform(self, texts: list[str]) -> np.ndarray:
        return self._rows([self._words(t, i) for i, t in enumerate(texts)])

    @staticmethod
    def _words(text: str, i: int) -> list[str]:
        ws = words(text)
        if not ws:
            raise InputError(
                f"text {i} has no words ([a-z]+ runs): a most-frequent-word model needs words"
            )
        return ws

    def _rows(self, toks: list[list[str]]) -> np.ndarray:
        x = np.zeros((len(toks), len(self.vocabulary)))
        for i, ts in enumerate(toks):
            for w in ts:
                j = self._index.get(w)
                if j is not None:
                    x[i, j] += 1
            x[i] /= len(ts)
        return x


class BurrowsDelta(AuthorshipModel):
    """Burrows' Delta (Burrows, "'Delta': a Measure of Stylistic Difference and a Guide to
    Likely Authorship", 2002).

    Features: relative frequencies of the ``n_words`` most frequent words of the training
    corpus (lower-cased ``[a-z]+`` tokens; ties in alphabetical order), z-scored with the mean and
    the sample standard deviation (n − 1) over the training texts (a word with zero spread gets
    deviation 1).
    Each author's centroid is the mean z-score vector of their texts; Delta(text, author) is the
    mean absolute difference between the text's z-scores and the centroid.

    ``decision_function`` = −Delta; ``predict_proba`` = softmax(−Delta / ``temperature``).
    The default temperature 0.1 is a fixed convention, not a calibration: Delta values of
    texts of a few thousand words lie near 1 and differ between authors by a few hundredths to a
    few tenths, so 0.1 maps a 0.1 difference to odds e:1. Costs no model calls.
    """

    def __init__(self, n_words: int = 150, temperature: float = 0.1) -> None:
        self.n_words = n_words
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise InputError(f"temperature must be a number > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def _fit(self, texts: list[str], y: np.ndarray) -> None:
        self._features = _MFWFeatures(self.n_words)
        x = self._features.fit(texts)
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0, ddof=1) if len(x) > 1 else np.ones(x.shape[1])
        self.std_ = np.where(std > 0, std, 1.0)
        z = (x - self.mean_) / self.std_
        self.centroids_ = np.stack([z[y == c].mean(axis=0) for c in range(len(self.classes_))])

    @property
    def vocabulary_(self) -> list[str]:
        """The most frequent words used as features, most frequent first."""
        self._check_fitted()
        return list(self._features.vocabulary)

    def delta(self, texts: Sequence[str]) -> np.ndarray:
        """Burrows' Delta of each text to each author's centroid, a float64 (n, k) array (lower
        = closer). No model calls."""
        self._check_fitted()
        z = (self._features.transform(_check_texts(texts)) - self.mean_) / self.std_
        return np.abs(z[:, None, :] - self.centroids_[None, :, :]).mean(axis=2)

    def _decision(self, texts: list[str]) -> np.ndarray:
        return -self.delta(texts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """softmax(−Delta / temperature), a float64 (n, k) array whose rows sum to 1 (a fixed
        temperature, not calibrated probabilities). No model calls."""
        return _softmax(self.decision_function(texts) / self.temperature)


def _binary_columns(s: np.ndarray) -> np.ndarray:
    """A binary scikit-learn decision value s (> 0 = the second class) as two columns
    [−s/2, s/2]: their difference is s and their softmax is the sigmoid of s."""
    s = np.asarray(s, dtype=np.float64)
    return np.stack([-s / 2, s / 2], axis=1) if s.ndim == 1 else s


class MFWLogistic(AuthorshipModel):
    """Logistic regression on the relative frequencies of the most frequent words (function
    words, after Mosteller and Wallace, "Inference and Disputed Authorship: The Federalist",
    1964; the survey's "stylometric features + linear model").

    Features as in :class:`BurrowsDelta` (``n_words`` most frequent words of the training
    corpus); with ``standardize=True`` (default) each is z-scored with the training mean and
    deviation — without it the raw frequencies (around 0.001–0.06) are so small that the L2
    penalty at ``C = 1`` keeps the model near its intercept, which predicts the majority author.
    Then ``LogisticRegression(C=C)`` (multinomial, lbfgs). ``decision_function`` is the logits
    (for two authors the one logit s as columns [−s/2, s/2]); ``predict_proba`` is the model's
    probabilities. Costs no model calls.
    """

    def __init__(
        self, n_words: int = 150, C: float = 1.0, standardize: bool = True, max_iter: int = 5000
    ) -> None:
        self.n_words, self.C, self.standardize, self.max_iter = n_words, C, standardize, max_iter

    def _fit(self, texts: list[str], y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self._features = _MFWFeatures(self.n_words)
        x = self._features.fit(texts)
        self.mean_ = x.mean(axis=0) if self.standardize else np.zeros(x.shape[1])
        std = x.std(axis=0) if self.standardize else np.ones(x.shape[1])
        self.std_ = np.where(std > 0, std, 1.0)
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.model_.fit((x - self.mean_) / self.std_, y)

    def _x(self, texts: list[str]) -> np.ndarray:
        return (self._features.transform(texts) - self.mean_) / self.std_

    def _decision(self, texts: list[str]) -> np.ndarray:
        return _binary_columns(self.model_.decision_function(self._x(texts)))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The logistic model's probabilities, a float64 (n, k) array whose rows sum to 1. No
        model calls."""
        self._check_fitted()
        return np.asarray(self.model_.predict_proba(self._x(_check_texts(texts))), np.float64)


class CharNgramSVM(AuthorshipModel):
    """Character n-gram TF-IDF and a linear SVM (the survey's classical baseline;
    ``TfidfVectorizer(analyzer="char", ngram_range=ngram_range)`` with scikit-learn's other
    defaults, then ``LinearSVC(C=C, class_weight=class_weight)``).

    One binary SVM per author against the rest (``OneVsRestClassifier``), each binary problem
    weighted on its own: ``class_weight="balanced"`` (default) then gives the author and the
    rest equal total weight. (``LinearSVC``'s built-in one-vs-rest computes the balanced weights
    over all k authors, which leaves each author outnumbered by the rest: on the 70 Federalist
    training papers, 51 Hamilton, 14 Madison and 5 Jay, it gives 1 of the 12 disputed papers to
    Madison, against 11 this way.) The weights matter on unbalanced corpora: unweighted, the SVM
    calls every disputed paper Hamilton. ``decision_function`` is the SVM's margins (two authors: columns [−s/2,
    s/2]); ``predict_proba`` is their softmax — a monotone squashing, NOT calibrated
    probabilities. Costs no model calls.
    """

    def __init__(
        self,
        ngram_range: tuple[int, int] = (3, 5),
        class_weight: str | dict | None = "balanced",
        C: float = 1.0,
    ) -> None:
        self.ngram_range, self.class_weight, self.C = tuple(ngram_range), class_weight, C

    def _fit(self, texts: list[str], y: np.ndarray) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.svm import LinearSVC

        lo, hi = self.ngram_range
        for i, t in enumerate(texts):
            if len(t) < lo:
                raise InputError(
                    f"text {i} has {len(t)} characters, fewer than the smallest character "
                    f"n-gram ({lo}): pass longer texts"
                )
        self.vectorizer_ = TfidfVectorizer(analyzer="char", ngram_range=(lo, hi))
        x = self.vectorizer_.fit_transform(texts)
        self.model_ = OneVsRestClassifier(LinearSVC(C=self.C, class_weight=self.class_weight))
        self.model_.fit(x, y)

    def _decision(self, texts: list[str]) -> np.ndarray:
        return _binary_columns(self.model_.decision_function(self.vectorizer_.transform(texts)))


#: method name (``attribkit authorship --method``) → model class
METHODS: dict[str, type[AuthorshipModel]] = {
    "delta": BurrowsDelta,
    "mfw": MFWLogistic,
    "ngram": CharNgramSVM,
}


def authorship_model(method: str = "delta", **params: Any) -> AuthorshipModel:
    """An unfitted authorship model: ``"delta"`` → :class:`BurrowsDelta`, ``"mfw"`` →
    :class:`MFWLogistic`, ``"ngram"`` → :class:`CharNgramSVM`, built with ``params``. No model
    calls."""
    cls = METHODS.get(method)
    if cls is None:
        raise InputError(
            f"unknown authorship method {method!r}: choose one of: {', '.join(METHODS)}"
        )
    try:
        return cls(**params)
    except TypeError as e:
        raise InputError(f"bad parameters for the {method!r} authorship model: {e}") from e


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path} cannot be decoded as UTF-8 text ({e.reason} at byte {e.start}): convert it "
            "to UTF-8 or remove it"
        ) from e


def read_author_folders(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The known texts of ``path``, a folder holding one folder of ``.txt`` files per author
    (the folder's name is the author; hidden entries are skipped): ``(texts, authors)`` in
    author then file-name order. Raises InputError when the folder is missing, holds no author
    folders or fewer than 2, an author folder has no non-empty ``.txt`` file, or a file is not
    UTF-8. No model calls."""
    root = Path(path)
    if not root.exists():
        raise InputError(f"the folder of known texts {root} does not exist")
    if not root.is_dir():
        raise InputError(
            f"{root} is not a folder: pass a folder holding one folder of .txt texts per author"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(
            f"{root} holds no author folders: put each author's .txt texts in a folder named "
            "after the author"
        )
    texts: list[str] = []
    authors: list[str] = []
    for folder in folders:
        files = sorted(
            p for p in folder.iterdir() if p.suffix == ".txt" and not p.name.startswith(".")
        )
        found = [(f, _read_text(f)) for f in files if f.is_file()]
        found = [(f, t) for f, t in found if t.strip()]
        if not found:
            raise InputError(
                f"the author folder {folder.name!r} ({folder}) has no non-empty .txt text: "
                "add known texts by this author or remove the folder"
            )
        texts.extend(t for _, t in found)
        authors.extend(folder.name for _ in found)
    if len(folders) < 2:
        raise InputError(
            f"{root} holds one author folder ({folders[0].name!r}): attribution needs at least "
            "2 authors"
        )
    return texts, authors


def open_set_authorship(
    known: str | os.PathLike | tuple[Sequence[str], Sequence[str]],
    method: str = "delta",
    *,
    threshold: float | None = None,
    closed_set: bool = False,
    tpr: float = 0.95,
) -> tuple[RejectingClassifier, str]:
    """An open-set authorship model fitted on the known texts: ``attribkit authorship``'s model.

    ``known`` is a folder holding one folder of ``.txt`` texts per author
    (:func:`read_author_folders`) or ``(texts, authors)``. The ``method`` model
    (:func:`authorship_model`: ``delta``, ``mfw`` or ``ngram``) is fitted on them and wrapped in
    a :class:`~attribkit.models.open_set.RejectingClassifier` that rejects ("unknown") on the
    maximum logit for ``delta`` (−Delta to the nearest author: Delta's softmax saturates) and on
    the maximum softmax probability otherwise. Its threshold is ``threshold`` when given, none
    with ``closed_set`` (always a known author), else cross-validated on the known texts to
    accept ``tpr`` of them (:func:`~attribkit.models.open_set.cross_validated_threshold`; when
    an author has a single text that is impossible and the model is closed-set).

    Returns ``(rejecting_classifier, rule)``, ``rule`` the threshold's origin in words
    (``"given"``, ``"closed set"``, ``"cross-validated on the known texts (accepts 95 % of
    them)"`` or ``"closed set (<why no threshold>)"``). Raises InputError, before any fit, for
    an unknown method, a missing or empty folder (naming it), a threshold with ``closed_set``, a
    softmax threshold outside [0, 1] or a ``tpr`` outside (0, 1]. Cost: one fit, plus 5 fits and
    5 predictions for the cross-validated threshold; no neural model calls.
    """
    if closed_set and threshold is not None:
        raise InputError("--closed-set and --threshold contradict each other; give one")
    score = "logit" if method == "delta" else "softmax"
    authorship_model(method)  # InputError naming the methods, before reading anything
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise InputError(f"threshold must be a number, got {threshold!r}")
        if score == "softmax" and not 0.0 <= float(threshold) <= 1.0:
            raise InputError(
                f"threshold {threshold} is not a probability; give a value in [0, 1] (the lowest "
                f"maximum softmax probability the {method!r} model still accepts)"
            )
    if isinstance(tpr, bool) or not isinstance(tpr, int | float) or not 0.0 < tpr <= 1.0:
        raise InputError(f"tpr must be in (0, 1], got {tpr!r}; e.g. tpr=0.95")
    if isinstance(known, tuple) and len(known) == 2:
        texts, authors = list(known[0]), [str(a) for a in known[1]]
    elif not isinstance(known, str | os.PathLike):
        raise InputError(
            f"known must be a folder of author folders or a (texts, authors) pair, got "
            f"{type(known).__name__}"
        )
    else:
        texts, authors = read_author_folders(known)
    model = authorship_model(method).fit(texts, authors)
    rule = "given"
    if closed_set:
        rule = "closed set"
    elif threshold is None:
        try:
            threshold = cross_validated_threshold(
                lambda: authorship_model(method), texts, authors, tpr=tpr, score=score
            )
            rule = f"cross-validated on the known texts (accepts {tpr * 100:g} % of them)"
        except InputError as e:
            rule = f"closed set ({e})"
    return RejectingClassifier(model, threshold, score=score), rule


@dataclass(frozen=True)
class FederalistPapers:
    """The 85 Federalist Papers: ``papers`` (numbers 1–85), ``texts`` and ``labels`` (HAMILTON,
    MADISON, JAY, HAMILTON AND MADISON or DISPUTED), all in paper order, and the folder read."""

    papers: list[int]
    texts: list[str]
    labels: list[str]
    path: Path

    def select(self, *labels: str) -> tuple[list[int], list[str], list[str]]:
        """``(papers, texts, labels)`` of the papers whose label is one of ``labels``."""
        keep = [i for i, lab in enumerate(self.labels) if lab in labels]
        return (
            [self.papers[i] for i in keep],
            [self.texts[i] for i in keep],
            [self.labels[i] for i in keep],
        )

    @property
    def train(self) -> tuple[list[str], list[str]]:
        """``(texts, authors)`` of the 70 undisputed single-author papers (51 Hamilton, 14
        Madison, 5 Jay), the standard training set."""
        _, texts, labels = self.select("HAMILTON", "MADISON", "JAY")
        return texts, labels

    @property
    def disputed(self) -> tuple[list[int], list[str]]:
        """``(papers, texts)`` of the 12 disputed papers (49–58, 62, 63; Madison by the
        consensus since Mosteller and Wallace, 1964)."""
        papers, texts, _ = self.select("DISPUTED")
        return papers, texts


def federalist_path() -> Path:
    """Where the Federalist Papers are: ``$ATTRIBKIT_SHARED/data/federalist`` when that
    variable names the shared folder, else the first ``shared/data/federalist`` found in the
    current folder or one of its parents (``<repo>/../shared`` from a checkout), else beside the
    package's source tree. Raises InputError saying where it looked when none exists."""
    tried: list[Path] = []
    env = os.environ.get("ATTRIBKIT_SHARED")
    if env:
        tried += [Path(env) / "data" / "federalist", Path(env) / "federalist", Path(env)]
    here = Path.cwd().resolve()
    tried += [p / "shared" / "data" / "federalist" for p in (here, *here.parents)]
    src = Path(__file__).resolve()
    tried += [p / "shared" / "data" / "federalist" for p in src.parents]
    for p in tried:
        if (p / "labels.csv").is_file():
            return p
    raise InputError(
        "the Federalist Papers were not found (looked for shared/data/federalist/labels.csv in "
        f"the current folder, its parents and beside {src.parents[3]}): set ATTRIBKIT_SHARED to "
        "the shared folder or pass the path"
    )


def load_federalist(path: str | os.PathLike | None = None) -> FederalistPapers:
    """The Federalist Papers from ``path`` (default :func:`federalist_path`): ``fed_NN.txt``
    files and ``labels.csv`` (columns ``paper``, ``author``). Raises InputError when the folder,
    the labels or a paper's file is missing. No model calls."""
    root = Path(path) if path is not None else federalist_path()
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        raise InputError(f"{root} has no labels.csv: not a Federalist Papers folder")
    with labels_csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"paper", "author"} <= set(rows[0]):
        raise InputError(f"{labels_csv} must have the columns paper and author")
    papers, texts, labels = [], [], []
    for row in sorted(rows, key=lambda r: int(r["paper"])):
        number = int(row["paper"])
        file = root / f"fed_{number:02d}.txt"
        if not file.is_file():
            raise InputError(f"{file} is missing (listed in {labels_csv})")
        papers.append(number)
        texts.append(_read_text(file))
        labels.append(row["author"].strip())
    return FederalistPapers(papers, texts, labels, root)
