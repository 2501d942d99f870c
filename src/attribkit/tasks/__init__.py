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
from attribkit.tasks.generation import (
    GenerationTask,
    aggregate_columns,
    aggregate_rows,
    attribute_generation,
)
from attribkit.tasks.image import ImageTask, attribute_image, image_units
from attribkit.tasks.machine_text import MachineTextTask, attribute_machine_text
from attribkit.tasks.provenance import ProvenanceTask, attribute_provenance
from attribkit.tasks.reasoning import ReasoningTask, ReasoningTrace, attribute_reasoning

__all__ = [
    "FAMILIES",
    "AgentLog",
    "AgentTask",
    "ContextCase",
    "ContextTask",
    "GenerationTask",
    "ImageTask",
    "MachineTextTask",
    "ProvenanceTask",
    "ReasoningTask",
    "ReasoningTrace",
    "Turn",
    "TurnUnits",
    "aggregate_columns",
    "aggregate_rows",
    "attribute_agents",
    "attribute_context",
    "attribute_generation",
    "attribute_image",
    "attribute_machine_text",
    "attribute_provenance",
    "attribute_reasoning",
    "context_scorer",
    "context_units",
    "image_units",
    "make_cases",
    "make_suite",
    "resolve_span",
]
