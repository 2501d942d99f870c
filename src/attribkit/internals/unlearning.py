"""Unlearning a forget set from a causal LM, optionally confined to a weight mask (WAGLE: Jia,
Liu, Zhang, Ram, Baracaldo, Liu, "WAGLE: Strategic Weight Attribution for Effective and Modular
Unlearning in Large Language Models", NeurIPS 2024; NPO: Zhang, Lin, Bai, Mei, "Negative
Preference Optimization: From Catastrophic Collapse to Effective Unlearning", 2024).

One step: a forget batch (the forget set in a seeded order, cycled) and a retain batch (drawn
with the seed) → loss → backward → gradient-norm clipping → gradients × mask → decoupled weight
decay on the **selected** weights only → Adam step. Losses (NLL = the plain answer NLL of
:mod:`attribkit.internals.weights`, averaged over the batch's examples):

- ``"graddiff"``: −NLL(forget) + γ·NLL(retain);
- ``"npo"``: mean_i −(2/β)·logsigmoid(β·(L_cur,i − L_ref,i)) + γ·NLL(retain), β = 0.1, where
  L_i is the **summed** answer NLL of forget example i (the NPO paper's per-sequence
  log-ratio) under the current and the initial model.

Deviations from the WAGLE reference code (documented on purpose):

- the reference's AdamW applies its decoupled weight decay to every weight, so masked weights
  still move; here decay is applied only where the mask selects, and unselected weights stay
  bit-identical (tested with ``torch.equal``);
- the reference's NPO uses the batch-mean token NLL for L_cur and L_ref; here L is per sequence
  (summed over answer tokens) as in the NPO paper, and GradDiff's NLLs are example means
  (each example's token mean, averaged over the batch) rather than the batch's token mean;
- constant learning rate (no warm-up or schedule), eval mode (no dropout: Llama has none).

Accuracy of a set = the fraction of examples whose every answer token is the model's argmax
under teacher forcing. The model is changed in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError
from attribkit.internals.weights import (
    Pairs,
    WeightMask,
    answer_logprobs,
    as_causal_lm,
    check_disjoint,
    encode_examples,
    example_nll,
    examples_as_pairs,
    trainable_parameters,
)
from attribkit.models.lm import LanguageModel

__all__ = ["LOSSES", "UnlearnResult", "UnlearnStep", "accuracy", "unlearn"]

Loss = Literal["graddiff", "npo"]
LOSSES: tuple[str, ...] = ("graddiff", "npo")


@dataclass
class UnlearnStep:
    """One point of the trajectory: after ``step`` optimizer steps (0 = before unlearning),
    the step's ``loss`` and its forget / retain terms (NaN at step 0), and the accuracies of
    the sets evaluated at that step (name → accuracy; empty when none was)."""

    step: int
    loss: float = float("nan")
    forget_nll: float = float("nan")
    retain_nll: float = float("nan")
    accuracy: dict[str, float] = field(default_factory=dict)


@dataclass
class UnlearnResult:
    """What :func:`unlearn` did: ``trajectory`` (step 0 and every step), ``steps`` (optimizer
    steps taken), ``stopped`` (True when the forget-accuracy stopping rule was met),
    ``accuracy_before`` / ``accuracy_after`` (every evaluated set), ``cost`` (forward and
    backward passes, model calls, seconds), ``optimizer_steps`` and ``params``."""

    trajectory: list[UnlearnStep]
    steps: int
    stopped: bool
    accuracy_before: dict[str, float]
    accuracy_after: dict[str, float]
    cost: Cost
    optimizer_steps: int
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (trajectory as a list of dicts)."""
        d = asdict(self)
        d["cost"] = self.cost.to_dict()
        return d


def accuracy(lm: LanguageModel, pairs: Pairs, batch_size: int = 32) -> float:
    """Fraction of ``pairs`` whose answer tokens are all the model's argmax (teacher forcing).
    One forward pass per example, in batches; no gradients."""
    hits = 0
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            _, ok = answer_logprobs(lm, pairs[start : start + batch_size])
            hits += int(ok.all(-1).sum())
    return hits / len(pairs)


def _mask_tensors(
    mask: WeightMask | Mapping[str, torch.Tensor] | None, params: dict[str, torch.nn.Parameter]
) -> dict[str, torch.Tensor] | None:
    if mask is None:
        return None
    masks = mask.masks if isinstance(mask, WeightMask) else mask
    if not isinstance(masks, Mapping):
        raise InputError("mask must be a WeightMask, a dict name -> bool tensor, or None")
    missing = [n for n in params if n not in masks]
    unknown = [n for n in masks if n not in params]
    if missing or unknown:
        raise InputError(
            f"the mask does not fit this model: {len(missing)} parameter(s) without a mask "
            f"(e.g. {missing[:1]}), {len(unknown)} mask(s) for unknown parameters (e.g. "
            f"{unknown[:1]}); make the mask with weight_mask on this model"
        )
    out = {}
    for name, p in params.items():
        m = torch.as_tensor(masks[name])
        if m.shape != p.shape:
            raise InputError(f"mask {name!r} has shape {tuple(m.shape)}, weight {tuple(p.shape)}")
        out[name] = m.to(device=p.device, dtype=torch.bool)
    return out


def _check_args(loss: str, lr: float, gamma: float, beta: float, weight_decay: float) -> None:
    if loss not in LOSSES:
        raise InputError(f"unknown unlearning loss {loss!r}; choose from {', '.join(LOSSES)}")
    for name, v in (("lr", lr), ("beta", beta)):
        if not v > 0:
            raise InputError(f"{name} must be > 0, got {v}")
    for name, v in (("gamma", gamma), ("weight_decay", weight_decay)):
        if not v >= 0:
            raise InputError(f"{name} must be >= 0, got {v}")


def _n_steps(steps: int | None, epochs: float | None, n_forget: int, batch_size: int) -> int:
    if steps is not None and epochs is not None:
        raise InputError("give steps or epochs, not both")
    if steps is None:
        per_epoch = -(-n_forget // batch_size)
        steps = int(np.ceil((5 if epochs is None else epochs) * per_epoch))
    if steps < 1:
        raise InputError(f"unlearning needs at least one step, got {steps}")
    return int(steps)


def unlearn(
    model: Any,
    forget: Iterable[Any],
    retain: Iterable[Any],
    *,
    tokenizer: Any = None,
    loss: Loss = "graddiff",
    mask: WeightMask | Mapping[str, torch.Tensor] | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    lr: float = 1e-5,
    batch_size: int = 8,
    gamma: float = 1.0,
    beta: float = 0.1,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    until_forget_accuracy: float | None = None,
    eval_sets: Mapping[str, Iterable[Any]] | None = None,
    eval_every: int | None = None,
    chat: bool = False,
    seed: int = 0,
) -> UnlearnResult:
    """Unlearn ``forget`` while keeping ``retain`` with GradDiff or NPO(+retain NLL), updating
    only the weights ``mask`` selects (WAGLE, Jia et al., NeurIPS 2024; NPO, Zhang et al.,
    2024; see the module docstring for the step and the deviations). Changes the model's
    weights in place; unselected weights stay bit-identical, weight decay included.

    ``steps`` (or ``epochs`` over the forget set, default 5) bounds the run;
    ``until_forget_accuracy=0.0`` stops as soon as forget accuracy ≤ 0 (checked after every
    step on the forget set). ``eval_sets`` (name → examples, e.g. another relation) are
    evaluated with forget and retain at step 0, every ``eval_every`` steps and at the end.

    Returns an :class:`UnlearnResult`. Cost: per step min(batch_size, |forget|) +
    min(batch_size, |retain|) forward and backward passes (a forget and a retain batch); NPO adds one forward pass per forget example for the reference
    NLL; every evaluation one forward pass per example evaluated."""
    _check_args(loss, lr, gamma, beta, weight_decay)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    lm = as_causal_lm(model, tokenizer)
    f_pairs = examples_as_pairs(forget, "forget")
    r_pairs = examples_as_pairs(retain, "retain")
    check_disjoint(f_pairs, r_pairs)
    n_steps = _n_steps(steps, epochs, len(f_pairs), batch_size)
    sets = {
        "forget": encode_examples(lm, f_pairs, chat),
        "retain": encode_examples(lm, r_pairs, chat),
    }
    for name, examples in (eval_sets or {}).items():
        if name in sets:
            raise InputError(f"eval set name {name!r} is reserved; rename it")
        sets[name] = encode_examples(lm, examples_as_pairs(examples, name), chat)
    params = trainable_parameters(lm.model)
    masks = _mask_tensors(mask, params)
    active = [n for n in params if masks is None or bool(masks[n].any())]
    if not active:
        raise InputError("the mask selects no weight; use a larger ratio")
    frozen = [n for n in params if n not in active]
    rng = np.random.default_rng(seed)

    def evaluate(names: Iterable[str]) -> dict[str, float]:
        return {n: accuracy(lm, sets[n]) for n in names}

    with measure(lm) as cost:
        for n in frozen:  # no gradient for tensors the mask leaves untouched
            params[n].requires_grad_(False)
        try:
            acc0 = evaluate(sets)
            trajectory = [UnlearnStep(0, accuracy=acc0)]
            ref_nll = None
            if loss == "npo":
                with torch.no_grad():
                    ref_nll = _summed_nll(lm, sets["forget"], batch_size)
            run = _Run(lm, params, active, masks, lr, weight_decay, max_grad_norm)
            order = rng.permutation(len(f_pairs))
            f_size, r_size = min(batch_size, len(f_pairs)), min(batch_size, len(r_pairs))
            stopped, done, cursor = False, 0, 0
            if until_forget_accuracy is not None and acc0["forget"] <= until_forget_accuracy:
                stopped = True
            while not stopped and done < n_steps:
                if cursor + f_size > len(order):  # cycle: a fresh seeded pass over the forget set
                    order = np.concatenate([order[cursor:], rng.permutation(len(f_pairs))])
                    cursor = 0
                f_idx = order[cursor : cursor + f_size]
                cursor += f_size
                r_idx = rng.choice(len(r_pairs), size=r_size, replace=False)
                f_batch = [sets["forget"][i] for i in f_idx]
                r_batch = [sets["retain"][i] for i in r_idx]
                ref = None if ref_nll is None else ref_nll[torch.as_tensor(f_idx)]
                record = run.step(f_batch, r_batch, loss, gamma, beta, ref)
                done += 1
                acc: dict[str, float] = {}
                if eval_every and done % eval_every == 0:
                    acc = evaluate(sets)
                elif until_forget_accuracy is not None:
                    acc = evaluate(["forget"])
                if until_forget_accuracy is not None and acc["forget"] <= until_forget_accuracy:
                    stopped = True
                if (stopped or done == n_steps) and set(acc) != set(sets):
                    acc = {**acc, **evaluate(n for n in sets if n not in acc)}
                trajectory.append(UnlearnStep(done, *record, accuracy=acc))
        finally:
            for n in frozen:
                params[n].requires_grad_(True)
    return UnlearnResult(
        trajectory=trajectory,
        steps=done,
        stopped=stopped,
        accuracy_before=acc0,
        accuracy_after=trajectory[-1].accuracy or acc0,
        cost=cost,
        optimizer_steps=run.optimizer_steps,
        params={
            "loss": loss,
            "lr": lr,
            "batch_size": batch_size,
            "gamma": gamma,
            "beta": beta,
            "weight_decay": weight_decay,
            "max_grad_norm": max_grad_norm,
            "max_steps": n_steps,
            "until_forget_accuracy": until_forget_accuracy,
            "mask": None if mask is None else _mask_summary(mask, masks),
            "seed": seed,
        },
    )


def _mask_summary(
    mask: WeightMask | Mapping[str, torch.Tensor], masks: dict[str, torch.Tensor] | None
) -> dict[str, Any]:
    assert masks is not None
    n_sel = sum(int(m.sum()) for m in masks.values())
    n_all = sum(m.numel() for m in masks.values())
    out: dict[str, Any] = {"selected_fraction": n_sel / n_all}
    if isinstance(mask, WeightMask):
        out.update(mask.params)
    return out


def _summed_nll(lm: LanguageModel, pairs: Pairs, batch_size: int) -> torch.Tensor:
    """(N,) summed answer NLL of each example (no gradient), in batches."""
    parts = []
    for start in range(0, len(pairs), batch_size):
        logp, _ = answer_logprobs(lm, pairs[start : start + batch_size])
        parts.append(-logp.sum(-1))
    return torch.cat(parts).detach()


class _Run:
    """The optimizer state of one unlearning run: Adam over the active tensors, masked
    gradients and masked decoupled weight decay."""

    def __init__(
        self,
        lm: LanguageModel,
        params: dict[str, torch.nn.Parameter],
        active: list[str],
        masks: dict[str, torch.Tensor] | None,
        lr: float,
        weight_decay: float,
        max_grad_norm: float | None,
    ) -> None:
        self.lm, self.lr, self.wd, self.clip = lm, lr, weight_decay, max_grad_norm
        self.tensors = [params[n] for n in active]
        self.masks = None if masks is None else [masks[n] for n in active]
        self.opt = torch.optim.Adam(self.tensors, lr=lr, weight_decay=0.0)
        self.optimizer_steps = 0

    def _loss(
        self,
        f_batch: Pairs,
        r_batch: Pairs,
        loss: str,
        gamma: float,
        beta: float,
        ref: torch.Tensor | None,
    ) -> tuple[torch.Tensor, float, float]:
        lm = self.lm
        if loss == "graddiff":
            f_nll = example_nll(lm, f_batch).mean()
            forget_term = -f_nll
        else:
            assert ref is not None
            logp, _ = answer_logprobs(lm, f_batch)
            cur = -logp.sum(-1)
            n_tok = torch.tensor([len(r) for _, r in f_batch], device=cur.device)
            f_nll = (cur / n_tok).mean()
            forget_term = (
                -(2.0 / beta) * torch.nn.functional.logsigmoid(beta * (cur - ref))
            ).mean()
        r_nll = example_nll(lm, r_batch).mean()
        return forget_term + gamma * r_nll, float(f_nll.detach()), float(r_nll.detach())

    def step(
        self,
        f_batch: Pairs,
        r_batch: Pairs,
        loss: str,
        gamma: float,
        beta: float,
        ref: torch.Tensor | None,
    ) -> tuple[float, float, float]:
        """One optimizer step; returns (loss, forget NLL, retain NLL) before the step."""
        total, f_nll, r_nll = self._loss(f_batch, r_batch, loss, gamma, beta, ref)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.lm.cost.backward_passes += len(f_batch) + len(r_batch)
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.tensors, self.clip)
        with torch.no_grad():
            for i, p in enumerate(self.tensors):
                if self.masks is not None and p.grad is not None:
                    p.grad.mul_(self.masks[i])
                if self.wd > 0:  # decoupled decay (AdamW's), on the selected weights only
                    decayed = p * (1.0 - self.lr * self.wd)
                    p.copy_(
                        decayed if self.masks is None else torch.where(self.masks[i], decayed, p)
                    )
        self.opt.step()
        self.optimizer_steps += 1
        return float(total.detach()), f_nll, r_nll
