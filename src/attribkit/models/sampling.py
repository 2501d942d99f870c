"""Checks of the sampling arguments shared by the language-model adapters' ``generate``."""

from __future__ import annotations

import math
from typing import Any

from attribkit.core.errors import InputError

__all__ = ["check_sampling"]


def check_sampling(
    max_new_tokens: Any, temperature: Any, top_p: Any, seed: Any, n: Any, prefill: Any
) -> None:
    """Raise :class:`~attribkit.core.errors.InputError` saying what to fix when a ``generate``
    argument is out of range: ``max_new_tokens >= 1``, ``temperature >= 0`` (0 = greedy),
    ``0 < top_p <= 1``, ``seed`` an integer or None, ``n >= 1``, ``prefill`` a string or None.
    No model calls."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_real(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not is_int(max_new_tokens) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not is_real(temperature) or temperature < 0:
        raise InputError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}"
        )
    if not is_real(top_p) or not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1] (1 = no nucleus cut), got {top_p!r}")
    if seed is not None and not is_int(seed):
        raise InputError(f"seed must be an integer or None, got {seed!r}")
    if not is_int(n) or n < 1:
        raise InputError(f"n (the number of answers) must be an integer >= 1, got {n!r}")
    if prefill is not None and not isinstance(prefill, str):
        raise InputError(f"prefill must be a string or None, got {type(prefill).__name__}")
