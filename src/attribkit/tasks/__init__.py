"""Tasks: a model, an input and a target assembled into a scorer, plus the entry points."""

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

__all__ = [
    "FAMILIES",
    "ContextCase",
    "ContextTask",
    "GenerationTask",
    "aggregate_columns",
    "aggregate_rows",
    "attribute_context",
    "attribute_generation",
    "context_scorer",
    "context_units",
    "make_cases",
    "make_suite",
    "resolve_span",
]
