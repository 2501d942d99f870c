"""Gradient maps of images at any layer (kind ``image``): saliency, input × gradient,
integrated gradients and SmoothGrad.

Each one runs the unit-level gradient method of :mod:`attribkit.methods.gradient` on the
representation at ``layer`` (the model input by default; ``"middle"``, ``"final"`` or a module
name: ML-Att, Rao, Böhle & Schiele, 'Towards Better Understanding Attribution Methods', 2022),
whose units are the spatial positions (channels summed), then upsamples the (h, w) map
bilinearly to the image. Costs are those of the unit-level method, plus two forward passes at a
layer other than the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.methods.gradient.input_x_gradient import input_x_gradient as _input_x_gradient
from attribkit.methods.gradient.integrated_gradients import (
    integrated_gradients as _integrated_gradients,
)
from attribkit.methods.gradient.saliency import saliency as _saliency
from attribkit.methods.gradient.smoothgrad import smoothgrad as _smoothgrad
from attribkit.methods.numerics import Rule
from attribkit.tasks.image import ImageTask, UnitSpec

_UNIT_METHODS = {
    "saliency": _saliency,
    "input_x_gradient": _input_x_gradient,
    "integrated_gradients": _integrated_gradients,
    "smoothgrad": _smoothgrad,
}


def _run(
    task: ImageTask,
    name: str,
    layer: str | None,
    units: UnitSpec,
    baseline: Any = None,
    **params: Any,
) -> Attribution:
    """Run the unit-level gradient method ``name`` at ``layer`` and wrap it as an image map."""
    with measure(task) as cost:  # includes the layer's probe passes
        gs = task.gradient_scorer(layer, baseline=baseline)
        a = _UNIT_METHODS[name](gs, **params)
    h, w = gs.x.shape[1:]
    cell_map = np.asarray(a.scores, dtype=float).reshape(h, w)
    params = dict(a.params, layer=layer or "input")
    if baseline is not None and not hasattr(baseline, "shape"):
        params["baseline"] = baseline
    extras = dict(a.extras, map_shape=[h, w], layer_name=task.model.resolve_layer(layer))
    return task.result(cell_map, name, params, cost, units=units, **extras)


def saliency(
    task: ImageTask, *, layer: str | None = "input", absolute: bool = True, units: UnitSpec = None
) -> Attribution:
    """|d target / d x| summed over channels at each position of ``layer``. Returns the map as
    an Attribution (``heatmap``); cost 1 forward + 1 backward pass (+2 forward at a layer)."""
    return _run(task, "saliency", layer, units, absolute=absolute)


def input_x_gradient(
    task: ImageTask, *, layer: str | None = "input", units: UnitSpec = None
) -> Attribution:
    """(x − 0) · d target / d x summed over channels at each position of ``layer`` (signed).
    Cost 1 forward + 1 backward pass (+2 forward at a layer)."""
    return _run(task, "input_x_gradient", layer, units)


def integrated_gradients(
    task: ImageTask,
    *,
    layer: str | None = "input",
    n_steps: int = 32,
    rule: Rule = "gauss_legendre",
    baseline: Any = None,
    units: UnitSpec = None,
) -> Attribution:
    """Integrated gradients from ``baseline`` (None: the model-input zero tensor; ``"black"``,
    ``"blur"``, ``"mean"``; zero activations at a layer) to the image, summed over channels.
    ``extras['completeness_error']`` reports |Σ map − (f(x) − f(x'))| / |f(x) − f(x')|.
    Cost n_steps forward + n_steps backward passes, +2 forward (+2 more at a layer)."""
    return _run(
        task, "integrated_gradients", layer, units, baseline=baseline, n_steps=n_steps, rule=rule
    )


def smoothgrad(
    task: ImageTask,
    *,
    layer: str | None = "input",
    n_samples: int = 25,
    noise_level: float = 0.15,
    multiply_by_inputs: bool = False,
    seed: int | None = 0,
    units: UnitSpec = None,
) -> Attribution:
    """The gradient averaged over ``n_samples`` noisy copies (std = noise_level × range), |.|
    unless ``multiply_by_inputs``, summed over channels. Cost n_samples forward + backward."""
    return _run(
        task,
        "smoothgrad",
        layer,
        units,
        n_samples=n_samples,
        noise_level=noise_level,
        multiply_by_inputs=multiply_by_inputs,
        seed=seed,
    )


__all__ = ["input_x_gradient", "integrated_gradients", "saliency", "smoothgrad"]
