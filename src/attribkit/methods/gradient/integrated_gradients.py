"""Integrated gradients along the straight path from the baseline to the input, summed into units.

The quadrature (:func:`~attribkit.methods.numerics.quadrature`) and the path
(:func:`~attribkit.methods.numerics.path_points`) are the ones the generation and GrAInS
integrated gradients use too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import check_units
from attribkit.methods.gradient.common import cpu64, gradient_at, unit_scores
from attribkit.methods.numerics import RULES, Rule, quadrature

__all__ = ["integrated_gradients"]


def _weighted(grads: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """sum_k weights[k] * grads[k], summed in the gradients' dtype, returned as float64."""
    w = torch.as_tensor(weights, dtype=grads.dtype)
    return torch.tensordot(w, grads, dims=1).double()


def integrated_gradients(
    gscorer: GradientScorer,
    *,
    n_steps: int = 50,
    rule: Rule = "gauss_legendre",
    target_error: float | None = None,
    max_steps: int = 512,
) -> Attribution:
    """Integrated gradients along the straight path from the baseline ``x'`` to ``x``:
    (x - x') * integral_0^1 df/dx(x' + a (x - x')) da, summed into units (Sundararajan, Taly &
    Yan, 'Axiomatic Attribution for Deep Networks', 2017).

    The integral is a quadrature with ``n_steps`` points (``rule``: ``"gauss_legendre"``, the
    default and the most accurate for smooth models; ``"riemann_trapezoid"``, which includes both
    ends; ``"riemann_middle"``). All points go through one batched ``GradientScorer.gradient``
    call. Completeness says the scores sum to f(x) - f(x'); the result reports
    ``extras['completeness_error']`` = |sum(scores) - (f(x) - f(x'))| / max(|f(x) - f(x')|, 1e-12),
    the signed ``delta`` = sum(scores) - (f(x) - f(x')), ``value`` = f(x), ``baseline_value`` = f(x').

    With ``target_error`` (e.g. 0.02), the number of steps doubles (n -> 2n; n -> 2n - 1 for the
    trapezoid, which then reuses every gradient already computed) until the completeness error
    is below the target or the next round would exceed ``max_steps``. The error is not monotone
    in the steps (see Captum issue #1334), so the round with the smallest error is returned;
    ``extras['n_steps_used']`` says which, and ``steps_tried``/``errors_tried`` list all rounds.

    Cost: n_steps forward + n_steps backward passes, plus 2 forward passes for f(x) and f(x')
    with ``gauss_legendre``/``riemann_middle`` (the trapezoid reads them from its end points);
    with ``target_error``, the sum over the rounds (for the trapezoid, just the final n_steps).
    """
    check_units(gscorer)
    if rule not in RULES:
        raise InputError(f"unknown integration rule {rule!r}; choose one of: {', '.join(RULES)}")
    least = 2 if rule == "riemann_trapezoid" else 1
    if int(n_steps) != n_steps or n_steps < least:
        raise InputError(f"n_steps must be an integer >= {least} for rule {rule!r}, got {n_steps}")
    n_steps = int(n_steps)
    if target_error is not None:
        if not target_error > 0:
            raise InputError(
                f"target_error must be a positive relative error (e.g. 0.02), got {target_error}"
            )
        if max_steps < n_steps:
            raise InputError(f"max_steps ({max_steps}) must be >= n_steps ({n_steps})")

    delta_x = cpu64(gscorer.x) - cpu64(gscorer.baseline)
    tried: list[int] = []
    errors: list[float] = []
    best: dict[str, Any] | None = None
    with measure(gscorer) as cost:
        f_x = f_base = None
        if rule != "riemann_trapezoid":
            ends = gscorer.value(torch.stack([gscorer.x, gscorer.baseline]))
            f_x, f_base = float(ends[0]), float(ends[1])
        n = n_steps
        integral: torch.Tensor | None = None  # the trapezoid's running sum is refined
        while True:
            if rule == "riemann_trapezoid" and integral is not None:
                # Refine: the new points are the midpoints of the previous n - 1 intervals.
                m = n - 1
                _, grads = gradient_at(gscorer, (np.arange(m // 2) + 0.5) / (m // 2))
                integral = integral / 2.0 + cpu64(grads.sum(0)) / m
            else:
                alphas, weights = quadrature(rule, n)
                values, grads = gradient_at(gscorer, alphas)
                integral = _weighted(grads, weights)
                if rule == "riemann_trapezoid":
                    f_base, f_x = float(values[0]), float(values[-1])
            del grads
            assert f_x is not None and f_base is not None
            scores = unit_scores(gscorer, delta_x * integral)
            diff = f_x - f_base
            delta = float(scores.sum()) - diff
            err = abs(delta) / max(abs(diff), 1e-12)
            tried.append(n)
            errors.append(err)
            if best is None or err < best["err"]:
                best = {"err": err, "scores": scores, "n": n, "delta": delta}
            if target_error is None or err < target_error:
                break
            nxt = 2 * n - 1 if rule == "riemann_trapezoid" else 2 * n
            if nxt > max_steps:
                break
            n = nxt

    assert best is not None
    params: dict[str, Any] = {"n_steps": n_steps, "rule": rule}
    extras: dict[str, Any] = {
        "completeness_error": best["err"],
        "delta": best["delta"],
        "value": f_x,
        "baseline_value": f_base,
        "n_steps_used": best["n"],
    }
    if target_error is not None:
        params.update(target_error=target_error, max_steps=max_steps)
        extras.update(steps_tried=tried, errors_tried=errors, target_met=best["err"] < target_error)
    return Attribution.from_scorer(
        gscorer, best["scores"], "integrated_gradients", params, cost, **extras
    )
