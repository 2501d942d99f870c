"""Token-attribution methods for generated text (kind ``generation``): each takes a
:class:`~attribkit.tasks.generation.GenerationTask` and returns a rows × columns Attribution.

Gradients are taken at the input embeddings. One forward pass over prompt + response gives every
row's target at once (teacher forcing), and one batched backward gives every row's gradient
(``torch.autograd.grad(..., is_grads_batched=True)``; a loop over rows where the model does not
support it), so a gradient method costs forward passes per input evaluated and backward passes
per (input, row) pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import check_units
from attribkit.methods.numerics import quadrature
from attribkit.tasks.generation import GenerationTask

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


def _count(task: GenerationTask, forward: int, backward: int = 0) -> None:
    """Count one batch of ``forward`` inputs (and ``backward`` gradient rows) on the meter."""
    spent = task.meter.cost
    spent.forward_passes += forward
    spent.backward_passes += backward
    spent.batches += 1


def _row_gradients(
    task: GenerationTask, xb: torch.Tensor, rows: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row values (B, R) and their gradients (R, B, positions, d) for embeddings ``xb``, for
    the task's rows (or the subset ``rows`` of their indices: backward passes are per row)."""
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
    _count(task, b, b * r)
    return out.detach(), grads.detach()


def _values(task: GenerationTask, xb: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = task.forward_embeds(xb)
    _count(task, xb.shape[0])
    return out


def saliency(task: GenerationTask, *, norm: str = "l2") -> Attribution:
    """|∂f_t/∂e_j| per row t and input token j: the L2 (``norm="l2"``) or L1 norm of the
    gradient at each token's embedding. Unsigned. Costs 1 forward + rows backward passes."""
    if norm not in ("l1", "l2"):
        raise InputError("norm must be 'l1' or 'l2'")
    with metered(task) as cost:
        _, g = _row_gradients(task, task.embeddings()[None])
        g = g[:, 0].double()
        per_pos = g.norm(dim=-1) if norm == "l2" else g.abs().sum(-1)
    return task.result(task.to_columns(per_pos.cpu().numpy()), "saliency", {"norm": norm}, cost)


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
        _, g = _row_gradients(task, x[None])
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


def _nodes(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights; the trapezoid rule uses ``steps`` intervals (steps + 1
    nodes) so that doubling the steps keeps every node already evaluated."""
    if rule == "riemann_trapezoid":
        return quadrature(rule, steps + 1)
    return quadrature(rule, steps)


def integrated_gradients(
    task: GenerationTask,
    *,
    n_steps: int = 32,
    baseline: str | torch.Tensor = "space",
    rule: str = "riemann_trapezoid",
    target_error: float | None = 0.02,
    max_steps: int = 256,
    batch_size: int = 8,
) -> Attribution:
    """Integrated gradients of every row along the straight path from the baseline embeddings
    (``"space"``: every column at the embedding of a space token, content-free text; ``"pad"``:
    the pad token's — on SmolLM2 that is the end-of-turn token, a far more disruptive path that
    needed up to 4× the steps and misplaced the copy task's deciding token; ``"zero"``; or a
    tensor) to the input. Chat-template
    tokens stay at their real embeddings, so completeness holds over the columns: each row sums
    to f_t(input) − f_t(baseline).

    Rows whose relative completeness error exceeds ``target_error`` are refined: the steps
    double (up to ``max_steps``) for those rows only, and with the default trapezoid rule the
    nodes already evaluated are reused, so reaching 128 steps costs 129 nodes, not 32 + 64 + 128.
    Each row keeps its best estimate. ``extras``: ``completeness_error`` and ``steps`` per row,
    ``target_gap``. Costs 2 forward passes for the path ends, plus per node one forward and one
    backward per row still refined (``gauss_legendre`` nodes are not nested)."""
    if rule not in ("riemann_trapezoid", "gauss_legendre", "riemann_middle"):
        raise InputError("rule must be 'riemann_trapezoid', 'gauss_legendre' or 'riemann_middle'")
    if n_steps < 1 or max_steps < n_steps:
        raise InputError("need 1 <= n_steps <= max_steps")
    x = task.embeddings()
    base = task.baseline_embeddings(baseline)
    delta = (x - base).double()
    n_rows, n_pos = task.n_rows, x.shape[0]
    best_err = np.full(n_rows, np.inf)
    best_pos = np.zeros((n_rows, n_pos))
    best_steps = np.zeros(n_rows, dtype=int)
    with metered(task) as cost:
        ends = _values(task, torch.stack([base, x])).double()
        gap = (ends[1] - ends[0]).cpu().numpy()
        contrib: dict[float, np.ndarray] = {}  # node -> (rows, positions) g·Δ, NaN = not run
        active = list(range(n_rows))
        steps = n_steps
        while active:
            alphas, weights = _nodes(rule, steps)
            alphas = np.round(alphas, 12)  # nested nodes compare equal across levels
            todo = [a for a in alphas if a not in contrib or np.isnan(contrib[a][active]).any()]
            for i in range(0, len(todo), batch_size):
                chunk = todo[i : i + batch_size]
                a = torch.tensor(chunk, dtype=x.dtype)
                xb = base[None] + a[:, None, None] * (x - base)[None]
                _, g = _row_gradients(task, xb, rows=active)  # (r, b, N, d)
                part = torch.einsum("rbnd,nd->brn", g.double(), delta).cpu().numpy()
                for alpha, values in zip(chunk, part, strict=True):
                    row = contrib.setdefault(alpha, np.full((n_rows, n_pos), np.nan))
                    row[active] = values
            per_pos = sum(w * contrib[a][active] for a, w in zip(alphas, weights, strict=True))
            err = np.abs(per_pos.sum(1) - gap[active]) / np.maximum(np.abs(gap[active]), GAP_FLOOR)
            for j, r in enumerate(active):
                if err[j] < best_err[r]:
                    best_err[r], best_pos[r], best_steps[r] = err[j], per_pos[j], steps
            if target_error is None or steps * 2 > max_steps:
                break
            active = [r for r in active if best_err[r] > target_error]
            steps *= 2
    params = {
        "n_steps": n_steps,
        "baseline": baseline if isinstance(baseline, str) else "tensor",
        "rule": rule,
        "target_error": target_error,
        "max_steps": max_steps,
    }
    return task.result(
        task.to_columns(best_pos),
        "integrated_gradients",
        params,
        cost,
        completeness_error=best_err.tolist(),
        steps=best_steps.tolist(),
        target_gap=gap.tolist(),
    )


def occlusion(task: GenerationTask, *, batch_size: int = 16) -> Attribution:
    """Leave-one-token-out: f_t(input) − f_t(input with column j's tokens replaced by the pad
    token). Positions stay put, so one occluded pass gives every row. Costs columns + 1 forward
    passes, batched."""
    ids = torch.tensor(task.ids, device=task.lm.device)
    pos_unit = torch.tensor(task.position_unit, device=ids.device)
    seqs = [ids] + [torch.where(pos_unit == u, task.lm.pad_id, ids) for u in range(task.n_units)]
    with metered(task) as cost:
        outs = []
        for start in range(0, len(seqs), batch_size):
            chunk = torch.stack(seqs[start : start + batch_size])
            outs.append(task.forward_ids(chunk))
            _count(task, len(chunk))
        vals = torch.cat(outs).double().cpu().numpy()  # (1 + columns, rows)
    scores = vals[0][:, None] - vals[1:].T
    scores[~task.visible()] = np.nan
    return task.result(scores, "occlusion", {}, cost)


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
    _count(task, 1)
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


__all__: list[Any] = []
