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
def capture(
    module: torch.nn.Module, cut_from: torch.nn.Module | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, ``store["out"]`` holds ``module``'s output of the latest forward (its
    last call in that forward), still in the autograd graph; ``store["calls"]`` counts calls.

    With ``cut_from`` (the model's root module), the graph is cut at ``module``: the layers
    before it run without autograd and ``store["out"]`` is a leaf that requires a gradient, so a
    backward pass from the output stops there and the forward records only what follows the
    layer. Gradients with respect to ``store["out"]`` are the same as on the full graph (a
    partial derivative holds everything upstream fixed); gradients with respect to the input
    are not available. The forward must run with grad mode on, as usual."""
    store: dict[str, Any] = {"calls": 0}

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> Any:
        store["calls"] += 1
        t = _first_tensor(out)
        if cut_from is None:
            store["out"] = t
            return None
        torch.set_grad_enabled(True)  # record from here on (the root pre-hook turned it off)
        store["out"] = t.detach().requires_grad_(True)
        t = store["out"].clone()  # a non-leaf, so that in-place ops after the layer still work
        return type(out)([t, *out[1:]]) if isinstance(out, (tuple, list)) else t

    def stop_recording(_m: torch.nn.Module, _i: Any) -> None:
        torch.set_grad_enabled(False)

    handles = [module.register_forward_hook(hook)]
    if cut_from is not None:
        handles.append(cut_from.register_forward_pre_hook(stop_recording))
    grad_mode = torch.is_grad_enabled()
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
        torch.set_grad_enabled(grad_mode)  # the hooks switch it; leave it as it was


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
        return type(out)([value, *out[1:]]) if isinstance(out, (tuple, list)) else value

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
