"""Confidence intervals for proportions reported by benchmarks and evaluators."""

from __future__ import annotations

import math

from attribkit.core.errors import InputError


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` for ``successes`` out of ``n`` trials (95 % for
    the default ``z``). No model calls. ("Probable inference, the law of succession, and
    statistical inference", Wilson, 1927.)"""
    if n <= 0:
        raise InputError(f"a proportion needs at least one trial, got n={n}")
    if not 0 <= successes <= n:
        raise InputError(f"successes must lie in [0, n={n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def format_proportion(successes: int, n: int, digits: int = 3) -> str:
    """``"0.950 [0.895, 0.977]"``: the proportion and its Wilson 95 % interval, for tables."""
    lo, hi = wilson_interval(successes, n)
    return f"{successes / n:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
