"""Evaluators: how faithful an attribution is, and how much two attributions agree.

Images have their own: insertion/deletion with LeRF, SRG and a random-order reference
(:func:`insertion_deletion`), the subset (area) protocol, pointing games, the DiFull / DiPart /
GridPG grid settings (:class:`GridModel`, :func:`evaluate_grid`) and AggAtt figures.
Multi-agent failure attribution is scored the Who&When way, exact and official
(:func:`who_when_score`), beside trivial baselines (:func:`baseline_predictions`)."""

from attribkit.evaluation.aggatt import AggAtt, aggatt, aggatt_figure
from attribkit.evaluation.agreement import agreement, agreement_matrix
from attribkit.evaluation.agreement_report import AgreementReport, agreement_report
from attribkit.evaluation.anchor_agreement import AnchorAgreement, anchor_agreement
from attribkit.evaluation.burden import Burden, attribution_burden
from attribkit.evaluation.curves import (
    Curve,
    DeletionInsertion,
    deletion,
    deletion_insertion,
    insertion,
)
from attribkit.evaluation.detection import (
    DetectionCurves,
    EnergyPointingGame,
    debug_success_rate,
    detection_curves,
)
from attribkit.evaluation.detection import energy_pointing_game as box_energy_pointing_game
from attribkit.evaluation.eraser import EraserResult, comprehensiveness, eraser, sufficiency
from attribkit.evaluation.grid import (
    GridClassifier,
    GridModel,
    Grids,
    evaluate_grid,
    grid_localization,
    make_grids,
)
from attribkit.evaluation.image_curves import (
    ImageCurves,
    energy_pointing_game,
    insertion_deletion,
    mask_fidelity,
    pointing_game,
    subset_curves,
)
from attribkit.evaluation.impersonation import impersonation_report, sampler_generator
from attribkit.evaluation.intervals import format_proportion, wilson_interval
from attribkit.evaluation.open_set import few_shot_episodes, open_set_report, open_world_report
from attribkit.evaluation.recourse import (
    RecourseReport,
    actionable_reasons,
    reasons_without_recourse,
    top_reasons,
)
from attribkit.evaluation.timeseries import (
    GroundTruthScores,
    aup_aur,
    average_precision,
    ground_truth_scores,
    iou_at_quantile,
    normalize_map,
    random_maps,
)
from attribkit.evaluation.who_when import (
    WhoWhenScore,
    baseline_predictions,
    cross_fitted_majority,
    read_predictions,
    trivial_baselines,
    who_when_score,
    write_predictions,
)

__all__ = [
    "AggAtt",
    "AgreementReport",
    "AnchorAgreement",
    "Burden",
    "Curve",
    "DeletionInsertion",
    "DetectionCurves",
    "EnergyPointingGame",
    "EraserResult",
    "GridClassifier",
    "GridModel",
    "Grids",
    "GroundTruthScores",
    "ImageCurves",
    "RecourseReport",
    "WhoWhenScore",
    "actionable_reasons",
    "aggatt",
    "aggatt_figure",
    "agreement",
    "agreement_matrix",
    "agreement_report",
    "anchor_agreement",
    "attribution_burden",
    "aup_aur",
    "average_precision",
    "baseline_predictions",
    "box_energy_pointing_game",
    "comprehensiveness",
    "cross_fitted_majority",
    "debug_success_rate",
    "deletion",
    "deletion_insertion",
    "detection_curves",
    "energy_pointing_game",
    "eraser",
    "evaluate_grid",
    "few_shot_episodes",
    "format_proportion",
    "grid_localization",
    "ground_truth_scores",
    "impersonation_report",
    "insertion",
    "insertion_deletion",
    "iou_at_quantile",
    "make_grids",
    "mask_fidelity",
    "normalize_map",
    "open_set_report",
    "open_world_report",
    "pointing_game",
    "random_maps",
    "read_predictions",
    "reasons_without_recourse",
    "sampler_generator",
    "subset_curves",
    "sufficiency",
    "top_reasons",
    "trivial_baselines",
    "who_when_score",
    "wilson_interval",
    "write_predictions",
]
