"""COMET: a selector–predictor model trained to be explainable, with a frozen feature detector
(Zhang, Lee & Wang, 'Comprehensive Attribution: Inherently Explainable Vision Model with Feature
Detector', ECCV 2024).

A *selector* S maps an image to a soft mask m = sigmoid(S(x)); a *predictor* P classifies the
selected part x_s = m ⊙ x + (1 − m) ⊙ q (q: the fill, the dataset's mean colour in the authors'
code, where the mask multiplies the normalised input). A *detector* D, pre-trained on full
images and frozen, reads the complement x_{1−s} = (1 − m) ⊙ x + m ⊙ q; the selector is trained
so that D fails there (the mask is *complete*: nothing class-relevant is left outside it) while
P succeeds on x_s. Loss (the authors' ``train.py``, 2-player setting):

    loss1 = CE(P(x_s), y),  loss2 = CE(D(x_{1−s}), y)
    L = m_ploss·loss1 + m_closs·max(loss1 − loss2 + gap, 0) + m_area·mean_b max(mean(m_b) − mask_th, 0)

with m_ploss = 1, m_closs = 4, gap = 2, m_area = 100, mask_th = 0.6 (a hinge: D's loss on the
complement must exceed P's by ``gap`` nats, no reward beyond). ``loss="paper"`` uses the paper's
unbounded −a·L_D instead of the hinge. The predictor is stepped on ∇loss1 only, the selector on
∇L (the predictor's parameters receive nothing from L); D stays in eval mode and is never updated.

The explanation is the mask itself: :meth:`Comet.explain` returns it as an Attribution (one
forward pass of selector and predictor). Evaluators: :func:`mask_pxap` (pixel average precision
against a ground-truth mask), :func:`coverage`, :func:`fidelity` (D's accuracy on x_s and on
x_{1−s}) and :func:`top_k_masks` (binary masks of a fixed area, to compare at equal area).

At CPU scale the module also builds the data and models of the design notes (§3.3): 16 × 16
canvases with one 8 × 8 scikit-learn digit in one of four cells (:func:`digit_canvases`), a
small dilated-conv selector (:func:`canvas_selector`) and a 3-conv GAP classifier
(:func:`canvas_cnn`, trained as the black box by :func:`train_classifier`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attribkit.core.attribution import Attribution
from attribkit.core.cost import CostMeter, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.units import ImageUnits
from attribkit.evaluation.timeseries import average_precision

__all__ = [
    "CanvasData",
    "Comet",
    "area_penalty",
    "canvas_cnn",
    "canvas_selector",
    "comet_loss",
    "coverage",
    "digit_canvases",
    "fidelity",
    "mask_pxap",
    "top_k_masks",
    "train_classifier",
    "train_comet",
]

#: the authors' loss weights (``conf/COMET.yaml``, experiment ``COMET_2p_try``).
M_PLOSS, M_CLOSS, GAP, M_AREA, MASK_TH = 1.0, 4.0, 2.0, 100.0, 0.6
LOSSES = ("hinge", "paper")
TASK_KIND = "by_design"


# --- loss ---------------------------------------------------------------------------------------
def area_penalty(
    mask: torch.Tensor, threshold: float = MASK_TH, weight: float = M_AREA
) -> torch.Tensor:
    """``weight · mean_b max(mean(mask_b) − threshold, 0)`` for a (B, 1, H, W) or (B, H, W)
    mask in [0, 1]: the authors' area hinge (no cost below ``threshold``). No model call."""
    if mask.ndim not in (3, 4) or mask.shape[0] == 0:
        raise InputError(f"a mask batch must be (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    area = mask.flatten(1).mean(dim=1)
    return weight * torch.clamp(area - threshold, min=0.0).mean()


def comet_loss(
    loss1: torch.Tensor,
    loss2: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    loss: str = "hinge",
    m_ploss: float = M_PLOSS,
    m_closs: float = M_CLOSS,
    gap: float = GAP,
    m_area: float = M_AREA,
    mask_th: float = MASK_TH,
    a: float = 1.0,
) -> torch.Tensor:
    """The selector's loss from the predictor's cross-entropy on x_s (``loss1``), the frozen
    detector's on x_{1−s} (``loss2``; None: the ablation without a detector) and the mask.

    ``"hinge"`` (the authors' code): m_ploss·loss1 + m_closs·max(loss1 − loss2 + gap, 0) + area;
    ``"paper"``: m_ploss·loss1 − a·loss2 + area; area = :func:`area_penalty`. No model call."""
    if loss not in LOSSES:
        raise InputError(f"unknown COMET loss {loss!r}: use one of {', '.join(LOSSES)}")
    total = m_ploss * loss1 + area_penalty(mask, mask_th, m_area)
    if loss2 is None:
        return total
    if loss == "hinge":
        return total + m_closs * torch.clamp(loss1 - loss2 + gap, min=0.0)
    return total - a * loss2


# --- input handling -----------------------------------------------------------------------------
def _as_batch(x: Any, name: str = "x") -> torch.Tensor:
    """A (B, C, H, W) float32 tensor from (B, C, H, W) or (B, H, W) (one channel) arrays."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.float()
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[0] == 0 or min(t.shape[2:]) < 2:
        raise InputError(
            f"{name} must be a non-empty batch of images (B, C, H, W) or (B, H, W), got shape "
            f"{tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise InputError(f"{name} has NaN or infinite values")
    return t


def _as_labels(y: Any, n: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y)).long().reshape(-1)
    if t.numel() != n:
        raise InputError(f"{t.numel()} labels for {n} images; give one class index per image")
    if (t < 0).any():
        raise InputError("labels must be class indices >= 0")
    return t


def _blend(x: torch.Tensor, m: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_s, x_{1−s}): the selected part and its complement, the rest filled with ``q``."""
    return m * x + (1 - m) * q, (1 - m) * x + m * q


def _fill(fill: float | str | Sequence[float] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The fill q as a (1, C, 1, 1) tensor: a number, per-channel values, or ``"mean"`` (the
    per-channel mean of ``x``, the authors' normalised zero)."""
    c = x.shape[1]
    if isinstance(fill, str):
        if fill != "mean":
            raise InputError(
                f"unknown fill {fill!r}: use 'mean', a number or one value per channel"
            )
        return x.mean(dim=(0, 2, 3)).reshape(1, c, 1, 1)
    q = torch.as_tensor(np.asarray(fill, dtype=np.float32)).reshape(-1)
    if q.numel() == 1:
        q = q.expand(c)
    if q.numel() != c:
        raise InputError(
            f"fill has {q.numel()} values for {c} channels; give one or one per channel"
        )
    return q.reshape(1, c, 1, 1).clone()


def _logits(module: nn.Module, x: torch.Tensor, who: str) -> torch.Tensor:
    try:
        out = module(x)
    except RuntimeError as e:
        raise InputError(
            f"the {who} could not run on a batch of shape {tuple(x.shape)}; PyTorch said: "
            f"{str(e).splitlines()[0]}"
        ) from e
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ScorerError(
            f"the {who} returned {shape} for a batch of {x.shape[0]}; it must return "
            "(batch, n_classes) logits"
        )
    return out


def _mask(selector: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sigmoid(selector(x)), checked to be (B, 1, H, W) at the input's size."""
    try:
        out = selector(x)
    except RuntimeError as e:
        raise InputError(
            f"the selector could not run on a batch of shape {tuple(x.shape)}; PyTorch said: "
            f"{str(e).splitlines()[0]}"
        ) from e
    want = (x.shape[0], 1, *x.shape[2:])
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ScorerError(
            f"the selector returned {shape} for images of shape {tuple(x.shape)}; it must "
            f"return one mask logit per pixel, {want}"
        )
    return torch.sigmoid(out)


# --- the model ----------------------------------------------------------------------------------
class Comet:
    """A trained COMET model: ``selector`` (mask logits), ``predictor`` (classifies x_s), the
    frozen ``detector`` it was trained against (None for the ablation without one) and the
    ``fill`` q. Every image it runs is counted on ``meter`` (one forward pass per image: the
    selector and the predictor together); ``history`` holds per-epoch training losses."""

    task_kind = TASK_KIND

    def __init__(
        self,
        selector: nn.Module,
        predictor: nn.Module,
        detector: nn.Module | None = None,
        *,
        fill: float | Sequence[float] | torch.Tensor = 0.0,
        labels: Sequence[str] | None = None,
        name: str = "comet",
        batch_size: int = 256,
        history: list[dict[str, float]] | None = None,
    ) -> None:
        self.selector, self.predictor, self.detector = selector, predictor, detector
        self.fill = torch.as_tensor(fill, dtype=torch.float32).reshape(-1)
        self.labels = list(labels) if labels is not None else None
        self.name = name
        self.batch_size = batch_size
        self.history = history or []
        self.meter = CostMeter()

    def __repr__(self) -> str:
        d = "frozen detector" if self.detector is not None else "no detector"
        return f"Comet({self.name!r}, {d}, fill={self.fill.tolist()})"

    def _q(self, x: torch.Tensor) -> torch.Tensor:
        return _fill(self.fill, x)

    @torch.no_grad()
    def _run(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(masks (B, H, W), probabilities (B, K)) of a batch; counts B forward passes."""
        xb = _as_batch(x)
        self.selector.eval()
        self.predictor.eval()
        q = self._q(xb)
        masks, probs = [], []
        with self.meter.timed():
            for chunk in xb.split(self.batch_size):
                m = _mask(self.selector, chunk)
                xs, _ = _blend(chunk, m, q)
                logits = _logits(self.predictor, xs, "predictor")
                if not torch.isfinite(logits).all():
                    raise ScorerError("the predictor returned NaN or infinite logits")
                masks.append(m[:, 0])
                probs.append(torch.softmax(logits, dim=-1))
                self.meter.cost.forward_passes += len(chunk)
                self.meter.cost.batches += 1
        return torch.cat(masks), torch.cat(probs)

    def mask(self, x: Any) -> np.ndarray:
        """The (B, H, W) masks in [0, 1] of a batch (B, C, H, W) or (B, H, W); one forward
        pass per image."""
        return self._run(x)[0].numpy()

    def predict(self, x: Any) -> np.ndarray:
        """The (B, K) class probabilities P(x_s) of a batch; one forward pass per image."""
        return self._run(x)[1].numpy()

    def label(self, cls: int) -> str:
        return self.labels[cls] if self.labels is not None and cls < len(self.labels) else str(cls)

    def explain(self, image: Any) -> Attribution:
        """The mask of one image ((C, H, W) or (H, W)) as an Attribution over its pixels: scores
        = mask values, ``heatmap`` = the (H, W) mask, target = the predicted class (COMET's
        mask does not depend on a chosen class). Costs one forward pass."""
        t = (
            image.detach()
            if isinstance(image, torch.Tensor)
            else torch.as_tensor(np.asarray(image))
        )
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise InputError(
                f"explain takes one image (C, H, W) or (H, W), got shape {tuple(t.shape)}; "
                "use mask() or predict() for a batch"
            )
        with measure(self.meter) as cost:
            masks, probs = self._run(t[None])
        m, p = masks[0].numpy(), probs[0].numpy()
        cls = int(p.argmax())
        display = t.float().numpy().transpose(1, 2, 0)
        q = self._q(t[None].float())[0, :, 0, 0].numpy()
        if display.shape[2] == 1:
            display, q = np.repeat(display, 3, axis=2), np.repeat(q, 3)
        units = ImageUnits.grid(display, 1, baseline=np.broadcast_to(q, display.shape).copy())
        target = {
            "kind": "class_prob",
            "class": cls,
            "label": self.label(cls),
            "probability": float(p[cls]),
            "predicted": True,
            "model": self.name,
        }
        return Attribution(
            units=list(units.units),
            scores=m.ravel().astype(float),
            method="comet",
            target=target,
            params={"fill": self.fill.tolist(), "detector": self.detector is not None},
            cost=cost,
            input=dict(units.to_dict(), image=display),
            extras={"area": float(m.mean())},
            task=TASK_KIND,
            image_map=m,
        )

    def evaluate(
        self,
        x: Any,
        y: Any,
        gt_masks: Any = None,
        *,
        detector: nn.Module | None = None,
    ) -> dict[str, float]:
        """Accuracy of P(x_s), mean mask area and, with ``gt_masks``, :func:`mask_pxap` and
        :func:`coverage`; with a ``detector`` (default: the one it was trained against),
        :func:`fidelity` D(x_s) and D(x_{1−s}). Costs one forward pass per image, plus two of
        the detector's."""
        xb = _as_batch(x)
        yb = _as_labels(y, len(xb))
        masks, probs = self._run(xb)
        out = {
            "accuracy": float((probs.argmax(1) == yb).float().mean()),
            "area": float(masks.mean()),
        }
        if gt_masks is not None:
            out["pxap"] = mask_pxap(masks.numpy(), gt_masks)
            out["coverage"] = coverage(masks.numpy(), gt_masks)
        det = detector if detector is not None else self.detector
        if det is not None:
            out.update(fidelity(det, xb, yb, masks.numpy(), fill=self.fill))
        return out


# --- training -----------------------------------------------------------------------------------
def _check_modules(selector: Any, predictor: Any, detector: Any) -> None:
    for name, m in (("selector", selector), ("predictor", predictor)):
        if not isinstance(m, nn.Module):
            raise InputError(f"the {name} must be a torch nn.Module, got {type(m).__name__}")
        if not any(p.requires_grad for p in m.parameters()):
            raise InputError(f"the {name} has no trainable parameters")
    if detector is not None and not isinstance(detector, nn.Module):
        raise InputError(f"the detector must be a torch nn.Module, got {type(detector).__name__}")
    if detector is not None and (detector is selector or detector is predictor):
        raise InputError("the detector must be a separate, pre-trained model (it stays frozen)")


def train_comet(
    selector: nn.Module,
    predictor: nn.Module,
    detector: nn.Module | None,
    data: tuple[Any, Any],
    *,
    epochs: int = 15,
    lr: float = 2e-3,
    loss: str = "hinge",
    batch_size: int = 64,
    weight_decay: float = 0.03,
    milestones: Sequence[float] = (),
    fill: float | str | Sequence[float] = "mean",
    m_ploss: float = M_PLOSS,
    m_closs: float = M_CLOSS,
    gap: float = GAP,
    m_area: float = M_AREA,
    mask_th: float = MASK_TH,
    a: float = 1.0,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> Comet:
    """Train ``selector`` and ``predictor`` (in place) as COMET against the frozen ``detector``
    on ``data`` = (images (N, C, H, W) or (N, H, W), labels (N,)); returns the :class:`Comet`.

    Per batch: m = sigmoid(selector(x)); the predictor (AdamW) is stepped on ∇loss1 only; the
    selector (AdamW) on ∇:func:`comet_loss` (``loss="hinge"``, the authors' code, or
    ``"paper"``, −a·L_D). The detector runs in eval mode, is never stepped and its
    ``requires_grad`` flags and mode are restored afterwards. ``detector=None`` is the ablation
    "same selector–predictor without the detector" (L = loss1 + area hinge). ``milestones``:
    fractions of ``epochs`` where the learning rate is multiplied by 0.2 (the authors: 0.4, 0.6,
    0.8). ``fill``: q, ``"mean"`` (the training images' per-channel mean, as the authors' masked
    normalised input) or a number. Cost: 3 forward and backward passes per image and epoch (2
    without a detector); ``history`` holds per-epoch means of loss1, loss2, area and accuracy."""
    _check_modules(selector, predictor, detector)
    if loss not in LOSSES:
        raise InputError(f"unknown COMET loss {loss!r}: use one of {', '.join(LOSSES)}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise InputError("epochs and batch_size must be >= 1 and lr > 0")
    if not 0.0 <= mask_th <= 1.0:
        raise InputError(f"mask_th is a share of the image, in [0, 1]; got {mask_th}")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise InputError("data must be a pair (images, labels)")
    x = _as_batch(data[0], "the training images")
    y = _as_labels(data[1], len(x))
    q = _fill(fill, x)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    with torch.no_grad():
        probe = x[: min(2, len(x))]
        m0 = _mask(selector, probe)
        k = _logits(predictor, _blend(probe, m0, q)[0], "predictor").shape[1]
        if int(y.max()) >= k:
            raise InputError(f"label {int(y.max())} is out of range for a {k}-class predictor")
        if detector is not None:
            detector.eval()
            kd = _logits(detector, probe, "detector").shape[1]
            if kd != k:
                raise InputError(
                    f"the detector has {kd} classes, the predictor {k}; they must match"
                )

    sel_params = [p for p in selector.parameters() if p.requires_grad]
    pred_params = [p for p in predictor.parameters() if p.requires_grad]
    opt_s = torch.optim.AdamW(sel_params, lr=lr, weight_decay=weight_decay)
    opt_p = torch.optim.AdamW(pred_params, lr=lr, weight_decay=weight_decay)
    steps = sorted({max(1, round(f * epochs)) for f in milestones})
    scheds = [torch.optim.lr_scheduler.MultiStepLR(o, steps, gamma=0.2) for o in (opt_s, opt_p)]
    det_flags = [p.requires_grad for p in detector.parameters()] if detector is not None else []
    history: list[dict[str, float]] = []
    try:
        if detector is not None:
            detector.eval()
            detector.requires_grad_(False)
        for epoch in range(epochs):
            selector.train()
            predictor.train()
            sums = {"loss1": 0.0, "loss2": 0.0, "area": 0.0, "accuracy": 0.0}
            start = time.perf_counter()
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                xb, yb = x[idx], y[idx]
                m = _mask(selector, xb)
                xs, xc = _blend(xb, m, q)
                out_p = predictor(xs)
                loss1 = F.cross_entropy(out_p, yb)
                loss2 = F.cross_entropy(detector(xc), yb) if detector is not None else None
                total = comet_loss(
                    loss1, loss2, m, loss=loss, m_ploss=m_ploss, m_closs=m_closs, gap=gap,
                    m_area=m_area, mask_th=mask_th, a=a,
                )  # fmt: skip
                if not torch.isfinite(total):
                    raise ScorerError(
                        f"the COMET loss became {float(total)} in epoch {epoch}; lower lr, or use "
                        "loss='hinge' (the paper's -a·L_D is unbounded)"
                    )
                # predictor: its own loss only; selector: the full loss (predictor untouched)
                g_p = torch.autograd.grad(loss1, pred_params, retain_graph=True, allow_unused=True)
                g_s = torch.autograd.grad(total, sel_params, allow_unused=True)
                for params, grads in ((pred_params, g_p), (sel_params, g_s)):
                    for p, g in zip(params, grads, strict=True):
                        p.grad = g
                opt_p.step()
                opt_s.step()
                n = len(idx)
                sums["loss1"] += float(loss1.detach()) * n
                sums["loss2"] += float(loss2.detach()) * n if loss2 is not None else float("nan")
                sums["area"] += float(m.detach().mean()) * n
                sums["accuracy"] += float((out_p.argmax(1) == yb).float().sum())
            for s in scheds:
                s.step()
            row = {k_: v / len(x) for k_, v in sums.items()}
            row.update(epoch=float(epoch), seconds=time.perf_counter() - start)
            history.append(row)
            if callback is not None:
                callback(epoch, row)
    finally:
        if detector is not None:
            for p, f in zip(detector.parameters(), det_flags, strict=True):
                p.requires_grad_(f)
            detector.eval()  # frozen: it stays in eval mode
    selector.eval()
    predictor.eval()
    return Comet(
        selector,
        predictor,
        detector,
        fill=q.reshape(-1),
        labels=labels,
        name="comet" if detector is not None else "selector-predictor (no detector)",
        history=history,
    )


# --- evaluators ---------------------------------------------------------------------------------
def _masks_and_truth(mask: Any, gt_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mask.detach() if isinstance(mask, torch.Tensor) else mask, dtype=float)
    g = np.asarray(gt_mask.detach() if isinstance(gt_mask, torch.Tensor) else gt_mask)
    if m.shape != g.shape or m.ndim not in (2, 3) or m.size == 0:
        raise InputError(
            f"the mask has shape {m.shape} and the ground-truth mask {g.shape}; give equal "
            "(H, W) or (N, H, W) shapes"
        )
    if not np.isfinite(m).all():
        raise InputError("the mask has NaN or infinite values")
    g = g.astype(bool)
    if not g.any():
        raise InputError("the ground-truth mask is empty; PxAP needs at least one object pixel")
    return m, g


def mask_pxap(mask: Any, gt_mask: Any) -> float:
    """Pixel average precision (PxAP) of ``mask`` scores against the boolean ``gt_mask``,
    pooled over all pixels of all images ((H, W) or (N, H, W)); equals scikit-learn's
    ``average_precision_score`` (the authors' threshold sweep without its extra point). Chance
    is the object's pixel share. No model call."""
    m, g = _masks_and_truth(mask, gt_mask)
    return average_precision(m, g)


def coverage(mask: Any, gt_mask: Any, threshold: float = 0.5) -> float:
    """The share of ground-truth object pixels whose mask value exceeds ``threshold`` (pooled
    over images). No model call."""
    m, g = _masks_and_truth(mask, gt_mask)
    return float((m[g] > threshold).mean())


def top_k_masks(mask: Any, area: float) -> np.ndarray:
    """Binary masks keeping the ``area`` share of each image's highest mask values (ties by
    position): masks of equal area for a fair comparison. No model call."""
    m = np.asarray(mask, dtype=float)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.size == 0:
        raise InputError(f"masks must be (H, W) or (N, H, W), got shape {m.shape}")
    if not 0.0 < area <= 1.0:
        raise InputError(f"area is a share of the image in (0, 1], got {area}")
    flat = m.reshape(len(m), -1)
    k = max(1, round(area * flat.shape[1]))
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(out, order, True, axis=1)
    return out.reshape(m.shape)


@torch.no_grad()
def fidelity(
    detector: nn.Module,
    x: Any,
    y: Any,
    masks: Any,
    *,
    fill: float | str | Sequence[float] | torch.Tensor = 0.0,
    batch_size: int = 256,
    meter: CostMeter | None = None,
) -> dict[str, float]:
    """The frozen ``detector``'s accuracy on the selected parts x_s (``d_selected``: high = the
    mask holds what an independent model needs) and on their complements x_{1−s}
    (``d_complement``: near chance = the mask is complete), with ``masks`` (N, H, W) in [0, 1]
    and the rest filled with ``fill``. Costs 2 detector passes per image (counted on ``meter``
    when given)."""
    xb = _as_batch(x)
    yb = _as_labels(y, len(xb))
    mt = torch.as_tensor(np.asarray(masks, dtype=np.float32))
    if mt.shape != (xb.shape[0], *xb.shape[2:]):
        raise InputError(
            f"masks of shape {tuple(mt.shape)} do not fit images of shape {tuple(xb.shape)}; "
            "give one (H, W) mask per image"
        )
    if not torch.isfinite(mt).all() or mt.min() < 0 or mt.max() > 1:
        raise InputError("masks must hold values in [0, 1]")
    q = _fill(fill if not isinstance(fill, torch.Tensor) else fill.tolist(), xb)
    mode = detector.training
    detector.eval()
    hits = torch.zeros(2)
    try:
        for xc_, mc, yc in zip(
            xb.split(batch_size), mt[:, None].split(batch_size), yb.split(batch_size), strict=True
        ):
            xs, xr = _blend(xc_, mc, q)
            pred = _logits(detector, torch.cat([xs, xr]), "detector").argmax(1)
            hits += torch.stack([(p == yc).float().sum() for p in pred.split(len(yc))])
            if meter is not None:
                meter.cost.forward_passes += 2 * len(yc)
                meter.cost.batches += 1
    finally:
        detector.train(mode)
    return {"d_selected": float(hits[0]) / len(yb), "d_complement": float(hits[1]) / len(yb)}


# --- CPU-scale data and models (design notes §3.3) ----------------------------------------------
class CanvasData(NamedTuple):
    """16 × 16 canvases with one digit: ``x`` (N, 1, 16, 16) float32 in [0, 1], ``y`` (N,) the
    digit, ``cell`` (N,) its cell (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right),
    ``digit_mask`` (N, 16, 16) its non-zero pixels and ``cell_mask`` its 8 × 8 cell."""

    x: np.ndarray
    y: np.ndarray
    cell: np.ndarray
    digit_mask: np.ndarray
    cell_mask: np.ndarray


N_TRAIN_DIGITS = 1200


def digit_canvases(split: str = "train", *, copies: int = 1, seed: int = 0) -> CanvasData:
    """Canvases of scikit-learn's 8 × 8 digits: each digit of ``split`` (``"train"``: 1200
    digits, ``"test"``: the other 597, the tests' split) pasted ``copies`` times in a random cell
    (``seed``) of an empty 16 × 16 canvas. No model call."""
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if copies < 1:
        raise InputError("copies must be >= 1")
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(images))
    idx = perm[:N_TRAIN_DIGITS] if split == "train" else perm[N_TRAIN_DIGITS:]
    idx = np.tile(idx, copies)
    rng = np.random.default_rng(seed + (0 if split == "train" else 10_000))
    cell = rng.integers(0, 4, len(idx))
    x = np.zeros((len(idx), 1, 16, 16), dtype=np.float32)
    cell_mask = np.zeros((len(idx), 16, 16), dtype=bool)
    for i, (j, c) in enumerate(zip(idx, cell, strict=True)):
        r, col = 8 * (c // 2), 8 * (c % 2)
        x[i, 0, r : r + 8, col : col + 8] = images[j]
        cell_mask[i, r : r + 8, col : col + 8] = True
    return CanvasData(x, d.target[idx].astype(np.int64), cell, x[:, 0] > 0, cell_mask)


class _GapCNN(nn.Module):
    def __init__(self, channels: int, n_classes: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def canvas_cnn(n_classes: int = 10, channels: int = 1, width: int = 16, seed: int = 0) -> nn.Module:
    """A 3-conv CNN with global average pooling (``width``, 2·``width`` (stride 2), 2·``width``
    channels, ReLU, a linear head): the black box, detector and predictor at CPU scale."""
    torch.manual_seed(seed)
    return _GapCNN(channels, n_classes, width)


class _Selector(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for dilation in (1, 1, 2, 4):
            layers += [nn.Conv2d(c, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def canvas_selector(
    channels: int = 1, width: int = 16, seed: int = 0, init_area: float | None = None
) -> nn.Module:
    """A small fully convolutional selector: 4 conv layers (dilations 1, 1, 2, 4: a 31-px
    receptive field) and a 1 × 1 conv to one mask logit per pixel. ``init_area``: start the
    last bias at logit(init_area), so the first masks cover about that share (below a tight
    area threshold; the design notes' fix for the all-zero collapse)."""
    torch.manual_seed(seed)
    sel = _Selector(channels, width)
    if init_area is not None:
        if not 0.0 < init_area < 1.0:
            raise InputError(f"init_area must be in (0, 1), got {init_area}")
        with torch.no_grad():
            sel.out.bias.fill_(float(np.log(init_area / (1 - init_area))))
    return sel


def train_classifier(
    model: nn.Module,
    data: tuple[Any, Any],
    *,
    epochs: int = 15,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` (in place, Adam, cross-entropy) on full images: the black box that also
    serves as COMET's pre-trained detector. Returns it in eval mode. Cost: one forward and
    backward pass per image and epoch."""
    x = _as_batch(data[0], "the training images")
    y = _as_labels(data[1], len(x))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()
