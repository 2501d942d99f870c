"""Attention weights as attribution for generated text: one layer's (or the layer mean's) head-averaged
attention, and attention rollout, both read from one eager forward pass (:func:`_attention_maps`)."""

from __future__ import annotations

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError, ScorerError
from attribkit.methods.generation.common import count, metered
from attribkit.tasks.generation import GenerationTask

__all__ = ["attention", "attention_rollout"]


def _attention_maps(task: GenerationTask) -> torch.Tensor:
    """(layers, positions, positions) head-averaged attention of one eager forward pass."""
    model = task.lm.model
    previous = getattr(model.config, "_attn_implementation", None)
    ids = torch.tensor([task.ids], device=task.lm.device)
    try:
        if previous != "eager":
            model.set_attn_implementation("eager")
        with torch.inference_mode():
            out = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                output_attentions=True,
                use_cache=False,
                logits_to_keep=1,  # the weights are what is read; skip the vocabulary head
            )
    finally:
        if previous not in (None, "eager"):
            model.set_attn_implementation(previous)
    att = getattr(out, "attentions", None)
    if not att or any(a is None for a in att):
        raise InputError(f"{type(model).__name__} returned no attention weights")
    count(task, 1)
    task.lm.tokens_processed += ids.shape[1]
    maps = torch.stack([a[0].float().mean(0) for a in att])
    if not torch.isfinite(maps).all():
        raise ScorerError("the model gave non-finite attention weights; check its weights")
    return maps


def _rows_from_map(task: GenerationTask, m: torch.Tensor) -> np.ndarray:
    """Rows of an attention map: query position predicting each attributed response token."""
    n_p = len(task.prompt_ids)
    q = [n_p - 1 + r for r in task.rows]
    return m[q].double().cpu().numpy()


def attention(task: GenerationTask, *, layer: int | str = "last") -> Attribution:
    """Attention weight from the position predicting each generated token to every input token,
    averaged over heads, from one layer (``"last"``, the default, or an index, -1 = last) or
    averaged over all layers (``layer="mean"``).

    The last layer is the default because it is the attention that feeds the prediction: on
    eight copy prompts with SmolLM2 ("Say the word zebra." → "Zebra", ...;
    ``benchmarks/copy_task.py``) the last layer puts the most weight on the copied word in 8 of
    8, the all-layer mean in 4 of 8 (early layers attend to anchors such as " the"). Costs 1
    forward pass with eager attention."""
    with metered(task) as cost:
        maps = _attention_maps(task)
        if layer == "mean":
            m = maps.mean(0)
        elif layer == "last":
            m = maps[-1]
        elif isinstance(layer, int) and -len(maps) <= layer < len(maps):
            m = maps[layer]
        else:
            raise InputError(
                f"layer must be 'last', 'mean' or an index in [-{len(maps)}, {len(maps)})"
            )
    scores = task.to_columns(_rows_from_map(task, m))
    return task.result(scores, "attention", {"layer": layer}, cost)


def attention_rollout(
    task: GenerationTask, *, residual: float = 0.5, start_layer: int | None = None
) -> Attribution:
    """Attention rollout: the product over layers ``start_layer..L-1`` of ``residual·I +
    (1 − residual)·Ā_l`` (Ā = head mean, rows renormalised), read at each generated token's
    predicting position.

    ``start_layer`` defaults to the last third of the layers (layer ⌊2L/3⌋). Rolled out over
    every layer of a decoder the product collapses onto the first tokens (attention sinks): on
    eight copy prompts with SmolLM2 the full rollout never puts the most weight on the copied
    word, the last-third rollout always does (``benchmarks/copy_task.py``). ``start_layer=0`` is the paper's full rollout.
    Costs 1 forward pass with eager attention."""
    if not 0.0 <= residual < 1.0:
        raise InputError("residual must be in [0, 1)")
    with metered(task) as cost:
        maps = _attention_maps(task).double()
        n_layers, n = maps.shape[0], maps.shape[-1]
        start = 2 * n_layers // 3 if start_layer is None else start_layer
        if not 0 <= start < n_layers:
            raise InputError(f"start_layer must be in [0, {n_layers}) for this model, got {start}")
        eye = torch.eye(n, dtype=maps.dtype)
        roll = eye
        for a in maps[start:]:
            a = residual * eye + (1 - residual) * a
            a = a / a.sum(-1, keepdim=True)
            roll = a @ roll
    scores = task.to_columns(_rows_from_map(task, roll))
    params = {"residual": residual, "start_layer": start}
    return task.result(scores, "attention_rollout", params, cost)
