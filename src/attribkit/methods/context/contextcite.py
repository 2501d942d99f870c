"""ContextCite: a sparse linear surrogate of the span's logit-probability over random ablations
of the context (Cohen-Wang, Shah, Georgiev, Mądry, 'ContextCite: Attributing Model Generation to
Context', NeurIPS 2024)."""

from __future__ import annotations

from typing import Any

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget
from attribkit.core.registry import check_units
from attribkit.methods.perturbation.lasso_surrogate import lasso_surrogate

__all__ = ["contextcite"]


def contextcite(
    task: Any,
    *,
    n_ablations: int = 64,
    keep_prob: float = 0.5,
    alpha: float = 0.01,
    seed: int | None = 0,
    budget: Budget | None = None,
) -> Attribution:
    """ContextCite: ``n_ablations`` random ablations (each unit kept with ``keep_prob``), the
    span's logit-probability log P − log(1 − P) under each, and a LASSO on the standardised masks
    (coefficients rescaled by the span length, as the reference code does). Scores estimate the
    change in logit-probability from including each unit.

    Cost: ``n_ablations`` forward passes, independent of the number of units; per-token
    log-probabilities are cached on the task, so other spans are free.
    """
    check_units(task)
    scorer = task.scorer(value="logit_prob", budget=budget)
    result = lasso_surrogate(
        scorer,
        n_ablations=n_ablations,
        keep_prob=keep_prob,
        alpha=alpha,
        span_tokens=task.n_span_tokens,
        seed=seed,
    )
    result.method = "contextcite"
    return result
