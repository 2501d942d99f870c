"""Affinity Explainer: a matching few-shot segmenter explains itself through its own attention
(De Marinis et al., 'Matching-Based Few-Shot Semantic Segmentation Models Are Interpretable by
Design', 2025; algorithm read from the authors' ``affex/explainer/affinity.py``).

A matching few-shot segmentation (FSS) model predicts the foreground of a *query* image from K
*support* shots with masks by attending, at several feature levels, from every query position to
every support position; the attention times the support mask gives a coarse mask per level, and a
small decoder turns the coarse masks into the prediction. The affinities already say which
support pixels the prediction drew on. This module has:

- :class:`MatchingSegmenter` — the protocol such a model exposes: ``match`` (one forward pass that
  returns the foreground logits and the per-level query→support affinities) and ``decode`` (one
  decoder pass with chosen levels' coarse masks zeroed: the level ablation);
- :class:`DigitMatcher` — a small DCAMA-like model (two feature levels of a tiny CNN, cosine
  attention query→support with the support mask as values, a small decoder), trained on episodes
  of 16×16 digit canvases (:func:`digit_episodes`, :func:`train_digit_matcher`): base classes
  0–4 for training, novel classes 5–9 for evaluation, the FSS fold protocol at CPU scale;
- :class:`SupportTask` — one episode as an attribkit task over the support pixels (kind
  ``"few_shot"``): its mask scorer removes a support pixel from the image *and* the mask, and its
  gradient scorer lets the generic gradient methods (``saliency``, ``integrated_gradients``) run
  as baselines;
- :func:`attribute_support` / :func:`affinity_explainer` — AffEx plain, masked and signed;
- :func:`support_cut_curve` (the authors' "cut" protocol: keep the top p % of support pixels,
  image and mask, and report the loss of foreground IoU) and :func:`support_curves`
  (insertion/deletion over support pixels).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, CostMeter, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import check_units
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import Unit, Units
from attribkit.evaluation.curves import DeletionInsertion, deletion_insertion, rank_units

__all__ = [
    "CutCurve",
    "DigitMatcher",
    "Episodes",
    "MatchResult",
    "MatchingSegmenter",
    "SupportPixels",
    "SupportTask",
    "affinity_explainer",
    "attribute_support",
    "digit_episodes",
    "foreground_iou",
    "level_maps",
    "segmentation_iou",
    "support_curves",
    "support_cut_curve",
    "support_weight",
    "train_digit_matcher",
]

Variant = Literal["plain", "masked", "signed"]
Aggregation = Literal["feature_ablation", "mean"]
_EPS = 1e-12


# --- the protocol ---------------------------------------------------------------------------------


@dataclass
class MatchResult:
    """What one forward pass of a matching segmenter returns for a batch of B episodes.

    Attributes:
        logits: (B, Hq, Wq) foreground logits at the query's resolution (foreground = logit > 0).
        affinities: one (B, hq·wq, K·hs·ws) tensor per level: the query→support affinity before
            the softmax over support positions (support positions ordered shot, row, column).
        query_shapes: (hq, wq) per level.
        support_shapes: (hs, ws) per level.
        n_shots: K.
        state: whatever :meth:`MatchingSegmenter.decode` needs (coarse masks, query features).
    """

    logits: torch.Tensor
    affinities: list[torch.Tensor]
    query_shapes: list[tuple[int, int]]
    support_shapes: list[tuple[int, int]]
    n_shots: int
    state: Any = None


@runtime_checkable
class MatchingSegmenter(Protocol):
    """A matching few-shot segmenter that exposes its per-level affinities and level ablation.

    ``match(query (B, C, Hq, Wq), support (B, K, C, Hs, Ws), support_mask (B, K, Hs, Ws))`` runs
    the model once (differentiably) and returns a :class:`MatchResult`; ``decode(result,
    ablate=(l, ...))`` reruns only the decoder with the coarse masks of the listed levels zeroed
    and returns (B, Hq, Wq) foreground logits (``ablate=()`` reproduces ``result.logits``).
    """

    n_levels: int

    def match(
        self, query: torch.Tensor, support: torch.Tensor, support_mask: torch.Tensor
    ) -> MatchResult: ...

    def decode(self, result: MatchResult, ablate: Sequence[int] = ()) -> torch.Tensor: ...


# --- a small DCAMA-like model ---------------------------------------------------------------------


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU())


class DigitMatcher(nn.Module):
    """A DCAMA-like matching segmenter for small images (design notes §4.4).

    Shared encoder: a stem at full resolution, then two levels at 1/2 and 1/4 (8×8 and 4×4 for
    a 16×16 canvas). At each level, query and support features go through one shared 1×1
    projection, are L2-normalised, and their cosine similarity times ``temperature`` is the
    affinity; its softmax over the K·hs·ws support positions times the support mask (area-pooled
    to the level) is the level's coarse mask. The decoder reads [coarse masks, query features] at
    1/2 resolution, upsamples and adds the stem features: one foreground logit per pixel.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, temperature: float = 10.0) -> None:
        super().__init__()
        self.in_channels, self.temperature = in_channels, temperature
        self.n_levels = 2
        self.stem = _conv(in_channels, 16)
        self.level1 = nn.Sequential(_conv(16, width, 2), _conv(width, width))
        self.level2 = nn.Sequential(_conv(width, width, 2), _conv(width, width))
        self.proj = nn.ModuleList([nn.Conv2d(width, width, 1), nn.Conv2d(width, width, 1)])
        self.mix = nn.Sequential(_conv(2 + width, width), _conv(width, width))
        self.out = nn.Sequential(_conv(width + 16, 16), nn.Conv2d(16, 1, 3, padding=1))

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.stem(x)
        f1 = self.level1(f0)
        return [f0, f1, self.level2(f1)]

    def match(
        self, query: torch.Tensor, support: torch.Tensor, support_mask: torch.Tensor
    ) -> MatchResult:
        """One forward pass (see :class:`MatchingSegmenter`)."""
        b, k = support.shape[:2]
        q = self._encode(query)
        s = self._encode(support.flatten(0, 1))
        affinities, coarse, qshapes, sshapes = [], [], [], []
        for level in range(self.n_levels):
            qf, sf = q[level + 1], s[level + 1]
            hq, wq = qf.shape[-2:]
            hs, ws = sf.shape[-2:]
            qp = F.normalize(self.proj[level](qf), dim=1).flatten(2).transpose(1, 2)
            sp = F.normalize(self.proj[level](sf), dim=1)
            sp = sp.reshape(b, k, -1, hs * ws).permute(0, 1, 3, 2).reshape(b, k * hs * ws, -1)
            affinity = self.temperature * qp @ sp.transpose(1, 2)  # (B, Nq, K·Ns)
            m = F.adaptive_avg_pool2d(support_mask.float(), (hs, ws)).reshape(b, k * hs * ws)
            c = (affinity.softmax(-1) @ m[..., None]).reshape(b, 1, hq, wq)
            affinities.append(affinity)
            coarse.append(c)
            qshapes.append((int(hq), int(wq)))
            sshapes.append((int(hs), int(ws)))
        state = {"coarse": coarse, "q0": q[0], "q1": q[1]}
        result = MatchResult(torch.empty(0), affinities, qshapes, sshapes, int(k), state)
        result.logits = self.decode(result)
        return result

    def decode(self, result: MatchResult, ablate: Sequence[int] = ()) -> torch.Tensor:
        """(B, Hq, Wq) foreground logits from the coarse masks, those of ``ablate`` zeroed."""
        st = result.state
        q1 = st["q1"]
        maps = []
        for level, c in enumerate(st["coarse"]):
            c = torch.zeros_like(c) if level in ablate else c
            maps.append(F.interpolate(c, size=q1.shape[-2:], mode="bilinear", align_corners=False))
        x = self.mix(torch.cat([*maps, q1], dim=1))
        x = F.interpolate(x, size=st["q0"].shape[-2:], mode="bilinear", align_corners=False)
        return self.out(torch.cat([x, st["q0"]], dim=1))[:, 0]

    def coarse_masks(self, result: MatchResult) -> list[torch.Tensor]:
        """The per-level coarse masks (B, 1, hq, wq) of a result (for the auxiliary loss)."""
        return list(result.state["coarse"])


# --- digit canvases: episodes for training and held-out evaluation -------------------------------

#: pixels of a digit (values in [0, 1]) above this form its mask
MASK_THRESHOLD = 0.3
_CELLS = ((0, 0), (0, 8), (8, 0), (8, 8))


@functools.lru_cache(maxsize=1)
def _digit_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits in [0, 1], split as the tests' digits CNN splits them (a seeded
    permutation: 1,200 training digits, 597 test digits)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:1200], perm[1200:]
    return x[tr], y[tr], x[te], y[te]


@dataclass
class Episodes:
    """N one-way K-shot episodes on 16×16 canvases.

    ``support`` (N, K, 16, 16) and ``query`` (N, 16, 16) are grey images in [0, 1];
    ``support_mask`` (N, K, 16, 16) and ``query_mask`` (N, 16, 16) are the target digit's pixels
    (value > :data:`MASK_THRESHOLD`) as 0/1 floats; ``label`` (N,) is the target class.
    """

    support: np.ndarray
    support_mask: np.ndarray
    query: np.ndarray
    query_mask: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def episode(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(support, support_mask, query, query_mask)`` of episode ``i``."""
        return self.support[i], self.support_mask[i], self.query[i], self.query_mask[i]


def digit_episodes(
    n: int,
    classes: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    split: Literal["train", "test"] = "train",
    shots: int = 1,
    distractors: tuple[int, int] = (0, 2),
    distractor_classes: Sequence[int] | None = None,
    augment: bool = False,
    seed: int = 0,
) -> Episodes:
    """``n`` episodes: the target class drawn from ``classes``; every canvas (K supports and the
    query) holds a different digit of that class in one of its four 8×8 cells and
    ``distractors`` (min, max) digits of other classes (from ``distractor_classes``, default
    the target's complement in ``classes``) in other cells; masks mark the target digit only.
    Digits come from the ``split`` of scikit-learn's digits (base classes 0–4 to train, novel
    5–9 on the test split to evaluate). ``augment=True`` turns every class into eight
    pseudo-classes (the digit rotated by 0/90/180/270° and mirrored; one transform per episode
    for the target, an independent one per distractor): more training classes for the matching
    to generalise from. No model call."""
    xs, ys, xt, yt = _digit_split()
    x, y = (xs, ys) if split == "train" else (xt, yt)
    classes = [int(c) for c in classes]
    if n < 1 or shots < 1 or not classes:
        raise InputError("give n >= 1 episodes, shots >= 1 and at least one class")
    lo, hi = distractors
    if not 0 <= lo <= hi <= 3:
        raise InputError(
            f"distractors must be (min, max) with 0 <= min <= max <= 3, got {distractors}"
        )
    pool = classes if distractor_classes is None else [int(c) for c in distractor_classes]
    by_class = {c: np.flatnonzero(y == c) for c in set(classes) | set(pool)}
    rng = np.random.default_rng(seed)
    canvas = np.zeros((n, shots + 1, 16, 16), np.float32)
    masks = np.zeros_like(canvas)
    labels = np.empty(n, np.int64)
    for i in range(n):
        c = classes[int(rng.integers(len(classes)))]
        labels[i] = c
        picks = rng.choice(by_class[c], size=shots + 1, replace=len(by_class[c]) < shots + 1)
        others = [o for o in pool if o != c]
        t = int(rng.integers(8)) if augment else 0
        for j, idx in enumerate(picks):
            cells = rng.permutation(4)
            r, col = _CELLS[cells[0]]
            digit = _dihedral(x[idx], t)
            canvas[i, j, r : r + 8, col : col + 8] = digit
            masks[i, j, r : r + 8, col : col + 8] = digit > MASK_THRESHOLD
            n_other = int(rng.integers(lo, hi + 1)) if others else 0
            for cell in cells[1 : 1 + n_other]:
                oc = others[int(rng.integers(len(others)))]
                r, col = _CELLS[cell]
                t_other = int(rng.integers(8)) if augment else 0
                canvas[i, j, r : r + 8, col : col + 8] = _dihedral(
                    x[rng.choice(by_class[oc])], t_other
                )
    return Episodes(canvas[:, :shots], masks[:, :shots], canvas[:, shots], masks[:, shots], labels)


def _dihedral(img: np.ndarray, t: int) -> np.ndarray:
    """One of the eight rotations / mirror images of a square image (t = 0 leaves it)."""
    out = np.rot90(img, t % 4)
    return np.ascontiguousarray(out.T if t >= 4 else out)


def foreground_iou(pred: Any, gt: Any) -> np.ndarray:
    """Foreground IoU of boolean (…, H, W) predictions against masks (1.0 when both are empty).
    No model call."""
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    inter = (p & g).sum(axis=(-2, -1))
    union = (p | g).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _batched_logits(
    model: MatchingSegmenter, query: np.ndarray, support: np.ndarray, mask: np.ndarray, batch: int
) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(0, len(query), batch):
            q = torch.from_numpy(query[s : s + batch])[:, None]
            sup = torch.from_numpy(support[s : s + batch])[:, :, None]
            m = torch.from_numpy(mask[s : s + batch])
            out.append(model.match(q, sup, m).logits.numpy())
    return np.concatenate(out)


def train_digit_matcher(
    episodes: Episodes | None = None,
    *,
    n_episodes: int = 3000,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 2e-3,
    aux_weight: float = 1.0,
    augment: bool = False,
    seed: int = 0,
    model: DigitMatcher | None = None,
) -> DigitMatcher:
    """A :class:`DigitMatcher` trained on ``episodes`` (default: ``n_episodes`` base-class
    training episodes, :func:`digit_episodes` with ``augment`` and ``seed``) for ``epochs`` with Adam: binary
    cross-entropy of the foreground logits against the query mask plus ``aux_weight`` × that
    of each level's coarse mask against the area-pooled query mask (DCAMA's auxiliary loss).
    Deterministic for a seed; returned in eval mode. Cost: epochs × episodes training steps
    (seconds on a CPU)."""
    torch.manual_seed(seed)
    ep = (
        episodes if episodes is not None else digit_episodes(n_episodes, augment=augment, seed=seed)
    )
    net = model if model is not None else DigitMatcher()
    sup = torch.from_numpy(ep.support)[:, :, None]
    smask = torch.from_numpy(ep.support_mask)
    qry = torch.from_numpy(ep.query)[:, None]
    qmask = torch.from_numpy(ep.query_mask)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(ep), generator=g).split(batch_size):
            res = net.match(qry[idx], sup[idx], smask[idx])
            loss = F.binary_cross_entropy_with_logits(res.logits, qmask[idx])
            for c in net.coarse_masks(res):
                target = F.adaptive_avg_pool2d(qmask[idx][:, None], c.shape[-2:])
                loss = loss + aux_weight * F.binary_cross_entropy(c.clamp(1e-6, 1 - 1e-6), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def segmentation_iou(model: MatchingSegmenter, episodes: Episodes, batch_size: int = 64) -> float:
    """Mean foreground IoU of the model's predictions (logit > 0) on ``episodes``; one forward
    pass per episode."""
    logits = _batched_logits(
        model, episodes.query, episodes.support, episodes.support_mask, batch_size
    )
    return float(foreground_iou(logits > 0, episodes.query_mask > 0.5).mean())


# --- one episode as a task over the support pixels -----------------------------------------------


def _as_episode(
    support: Any, support_mask: Any, query: Any, query_mask: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(support (K, C, H, W), mask (K, H, W), query (C, Hq, Wq), query_mask (Hq, Wq) | None)``
    as float32 from display-convention arrays; InputError with what to fix otherwise."""
    m = np.asarray(support_mask, dtype=np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] == 0 or 0 in m.shape[1:]:
        raise InputError(
            f"the support mask must be (H, W) for one shot or (K, H, W), got {np.shape(support_mask)}"
        )
    k, h, w = m.shape
    s = np.asarray(support, dtype=np.float32)
    if s.shape == (h, w) and k == 1:
        s = s[None, None]
    elif s.shape == (k, h, w):
        s = s[:, None]
    elif s.ndim == 3 and k == 1 and s.shape[:2] == (h, w):
        s = s.transpose(2, 0, 1)[None]
    elif s.ndim == 4 and s.shape[:3] == (k, h, w):
        s = s.transpose(0, 3, 1, 2)
    else:
        raise InputError(
            f"the support mask {m.shape} does not fit the support images {np.shape(support)}: give "
            "one (H, W) mask per shot, the same size as its image ((K, H, W) or (K, H, W, C) "
            "images with (K, H, W) masks; (H, W[, C]) with (H, W) for one shot)"
        )
    if m.min() < 0 or m.max() > 1:
        raise InputError("support mask values must lie in [0, 1] (1 = foreground)")
    empty = [i for i in range(k) if not (m[i] > 0.5).any()]
    if empty:
        raise InputError(
            f"the support mask of shot {empty[0]} is empty (no foreground pixel > 0.5): a matching "
            "segmenter has nothing to match; give each shot the mask of the target object"
        )
    q = np.asarray(query, dtype=np.float32)
    if q.ndim == 2:
        q = q[None]
    elif q.ndim == 3:
        q = q.transpose(2, 0, 1)
    else:
        raise InputError(f"the query must be an (H, W) or (H, W, C) image, got {q.shape}")
    if q.shape[0] != s.shape[1]:
        raise InputError(
            f"the query has {q.shape[0]} channel(s), the support images {s.shape[1]}; give both "
            "in the same colour format"
        )
    qm = None
    if query_mask is not None:
        qm = np.asarray(query_mask, dtype=np.float32)
        if qm.shape != q.shape[1:]:
            raise InputError(
                f"the query mask has shape {qm.shape}, the query image {q.shape[1:]}; they must match"
            )
    for name, a in (("support", s), ("support mask", m), ("query", q)):
        if not np.isfinite(a).all():
            raise InputError(f"the {name} has NaN or infinite values")
    return s, m, q, qm


class SupportPixels(Units):
    """The pixels of K support shots, one unit each (index ``k·H·W + r·W + c``). A removed pixel
    is zeroed in the support image *and* in the support mask (the authors' substrate "zero")."""

    kind = "support_pixels"
    removal = "zero image and mask pixel"

    def __init__(self, support: np.ndarray, support_mask: np.ndarray) -> None:
        k, _, h, w = support.shape
        units = [
            Unit(
                i,
                f"shot {i // (h * w)} ({i % (h * w) // w}, {i % w})",
                box=(i % (h * w) // w, i % w, i % (h * w) // w + 1, i % w + 1),
                meta={"shot": i // (h * w)},
            )
            for i in range(k * h * w)
        ]
        super().__init__(units)
        self.support, self.mask = support, support_mask
        self.shape = (k, h, w)

    def compose_batch(self, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        """``(images (B, K, C, H, W), masks (B, K, H, W))`` with the removed pixels zeroed."""
        keep = self.check_masks(masks).reshape(-1, *self.shape).astype(np.float32)
        return self.support[None] * keep[:, :, None], self.mask[None] * keep

    def compose(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, masks = self.compose_batch(mask)
        return images[0], masks[0]

    def to_dict(self) -> dict[str, Any]:
        k, h, w = self.shape
        return {"kind": self.kind, "removal": self.removal, "shots": k, "shape": [h, w]}


Region = Literal["logits", "gt", "all"]


class SupportTask(Task):
    """One few-shot segmentation episode, explained over its support pixels (kind ``few_shot``).

    The target is the model's foreground on the *explanation region* of the query:
    ``explanation_mask="logits"`` (default, the authors' choice: the predicted foreground; an
    empty prediction falls back to all pixels, recorded in ``target_info``), ``"gt"`` (the
    ``query_mask``), ``"all"``, or an (Hq, Wq) boolean array. AffEx normalises every support
    position's query map to sum 1 before averaging it over the region, so over *all* query
    pixels every support position scores the same (a flat map up to resizing effects): the
    region must be a part of the query. Its value for the mask scorer and the
    gradient scorer is the mean foreground probability over that region (``measure="prob"``,
    the authors' ``"logits"`` measure) or, for the mask scorer only, the foreground IoU of the
    prediction against ``query_mask`` (``measure="iou"``).

    Building it with ``explanation_mask="logits"`` runs the model once (one forward pass on
    :attr:`meter`); every other model call is counted by the method or scorer that makes it.
    """

    kind = "few_shot"
    supports_gradients = True

    def __init__(
        self,
        model: MatchingSegmenter,
        support: Any,
        support_mask: Any,
        query: Any,
        *,
        query_mask: Any = None,
        explanation_mask: Region | np.ndarray = "logits",
        batch_size: int = 32,
    ) -> None:
        if not callable(getattr(model, "match", None)) or not callable(
            getattr(model, "decode", None)
        ):
            raise InputError(
                f"{type(model).__name__} is not a MatchingSegmenter: it needs match(query, "
                "support, support_mask) -> MatchResult and decode(result, ablate=...)"
            )
        self.model, self.batch_size = model, batch_size
        self.support, self.support_mask, self.query, self.query_mask = _as_episode(
            support, support_mask, query, query_mask
        )
        self.units = SupportPixels(self.support, self.support_mask)
        self._meter = CostMeter()
        self.fallback = False
        self.region, self.region_source = self._region(explanation_mask)

    # -- model calls ------------------------------------------------------------------------------
    @property
    def meter(self) -> CostMeter:
        return self._meter

    @property
    def n_shots(self) -> int:
        return int(self.support.shape[0])

    def _tensors(self, b: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = torch.from_numpy(self.query)[None].expand(b, *self.query.shape)
        return q, torch.from_numpy(self.support)[None], torch.from_numpy(self.support_mask)[None]

    def match(self) -> MatchResult:
        """One forward pass on the episode (no gradient), counted on :attr:`meter`."""
        q, s, m = self._tensors()
        with self._meter.timed(), torch.no_grad():
            result = self.model.match(q, s, m)
        self._meter.cost.forward_passes += 1
        self._meter.cost.batches += 1
        _check_result(result, self)
        return result

    def decode(self, result: MatchResult, ablate: Sequence[int]) -> torch.Tensor:
        """One decoder pass with the ``ablate`` levels zeroed, counted as a forward pass."""
        with self._meter.timed(), torch.no_grad():
            logits = self.model.decode(result, ablate=tuple(ablate))
        self._meter.cost.forward_passes += 1
        self._meter.cost.batches += 1
        if not torch.isfinite(logits).all():
            raise ScorerError("the decoder returned NaN or infinite logits")
        return logits

    def _region(self, how: Any) -> tuple[np.ndarray, str]:
        hq, wq = self.query.shape[1:]
        if isinstance(how, str) and how == "logits":
            pred = self.match().logits[0].numpy() > 0
            if not pred.any():
                self.fallback = True
                return np.ones((hq, wq), bool), "all (the prediction is empty)"
            return pred, "logits"
        if isinstance(how, str) and how in ("gt", "ground_truth"):
            if self.query_mask is None:
                raise InputError('explanation_mask="gt" needs the query_mask')
            region = self.query_mask > 0.5
            if not region.any():
                raise InputError("the query mask is empty; explain 'logits' or 'all' instead")
            return region, "gt"
        if isinstance(how, str) and how == "all":
            return np.ones((hq, wq), bool), "all"
        if isinstance(how, str):
            raise InputError(
                f"unknown explanation_mask {how!r}: use 'logits', 'gt', 'all' or an (H, W) array"
            )
        region = np.asarray(how, dtype=bool)
        if region.shape != (hq, wq) or not region.any():
            raise InputError(
                f"an explanation mask must be a non-empty boolean ({hq}, {wq}) array, got "
                f"{region.shape} with {int(region.sum())} pixels"
            )
        return region, "given"

    def _values(self, logits: torch.Tensor, measure: str) -> torch.Tensor:
        if measure == "iou":
            assert self.query_mask is not None
            pred = (logits > 0).numpy()
            return torch.from_numpy(foreground_iou(pred, self.query_mask > 0.5))
        region = torch.from_numpy(self.region)
        return torch.sigmoid(logits)[:, region].mean(dim=1)

    # -- the task contract ------------------------------------------------------------------------
    @property
    def target_info(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "kind": "few_shot_segmentation",
            "description": f"the query's foreground from {self.n_shots} support shot(s)",
            "explanation_mask": self.region_source,
            "region_pixels": int(self.region.sum()),
            "fallback": self.fallback,
        }

    @property
    def input_info(self) -> dict[str, Any]:
        k, c, h, w = self.support.shape
        tiled = self.support.transpose(2, 0, 3, 1).reshape(h, k * w, c)
        return {**self.units.to_dict(), "image": tiled[..., 0] if c == 1 else tiled}

    def maps(self, scores: np.ndarray) -> np.ndarray:
        """(K, H, W) per-shot maps of one score per support pixel. No model call."""
        return np.asarray(scores, dtype=float).reshape(self.units.shape)

    def result(
        self, scores: np.ndarray, method: str, params: dict[str, Any], cost: Cost, **extras: Any
    ) -> Attribution:
        """The Attribution over the support pixels, with the shots side by side as its heatmap
        (H, K·W) and ``extras['shot_maps']`` (K, H, W). No model call."""
        maps = self.maps(scores)
        extras.setdefault("shot_maps", maps)
        att = Attribution(
            units=list(self.units),
            scores=np.asarray(scores, dtype=float).reshape(-1),
            method=method,
            target=self.target_info,
            params=params,
            cost=cost,
            input=self.input_info,
            extras=extras,
            task=self.kind,
            image_map=np.concatenate(list(maps), axis=1),
        )
        return att

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """A mask scorer over the support pixels (removed pixels zeroed in image and mask): the
        mean foreground probability over the explanation region (``measure="prob"``) or the
        foreground IoU against ``query_mask`` (``measure="iou"``). One forward pass per
        distinct mask."""
        measure_ = params.pop("measure", "prob")
        if measure_ not in ("prob", "iou"):
            raise InputError(f"measure must be 'prob' or 'iou', got {measure_!r}")
        if measure_ == "iou" and self.query_mask is None:
            raise InputError('measure="iou" needs the query_mask of the episode')

        def fn(batch: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            images, masks = batch
            q, _, _ = self._tensors(len(images))
            with torch.no_grad():
                logits = self.model.match(q, torch.from_numpy(images), torch.from_numpy(masks))
            if not torch.isfinite(logits.logits).all():
                raise ScorerError("the model returned NaN or infinite logits")
            return self._values(logits.logits, measure_).double().numpy()

        return Scorer(
            self.units,
            fn,
            target=self.target_info,
            batch_size=params.pop("batch_size", self.batch_size),
            task_kind=self.kind,
        )

    def unit_gradient_scorer(self, params: dict[str, Any]) -> GradientScorer:
        """A gradient scorer over the support images (the masks stay as given): f = the mean
        foreground probability over the explanation region; each pixel's channels form its
        unit; ``baseline`` (a number, default 0, or an array like the support images) is the
        reference of path methods."""
        k, c, h, w = self.support.shape
        base = np.broadcast_to(
            np.asarray(params.pop("baseline", 0.0), dtype=np.float32), self.support.shape
        )
        index = torch.arange(k * h * w).reshape(k, 1, h, w).expand(k, c, h, w)
        mask = torch.from_numpy(self.support_mask)
        region = torch.from_numpy(self.region)

        def forward(xb: torch.Tensor) -> torch.Tensor:
            q, _, _ = self._tensors(len(xb))
            res = self.model.match(q, xb, mask[None].expand(len(xb), *mask.shape))
            return torch.sigmoid(res.logits)[:, region].mean(dim=1)

        return GradientScorer(
            forward,
            torch.from_numpy(self.support),
            baseline=torch.from_numpy(base.copy()),
            unit_index=index,
            units=self.units,
            target=self.target_info,
            batch_size=params.pop("batch_size", self.batch_size),
        )

    def unit_result(self, attribution: Attribution, scorer: Any) -> Attribution:
        """A perturbation or gradient method's result with this task's kind, input and maps."""
        return self.result(
            attribution.vector, attribution.method, attribution.params, attribution.cost,
            **attribution.extras,
        )  # fmt: skip


def _check_result(result: Any, task: SupportTask) -> None:
    if not isinstance(result, MatchResult):
        raise ScorerError(f"match() must return a MatchResult, got {type(result).__name__}")
    hq, wq = task.query.shape[1:]
    if tuple(result.logits.shape) != (1, hq, wq):
        raise ScorerError(
            f"match() returned logits of shape {tuple(result.logits.shape)}; expected (1, {hq}, {wq})"
        )
    if not torch.isfinite(result.logits).all():
        raise ScorerError("the model returned NaN or infinite logits")
    k = task.n_shots
    n = len(result.affinities)
    if n == 0 or len(result.query_shapes) != n or len(result.support_shapes) != n:
        raise ScorerError(
            "match() must return one affinity, query shape and support shape per level"
        )
    for a, (hq_, wq_), (hs, ws) in zip(
        result.affinities, result.query_shapes, result.support_shapes, strict=True
    ):
        if tuple(a.shape) != (1, hq_ * wq_, k * hs * ws):
            raise ScorerError(
                f"an affinity of shape {tuple(a.shape)} does not fit query {hq_}×{wq_} and "
                f"{k} shot(s) of {hs}×{ws}: expected (1, {hq_ * wq_}, {k * hs * ws})"
            )
        if not torch.isfinite(a).all():
            raise ScorerError("an affinity has NaN or infinite values")


# --- the Affinity Explainer -----------------------------------------------------------------------


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, h, w) maps (align_corners False, no antialiasing)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def level_maps(
    result: MatchResult,
    region: np.ndarray,
    support_size: tuple[int, int],
    *,
    use_softmax: bool = True,
) -> torch.Tensor:
    """(L, K, Hs, Ws) per-level support maps of AffEx steps 1–4 (float64, each summing to 1):
    per level, the softmax over support positions of the affinity; each support position's
    column as an hq×wq map resized to the query size and normalised to sum 1; its mean over
    the query pixels of ``region``; reshaped per shot, resized to ``support_size``, normalised
    to sum 1 over all shots. No model call."""
    region_t = torch.from_numpy(np.asarray(region, dtype=bool))
    qsize = tuple(region_t.shape)
    k = result.n_shots
    out = []
    for a, (hq, wq), (hs, ws) in zip(
        result.affinities, result.query_shapes, result.support_shapes, strict=True
    ):
        a = a[0].detach().double()
        if use_softmax:
            a = a.softmax(dim=-1)
        cols = _resize(a.T.reshape(k * hs * ws, hq, wq), qsize)  # (K·Ns, Hq, Wq)
        cols = cols / (cols.sum(dim=(-2, -1), keepdim=True) + _EPS)
        contrib = cols[:, region_t].mean(dim=1).reshape(k, hs, ws)
        contrib = _resize(contrib, support_size)
        out.append(contrib / (contrib.sum() + _EPS))
    return torch.stack(out)


def _gaussian_blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, H, W) maps (as torchvision's GaussianBlur: separable kernel of size
    ``kernel``, reflect padding)."""
    if kernel <= 1:
        return x
    half = (kernel - 1) / 2
    t = torch.linspace(-half, half, kernel, dtype=x.dtype)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    pad = kernel // 2
    y = x[:, None]
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect" if min(x.shape[-2:]) > pad else "replicate")
    y = F.conv2d(y, g.reshape(1, 1, 1, -1))
    y = F.conv2d(y, g.reshape(1, 1, -1, 1))
    return y[:, 0]


def _dilate(mask: torch.Tensor, radius: int, kernel: int = 3) -> torch.Tensor:
    y = mask[:, None]
    for _ in range(radius):
        y = (F.max_pool2d(y, kernel, stride=1, padding=kernel // 2) > 0).to(mask.dtype)
    return y[:, 0]


def _min_max(x: torch.Tensor) -> torch.Tensor:
    """(x − min) / (max − min); zeros for a flat map (a spread below 1e-9 of its scale is
    rounding noise, not signal)."""
    lo, hi = x.min(), x.max()
    if hi - lo <= 1e-9 * max(float(hi.abs()), float(lo.abs()), 1e-300):
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def support_weight(
    mask: np.ndarray, variant: Variant, *, blur_kernel: int = 5, blur_sigma: float = 2.0,
    dilation: int = 0,
) -> np.ndarray | None:  # fmt: skip
    """The factor a variant multiplies the map by: None (plain), blur(dilate(mask)) (masked) or
    2·blur(dilate(mask)) − 1 (signed); (K, H, W). No model call."""
    if variant == "plain":
        return None
    mask = np.asarray(mask, dtype=np.float64)
    if mask.ndim != 3:
        raise InputError(f"give the support masks as (K, H, W), got shape {mask.shape}")
    m = _gaussian_blur(_dilate(torch.from_numpy(mask).double(), dilation), blur_kernel, blur_sigma)
    return (m if variant == "masked" else 2 * m - 1).numpy()


def affinity_explainer(
    task: SupportTask,
    *,
    variant: Variant = "plain",
    aggregation: Aggregation = "feature_ablation",
    use_softmax: bool = True,
    blur_kernel: int = 5,
    blur_sigma: float = 2.0,
    dilation: int = 0,
) -> Attribution:
    """Affinity Explainer (De Marinis et al., 'Matching-Based Few-Shot Semantic Segmentation
    Models Are Interpretable by Design', 2025): per level, the model's query→support affinity
    (softmax over support positions), each support position's query map normalised to sum 1 and
    averaged over the explanation region, resized per shot and normalised over the shots; the
    levels weighted by ``aggregation="feature_ablation"`` (|mean change of the foreground logit
    over the region| when the level's coarse mask is zeroed, normalised to sum 1) or ``"mean"``;
    min–max scaled. ``variant="masked"`` multiplies by blur(dilate(support mask)) and
    ``"signed"`` by 2·blur(dilate(mask)) − 1 (background support pixels turn negative), then
    min–max again. ``blur_kernel`` / ``blur_sigma`` (pixels) are the authors' 31 / 50 at ~400
    px scaled to 16-px canvases: scale them with the image size.

    Returns an Attribution over the K·H·W support pixels (``extras``: ``shot_maps`` (K, H, W),
    ``level_maps`` (L, K, H, W), ``level_weights``, ``region_pixels``). Cost: 1 forward pass +
    L decoder passes with ``feature_ablation`` (counted as forward passes), 1 with ``"mean"``;
    no backward pass.
    """
    check_units(task)
    if variant not in ("plain", "masked", "signed"):
        raise InputError(f"variant must be 'plain', 'masked' or 'signed', got {variant!r}")
    if aggregation not in ("feature_ablation", "mean"):
        raise InputError(f"aggregation must be 'feature_ablation' or 'mean', got {aggregation!r}")
    if int(blur_kernel) != blur_kernel or blur_kernel < 1 or blur_kernel % 2 == 0:
        raise InputError(f"blur_kernel must be an odd integer >= 1, got {blur_kernel}")
    if not blur_sigma > 0 or dilation < 0:
        raise InputError("blur_sigma must be > 0 and dilation >= 0")
    params = {
        "variant": variant, "aggregation": aggregation, "use_softmax": use_softmax,
        "blur_kernel": blur_kernel, "blur_sigma": blur_sigma, "dilation": dilation,
    }  # fmt: skip
    size = task.support.shape[-2:]
    with measure(task.meter) as cost:
        result = task.match()
        maps = level_maps(result, task.region, size, use_softmax=use_softmax)
        n_levels = maps.shape[0]
        if aggregation == "feature_ablation":
            region = torch.from_numpy(task.region)
            base = result.logits[0][region].double().mean()
            diffs = torch.stack(
                [
                    (base - task.decode(result, (level,))[0][region].double().mean()).abs()
                    for level in range(n_levels)
                ]
            )
            total = diffs.sum()
            weights = diffs / total if total > 0 else torch.full_like(diffs, 1 / n_levels)
        else:
            weights = torch.full((n_levels,), 1.0 / n_levels, dtype=torch.float64)
        combined = _min_max((maps * weights[:, None, None, None]).sum(0))
        factor = support_weight(
            task.support_mask, variant, blur_kernel=blur_kernel, blur_sigma=blur_sigma,
            dilation=dilation,
        )  # fmt: skip
        if factor is not None:
            combined = _min_max(combined * torch.from_numpy(factor))
    scores = combined.numpy().reshape(-1)
    return task.result(
        scores,
        "affinity_explainer",
        params,
        cost,
        level_maps=maps.numpy(),
        level_weights=weights.numpy(),
        region_pixels=int(task.region.sum()),
    )


def attribute_support(
    model: MatchingSegmenter,
    support: Any,
    support_mask: Any,
    query: Any,
    variant: Variant = "plain",
    *,
    query_mask: Any = None,
    explanation_mask: Region | np.ndarray = "logits",
    **params: Any,
) -> Attribution:
    """AffEx on one episode: which support pixels (per shot) the model's foreground on the query
    drew on. ``support`` is (H, W[, C]) for one shot or (K, H, W[, C]); ``support_mask`` (H, W)
    or (K, H, W); ``query`` (H, W[, C]). ``params`` go to :func:`affinity_explainer`.
    Returns an Attribution over the K·H·W support pixels (heatmap: the shots side by side).
    Cost: 1 forward pass to fix the explanation region (``explanation_mask="logits"``) + AffEx's
    1 forward pass + L decoder passes (``result.cost`` counts AffEx's part)."""
    task = SupportTask(
        model, support, support_mask, query, query_mask=query_mask,
        explanation_mask=explanation_mask,
    )  # fmt: skip
    return affinity_explainer(task, variant=variant, **params)


# --- evaluation over support pixels ---------------------------------------------------------------


@dataclass
class CutCurve:
    """The "cut" protocol: keep only the top ``counts`` support pixels (image and mask), zero the
    rest, and compare the query's foreground IoU with the full support's.

    ``loss = full_iou − iou`` per fraction (lower is better; the authors' mIoU loss)."""

    fractions: np.ndarray
    counts: np.ndarray
    iou: np.ndarray
    full_iou: float
    loss: np.ndarray
    cost: Cost = field(default_factory=Cost)

    def to_dict(self) -> dict[str, Any]:
        from attribkit.core.jsonio import to_json

        return to_json(
            {
                "fractions": self.fractions, "counts": self.counts, "iou": self.iou,
                "full_iou": self.full_iou, "loss": self.loss, "cost": self.cost.to_dict(),
            }
        )  # fmt: skip


def _as_attribution(task: SupportTask, attribution: Any) -> Attribution:
    if isinstance(attribution, Attribution):
        if len(attribution) != task.n_units:
            raise InputError(
                f"the attribution has {len(attribution)} units, the episode {task.n_units} support "
                "pixels; evaluate it on the episode it explains"
            )
        return attribution
    a = np.asarray(attribution, dtype=float)
    if a.size != task.n_units:
        raise InputError(
            f"a support map must have one value per support pixel {task.units.shape}, got {a.shape}"
        )
    if not np.isfinite(a).all():
        raise InputError("the support map has NaN or infinite values")
    return task.result(a.reshape(-1), "given", {}, Cost())


def support_cut_curve(
    model: MatchingSegmenter,
    support: Any,
    support_mask: Any,
    query: Any,
    query_mask: Any,
    attribution: Any,
    fractions: Sequence[float] = (0.01, 0.05, 0.15),
    *,
    of: Literal["pixels", "mask"] = "pixels",
) -> CutCurve:
    """The authors' cut protocol on one episode: for each p in ``fractions``, keep the top
    ⌈p·n⌉ support pixels by ``attribution`` (an Attribution of the episode or a (K, H, W)
    map; ties keep pixel order) in image **and** mask, zero the rest, and measure the query's
    foreground IoU against ``query_mask``. ``of="mask"`` takes p of the support-mask area instead
    of all K·H·W pixels (at small resolutions p·n can fall below one object). Cost: one forward
    pass per fraction + one for the full support (distinct masks only)."""
    task = SupportTask(
        model, support, support_mask, query, query_mask=query_mask, explanation_mask="all"
    )
    if task.query_mask is None:
        raise InputError("the cut curve needs the query_mask")
    att = _as_attribution(task, attribution)
    fr = np.asarray(fractions, dtype=float).reshape(-1)
    if fr.size == 0 or (fr <= 0).any() or (fr > 1).any():
        raise InputError(f"fractions must lie in (0, 1], got {list(fr)}")
    if of not in ("pixels", "mask"):
        raise InputError(f"of must be 'pixels' or 'mask', got {of!r}")
    n = task.n_units
    base = n if of == "pixels" else int((task.support_mask > 0.5).sum())
    counts = np.minimum(n, np.maximum(1, np.ceil(fr * base - 1e-9).astype(int)))
    ranked = rank_units(att, "most")
    position = np.empty(n, dtype=int)
    position[ranked] = np.arange(n)
    keep = position[None, :] < counts[:, None]
    scorer = task.unit_scorer({"measure": "iou"})
    with measure(scorer) as cost:
        values = scorer(np.vstack([np.ones((1, n), bool), keep]))
    full, ious = float(values[0]), values[1:]
    return CutCurve(fr, counts, ious, full, full - ious, cost)


def support_curves(
    model: MatchingSegmenter,
    support: Any,
    support_mask: Any,
    query: Any,
    attribution: Any,
    *,
    query_mask: Any = None,
    measure: Literal["prob", "iou"] = "prob",
    explanation_mask: Region | np.ndarray = "logits",
    steps: int = 75,
) -> DeletionInsertion:
    """Deletion and insertion (most relevant first) over the support pixels, image and mask
    together: the mean foreground probability over the explanation region (``"prob"``) or the
    foreground IoU against ``query_mask`` (``"iou"``) after removing / keeping the top pixels,
    on ``steps`` points. Cost: 2·steps forward passes less cached masks (+1 to fix the region
    with ``explanation_mask="logits"``)."""
    task = SupportTask(
        model, support, support_mask, query, query_mask=query_mask,
        explanation_mask=explanation_mask,
    )  # fmt: skip
    att = _as_attribution(task, attribution)
    return deletion_insertion(att, task.unit_scorer({"measure": measure}), steps=steps)
