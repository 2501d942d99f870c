"""A tiny CNN trained on scikit-learn's 8x8 digits inside the test session (shared test helper).

Architecture (design notes §3.1): three conv blocks with 16, 32 (stride 2) and 32 channels, ReLU,
global average pooling, a linear head; the final map is 4x4 per 8x8 digit. It takes three equal
colour channels (display images are RGB; a greyscale digit becomes three equal copies), so it runs
on any image size: 8x8 digits, 16x16 grids of digits. Trained with a fixed seed in ~2 s; cached,
so every test module of one session shares the same weights.

Usage::

    from digits_cnn import digits_classifier, digits_data
    model = digits_classifier()            # ImageClassifier(input_size=None, normalize=None)
    x_test, y_test = digits_data("test")   # (N, 8, 8) float32 in [0, 1], (N,) int
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from attribkit.models.image import ImageClassifier

N_TRAIN = 1200


class DigitsCNN(nn.Module):
    """``head(mean over positions of features(x))``: features = 3 conv blocks, head = Linear."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
        )
        self.head = nn.Linear(32, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@functools.lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
    return x[tr], y[tr], x[te], y[te]


def digits_data(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: (N, 8, 8) float32 in [0, 1] and (N,) int64, for ``"train"`` (1200
    digits) or ``"test"`` (the other 597)."""
    xtr, ytr, xte, yte = _split()
    return (xtr, ytr) if split == "train" else (xte, yte)


@functools.lru_cache(maxsize=1)
def _trained() -> DigitsCNN:
    xtr, ytr, _, _ = _split()
    torch.manual_seed(0)
    net = DigitsCNN()
    x = torch.from_numpy(xtr)[:, None].expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(ytr)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(25):
        for idx in torch.randperm(len(x), generator=g).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def digits_classifier() -> ImageClassifier:
    """The trained tiny CNN as an ImageClassifier on display images of any size (no resizing,
    no normalisation); ``default_layers``: middle = after conv1, final = after conv3."""
    model = ImageClassifier(
        _trained(), input_size=None, normalize=None, labels=[str(i) for i in range(10)],
        batch_size=64, name="digits-cnn",
    )  # fmt: skip
    model.default_layers = {"middle": "features.0", "final": "features.2"}
    return model


def accuracy(model: ImageClassifier) -> float:
    """Test-split accuracy (597 forward passes)."""
    x, y = digits_data("test")
    images = np.repeat(x[..., None], 3, axis=-1)
    return float((model.predict(images).argmax(1) == y).mean())
