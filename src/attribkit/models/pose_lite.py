"""POSE-lite: open-set model attribution with progressive open space expansion, small and on CPU.

After Yang, Wang, Tang, Zhao, Cao and Tang, "Progressive Open Space Expansion for Open-Set Model
Attribution" (CVPR 2023). POSE trains a classifier of known generators while a growing bank of
lightweight *augmentation networks* turns known-source images into simulated "unknown-source"
images: same content, different imperceptible traces. The classifier is trained to keep them
apart from the known sources, which expands the region of feature space it treats as unknown.

What this module implements (written from the paper's description; sizes are toy sizes):

* **Classifier** (:class:`PoseLite`). A fixed front end takes the noise residual
  ``r = x - box3x3(x)`` (a differentiable high-pass), then, with ``input="spectrum"`` (default),
  its centred log-magnitude 2-D FFT per channel standardised per frequency on the training
  images; a small CNN on that map (two 3x3 convolutions of ``width`` channels with LeakyReLU and
  2x2 average pooling, pooled to an 8x8 grid and flattened, so frequency position is kept; a
  linear embedding of ``embed_dim``; a linear head over the known sources). ``input="residual"``
  (or ``"image"``) runs a spatial CNN on the scaled residual (or the image) instead: four 3x3
  convolutions (stride 1, 2, 2, 2) summarised by each map's log standard deviation, trained on
  random ``crop`` x ``crop`` crops at even offsets. Measured on the toy generators (240 training
  images at 64 px) the spatial CNN stays near chance on held-out images (0.33-0.44 closed-set
  accuracy for 6 sources) while the spectrum CNN reaches about 0.95, hence the default.
* **Losses.** Cross-entropy on the known images, plus a **batch-hard triplet loss** (Hermans et
  al. 2017; margin ``margin`` on L2-normalised embeddings, each anchor with its hardest positive
  and hardest negative in the batch) over the known images and their augmented copies. An
  augmented copy of class ``c`` carries the label ``K + c`` (``aug_labels="per_class"``: pushed
  away from class ``c`` and from every known class, and kept apart from the other augmented
  classes) or ``K`` (``"shared"``: one unknown class). Before any augmentation network exists
  the triplet loss runs on the known images alone.
* **Open space expansion.** From epoch ``warmup`` on, one new augmentation network per epoch (at
  most ``max_augnets``): a random tiny residual conv net ``A(x) = x + hp(conv2(lrelu(conv1
  (x))))``, kernel sizes drawn from {1, 3, 5}, ``aug_hidden`` hidden channels, weights at 0.3 x
  the Kaiming scale, ``hp`` the same high-pass (``aug_highpass=False`` drops it, allowing colour
  shifts). During its epoch it is trained in alternation with the classifier (Adam,
  ``aug_lr``; classifier frozen for this step) on (i) ``max(MSE(A(x), x), mse_floor)``: stay an
  imperceptible change of the input, the floor keeping the trace from vanishing; (ii)
  ``w_known * max(1 - cos(e(A(x)), e(x)), 1 - known_sim)``: stay near the known image in the
  classifier's embedding ``e`` (the hard, near part of open space); (iii) ``w_diverse *
  cos(e(A(x)), e(A_prev(x)))`` for a random earlier network of the bank: the diversity
  constraint. Then it is frozen and joins the bank, and every classifier step also sees a random
  frozen network's images (second triplet term), so the simulated open space grows progressively.

Where it differs from the paper: the toy sizes (a two-layer spectrum CNN rather than a ResNet,
tens of images per source, one epoch per augmentation network); the spectrum front end; the
augmentation networks are two convolutions without the paper's up-sampling variants; and an
optional term that the paper does not have, ``w_uniform`` (default 0): cross-entropy of the
augmented images' softmax against the uniform distribution, training them directly to low
confidence. Open-set scores are the maximum softmax of :meth:`PoseLite.predict_proba`, or with
``decision_function(..., score="proto")`` the cosine similarity to each known source's mean
training embedding (prototype). On the toy task the expansion did not change AUROC beyond the
run-to-run spread (see ``image_provenance_study``, which reports it beside the same CNN trained
without expansion).

All randomness is seeded (``torch.Generator`` for initialisation and batch order,
``numpy.random.default_rng`` for crops, kernel sizes and bank draws); ``torch.set_num_threads``
is left to the caller. Training costs about 1.5 s per epoch at 64 px and 240 images on one core.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attribkit.core.errors import InputError
from attribkit.models.generators import check_images

__all__ = ["PoseLite", "batch_hard_triplet_loss"]


def _highpass(x: torch.Tensor) -> torch.Tensor:
    """x minus its 3x3 box mean per channel (reflect padding): a cheap, differentiable residual."""
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def batch_hard_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for
    Person Re-Identification", 2017): the mean over anchors that have a positive and a negative
    in the batch of ``max(0, margin + max_pos d - min_neg d)``, with Euclidean ``d`` between
    L2-normalised embeddings. Returns a scalar tensor (0 when no anchor qualifies). No model
    calls."""
    z = F.normalize(embeddings, dim=1)
    d = torch.cdist(z, z).clamp(min=0)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    neg = ~same
    ok = pos.any(1) & neg.any(1)
    if not ok.any():
        return embeddings.sum() * 0.0
    hardest_pos = torch.where(pos, d, torch.zeros_like(d)).max(1).values
    hardest_neg = torch.where(neg, d, torch.full_like(d, 1e9)).min(1).values
    return F.relu(margin + hardest_pos - hardest_neg)[ok].mean()


class _Net(nn.Module):
    """Four 3x3 convolutions; each layer's maps are summarised by their log standard deviation
    (log energy, a learned filter-bank spectrum) and the last one also by its mean."""

    def __init__(self, n_classes: int, width: int, embed_dim: int) -> None:
        super().__init__()
        w = width
        chans = [(3, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2), (4 * w, 4 * w, 2)]
        self.convs = nn.ModuleList([nn.Conv2d(i, o, 3, stride=s, padding=1) for i, o, s in chans])
        n_stats = sum(o for _, o, _ in chans) + 4 * w
        self.stat_norm = nn.LayerNorm(n_stats)
        self.embed = nn.Linear(n_stats, embed_dim)
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            stats.append(torch.log(x.flatten(2).std(dim=2) + 1e-3))
            if i < len(self.convs) - 1:
                x = F.leaky_relu(x, 0.1)
        stats.append(x.mean(dim=(2, 3)))
        e = self.embed(self.stat_norm(torch.cat(stats, dim=1)))
        return self.head(F.leaky_relu(e, 0.1)), e


class _SpecNet(nn.Module):
    """A small CNN on the centred log spectrum (3, H, W): two 3x3 convolutions with 2x2 average
    pooling, pooled to ``grid`` x ``grid`` cells and flattened (frequency position matters)."""

    def __init__(self, n_classes: int, width: int, embed_dim: int, grid: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.grid = grid
        self.embed = nn.Linear(width * grid * grid, embed_dim)
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.avg_pool2d(F.leaky_relu(self.conv1(x), 0.1), 2)
        x = F.adaptive_avg_pool2d(F.leaky_relu(self.conv2(x), 0.1), self.grid)
        e = self.embed(x.flatten(1))
        return self.head(F.leaky_relu(e, 0.1)), e


class _AugNet(nn.Module):
    """A(x) = x + conv2(lrelu(conv1(x))), random kernel sizes, on images in [0, 1]; with
    ``highpass`` the added term is high-passed (x minus its 3x3 box mean): a trace, no colour
    shift."""

    def __init__(self, k1: int, k2: int, hidden: int, highpass: bool = True) -> None:
        super().__init__()
        self.highpass = highpass
        self.conv1 = nn.Conv2d(3, hidden, k1, padding=k1 // 2, padding_mode="reflect")
        self.conv2 = nn.Conv2d(hidden, 3, k2, padding=k2 // 2, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        return x + (_highpass(delta) if self.highpass else delta)


def _init(module: nn.Module, gen: torch.Generator, gain: float = 1.0) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=0.1, generator=gen)
            if gain != 1.0:
                with torch.no_grad():
                    m.weight.mul_(gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PoseLite:
    """POSE-lite open-set source classifier (see the module docstring for the exact algorithm).

    ``PoseLite(n_classes)`` then ``fit(images, labels)`` with images float (N, H, W, 3) in
    [0, 1] and labels in ``0 .. n_classes - 1``; ``predict_proba``, ``predict``, ``embed`` and
    ``decision_function`` score new images. Model calls are the classifier's own forward passes
    only: ``fit`` runs up to about ``6 * epochs * N`` image passes through the small CNN (known,
    current and earlier augmented copies, for the classifier and the augmentation step; counted
    in ``forward_passes_``); scoring runs one forward pass per image.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        width: int = 8,
        embed_dim: int = 32,
        input: str = "spectrum",
        crop: int | None = 32,
        lr: float = 2e-3,
        batch_size: int = 16,
        margin: float = 0.3,
        w_triplet: float = 1.0,
        warmup: int = 5,
        max_augnets: int = 20,
        aug_hidden: int = 8,
        aug_highpass: bool = True,
        aug_labels: str = "per_class",
        aug_lr: float = 1e-3,
        mse_floor: float = 1e-4,
        known_sim: float = 0.9,
        w_known: float = 1.0,
        w_diverse: float = 1.0,
        w_uniform: float = 0.0,
    ) -> None:
        if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise InputError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if input not in ("residual", "image", "spectrum"):
            raise InputError(f"input must be 'residual', 'image' or 'spectrum', got {input!r}")
        for name, value in (("lr", lr), ("aug_lr", aug_lr), ("margin", margin)):
            if not value > 0:
                raise InputError(f"{name} must be > 0, got {value!r}")
        self.n_classes = int(n_classes)
        if crop is not None and (not isinstance(crop, (int, np.integer)) or crop < 8 or crop % 2):
            raise InputError(f"crop must be None or an even integer >= 8, got {crop!r}")
        self.width, self.embed_dim, self.input, self.crop = width, embed_dim, input, crop
        self.lr, self.batch_size, self.margin, self.w_triplet = lr, batch_size, margin, w_triplet
        self.warmup, self.max_augnets = warmup, max_augnets
        if aug_labels not in ("per_class", "shared"):
            raise InputError(f"aug_labels must be 'per_class' or 'shared', got {aug_labels!r}")
        self.aug_highpass, self.aug_labels = aug_highpass, aug_labels
        self.aug_hidden, self.aug_lr, self.mse_floor = aug_hidden, aug_lr, mse_floor
        self.known_sim, self.w_known, self.w_diverse = known_sim, w_known, w_diverse
        self.w_uniform = w_uniform
        self.net_: nn.Module | None = None
        self.image_shape_: tuple[int, int] | None = None
        self.augnets_: list[_AugNet] = []
        self.prototypes_: torch.Tensor | None = None
        self.history_: list[dict[str, float]] = []
        self.forward_passes_ = 0

    # -- front end --------------------------------------------------------------------------
    def _front(self, x: torch.Tensor) -> torch.Tensor:
        if self.input == "image":
            return (x - 0.5) / 0.25
        r = _highpass(x)
        if self.input == "residual":
            return r / self._scale
        spec = torch.fft.fftshift(torch.log(torch.fft.fft2(r).abs() + 1e-4), dim=(-2, -1))
        return (spec - self._spec_mean) / self._spec_std

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.net_ is not None
        self.forward_passes_ += len(x)
        return self.net_(self._front(x))

    def _tensor(self, images: Any) -> torch.Tensor:
        return torch.from_numpy(check_images(images)).permute(0, 3, 1, 2).contiguous()

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        *,
        epochs: int = 20,
        seed: int = 0,
        verbose: bool = False,
    ) -> PoseLite:
        """Train on known-source ``images`` (float (N, H, W, 3) in [0, 1]) and ``labels`` (ints in
        ``0 .. n_classes - 1``, at least two classes) for ``epochs`` epochs, adding one
        augmentation network per epoch after ``warmup``. Deterministic in ``seed`` for a fixed
        thread count. Returns ``self``; ``history_`` holds per-epoch mean losses and seconds.
        Costs up to about ``6 * epochs * N`` forward/backward passes of the small CNN."""
        x_all = self._tensor(images)
        y_all = np.asarray(labels)
        if y_all.ndim != 1 or len(y_all) != len(x_all):
            raise InputError(f"labels must be 1-D with one label per image ({len(x_all)})")
        if y_all.dtype.kind not in "iu" or y_all.min() < 0 or y_all.max() >= self.n_classes:
            raise InputError(f"labels must be integers in 0 .. {self.n_classes - 1}")
        if len(np.unique(y_all)) < 2:
            raise InputError("fit needs images of at least two sources (one class was given)")
        if not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise InputError(f"epochs must be a positive integer, got {epochs!r}")
        y_t = torch.from_numpy(y_all.astype(np.int64))
        self.image_shape_ = (int(x_all.shape[2]), int(x_all.shape[3]))
        gen = torch.Generator().manual_seed(int(seed))
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            res = _highpass(x_all)
            self._scale = float(res.std().clamp(min=1e-6))
            self._spec_mean, self._spec_std = 0.0, 1.0
            if self.input == "spectrum":
                spec = self._front(x_all)
                self._spec_mean = spec.mean(0, keepdim=True)
                self._spec_std = spec.std(0, keepdim=True).clamp(min=1e-3)
        net_cls = _SpecNet if self.input == "spectrum" else _Net
        self.net_ = net_cls(self.n_classes, self.width, self.embed_dim)
        _init(self.net_, gen)
        self.augnets_ = []
        self.history_ = []
        self.forward_passes_ = 0
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        k = self.n_classes
        bs = min(self.batch_size, len(x_all))
        for epoch in range(epochs):
            t0 = time.perf_counter()
            aug = None
            if epoch >= self.warmup and len(self.augnets_) < self.max_augnets:
                k1, k2 = (int(v) for v in rng.choice([1, 3, 5], size=2))
                aug = _AugNet(k1, k2, self.aug_hidden, self.aug_highpass)
                _init(aug, gen, gain=0.3)
                opt_a = torch.optim.Adam(aug.parameters(), lr=self.aug_lr)
            sums: dict[str, float] = {}
            order = torch.randperm(len(x_all), generator=gen)
            n_batches = 0
            self.net_.train()
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                if len(idx) < 2:
                    continue
                x, y = self._crop(x_all[idx], rng), y_t[idx]
                prev = None
                if self.augnets_:
                    prev = self.augnets_[int(rng.integers(len(self.augnets_)))]
                logs: dict[str, float] = {}
                if aug is not None:  # step 1: the new augmentation network
                    x_aug = aug(x)
                    loss_a = F.mse_loss(x_aug, x).clamp(min=self.mse_floor)
                    logs["aug_mse"] = float(F.mse_loss(x_aug, x).detach())
                    _, e_aug = self._forward(x_aug)
                    with torch.no_grad():
                        _, e_x = self._forward(x)
                    cos_known = F.cosine_similarity(e_aug, e_x, dim=1).mean()
                    loss_a = loss_a + self.w_known * (1 - cos_known).clamp(min=1 - self.known_sim)
                    if prev is not None:
                        with torch.no_grad():
                            _, e_prev = self._forward(prev(x))
                        cos_prev = F.cosine_similarity(e_aug, e_prev, dim=1).mean()
                        loss_a = loss_a + self.w_diverse * cos_prev
                        logs["aug_cos_prev"] = float(cos_prev.detach())
                    opt_a.zero_grad()
                    loss_a.backward(inputs=list(aug.parameters()))
                    opt_a.step()
                    logs["aug_cos_known"] = float(cos_known.detach())
                # step 2: the classifier
                logits, emb = self._forward(x)
                loss = F.cross_entropy(logits, y)
                logs["ce"] = float(loss.detach())
                for net in (aug, prev):
                    if net is None:
                        continue
                    with torch.no_grad():
                        x_fake = net(x).clamp(0, 1)
                    logits_f, emb_f = self._forward(x_fake)
                    fake_y = y + k if self.aug_labels == "per_class" else torch.full_like(y, k)
                    trip = batch_hard_triplet_loss(
                        torch.cat([emb, emb_f]), torch.cat([y, fake_y]), self.margin
                    )
                    loss = loss + self.w_triplet * trip
                    logs["triplet"] = logs.get("triplet", 0.0) + float(trip.detach())
                    if self.w_uniform > 0:
                        uni = -F.log_softmax(logits_f, dim=1).mean()
                        loss = loss + self.w_uniform * uni
                if self.w_triplet > 0 and aug is None and prev is None:
                    trip = batch_hard_triplet_loss(emb, y, self.margin)
                    loss = loss + self.w_triplet * trip
                    logs["triplet"] = float(trip.detach())
                opt.zero_grad()
                loss.backward()
                opt.step()
                n_batches += 1
                for key, v in logs.items():
                    sums[key] = sums.get(key, 0.0) + v
            if aug is not None:
                aug.eval()
                for p in aug.parameters():
                    p.requires_grad_(False)
                self.augnets_.append(aug)
            row = {key: v / max(n_batches, 1) for key, v in sums.items()}
            row.update(epoch=float(epoch), seconds=time.perf_counter() - t0)
            row["augnets"] = float(len(self.augnets_))
            self.history_.append(row)
            if verbose:
                print({key: round(v, 4) for key, v in row.items()})
        self.net_.eval()
        with torch.no_grad():
            _, emb = self._batched(x_all)
            z = F.normalize(emb, dim=1)
            self.prototypes_ = F.normalize(
                torch.stack([z[y_t == c].mean(0) for c in range(k)]), dim=1
            )
        return self

    def _crop(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A random crop of side ``crop`` at an even offset (keeps the 2x sampling grid)."""
        h, w = x.shape[2:]
        if self.crop is None or self.crop >= min(h, w) or self.input == "spectrum":
            return x
        oy = 2 * int(rng.integers((h - self.crop) // 2 + 1))
        ox = 2 * int(rng.integers((w - self.crop) // 2 + 1))
        return x[:, :, oy : oy + self.crop, ox : ox + self.crop]

    # -- scoring ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.net_ is None:
            raise InputError("this PoseLite is not fitted yet; call fit(images, labels) first")

    def _batched(self, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [self._forward(x[i : i + batch]) for i in range(0, len(x), batch)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _scores(self, images: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_fitted()
        assert self.net_ is not None
        self.net_.eval()
        x = self._tensor(images)
        if self.input == "spectrum" and tuple(x.shape[2:]) != self.image_shape_:
            raise InputError(
                f"this PoseLite was fitted on {self.image_shape_} images (its spectrum front end "
                f"needs that size); got {tuple(x.shape[2:])}"
            )
        with torch.no_grad():
            return self._batched(x)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Softmax over the known sources: float64 (N, n_classes), rows sum to 1; its row maximum
        is the max-softmax "known" score. One forward pass per image."""
        logits, _ = self._scores(images)
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The most probable known source per image: int64 (N,). One forward pass per image."""
        return self.predict_proba(images).argmax(1)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings: float64 (N, embed_dim), for prototypes, few-shot episodes and
        clustering. One forward pass per image."""
        _, emb = self._scores(images)
        return F.normalize(emb, dim=1).double().numpy()

    def decision_function(self, images: np.ndarray, score: str = "logit") -> np.ndarray:
        """Per-source scores, float64 (N, n_classes), higher = more likely that source:
        ``"logit"`` the classifier's logits, ``"proto"`` the cosine similarity of the embedding to
        each known source's training prototype (mean normalised embedding). Their row maximum is
        the open-set "known" score. One forward pass per image."""
        if score not in ("logit", "proto"):
            raise InputError(f"score must be 'logit' or 'proto', got {score!r}")
        logits, emb = self._scores(images)
        if score == "logit":
            return logits.double().numpy()
        assert self.prototypes_ is not None
        return (F.normalize(emb, dim=1) @ self.prototypes_.T).double().numpy()

    def __repr__(self) -> str:
        state = f"fitted, {len(self.augnets_)} augnets" if self.net_ is not None else "unfitted"
        return f"PoseLite(n_classes={self.n_classes}, input={self.input!r}, {state})"
