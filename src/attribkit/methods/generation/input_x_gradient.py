"""Input × gradient for generated text: each input token's embedding times each row's gradient
there, reduced over the embedding dimension."""

from __future__ import annotations

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.methods.generation.common import metered, row_gradients
from attribkit.tasks.generation import GenerationTask

__all__ = ["input_x_gradient"]


def input_x_gradient(task: GenerationTask, *, norm: str | None = "l2") -> Attribution:
    """e_j ⊙ ∂f_t/∂e_j per row t and input token j, reduced over the embedding dimension by its
    ``norm``: ``"l2"`` (default, unsigned; Inseq's default for gradient methods) or ``"l1"``;
    ``None`` sums it instead — the signed first-order estimate of what zeroing the embedding
    changes.

    The signed sum is a poor guide on a real LM: on the copy prompts of
    ``benchmarks/copy_task.py`` (SmolLM2) the copied word gets the *most negative* sum, because
    the linearisation at the embedding says nothing about removing it; its top token is the copied
    word on 0 of 8 prompts, against 7 of 8 for the L2 norm (and 7 of 8 on 8 held-out copy
    prompts). Costs 1 forward + rows backward passes."""
    if norm not in ("l2", "l1", None):
        raise InputError(f"norm must be 'l2', 'l1' or None (signed sum), got {norm!r}")
    with metered(task) as cost:
        x = task.embeddings()
        _, g = row_gradients(task, x[None])
        prod = g[:, 0].double() * x.double()
        if norm == "l2":
            per_pos = prod.norm(dim=-1)
        else:
            per_pos = prod.abs().sum(-1) if norm == "l1" else prod.sum(-1)
    return task.result(
        task.to_columns(per_pos.cpu().numpy()),
        "input_x_gradient",
        {"norm": norm},
        cost,
    )
