"""What the gradient methods share: the gradient at points of the straight path and the sum of
an element-wise attribution into unit scores.

Every gradient method takes a :class:`GradientScorer` (an input tensor ``x`` of any shape — token
embeddings ``[T, d]``, an image ``[C, H, W]``, features ``[d]`` — a baseline ``x'`` and a batched
differentiable target), computes an element-wise attribution of the same shape as ``x`` and sums
it into one score per unit with ``GradientScorer.to_units``. Elements whose ``unit_index`` is -1
belong to no unit: they are never interpolated or noised and get no score.

Cost is counted per input row: one row through the model is one forward pass, one gradient of
one row is one backward pass (``GradientScorer.gradient`` counts both).
"""

from __future__ import annotations

import numpy as np
import torch

from attribkit.core.gradient import GradientScorer
from attribkit.methods.numerics import path_points

__all__ = ["cpu64", "gradient_at", "unit_scores"]


def cpu64(t: torch.Tensor) -> torch.Tensor:
    """A detached float64 CPU copy (accumulation in double precision keeps completeness tight)."""
    return t.detach().to("cpu", torch.float64)


def unit_scores(gscorer: GradientScorer, attr: torch.Tensor) -> np.ndarray:
    """Sum an element-wise attribution (shape of ``x``) into unit scores. No model calls."""
    return gscorer.to_units(attr.reshape(gscorer.x.shape))


def gradient_at(gscorer: GradientScorer, alphas: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """(f, df/dx on the CPU in the model's dtype) at the path points x' + α (x − x') for each α
    in ``alphas``: one batched gradient call, len(alphas) forward + backward passes. Reduce over
    the points first, then convert to float64: a float64 copy of a whole image batch costs more
    than the reduction."""
    values, grads = gscorer.gradient(path_points(gscorer.x, gscorer.baseline, alphas))
    return values, grads.detach().cpu()
