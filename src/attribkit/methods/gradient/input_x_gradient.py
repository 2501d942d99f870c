"""Input × gradient: (x − x') times the gradient at the input, summed into units."""

from __future__ import annotations

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import check_units
from attribkit.methods.gradient.common import cpu64, gradient_at, unit_scores

__all__ = ["input_x_gradient"]


def input_x_gradient(gscorer: GradientScorer) -> Attribution:
    """Score each unit by the sum over its elements of (x - x') * df/dx at ``x`` (signed;
    Shrikumar et al., 'Not Just a Black Box: Learning Important Features Through Propagating
    Activation Differences', 2016).

    With a zero baseline this is the paper's gradient * input. Exact for linear models
    (equals integrated gradients there). Cost: 1 forward + 1 backward pass. Returns an
    Attribution with ``extras['value']`` = f(x).
    """
    check_units(gscorer)
    with measure(gscorer) as cost:
        values, grads = gradient_at(gscorer, np.ones(1))
    attr = (cpu64(gscorer.x) - cpu64(gscorer.baseline)) * cpu64(grads[0])
    return Attribution.from_scorer(
        gscorer, unit_scores(gscorer, attr), "input_x_gradient", {}, cost, value=float(values[0])
    )
