"""What the generation methods share: the meter, counting a batch on it, and the batched values
and per-row gradients of a GenerationTask at input embeddings.

Gradients are taken at the input embeddings. One forward pass over prompt + response gives every
row's target at once (teacher forcing), and one batched backward gives every row's gradient
(``torch.autograd.grad(..., is_grads_batched=True)``; a loop over rows where the model does not
support it), so a gradient method costs forward passes per input evaluated and backward passes
per (input, row) pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from attribkit.core.cost import Cost, measure
from attribkit.core.registry import check_units
from attribkit.tasks.generation import GenerationTask

__all__ = ["GAP_FLOOR", "count", "metered", "row_gradients", "values_at"]

#: model class name -> whether it takes batched gradients (learnt on the first failure)
_BATCHED_GRADS: dict[str, bool] = {}
# Completeness errors are relative to the target gap, or to this when the gap is smaller (a
# row the baseline barely changes: its error is float noise, not a failed integral).
GAP_FLOOR = 1e-3


@contextmanager
def metered(task: GenerationTask) -> Iterator[Cost]:
    """Check the task's columns, then measure everything its meter counts inside the block
    (template cache included, when built there): the Cost yielded is filled on exit."""
    check_units(task)
    with measure(task.meter) as cost:
        yield cost


def count(task: GenerationTask, forward: int, backward: int = 0) -> None:
    """Count one batch of ``forward`` inputs (and ``backward`` gradient rows) on the meter."""
    spent = task.meter.cost
    spent.forward_passes += forward
    spent.backward_passes += backward
    spent.batches += 1


def row_gradients(
    task: GenerationTask, xb: torch.Tensor, rows: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row values (B, R) and their gradients (R, B, positions, d) for embeddings ``xb``, for
    the task's rows (or the subset ``rows`` of their indices: backward passes are per row).
    Counts one batch of B forward and B·R backward passes."""
    xb = xb.detach().requires_grad_(True)
    with torch.enable_grad():
        out = task.forward_embeds(xb)
        if rows is not None:
            out = out[:, rows]
        b, r = out.shape
        key = type(task.lm.model).__name__
        grads = None
        if _BATCHED_GRADS.get(key, True) and r > 1:
            eye = torch.eye(r, dtype=out.dtype, device=out.device)[:, None, :].expand(r, b, r)
            try:
                (grads,) = torch.autograd.grad(
                    out, xb, grad_outputs=eye, is_grads_batched=True, retain_graph=True
                )
            except RuntimeError:
                _BATCHED_GRADS[key] = False
        if grads is None:
            grads = torch.stack(
                [
                    torch.autograd.grad(out[:, i].sum(), xb, retain_graph=i < r - 1)[0]
                    for i in range(r)
                ]
            )
    count(task, b, b * r)
    return out.detach(), grads.detach()


def values_at(task: GenerationTask, xb: torch.Tensor) -> torch.Tensor:
    """Row values (B, R) for embeddings ``xb`` without gradients; counts one batch of B
    forward passes."""
    with torch.no_grad():
        out = task.forward_embeds(xb)
    count(task, xb.shape[0])
    return out
