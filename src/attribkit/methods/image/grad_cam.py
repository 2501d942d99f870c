"""Class activation maps of images (kind ``image``): Grad-CAM, Grad-CAM++ and Layer-CAM.

Each one reads a convolutional layer's activations A (C, h, w) and the gradient of the target
with respect to them in one forward and one backward pass (a capture hook that cuts the autograd
graph at the layer: the layers before it run without autograd, and the backward pass stops
there), combines them into an (h, w) map and upsamples it to the image (bilinearly by
default, as Rao, Böhle & Schiele do for every layer attribution; ``upsample="nearest"`` keeps
each layer cell a block of image pixels). ``layer`` is ``"final"`` by default (for the bundled
EfficientNet-Lite0, ``_bn1``, the head convolution's batch norm: 7×7 at 224²), ``"middle"``,
``"input"`` (the model-input tensor: three colour channels) or any name in
``model.layer_names()``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.models import layers as layer_hooks
from attribkit.tasks.image import ImageTask, UnitSpec

__all__ = ["grad_cam", "grad_cam_plus_plus", "layer_activations_and_gradients", "layer_cam"]

Upsample = Literal["bilinear", "nearest"]
_UPSAMPLE = ("bilinear", "nearest")


def layer_activations_and_gradients(
    task: ImageTask, layer: str | None = "final"
) -> tuple[str | None, torch.Tensor, torch.Tensor, float]:
    """``(name, A, dA, value)``: the resolved layer name (None at the input), its activations A
    (C, h, w) for the task's image, the gradient of the task's target output with respect to
    them (same shape, both float64 on the CPU) and the target value. A layer whose module runs
    several times in a forward pass is read at its last call. Costs one forward and one
    backward pass, counted on ``task.cost``."""
    name = task.model.resolve_layer(layer)
    x = task.tensor(task.image[None]).detach()
    x.requires_grad_(name is None)  # at a layer, the graph starts there (see below)
    with task.timed():
        if name is None:
            acts_src, value = x, task.transform(task.logits(x, grad=True))[0]
        else:
            module = task.model.get_layer(name)
            # Cut the graph at the layer: nothing before it is recorded or back-propagated.
            with layer_hooks.capture(module, cut_from=task.model.module) as store:
                value = task.transform(task.logits(x, grad=True))[0]
            if store["calls"] == 0:
                raise InputError(
                    f"layer {name!r} never ran during the forward pass; pick a layer the model "
                    "uses (see model.layer_names())"
                )
            acts_src = store["out"]
        if acts_src.ndim != 4:
            raise InputError(
                f"layer {name!r} outputs shape {tuple(acts_src.shape)}; CAM methods need a "
                "convolutional layer with (batch, channels, height, width) output, e.g. "
                "layer='final' or 'middle'"
            )
        grads = None
        if value.requires_grad:
            (grads,) = torch.autograd.grad(value, acts_src, allow_unused=True)
        if grads is None:
            raise InputError(
                f"layer {name!r} is not connected to the output by autograd; pick a layer on "
                "the path from the input to the logits"
            )
    task.cost.backward_passes += 1
    acts = acts_src[0].detach().to("cpu", torch.float64)
    return name, acts, grads[0].detach().to("cpu", torch.float64), float(value.detach())


def _upsampled(task: ImageTask, cell_map: np.ndarray, upsample: str) -> np.ndarray:
    """The (h, w) map at image resolution ("bilinear": task.result does it; "nearest": each cell
    becomes the block of pixels whose centres fall in it)."""
    if upsample == "bilinear" or cell_map.shape == task.shape:
        return cell_map
    t = torch.as_tensor(cell_map)[None, None]
    return F.interpolate(t, size=task.shape, mode="nearest-exact")[0, 0].numpy()


def _cam(
    task: ImageTask,
    method: str,
    combine: Any,
    layer: str | None,
    relu: bool,
    upsample: str,
    units: UnitSpec,
) -> Attribution:
    if upsample not in _UPSAMPLE:
        raise InputError(f"unknown upsample {upsample!r}: use 'bilinear' or 'nearest'")
    with measure(task) as cost:
        name, acts, grads, value = layer_activations_and_gradients(task, layer)
    cam = combine(acts, grads)
    if relu:
        cam = torch.clamp(cam, min=0.0)
    cell_map = cam.numpy()
    h, w = cell_map.shape
    params = {"layer": layer or "input", "relu": relu, "upsample": upsample}
    return task.result(
        _upsampled(task, cell_map, upsample),
        method,
        params,
        cost,
        units=units,
        layer_name=name,
        map_shape=[h, w],
        layer_map=cell_map.astype(np.float32),
        value=value,
    )


def _grad_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    weights = grads.mean(dim=(1, 2))
    return torch.einsum("k,khw->hw", weights, acts)


def _grad_cam_pp(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Chattopadhay et al., eq. 19 with Y = exp(S): the exp(S) factors cancel in alpha, and the
    # remaining exp(S) in dY/dA is a positive constant per image, dropped as in the paper's code.
    g2, g3 = grads**2, grads**3
    denom = 2.0 * g2 + acts.sum(dim=(1, 2), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
    weights = (alpha * torch.clamp(grads, min=0.0)).sum(dim=(1, 2))
    return torch.einsum("k,khw->hw", weights, acts)


def _layer_cam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return (torch.clamp(grads, min=0.0) * acts).sum(dim=0)


def grad_cam(
    task: ImageTask,
    *,
    layer: str | None = "final",
    relu: bool = True,
    upsample: Upsample = "bilinear",
    units: UnitSpec = None,
) -> Attribution:
    """Grad-CAM: ReLU(Σ_k w_k A^k) with w_k = mean_ij ∂f/∂A^k_ij at ``layer``, upsampled to
    the image (``relu=False`` keeps the signed map). Returns an Attribution whose ``heatmap`` is
    the map; ``extras`` hold ``layer_name``, ``map_shape`` and ``layer_map`` (the (h, w) map
    before upsampling). Cost: 1 forward + 1 backward pass."""
    return _cam(task, "grad_cam", _grad_cam, layer, relu, upsample, units)


def grad_cam_plus_plus(
    task: ImageTask,
    *,
    layer: str | None = "final",
    relu: bool = True,
    upsample: Upsample = "bilinear",
    units: UnitSpec = None,
) -> Attribution:
    """Grad-CAM++: ReLU(Σ_k w_k A^k) with w_k = Σ_ij α^k_ij ReLU(g^k_ij), g = ∂f/∂A and the
    closed form α = g² / (2g² + Σ_ab A^k_ab g³) for the exponential of the score (0 where the
    denominator is 0). Returns an Attribution like :func:`grad_cam`. Cost: 1 forward +
    1 backward pass."""
    return _cam(task, "grad_cam_plus_plus", _grad_cam_pp, layer, relu, upsample, units)


def layer_cam(
    task: ImageTask,
    *,
    layer: str | None = "final",
    relu: bool = True,
    upsample: Upsample = "bilinear",
    units: UnitSpec = None,
) -> Attribution:
    """Layer-CAM: ReLU(Σ_k ReLU(∂f/∂A^k) ⊙ A^k) at ``layer`` (position-wise weights, so it also
    works at early layers). Returns an Attribution like :func:`grad_cam`. Cost: 1 forward +
    1 backward pass."""
    return _cam(task, "layer_cam", _layer_cam, layer, relu, upsample, units)
