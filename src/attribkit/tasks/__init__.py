"""Tasks: a model, an input and a target assembled into a scorer, plus the entry points."""

from attribkit.tasks.context import attribute_context, context_scorer, context_units

__all__ = ["attribute_context", "context_scorer", "context_units"]
