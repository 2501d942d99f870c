"""SmoothGrad: the gradient averaged over noisy copies of the input, summed into units."""

from __future__ import annotations

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import check_units
from attribkit.methods.gradient.common import cpu64, unit_scores

__all__ = ["smoothgrad"]


def smoothgrad(
    gscorer: GradientScorer,
    *,
    n_samples: int = 25,
    noise_level: float = 0.15,
    multiply_by_inputs: bool = False,
    absolute: bool | None = None,
    seed: int | None = 0,
) -> Attribution:
    """The gradient averaged over ``n_samples`` noisy copies of ``x``, summed into units
    (Smilkov, Thorat, Kim, Viégas & Wattenberg, 'SmoothGrad: removing noise by adding noise',
    2017).

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
    grads = cpu64(grads)
    if multiply_by_inputs:
        grads = (cpu64(noisy) - cpu64(gscorer.baseline).unsqueeze(0)) * grads
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
        unit_scores(gscorer, attr),
        "smoothgrad",
        params,
        cost,
        noise_std=std,
        mean_noisy_value=float(np.mean(values)),
    )
