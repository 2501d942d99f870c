"""Models explainable by design: the explanation is part of the model's forward pass.

COMET (Zhang, Lee & Wang, ECCV 2024): a selector–predictor trained against a frozen detector
(:func:`train_comet`, :class:`Comet`, with its evaluators :func:`mask_pxap`, :func:`coverage`,
:func:`fidelity`).

Affinity Explainer (De Marinis et al., 2025): a matching few-shot segmenter's own query→support
attention explains which support pixels its prediction drew on (:func:`attribute_support`,
:class:`MatchingSegmenter`, :class:`DigitMatcher`, :class:`SupportTask`, with the cut protocol
:func:`support_cut_curve` and :func:`support_curves`)."""

from attribkit.by_design.affinity import (
    DigitMatcher,
    MatchingSegmenter,
    MatchResult,
    SupportTask,
    affinity_explainer,
    attribute_support,
    digit_episodes,
    support_curves,
    support_cut_curve,
    train_digit_matcher,
)
from attribkit.by_design.comet import (
    CanvasData,
    Comet,
    area_penalty,
    canvas_cnn,
    canvas_selector,
    comet_loss,
    coverage,
    digit_canvases,
    fidelity,
    mask_pxap,
    top_k_masks,
    train_classifier,
    train_comet,
)

__all__ = [
    "CanvasData",
    "Comet",
    "DigitMatcher",
    "MatchResult",
    "MatchingSegmenter",
    "SupportTask",
    "affinity_explainer",
    "area_penalty",
    "attribute_support",
    "canvas_cnn",
    "canvas_selector",
    "comet_loss",
    "coverage",
    "digit_canvases",
    "digit_episodes",
    "fidelity",
    "mask_pxap",
    "support_curves",
    "support_cut_curve",
    "top_k_masks",
    "train_classifier",
    "train_comet",
    "train_digit_matcher",
]
