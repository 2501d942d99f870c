"""Evaluators: how faithful an attribution is, and how much two attributions agree."""

from attribkit.evaluation.agreement import agreement, agreement_matrix
from attribkit.evaluation.curves import (
    Curve,
    DeletionInsertion,
    deletion,
    deletion_insertion,
    insertion,
)
from attribkit.evaluation.eraser import EraserResult, comprehensiveness, eraser, sufficiency

__all__ = [
    "Curve",
    "DeletionInsertion",
    "EraserResult",
    "agreement",
    "agreement_matrix",
    "comprehensiveness",
    "deletion",
    "deletion_insertion",
    "eraser",
    "insertion",
    "sufficiency",
]
