"""Leave-one-out / occlusion: remove one unit at a time and measure the drop."""

from __future__ import annotations

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.registry import check_units
from attribkit.core.scorer import Scorer


def leave_one_out(scorer: Scorer) -> Attribution:
    """Score unit i by f(all) − f(all without i).

    Exact for additive (linear) value functions. Cost: n + 1 forward passes, in one batch
    sequence. Returns an Attribution with ``extras['full_value']``.
    """
    check_units(scorer)
    n = scorer.n_units
    masks = ~np.eye(n, dtype=bool)
    with measure(scorer) as cost:
        full = scorer.full()
        values = scorer(masks)
    return Attribution.from_scorer(scorer, full - values, "loo", {}, cost, full_value=full)


occlusion = leave_one_out
