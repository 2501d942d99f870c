"""Neuron-level knowledge attribution for Llama-like decoders: which FFN value neurons and
attention heads write the next-token prediction, which earlier layers feed them (query layers),
and which layers an edit should touch (the locate step of ACE).

Everything is read at the *last* position of the prompt (raw text, no chat template, by default)
with the final RMSNorm scale frozen at its value for that position (``r = sqrt(mean(x_L²) + ε)``,
``x_L`` the final residual)::

    logp(v) = log softmax(W_U · (γ ⊙ v / r))[target]

- ``score="logprob_increase"`` (Yu & Ananiadou): FFN neuron j of layer l with coefficient
  ``c_j`` (the input of ``down_proj``) scores ``logp(r_l + c_j · W_down[:, j]) − logp(r_l)``,
  ``r_l`` the residual before the MLP (``h_in + attn``); head h scores
  ``logp(h_in_l + W_O[:, h] z_h) − logp(h_in_l)``. Exact and costly: one read-out row per
  neuron (``n_layers × n_neurons`` rows of ``vocab`` logits), run in chunks, counted in
  ``extras["readout_rows"]``.
- ``score="dla"``: the neuron's direct logit contribution ``c_j ⟨W_down[:, j], γ ⊙ W_U[t]⟩ / r``
  (heads: ``⟨γ ⊙ W_U[t], W_O[:, h] z_h⟩ / r``), linear and cheap; per layer these sum to the
  ``L{l}.mlp`` / ``L{l}.attn`` terms of :func:`attribkit.methods.generation.direct_logit_attribution`.
- ``score="magnitude"``: ``|c_j| · ‖W_down[:, j]‖`` (heads ``‖W_O[:, h] z_h‖``), the
  activation baseline of the notes' ablation table (target-blind).

Query layers follow the ACE notebook: for each of the top value neurons, the inner product of
every earlier residual component (embedding, attention and MLP outputs) with the neuron's key,
normalised by their sum and weighted by the neuron's score, summed over neurons.

Papers: Yu & Ananiadou, 'Neuron-Level Knowledge Attribution in Large Language Models', EMNLP 2024;
Yang et al., 'ACE: Attribution-Controlled Knowledge Editing for Multi-hop Factual Recall',
ICLR 2026 (arXiv 2510.07896).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.units import Unit
from attribkit.models.lm.tokens import single_token_id

__all__ = [
    "EditLayers",
    "ablate_neurons",
    "last_logprobs",
    "locate_edit_layers",
    "neuron_attribution",
    "query_layers",
]

Score = Literal["logprob_increase", "dla", "magnitude"]
Kind = Literal["ffn", "heads"]
Key = Literal["gate_up", "down"]
SCORES = ("logprob_increase", "dla", "magnitude")
KINDS = ("ffn", "heads")
KEYS = ("gate_up", "down")
CITE = (
    "Yu & Ananiadou, 'Neuron-Level Knowledge Attribution in Large Language Models', EMNLP 2024; "
    "Yang et al., 'ACE: Attribution-Controlled Knowledge Editing for Multi-hop Factual Recall', "
    "ICLR 2026"
)
#: neurons per read-out chunk of the exact score (rows × vocab logits held at once)
CHUNK = 256


# ---------------------------------------------------------------------------- model checks


def check_llama_like(lm: Any) -> Any:
    """Return ``lm.model`` after checking it is a Llama-like causal LM: ``model.layers[i]`` with
    ``self_attn.o_proj`` (no bias) and ``mlp.{gate_proj, up_proj, down_proj}`` (no bias), an
    RMSNorm ``model.norm`` and an ``lm_head`` without bias. InputError otherwise. No model calls."""
    model = getattr(lm, "model", None)
    name = type(model).__name__
    need = (
        "neuron attribution and editing need a Llama-like decoder (model.model.layers[i] with "
        "self_attn.o_proj and mlp.gate_proj/up_proj/down_proj, an RMSNorm model.model.norm and "
        "an lm_head without bias: Llama, Mistral, Qwen2/3, SmolLM)"
    )
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    norm = getattr(inner, "norm", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if layers is None or norm is None or head is None or len(layers) == 0:
        raise InputError(f"{need}; {name} has no model.layers / model.norm / lm_head")
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if eps is None or getattr(norm, "bias", None) is not None:
        raise InputError(f"{need}; the final norm of {name} is not an RMSNorm")
    if getattr(head, "bias", None) is not None:
        raise InputError(f"{need}; the unembedding of {name} has a bias")
    for i, layer in enumerate(layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        parts = {
            "self_attn.o_proj": getattr(attn, "o_proj", None),
            "mlp.down_proj": getattr(mlp, "down_proj", None),
            "mlp.gate_proj": getattr(mlp, "gate_proj", None),
            "mlp.up_proj": getattr(mlp, "up_proj", None),
        }
        missing = [k for k, v in parts.items() if v is None]
        if missing:
            raise InputError(f"{need}; layer {i} of {name} has no {', '.join(missing)}")
        if any(getattr(v, "bias", None) is not None for v in parts.values()):
            raise InputError(f"{need}; a projection of layer {i} of {name} has a bias")
    return model


def target_id(lm: Any, target: int | str) -> int:
    """The token id of a one-token ``target`` (a token id, or a string that tokenizes to one
    token, e.g. ``" Paris"`` with its leading space). InputError naming the pieces otherwise."""
    return single_token_id(
        lm,
        target,
        "target",
        "neuron attribution explains one next token: pass its first token (e.g. {first}) or a "
        "token id",
    )


def prompt_ids(lm: Any, prompt: str, chat: bool = False) -> list[int]:
    """Token ids of ``prompt`` as the model reads it (raw text with the tokenizer's special
    tokens by default; chat-formatted with ``chat=True``). No model calls."""
    _check_prompt(prompt)
    return list(lm._prompt_ids(prompt, chat))


def _check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: pass the text whose next token to explain")


def _norm_eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


# ---------------------------------------------------------------------------- one traced pass


@dataclass
class _Trace:
    """Last-position internals of one prompt (float64, CPU): residual entering each layer,
    attention output, o_proj input, post-attention residual, MLP coefficients and output."""

    h_in: list[torch.Tensor]
    attn: list[torch.Tensor]
    z: list[torch.Tensor]
    coef: list[torch.Tensor]
    mlp: list[torch.Tensor]
    x_final: torch.Tensor
    logits: torch.Tensor
    position: int


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _trace(lm: Any, ids: list[int]) -> _Trace:
    """One forward pass over ``ids`` keeping the last position's internals (counted on
    ``lm.cost``)."""
    model = lm.model
    inner = model.model
    layers = list(inner.layers)
    pos = len(ids) - 1
    got: dict[str, torch.Tensor] = {}

    def pre(name: str) -> Any:
        def hook(_m: Any, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            got[name] = x[0, pos].detach().double().cpu()

        return hook

    def post(name: str) -> Any:
        def hook(_m: Any, _a: Any, out: Any) -> None:
            got[name] = _first(out)[0, pos].detach().double().cpu()

        return hook

    handles = [inner.norm.register_forward_pre_hook(pre("final"), with_kwargs=True)]
    for i, layer in enumerate(layers):
        handles += [
            layer.register_forward_pre_hook(pre(f"h{i}"), with_kwargs=True),
            layer.self_attn.register_forward_hook(post(f"a{i}")),
            layer.self_attn.o_proj.register_forward_pre_hook(pre(f"z{i}"), with_kwargs=True),
            layer.mlp.down_proj.register_forward_pre_hook(pre(f"c{i}"), with_kwargs=True),
            layer.mlp.register_forward_hook(post(f"m{i}")),
        ]
    x = torch.tensor([ids], device=lm.device)
    try:
        with lm.timed(), torch.inference_mode():
            out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    lm.cost.forward_passes += 1
    lm.cost.batches += 1
    lm.tokens_processed += len(ids)
    n = len(layers)
    missing = [
        k for k in ["final"] + [f"{p}{i}" for i in range(n) for p in "hazcm"] if k not in got
    ]
    if missing:
        raise InputError(
            f"the forward pass never reached {missing[:4]}: this model does not run its layers "
            "as a Llama-like decoder does"
        )
    logits = out.logits[0, -1].detach().double().cpu()
    if not torch.isfinite(logits).all():
        raise ScorerError("the model gave non-finite logits; check its weights and dtype")
    return _Trace(
        h_in=[got[f"h{i}"] for i in range(n)],
        attn=[got[f"a{i}"] for i in range(n)],
        z=[got[f"z{i}"] for i in range(n)],
        coef=[got[f"c{i}"] for i in range(n)],
        mlp=[got[f"m{i}"] for i in range(n)],
        x_final=got["final"],
        logits=logits,
        position=pos,
    )


class _Readout:
    """``logp(v)`` with the final norm scale frozen at the traced position (float64)."""

    def __init__(self, model: Any, trace: _Trace, tid: int) -> None:
        norm = model.model.norm
        self.inv_r = float(torch.rsqrt(trace.x_final.pow(2).mean() + _norm_eps(norm)))
        self.gamma = norm.weight.detach().double().cpu()
        self.w_u = model.get_output_embeddings().weight.detach().cpu()
        self.tid = tid
        self.rows = 0

    def logp(self, v: torch.Tensor) -> torch.Tensor:
        """log p(target) for each row of ``v`` (rows × d)."""
        h = (v * self.gamma * self.inv_r).to(self.w_u.dtype)
        logits = (h @ self.w_u.T).double()
        self.rows += v.shape[0]
        return logits[:, self.tid] - torch.logsumexp(logits, dim=-1)

    @property
    def direction(self) -> torch.Tensor:
        """``γ ⊙ W_U[target] / r``: the linear (DLA) read-out of the target logit."""
        return self.gamma * self.w_u[self.tid].double() * self.inv_r


def _ffn_scores(model: Any, trace: _Trace, read: _Readout, score: str) -> np.ndarray:
    """(n_layers × n_neurons) FFN value-neuron scores."""
    rows = []
    for i, layer in enumerate(model.model.layers):
        w_down = layer.mlp.down_proj.weight.detach().double().cpu()  # (d, n)
        c = trace.coef[i]
        if score == "dla":
            rows.append((c * (read.direction @ w_down)).numpy())
        elif score == "magnitude":
            rows.append((c.abs() * w_down.norm(dim=0)).numpy())
        else:
            base = trace.h_in[i] + trace.attn[i]
            ref = read.logp(base[None])[0]
            out = torch.empty(c.shape[0], dtype=torch.float64)
            for s in range(0, c.shape[0], CHUNK):
                vec = base[None] + c[s : s + CHUNK, None] * w_down[:, s : s + CHUNK].T
                out[s : s + CHUNK] = read.logp(vec) - ref
            rows.append(out.numpy())
    return np.stack(rows)


def _head_vectors(model: Any, trace: _Trace, i: int, n_heads: int) -> torch.Tensor:
    """(heads × d): each head's o_proj output at the traced position."""
    w_o = model.model.layers[i].self_attn.o_proj.weight.detach().double().cpu()  # (d, H·d_h)
    z = trace.z[i]
    d_h = z.shape[0] // n_heads
    return torch.einsum("dhk,hk->hd", w_o.reshape(w_o.shape[0], n_heads, d_h), z.view(n_heads, d_h))


def _n_heads(model: Any) -> int:
    cfg = model.config
    get_text = getattr(cfg, "get_text_config", None)
    cfg = get_text() if callable(get_text) else cfg
    return int(cfg.num_attention_heads)


def _head_scores(model: Any, trace: _Trace, read: _Readout, score: str) -> np.ndarray:
    """(n_layers × n_heads) attention-head scores."""
    n_heads = _n_heads(model)
    rows = []
    for i in range(len(model.model.layers)):
        vecs = _head_vectors(model, trace, i, n_heads)
        if score == "dla":
            rows.append((vecs @ read.direction).numpy())
        elif score == "magnitude":
            rows.append(vecs.norm(dim=1).numpy())
        else:
            base = trace.h_in[i]
            rows.append((read.logp(base[None] + vecs) - read.logp(base[None])[0]).numpy())
    return np.stack(rows)


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise InputError(f"{what}={value!r} is not one of {', '.join(map(repr, allowed))}")


def neuron_attribution(
    lm: Any,
    prompt: str,
    target: int | str,
    score: Score = "logprob_increase",
    kind: Kind = "ffn",
    *,
    chat: bool = False,
) -> Attribution:
    """Score every FFN value neuron (``kind="ffn"``) or attention head (``kind="heads"``) of a
    Llama-like ``lm`` for the next token ``target`` at the last position of ``prompt``.

    Returns an Attribution over (layer, neuron) units, labels ``"L27 N846"`` (heads
    ``"L3 H5"``), meta ``{"layer", "neuron"}`` (or ``{"layer", "head"}``), in layer-major order;
    ``extras["layer_map"]`` is the (n_layers × n_neurons) score matrix for a layer × neuron map,
    ``extras["top"]`` the 20 best units as ``(layer, index, score)``; also ``logprob`` (the
    model's log p(target)), ``final_norm_scale`` (1/r), ``readout_rows`` (how many
    vocab-sized read-outs the score ran), ``token_id``, ``position``. ``a.top(k)`` lists the best.

    ``score``: ``"logprob_increase"`` (Yu & Ananiadou 2024, as in ACE: exact, one read-out per
    neuron, ~n_layers × n_neurons × vocab × d multiply-adds), ``"dla"`` (direct logit
    attribution, one matrix-vector product per layer) or ``"magnitude"`` (activation ×
    ‖W_down column‖, target-blind). Raw prompt (``chat=False``) by default, as the notes measured.

    Costs one forward pass (counted on ``lm.cost`` and the returned cost) plus the read-outs.
    """
    _check_choice(score, SCORES, "score")
    _check_choice(kind, KINDS, "kind")
    model = check_llama_like(lm)
    tid = target_id(lm, target)
    ids = prompt_ids(lm, prompt, chat)
    with measure(lm) as cost:
        trace = _trace(lm, ids)
        read = _Readout(model, trace, tid)
        with lm.timed():
            if kind == "ffn":
                grid = _ffn_scores(model, trace, read, score)
            else:
                grid = _head_scores(model, trace, read, score)
    if not np.isfinite(grid).all():
        raise ScorerError("the neuron scores are not finite; check the model's weights and dtype")
    n_layers, n_units = grid.shape
    word, key = ("N", "neuron") if kind == "ffn" else ("H", "head")
    units = [
        Unit(i * n_units + j, f"L{i} {word}{j}", meta={"layer": i, key: j})
        for i in range(n_layers)
        for j in range(n_units)
    ]
    flat = grid.ravel()
    best = np.argsort(-flat, kind="stable")[:20]
    logp = float(torch.log_softmax(trace.logits, -1)[tid])
    token = lm.tokenizer.decode([tid])
    extras = {
        "layer_map": grid.tolist(),
        "top": [[int(b // n_units), int(b % n_units), float(flat[b])] for b in best],
        "logprob": logp,
        "final_norm_scale": read.inv_r,
        "readout_rows": read.rows,
        "token_id": tid,
        "token": token,
        "position": trace.position,
        "cite": CITE,
    }
    target_d = {
        "kind": "next_token",
        "description": f"log p({token!r}) at the last position of the prompt ({score})",
        "prompt": prompt,
        "token_id": tid,
        "chat": chat,
        "model": getattr(lm, "name", type(model).__name__),
    }
    return Attribution(
        units=units,
        scores=flat,
        method=f"neuron_attribution.{score}",
        target=target_d,
        params={"score": score, "kind": kind, "chat": chat},
        cost=cost,
        input={"kind": "neurons" if kind == "ffn" else "heads", "shape": [n_layers, n_units]},
        extras=extras,
    )


# ---------------------------------------------------------------------------- query layers


def _neuron_key(model: Any, trace: _Trace, layer: int, j: int, key: str) -> torch.Tensor:
    """The direction whose inner product with a residual component says how much the component
    drives FFN neuron ``j`` of ``layer``.

    ``"gate_up"``: the gradient of the neuron's coefficient ``act(g_j)·u_j`` with respect to the
    residual at the traced position, with the post-attention RMSNorm scale frozen:
    ``(act'(g_j) u_j W_gate[j] + act(g_j) W_up[j]) ⊙ γ / r``. ``"down"``: the ACE notebook's
    ``W_down[:, j] ⊙ γ`` (the neuron's *output* vector used as a key)."""
    layer_m = model.model.layers[layer]
    norm = layer_m.post_attention_layernorm
    gamma = norm.weight.detach().double().cpu()
    if key == "down":
        return layer_m.mlp.down_proj.weight[:, j].detach().double().cpu() * gamma
    resid = trace.h_in[layer] + trace.attn[layer]
    inv_r = torch.rsqrt(resid.pow(2).mean() + _norm_eps(norm))
    x = resid * gamma * inv_r
    w_g = layer_m.mlp.gate_proj.weight[j].detach().double().cpu()
    w_u = layer_m.mlp.up_proj.weight[j].detach().double().cpu()
    g = (w_g @ x).clone().requires_grad_(True)
    with torch.enable_grad():
        a = layer_m.mlp.act_fn(g)
        (da,) = torch.autograd.grad(a, g)
    u = w_u @ x
    return (da.detach() * u * w_g + a.detach() * w_u) * gamma * inv_r


def query_layers(
    lm: Any,
    prompt: str,
    target: int | str,
    *,
    neurons: Attribution | None = None,
    top: int = 30,
    key: Key = "gate_up",
    score: Score = "dla",
    chat: bool = False,
) -> Attribution:
    """Query-layer scores (ACE): which earlier components drive the top value neurons.

    For each of the ``top`` best FFN value neurons (of ``neurons``, or of a fresh
    :func:`neuron_attribution` with ``score``), the inner product of every earlier residual
    component (embedding, ``attn_i``, ``mlp_i`` for i < l, and ``attn_l``) with the neuron's key,
    divided by the sum of those products and multiplied by the neuron's score; summed over the
    neurons. ``key="gate_up"`` (default) uses the neuron's input key (the gradient of its
    coefficient through gate_proj/up_proj, post-attention norm scale frozen); ``key="down"``
    reproduces the ACE notebook's ``W_down[:, j] ⊙ γ_post``, which is the neuron's output vector
    (a quirk of the reference code, kept as an option).

    Returns an Attribution over the components ``"embed"``, ``"L0.attn"``, ``"L0.mlp"``, ...
    (meta ``{"layer", "component"}``), with ``extras["layer_scores"]`` (attn + mlp per layer),
    ``extras["neurons"]`` (the value neurons used, ``(layer, neuron, score)``), ``key``.

    Costs one forward pass, plus the neuron attribution's cost when ``neurons`` is None.
    Yu & Ananiadou 2024 (query neurons); Yang et al., ACE, ICLR 2026.
    """
    _check_choice(key, KEYS, "key")
    if not isinstance(top, (int, np.integer)) or top < 1:
        raise InputError(f"top must be a positive number of value neurons, got {top!r}")
    model = check_llama_like(lm)
    with measure(lm) as cost:
        if neurons is None:
            neurons = neuron_attribution(lm, prompt, target, score=score, chat=chat)
        elif neurons.input.get("kind") != "neurons":
            raise InputError("query_layers needs an FFN neuron attribution (kind='ffn')")
        trace = _trace(lm, prompt_ids(lm, prompt, chat))
        n_layers = len(model.model.layers)
        comps = [trace.h_in[0]] + [
            c for i in range(n_layers) for c in (trace.attn[i], trace.mlp[i])
        ]
        scores = np.zeros(len(comps))
        used = []
        with lm.timed():
            for u, s in neurons.top(top):
                layer, j = int(u.meta["layer"]), int(u.meta["neuron"])
                k = _neuron_key(model, trace, layer, j, key)
                n_before = 1 + 2 * layer + 1  # embed, (attn, mlp) for i < layer, attn_layer
                ips = torch.stack([comps[c] @ k for c in range(n_before)]).numpy()
                total = float(ips.sum())
                if abs(total) < 1e-12:
                    continue
                scores[:n_before] += ips / total * s
                used.append([layer, j, float(s)])
    names = ["embed"] + [f"L{i}.{p}" for i in range(n_layers) for p in ("attn", "mlp")]
    units = [
        Unit(
            k,
            n,
            meta={"component": "embed"}
            if n == "embed"
            else {"layer": int(n[1:].split(".")[0]), "component": n.split(".")[1]},
        )
        for k, n in enumerate(names)
    ]
    layer_scores = (scores[1::2] + scores[2::2]).tolist()
    return Attribution(
        units=units,
        scores=scores,
        method="query_layers",
        target=neurons.target,
        params={"top": int(top), "key": key, "score": neurons.params.get("score"), "chat": chat},
        cost=cost,
        input={"kind": "components", "n_layers": n_layers},
        extras={"layer_scores": layer_scores, "neurons": used, "key": key, "cite": CITE},
    )


@dataclass
class EditLayers:
    """Layers chosen for an edit from the attributions (ACE's locate step).

    ``value_layers``: the layers holding most of the top value neurons' score; ``query_layers``:
    the best layers by query score, not already value layers; ``groups``: the edit groups in
    order (query group first, as ACE's hparams list them), for :func:`~attribkit.internals.
    editing.edit`. ``neurons`` / ``queries``: the attributions they came from; ``cost``: both."""

    value_layers: list[int]
    query_layers: list[int]
    groups: list[list[int]]
    neurons: Attribution
    queries: Attribution
    cost: Cost = field(default_factory=Cost)

    @property
    def layers(self) -> list[int]:
        """All selected layers, sorted."""
        return sorted(set(self.value_layers) | set(self.query_layers))


def locate_edit_layers(
    lm: Any,
    prompt: str,
    target: int | str,
    *,
    n_value: int = 3,
    n_query: int = 3,
    top: int = 30,
    score: Score = "dla",
    key: Key = "gate_up",
    reserve_top: int = 3,
    within: tuple[int, int] | None = None,
    chat: bool = False,
) -> EditLayers:
    """Choose value and query layers for editing the fact ``prompt → target`` (ACE).

    Value layers: the ``n_value`` layers with the largest summed positive score among the
    ``top`` best FFN value neurons (ties broken by the layer's total positive neuron score),
    among all but the last ``reserve_top`` layers: the edit writes at the subject's last token,
    and a change there reaches the prediction only through attention layers after it (ACE's
    Qwen3-8B value group, layers 28–32 of 36, also stops 3 layers short of the top).
    Query layers: the ``n_query`` layers with the largest query score (:func:`query_layers`,
    attn + mlp) among the layers that are not value layers. ACE wrote such layers into its
    hparams by hand; here they are picked per fact. ``target`` is the answer the model gives now
    (the fact being located), one token. ``within=(lo, hi)`` draws both groups from layers
    lo..hi−1 only (a window of layers known to take edits, e.g. the middle third); the
    attributions still cover every layer.

    Costs two forward passes plus the neuron read-outs (cheap with the default ``score="dla"``).
    Yang et al., ACE, ICLR 2026; Yu & Ananiadou, EMNLP 2024.
    """
    for name, v in (("n_value", n_value), ("n_query", n_query), ("top", top)):
        if not isinstance(v, (int, np.integer)) or v < (1 if name != "n_query" else 0):
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    model = check_llama_like(lm)
    n_layers = len(model.model.layers)
    if not isinstance(reserve_top, (int, np.integer)) or reserve_top < 0:
        raise InputError(f"reserve_top must be a non-negative integer, got {reserve_top!r}")
    if n_value + n_query + reserve_top > n_layers:
        raise InputError(
            f"n_value + n_query + reserve_top = {n_value + n_query + reserve_top} layers "
            f"exceeds the model's {n_layers}"
        )
    window = range(n_layers) if within is None else _window(within, n_layers)
    allowed = [i for i in window if i < n_layers - reserve_top]
    if len(allowed) < n_value or len(window) < n_value + n_query:
        raise InputError(
            f"the layers allowed ({window.start}..{window.stop - 1}, value layers below "
            f"{n_layers - reserve_top}) cannot hold {n_value} value and {n_query} query layers; "
            "widen `within` or lower reserve_top"
        )
    with measure(lm) as cost:
        neurons = neuron_attribution(lm, prompt, target, score=score, chat=chat)
        queries = query_layers(lm, prompt, target, neurons=neurons, top=top, key=key, chat=chat)
    grid = np.asarray(neurons.extras["layer_map"])
    in_top = np.zeros(n_layers)
    for u, s in neurons.top(top):
        in_top[int(u.meta["layer"])] += max(s, 0.0)
    total = np.clip(grid, 0, None).sum(axis=1)
    order = sorted(allowed, key=lambda i: (-in_top[i], -total[i], i))
    value = sorted(order[:n_value])
    q = np.asarray(queries.extras["layer_scores"])
    rest = sorted((i for i in window if i not in value), key=lambda i: (-q[i], i))
    query = sorted(rest[:n_query])
    groups = [g for g in (query, value) if g]
    return EditLayers(value, query, groups, neurons, queries, cost)


def _window(within: Any, n_layers: int) -> range:
    try:
        lo, hi = (int(x) for x in within)
    except (TypeError, ValueError):
        raise InputError(
            f"within must be a pair (lo, hi) of layer indices, got {within!r}"
        ) from None
    if not 0 <= lo < hi <= n_layers:
        raise InputError(f"within=({lo}, {hi}) must satisfy 0 <= lo < hi <= {n_layers}")
    return range(lo, hi)


# ---------------------------------------------------------------------------- read-outs, ablation


def last_logprobs(
    lm: Any, prompts: Sequence[str], *, chat: bool = False, batch_size: int = 16
) -> np.ndarray:
    """The next-token log-probabilities at the last position of each prompt: (n_prompts ×
    vocab), float32. Raw prompts by default. Costs one forward pass per prompt, in
    ``ceil(n / batch_size)`` model calls (counted on ``lm.cost``)."""
    for p in prompts:
        _check_prompt(p)
    return lm.next_token_logprobs(list(prompts), chat=chat, batch_size=batch_size)


def ablate_neurons(
    lm: Any,
    prompt: str,
    target: int | str,
    neuron_sets: Sequence[Sequence[tuple[int, int]]],
    *,
    chat: bool = False,
) -> tuple[float, np.ndarray]:
    """log p(target) at the last position of ``prompt``, clean and with each set of FFN neurons
    ``(layer, neuron)`` zeroed (their ``down_proj`` input set to 0 at the last position only):
    returns ``(clean, ablated)`` with one ablated value per set. The notes' faithfulness check
    (zeroing the top-k value neurons should lower log p much more than k random ones).

    Costs ``len(neuron_sets) + 1`` forward passes in one model call (counted on ``lm.cost``)."""
    model = check_llama_like(lm)
    tid = target_id(lm, target)
    ids = prompt_ids(lm, prompt, chat)
    layers = list(model.model.layers)
    n_neurons = layers[0].mlp.down_proj.weight.shape[1]
    rows = len(neuron_sets) + 1
    per_layer: dict[int, list[tuple[int, int]]] = {}
    for b, group in enumerate(neuron_sets, start=1):
        for layer, j in group:
            if not (0 <= int(layer) < len(layers) and 0 <= int(j) < n_neurons):
                raise InputError(
                    f"neuron ({layer}, {j}) is outside the model's {len(layers)} layers × "
                    f"{n_neurons} neurons"
                )
            per_layer.setdefault(int(layer), []).append((b, int(j)))

    def zeroing(entries: list[tuple[int, int]]) -> Any:
        bs = torch.tensor([b for b, _ in entries])
        js = torch.tensor([j for _, j in entries])

        def hook(_m: Any, args: tuple) -> tuple:
            x = args[0].clone()
            x[bs, -1, js] = 0
            return (x, *args[1:])

        return hook

    handles = [
        layers[i].mlp.down_proj.register_forward_pre_hook(zeroing(e)) for i, e in per_layer.items()
    ]
    x = torch.tensor([ids] * rows, device=lm.device)
    try:
        with lm.timed(), torch.inference_mode():
            logits = model(
                input_ids=x, attention_mask=torch.ones_like(x), logits_to_keep=1, use_cache=False
            ).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    lm.cost.forward_passes += rows
    lm.cost.batches += 1
    lm.tokens_processed += rows * len(ids)
    lp = torch.log_softmax(logits.double(), -1)[:, tid].cpu().numpy()
    return float(lp[0]), lp[1:]
