"""Gradient attribution methods for differentiable (torch) models.

Every method here takes a :class:`GradientScorer` (an input tensor ``x`` of any shape — token
embeddings ``[T, d]``, an image ``[C, H, W]``, features ``[d]`` — a baseline ``x'`` and a batched
differentiable target), computes an element-wise attribution of the same shape as ``x`` and sums
it into one score per unit with ``GradientScorer.to_units``. Elements whose ``unit_index`` is -1
belong to no unit: they are never interpolated or noised and get no score.

Cost is counted per input row: one row through the model is one forward pass, one gradient of
one row is one backward pass (``GradientScorer.gradient`` counts both).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import check_units

Rule = Literal["gauss_legendre", "riemann_trapezoid", "riemann_middle"]
RULES: tuple[str, ...] = ("gauss_legendre", "riemann_trapezoid", "riemann_middle")


# --- helpers -------------------------------------------------------------------------------------
def _cpu64(t: torch.Tensor) -> torch.Tensor:
    """A detached float64 CPU copy (accumulation in double precision keeps completeness tight)."""
    return t.detach().to("cpu", torch.float64)


def _scores(gscorer: GradientScorer, attr: torch.Tensor) -> np.ndarray:
    """Sum an element-wise attribution (shape of ``x``) into unit scores."""
    return gscorer.to_units(attr.reshape(gscorer.x.shape))


def _batch_of(gscorer: GradientScorer, alphas: torch.Tensor) -> torch.Tensor:
    """Rows x' + alpha (x - x') for each alpha, shape (len(alphas), *x.shape), in x's dtype/device."""
    x, base = gscorer.x, gscorer.baseline
    a = alphas.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
    return base.unsqueeze(0) + a * (x - base).unsqueeze(0)


def _grad_at(gscorer: GradientScorer, alphas: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """(f, df/dx on the CPU in the model's dtype) at the path points ``alphas``: one batched
    gradient call. Reduce over the points first, then convert to float64 (see :func:`_weighted`):
    a float64 copy of a whole image batch costs more than the reduction."""
    values, grads = gscorer.gradient(_batch_of(gscorer, torch.as_tensor(alphas)))
    return values, grads.detach().cpu()


def _quadrature(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and weights summing to 1 for ``rule`` with ``n`` points."""
    if rule == "gauss_legendre":
        t, w = np.polynomial.legendre.leggauss(n)
        return (t + 1.0) / 2.0, w / 2.0
    if rule == "riemann_middle":
        return (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    # riemann_trapezoid: n points including both ends
    w = np.full(n, 1.0 / (n - 1))
    w[0] = w[-1] = 0.5 / (n - 1)
    return np.linspace(0.0, 1.0, n), w


def _weighted(grads: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """sum_k weights[k] * grads[k], summed in the gradients' dtype, returned as float64."""
    w = torch.as_tensor(weights, dtype=grads.dtype)
    return torch.tensordot(w, grads, dims=1).double()


# --- saliency / input x gradient -----------------------------------------------------------------
def saliency(gscorer: GradientScorer, *, absolute: bool = True) -> Attribution:
    """Score each unit by the sum over its elements of |df/dx| (the signed gradient if
    ``absolute=False``), taken at ``x``.

    Cost: 1 forward + 1 backward pass. Returns an Attribution with ``extras['value']`` = f(x).
    """
    check_units(gscorer)
    with measure(gscorer) as cost:
        values, grads = _grad_at(gscorer, np.ones(1))
    g = _cpu64(grads[0])
    attr = g.abs() if absolute else g
    return Attribution.from_scorer(
        gscorer,
        _scores(gscorer, attr),
        "saliency",
        {"absolute": absolute},
        cost,
        value=float(values[0]),
    )


def input_x_gradient(gscorer: GradientScorer) -> Attribution:
    """Score each unit by the sum over its elements of (x - x') * df/dx at ``x`` (signed).

    With a zero baseline this is the paper's gradient * input. Exact for linear models
    (equals integrated gradients there). Cost: 1 forward + 1 backward pass. Returns an
    Attribution with ``extras['value']`` = f(x).
    """
    check_units(gscorer)
    with measure(gscorer) as cost:
        values, grads = _grad_at(gscorer, np.ones(1))
    attr = (_cpu64(gscorer.x) - _cpu64(gscorer.baseline)) * _cpu64(grads[0])
    return Attribution.from_scorer(
        gscorer, _scores(gscorer, attr), "input_x_gradient", {}, cost, value=float(values[0])
    )


# --- integrated gradients ------------------------------------------------------------------------
def integrated_gradients(
    gscorer: GradientScorer,
    *,
    n_steps: int = 50,
    rule: Rule = "gauss_legendre",
    target_error: float | None = None,
    max_steps: int = 512,
) -> Attribution:
    """Integrated gradients along the straight path from the baseline ``x'`` to ``x``:
    (x - x') * integral_0^1 df/dx(x' + a (x - x')) da, summed into units.

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

    delta_x = _cpu64(gscorer.x) - _cpu64(gscorer.baseline)
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
                _, grads = _grad_at(gscorer, (np.arange(m // 2) + 0.5) / (m // 2))
                integral = integral / 2.0 + _cpu64(grads.sum(0)) / m
            else:
                alphas, weights = _quadrature(rule, n)
                values, grads = _grad_at(gscorer, alphas)
                integral = _weighted(grads, weights)
                if rule == "riemann_trapezoid":
                    f_base, f_x = float(values[0]), float(values[-1])
            del grads
            assert f_x is not None and f_base is not None
            scores = _scores(gscorer, delta_x * integral)
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


# --- smoothgrad ----------------------------------------------------------------------------------
def smoothgrad(
    gscorer: GradientScorer,
    *,
    n_samples: int = 25,
    noise_level: float = 0.15,
    multiply_by_inputs: bool = False,
    absolute: bool | None = None,
    seed: int | None = 0,
) -> Attribution:
    """The gradient averaged over ``n_samples`` noisy copies of ``x``, summed into units.

    Gaussian noise with std = ``noise_level`` * (max(x) - min(x)) is added only to elements that
    belong to a unit (``unit_index >= 0``). With ``multiply_by_inputs`` each sample's gradient is
    multiplied by its own (x_noisy - x') before averaging (SmoothGrad x input, as Captum's
    NoiseTunnel over input x gradient). ``absolute`` (default: True for the plain gradient, False
    with ``multiply_by_inputs``) takes |.| of the averaged element map before summing into units.
    All samples go through one batched ``GradientScorer.gradient`` call; noise comes from a
    ``torch.Generator`` seeded with ``seed`` (``None``: a fresh random seed).

    Cost: n_samples forward + n_samples backward passes. Returns an Attribution with
    ``extras['noise_std']`` and ``extras['mean_noisy_value']`` (mean f over the samples).
    """
    check_units(gscorer)
    if int(n_samples) != n_samples or n_samples < 1:
        raise InputError(f"n_samples must be an integer >= 1, got {n_samples}")
    if not noise_level >= 0:
        raise InputError(
            f"noise_level must be >= 0 (a fraction of the input's range), got {noise_level}"
        )
    n_samples = int(n_samples)
    if absolute is None:
        absolute = not multiply_by_inputs

    x = gscorer.x
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    std = float(noise_level) * float(x.max() - x.min())
    noise = torch.randn((n_samples, *x.shape), generator=gen, dtype=torch.float64) * std
    noise = noise * (gscorer.unit_index.to("cpu") >= 0).unsqueeze(0)
    noisy = x.unsqueeze(0) + noise.to(device=x.device, dtype=x.dtype)

    with measure(gscorer) as cost:
        values, grads = gscorer.gradient(noisy)
    grads = _cpu64(grads)
    if multiply_by_inputs:
        grads = (_cpu64(noisy) - _cpu64(gscorer.baseline).unsqueeze(0)) * grads
    attr = grads.mean(0)
    if absolute:
        attr = attr.abs()
    params = {
        "n_samples": n_samples,
        "noise_level": noise_level,
        "multiply_by_inputs": multiply_by_inputs,
        "absolute": absolute,
        "seed": seed,
    }
    return Attribution.from_scorer(
        gscorer,
        _scores(gscorer, attr),
        "smoothgrad",
        params,
        cost,
        noise_std=std,
        mean_noisy_value=float(np.mean(values)),
    )


__all__ = ["input_x_gradient", "integrated_gradients", "saliency", "smoothgrad"]
