"""Saliency for generated text: the norm of each row's gradient at each input token's embedding."""

from __future__ import annotations

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.methods.generation.common import metered, row_gradients
from attribkit.tasks.generation import GenerationTask

__all__ = ["saliency"]


def saliency(task: GenerationTask, *, norm: str = "l2") -> Attribution:
    """|∂f_t/∂e_j| per row t and input token j: the L2 (``norm="l2"``) or L1 norm of the
    gradient at each token's embedding. Unsigned. Costs 1 forward + rows backward passes."""
    if norm not in ("l1", "l2"):
        raise InputError("norm must be 'l1' or 'l2'")
    with metered(task) as cost:
        _, g = row_gradients(task, task.embeddings()[None])
        g = g[:, 0].double()
        per_pos = g.norm(dim=-1) if norm == "l2" else g.abs().sum(-1)
    return task.result(task.to_columns(per_pos.cpu().numpy()), "saliency", {"norm": norm}, cost)
