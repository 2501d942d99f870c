"""What image occlusion and RISE share: the baseline a removed pixel shows, their integer checks,
and masking the activations of a layer instead of the image (ML-Att).

Both explain the target's probability by default (declared ``output="prob"`` in the catalog; pass
``output="logit"`` to :func:`attribkit.attribute_image` for the logit) and send every perturbed
image through the model in batches (:meth:`ImageTask.mask_values`), never one at a time.

Baselines. A removed pixel shows ``baseline``: ``"zero"`` (black, the default: RISE's x ⊙ M as
written in the paper), ``"mean"`` (the image's mean colour), ``"blur"`` (Gaussian blur) or an
(H, W, 3) display image. Zeiler & Fergus occluded with a grey square, and Captum-based code
(Rao et al.) and the RISE reference code zero the *normalised* tensor, i.e. show the
normalisation's mean colour: for the bundled Lite0 that is the uniform grey 127/255, which is
``baseline=np.full((224, 224, 3), 127 / 255)``; ``"mean"`` is the nearest built-in choice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.tasks.image import ImageTask, UnitSpec

__all__ = ["Baseline", "at_layer", "baseline_name", "display_baseline", "int_param"]

Baseline = str | np.ndarray


def int_param(name: str, value: Any, least: int = 1) -> int:
    """``value`` as an int, InputError unless it is an integer >= ``least``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InputError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def display_baseline(task: ImageTask, baseline: Baseline) -> np.ndarray:
    """The (H, W, 3) display baseline image (checked)."""
    if isinstance(baseline, np.ndarray):
        if baseline.shape != task.image.shape:
            raise InputError(
                f"baseline image of shape {baseline.shape} does not match the display image "
                f"{task.image.shape}; give an (H, W, 3) array in [0, 1]"
            )
        return baseline.astype(np.float32)
    if not isinstance(baseline, str):
        raise InputError(
            f"baseline must be 'zero', 'mean', 'blur' or an (H, W, 3) array, got {baseline!r}"
        )
    return task.baseline_image(baseline)


def baseline_name(baseline: Baseline) -> str:
    """How the params record ``baseline``: its name, or ``"given image"`` for an array."""
    return baseline if isinstance(baseline, str) else "given image"


def at_layer(
    task: ImageTask,
    name: str,
    layer: str | None,
    units: UnitSpec,
    masks_for: Callable[[int, int], tuple[np.ndarray, dict[str, Any]]],
    to_map: Callable[[float, np.ndarray, np.ndarray], np.ndarray],
) -> Attribution:
    """Method ``name`` on the activations at ``layer``: ``masks_for(h, w)`` gives the (n, h, w)
    masks over the layer's positions (scaling every channel there) and the method's params;
    ``to_map(f(x), f(masked), flat masks (n, h·w))`` turns the values into the (h·w) map,
    which is upsampled bilinearly. Costs the masks' forward passes plus the layer probe's."""
    with measure(task) as cost:
        acts, _ = task.layer_input(layer)
        h, w = acts.shape[1:]
        masks, params = masks_for(h, w)
        value, values = task.layer_mask_values(layer, masks)
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    cell_map = to_map(value, values, flat).reshape(h, w)
    params.update(layer=layer, baseline="zero activations")
    layer_name = task.model.resolve_layer(layer)
    return task.result(
        cell_map,
        name,
        params,
        cost,
        units=units,
        value=value,
        layer_name=layer_name,
        layer_map=cell_map.tolist(),
        map_shape=[h, w],
    )
