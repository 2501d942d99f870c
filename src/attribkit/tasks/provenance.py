"""Source attribution: which known source (author, model, generator) produced a text or an
utterance, or "none of these", and which parts of it drove that decision.

A :class:`ProvenanceTask` (kind ``"provenance"``) puts a text in front of a fitted source model —
any object with ``classes_`` and ``predict_proba(texts)`` (the authorship models of
:mod:`attribkit.models.authorship`, a scikit-learn pipeline on raw texts), optionally wrapped in a
:class:`~attribkit.models.open_set.RejectingClassifier` whose threshold says when to answer
"unknown". The task's *decision* (a distribution over the known sources, the rejection score and
the prediction, possibly ``"unknown"``) is its target; its units are the text's sentences (or
words, paragraphs); its mask scorer gives the probability of the explained source when only the
kept units are present (as a log-probability, which does not saturate as probabilities near 1
do), so every perturbation method (``loo``, ``shapley``, ``kernel_shap``,
``lasso_surrogate``...) explains the decision. Open-set decision rule after LAVA and the open-set
literature: maximum softmax probability below the threshold → "unknown".

The input may also be a waveform (a 1-D array) before a model of waveforms such as
:class:`~attribkit.models.audio.WaveformClassifier` — the units are then time windows, and a
removed window is silenced — or an image (H, W, C) before a model of images (e.g. a
scikit-learn pipeline starting with ``FunctionTransformer(residual_features)``, or POSE-lite) —
the units are then grid patches, and a removed patch is blurred (:class:`ImageUnits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import ArrayUnits, ImageUnits, TextUnits, Units

__all__ = ["UNKNOWN", "ProvenanceTask", "attribute_provenance"]

UNKNOWN = "unknown"
DEFAULT_METHOD = "loo"
_UNIT_KINDS = ("sentences", "words", "paragraphs")
DEFAULT_WINDOW = 0.25  # seconds per unit of a waveform


def _split(model: Any, threshold: float | None) -> tuple[Any, Any, float | None]:
    """The probability model, the rejecting wrapper (or None) and the threshold of ``model``: a
    RejectingClassifier (``base``, ``tau``, ``confidence``) gives all three, its ``tau`` unless
    ``threshold`` is given."""
    base = getattr(model, "base", None)
    if base is not None and hasattr(model, "tau") and hasattr(model, "confidence"):
        tau = getattr(model, "tau", None)
        return base, model, threshold if threshold is not None else tau
    return model, None, threshold


class ProvenanceTask(Task):
    """One text and a fitted source model, ready to be explained.

    Args:
        text: the text whose source is asked, a waveform (1-D array; the model must take
            waveforms and have a ``rate``, e.g. a WaveformClassifier) or an image (H, W, C).
        model: a fitted source model (``classes_``, ``predict_proba(list[str]) -> (n, k)``), or a
            :class:`~attribkit.models.open_set.RejectingClassifier` around one (its confidence
            score, max softmax or max logit, and its threshold are used).
        units: ``"sentences"`` (default), ``"words"``, ``"paragraphs"`` or a :class:`TextUnits`
            over ``text``; for a waveform, windows of ``window`` seconds (or an ArrayUnits); for
            an image, ``patch`` × ``patch`` grid cells (or an ImageUnits).
        source: the known source whose probability is explained (default: the most likely one,
            also when the decision is "unknown": the explanation then says why the text looks
            most like that source).
        threshold: reject ("unknown") when the confidence (the highest probability, or the
            rejecting classifier's score) is below it; None keeps the closed-set decision.
        batch_size: texts per ``predict_proba`` call.
        window: seconds per time window of a waveform.
        patch: pixels per grid cell of an image.

    Building the task costs one model call (the decision on the full text; two when the model
    is a rejecting wrapper with its own score). A composed input with no unit left (an empty
    text, a silent waveform) is not sent to the model: it scores ``log(1 / k)`` (no evidence for
    any source).
    """

    kind = "provenance"

    def __init__(
        self,
        text: str | np.ndarray,
        model: Any,
        units: str | Units = "sentences",
        source: str | None = None,
        threshold: float | None = None,
        batch_size: int = 64,
        window: float = DEFAULT_WINDOW,
        patch: int = 16,
    ) -> None:
        self.model, self._rejector, self.threshold = _split(model, threshold)
        if isinstance(text, str):
            if not text.strip():
                raise InputError("the text is empty; give the text whose source you want to find")
            self.units: Units = self._text_units(text, units)
        elif np.ndim(text) == 3:
            self.units = self._image_units(text, units, patch)
        else:
            self.units = self._wave_units(text, units, window)
        self.score = "softmax" if self._rejector is None else str(self._rejector.score)
        classes = getattr(self.model, "classes_", None)
        if classes is None or not hasattr(self.model, "predict_proba"):
            raise InputError(
                "the source model must be fitted and have classes_ and predict_proba(texts) "
                "(e.g. attribkit.models.authorship.authorship_model('delta').fit(texts, authors))"
            )
        self.sources = [str(c) for c in classes]
        if len(self.sources) < 2:
            raise InputError(
                f"the source model knows {len(self.sources)} source; fit it on at least two"
            )
        if (
            self.score == "softmax"
            and self.threshold is not None
            and not 0.0 <= float(self.threshold) <= 1.0
        ):
            raise InputError(
                f"threshold {self.threshold} is not a probability; give a value in [0, 1] "
                "(the lowest maximum softmax probability that is still accepted)"
            )
        self.text = text
        self.batch_size = int(batch_size)
        self._meter = CostMeter()
        proba = self._proba([text])[0]
        self._meter.cost.forward_passes += 1
        self._meter.cost.batches += 1
        self.proba = proba
        top = int(np.argmax(proba))
        if self._rejector is None:
            self.confidence = float(proba[top])
        else:  # the wrapper's own score (max logit or softmax): one more model call
            self.confidence = float(self._rejector.confidence([text])[0])
            self._meter.cost.forward_passes += 1
            self._meter.cost.batches += 1
        rejected = self.threshold is not None and self.confidence < float(self.threshold)
        self.prediction = UNKNOWN if rejected else self.sources[top]
        if source is None:
            source = self.sources[top]
        if source not in self.sources:
            raise InputError(f"source {source!r} is not one of the model's {self.sources}")
        self.source = source
        self._source_index = self.sources.index(source)

    @staticmethod
    def _image_units(image: Any, units: str | Units, patch: int) -> Units:
        if isinstance(units, ImageUnits):
            if units.x.shape != np.shape(image):
                raise InputError("the given ImageUnits were built on another image")
            return units
        x = np.asarray(image, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InputError("the image has NaN or infinite pixels")
        return ImageUnits.grid(x, patch=patch)

    def _wave_units(self, wave: Any, units: str | Units, window: float) -> Units:
        x = np.asarray(wave, dtype=float)
        if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
            raise InputError(
                "an input that is not text must be a waveform (a non-empty 1-D array of finite "
                f"samples) or an image (H, W, C), got shape {x.shape}"
            )
        if isinstance(units, ArrayUnits):
            if units.x.shape != x.shape:
                raise InputError("the given ArrayUnits were built on another waveform")
            return units
        rate = getattr(self.model, "rate", None)
        if rate is None:
            raise InputError(
                "a waveform needs a model of waveforms with a sample rate, e.g. "
                "attribkit.models.audio.WaveformClassifier(classifier, rate)"
            )
        width = max(1, round(float(window) * int(rate)))
        return ArrayUnits.windows(x, width)

    @staticmethod
    def _text_units(text: str, units: str | Units) -> TextUnits:
        if isinstance(units, TextUnits):
            if units.text != text:
                raise InputError("the given TextUnits were built on another text")
            return units
        if units not in _UNIT_KINDS:
            raise InputError(f"units must be one of {_UNIT_KINDS} or a TextUnits, got {units!r}")
        return getattr(TextUnits, units)(text)

    def _is_empty(self, x: Any) -> bool:
        if isinstance(x, str):
            return not x.strip()
        return bool(np.all(np.asarray(x) == self.units.baseline))  # type: ignore[attr-defined]

    def _proba(self, texts: Sequence[Any]) -> np.ndarray:
        """The model's probabilities over the known sources for ``texts``, checked."""
        batch = list(texts) if isinstance(texts[0], str) else np.stack(texts)  # texts or arrays
        p = np.asarray(self.model.predict_proba(batch), dtype=float)
        if p.shape != (len(texts), len(self.sources)):
            raise ScorerError(
                f"predict_proba returned shape {p.shape} for {len(texts)} texts and "
                f"{len(self.sources)} sources; it must return one row per text"
            )
        if not np.isfinite(p).all():
            raise ScorerError("the source model returned NaN or infinite probabilities")
        return p

    # --- the Task contract ----------------------------------------------------------------------
    @property
    def input_info(self) -> dict[str, Any]:
        """The units' description; an image also keeps its pixels (saved as a PNG), so that
        viewers draw the patches over it."""
        info = self.units.to_dict()
        if isinstance(self.units, ImageUnits):
            info["image"] = self.units.image
        return info

    @property
    def meter(self) -> CostMeter:
        """Counts one forward pass per text sent to the source model."""
        return self._meter

    @property
    def decision(self) -> dict[str, Any]:
        """The open-set decision on the full text: ``prediction`` (a source or "unknown"),
        ``scores`` (source → probability), ``confidence`` (the rejection score: max softmax
        probability, or max logit when the model is a RejectingClassifier with
        ``score="logit"``), ``confidence_score`` (which), ``threshold`` and ``unknown``. No
        model calls."""
        return {
            "prediction": self.prediction,
            "scores": {s: float(p) for s, p in zip(self.sources, self.proba, strict=True)},
            "confidence": self.confidence,
            "confidence_score": "max softmax" if self.score == "softmax" else "max logit",
            "threshold": None if self.threshold is None else float(self.threshold),
            "unknown": self.prediction == UNKNOWN,
        }

    @property
    def target_info(self) -> dict[str, Any]:
        return {
            "kind": "source",
            "description": f"log p({self.source} | kept units) under {type(self.model).__name__}",
            "source": self.source,
            "model": str(getattr(self.model, "name", None) or type(self.model).__name__),
            **self.decision,
        }

    def values(self, texts: Sequence[Any]) -> np.ndarray:
        """log p(explained source | text) for each composed text: one forward pass per
        non-empty text (counted on :attr:`meter`); an empty text scores log(1 / k)."""
        out = np.full(len(texts), -np.log(len(self.sources)))
        todo = [i for i, t in enumerate(texts) if not self._is_empty(t)]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            p = self._proba([texts[i] for i in chunk])
            out[chunk] = np.log(np.clip(p[:, self._source_index], 1e-300, None))
            self._meter.cost.forward_passes += len(chunk)
            self._meter.cost.batches += 1
        return out

    def scorer(
        self, budget: Budget | None = None, progress: Callable[[int], None] | None = None
    ) -> Scorer:
        """A mask :class:`Scorer` over the units for log p(explained source | kept units)."""
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

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """:meth:`scorer`; takes ``budget`` from ``params``."""
        return self.scorer(budget=params.pop("budget", None))

    def unit_result(self, attribution: Attribution, scorer: Any) -> Attribution:
        """A perturbation method's result as this task's (its input description included)."""
        a = attribution
        return self.result(a.scores, a.method, a.params, a.cost, **a.extras)

    def attribute(self, method: str = DEFAULT_METHOD, **params: Any) -> Attribution:
        """Run a perturbation method (default ``loo``) on this task (:func:`attribkit.attribute`)."""
        return attribute(self, method, **params)

    def __repr__(self) -> str:
        return (
            f"ProvenanceTask({len(self.units)} {self.units.kind} units, "
            f"prediction={self.prediction!r}, "
            f"confidence={self.confidence:.3f})"
        )


def attribute_provenance(
    text: str | np.ndarray,
    model: Any,
    method: str = DEFAULT_METHOD,
    units: str | Units = "sentences",
    source: str | None = None,
    threshold: float | None = None,
    **params: Any,
) -> Attribution:
    """Which source produced ``text`` (or "unknown"), and which units drove that decision.

    Returns an Attribution over the units (sentences by default) of log p(source | kept units),
    whose ``target`` holds the decision (``prediction``, ``scores``, ``confidence``,
    ``threshold``, ``unknown``). Costs 1 model call for the decision plus the method's
    (``loo``: one per unit plus one).
    """
    task = ProvenanceTask(text, model, units=units, source=source, threshold=threshold)
    return task.attribute(method, **params)
