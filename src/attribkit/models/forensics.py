"""Frequency-residual features for model attribution, and the max-softmax baseline on them.

A generator leaves its trace in the high frequencies: up-sampling replicates the spectrum
(peaks at half the sampling rate), a learned convolution reshapes it. The classical recipe
(Durall et al. 2020; Frank et al. 2020; the "frequency" baselines of POSE, Yang et al., CVPR 2023)
removes the image content with a denoiser and looks at the spectrum of what is left:

* residual ``r = x - median3x3(x)`` per channel (reflect padding);
* its log-magnitude 2-D FFT per channel, ``log(|FFT(r)| + 1e-4)``, centred;
* reduced to a fixed-length vector: the spectrum average-pooled to ``pool`` x ``pool`` cells
  (whole spectrum, coarse: keeps the up-sampling peaks at the corners and edges), its radial
  profile in ``n_radial`` rings, and the residual's log standard deviation and cross-channel
  correlations (the seeded kernels mix the channels).

:func:`max_softmax_baseline` is the open-set baseline of the papers: a standardised
multinomial logistic regression on these features, its maximum softmax probability the
"known" score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.errors import InputError
from attribkit.models.generators import check_images

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = ["max_softmax_baseline", "residual_features", "residual_images"]


def _median3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median per channel of an (N, C, H, W) tensor (reflect padding)."""
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3)  # (N, C*9, H*W)
    return patches.view(n, c, 9, h * w).median(dim=2).values.view(n, c, h, w)


def residual_images(images: np.ndarray) -> np.ndarray:
    """The noise residuals ``x - median3x3(x)`` of ``images`` (float (N, H, W, 3) in [0, 1]):
    float32 (N, H, W, 3). No model calls."""
    x = torch.from_numpy(check_images(images)).permute(0, 3, 1, 2)
    return (x - _median3(x)).permute(0, 2, 3, 1).contiguous().numpy()


def residual_features(
    images: np.ndarray,
    *,
    pool: int = 8,
    n_radial: int = 12,
    batch_size: int = 256,
) -> np.ndarray:
    """Frequency-residual features of ``images`` (float (N, H, W, 3) in [0, 1], H and W at least
    ``pool``): float64 (N, d) with ``d = 3 * pool**2 + 3 * n_radial + 6`` (234 by default).

    Per channel: the centred log-magnitude spectrum of the median-filter residual pooled to
    ``pool`` x ``pool`` cells, and its mean over ``n_radial`` rings of equal width in radial
    frequency; then the residual's three log standard deviations and three cross-channel
    correlations. Deterministic; costs no model calls (an FFT per image and channel).
    Raises :class:`InputError` for images of the wrong type, shape, dtype or range.
    """
    x_all = check_images(images)
    if not isinstance(pool, (int, np.integer)) or pool < 1 or min(x_all.shape[1:3]) < pool:
        raise InputError(f"pool must be an integer between 1 and the image side, got {pool!r}")
    if not isinstance(n_radial, (int, np.integer)) or n_radial < 1:
        raise InputError(f"n_radial must be a positive integer, got {n_radial!r}")
    h, w = x_all.shape[1:3]
    fy = torch.fft.fftshift(torch.fft.fftfreq(h))[:, None]
    fx = torch.fft.fftshift(torch.fft.fftfreq(w))[None, :]
    radius = torch.sqrt(fy**2 + fx**2) / (0.5 * np.sqrt(2.0))  # 0 .. 1
    ring = torch.clamp((radius * n_radial).long(), max=n_radial - 1).flatten()
    ring_onehot = F.one_hot(ring, n_radial).to(torch.float32)  # (H*W, R)
    ring_onehot = ring_onehot / ring_onehot.sum(0).clamp(min=1)
    out = []
    for start in range(0, len(x_all), batch_size):
        x = torch.from_numpy(x_all[start : start + batch_size]).permute(0, 3, 1, 2)
        r = x - _median3(x)
        spec = torch.log(torch.fft.fft2(r).abs() + 1e-4)
        spec = torch.fft.fftshift(spec, dim=(-2, -1))  # (B, 3, H, W)
        pooled = F.adaptive_avg_pool2d(spec, pool).flatten(1)
        radial = (spec.flatten(2) @ ring_onehot).flatten(1)
        flat = r.flatten(2)
        flat = flat - flat.mean(dim=2, keepdim=True)
        std = flat.std(dim=2).clamp(min=1e-8)
        cov = flat @ flat.transpose(1, 2) / flat.shape[2]
        corr = cov / (std[:, :, None] * std[:, None, :])
        pairs = torch.stack([corr[:, 0, 1], corr[:, 0, 2], corr[:, 1, 2]], dim=1)
        out.append(torch.cat([pooled, radial, torch.log(std), pairs], dim=1).double().numpy())
    return np.concatenate(out)


def max_softmax_baseline(C: float = 1.0, max_iter: int = 3000) -> Pipeline:
    """The max-softmax baseline on :func:`residual_features`: an unfitted scikit-learn pipeline
    ``StandardScaler() -> LogisticRegression(C)`` (multinomial, lbfgs). Fit it on
    ``residual_features(images)`` and known-source labels; ``predict_proba`` gives the source
    distribution, whose maximum is the open-set "known" score (Hendrycks & Gimpel 2017, the
    baseline of Yang et al., "Progressive Open Space Expansion for Open-Set Model Attribution",
    CVPR 2023). Costs no model calls."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not C > 0:
        raise InputError(f"C must be > 0, got {C!r}")
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
