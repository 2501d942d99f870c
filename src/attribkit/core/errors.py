"""Exceptions raised by attribkit. Each message says what to fix."""

from __future__ import annotations


class AttribkitError(Exception):
    """Base class of every error attribkit raises on purpose."""


class InputError(AttribkitError, ValueError):
    """The input cannot be attributed as given (empty context, one unit, wrong shape...)."""


class WindowError(InputError):
    """A prompt does not fit the model's context window; ``over`` is by how many tokens."""

    def __init__(self, message: str, over: int) -> None:
        super().__init__(message)
        self.over = int(over)


class ScorerError(AttribkitError, ValueError):
    """The model or value function returned something unusable (NaN, wrong length...)."""


class BudgetExhausted(AttribkitError, RuntimeError):
    """A method asked for more model calls or seconds than its Budget allows."""


class UnsafeModelFile(AttribkitError, ValueError):
    """A model file would need pickle to load; attribkit only loads safetensors/GGUF."""


class StoreError(AttribkitError, RuntimeError):
    """A run store cannot be opened or written (not an attribkit store, wrong schema version...)."""
