"""Open-set source decisions: a known source, or "unknown" when the classifier is not sure enough.

A :class:`RejectingClassifier` wraps any fitted scikit-learn style classifier and rejects an input
whose confidence (maximum softmax probability, or maximum logit) falls below a threshold chosen on
validation data of the known sources; a :class:`Hierarchy` of them first decides the family (for
audio: the speech-synthesiser family) and, only if the family is accepted, the model within it.
This follows LAVA (Layered Architecture for Voice Attribution: "Towards Reliable Audio Deepfake
Attribution and Model Recognition: A Multi-Level Autoencoder-Based Framework", 2025); max-softmax rejection itself is the baseline of Hendrycks & Gimpel, "A
Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural Networks", 2017.

No attribkit model calls are counted here: the only computation is the wrapped classifier's
``predict_proba`` / ``decision_function`` on the rows you pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from attribkit.core.errors import InputError, ScorerError

UNKNOWN = "unknown"
Score = Literal["softmax", "logit"]

__all__ = [
    "UNKNOWN",
    "Hierarchy",
    "RejectingClassifier",
    "SourceDecision",
    "cross_validated_threshold",
    "threshold_at_tpr",
]


def threshold_at_tpr(confidence: np.ndarray, tpr: float = 0.95) -> float:
    """The rejection threshold that accepts at least ``tpr`` of the given known-source confidences.

    Convention (used everywhere in attribkit's open-set code): an input is *accepted* when its
    confidence is ``>= threshold``. With ``m`` known confidences sorted from high to low, the
    threshold is the ``ceil(tpr · m)``-th largest one, i.e. the largest threshold whose true-
    positive rate on these knowns is at least ``tpr`` (ties at the threshold are all accepted, so
    the achieved rate can be higher). This is the first point of scikit-learn's
    ``roc_curve(..., drop_intermediate=False)`` with ``tpr >= tpr``. Returns a float; no model
    calls (Hendrycks & Gimpel, 2017, max-softmax baseline; the 95 % TPR operating point of
    Liang et al., "Enhancing the Reliability of Out-of-distribution Image Detection", 2018).
    """
    conf = np.asarray(confidence, dtype=float).ravel()
    if conf.size == 0:
        raise InputError("no known-source confidences to choose a threshold from; pass some knowns")
    if not np.all(np.isfinite(conf)):
        raise InputError("confidences contain NaN or infinite values; fix the scores first")
    if not (isinstance(tpr, int | float) and 0.0 < float(tpr) <= 1.0):
        raise InputError(f"tpr must be in (0, 1], got {tpr!r}; e.g. tpr=0.95")
    k = max(1, math.ceil(float(tpr) * conf.size - 1e-9))  # 1e-9: 0.95 * 20 must give 19, not 20
    return float(np.sort(conf)[::-1][k - 1])


@dataclass
class SourceDecision:
    """One open-set decision: the distribution over the known sources, the rejection score, the
    threshold it was compared with, and the prediction (a source name, or ``"unknown"``).

    ``proba`` sums to 1 over ``sources`` (the known sources only; "unknown" is the decision to
    reject, not a class). ``confidence`` is the rejection score (max softmax probability or max
    logit, see ``score``); ``prediction`` is the argmax source when ``confidence >= threshold``,
    else ``"unknown"``. For a :class:`Hierarchy`, ``prediction`` is ``"family/model"``,
    ``"family/unknown"`` (family accepted, model rejected), ``"family"`` (a family without a
    model-level classifier) or ``"unknown"``, and ``level_path`` holds the decision of each level
    consulted (level 1 first).
    """

    sources: list[str]
    proba: list[float]
    confidence: float
    threshold: float
    prediction: str
    score: str = "softmax"
    level_path: list[SourceDecision] | None = field(default=None)

    @property
    def is_unknown(self) -> bool:
        """True when no known source was accepted at the finest level consulted: the prediction
        is ``"unknown"`` or ends with ``"/unknown"`` (a known family, an unknown model)."""
        return self.prediction == UNKNOWN or self.prediction.endswith("/" + UNKNOWN)

    @property
    def top_source(self) -> str:
        """The most probable known source, whether or not it was accepted."""
        return self.sources[int(np.argmax(self.proba))]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the decision (``level_path`` as nested dicts or None)."""
        return {
            "sources": [str(s) for s in self.sources],
            "proba": [float(p) for p in self.proba],
            "confidence": float(self.confidence),
            "threshold": float(self.threshold),
            "prediction": str(self.prediction),
            "score": str(self.score),
            "is_unknown": self.is_unknown,
            "level_path": None
            if self.level_path is None
            else [d.to_dict() for d in self.level_path],
        }


class RejectingClassifier:
    """A fitted classifier plus a rejection threshold ``tau`` (LAVA: "Towards Reliable Audio
    Deepfake Attribution and Model Recognition: A Multi-Level Autoencoder-Based Framework", 2025;
    max-softmax rejection of Hendrycks & Gimpel, 2017).

    ``base`` is any *fitted* object with ``classes_`` and ``predict_proba(X)`` (scikit-learn
    style). ``score="softmax"`` rejects on the maximum of ``predict_proba``; ``score="logit"`` on
    the maximum of ``base.decision_scores(X)`` if the base has that method, else of
    ``base.decision_function(X)`` (a binary classifier's single column ``s`` is read as the two
    logits ``[-s/2, s/2]``, whose maximum ``|s|/2`` ranks inputs as max-softmax does). An input is
    accepted when its confidence is ``>= tau``. ``tau`` is given here or chosen by
    :meth:`fit_threshold`. No attribkit model calls: only the base's own predict methods run.
    """

    def __init__(self, base: Any, tau: float | None = None, *, score: Score = "softmax") -> None:
        if score not in ("softmax", "logit"):
            raise InputError(f"score must be 'softmax' or 'logit', got {score!r}")
        if not hasattr(base, "predict_proba"):
            raise InputError(
                f"{type(base).__name__} has no predict_proba; wrap a scikit-learn style classifier "
                "(e.g. LogisticRegression) or a Pipeline ending in one"
            )
        if score == "logit" and not (
            hasattr(base, "decision_scores") or hasattr(base, "decision_function")
        ):
            raise InputError(
                f"score='logit' needs base.decision_function or base.decision_scores; "
                f"{type(base).__name__} has neither: use score='softmax'"
            )
        if tau is not None and not (isinstance(tau, int | float) and math.isfinite(tau)):
            raise InputError(f"tau must be a finite number or None, got {tau!r}")
        self.base = base
        self.tau = None if tau is None else float(tau)
        self.score = score

    # -- the base classifier -------------------------------------------------------------
    @property
    def classes_(self) -> np.ndarray:
        """The known sources (the base classifier's ``classes_``)."""
        try:
            classes = self.base.classes_
        except AttributeError:
            classes = None
        if classes is None:
            raise InputError(
                f"the base classifier {type(self.base).__name__} is not fitted (no classes_); "
                "fit it on the known sources first"
            )
        return np.asarray(classes)

    @property
    def sources(self) -> list[str]:
        """The known sources as strings."""
        return [str(c) for c in self.classes_]

    def _proba(self, X: Any) -> np.ndarray:
        k = len(self.classes_)
        p = np.asarray(self.base.predict_proba(X), dtype=float)
        if p.ndim != 2 or p.shape[1] != k:
            raise ScorerError(
                f"predict_proba returned shape {p.shape}, expected (n, {k}) for {k} classes"
            )
        if not np.all(np.isfinite(p)):
            raise ScorerError("predict_proba returned NaN or infinite values; check the inputs")
        return p

    def _logits(self, X: Any) -> np.ndarray:
        k = len(self.classes_)
        fn = getattr(self.base, "decision_scores", None) or self.base.decision_function
        z = np.asarray(fn(X), dtype=float)
        if z.ndim == 1 and k == 2:
            z = np.stack([-z / 2, z / 2], axis=1)
        if z.ndim != 2 or z.shape[1] != k:
            raise ScorerError(f"decision scores have shape {z.shape}, expected (n, {k})")
        if not np.all(np.isfinite(z)):
            raise ScorerError("decision scores contain NaN or infinite values; check the inputs")
        return z

    def _proba_and_confidence(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.score == "softmax":
            p = self._proba(X)
            return p, p.max(axis=1)
        return self._proba(X), self._logits(X).max(axis=1)

    def confidence(self, X: Any) -> np.ndarray:
        """The rejection score of each row (max softmax probability or max logit), shape (n,).
        Costs one ``predict_proba`` (or ``decision_function``) call of the base."""
        self.classes_  # noqa: B018 -- raises a clear error when the base is not fitted
        return self._proba_and_confidence(X)[1]

    # -- the threshold -----------------------------------------------------------------
    def fit_threshold(
        self, X_val: Any, y_val: Sequence[Any] | np.ndarray | None = None, tpr: float = 0.95
    ) -> RejectingClassifier:
        """Choose ``tau`` so that at least ``tpr`` of the validation knowns are accepted, store it
        and return ``self``.

        ``X_val`` holds validation inputs of the known sources; if ``y_val`` is given, only rows
        whose label is one of ``classes_`` are used (rows of other sources are left out, so a
        validation set with unknowns can be passed as is). ``tau`` is the ``ceil(tpr · m)``-th
        largest confidence of the ``m`` knowns (:func:`threshold_at_tpr`; accept when
        ``confidence >= tau``). Costs one predict call of the base on ``X_val``.
        """
        classes = self.classes_
        if y_val is not None:
            y = np.asarray(y_val)
            if len(y) != _n_rows(X_val):
                raise InputError(
                    f"y_val has {len(y)} labels but X_val has {_n_rows(X_val)} rows; "
                    "pass one label per row"
                )
            keep = np.isin(y, classes)
            if not keep.any():
                raise InputError(
                    f"no row of y_val is a known source {self.sources}; the threshold is chosen "
                    "on validation samples of the known sources"
                )
            X_val = _take(X_val, np.flatnonzero(keep))
        if _n_rows(X_val) == 0:
            raise InputError("X_val is empty; pass validation samples of the known sources")
        self.tau = threshold_at_tpr(self.confidence(X_val), tpr)
        return self

    def _check_tau(self) -> float:
        if self.tau is None:
            raise InputError(
                "the rejection threshold tau is not set: pass tau= or call "
                "fit_threshold(X_val, y_val, tpr=0.95) first"
            )
        return self.tau

    # -- decisions ---------------------------------------------------------------------
    def decide(self, X: Any) -> list[SourceDecision]:
        """One :class:`SourceDecision` per row: the known-source distribution, the confidence,
        ``tau`` and the prediction (argmax source if ``confidence >= tau``, else "unknown").
        Costs one or two predict calls of the base on ``X``."""
        sources = self.sources
        tau = self._check_tau()
        p, conf = self._proba_and_confidence(X)
        out = []
        for row, c in zip(p, conf, strict=True):
            pred = sources[int(np.argmax(row))] if c >= tau else UNKNOWN
            out.append(
                SourceDecision(
                    sources=list(sources),
                    proba=[float(v) for v in row],
                    confidence=float(c),
                    threshold=tau,
                    prediction=pred,
                    score=self.score,
                )
            )
        return out

    def predict(self, X: Any) -> list[Any]:
        """The predicted class label of each row (an element of ``classes_``), or the string
        ``"unknown"`` where the row is rejected. Costs what :meth:`decide` costs."""
        classes = self.classes_
        tau = self._check_tau()
        p, conf = self._proba_and_confidence(X)
        idx = p.argmax(axis=1)
        return [classes[i].item() if c >= tau else UNKNOWN for i, c in zip(idx, conf, strict=True)]

    def __repr__(self) -> str:
        return (
            f"RejectingClassifier({type(self.base).__name__}, tau={self.tau}, score={self.score!r})"
        )


def _n_rows(X: Any) -> int:
    return int(X.shape[0]) if hasattr(X, "shape") else len(X)


def _take(X: Any, idx: np.ndarray) -> Any:
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    if hasattr(X, "shape"):
        return X[idx]
    return [X[i] for i in idx]


def cross_validated_threshold(
    make_model: Callable[[], Any],
    X: Any,
    y: Sequence[Any] | np.ndarray,
    *,
    tpr: float = 0.95,
    folds: int = 5,
    seed: int = 0,
    score: Score = "softmax",
) -> float:
    """A rejection threshold chosen without validation data: out-of-fold confidences of the
    known samples themselves.

    Stratified ``folds``-fold cross-validation (fewer folds when the smallest source has fewer
    samples): each fold fits ``make_model()`` (an unfitted scikit-learn style classifier) on the
    other folds and scores its held-out samples; the threshold accepts ``tpr`` of all held-out
    known samples (:func:`threshold_at_tpr`). Returns a float; costs ``folds`` fits and one
    predict call per fold. Raises InputError when a source has fewer than 2 samples.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(y)
    if len(labels) != _n_rows(X):
        raise InputError(f"{len(labels)} labels for {_n_rows(X)} samples; give one label each")
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2:
        raise InputError("a threshold needs samples of at least 2 known sources")
    if counts.min() < 2:
        raise InputError(
            f"source {names[counts.argmin()]!r} has a single sample: cross-validation needs at "
            "least 2 per source; give a threshold instead"
        )
    splitter = StratifiedKFold(
        n_splits=min(folds, int(counts.min())), shuffle=True, random_state=seed
    )
    confidence = []
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        model = make_model().fit(_take(X, train), labels[train])
        confidence.append(RejectingClassifier(model, score=score).confidence(_take(X, test)))
    return threshold_at_tpr(np.concatenate(confidence), tpr)


def _default_estimator() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


class Hierarchy:
    """Two-level open-set attribution (LAVA: "Towards Reliable Audio Deepfake Attribution and Model
    Recognition: A Multi-Level Autoencoder-Based Framework", 2025):
    level 1 decides the family (e.g. the speech-synthesiser family) or "unknown"; only if level 1
    accepts a family is that family's level-2 classifier consulted, deciding the model or
    "family/unknown". A family without a level-2 classifier is predicted as the family alone.

    ``level1`` is a :class:`RejectingClassifier` over family names; ``level2`` maps each family
    name (as a string) to a :class:`RejectingClassifier` over that family's model names. No
    attribkit model calls: level 1 predicts every row once, each level-2 classifier predicts the
    rows accepted for its family once.
    """

    def __init__(
        self, level1: RejectingClassifier, level2: Mapping[str, RejectingClassifier]
    ) -> None:
        if not isinstance(level1, RejectingClassifier):
            raise InputError("level1 must be a RejectingClassifier over the families")
        bad = [k for k, v in level2.items() if not isinstance(v, RejectingClassifier)]
        if bad:
            raise InputError(f"level2[{bad[0]!r}] must be a RejectingClassifier over its models")
        families = set(level1.sources)
        extra = sorted(set(map(str, level2)) - families)
        if extra:
            raise InputError(
                f"level2 has families {extra} that level 1 does not know ({sorted(families)}); "
                "key level2 by level 1's class names"
            )
        self.level1 = level1
        self.level2 = {str(k): v for k, v in level2.items()}

    @classmethod
    def fit(
        cls,
        X: Any,
        families: Sequence[Any] | np.ndarray,
        models: Sequence[Any] | np.ndarray,
        *,
        X_val: Any,
        families_val: Sequence[Any] | np.ndarray,
        models_val: Sequence[Any] | np.ndarray,
        tpr: float = 0.95,
        estimator: Callable[[], Any] | None = None,
        score: Score = "softmax",
    ) -> Hierarchy:
        """Fit a family classifier and one model classifier per family, and choose each level's
        threshold on the validation data (at least ``tpr`` of its knowns accepted, see
        :func:`threshold_at_tpr`). Returns the fitted :class:`Hierarchy`.

        ``families`` / ``models`` label each training row (model names are within the family).
        ``estimator()`` returns a fresh unfitted scikit-learn classifier (default:
        ``make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))``). Level 1's
        threshold uses the validation rows of known families; each level-2 threshold uses the
        validation rows of known models of that family. A family with a single training model
        gets no level-2 classifier (no model-level rejection is possible from one class). Costs
        the estimators' own fitting; no attribkit model calls.
        """
        make = estimator or _default_estimator
        fam = np.asarray(families).astype(str)
        mod = np.asarray(models).astype(str)
        fam_v = np.asarray(families_val).astype(str)
        mod_v = np.asarray(models_val).astype(str)
        n, n_v = _n_rows(X), _n_rows(X_val)
        if len(fam) != n or len(mod) != n:
            raise InputError(
                f"X has {n} rows but families/models have {len(fam)}/{len(mod)} labels; "
                "pass one family and one model name per row"
            )
        if len(fam_v) != n_v or len(mod_v) != n_v:
            raise InputError(
                f"X_val has {n_v} rows but families_val/models_val have {len(fam_v)}/{len(mod_v)} "
                "labels; pass one family and one model name per validation row"
            )
        known_families = sorted(set(fam))
        if len(known_families) < 2:
            raise InputError(
                f"only one family ({known_families}) in the training data: level 1 needs at "
                "least two families to classify"
            )
        level1 = RejectingClassifier(make().fit(X, fam), score=score)
        level1.fit_threshold(X_val, fam_v, tpr=tpr)
        level2: dict[str, RejectingClassifier] = {}
        for f in known_families:
            rows = np.flatnonzero(fam == f)
            if len(set(mod[rows])) < 2:
                continue
            clf = RejectingClassifier(make().fit(_take(X, rows), mod[rows]), score=score)
            rows_v = np.flatnonzero((fam_v == f) & np.isin(mod_v, clf.classes_))
            if len(rows_v) == 0:
                raise InputError(
                    f"no validation row of a known model of family {f!r}; the level-2 threshold "
                    "is chosen on them: add validation samples for that family"
                )
            clf.fit_threshold(_take(X_val, rows_v), tpr=tpr)
            level2[f] = clf
        return cls(level1, level2)

    def decide(self, X: Any) -> list[SourceDecision]:
        """One :class:`SourceDecision` per row, with ``level_path`` = the decisions of the levels
        consulted. When level 1 rejects, the result is level 1's decision (prediction
        "unknown"); when it accepts a family with a level-2 classifier, the result carries that
        classifier's distribution with sources named ``"family/model"`` and prediction
        ``"family/model"`` or ``"family/unknown"``. Level 2 sees only the rows level 1 accepted
        for its family (one call per family)."""
        first = self.level1.decide(X)
        out: list[SourceDecision] = [
            SourceDecision(
                sources=d.sources,
                proba=d.proba,
                confidence=d.confidence,
                threshold=d.threshold,
                prediction=d.prediction,
                score=d.score,
                level_path=[d],
            )
            for d in first
        ]
        for family, clf in self.level2.items():
            rows = [i for i, d in enumerate(first) if d.prediction == family]
            if not rows:
                continue
            for i, d2 in zip(rows, clf.decide(_take(X, np.asarray(rows))), strict=True):
                pred = f"{family}/{d2.prediction}"
                out[i] = SourceDecision(
                    sources=[f"{family}/{s}" for s in d2.sources],
                    proba=d2.proba,
                    confidence=d2.confidence,
                    threshold=d2.threshold,
                    prediction=pred,
                    score=d2.score,
                    level_path=[first[i], d2],
                )
        return out

    def predict(self, X: Any) -> list[str]:
        """The prediction of each row: ``"family/model"``, ``"family/unknown"``, ``"family"``
        (no level-2 classifier) or ``"unknown"``. Costs what :meth:`decide` costs."""
        return [d.prediction for d in self.decide(X)]

    def __repr__(self) -> str:
        return f"Hierarchy(level1={self.level1!r}, level2={sorted(self.level2)})"
