"""Tasks: a model, an input and a target assembled into a scorer, plus the entry points."""

from attribkit.tasks.agents import AgentLog, AgentTask, Turn, TurnUnits, attribute_agents
from attribkit.tasks.context import (
    ContextTask,
    attribute_context,
    context_scorer,
    context_units,
    resolve_span,
)
from attribkit.tasks.context_cases import FAMILIES, ContextCase, make_cases, make_suite
from attribkit.tasks.detection import (
    CallableDetector,
    Detection,
    DetectionTask,
    Detector,
    TorchDetector,
    attribute_detection,
)
from attribkit.tasks.generation import (
    GenerationTask,
    aggregate_columns,
    aggregate_rows,
    attribute_generation,
)
from attribkit.tasks.image import ImageTask, attribute_image, image_units
from attribkit.tasks.machine_text import MachineTextTask, attribute_machine_text
from attribkit.tasks.prompt import PromptEvaluation, PromptTask, evaluate_prompt, label_logprobs
from attribkit.tasks.prompt_cases import LabeledExample, but_sentiment, coin_flip
from attribkit.tasks.provenance import ProvenanceTask, attribute_provenance
from attribkit.tasks.reasoning import ReasoningTask, ReasoningTrace, attribute_reasoning
from attribkit.tasks.tabular import TabularTask, attribute_tabular
from attribkit.tasks.timeseries import (
    OverlappingWindowUnits,
    SeriesUnits,
    TimeSeriesTask,
    attribute_timeseries,
    series_map,
    series_units,
)
from attribkit.tasks.timeseries_data import (
    SeriesSet,
    freq_shapes,
    load_ucr,
    low_var_detect,
    read_ts,
    seqcomb_mv,
    seqcomb_uv,
    synthetic_set,
    synthetic_splits,
)

__all__ = [
    "FAMILIES",
    "AgentLog",
    "AgentTask",
    "CallableDetector",
    "ContextCase",
    "ContextTask",
    "Detection",
    "DetectionTask",
    "Detector",
    "GenerationTask",
    "ImageTask",
    "LabeledExample",
    "MachineTextTask",
    "OverlappingWindowUnits",
    "PromptEvaluation",
    "PromptTask",
    "ProvenanceTask",
    "ReasoningTask",
    "ReasoningTrace",
    "SeriesSet",
    "SeriesUnits",
    "TabularTask",
    "TimeSeriesTask",
    "TorchDetector",
    "Turn",
    "TurnUnits",
    "aggregate_columns",
    "aggregate_rows",
    "attribute_agents",
    "attribute_context",
    "attribute_detection",
    "attribute_generation",
    "attribute_image",
    "attribute_machine_text",
    "attribute_provenance",
    "attribute_reasoning",
    "attribute_tabular",
    "attribute_timeseries",
    "but_sentiment",
    "coin_flip",
    "context_scorer",
    "context_units",
    "evaluate_prompt",
    "freq_shapes",
    "image_units",
    "label_logprobs",
    "load_ucr",
    "low_var_detect",
    "make_cases",
    "make_suite",
    "read_ts",
    "resolve_span",
    "seqcomb_mv",
    "seqcomb_uv",
    "series_map",
    "series_units",
    "synthetic_set",
    "synthetic_splits",
]
