"""Evaluators: how faithful an attribution is, and how much two attributions agree."""

from attribkit.evaluation.agreement import agreement, agreement_matrix
from attribkit.evaluation.agreement_report import AgreementReport, agreement_report
from attribkit.evaluation.curves import (
    Curve,
    DeletionInsertion,
    deletion,
    deletion_insertion,
    insertion,
)
from attribkit.evaluation.eraser import EraserResult, comprehensiveness, eraser, sufficiency

__all__ = [
    "AgreementReport",
    "Curve",
    "DeletionInsertion",
    "EraserResult",
    "agreement",
    "agreement_matrix",
    "agreement_report",
    "comprehensiveness",
    "deletion",
    "deletion_insertion",
    "eraser",
    "insertion",
    "sufficiency",
]
