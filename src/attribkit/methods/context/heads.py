"""The learned attention heads shipped per model (``attribkit/data/heads/<model>.json``): where a
model's file is and how to read it. :mod:`~attribkit.methods.context.head_selection` writes them.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from attribkit.core.errors import InputError
from attribkit.methods.context.attention_reading import model_shape

__all__ = ["HEADS_FORMAT", "HEADS_VERSION", "heads_path", "load_heads"]

HEADS_FORMAT = "attribkit.heads"
HEADS_VERSION = 1


def _heads_key(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "_", str(name).lower()).strip("._") or "model"


def heads_path(model: Any) -> Any:
    """The packaged heads file for ``model`` (a LanguageModel or a model name):
    ``attribkit/data/heads/<name>.json`` as an importlib.resources Traversable (may not exist)."""
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    return resources.files("attribkit").joinpath("data", "heads", f"{_heads_key(name)}.json")


def load_heads(model: Any) -> dict[str, Any]:
    """The shipped head selection for ``model`` (a LanguageModel or a model name), as a dict.

    For a LanguageModel the file's model identity (layers, heads per layer) must match the
    model's config. InputError when no file exists, naming :func:`select_heads` as the fix.
    No model calls.
    """
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    path = heads_path(model)
    if not path.is_file():
        raise InputError(
            f"no attention-head file for model {name!r} (looked for {path}). Select heads for it "
            "with attribkit.methods.context.head_selection.select_heads(lm, cases) and pass them "
            "as attention_heads(task, heads=spec['heads'], weights=spec['weights']), or write "
            "the file with `attribkit select-heads --model NAME --out FILE`; or use method "
            "'attntrace' or a perturbation method"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("format") != HEADS_FORMAT or spec.get("version") != HEADS_VERSION:
        raise InputError(f"{path} is not an attribkit heads file of version {HEADS_VERSION}")
    shape = None if isinstance(model, str) else model_shape(model)
    ident = spec.get("model", {})
    if shape is not None and (ident.get("num_layers"), ident.get("num_heads")) != shape:
        raise InputError(
            f"the heads file for {name!r} was fit on a model with {ident.get('num_layers')} "
            f"layers × {ident.get('num_heads')} heads, but this model has {shape[0]} × "
            f"{shape[1]}; select heads for this model with select_heads(lm, cases)"
        )
    return spec
