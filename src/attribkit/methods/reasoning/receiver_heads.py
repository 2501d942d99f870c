"""Receiver heads: sentences that a few attention heads broadcast to all later sentences
(Bogdan, Macar, Nanda & Conmy, 'Thought Anchors: Which LLM Reasoning Steps Matter?', 2025).

Per layer and head the token attention matrix of one forward pass is averaged over sentence
blocks (``A[q, k]`` = mean over the tokens of query sentence q and key sentence k); a key
sentence's *vertical score* is the mean of ``A[q, k]`` over the query sentences at least
``proximity`` sentences later; a head whose vertical scores are heavy-tailed over the sentences
(high kurtosis) is a *receiver head*; a sentence's receiver score is its mean vertical score
over the top-k receiver heads, chosen on other traces (layer 0 excluded).

Memory: attention is never requested for all layers (``output_attentions``: layers × heads × T²
floats, 4.5 GB for SmolLM2 at 2,048 tokens). The model runs once with eager attention and a
forward hook on each decoder layer's self-attention module reduces that layer's (H, T, T)
weights to the (H, N, N) sentence blocks at once, so at most one layer's weights are alive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import check_units
from attribkit.methods.reasoning.suppression import _sequence

__all__ = [
    "head_kurtosis",
    "receiver_heads",
    "select_receiver_heads",
    "sentence_attention",
    "vertical_scores",
]

SELF_CALIBRATION = "self (optimistic: the paper calibrates on other traces)"


class _StopForward(Exception):
    """Raised by the last needed layer's hook: later layers and the LM head are not needed."""


def _model(task: Any) -> Any:
    lm = getattr(task, "lm", None)
    model = getattr(lm, "model", None)
    if model is None or not hasattr(lm, "_prompt_offsets"):
        raise InputError(
            "receiver_heads needs a local LanguageModel (attribkit.models.load(...)) whose "
            f"attention it can read; got {type(lm).__name__}"
        )
    return model


def _shape(model: Any) -> tuple[int, int]:
    cfg = model.config
    get_text = getattr(cfg, "get_text_config", None)
    cfg = get_text() if callable(get_text) else cfg
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def _attention_modules(model: Any) -> list[Any]:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
        raise InputError(
            f"{type(model).__name__} has no model.layers[i].self_attn modules (the Llama/Qwen/"
            "Mistral layout); receiver_heads hooks them to read one layer's attention at a time"
        )
    return [layer.self_attn for layer in layers]


def _check_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
            raise InputError(f"layers must be ints, got {layer!r}")
        if not 0 <= int(layer) < n_layers:
            raise InputError(f"layer {layer} is out of range: this model has {n_layers} layers")
        out.append(int(layer))
    if not out:
        raise InputError("layers is empty: pass None (all layers) or at least one layer index")
    return sorted(set(out))


def _block_means(w: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
    """(H, N, N) float64 sentence-block means of one layer's (H, T, T) attention ``w``;
    ``ranges`` are each sentence's contiguous token range [a, b)."""
    lo, hi = ranges[0][0], ranges[-1][1]
    keys = torch.stack(
        [w[:, lo:hi, a:b].sum(-1, dtype=torch.float64) for a, b in ranges], -1
    )  # (H, hi - lo, N): per query token, the attention summed over each key sentence
    sums = torch.stack([keys[:, a - lo : b - lo].sum(1) for a, b in ranges], 1)  # (H, N, N)
    size = torch.tensor([b - a for a, b in ranges], dtype=torch.float64, device=w.device)
    return sums / (size[:, None] * size[None, :])


def _ranges(sentences: list[list[int]]) -> list[tuple[int, int]]:
    ranges = [(pos[0], pos[-1] + 1) for pos in sentences]
    for pos, (a, b) in zip(sentences, ranges, strict=True):
        if len(pos) != b - a:  # cannot happen with monotone token offsets; refuse, do not guess
            raise InputError("a sentence's tokens are not contiguous in the prompt")
    return ranges


def sentence_attention(task: Any, layers: Sequence[int] | None = None) -> np.ndarray:
    """Sentence-block mean attention of a :class:`ReasoningTask`'s trace, per layer and head.

    Returns a float64 array ``(L, H, N, N)`` (L = ``len(layers)``, all layers when None, in
    increasing order; H query heads; N sentences) whose ``[l, h, q, k]`` is the mean, over the
    tokens of query sentence q and of key sentence k, of head h's attention probability in
    layer ``layers[l]`` (causal zeros included, so blocks with q < k are 0). The sequence is
    the task's raw prompt (template, problem, sentences) cut after the last sentence's last
    token (causal attention: the cue and answer change nothing before them); a sentence's
    tokens are those whose last character lies in it (the tokenizer's offsets).

    One forward pass with eager attention (switched on for the call and restored), counted on
    ``task.meter``; a forward hook on each needed layer's self-attention module reduces its
    (H, T, T) weights to (H, N, N) at once, so peak memory is one layer's attention, and the
    forward stops after the last needed layer. Raises InputError for a non-local model, a
    sequence longer than the model's window or bad layers; ScorerError for non-finite
    attention (a broken model)."""
    model = _model(task)
    n_layers, _ = _shape(model)
    wanted = _check_layers(layers, n_layers)
    modules = _attention_modules(model)
    ids, sentences, _answer = _sequence(task)
    full = len(ids)  # prompt + answer, as the task and its other methods count it
    window = getattr(task.lm, "max_positions", None)
    if window and full > window:
        raise InputError(
            f"the prompt and answer take {full} tokens but the model's window is {window}; "
            f"cut the trace (trace.head(n) keeps its first n sentences) by about "
            f"{full - window} tokens"
        )
    ranges = _ranges(sentences)
    ids = ids[: ranges[-1][1]]
    got: dict[int, torch.Tensor] = {}
    last = wanted[-1]

    def hook_for(layer: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise ScorerError(
                    f"layer {layer}'s attention module returned no weights under eager "
                    "attention; this model's attention does not expose them"
                )
            got[layer] = _block_means(weights[0].detach(), ranges).cpu()
            if layer == last:
                raise _StopForward

        return hook

    previous = getattr(model.config, "_attn_implementation", None)
    dev = task.lm.device
    x = torch.tensor([ids], dtype=torch.long, device=dev)
    handles = [modules[layer].register_forward_hook(hook_for(layer)) for layer in wanted]
    try:
        if previous != "eager":
            model.set_attn_implementation("eager")
        # _StopForward is raised by the hook of the last needed layer
        with torch.inference_mode(), contextlib.suppress(_StopForward):
            model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
        if previous not in (None, "eager"):
            model.set_attn_implementation(previous)
    meter = task.meter.cost
    meter.forward_passes += 1
    meter.batches += 1
    if hasattr(task.lm, "tokens_processed"):
        task.lm.tokens_processed += len(ids)
    if set(got) != set(wanted):
        raise ScorerError(
            "the attention hooks did not see every requested layer; this model's forward does "
            "not call model.layers[i].self_attn as the Llama family does"
        )
    blocks = torch.stack([got[layer] for layer in wanted]).numpy()
    if not np.isfinite(blocks).all():
        raise ScorerError(
            "the model gave non-finite attention weights; check the model weights and dtype "
            "(float16 on CPU can overflow)"
        )
    return blocks


def _check_proximity(proximity: Any) -> int:
    if isinstance(proximity, bool) or not isinstance(proximity, int | np.integer) or proximity < 0:
        raise InputError(f"proximity must be an int >= 0 (the paper: 4), got {proximity!r}")
    return int(proximity)


def vertical_scores(blocks: np.ndarray, proximity: int = 4) -> np.ndarray:
    """Vertical scores of sentence-block attention ``blocks`` (``(..., N, N)``, ``[q, k]``).

    Returns ``(..., N)``: for each key sentence k, the mean of ``blocks[..., q, k]`` over the
    query sentences ``q >= k + proximity`` (NaN entries omitted; NaN where there is none, i.e.
    for the last ``proximity`` sentences). As the authors' ``get_vertical_scores`` with
    ``proximity_ignore=proximity`` and ``control_depth=False``: upper triangle and the band
    ``q - k < proximity`` set to NaN, then ``nanmean`` down each column. No model calls."""
    p = _check_proximity(proximity)
    a = np.asarray(blocks, dtype=float)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise InputError(f"blocks must be (..., N, N), got shape {a.shape}")
    n = a.shape[-1]
    q, k = np.arange(n)[:, None], np.arange(n)[None, :]
    keep = (q >= k + p) & ~np.isnan(a)
    count = keep.sum(-2)
    total = np.where(keep, a, 0.0).sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def head_kurtosis(vertical: np.ndarray) -> np.ndarray:
    """Kurtosis of vertical scores over the sentences (last axis): Fisher's definition (a normal
    distribution gives 0) with population moments (``scipy.stats.kurtosis(..., fisher=True,
    bias=True, nan_policy="omit")``, as the authors), NaN values omitted: ``m4 / m2**2 - 3``
    with ``m_r`` the mean of ``(v - mean(v))**r`` over the finite values. NaN where fewer than
    two values are finite or the values are constant. Returns ``vertical.shape[:-1]``. No model
    calls."""
    v = np.asarray(vertical, dtype=float)
    ok = np.isfinite(v)
    n = ok.sum(-1)
    safe = np.maximum(n, 1)
    mean = np.where(ok, v, 0.0).sum(-1) / safe
    d = np.where(ok, v - mean[..., None], 0.0)
    m2 = (d**2).sum(-1) / safe
    m4 = (d**4).sum(-1) / safe
    flat = m2 <= (np.finfo(float).resolution * np.abs(mean)) ** 2  # constant (scipy's test)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n >= 2) & ~flat, m4 / np.where(flat, 1.0, m2) ** 2 - 3.0, np.nan)


def _same_trace(a: Any, b: Any) -> bool:
    ta, tb = getattr(a, "trace", a), getattr(b, "trace", b)
    return ta is tb or (
        getattr(ta, "problem", None) == getattr(tb, "problem", None)
        and getattr(ta, "text", None) == getattr(tb, "text", None)
    )


def _top(table: np.ndarray, top_k: int, exclude_layers: Sequence[int]) -> list[tuple[int, int]]:
    t = np.array(table, dtype=float)
    for layer in exclude_layers:
        if 0 <= layer < t.shape[0]:
            t[layer] = np.nan
    finite = np.flatnonzero(np.isfinite(t.ravel()))
    if finite.size == 0:
        raise InputError(
            "no head has a finite kurtosis: the traces are too short for the vertical scores "
            "(a head needs at least 2 sentences with a query sentence `proximity` or more "
            "sentences later); use longer traces or a smaller proximity"
        )
    order = finite[np.argsort(-t.ravel()[finite], kind="stable")][:top_k]
    return [(int(i // t.shape[1]), int(i % t.shape[1])) for i in order]


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise InputError(f"top_k must be an int >= 1 (the paper: 20), got {top_k!r}")
    return int(top_k)


def select_receiver_heads(
    tasks: Sequence[Any],
    top_k: int = 20,
    *,
    proximity: int = 4,
    exclude: Any = None,
    exclude_layers: Sequence[int] = (0,),
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Receiver heads calibrated on the traces of ``tasks`` (Thought Anchors' head selection).

    For each calibration task: :func:`sentence_attention` → :func:`vertical_scores` →
    :func:`head_kurtosis`; the kurtosis table is the mean over the tasks (NaN-omitting) per
    (layer, head); heads in ``exclude_layers`` (layer 0, as the authors' reliability script)
    are left out, and the ``top_k`` heads by mean kurtosis are kept (ties: lower layer, then
    head, first; fewer when fewer are finite). ``exclude`` is the task (or trace) to be scored:
    every calibration task with the same trace (same problem and text) is dropped, so a trace
    never selects its own heads. Returns ``(heads, table)``: ``heads`` a list of (layer, head),
    best first; ``table`` the ``(layers, heads)`` mean kurtosis (layer 0 included, for
    inspection). Costs one forward pass (eager attention) per calibration task, counted on
    each task's meter. Raises InputError if no task is left or no head has a finite kurtosis.
    """
    top_k = _check_top_k(top_k)
    _check_proximity(proximity)
    tasks = [t for t in tasks if exclude is None or not _same_trace(t, exclude)]
    if not tasks:
        raise InputError(
            "no calibration trace left: pass tasks on traces other than the one scored"
        )
    kurt = [head_kurtosis(vertical_scores(sentence_attention(t), proximity)) for t in tasks]
    shapes = {k.shape for k in kurt}
    if len(shapes) != 1:
        raise InputError(f"the calibration tasks use models of different shapes: {shapes}")
    stack = np.stack(kurt)
    ok = np.isfinite(stack)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.where(ok, stack, 0.0).sum(0) / ok.sum(0)
    table = np.where(ok.any(0), table, np.nan)
    return _top(table, top_k, exclude_layers), table


def _check_heads(heads: Any, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    shape = (
        f"this model has {n_layers} layers (0..{n_layers - 1}) of {n_heads} query heads "
        f"(0..{n_heads - 1})"
    )
    if isinstance(heads, np.ndarray):
        heads = heads.tolist()
    if isinstance(heads, str) or not isinstance(heads, Sequence) or len(heads) == 0:
        raise InputError(f"heads must be a non-empty list of (layer, head) pairs; {shape}")
    out: list[tuple[int, int]] = []
    for item in heads:
        try:
            layer, h = item
            if any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in item):
                raise TypeError
        except (TypeError, ValueError) as e:
            raise InputError(f"heads must be (layer, head) pairs of ints, got {item!r}") from e
        if not (0 <= layer < n_layers and 0 <= h < n_heads):
            raise InputError(f"head ({layer}, {h}) is out of range: {shape}")
        if (int(layer), int(h)) not in out:
            out.append((int(layer), int(h)))
    return out


def _jsonable(a: np.ndarray) -> Any:
    if a.ndim == 0:
        return None if np.isnan(a) else float(a)
    return [_jsonable(x) for x in a]


def receiver_heads(
    task: Any,
    *,
    heads: Sequence[tuple[int, int]] | None = None,
    top_k: int = 20,
    proximity: int = 4,
) -> Attribution:
    """Thought Anchors' receiver-head score of each sentence of a :class:`ReasoningTask`
    (Bogdan, Macar, Nanda & Conmy, 'Thought Anchors: Which LLM Reasoning Steps Matter?', 2025).

    ``A`` = :func:`sentence_attention` (sentence-block mean attention per layer and head);
    ``v[l, h, k]`` = :func:`vertical_scores` (mean of ``A[l, h, q, k]`` over query sentences
    ``q >= k + proximity``); the score of sentence k is the mean of ``v[l, h, k]`` over the
    receiver heads (l, h). With ``heads`` (a list of (layer, head), e.g. from
    :func:`select_receiver_heads` on OTHER traces, as the paper) those heads are used and only
    their layers run. With ``heads=None`` the ``top_k`` heads by :func:`head_kurtosis` of this
    trace's own vertical scores (layer 0 excluded) are used, and ``extras["calibration"]``
    says so (self-calibration is optimistic).

    The last ``proximity`` sentences have no vertical score (NaN, unscored). Extras: ``heads``
    (the heads used, [layer, head]), ``vertical`` (their vertical scores, one list per head,
    None where NaN), ``kurtosis`` (their kurtosis on this trace), ``calibration``
    ("given heads" or the self-calibration note).

    Costs 1 forward pass (eager attention, hooked per layer; see :func:`sentence_attention`).
    Raises InputError for a one-sentence trace, a trace longer than the model's window, bad
    ``heads`` (naming the model's layer and head counts), bad ``top_k``/``proximity``, or a
    trace too short for any vertical score (fewer than ``proximity + 1`` sentences);
    ScorerError when the model gives non-finite attention.
    """
    check_units(task)
    p = _check_proximity(proximity)
    top_k = _check_top_k(top_k)
    n_layers, n_heads = _shape(_model(task))
    chosen = None if heads is None else _check_heads(heads, n_layers, n_heads)
    n = len(task.units)
    if n < p + 1:
        raise InputError(
            f"the trace has {n} sentences: with proximity={p} no sentence has a query sentence "
            f"{p} or more sentences later, so nothing can be scored; use a longer trace or a "
            f"smaller proximity (at most {n - 1})"
        )
    with measure(task.meter) as cost:
        layers = None if chosen is None else sorted({layer for layer, _ in chosen})
        blocks = sentence_attention(task, layers)
    vert = vertical_scores(blocks, p)  # (L, H, N)
    if chosen is None:
        chosen = _top(head_kurtosis(vert), top_k, (0,))
        calibration = SELF_CALIBRATION
        index = {layer: layer for layer in range(n_layers)}
    else:
        calibration = "given heads"
        index = {layer: i for i, layer in enumerate(layers or [])}
    per_head = np.stack([vert[index[layer], h] for layer, h in chosen])  # (K, N)
    kurt = head_kurtosis(per_head)
    ok = np.isfinite(per_head)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(ok.any(0), np.where(ok, per_head, 0.0).sum(0) / ok.sum(0), np.nan)
    if not np.isfinite(scores).any():
        raise InputError(
            f"no sentence got a vertical score (N = {n}, proximity = {p}); use a longer trace "
            "or a smaller proximity"
        )
    params = {
        "heads": None if heads is None else [list(hh) for hh in chosen],
        "top_k": top_k,
        "proximity": p,
    }
    return task.result(
        scores,
        "receiver_heads",
        params,
        cost,
        heads=[list(hh) for hh in chosen],
        vertical=_jsonable(per_head),
        kurtosis=_jsonable(kurt),
        calibration=calibration,
    )
