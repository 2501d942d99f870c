"""TimeX: an explainer trained to mimic a time-series model through model behaviour consistency
(Queen, Hartvigsen, Koker, He, Tsiligkaridis & Zitnik, 'Encoding Time-Series Explanations through
Self-Supervised Model Behavior Consistency', NeurIPS 2023).

TimeX trains, once per model and data set, a *mask generator* that emits a relaxed-discrete mask
over the series' (step, channel) cells, and a *surrogate* G^E — a copy of the pretrained model —
that reads the masked series. The losses (the authors' ``bc_model.py`` and
``train_mv6_consistency.py``, weights as in their FreqShape script):

- **model behaviour consistency** (MBC): the cosine-similarity matrix of a batch's embeddings
  under the pretrained model (full series) must match that of the surrogate's embeddings of the
  masked series: mean squared difference;
- **label consistency** (LC): for every pair in the batch, the Jensen–Shannon divergence between
  the surrogate's predictions on the masked series must match that between the pretrained model's
  predictions: mean squared difference;
- **landmarks**: learnable points of the explanation-embedding space, initialised with the
  embeddings of training series (one class after another); each masked embedding is matched to
  one landmark by a hard Gumbel-softmax (temperature 0.1) on cosine similarities, and the matched
  landmarks must be consistent with the pretrained embeddings (an MBC term, the authors'
  "side assimilation");
- **mask regularisers**: the GSAT information loss pulling each mask probability towards a
  Bernoulli(r) prior (r = 0.5), and a connectedness loss (the L2 norm of the mask's step-to-step
  differences), weighted 2 · (GSAT + 2 · connect).

The mask is sampled as a Gumbel-sigmoid (a binary concrete) with temperature ``tau`` and a
straight-through hard threshold; masked cells take a draw of N(mean, std) of the training series
at that cell (the authors' mask-token statistics). The explanation of a series is the mask
probability of each cell.

Simplifications (documented, for CPU training in seconds and any torch classifier): the mask
generator is a small dilated 1-D CNN reading the series itself, not a transformer decoder over the
pretrained encoder's per-step embeddings (a generic classifier has none); the embedding of a model
is the input of its last ``nn.Linear`` (the logits when there is none); the surrogate's own head
gives its predictions (the authors' variant adds an MLP on the masked embedding); the black box
and the surrogate run in eval mode (no dropout); no validation-based model selection or
learning-rate schedule; a few epochs.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attribkit.core.attribution import Attribution
from attribkit.core.cost import CostMeter, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.units import Units
from attribkit.tasks.timeseries import TimeSeriesTask

__all__ = ["TimeX", "timex"]


class _MaskNet(nn.Module):
    """Mask logits (B, T, C) of series (B, T, C): dilated 1-D convolutions."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, hidden, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, 5, padding=4, dilation=2),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, 5, padding=8, dilation=4),
            nn.ReLU(),
            nn.Conv1d(hidden, channels, 1),
        )
        last = self.net[-1]
        assert isinstance(last, nn.Conv1d) and last.bias is not None
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)  # type: ignore[no-any-return]


def _embedding_layer(model: nn.Module) -> str | None:
    """The name of the model's last ``nn.Linear`` (whose input is its embedding), or None."""
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return name


def _embed_consistency(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two batches' cosine-similarity matrices (TimeX's MBC)."""
    a, b = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    return (a @ a.T - b @ b.T).pow(2).mean()


def _js_pairs(logp: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence of the predictions of each pair (log-probabilities in)."""
    p, q = logp[pairs[:, 0]], logp[pairs[:, 1]]
    m = 0.5 * (p.exp() + q.exp())
    kl_p = (m * (torch.log(m + 1e-12) - p)).sum(-1)
    kl_q = (m * (torch.log(m + 1e-12) - q)).sum(-1)
    return 0.5 * (kl_p + kl_q)


def _label_consistency(masked: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """TimeX's LC: squared difference of pairwise JS divergences, masked vs full predictions."""
    n = masked.shape[0]
    if n < 2:
        return masked.sum() * 0.0
    pairs = torch.combinations(torch.arange(n), r=2)
    js_m = _js_pairs(masked.log_softmax(-1), pairs)
    js_f = _js_pairs(full.log_softmax(-1), pairs)
    return (js_m - js_f).pow(2).mean()


def _gsat(p: torch.Tensor, r: float) -> torch.Tensor:
    """GSAT information loss: KL of Bernoulli(p) to the Bernoulli(r) prior, averaged."""
    return (
        p * torch.log(p / r + 1e-6) + (1 - p) * torch.log((1 - p) / (1 - r + 1e-6) + 1e-6)
    ).mean()


def _connect(p: torch.Tensor) -> torch.Tensor:
    """TimeX's connectedness loss: ||p[:, 1:] − p[:, :-1]||₂ / number of differences."""
    d = p[:, 1:] - p[:, :-1]
    return d.norm(p=2) / max(d.numel(), 1)


class TimeX:
    """A TimeX explainer of one torch classifier, trained on a set of series (:meth:`fit`),
    then explaining any series of that shape without calling the model (:meth:`masks`).

    Args:
        model: a torch module, (B, T, C) → (B, K) logits (``channels_first``: (B, C, T)).
        r: the GSAT prior probability of keeping a cell (TimeX: 0.5).
        tau: temperature of the Gumbel-sigmoid mask.
        hidden: channels of the mask generator's convolutions.
        n_landmarks: landmarks (TimeX: 50), at most the number of training series.
        epochs, batch_size, lr, weight_decay: AdamW training (TimeX: lr 1e-3, weight decay 1e-3).
        beta_exp, connect_weight, lam_label: loss weights (TimeX: 2, 2, 1).
        seed: every random draw (initialisation, batches, Gumbel noise, mask tokens).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        channels_first: bool = False,
        r: float = 0.5,
        tau: float = 1.0,
        hidden: int = 32,
        n_landmarks: int = 16,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        beta_exp: float = 2.0,
        connect_weight: float = 2.0,
        lam_label: float = 1.0,
        seed: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(
                f"TimeX trains a copy of the model, so it needs a torch module, not a "
                f"{type(model).__name__}; use occlusion or a perturbation method instead"
            )
        if not 0.0 < r < 1.0:
            raise InputError(f"r is a keep probability in (0, 1), got {r}")
        if tau <= 0:
            raise InputError(f"tau must be positive, got {tau}")
        for name, v in (("epochs", epochs), ("batch_size", batch_size), ("hidden", hidden)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if int(n_landmarks) < 1:
            raise InputError(f"n_landmarks must be >= 1, got {n_landmarks}")
        self.model, self.channels_first = model, bool(channels_first)
        self.r, self.tau, self.hidden = float(r), float(tau), int(hidden)
        self.n_landmarks, self.epochs, self.batch_size = (
            int(n_landmarks),
            int(epochs),
            int(batch_size),
        )
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.beta_exp, self.connect_weight = float(beta_exp), float(connect_weight)
        self.lam_label, self.seed = float(lam_label), int(seed)
        self.meter = CostMeter()
        self.mask_net: _MaskNet | None = None
        self.surrogate: nn.Module | None = None
        self.landmarks: torch.Tensor | None = None
        self.history: list[float] = []
        self._layer = _embedding_layer(model)

    # -- running the models ----------------------------------------------------------------------
    def _run(
        self, module: nn.Module, xb: torch.Tensor, meter: CostMeter, grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) of ``module`` on (B, T, C) ``xb``; counts B forward passes (and
        B backward passes when ``grad``) on ``meter``."""
        captured: list[torch.Tensor] = []
        handle = None
        if self._layer is not None:
            layer = dict(module.named_modules())[self._layer]
            handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            with meter.timed():
                out = module(xb.transpose(1, 2) if self.channels_first else xb)
        finally:
            if handle is not None:
                handle.remove()
        meter.cost.forward_passes += len(xb)
        meter.cost.batches += 1
        if grad:
            meter.cost.backward_passes += len(xb)
        if out.ndim != 2 or out.shape[0] != len(xb):
            raise ScorerError(f"the model returned shape {tuple(out.shape)}; expected (B, K)")
        if not torch.isfinite(out).all():
            raise ScorerError("the model returned NaN or infinite scores; check the model")
        z = captured[0].reshape(len(xb), -1) if captured else out
        return out, z

    def _dtype(self) -> torch.dtype:
        p = next(iter(self.model.parameters()), None)
        return p.dtype if p is not None else torch.float32

    def _device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def _tensor(self, X: Any) -> torch.Tensor:
        x = np.asarray(X, dtype=float)
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3 or len(x) == 0:
            raise InputError(f"series must be (N, T, C), got shape {np.shape(X)}")
        if not np.isfinite(x).all():
            raise InputError("the series have missing or infinite values")
        return torch.as_tensor(x, dtype=self._dtype(), device=self._device())

    # -- training --------------------------------------------------------------------------------
    def fit(self, X: Any, meter: CostMeter | None = None) -> TimeX:
        """Train the mask generator, the surrogate and the landmarks on series ``X`` (N, T, C).
        Costs N forward passes of the model plus epochs × N forward and backward passes of its
        surrogate copy, counted on ``meter`` (default this explainer's own)."""
        meter = self.meter if meter is None else meter
        x = self._tensor(X)
        n, t, c = x.shape
        self.shape = (t, c)
        gen = torch.Generator().manual_seed(self.seed)
        self.model.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mask_net = _MaskNet(c, self.hidden).to(device=x.device, dtype=x.dtype)
        surrogate = copy.deepcopy(self.model).eval()
        for p in surrogate.parameters():
            p.requires_grad_(True)
        with torch.no_grad():
            outs = [
                self._run(self.model, x[s : s + 256], meter, grad=False) for s in range(0, n, 256)
            ]
        logits_full = torch.cat([o[0] for o in outs]).detach()
        z_full = torch.cat([o[1] for o in outs]).detach()
        self.mu, self.std = x.mean(0), x.std(0, unbiased=False)
        landmarks = nn.Parameter(z_full[self._landmark_seeds(logits_full, gen)].clone())
        params = itertools.chain(mask_net.parameters(), surrogate.parameters(), [landmarks])
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        self.history = []
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen).to(x.device)
            total = 0.0
            for s in range(0, n, self.batch_size):
                idx = order[s : s + self.batch_size]
                loss = self._loss(
                    x[idx],
                    logits_full[idx],
                    z_full[idx],
                    mask_net,
                    surrogate,
                    landmarks,
                    gen,
                    meter,
                )
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(
                    list(mask_net.parameters()) + list(surrogate.parameters()) + [landmarks], 1.0
                )
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.history.append(total / n)
        self.mask_net, self.surrogate = mask_net.eval(), surrogate
        self.landmarks = landmarks.detach()
        for p in surrogate.parameters():
            p.requires_grad_(False)
        return self

    def _landmark_seeds(self, logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Training series whose embeddings start the landmarks: one predicted class after the
        other (stratified), random within a class."""
        pred = logits.argmax(1).cpu()
        pools = [
            c_idx[torch.randperm(len(c_idx), generator=gen)]
            for c_idx in (torch.nonzero(pred == k).flatten() for k in torch.unique(pred))
        ]
        picked: list[int] = []
        k = min(self.n_landmarks, len(pred))
        for i in itertools.count():
            for pool in pools:
                if i < len(pool) and len(picked) < k:
                    picked.append(int(pool[i]))
            if len(picked) >= k or i > len(pred):
                break
        return torch.tensor(picked, dtype=torch.long, device=logits.device)

    def _sample_mask(self, logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A hard 0/1 mask with straight-through gradients of a Gumbel-sigmoid draw."""
        u = torch.rand(logits.shape, generator=gen, dtype=logits.dtype).to(logits.device)
        u = u.clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / self.tau)
        hard = (soft > 0.5).to(soft.dtype)
        return hard + soft - soft.detach()

    def _loss(
        self,
        xb: torch.Tensor,
        logits_full: torch.Tensor,
        z_full: torch.Tensor,
        mask_net: _MaskNet,
        surrogate: nn.Module,
        landmarks: torch.Tensor,
        gen: torch.Generator,
        meter: CostMeter,
    ) -> torch.Tensor:
        mask_logits = mask_net(xb)
        p = torch.sigmoid(mask_logits)
        m = self._sample_mask(mask_logits, gen)
        noise = torch.randn(xb.shape, generator=gen, dtype=xb.dtype).to(xb.device)
        token = self.mu + self.std * noise
        logits_m, z_m = self._run(surrogate, m * xb + (1 - m) * token, meter, grad=True)
        # landmarks: hard Gumbel-softmax matching on cosine similarity (temperature 0.1)
        sim = F.normalize(z_m, dim=-1) @ F.normalize(landmarks, dim=-1).T
        u = torch.rand(sim.shape, generator=gen, dtype=sim.dtype).to(sim.device)
        u = u.clamp(1e-9, 1 - 1e-9)
        soft = ((sim.log_softmax(-1) - torch.log(-torch.log(u))) / 0.1).softmax(-1)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        matched = (hard + soft - soft.detach()) @ landmarks
        consistency = (
            _embed_consistency(z_full, z_m)
            + self.lam_label * _label_consistency(logits_m, logits_full)
            + _embed_consistency(z_full, matched)
        )
        regulariser = _gsat(p, self.r) + self.connect_weight * _connect(p)
        return consistency + self.beta_exp * regulariser

    # -- explaining ------------------------------------------------------------------------------
    def _check_fitted(self) -> _MaskNet:
        if self.mask_net is None:
            raise InputError("this TimeX explainer is not trained: call fit(X_train) first")
        return self.mask_net

    @torch.no_grad()
    def masks(self, X: Any) -> np.ndarray:
        """The explanations of series ``X`` (N, T, C): each cell's mask probability, (N, T, C).
        No model call (only the mask generator runs)."""
        net = self._check_fitted()
        x = self._tensor(X)
        if tuple(x.shape[1:]) != self.shape:
            raise InputError(f"series of shape {tuple(x.shape[1:])}; TimeX was fit on {self.shape}")
        return torch.sigmoid(net(x)).double().cpu().numpy()

    @torch.no_grad()
    def assign_landmarks(
        self, X: Any, meter: CostMeter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The nearest landmark of each series' explanation embedding (the surrogate's embedding
        of the series with the cells of mask probability ≤ 0.5 set to the training mean) and its
        cosine similarity. Costs N forward passes of the surrogate."""
        self._check_fitted()
        assert self.surrogate is not None and self.landmarks is not None
        meter = self.meter if meter is None else meter
        x = self._tensor(X)
        keep = torch.as_tensor(self.masks(X) > 0.5, dtype=x.dtype)
        _, z = self._run(self.surrogate, keep * x + (1 - keep) * self.mu, meter, grad=False)
        sim = F.normalize(z, dim=-1) @ F.normalize(self.landmarks, dim=-1).T
        best = sim.max(-1)
        return best.indices.cpu().numpy(), best.values.double().cpu().numpy()


def _augment(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``x`` and n − 1 noisy copies (Gaussian jitter of 10 % of each channel's std)."""
    rng = np.random.default_rng(seed)
    scale = 0.1 * np.where(x.std(0) > 0, x.std(0), 1.0)
    noise = rng.normal(size=(n - 1, *x.shape)) * scale
    return np.concatenate([x[None], x[None] + noise])


def timex(
    task: TimeSeriesTask,
    *,
    explainer: TimeX | None = None,
    epochs: int = 10,
    r: float = 0.5,
    n_landmarks: int = 16,
    n_augment: int = 32,
    seed: int = 0,
    units: str | Units | None = None,
) -> Attribution:
    """TimeX (Queen et al., 'Encoding Time-Series Explanations through Self-Supervised Model
    Behavior Consistency', NeurIPS 2023): the mask probabilities of a surrogate explainer trained
    with model-behaviour and label consistency and landmarks (see :class:`TimeX`).

    With ``explainer`` (a :class:`TimeX` already fit on training series) nothing is trained.
    Otherwise one is trained here for ``epochs`` on the task's ``background`` series, or — when
    the task has none — on ``x`` and ``n_augment − 1`` jittered copies of it (a weak stand-in:
    give background data for real use). Unit scores are the mean mask probability over each
    unit's elements; ``extras``: ``map`` (T, C), ``landmark`` and ``landmark_similarity``,
    ``value`` (f(x)) and ``kept_value`` (f with cells of probability ≤ 0.5 at the task's
    baseline). Cost: 3 forward passes (f(x), the kept series, the surrogate's landmark pass),
    plus, when training here, N forward passes of the model and epochs × N forward and backward
    passes of its surrogate (N = training series).
    """
    if not task.supports_gradients:
        raise InputError(
            "TimeX trains a copy of the model, so it needs a torch model; use occlusion or a "
            "perturbation method for this model"
        )
    u = task.make_units(units)
    if len(u) < 2:
        raise InputError(
            f"only {len(u)} unit: attribution ranks units against each other; use cells, steps "
            "or narrower windows"
        )
    if explainer is not None and (
        not isinstance(explainer, TimeX) or explainer.model is not task.model
    ):
        raise InputError(
            "explainer must be a TimeX fit on this task's model (TimeX(model).fit(X_train))"
        )
    trained_here = explainer is None
    with measure(task.meter) as cost:
        if explainer is None:
            data = task.background
            if data is None:
                data = _augment(task.x, max(int(n_augment), 2), seed)
            explainer = TimeX(
                task.model,
                channels_first=task.channels_first,
                r=r,
                n_landmarks=n_landmarks,
                epochs=epochs,
                seed=seed,
            ).fit(data, meter=task.meter)
        mask = explainer.masks(task.x[None])[0]
        landmark, similarity = explainer.assign_landmarks(task.x[None], meter=task.meter)
        kept = np.where(mask > 0.5, task.x, task.baseline)
        value, kept_value = task.values(np.stack([task.x, kept]))
    params: dict[str, Any] = {"explainer": "trained here" if trained_here else "given"}
    if trained_here:
        params.update(epochs=epochs, r=r, n_landmarks=n_landmarks, seed=seed)
        params["training"] = "background" if task.background is not None else "jittered x"
    else:
        params.update(epochs=explainer.epochs, r=explainer.r, seed=explainer.seed)
    return task.map_result(
        mask,
        "timex",
        params,
        cost,
        units=u,
        landmark=int(landmark[0]),
        landmark_similarity=float(similarity[0]),
        value=float(value),
        kept_value=float(kept_value),
    )
