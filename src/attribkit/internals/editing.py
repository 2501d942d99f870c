"""Closed-form multi-layer fact editing (MEMIT / PMET style, as ACE applies it) and its report.

An edit request ``{"prompt": "The Eiffel Tower is located in the country of", "subject":
"Eiffel Tower", "target_new": " Italy"}`` is written into a *copy* of the model, per group of
layers (ACE: the query group, then the value group; any list of layers works):

1. **Target residual.** A vector δ added to the residual stream at the output of the group's last
   layer L, at the subject's last token, is optimised (Adam) so that the prompt, behind a few
   short context prefixes, predicts ``target_new``: loss = mean NLL(target_new) + ``kl_factor`` ·
   KL(original ‖ edited) of the next token after ``"{subject} is a"`` + ``weight_decay`` ·
   ‖δ‖ / ‖h‖², with ‖δ‖ clamped to ``clamp_norm_factor`` · ‖h‖. z* = h + δ.
2. **Spread over layers and modules.** For each (layer l, module m) of the group in forward order
   (``self_attn.o_proj`` then ``mlp.down_proj``: ACE writes both), with k the module's input at the
   subject's last token (mean over the prefixes) and h the current residual at L:
   ``ΔW = (z* − h) / √(pairs left) · kᵀ (k kᵀ + λ C)⁻¹`` (a rank-one MEMIT update), applied before
   the next pair's h is read. C = E[k kᵀ] of the module's input over the tokens of a text sample.

Deviations from the papers' code, all documented here: C comes from a *given* text sample (or
text the model samples itself) instead of 100 k Wikipedia samples; defaults are scaled to CPU and
a 135 M model: 20 optimisation steps (ACE 30), 3 generated context prefixes (ACE 5 generations)
and ``mom2_update_weight`` λ = 750 (ACE 6000 for Qwen3-8B, whose down_proj input is 8 × wider:
E[kᵀC⁻¹k] grows with the input width, so λ is scaled by 1536 / 12288 to keep the same share
of the requested change); one δ on the residual stream is optimised (MEMIT) and split over both
modules, where PMET optimises separate attention and FFN targets.

Papers: Meng et al., 'Mass-Editing Memory in a Transformer' (MEMIT), ICLR 2023; Li et al.,
'PMET: Precise Model Editing in a Transformer', AAAI 2024; Yang et al., 'ACE: Attribution-
Controlled Knowledge Editing for Multi-hop Factual Recall', ICLR 2026.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.internals.neurons import check_llama_like, last_logprobs

__all__ = [
    "EditReport",
    "EditRequest",
    "EditResult",
    "edit",
    "edit_report",
    "module_covariance",
    "sample_texts",
]

MODULES = ("o_proj", "down_proj")
CITE = (
    "Meng et al., 'Mass-Editing Memory in a Transformer', ICLR 2023; Li et al., 'PMET: Precise "
    "Model Editing in a Transformer', AAAI 2024; Yang et al., 'ACE: Attribution-Controlled "
    "Knowledge Editing for Multi-hop Factual Recall', ICLR 2026"
)
#: starts of the generated context prefixes (MEMIT generates from similar one-word starts)
PREFIX_STARTS = ("The", "Therefore", "Because", "I", "You", "In")


@dataclass(frozen=True)
class EditRequest:
    """One fact to write: ``prompt`` contains ``subject``; the model should continue it with
    ``target_new`` (with its leading space, e.g. ``" Italy"``); ``target_true`` is the current
    answer (optional, reported)."""

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None

    @classmethod
    def of(cls, request: EditRequest | dict[str, Any]) -> EditRequest:
        """An EditRequest from itself or a dict with the same keys (InputError if malformed)."""
        if isinstance(request, EditRequest):
            r = request
        elif isinstance(request, dict):
            try:
                r = cls(
                    prompt=request["prompt"],
                    subject=request["subject"],
                    target_new=request["target_new"],
                    target_true=request.get("target_true"),
                )
            except KeyError as e:
                raise InputError(
                    f"the edit request lacks {e}; give prompt, subject and target_new"
                ) from e
        else:
            raise InputError("an edit request is an EditRequest or a dict")
        for name in ("prompt", "subject", "target_new"):
            v = getattr(r, name)
            if not isinstance(v, str) or not v.strip():
                raise InputError(f"the edit request's {name} must be a non-empty string")
        if r.subject not in r.prompt:
            raise InputError(f"the subject {r.subject!r} does not occur in the prompt {r.prompt!r}")
        return r


@dataclass
class EditResult:
    """An edited copy of the model and what was written into it.

    ``lm``: the edited LanguageModel (a deep copy; the original is untouched); ``deltas``: the
    weight updates ΔW by module name (``"L12.o_proj"``, ``"L12.down_proj"``); ``groups``: the
    layer groups edited in order; ``losses``: per group, the target NLL before and after the
    δ optimisation; ``cost``: everything run (forward and backward passes, seconds)."""

    lm: Any
    deltas: dict[str, torch.Tensor]
    groups: list[list[int]]
    losses: list[tuple[float, float]]
    request: EditRequest
    cost: Cost = field(default_factory=Cost)
    params: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- tokens and hooks


def _encode_with_subject(lm: Any, text: str, subject_end: int) -> tuple[list[int], int]:
    """Token ids of ``text`` (raw, special tokens as the model reads a raw prompt) and the index
    of the token holding the character ``subject_end − 1`` (the subject's last token)."""
    try:
        enc = lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except NotImplementedError as e:
        raise InputError("editing needs a fast tokenizer (offset mappings)") from e
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    idx = [i for i, (s, e) in enumerate(offsets) if e > s and s < subject_end]
    if not idx:
        raise InputError(f"no token of {text!r} covers the subject")
    return ids, idx[-1]


def _layer_output_hook(index: torch.Tensor, delta: torch.Tensor) -> Any:
    """A forward hook adding ``delta`` to a decoder layer's output at (row, index[row])."""
    rows = torch.arange(index.shape[0])

    def hook(_m: Any, _a: Any, out: Any) -> Any:
        h = out[0] if isinstance(out, (tuple, list)) else out
        h = h.clone()
        h[rows, index] = h[rows, index] + delta.to(h.dtype)
        return type(out)([h, *out[1:]]) if isinstance(out, (tuple, list)) else h

    return hook


def _right_padded(lm: Any, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), lm.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids.to(lm.device), mask.to(lm.device)


@dataclass
class _Prompts:
    """Rewriting rows (prefix + prompt + target_new[:-1]) and KL rows, with subject positions."""

    rows: list[list[int]]
    subj: list[int]
    target_pos: list[list[int]]
    target_ids: list[int]
    n_rewrite: int


def _build_prompts(lm: Any, req: EditRequest, prefixes: Sequence[str]) -> _Prompts:
    target_ids = lm._response_ids(req.target_new)
    rows, subj, tpos = [], [], []
    end = req.prompt.rfind(req.subject) + len(req.subject)
    for pre in prefixes:
        text = pre + req.prompt
        ids, s = _encode_with_subject(lm, text, len(pre) + end)
        rows.append(ids + target_ids[:-1])
        subj.append(s)
        tpos.append([len(ids) - 1 + t for t in range(len(target_ids))])
    kl_text = f"{req.subject} is a"
    kl_ids, kl_s = _encode_with_subject(lm, kl_text, len(req.subject))
    rows.append(kl_ids)
    subj.append(kl_s)
    return _Prompts(rows, subj, tpos, target_ids, len(prefixes))


def _layer_residual_and_keys(
    lm: Any, prompts: _Prompts, layer_l: int, module: str, layer_z: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One no-grad pass over the rewriting rows: the residual at the output of ``layer_z`` at
    the subject's last token of the first (bare) row, and the mean input of ``module`` at layer
    ``layer_l`` at the subject's last token over the rewriting rows."""
    layers = lm.model.model.layers
    n = prompts.n_rewrite
    ids, mask = _right_padded(lm, prompts.rows[:n])
    subj = torch.tensor(prompts.subj[:n])
    got: dict[str, torch.Tensor] = {}
    target = _module(layers[layer_l], module)

    def key_hook(_m: Any, args: tuple) -> None:
        got["k"] = args[0][torch.arange(n), subj].detach().double().mean(0).cpu()

    def z_hook(_m: Any, _a: Any, out: Any) -> None:
        h = out[0] if isinstance(out, (tuple, list)) else out
        got["z"] = h[0, subj[0]].detach().double().cpu()

    handles = [
        target.register_forward_pre_hook(key_hook),
        layers[layer_z].register_forward_hook(z_hook),
    ]
    try:
        with torch.inference_mode():
            lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=1, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    lm.cost.forward_passes += n
    lm.cost.batches += 1
    return got["z"], got["k"]


def _module(layer: Any, name: str) -> torch.nn.Linear:
    if name == "o_proj":
        return layer.self_attn.o_proj  # type: ignore[no-any-return]
    if name == "down_proj":
        return layer.mlp.down_proj  # type: ignore[no-any-return]
    raise InputError(f"module {name!r} is not one of {', '.join(MODULES)}")


# ---------------------------------------------------------------------------- covariance, text


def sample_texts(lm: Any, n: int = 24, max_new_tokens: int = 48, seed: int = 0) -> list[str]:
    """``n`` short texts sampled from the model itself (temperature 1, top-p 0.95, seeded),
    started from a few common words: a stand-in for the Wikipedia sample MEMIT estimates its
    key covariance from. Costs ``len(PREFIX_STARTS)`` batched generations of at most
    ``max_new_tokens`` steps (counted on ``lm.cost``)."""
    if n < 1:
        raise InputError("n must be >= 1")
    per = math.ceil(n / len(PREFIX_STARTS))
    out: list[str] = []
    for i, start in enumerate(PREFIX_STARTS):
        texts = lm.generate(
            start, max_new_tokens, chat=False, temperature=1.0, top_p=0.95, seed=seed + i, n=per
        )
        texts = [texts] if isinstance(texts, str) else texts
        out += [f"{start} {t}" for t in texts]
    return out[:n]


def module_covariance(
    lm: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    modules: Sequence[str] = MODULES,
    *,
    batch_size: int = 8,
) -> dict[str, torch.Tensor]:
    """The uncentred second moment C = E[k kᵀ] of each module's input k over every token of
    ``texts`` (raw), per ``"L{layer}.{module}"`` (float64). MEMIT's ``mom2`` statistics, from a
    given sample rather than 100 k Wikipedia texts. Costs one forward pass per text, in
    ``ceil(len(texts) / batch_size)`` model calls (counted on ``lm.cost``)."""
    check_llama_like(lm)
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise InputError("the covariance needs a non-empty text sample")
    model_layers = lm.model.model.layers
    sums: dict[str, torch.Tensor] = {}
    count = {"n": 0}
    mask_now: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Any:
        def hook(_m: Any, args: tuple) -> None:
            k = args[0][mask_now["m"]].detach().double().cpu()
            sums[name] = sums.get(name, 0) + k.T @ k  # type: ignore[operator]

        return hook

    handles = []
    for layer in sorted(set(int(x) for x in layers)):
        for mod in modules:
            handles.append(
                _module(model_layers[layer], mod).register_forward_pre_hook(
                    hook_for(f"L{layer}.{mod}")
                )
            )
    try:
        with lm.timed(), torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                seqs = [lm.tokenizer(t)["input_ids"][:256] for t in texts[s : s + batch_size]]
                ids, mask = _right_padded(lm, seqs)
                mask_now["m"] = mask.bool()
                lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=1, use_cache=False)
                count["n"] += int(mask.sum())
                lm.cost.forward_passes += len(seqs)
                lm.cost.batches += 1
                lm.tokens_processed += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return {k: v / count["n"] for k, v in sums.items()}


# ---------------------------------------------------------------------------- the edit


def _optimise_delta(
    lm: Any,
    prompts: _Prompts,
    layer: int,
    steps: int,
    lr: float,
    weight_decay: float,
    clamp_norm_factor: float,
    kl_factor: float,
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """δ at the output of ``layer`` (subject's last token) and h, the bare row's residual there
    (ROME / MEMIT ``compute_z``). Each step costs one forward and one backward pass per row."""
    model = lm.model
    n = prompts.n_rewrite
    ids, mask = _right_padded(lm, prompts.rows)
    subj = torch.tensor(prompts.subj)
    tgt = torch.tensor(prompts.target_ids)
    d = model.config.hidden_size
    got: dict[str, torch.Tensor] = {}

    def keep(_m: Any, _a: Any, out: Any) -> None:
        h = out[0] if isinstance(out, (tuple, list)) else out
        got["h"] = h[0, subj[0]].detach().double().cpu()

    # logits only where they are read: the target positions of the rewriting rows, the
    # subject's last token of the KL row
    rows_sel = [r for r in range(n) for _ in prompts.target_pos[r]] + [n]
    pos_sel = [p for r in range(n) for p in prompts.target_pos[r]] + [prompts.subj[n]]
    tok_sel = tgt.repeat(n)
    head = model.get_output_embeddings()

    def nll_and_kl(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(head(hidden[rows_sel, pos_sel]).float(), -1)
        nll = -logp[torch.arange(len(tok_sel)), tok_sel].mean()
        return nll, logp[-1]

    def run() -> torch.Tensor:
        out = model.model(input_ids=ids, attention_mask=mask, use_cache=False)
        return out.last_hidden_state  # type: ignore[no-any-return]

    handle = model.model.layers[layer].register_forward_hook(keep)
    try:
        with torch.no_grad():
            hidden = run()
    finally:
        handle.remove()
    lm.cost.forward_passes += len(prompts.rows)
    lm.cost.batches += 1
    with torch.no_grad():
        nll0, kl_ref = nll_and_kl(hidden)
    kl_ref = kl_ref.detach()
    h = got["h"]
    max_norm = clamp_norm_factor * float(h.norm())
    delta = torch.zeros(d, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    handle = model.model.layers[layer].register_forward_hook(_layer_output_hook(subj, delta))
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    last = float(nll0)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                nll, kl_lp = nll_and_kl(run())
                kl = torch.nn.functional.kl_div(kl_lp, kl_ref, log_target=True, reduction="sum")
                loss = nll + kl_factor * kl + weight_decay * delta.norm() / float(h.norm()) ** 2
                lm.cost.forward_passes += len(prompts.rows)
                lm.cost.backward_passes += len(prompts.rows)
                lm.cost.batches += 1
                last = float(nll.detach())
                if last < 5e-2:
                    break
                loss.backward()
                opt.step()
                with torch.no_grad():
                    if delta.norm() > max_norm:
                        delta.mul_(max_norm / delta.norm())
    finally:
        handle.remove()
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
    if not torch.isfinite(delta).all():
        raise ScorerError("the target residual diverged (non-finite); lower v_lr")
    return delta.detach().double(), h, (float(nll0), last)


def _shrunk(c: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 − α) C + α · mean(diag C) · I``: a covariance from a few thousand tokens is
    rank-deficient where the module input is wider than the sample; without shrinkage the update
    grows without bound along the directions the sample never visited."""
    scale = float(torch.diagonal(c).mean())
    return (1 - alpha) * c + alpha * scale * torch.eye(c.shape[0], dtype=c.dtype)


def _prefixes(lm: Any, n_context: int, context_tokens: int, seed: int) -> list[str]:
    """The bare prompt plus ``n_context`` generated prefixes (MEMIT's context templates)."""
    out = [""]
    for i in range(n_context):
        start = PREFIX_STARTS[i % len(PREFIX_STARTS)]
        text = lm.generate(
            start, context_tokens, chat=False, temperature=1.0, top_p=0.95, seed=seed + i
        )
        text = f"{start} {text}".replace("\n", " ").strip()
        out.append(text + ". ")
    return out


def _groups(layers: Sequence[int] | Sequence[Sequence[int]], n_layers: int) -> list[list[int]]:
    if isinstance(layers, (int, np.integer)):
        layers = [int(layers)]
    seq = list(layers)
    if not seq:
        raise InputError("give at least one layer to edit")
    nested = [list(g) if isinstance(g, (list, tuple)) else [g] for g in seq]
    if all(not isinstance(g, (list, tuple)) for g in seq):
        nested = [list(seq)]  # type: ignore[arg-type]
    groups = []
    for g in nested:
        if not g:
            raise InputError("an edit group is empty; give its layers")
        for x in g:
            if not isinstance(x, (int, np.integer)) or not 0 <= int(x) < n_layers:
                raise InputError(f"layer {x!r} is outside the model's {n_layers} layers")
        groups.append(sorted({int(x) for x in g}))
    return groups


def edit(
    lm: Any,
    request: EditRequest | dict[str, Any],
    layers: Sequence[int] | Sequence[Sequence[int]],
    modules: Sequence[str] = MODULES,
    *,
    texts: Sequence[str] | None = None,
    covariance: dict[str, torch.Tensor] | None = None,
    mom2_update_weight: float = 750.0,
    cov_shrinkage: float = 0.1,
    steps: int = 20,
    v_lr: float = 0.2,
    v_weight_decay: float = 0.5,
    clamp_norm_factor: float = 0.75,
    kl_factor: float = 1.0,
    n_context: int = 3,
    context_tokens: int = 10,
    seed: int = 0,
) -> EditResult:
    """Write ``request`` into an edited copy of ``lm`` with the closed-form multi-layer update
    of MEMIT / PMET as ACE applies it (see the module docstring for the algorithm and its
    documented deviations). ``layers``: one group (``[12, 13, 14]``) or several groups in order
    (``[[21, 22, 23], [27, 28, 29]]``, e.g. :attr:`EditLayers.groups`); ``modules``: any of
    ``"o_proj"``, ``"down_proj"``. The covariance C comes from ``covariance`` (a
    :func:`module_covariance` result covering the layers, reusable across edits), else from
    ``texts``, else from :func:`sample_texts` of the model itself.

    Returns an :class:`EditResult` with the edited copy (the original's weights are untouched)
    and its ΔW. Costs: the context prefixes (``n_context`` seeded sampled generations of
    ``context_tokens`` steps), the covariance passes, per group up to ``steps`` forward+backward
    passes over ``n_context + 2`` rows, and one forward pass of ``n_context + 1`` rows per (layer,
    module) pair — all on the copy's meter, added to ``lm.cost`` and the result's cost.
    """
    req = EditRequest.of(request)
    model = check_llama_like(lm)
    groups = _groups(layers, len(model.model.layers))
    mods = list(dict.fromkeys(modules))
    if not mods:
        raise InputError("give at least one module to edit (o_proj, down_proj)")
    for m in mods:
        if m not in MODULES:
            raise InputError(f"module {m!r} is not one of {', '.join(MODULES)}")
    for name, v in (("steps", steps), ("n_context", n_context), ("context_tokens", context_tokens)):
        if not isinstance(v, (int, np.integer)) or v < (1 if name != "n_context" else 0):
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if not 0 <= cov_shrinkage <= 1:
        raise InputError(f"cov_shrinkage must lie in [0, 1], got {cov_shrinkage!r}")
    if not mom2_update_weight > 0:
        raise InputError("mom2_update_weight (λ) must be > 0")
    lm._response_ids(req.target_new)  # InputError when it has no tokens
    edited = type(lm)(copy.deepcopy(model), lm.tokenizer, name=f"{getattr(lm, 'name', 'lm')}+edit")
    all_layers = sorted({x for g in groups for x in g})
    with measure(edited) as cost:
        if covariance is None:
            sample = list(texts) if texts is not None else sample_texts(edited, seed=seed)
            covariance = module_covariance(edited, sample, all_layers, mods)
        missing = [f"L{x}.{m}" for x in all_layers for m in mods if f"L{x}.{m}" not in covariance]
        if missing:
            raise InputError(f"the covariance lacks {missing[:4]}; compute it for these layers")
        prompts = _build_prompts(edited, req, _prefixes(edited, n_context, context_tokens, seed))
        deltas: dict[str, torch.Tensor] = {}
        losses = []
        for group in groups:
            layer_z = group[-1]
            delta, h0, loss = _optimise_delta(
                edited, prompts, layer_z, steps, v_lr, v_weight_decay, clamp_norm_factor, kl_factor
            )
            losses.append(loss)
            z_star = h0 + delta
            pairs = [(x, m) for x in group for m in sorted(mods, key=MODULES.index)]
            for i, (x, m) in enumerate(pairs):
                h, k = _layer_residual_and_keys(edited, prompts, x, m, layer_z)
                resid = (z_star - h) / math.sqrt(len(pairs) - i)
                c = _shrunk(covariance[f"L{x}.{m}"].to(torch.float64), cov_shrinkage)
                a = torch.linalg.solve(mom2_update_weight * c + torch.outer(k, k), k)
                upd = torch.outer(resid, a)
                lin = _module(edited.model.model.layers[x], m)
                with torch.no_grad():
                    lin.weight += upd.to(lin.weight.dtype).to(lin.weight.device)
                name = f"L{x}.{m}"
                deltas[name] = deltas.get(name, 0) + upd.float()  # type: ignore[operator]
    lm.cost = lm.cost + cost
    params = {
        "layers": groups,
        "modules": mods,
        "mom2_update_weight": mom2_update_weight,
        "cov_shrinkage": cov_shrinkage,
        "steps": steps,
        "v_lr": v_lr,
        "v_weight_decay": v_weight_decay,
        "clamp_norm_factor": clamp_norm_factor,
        "kl_factor": kl_factor,
        "n_context": n_context,
        "seed": seed,
        "cite": CITE,
    }
    return EditResult(edited, deltas, groups, losses, req, cost, params)


# ---------------------------------------------------------------------------- the report


@dataclass
class EditReport:
    """What an edit did, section by section; each section is a dict of metrics plus its
    ``"cost"`` (a :class:`Cost`) and ``"n"`` (prompts).

    - ``efficacy``: the edit prompt — ``top1`` (new answer's first token is the argmax after),
      ``logp_before`` / ``logp_after`` of it, ``rise``;
    - ``paraphrase``: the same over paraphrases (``top1`` = share of them, ``rise`` = mean);
    - ``specificity``: unrelated facts — ``unchanged`` (share whose argmax is the same after),
      ``top1_kept`` (share whose given answer is still the argmax, among those where it was),
      ``mean_abs_change`` and ``mean_change`` of log p(answer);
    - ``multihop``: questions whose answer changes with the edit — ``top1`` (new answer is the
      argmax) and, with ``candidates``, ``ranked_first`` (new answer scores above every other
      candidate's first token)."""

    sections: dict[str, dict[str, Any]]

    def summary(self) -> dict[str, float]:
        """The headline numbers, flat (no costs)."""
        out: dict[str, float] = {}
        for name, sec in self.sections.items():
            for k, v in sec.items():
                if k not in ("cost", "n", "per_prompt") and isinstance(v, (int, float)):
                    out[f"{name}.{k}"] = float(v)
        return out


def _first_id(lm: Any, answer: str) -> int:
    return int(lm._response_ids(answer)[0])


def edit_report(
    before: Any,
    after: Any,
    request: EditRequest | dict[str, Any],
    *,
    paraphrases: Sequence[str] = (),
    unrelated: Sequence[tuple[str, str]] = (),
    multihop: Sequence[tuple[str, str]] = (),
    candidates: Sequence[str] | None = None,
) -> EditReport:
    """Evaluate an edit: ``before`` is the original LanguageModel, ``after`` the edited one (or
    an :class:`EditResult`). Answers are judged by their first token at the last position of the
    raw prompt. ``unrelated``: ``(prompt, answer)`` facts the edit should leave alone;
    ``multihop``: ``(question, new answer)`` pairs the edit should change (e.g. "The capital of
    the country where the Eiffel Tower is located is" → " Rome" after moving it to Italy);
    ``candidates``: answers to rank the multi-hop answer against.

    Returns an :class:`EditReport`. Costs, per section, one forward pass per prompt on each
    model (batched; counted on both meters and in the section's cost). (Evaluation in the
    manner of MEMIT / ACE: efficacy, generalisation, specificity, multi-hop accuracy.)"""
    req = EditRequest.of(request)
    if hasattr(after, "lm") and hasattr(after, "deltas"):
        after = after.lm
    for m in (before, after):
        check_llama_like(m)
    new_id = _first_id(before, req.target_new)
    sections: dict[str, dict[str, Any]] = {}

    def both(prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, Cost]:
        with measure(before) as c1:
            lp0 = last_logprobs(before, prompts)
        with measure(after) as c2:
            lp1 = last_logprobs(after, prompts)
        return lp0, lp1, c1 + c2

    lp0, lp1, cost = both([req.prompt])
    sections["efficacy"] = {
        "n": 1,
        "top1": float(lp1[0].argmax() == new_id),
        "logp_before": float(lp0[0, new_id]),
        "logp_after": float(lp1[0, new_id]),
        "rise": float(lp1[0, new_id] - lp0[0, new_id]),
        "cost": cost,
    }
    if req.target_true:
        tid = _first_id(before, req.target_true)
        sections["efficacy"]["true_logp_change"] = float(lp1[0, tid] - lp0[0, tid])
    if paraphrases:
        lp0, lp1, cost = both(list(paraphrases))
        sections["paraphrase"] = {
            "n": len(paraphrases),
            "top1": float(np.mean(lp1.argmax(-1) == new_id)),
            "rise": float(np.mean(lp1[:, new_id] - lp0[:, new_id])),
            "cost": cost,
        }
    if unrelated:
        prompts = [p for p, _ in unrelated]
        ids = np.array([_first_id(before, a) for _, a in unrelated])
        lp0, lp1, cost = both(prompts)
        rows = np.arange(len(prompts))
        change = lp1[rows, ids] - lp0[rows, ids]
        was = lp0.argmax(-1) == ids
        kept = (lp1.argmax(-1) == ids)[was]
        sections["specificity"] = {
            "n": len(prompts),
            "unchanged": float(np.mean(lp0.argmax(-1) == lp1.argmax(-1))),
            "top1_kept": float(kept.mean()) if kept.size else float("nan"),
            "mean_abs_change": float(np.abs(change).mean()),
            "mean_change": float(change.mean()),
            "per_prompt": change.tolist(),
            "cost": cost,
        }
    if multihop:
        prompts = [p for p, _ in multihop]
        ids = np.array([_first_id(before, a) for _, a in multihop])
        lp0, lp1, cost = both(prompts)
        rows = np.arange(len(prompts))
        sec: dict[str, Any] = {
            "n": len(prompts),
            "top1": float(np.mean(lp1.argmax(-1) == ids)),
            "top1_before": float(np.mean(lp0.argmax(-1) == ids)),
            "cost": cost,
        }
        if candidates:
            cand = np.array(sorted({_first_id(before, c) for c in candidates} | set(ids.tolist())))
            best = cand[lp1[:, cand].argmax(-1)]
            sec["ranked_first"] = float(np.mean(best == ids))
            sec["ranked_first_before"] = float(np.mean(cand[lp0[:, cand].argmax(-1)] == ids))
        sections["multihop"] = sec
    return EditReport(sections)
