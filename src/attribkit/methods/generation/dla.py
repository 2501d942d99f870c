"""Direct logit attribution (DLA): split one target logit into the residual-stream components
that write it.

For a pre-norm Llama-family decoder the residual stream at the last layer is a plain sum,
``x_L = x_0 + Σ_l a_l + Σ_l m_l`` (embedding, each layer's attention output, each layer's MLP
output), and the logit of token ``t`` is ``⟨γ ⊙ W_U[t], x_L⟩ / r`` with the final RMSNorm gain
``γ`` and scale ``r = sqrt(mean(x_L²) + ε)``. Freezing ``r`` at its value for that position
makes the logit exactly linear in the components::

    logit_t = Σ_c ⟨γ ⊙ W_U[t], c⟩ / r

Each attention output further splits over heads, because Llama's ``o_proj`` has no bias:
``a_l = Σ_h W_O[:, h·d_h:(h+1)·d_h] · z_h`` with ``z`` the input of ``o_proj``.

Only logits (and logit differences, with a ``foil``) are decomposed: probabilities and
log-probabilities are not additive over components. The raw ``x_L`` is captured with a hook on
the final norm (Hugging Face's ``hidden_states[-1]`` is already normalised).

Elhage et al., 'A Mathematical Framework for Transformer Circuits', 2021 (direct path
decomposition); nostalgebraist, 'interpreting GPT: the logit lens', 2020.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.units import Unit
from attribkit.models.lm.tokens import single_token_id
from attribkit.tasks.generation import GenerationTask

#: Model types (``config.model_type``) whose residual stream DLA decomposes exactly: pre-norm
#: decoders with RMSNorm, bias-free ``o_proj`` and no unembedding bias.
DLA_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
CITE = (
    "Elhage et al., 'A Mathematical Framework for Transformer Circuits', 2021; "
    "nostalgebraist, 'interpreting GPT: the logit lens', 2020"
)
#: Relative tolerance of the self-test |Σ components − logit| ≤ TOL · max(1, |logit|).
TOL = 1e-3


def _check_model(model: Any) -> None:
    """Raise InputError unless ``model`` is a supported Llama-family causal LM."""
    cfg = model.config
    get_text = getattr(cfg, "get_text_config", None)
    cfg = get_text() if callable(get_text) else cfg
    kind = getattr(cfg, "model_type", None)
    name = type(model).__name__
    supported = (
        f"direct_logit_attribution supports Llama-family decoders (model types "
        f"{', '.join(DLA_FAMILIES)}: pre-norm RMSNorm, bias-free o_proj, no unembedding bias)"
    )
    if kind not in DLA_FAMILIES:
        raise InputError(f"{supported}; {name} has model type {kind!r}")
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    norm = getattr(inner, "norm", None)
    head = getattr(model, "lm_head", None)
    if layers is None or norm is None or head is None:
        raise InputError(f"{supported}; {name} has no model.layers / model.norm / lm_head")
    if not hasattr(norm, "variance_epsilon") or getattr(norm, "bias", None) is not None:
        raise InputError(f"{supported}; the final norm of {name} is not an RMSNorm")
    if getattr(head, "bias", None) is not None:
        raise InputError(f"{supported}; the unembedding of {name} has a bias")
    for layer in layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        o_proj = getattr(attn, "o_proj", None)
        if o_proj is None or mlp is None:
            raise InputError(f"{supported}; a layer of {name} has no self_attn.o_proj or mlp")
        if getattr(o_proj, "bias", None) is not None:
            raise InputError(f"{supported}; o_proj of {name} has a bias")


def _token_id(lm: Any, token: int | str, what: str) -> int:
    return single_token_id(
        lm, token, what, "DLA explains one token's logit: pass a single-token string or a token id"
    )


def direct_logit_attribution(
    lm: Any,
    prompt: str | None = None,
    response: str | None = None,
    *,
    row: int = 0,
    token: int | str | None = None,
    foil: int | str | None = None,
    heads: bool = True,
    chat: bool = True,
    max_new_tokens: int = 16,
) -> Attribution:
    """Direct logit attribution of one logit (or logit difference) of a generation.

    The target is the logit of the response token ``row`` (0-based index into the response's
    tokens), or of ``token`` (id or single-token string) at the position predicting that row;
    with ``foil`` (id or single-token string) it is ``logit(target) − logit(foil)``, which equals
    ``log p(target) − log p(foil)``. ``lm`` may be a :class:`GenerationTask` instead (its prompt,
    response and chat setting are used; its own foil, if any, is the default ``foil`` for rows
    it attributes). ``response=None`` generates it greedily (``max_new_tokens``).

    Returns an Attribution whose units are the residual components ``"embed"``, ``"L0.attn"``,
    ``"L0.mlp"``, ..., in stream order; ``scores`` (1-D) sum to the target up to float error.
    Per-head terms are *not* units (they would double-count the attention terms): they are in
    ``extras["heads"]`` (layers × heads, each row sums to that layer's ``"Lℓ.attn"`` score) with
    labels ``extras["head_labels"]`` (``"L0.H0"``, ...). Other extras: ``logit`` (the model's
    actual target value), ``sum`` (of the components), ``error`` (|sum − logit|),
    ``final_norm_scale`` (1/r), ``position`` (the sequence position read), ``token_id``,
    ``foil_id``. Raises ScorerError when the error exceeds 1e-3 · max(1, |logit|).

    Costs one forward pass (counted on the returned cost and on ``lm.cost``).
    """
    if isinstance(lm, GenerationTask):
        task = lm
    else:
        if prompt is None:
            raise InputError("pass the prompt (or a GenerationTask as the first argument)")
        task = GenerationTask(lm, prompt, response, chat=chat, max_new_tokens=max_new_tokens)
    model_lm = task.lm
    model = model_lm.model
    _check_model(model)
    n_resp = len(task.response_ids)
    if not isinstance(row, (int, np.integer)) or not 0 <= int(row) < n_resp:
        raise InputError(f"row {row!r} is out of range: the response has {n_resp} tokens")
    row = int(row)
    tid = task.response_ids[row] if token is None else _token_id(model_lm, token, "token")
    if foil is None and task.foil_ids is not None and row in task.rows:
        fid: int | None = task.foil_ids[task.rows.index(row)]
    else:
        fid = None if foil is None else _token_id(model_lm, foil, "foil")
    if fid is not None and fid == tid:
        raise InputError("the foil is the target token itself: the contrast would be 0")
    position = len(task.prompt_ids) + row - 1
    ids = torch.tensor([task.ids[: position + 1]], device=model_lm.device)

    inner = model.model
    layers = list(inner.layers)
    captured: dict[str, torch.Tensor] = {}

    def first(out: Any) -> torch.Tensor:
        return out[0] if isinstance(out, (tuple, list)) else out

    def keep(name: str, pre: bool = False) -> Any:
        if pre:

            def pre_hook(module: Any, args: tuple, kwargs: dict) -> None:
                x = args[0] if args else kwargs["hidden_states"]
                captured[name] = x[0, position].detach().double()

            return pre_hook

        def hook(module: Any, args: tuple, out: Any) -> None:
            captured[name] = first(out)[0, position].detach().double()

        return hook

    handles = [layers[0].register_forward_pre_hook(keep("embed", True), with_kwargs=True)]
    handles.append(inner.norm.register_forward_pre_hook(keep("x_L", True), with_kwargs=True))
    for i, layer in enumerate(layers):
        handles.append(layer.self_attn.register_forward_hook(keep(f"L{i}.attn")))
        handles.append(layer.mlp.register_forward_hook(keep(f"L{i}.mlp")))
        if heads:
            handles.append(
                layer.self_attn.o_proj.register_forward_pre_hook(
                    keep(f"L{i}.z", True), with_kwargs=True
                )
            )
    try:
        with measure(task.meter) as cost, torch.inference_mode():
            out = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                logits_to_keep=1,
                use_cache=False,
            )
            task.meter.cost.forward_passes += 1
            task.meter.cost.batches += 1
    finally:
        for h in handles:
            h.remove()
    model_lm.tokens_processed += int(ids.shape[1])

    logits = out.logits[0, -1].double()
    logit = float(logits[tid] - (logits[fid] if fid is not None else 0.0))
    w_u = model.get_output_embeddings().weight
    gamma = inner.norm.weight.detach().double()
    direction = w_u[tid].detach().double()
    if fid is not None:
        direction = direction - w_u[fid].detach().double()
    u = gamma * direction
    x_l = captured["x_L"]
    inv_r = float(torch.rsqrt(x_l.pow(2).mean() + inner.norm.variance_epsilon))

    names = ["embed"] + [f"L{i}.{part}" for i in range(len(layers)) for part in ("attn", "mlp")]
    comps = torch.stack([captured[n] for n in names])
    scores = (comps @ u * inv_r).cpu().numpy()
    total = float(scores.sum())
    if not (np.isfinite(scores).all() and np.isfinite(logit)):
        raise ScorerError("the model gave non-finite activations or logits; check its weights")
    error = abs(total - logit)
    if error > TOL * max(1.0, abs(logit)):
        raise ScorerError(
            f"the components sum to {total:.6g} but the model's target is {logit:.6g} "
            f"(error {error:.3g}): this model's residual stream is not the plain sum "
            "embedding + attention + MLP outputs that DLA assumes"
        )

    extras: dict[str, Any] = {
        "logit": logit,
        "sum": total,
        "error": error,
        "final_norm_scale": inv_r,
        "position": position,
        "token_id": tid,
        "foil_id": fid,
        "token": model_lm.tokenizer.decode([tid]),
        "foil": None if fid is None else model_lm.tokenizer.decode([fid]),
    }
    if heads:
        head_rows, labels = [], []
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            w_o = attn.o_proj.weight.detach().double()  # (d, H·d_h)
            z = captured[f"L{i}.z"]
            n_heads = int(getattr(attn, "num_heads", 0) or model_lm.n_heads)
            d_h = z.shape[-1] // n_heads
            # ⟨u, W_O[:, h] z_h⟩ / r = ((u W_O)[h] · z_h) / r
            per = ((u @ w_o) * z).reshape(n_heads, d_h).sum(-1) * inv_r
            head_rows.append(per.cpu().numpy().tolist())
            labels.append([f"L{i}.H{h}" for h in range(n_heads)])
        extras["heads"] = head_rows
        extras["head_labels"] = labels

    what = "logit" if fid is None else "logit difference"
    tok_text = extras["token"] if fid is None else f"{extras['token']} − {extras['foil']}"
    target = {
        "kind": "dla",
        "description": f"{what} of {tok_text!r} at the position predicting response token {row}"
        + (" (= log p(target) − log p(foil))" if fid is not None else ""),
        "prompt": task.prompt,
        "response": task.response,
        "row": row,
        "token_id": tid,
        "foil_id": fid,
        "model": getattr(model_lm, "name", type(model).__name__),
        "chat": task.chat,
    }
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
    params = {"row": row, "token": token, "foil": foil, "heads": heads, "chat": task.chat}
    return Attribution(
        units=units,
        scores=scores,
        method="direct_logit_attribution",
        target=target,
        params=params,
        cost=cost,
        input={"kind": "components", "n_layers": len(layers)},
        extras=extras,
    )


__all__ = ["DLA_FAMILIES", "direct_logit_attribution"]
