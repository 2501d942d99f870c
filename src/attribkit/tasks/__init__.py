"""Tasks: a model, an input and a target assembled into a scorer, plus the entry points."""

from attribkit.tasks.context import (
    ContextTask,
    attribute_context,
    context_scorer,
    context_units,
    resolve_span,
)

__all__ = ["ContextTask", "attribute_context", "context_scorer", "context_units", "resolve_span"]
