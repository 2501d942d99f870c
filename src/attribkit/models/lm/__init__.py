"""A causal language model with the few operations attribution needs (:class:`LanguageModel`)."""

from attribkit.models.lm.adapter import ROW_FAMILIES, LanguageModel

__all__ = ["ROW_FAMILIES", "LanguageModel"]
