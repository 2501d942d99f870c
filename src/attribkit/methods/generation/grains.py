"""GrAInS: steering vectors from contrastive token attributions, and a steering hook.

Nguyen, Prasad, Stengel-Eskin, Bansal, 'GrAInS: Gradient-based Attribution for Inference-Time
Steering of LLMs and VLMs', 2025.

For each steering example (prompt, preferred response, dispreferred response):

1. Attribute the prompt's tokens with integrated gradients on the contrastive target
   ``f = log p(preferred | prompt) − log p(dispreferred | prompt)``, each term the
   teacher-forced log-probability of the *whole* response (summed over its tokens). The two
   responses need not have the same length, so this is not ``GenerationTask(foil=...)`` (whose
   foil is aligned token by token and scored on the preferred response's prefix); the
   interpolated prompt embeddings are shared by both sequences and the gradient of ``f`` is
   taken through both. The IG baseline is the embedding of the space token (``baseline=
   "space"``, content-free text; ``"pad"`` and the release's ``"zero"`` are options). On the
   bundled SmolLM2 the pad baseline (its end-of-turn token) left completeness errors up to
   600 % at 8 steps and selected punctuation and function words; with the space baseline at
   16 steps the top tokens of the training prompts of ``benchmarks/grains_demo.py`` are their
   sentiment words (11 of 12 positive, 12 of 12 negative).
   Chat-template tokens keep their real embeddings and are never selected.
2. Take the top-``k`` positively and the top-``k`` negatively attributed prompt tokens (only
   tokens with that sign; at least the single most extreme one), and replace each set with the
   token the baseline embeds (the space token; the pad token for ``"pad"`` and ``"zero"``).
3. Record the *raw* output of every decoder layer (through hooks, not HF's
   ``hidden_states`` whose last entry is normalised) at the last prompt token, the position
   from which the response is generated, for the original and both ablated prompts.
4. Per layer: ``v_pos`` = first principal component (of the centred differences, sign aligned
   with their mean) or the mean of ``h(orig) − h(ablated_pos)``; likewise ``v_neg``;
   ``v = v_pos − v_neg`` (``mode="both"``) or ``v_pos`` (``mode="pos"``).

:func:`steer` then adds ``alpha · v / ‖v‖`` to one (or several) decoder layers' outputs at all
positions, during prefill and each decoding step, and rescales every position's hidden state
back to its original L2 norm over the hidden axis (the release normalised over the sequence
axis by mistake; see the notes, §2.2.3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.methods.numerics import path_points, quadrature
from attribkit.tasks.generation import GenerationTask

CITE = (
    "Nguyen, Prasad, Stengel-Eskin, Bansal, 'GrAInS: Gradient-based Attribution for "
    "Inference-Time Steering of LLMs and VLMs', 2025"
)


@dataclass
class SteeringVectors:
    """Per-layer steering vectors from :func:`grains_vectors`.

    ``vectors`` is (len(layers), d) float32, row ``i`` for decoder layer ``layers[i]`` (0-based,
    the layer's output). ``hidden_norms`` is the mean L2 norm of that layer's last-token output
    on the original prompts (a scale for choosing ``alpha``). ``examples`` holds, per steering
    example, the selected tokens, the target ``f`` and the IG completeness error. ``cost`` is
    what building them spent."""

    vectors: np.ndarray
    layers: list[int]
    hidden_norms: np.ndarray
    method: str
    mode: str
    params: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)

    def vector(self, layer: int) -> np.ndarray:
        """The (d,) vector of decoder layer ``layer``."""
        if layer not in self.layers:
            raise InputError(f"no steering vector for layer {layer}: layers are {self.layers}")
        return self.vectors[self.layers.index(layer)]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.vectors.shape)

    def __repr__(self) -> str:
        return (
            f"SteeringVectors({len(self.layers)} layers × {self.vectors.shape[1]}, "
            f"method={self.method!r}, mode={self.mode!r}, {len(self.examples)} examples, "
            f"cost={self.cost})"
        )


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layer modules of a Hugging Face causal LM (``model.model.layers``,
    ``transformer.h`` or ``gpt_neox.layers``). No model calls."""
    for path in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return list(obj)
    raise InputError(
        f"cannot find the decoder layers of {type(model).__name__}: steering supports models "
        "with model.layers (Llama, Mistral, Qwen, ...), transformer.h or gpt_neox.layers"
    )


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def contrastive_prompt_ig(
    lm: Any,
    prompt: str,
    preferred: str,
    dispreferred: str,
    *,
    n_steps: int = 20,
    baseline: Literal["space", "pad", "zero"] = "space",
    batch_size: int = 10,
    chat: bool = True,
    cost: Cost | None = None,
) -> dict[str, Any]:
    """Integrated gradients of ``log p(preferred|prompt) − log p(dispreferred|prompt)`` (whole
    responses, teacher-forced) at the prompt's token embeddings, Gauss–Legendre rule.

    Returns a dict: ``prompt_ids``, ``positions`` (the user-prompt token positions, chat template
    excluded), ``scores`` (one per position, summed over the hidden axis), ``f`` (target at the
    input), ``gap`` (f(input) − f(baseline)) and ``completeness_error`` (|Σ scores − gap| /
    max(|gap|, 1e-3)). Costs 2·(n_steps + 2) forward and 2·n_steps backward passes, plus one
    per response for the chat template's cache (three the first time a model is used); added to
    ``cost`` when given."""
    task = GenerationTask(lm, prompt, preferred, chat=chat)
    foil = GenerationTask(lm, prompt, dispreferred, chat=chat)
    prompt_ids = task.prompt_ids
    positions = [p for p in range(len(prompt_ids)) if task.position_unit[p] >= 0]
    if not positions:
        raise InputError("the prompt has no tokens to attribute")
    if baseline not in ("space", "pad", "zero"):
        raise InputError(f"unknown baseline {baseline!r}: use 'space', 'pad' or 'zero'")
    n_p = len(prompt_ids)
    x = task.embeddings()[:n_p]
    base = task.baseline_embeddings(baseline)[:n_p]  # the chat template keeps its embeddings
    responses = {t: t.embeddings()[n_p:] for t in (task, foil)}

    def logprob(t: GenerationTask, xb: torch.Tensor) -> torch.Tensor:
        """Σ log p(t's response | prompt embeddings xb), the sum of t's rows; (B,). The chat
        template before the prompt is the same in every xb, so t's template cache serves it."""
        resp = responses[t].to(xb.dtype)
        return t.forward_embeds(torch.cat([xb, resp[None].expand(len(xb), -1, -1)], 1)).sum(-1)

    def f_of(xb: torch.Tensor) -> torch.Tensor:
        spent = task.meter.cost  # the LM's meter, which the foil's task shares
        spent.forward_passes += 2 * xb.shape[0]
        spent.batches += 2
        return logprob(task, xb) - logprob(foil, xb)

    with measure(task.meter) as spent:
        ig = _contrastive_ig(task, positions, x, base, f_of, n_steps, batch_size)
    if cost is not None:
        for name in ("forward_passes", "backward_passes", "batches"):
            setattr(cost, name, getattr(cost, name) + getattr(spent, name))
    return {"prompt_ids": prompt_ids, "positions": positions, **ig}


def _contrastive_ig(
    task: GenerationTask,
    positions: list[int],
    x: torch.Tensor,
    base: torch.Tensor,
    f_of: Any,
    n_steps: int,
    batch_size: int,
) -> dict[str, Any]:
    delta = x - base
    with torch.no_grad():
        ends = f_of(torch.stack([base, x])).double()
    gap = float(ends[1] - ends[0])
    alphas, weights = quadrature("gauss_legendre", n_steps)
    acc = torch.zeros(x.shape[0], dtype=torch.float64)
    for start in range(0, n_steps, batch_size):
        xb = path_points(x, base, alphas[start : start + batch_size]).requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(f_of(xb).sum(), xb)
        task.meter.cost.backward_passes += 2 * xb.shape[0]
        w = torch.tensor(weights[start : start + batch_size], dtype=torch.float64)
        acc += torch.einsum("bnd,b,nd->n", g.double(), w, delta.double())
    scores = acc[positions].numpy()
    if not np.isfinite(scores).all():
        raise ScorerError("integrated gradients gave non-finite scores; check the model")
    err = abs(float(scores.sum()) - gap) / max(abs(gap), 1e-3)
    return {
        "scores": scores,
        "f": float(ends[1]),
        "gap": gap,
        "completeness_error": err,
    }


def _select(scores: np.ndarray, k: int, sign: int) -> list[int]:
    """Indices of the up-to-k scores of the given sign, most extreme first (at least one)."""
    s = sign * scores
    order = [int(i) for i in np.argsort(-s, kind="stable")]
    picked = [i for i in order if s[i] > 0][:k]
    return picked or order[:1]


def _last_token_states(lm: Any, batch: list[list[int]], layers: list[int]) -> torch.Tensor:
    """Raw outputs of decoder ``layers`` at the last position, (B, len(layers), d) float64."""
    mods = decoder_layers(lm.model)
    got: dict[int, torch.Tensor] = {}

    def hook_for(i: int) -> Any:
        def hook(module: Any, args: tuple, out: Any) -> None:
            got[i] = _first(out)[:, -1].detach().double()

        return hook

    handles = [mods[i].register_forward_hook(hook_for(i)) for i in layers]
    ids = torch.tensor(batch, device=lm.device)
    try:
        with torch.inference_mode():
            lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    lm.tokens_processed += int(ids.numel())
    return torch.stack([got[i] for i in layers], dim=1).cpu()


def _direction(diffs: torch.Tensor, method: str) -> torch.Tensor:
    """(N, d) differences → (d,) direction: mean, or sign-aligned unit PCA-1."""
    mean = diffs.mean(0)
    if method == "mean":
        return mean
    centred = diffs - mean
    if diffs.shape[0] < 2 or float(centred.norm()) == 0.0:
        pc = mean / mean.norm().clamp_min(1e-12)
    else:
        pc = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    return pc if float(pc @ mean) >= 0 else -pc


def grains_vectors(
    lm: Any,
    examples: Sequence[tuple[str, str, str]],
    *,
    k: int = 10,
    n_steps: int = 20,
    method: Literal["pca", "mean"] = "pca",
    mode: Literal["both", "pos"] = "both",
    layers: Sequence[int] | None = None,
    baseline: Literal["space", "pad", "zero"] = "space",
    chat: bool = True,
) -> SteeringVectors:
    """GrAInS steering vectors from (prompt, preferred response, dispreferred response) triples.

    Returns :class:`SteeringVectors` with one (d,) vector per decoder layer in ``layers`` (all
    layers when None) pointing from dispreferred towards preferred behaviour (see the module
    docstring for the algorithm). Costs per example 2·(n_steps + 2) forward + 2·n_steps backward
    passes (contrastive IG) + 3 forward passes (hidden states); recorded in ``.cost``."""
    if method not in ("pca", "mean"):
        raise InputError(f"unknown method {method!r}: use 'pca' or 'mean'")
    if mode not in ("both", "pos"):
        raise InputError(f"unknown mode {mode!r}: use 'both' or 'pos'")
    if k < 1 or n_steps < 1:
        raise InputError("k and n_steps must be at least 1")
    examples = list(examples)
    if not examples:
        raise InputError("give at least one (prompt, preferred, dispreferred) example")
    for ex in examples:
        if not (
            isinstance(ex, (tuple, list)) and len(ex) == 3 and all(isinstance(s, str) for s in ex)
        ):
            raise InputError(
                f"each example must be a (prompt, preferred, dispreferred) triple of strings; "
                f"got {ex!r}"
            )
    n_layers = len(decoder_layers(lm.model))
    sel = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    bad = [i for i in sel if not 0 <= i < n_layers]
    if bad or not sel:
        raise InputError(f"layers {bad or sel} out of range: the model has {n_layers} layers")
    with measure(lm) as cost:  # every pass below is counted on the LM's meter
        # Selected tokens are replaced by the token the IG baseline embeds (the pad token for "zero").
        fill_id = lm.space_id if baseline == "space" else lm.pad_id
        d_pos, d_neg, norms, records = [], [], [], []
        tok = lm.tokenizer
        for prompt, preferred, dispreferred in examples:
            ig = contrastive_prompt_ig(
                lm,
                prompt,
                preferred,
                dispreferred,
                n_steps=n_steps,
                baseline=baseline,
                chat=chat,
            )
            ids, positions, scores = ig["prompt_ids"], ig["positions"], ig["scores"]
            top_pos = [positions[i] for i in _select(scores, k, +1)]
            top_neg = [positions[i] for i in _select(scores, k, -1)]
            abl_pos = [fill_id if p in top_pos else t for p, t in enumerate(ids)]
            abl_neg = [fill_id if p in top_neg else t for p, t in enumerate(ids)]
            h = _last_token_states(lm, [ids, abl_pos, abl_neg], sel)  # (3, L, d)
            lm.cost.forward_passes += 3
            lm.cost.batches += 1
            d_pos.append(h[0] - h[1])
            d_neg.append(h[0] - h[2])
            norms.append(h[0].norm(dim=-1))
            records.append(
                {
                    "prompt": prompt,
                    "positive_tokens": [tok.decode([ids[p]]) for p in top_pos],
                    "negative_tokens": [tok.decode([ids[p]]) for p in top_neg],
                    "f": ig["f"],
                    "gap": ig["gap"],
                    "completeness_error": ig["completeness_error"],
                }
            )
    dp, dn = torch.stack(d_pos), torch.stack(d_neg)  # (N, L, d)
    vecs = []
    for j in range(len(sel)):
        v = _direction(dp[:, j], method)
        if mode == "both":
            v = v - _direction(dn[:, j], method)
        vecs.append(v)
    vectors = torch.stack(vecs).float().numpy()
    if not np.isfinite(vectors).all():
        raise ScorerError("the steering vectors are not finite; check the model's hidden states")
    return SteeringVectors(
        vectors=vectors,
        layers=sel,
        hidden_norms=torch.stack(norms).mean(0).float().numpy(),
        method=method,
        mode=mode,
        params={"k": k, "n_steps": n_steps, "baseline": baseline, "chat": chat},
        examples=records,
        cost=cost,
    )


def steering_hook(direction: torch.Tensor, alpha: float) -> Any:
    """A forward hook adding ``alpha · direction / ‖direction‖`` to a decoder layer's output at
    every position, then rescaling each position's hidden state to its original norm (over the
    hidden axis). Works for tensor and tuple layer outputs."""
    unit = direction / direction.norm().clamp_min(1e-12)

    def hook(module: Any, args: tuple, out: Any) -> Any:
        h = _first(out)
        v = unit.to(device=h.device, dtype=h.dtype)
        moved = h + alpha * v
        scale = h.norm(dim=-1, keepdim=True) / (moved.norm(dim=-1, keepdim=True) + 1e-8)
        new = moved * scale
        if isinstance(out, tuple):
            return (new, *out[1:])
        if isinstance(out, list):
            return [new, *out[1:]]
        return new

    return hook


@contextmanager
def steer(
    lm: Any, vectors: SteeringVectors, layer: int | Sequence[int], alpha: float
) -> Iterator[None]:
    """Inside the block, every forward pass of ``lm`` (generation included) has ``alpha`` times
    the unit steering vector added to decoder ``layer``'s output (an int or several) at all
    positions, each position then rescaled to its original norm. ``alpha`` is in residual-stream
    units (compare with ``vectors.hidden_norms``); negative ``alpha`` steers away. The hooks are
    removed on exit, also on error. No model calls of its own."""
    mods = decoder_layers(lm.model)
    chosen = [layer] if isinstance(layer, (int, np.integer)) else list(layer)
    handles = []
    try:
        for i in chosen:
            v = torch.as_tensor(vectors.vector(int(i)), dtype=torch.float32)
            handles.append(mods[int(i)].register_forward_hook(steering_hook(v, float(alpha))))
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = [
    "SteeringVectors",
    "contrastive_prompt_ig",
    "decoder_layers",
    "grains_vectors",
    "steer",
    "steering_hook",
]
