"""attribkit: which parts of the input made a model produce this output, and how sure can we be?

The public API, re-exported here, is stable:

- core: :class:`Units` (:class:`TextUnits`, :class:`FeatureUnits`, :class:`ArrayUnits`,
  :class:`ImageUnits`), :class:`Scorer`, :class:`GradientScorer`, :class:`Attribution`,
  :class:`Cost`, :class:`Budget`, :func:`attribute`, :func:`list_methods`, :func:`register`;
- models: :func:`load`, :class:`LanguageModel`, :class:`TorchClassifier`,
  :class:`CallableModel`, :class:`OpenAICompatibleLM`; judges for failure attribution:
  :class:`ChatJudge` (any OpenAI-compatible chat endpoint), :class:`LocalJudge` (constrained
  choice by log-probability), :func:`judge_from_env`, :class:`Judgement`, :class:`Verdict`;
- tasks: :func:`attribute_context`, :class:`ContextTask`, :func:`attribute_generation`,
  :class:`GenerationTask`, :func:`aggregate_rows`, :func:`aggregate_columns`,
  :func:`attribute_image`, :class:`ImageTask` (images: :class:`ImageClassifier`,
  ``load("efficientnet-lite0")``), :func:`attribute_reasoning`, :class:`ReasoningTask`,
  :class:`ReasoningTrace` (chains of thought, Thought Anchors problem folders),
  :func:`attribute_agents`, :class:`AgentTask`, :class:`AgentLog`, :class:`Turn`,
  :class:`TurnUnits` (multi-agent logs, Who&When files);
- provenance (who produced this): :func:`attribute_provenance`, :class:`ProvenanceTask` (a
  source decision with "unknown", explained by unit methods), :class:`RejectingClassifier`,
  :class:`Hierarchy`, :class:`SourceDecision`; authorship models :class:`BurrowsDelta`,
  :class:`MFWLogistic`, :class:`CharNgramSVM`, :func:`authorship_model`,
  :func:`read_author_folders`; machine text: :func:`attribute_machine_text`,
  :class:`MachineTextTask` (zero-shot detectors with their per-token terms),
  :class:`NGramLM`, :class:`HFNextToken`; evaluation :func:`open_set_report`,
  :func:`open_world_report`, :func:`few_shot_episodes`, :func:`impersonation_report`;
- tabular rows and recourse: :func:`attribute_tabular`, :class:`TabularTask` (any scikit-learn
  estimator or torch module, features as units), :class:`ActionSet`, :func:`responsiveness`
  (Feature Responsiveness Scores), :func:`reasons_without_recourse`;
- time series: :func:`attribute_timeseries`, :class:`TimeSeriesTask` (cells, time steps,
  windows, overlapping windows; occlusion, TimeX and every gradient method on a torch model);
- detection: :func:`attribute_detection`, :class:`DetectionTask` (an object's box and class
  explained over regions: VPS, D-RISE), :class:`TorchDetector`, :class:`CallableDetector`,
  :func:`detection_curves`;
- explainable by design (:mod:`attribkit.by_design`): COMET (:func:`train_comet`,
  :class:`Comet`), the Affinity Explainer (:func:`attribute_support`, :class:`SupportTask`);
- internals: :func:`causal_graph` (channels' average causal and path effects for a class,
  :class:`CausalGraph` with its causal CAM), :func:`channel_report`;
- token-level LM analysis: :func:`direct_logit_attribution`, :func:`grains_vectors` and
  :func:`steer` (GrAInS steering);
- images: :func:`attribute_image`, :class:`ImageTask`, :class:`ImageClassifier`,
  :func:`smooth_attribution`, CRAFT (:func:`fit_concepts`, :class:`CraftConcepts`,
  :func:`concept_importance`), :func:`overlay`, :func:`save_overlay`;
- evaluation: :func:`deletion`, :func:`insertion`, :func:`deletion_insertion`,
  :func:`comprehensiveness`, :func:`sufficiency`, :func:`eraser`, :func:`agreement`,
  :func:`agreement_matrix`, :func:`agreement_report`, :func:`anchor_agreement` (reasoning steps vs
  reference importances, beside position/length/random/tag-prior baselines),
  :func:`who_when_score` (failure attribution: exact and official Who&When scoring),
  :func:`write_predictions`, :func:`baseline_predictions`, :func:`cross_fitted_majority`; for
  images :func:`insertion_deletion`,
  :func:`subset_curves`, :func:`pointing_game`, :class:`GridModel`, :func:`make_grids`,
  :func:`evaluate_grid`, :func:`grid_localization`, :func:`aggatt`, :func:`aggatt_figure`;
- viz: :func:`save_html`, :func:`print_attribution`, :func:`print_token_attribution`,
  :func:`explain`;
- keeping runs: :mod:`attribkit.store` (``store.open(path)`` → :class:`RunStore`).
"""

__version__ = "0.1.0"

from attribkit import by_design, store
from attribkit.by_design import Comet, SupportTask, attribute_support, train_comet
from attribkit.core import *  # noqa: F403
from attribkit.core import __all__ as _core_all
from attribkit.core import add_methods as _add_methods
from attribkit.evaluation import (
    AnchorAgreement,
    GridModel,
    WhoWhenScore,
    aggatt,
    aggatt_figure,
    agreement,
    agreement_matrix,
    agreement_report,
    anchor_agreement,
    baseline_predictions,
    comprehensiveness,
    cross_fitted_majority,
    deletion,
    deletion_insertion,
    detection_curves,
    eraser,
    evaluate_grid,
    few_shot_episodes,
    grid_localization,
    impersonation_report,
    insertion,
    insertion_deletion,
    make_grids,
    open_set_report,
    open_world_report,
    pointing_game,
    reasons_without_recourse,
    subset_curves,
    sufficiency,
    who_when_score,
    write_predictions,
)
from attribkit.internals import CausalGraph, causal_graph, channel_report
from attribkit.methods.catalog import BUILTIN as _BUILTIN
from attribkit.methods.generation.dla import direct_logit_attribution
from attribkit.methods.generation.grains import SteeringVectors, grains_vectors, steer
from attribkit.methods.image.craft import CraftConcepts, concept_importance, fit_concepts
from attribkit.methods.image.smoothing import smooth_attribution
from attribkit.methods.tabular.responsiveness import responsiveness
from attribkit.models import (
    ActionSet,
    BurrowsDelta,
    CallableModel,
    CharNgramSVM,
    ChatJudge,
    HFNextToken,
    Hierarchy,
    ImageClassifier,
    Judge,
    Judgement,
    LanguageModel,
    LocalJudge,
    MFWLogistic,
    NGramLM,
    OpenAICompatibleLM,
    RejectingClassifier,
    SourceDecision,
    TorchClassifier,
    Verdict,
    authorship_model,
    judge_from_env,
    load,
    read_author_folders,
)
from attribkit.tasks import (
    AgentLog,
    AgentTask,
    CallableDetector,
    ContextTask,
    DetectionTask,
    GenerationTask,
    ImageTask,
    MachineTextTask,
    ProvenanceTask,
    ReasoningTask,
    ReasoningTrace,
    TabularTask,
    TimeSeriesTask,
    TorchDetector,
    Turn,
    TurnUnits,
    aggregate_columns,
    aggregate_rows,
    attribute_agents,
    attribute_context,
    attribute_detection,
    attribute_generation,
    attribute_image,
    attribute_machine_text,
    attribute_provenance,
    attribute_reasoning,
    attribute_tabular,
    attribute_timeseries,
)
from attribkit.viz import explain, print_attribution, print_token_attribution, save_html
from attribkit.viz.image import overlay, save_overlay

_add_methods(_BUILTIN)  # the built-in methods, one explicit list

__all__ = [
    "AgentLog",
    "AgentTask",
    "ChatJudge",
    "Judge",
    "Judgement",
    "LocalJudge",
    "Verdict",
    "judge_from_env",
    "Turn",
    "TurnUnits",
    "WhoWhenScore",
    "attribute_agents",
    "baseline_predictions",
    "cross_fitted_majority",
    "who_when_score",
    "write_predictions",
    "AnchorAgreement",
    "anchor_agreement",
    "CraftConcepts",
    "GridModel",
    "SteeringVectors",
    "CallableModel",
    "ContextTask",
    "GenerationTask",
    "ImageClassifier",
    "ImageTask",
    "LanguageModel",
    "OpenAICompatibleLM",
    "ReasoningTask",
    "ReasoningTrace",
    "TorchClassifier",
    "__version__",
    "aggatt",
    "aggatt_figure",
    "aggregate_columns",
    "aggregate_rows",
    "agreement",
    "agreement_matrix",
    "agreement_report",
    "attribute_context",
    "attribute_generation",
    "attribute_image",
    "attribute_reasoning",
    "comprehensiveness",
    "concept_importance",
    "deletion",
    "deletion_insertion",
    "direct_logit_attribution",
    "eraser",
    "evaluate_grid",
    "explain",
    "fit_concepts",
    "grains_vectors",
    "grid_localization",
    "insertion",
    "insertion_deletion",
    "load",
    "make_grids",
    "overlay",
    "pointing_game",
    "print_attribution",
    "print_token_attribution",
    "save_html",
    "save_overlay",
    "smooth_attribution",
    "steer",
    "store",
    "subset_curves",
    "sufficiency",
    "BurrowsDelta",
    "CharNgramSVM",
    "HFNextToken",
    "Hierarchy",
    "MFWLogistic",
    "MachineTextTask",
    "NGramLM",
    "ProvenanceTask",
    "RejectingClassifier",
    "SourceDecision",
    "attribute_machine_text",
    "attribute_provenance",
    "authorship_model",
    "few_shot_episodes",
    "impersonation_report",
    "open_set_report",
    "open_world_report",
    "read_author_folders",
    "ActionSet",
    "TabularTask",
    "attribute_tabular",
    "attribute_timeseries",
    "TimeSeriesTask",
    "CausalGraph",
    "Comet",
    "SupportTask",
    "attribute_support",
    "by_design",
    "train_comet",
    "CallableDetector",
    "DetectionTask",
    "TorchDetector",
    "attribute_detection",
    "detection_curves",
    "causal_graph",
    "channel_report",
    "reasons_without_recourse",
    "responsiveness",
    *_core_all,
]
