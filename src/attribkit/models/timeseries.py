"""A small 1-D CNN classifier of time series, trainable on a CPU in seconds, saved safely.

:class:`SeriesCNN` takes a batch of series shaped (B, T, C) and returns class logits (B, K): three
dilated convolutions (receptive field 29 steps with the defaults), global average and max pooling
over time, and one linear head, so its embedding is the input of that head (what TimeX reads as
the model's latent space). :func:`fit_series_classifier` trains any such module with Adam and
cross-entropy from a seeded generator; :func:`save_series_cnn` / :func:`load_series_cnn` keep it as
safetensors plus a JSON config (never pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attribkit.core.errors import InputError

__all__ = [
    "SeriesCNN",
    "fit_series_classifier",
    "load_series_cnn",
    "predict_series",
    "save_series_cnn",
]


class SeriesCNN(nn.Module):
    """1-D CNN on (B, T, C) series → (B, n_classes) logits.

    Args:
        n_channels: C, the channels of each series.
        n_classes: K (at least 2).
        width: convolution channels.
        kernel: convolution kernel size (odd).
        dilations: one convolution per entry, with that dilation ('same' padding).
    """

    def __init__(
        self,
        n_channels: int,
        n_classes: int,
        width: int = 32,
        kernel: int = 5,
        dilations: tuple[int, ...] = (1, 2, 4),
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise InputError(f"a classifier needs at least 2 classes, got {n_classes}")
        if kernel % 2 == 0:
            raise InputError(f"kernel must be odd ('same' padding), got {kernel}")
        self.config = {
            "n_channels": int(n_channels),
            "n_classes": int(n_classes),
            "width": int(width),
            "kernel": int(kernel),
            "dilations": [int(d) for d in dilations],
        }
        layers: list[nn.Module] = []
        c_in = n_channels
        for d in dilations:
            layers += [nn.Conv1d(c_in, width, kernel, padding=d * (kernel // 2), dilation=d)]
            layers += [nn.ReLU()]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * width, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features (B, 2 · width) of (B, T, C) series: the head's input."""
        h = self.features(x.transpose(1, 2))
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))  # type: ignore[no-any-return]


def _as_tensor(X: Any) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(X, dtype=np.float32))
    if x.ndim == 2:
        x = x.unsqueeze(-1)
    if x.ndim != 3:
        raise InputError(f"series batches must be (N, T) or (N, T, C), got shape {tuple(x.shape)}")
    return x


def fit_series_classifier(
    model: nn.Module,
    X: Any,
    y: Any,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``model`` on ``X`` (N, T, C) and labels ``y`` with Adam and cross-entropy, batches
    shuffled by a generator seeded with ``seed``. Returns ``{"train_accuracy", "epochs",
    "seconds"}``; leaves the model in eval mode. Costs epochs × N forward and backward passes."""
    import time

    x, t = _as_tensor(X), torch.as_tensor(np.asarray(y), dtype=torch.long)
    if len(x) != len(t):
        raise InputError(f"{len(x)} series but {len(t)} labels")
    if len(torch.unique(t)) < 2:
        raise InputError("the labels have a single class; a classifier needs at least two")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        start = time.perf_counter()
        model.train()
        for _ in range(int(epochs)):
            order = torch.randperm(len(x), generator=gen)
            for s in range(0, len(x), batch_size):
                idx = order[s : s + batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[idx]), t[idx])
                loss.backward()
                opt.step()
        model.eval()
    pred = predict_series(model, x)
    return {
        "train_accuracy": float((pred.argmax(1) == t.numpy()).mean()),
        "epochs": int(epochs),
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def predict_series(model: nn.Module, X: Any, batch_size: int = 256) -> np.ndarray:
    """The model's logits (N, K) for ``X`` (N, T, C), in batches. Costs N forward passes."""
    x = _as_tensor(X)
    return torch.cat([model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)]).numpy()


def save_series_cnn(model: SeriesCNN, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as ``path`` (safetensors) plus ``path`` + ``.json`` (its config)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_name(path.name + ".json").write_text(json.dumps(model.config), encoding="utf-8")
    return path


def load_series_cnn(path: str | os.PathLike[str]) -> SeriesCNN:
    """A :class:`SeriesCNN` written by :func:`save_series_cnn` (eval mode)."""
    from safetensors.torch import load_file

    path = Path(path)
    config_file = path.with_name(path.name + ".json")
    if not path.is_file() or not config_file.is_file():
        raise InputError(f"{path} (and {config_file.name}) must exist: save with save_series_cnn")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["dilations"] = tuple(config["dilations"])
    model = SeriesCNN(**config)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
