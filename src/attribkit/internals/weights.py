"""Weight attribution for unlearning: per-element scores of a causal LM's parameters and the
mask of the weights selected for updating (WAGLE: Jia, Liu, Zhang, Ram, Baracaldo, Liu,
"WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in Large Language
Models", NeurIPS 2024).

Examples are ``(prompt, answer)`` pairs (or objects with ``.prompt`` and ``.answer``); the
plain NLL of an example is the mean negative log-probability of its answer tokens given the
prompt (teacher forcing; the prompt tokenized with special tokens, chat template only with
``chat=True``). ``g_f`` / ``g_r`` are the gradients of the **sum over examples** of that NLL on
the forget / retain set: independent of the batch size (the reference sums batch-mean losses
over batches, which equals this at batch size 1).

Scores per element (``method``):

- ``"wagle"``: ``|(θ − g_r / μ) ⊙ g_f|`` — the reference's ``snip_advanced`` (μ = 1e-6 in all
  its released configs; at that μ the score is ≈ ``|g_r ⊙ g_f| / μ``);
- ``"gradient"``: ``|g_f|``; ``"snip"``: ``|g_f ⊙ θ|``; ``"magnitude"``: ``|θ|``;
- ``"random"``: uniform draws from a seeded generator.

The ranking is global over every trainable parameter (embeddings, norms and head included; a
tied weight counts once). The mask keeps the top ``ratio`` fraction of elements: ``ratio`` is the
fraction **selected for updating** (WAGLE's "tofu_0.8 = 80 % of weights selected"); ties at the
threshold are broken by position (parameter order, then flat index).

A :class:`WeightMask` is an :class:`~attribkit.core.attribution.Attribution` whose units are the
weight *tensors* (one per named parameter; the score of a unit is the fraction of its elements
selected) and which keeps the full boolean tensors; ``save``/``load`` use safetensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.units import Unit
from attribkit.models.lm import LanguageModel
from attribkit.models.lm.scoring import left_padded

__all__ = [
    "MASK_METHODS",
    "WeightMask",
    "answer_logprobs",
    "as_causal_lm",
    "check_disjoint",
    "encode_examples",
    "example_nll",
    "examples_as_pairs",
    "nll_gradients",
    "top_fraction",
    "trainable_parameters",
    "weight_mask",
    "weight_scores",
]

MaskMethod = Literal["wagle", "gradient", "magnitude", "snip", "random"]
MASK_METHODS: tuple[str, ...] = ("wagle", "gradient", "magnitude", "snip", "random")
MASK_FORMAT = "attribkit.weight_mask"
MASK_VERSION = "1"
Pairs = list[tuple[list[int], list[int]]]


# --- inputs ---------------------------------------------------------------------------------------


def as_causal_lm(model: Any, tokenizer: Any = None) -> LanguageModel:
    """``model`` as a :class:`LanguageModel`: returned as is, or a Hugging Face causal LM
    (``torch.nn.Module``) wrapped with ``tokenizer``. InputError for anything else: no
    parameters, no tokenizer, or not a causal LM (no output embeddings / cannot generate).
    No model calls."""
    if isinstance(model, LanguageModel):
        module = model.model
    elif isinstance(model, torch.nn.Module):
        module = model
    else:
        raise InputError(
            f"expected a LanguageModel or a Hugging Face causal LM (torch.nn.Module), got "
            f"{type(model).__name__}"
        )
    if not any(p.requires_grad for p in module.parameters()):
        raise InputError(
            f"{type(module).__name__} has no trainable parameters; weight masks and unlearning "
            "need a model with parameters (requires_grad=True)"
        )
    get_out = getattr(module, "get_output_embeddings", None)
    can_generate = getattr(module, "can_generate", None)
    if (
        not callable(get_out)
        or get_out() is None
        or not callable(can_generate)
        or not can_generate()
    ):
        raise InputError(
            f"{type(module).__name__} is not a causal language model (it needs an LM head and "
            "generate(), e.g. AutoModelForCausalLM); load the model with a causal-LM head"
        )
    if isinstance(model, LanguageModel):
        return model
    if tokenizer is None:
        raise InputError("pass tokenizer=... with a bare torch module (or give a LanguageModel)")
    return LanguageModel(module, tokenizer)


def _pair(example: Any) -> tuple[str, str]:
    if isinstance(example, (tuple, list)) and len(example) == 2:
        prompt, answer = example
    elif hasattr(example, "prompt") and hasattr(example, "answer"):
        prompt, answer = example.prompt, example.answer
    else:
        raise InputError(
            f"an example must be a (prompt, answer) pair or have .prompt and .answer, got "
            f"{type(example).__name__}"
        )
    if not isinstance(prompt, str) or not isinstance(answer, str) or not answer:
        raise InputError(f"prompt and answer must be strings, the answer non-empty: {example!r}")
    return prompt, answer


def examples_as_pairs(examples: Iterable[Any], what: str) -> list[tuple[str, str]]:
    """The ``(prompt, answer)`` strings of ``examples``; InputError when empty or malformed."""
    pairs = [_pair(e) for e in examples]
    if not pairs:
        raise InputError(f"the {what} set is empty; give at least one (prompt, answer) example")
    return pairs


def check_disjoint(forget: Sequence[tuple[str, str]], retain: Sequence[tuple[str, str]]) -> None:
    """InputError when a prompt is both in the forget and in the retain set."""
    shared = {p for p, _ in forget} & {p for p, _ in retain}
    if shared:
        example = sorted(shared)[0]
        raise InputError(
            f"{len(shared)} prompt(s) are in both the forget and the retain set (e.g. "
            f"{example!r}); the two sets must not overlap"
        )


def encode_examples(lm: LanguageModel, examples: Iterable[Any], chat: bool = False) -> Pairs:
    """Token ids ``(prompt_ids, answer_ids)`` of each example, as
    :meth:`LanguageModel.token_logprobs` tokenizes them. No model calls."""
    pairs = examples_as_pairs(examples, "example")
    return lm.encode_pairs([p for p, _ in pairs], [a for _, a in pairs], chat)


# --- log-probabilities with gradients -------------------------------------------------------------


def answer_logprobs(lm: LanguageModel, pairs: Pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """One batched forward (left padding) over ``pairs``; returns ``(logp, targets_ok)``: the
    (B, A) log-probabilities of the answer tokens (right-aligned, A = longest answer; 0 where
    padding) and a (B, A) bool tensor saying which are real tokens and argmax-predicted (a
    padded slot is True). Keeps the autograd graph when grad is enabled. Counts B forward
    passes and one batch on ``lm.cost``."""
    lens = [len(p) + len(r) for p, r in pairs]
    a = max(len(r) for _, r in pairs)
    dev = lm.device
    ids, mask, pos = left_padded([p + r for p, r in pairs], lm.pad_id, dev)
    targets = torch.zeros((len(pairs), a), dtype=torch.long)
    valid = torch.zeros((len(pairs), a), dtype=torch.bool)
    for i, (_, r) in enumerate(pairs):
        targets[i, a - len(r) :] = torch.tensor(r)
        valid[i, a - len(r) :] = True
    out = lm.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        logits_to_keep=a + 1,
        use_cache=False,
    )
    logits = out.logits[:, -a - 1 : -1].float()
    logp_all = torch.log_softmax(logits, dim=-1)
    targets, valid = targets.to(dev), valid.to(dev)
    logp = logp_all.gather(-1, targets[..., None])[..., 0] * valid
    ok = (logits.argmax(-1) == targets) | ~valid
    lm.cost.forward_passes += len(pairs)
    lm.cost.batches += 1
    lm.tokens_processed += sum(lens)
    return logp, ok


def example_nll(lm: LanguageModel, pairs: Pairs) -> torch.Tensor:
    """The (B,) plain NLL of each example: mean negative log-probability of its answer tokens.
    One batched forward pass (see :func:`answer_logprobs`)."""
    logp, _ = answer_logprobs(lm, pairs)
    n_tokens = torch.tensor([len(r) for _, r in pairs], dtype=logp.dtype, device=logp.device)
    return -logp.sum(-1) / n_tokens


def trainable_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The named parameters that require grad (a tied weight once), in module order."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def nll_gradients(lm: LanguageModel, pairs: Pairs, batch_size: int = 8) -> dict[str, torch.Tensor]:
    """∇θ Σ_examples NLL(example) for every trainable parameter (float32, the model's .grad
    untouched). Costs one forward and one backward pass per example, in batches."""
    params = trainable_parameters(lm.model)
    grads = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        loss = example_nll(lm, chunk).sum()
        got = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        lm.cost.backward_passes += len(chunk)
        for (name, _), g in zip(params.items(), got, strict=True):
            if g is not None:
                grads[name] += g.float()
    return grads


# --- scores and masks -----------------------------------------------------------------------------


def weight_scores(
    model: Any,
    forget: Iterable[Any] | None,
    retain: Iterable[Any] | None,
    method: MaskMethod = "wagle",
    mu: float = 1e-6,
    *,
    tokenizer: Any = None,
    seed: int = 0,
    batch_size: int = 8,
    chat: bool = False,
) -> dict[str, torch.Tensor]:
    """The per-element score of every trainable parameter (name → float32 tensor of its shape)
    under ``method`` (see the module docstring; WAGLE: |(θ − g_r/μ) ⊙ g_f|, Jia et al.,
    NeurIPS 2024). Costs one forward and one backward pass per forget example (``wagle``,
    ``gradient``, ``snip``) and per retain example (``wagle``); ``magnitude`` and ``random``
    run no model."""
    if method not in MASK_METHODS:
        raise InputError(f"unknown mask method {method!r}; choose from {', '.join(MASK_METHODS)}")
    if not (isinstance(mu, (int, float)) and mu > 0 and np.isfinite(mu)):
        raise InputError(f"mu must be a positive finite number, got {mu!r}")
    lm = as_causal_lm(model, tokenizer)
    needs_forget = method in ("wagle", "gradient", "snip")
    f_pairs = _maybe_pairs(forget, "forget", needs_forget)
    r_pairs = _maybe_pairs(retain, "retain", method == "wagle")
    if f_pairs is not None and r_pairs is not None:
        check_disjoint(f_pairs, r_pairs)
    params = trainable_parameters(lm.model)
    if method == "magnitude":
        return {n: p.detach().float().abs() for n, p in params.items()}
    if method == "random":
        gen = torch.Generator().manual_seed(int(seed))
        return {n: torch.rand(p.shape, generator=gen) for n, p in params.items()}
    assert f_pairs is not None
    g_f = nll_gradients(lm, encode_examples(lm, f_pairs, chat), batch_size)
    if method == "gradient":
        return {n: g.abs() for n, g in g_f.items()}
    if method == "snip":
        return {n: (g_f[n] * p.detach().float()).abs() for n, p in params.items()}
    assert r_pairs is not None
    g_r = nll_gradients(lm, encode_examples(lm, r_pairs, chat), batch_size)
    return {n: ((p.detach().float() - g_r[n] / mu) * g_f[n]).abs() for n, p in params.items()}


def _maybe_pairs(examples: Any, what: str, needed: bool) -> list[tuple[str, str]] | None:
    if examples is None:
        if needed:
            raise InputError(f"this mask method needs the {what} set; pass {what}=[...]")
        return None
    return examples_as_pairs(examples, what)


def top_fraction(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Boolean masks keeping exactly round(ratio · N) elements (at least one) with the highest
    scores over all tensors together (N elements in all); ties at the threshold go to the
    earliest positions. No model calls."""
    check_ratio(ratio)
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    if not torch.isfinite(flat).all():
        raise InputError("the weight scores contain NaN or infinity; check the model and data")
    n = flat.numel()
    k = min(n, max(1, round(ratio * n)))
    if k == n:
        keep = torch.ones(n, dtype=torch.bool)
    else:
        threshold = torch.kthvalue(flat, n - k).values  # the (n-k)-th smallest
        keep = flat > threshold
        missing = k - int(keep.sum())
        if missing > 0:
            ties = torch.nonzero(flat == threshold)[:, 0]
            keep[ties[:missing]] = True
    out, start = {}, 0
    for name in names:
        size = scores[name].numel()
        out[name] = keep[start : start + size].reshape(scores[name].shape).clone()
        start += size
    return out


def check_ratio(ratio: float) -> None:
    """InputError unless 0 < ratio ≤ 1 (the fraction of weights selected for updating)."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 1:
        raise InputError(
            f"the mask ratio is the fraction of weights selected for updating and must lie in "
            f"(0, 1], got {ratio!r}"
        )


@dataclass(repr=False, eq=False)
class WeightMask(Attribution):
    """The weights selected for updating, and their attribution per weight tensor.

    As an :class:`Attribution`: one unit per named parameter (``label`` = its name, ``meta`` =
    shape, element count, selected count); ``scores`` = the fraction of the tensor's elements
    selected; ``extras["score_sum"]`` = the summed element score per tensor. ``masks`` holds the
    full boolean tensors (name → bool tensor of the parameter's shape). ``params`` records
    method, ratio, mu and seed. ``save``/``load`` write and read safetensors (the masks, and
    the attribution as JSON in the metadata); :meth:`as_attribution` gives the plain
    per-tensor Attribution (``Attribution.save`` writes it as JSON).
    """

    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_selected(self) -> int:
        """Number of weight elements selected for updating."""
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def n_total(self) -> int:
        """Number of weight elements the mask covers."""
        return int(sum(m.numel() for m in self.masks.values()))

    def as_attribution(self) -> Attribution:
        """The per-tensor summary as a plain :class:`Attribution` (no boolean tensors)."""
        return Attribution.from_dict(self.to_dict())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the masks as safetensors (bool tensors) with metadata: format, version,
        method, ratio, mu, seed and the attribution's JSON. Atomic. Returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": MASK_FORMAT,
            "version": MASK_VERSION,
            **{k: json.dumps(self.params.get(k)) for k in ("method", "ratio", "mu", "seed")},
            "attribution": json.dumps(self.to_dict(), ensure_ascii=False),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            tensors = {n: m.detach().cpu().contiguous() for n, m in self.masks.items()}
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WeightMask:
        """Read a mask written by :meth:`save`; InputError for other files."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                masks = {n: f.get_tensor(n).bool() for n in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as e:
            raise InputError(f"{path} is not a readable safetensors weight mask ({e})") from e
        if meta.get("format") != MASK_FORMAT:
            raise InputError(f"{path} is not an attribkit weight mask (format {MASK_FORMAT!r})")
        if meta.get("version") != MASK_VERSION:
            raise InputError(
                f"weight mask version {meta.get('version')} is not supported (reads "
                f"{MASK_VERSION}); use the attribkit version that wrote it"
            )
        base = Attribution.from_dict(json.loads(meta["attribution"]))
        order = [u.label for u in base.units]  # safetensors sorts names; keep the model's order
        if sorted(order) != sorted(masks):
            raise InputError(f"{path}: the mask tensors do not match its recorded units")
        masks = {name: masks[name] for name in order}
        return cls(
            units=base.units,
            scores=base.scores,
            method=base.method,
            target=base.target,
            params=base.params,
            cost=base.cost,
            input=base.input,
            extras=base.extras,
            task=base.task,
            masks=masks,
        )


def weight_mask(
    model: Any,
    forget: Iterable[Any] | None,
    retain: Iterable[Any] | None,
    method: MaskMethod = "wagle",
    ratio: float = 0.2,
    mu: float = 1e-6,
    *,
    tokenizer: Any = None,
    seed: int = 0,
    batch_size: int = 8,
    chat: bool = False,
) -> WeightMask:
    """The mask of the top ``ratio`` fraction of weights (selected for updating) by
    :func:`weight_scores` under ``method``, ranked globally over all trainable parameters
    (WAGLE: Jia et al., "WAGLE: Strategic Weight Attribution for Effective and Modular
    Unlearning in Large Language Models", NeurIPS 2024). ``model`` is a LanguageModel or a
    Hugging Face causal LM with ``tokenizer``; ``forget``/``retain`` are (prompt, answer)
    examples (None where the method does not read them: ``magnitude``, ``random``; ``gradient``
    and ``snip`` need only ``forget``).

    Returns a :class:`WeightMask` whose ``cost`` counts one forward and one backward pass per
    forget example (wagle, gradient, snip) and per retain example (wagle), and the seconds."""
    check_ratio(ratio)
    lm = as_causal_lm(model, tokenizer)
    with measure(lm) as cost:
        scores = weight_scores(
            lm, forget, retain, method, mu, seed=seed, batch_size=batch_size, chat=chat
        )
        masks = top_fraction(scores, ratio)
    units, fractions, sums = [], [], []
    for i, (name, m) in enumerate(masks.items()):
        selected = int(m.sum())
        units.append(
            Unit(i, name, meta={"shape": list(m.shape), "numel": m.numel(), "selected": selected})
        )
        fractions.append(selected / m.numel())
        sums.append(float(scores[name].double().sum()))
    n_sel = int(sum(int(m.sum()) for m in masks.values()))
    n_all = int(sum(m.numel() for m in masks.values()))
    return WeightMask(
        units=units,
        scores=np.asarray(fractions),
        method=f"weights:{method}",
        target={"description": "weights selected for unlearning", "kind": "weight_mask"},
        params={"method": method, "ratio": float(ratio), "mu": float(mu), "seed": int(seed)},
        cost=cost,
        input={"kind": "weight_tensors", "n_tensors": len(units), "n_elements": n_all},
        extras={"score_sum": sums, "selected": n_sel, "selected_fraction": n_sel / n_all},
        task="weights",
        masks=masks,
    )
