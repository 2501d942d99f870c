"""The differentiable counterpart of :class:`Scorer`, used by gradient methods.

A :class:`GradientScorer` holds an input tensor ``x`` (token embeddings, an image, a feature
vector), a baseline ``x'`` and a differentiable function ``forward(batch) -> one value per row``.
It maps every element of ``x`` to a unit so that per-element attributions sum into per-unit
scores. Elements mapped to ``-1`` belong to no unit (a chat template's tokens, say): they stay at
their real value in every interpolation, so completeness holds over the units alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.units import Unit, Units


class GradientScorer(CostMeter):
    """``forward(xb)`` for a batch ``xb`` of shape (B, *x.shape) returns a (B,) tensor.

    Args:
        forward: differentiable batched target function.
        x: the input to explain.
        baseline: the reference input (default zeros), same shape as ``x``.
        unit_index: integer tensor broadcastable to ``x.shape`` giving each element's unit
            (``-1`` = no unit). Default: every element is its own unit.
        units: the :class:`Units` described by ``unit_index`` (default: one per element).
        target: JSON-serialisable description of the target.
        batch_size: most rows per forward/backward call.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        baseline: torch.Tensor | None = None,
        unit_index: torch.Tensor | None = None,
        units: Units | None = None,
        target: Any = None,
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        x = torch.as_tensor(x).detach()
        if not torch.is_floating_point(x):
            raise InputError(f"gradient methods need a floating-point input, got {x.dtype}")
        if x.numel() == 0:
            raise InputError("the input tensor is empty: there is nothing to attribute")
        self.forward_fn, self.x, self.target, self.batch_size = forward, x, target, batch_size
        if unit_index is None:
            unit_index = torch.arange(x.numel()).reshape(x.shape)
        try:
            self.unit_index = (
                torch.as_tensor(unit_index, dtype=torch.long).expand(x.shape).contiguous()
            )
        except RuntimeError as e:
            raise InputError(
                f"unit_index of shape {tuple(unit_index.shape)} does not broadcast to x {tuple(x.shape)}"
            ) from e
        n = int(self.unit_index.max()) + 1
        if units is None:
            units = Units([Unit(i, f"x{i}") for i in range(n)])
        if len(units) != n:
            raise InputError(f"unit_index refers to {n} units but {len(units)} units were given")
        self.units = units
        base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype)
        if base.shape != x.shape:
            raise InputError(
                f"baseline shape {tuple(base.shape)} differs from input shape {tuple(x.shape)}"
            )
        outside = (self.unit_index < 0).to(x.device)
        self.baseline = torch.where(outside, x, base)

    @property
    def n_units(self) -> int:
        return len(self.units)

    def _check(self, out: torch.Tensor, rows: int) -> torch.Tensor:
        if out.shape != (rows,):
            raise ScorerError(
                f"forward returned shape {tuple(out.shape)} for {rows} inputs; it must return ({rows},)"
            )
        if not torch.isfinite(out).all():
            raise ScorerError(
                "forward returned a non-finite value (NaN or inf); check the model and target"
            )
        return out

    @torch.no_grad()
    def value(self, xb: torch.Tensor) -> np.ndarray:
        """f for each row of ``xb``; counts forward passes."""
        outs = []
        with self.timed():
            for chunk in torch.split(xb, self.batch_size):
                outs.append(self._check(self.forward_fn(chunk), len(chunk)))
                self.cost.forward_passes += len(chunk)
                self.cost.batches += 1
        return torch.cat(outs).detach().cpu().double().numpy()

    def gradient(self, xb: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """(f(xb) as an array, df/dx as a tensor like ``xb``); counts forward and backward passes."""
        vals, grads = [], []
        with self.timed():
            for chunk in torch.split(xb, self.batch_size):
                chunk = chunk.detach().requires_grad_(True)
                with torch.enable_grad():
                    out = self._check(self.forward_fn(chunk), len(chunk))
                    (g,) = torch.autograd.grad(out.sum(), chunk)
                vals.append(out.detach())
                grads.append(g.detach())
                self.cost.forward_passes += len(chunk)
                self.cost.backward_passes += len(chunk)
                self.cost.batches += 1
        return torch.cat(vals).cpu().double().numpy(), torch.cat(grads)

    def to_units(self, attr: torch.Tensor) -> np.ndarray:
        """Sum an element-wise attribution (shape of ``x``) into one score per unit."""
        idx = self.unit_index.cpu().reshape(-1)
        keep = idx >= 0
        out = torch.zeros(self.n_units, dtype=torch.float64)
        out.index_add_(0, idx[keep], attr.detach().cpu().reshape(-1)[keep].double())
        return out.numpy()
