"""The attention heads shipped per model (``attribkit/data/heads/<model>[.<variant>].json``):
where a model's file is and how to read it.

The default file ``<model>.json`` holds the heads learned on real QA data
(:mod:`~attribkit.methods.context.head_training`, ``attribkit train-heads``); a named variant
sits beside it as ``<model>.<variant>.json``, e.g. ``smollm2.synthetic.json``, the heads selected
on synthetic template cases (:mod:`~attribkit.methods.context.head_selection`,
``attribkit select-heads``). Choose one with ``load_heads(lm, variant="synthetic")`` or
``attention_heads(task, heads="synthetic")``.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from attribkit.core.errors import InputError
from attribkit.methods.context.attention_reading import model_shape

__all__ = [
    "HEADS_FORMAT",
    "HEADS_VERSION",
    "heads_file_header",
    "heads_path",
    "heads_variants",
    "load_heads",
]

HEADS_FORMAT = "attribkit.heads"
HEADS_VERSION = 1
#: Versions of the heads file that :func:`load_heads` reads.
READABLE_VERSIONS = (1,)


def _heads_key(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "_", str(name).lower()).strip("._") or "model"


def _model_name(model: Any) -> str:
    return model if isinstance(model, str) else getattr(model, "name", type(model).__name__)


def heads_file_header(lm: Any) -> dict[str, Any]:
    """The fields every heads file starts with: format, version and the model's identity (name,
    architecture, layers, heads per layer) that :func:`load_heads` checks. No model calls."""
    shape = model_shape(lm)
    return {
        "format": HEADS_FORMAT,
        "version": HEADS_VERSION,
        "model": {
            "name": getattr(lm, "name", None),
            "architecture": type(getattr(lm, "model", lm)).__name__,
            "num_layers": shape[0] if shape else None,
            "num_heads": shape[1] if shape else None,
        },
    }


def heads_path(model: Any, variant: str | None = None) -> Any:
    """The packaged heads file for ``model`` (a LanguageModel or a model name):
    ``attribkit/data/heads/<name>.json``, or ``<name>.<variant>.json`` for a named ``variant``
    (``None`` or ``"default"``: the default file), as an importlib.resources Traversable (may
    not exist). No model calls."""
    stem = _heads_key(_model_name(model))
    if variant not in (None, "", "default"):
        key = _heads_key(str(variant))
        if "." in key:
            raise InputError(
                f"a heads variant is one word (letters, digits, _ or -), got {variant!r}"
            )
        stem = f"{stem}.{key}"
    return resources.files("attribkit").joinpath("data", "heads", f"{stem}.json")


def heads_variants(model: Any) -> list[str]:
    """The variant names shipped for ``model`` besides its default file (e.g. ``["synthetic"]``).
    No model calls."""
    stem = _heads_key(_model_name(model))
    folder = resources.files("attribkit").joinpath("data", "heads")
    out = []
    for entry in folder.iterdir() if folder.is_dir() else []:
        name = entry.name
        if name.startswith(f"{stem}.") and name.endswith(".json") and name.count(".") == 2:
            out.append(name[len(stem) + 1 : -len(".json")])
    return sorted(out)


def load_heads(model: Any, variant: str | None = None) -> dict[str, Any]:
    """The shipped head set for ``model`` (a LanguageModel or a model name), as a dict:
    ``heads`` ([layer, head] pairs), ``weights``, the ``model`` identity and how the heads were
    chosen (``selection``, and ``training`` or ``train``/``held_out`` metrics).

    ``variant=None`` reads the default file (for SmolLM2: heads learned on real QA data);
    ``variant="synthetic"`` the synthetic-template selection (:func:`heads_path`). For a
    LanguageModel the file's model identity (layers, heads per layer) must match the model's
    config. InputError when no file exists, naming :func:`select_heads` and
    :func:`~attribkit.methods.context.head_training.train_heads` as the fix. Reads heads files
    of version 1. No model calls.
    """
    name = _model_name(model)
    path = heads_path(model, variant)
    if not path.is_file():
        if variant not in (None, "", "default"):
            shipped = heads_variants(model)
            raise InputError(
                f"no {variant!r} attention-head file for model {name!r} (looked for {path}); "
                f"shipped variants: {shipped or 'none'}"
            )
        raise InputError(
            f"no attention-head file for model {name!r} (looked for {path}). Select heads for it "
            "with attribkit.methods.context.head_selection.select_heads(lm, cases) and pass them "
            "as attention_heads(task, heads=spec['heads'], weights=spec['weights']), or write "
            "the file with `attribkit select-heads --model NAME --out FILE` (synthetic cases) or "
            "`attribkit train-heads --data FILE.jsonl --out FILE` (real QA data); or use method "
            "'attntrace' or a perturbation method"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("format") != HEADS_FORMAT or spec.get("version") not in READABLE_VERSIONS:
        raise InputError(
            f"{path} is not an attribkit heads file of version {', '.join(map(str, READABLE_VERSIONS))}"
        )
    shape = None if isinstance(model, str) else model_shape(model)
    ident = spec.get("model", {})
    if shape is not None and (ident.get("num_layers"), ident.get("num_heads")) != shape:
        raise InputError(
            f"the heads file for {name!r} was fit on a model with {ident.get('num_layers')} "
            f"layers × {ident.get('num_heads')} heads, but this model has {shape[0]} × "
            f"{shape[1]}; select heads for this model with select_heads(lm, cases)"
        )
    return spec  # type: ignore[no-any-return]
