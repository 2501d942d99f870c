"""Saliency: the gradient of the target at the input, summed into units."""

from __future__ import annotations

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import check_units
from attribkit.methods.gradient.common import cpu64, gradient_at, unit_scores

__all__ = ["saliency"]


def saliency(gscorer: GradientScorer, *, absolute: bool = True) -> Attribution:
    """Score each unit by the sum over its elements of |df/dx| (the signed gradient if
    ``absolute=False``), taken at ``x`` (Simonyan, Vedaldi & Zisserman, 'Deep Inside
    Convolutional Networks: Visualising Image Classification Models and Saliency Maps', 2014).

    Cost: 1 forward + 1 backward pass. Returns an Attribution with ``extras['value']`` = f(x).
    """
    check_units(gscorer)
    with measure(gscorer) as cost:
        values, grads = gradient_at(gscorer, np.ones(1))
    g = cpu64(grads[0])
    attr = g.abs() if absolute else g
    return Attribution.from_scorer(
        gscorer,
        unit_scores(gscorer, attr),
        "saliency",
        {"absolute": absolute},
        cost,
        value=float(values[0]),
    )
