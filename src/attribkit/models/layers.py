"""Reading and replacing one layer's output during a forward pass (forward hooks, no library).

Used by layer-level image attribution (Grad-CAM and friends, ML-Att: every method applied at
the same layer) and by concept methods that split a model as ``h ∘ g`` at a layer. A module
that runs more than once in a forward pass (a shared activation, say) is read and replaced at
its *last* call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from attribkit.core.errors import InputError

__all__ = ["capture", "count_calls", "replace"]


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise InputError(
        f"the layer returns {type(out).__name__}, not a tensor; pick a layer whose output is a "
        "tensor (e.g. a convolution, a norm or an activation)"
    )


@contextmanager
def capture(module: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, ``store["out"]`` holds ``module``'s output of the latest forward (its
    last call in that forward), still in the autograd graph; ``store["calls"]`` counts calls."""
    store: dict[str, Any] = {"calls": 0}

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        store["out"] = _first_tensor(out)
        store["calls"] += 1

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def count_calls(module: torch.nn.Module, run: Callable[[], Any]) -> int:
    """How many times ``module`` runs during ``run()`` (one probe forward pass)."""
    with capture(module) as store, torch.no_grad():
        run()
    if store["calls"] == 0:
        raise InputError("the layer never ran during the forward pass; pick a layer the model uses")
    return int(store["calls"])


@contextmanager
def replace(
    module: torch.nn.Module, value: torch.Tensor, calls_per_forward: int = 1
) -> Iterator[None]:
    """Within the block, the last call of ``module`` in each forward pass (it runs
    ``calls_per_forward`` times per pass, see :func:`count_calls`) returns ``value`` instead of
    its output (which must have the same shape). Layers before it still run, but nothing
    downstream depends on them, so gradients flow only into ``value``."""
    calls = {"n": 0}

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> Any:
        calls["n"] += 1
        if calls["n"] % calls_per_forward != 0:
            return None
        t = _first_tensor(out)
        if t.shape != value.shape:
            raise InputError(
                f"replacement activations have shape {tuple(value.shape)} but the layer "
                f"outputs {tuple(t.shape)}"
            )
        if isinstance(out, tuple):
            return (value, *out[1:])
        return value

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
