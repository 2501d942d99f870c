"""Image attribution: which regions of an image made a classifier predict a class.

:class:`ImageTask` holds one image in the model's display space ((H, W, 3) in [0, 1]), the
model and the target class, and gives methods what they need: batched, counted values of
perturbed images, gradient scorers at the input or at any named layer (ML-Att: every method
applied at the same layer), unit splits (pixels, patches, SLIC superpixels), and one way to
turn a map into an :class:`~attribkit.core.attribution.Attribution` whose ``heatmap`` is the 2-D
map at image resolution. :func:`attribute_image` is the one-call entry point.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import MethodSpec, attribute, get_method
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import ImageUnits, Unit, Units
from attribkit.models import layers as layer_hooks
from attribkit.models.classifier import OUTPUTS, TorchClassifier
from attribkit.models.image import ImageClassifier

__all__ = ["ImageTask", "attribute_image", "image_units"]

UnitSpec = str | Units | np.ndarray | None
#: keyword arguments of :func:`attribute_image` that shape the units, not the method.
UNIT_OPTIONS = ("patch", "n_segments", "compactness", "blur_sigma")


@functools.lru_cache(maxsize=8)
def _positions(h: int, w: int) -> Units:
    """One (immutable, shared) unit per spatial position of an (h, w) map, labelled "(row,col)";
    cached because a 224 × 224 input has 50,176 of them."""
    return Units([Unit(i, f"({i // w},{i % w})") for i in range(h * w)])


def image_units(
    image: np.ndarray,
    units: UnitSpec = "patches",
    *,
    patch: int | None = None,
    n_segments: int = 50,
    compactness: float = 10.0,
    baseline: str | np.ndarray = "blur",
    blur_sigma: float = 10.0,
) -> ImageUnits:
    """Split a display image into units: ``"patches"`` (``patch`` px squares; default
    min(H, W) // 14, i.e. 16 px at 224 and a 14 × 14 grid), ``"superpixels"``
    (SLIC from scikit-image, about ``n_segments`` regions), ``"pixels"``, an (H, W) integer label
    map, or ready :class:`ImageUnits`. A removed unit takes the ``baseline`` image (``"blur"``,
    ``"mean"``, ``"zero"`` or an array). No model call."""
    if isinstance(units, ImageUnits):
        return units
    kw: dict[str, Any] = {"baseline": baseline, "blur_sigma": blur_sigma}
    if isinstance(units, np.ndarray):
        return ImageUnits(image, units, **kw)
    if units is None or units == "patches":
        return ImageUnits.grid(image, patch or max(1, min(image.shape[:2]) // 14), **kw)
    if units == "pixels":
        return ImageUnits.grid(image, 1, **kw)
    if units == "superpixels":
        try:
            from skimage.segmentation import slic
        except ImportError as e:  # pragma: no cover - scikit-image is a dependency
            raise InputError("superpixel units need scikit-image: pip install scikit-image") from e
        seg = slic(
            image, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1
        )
        return ImageUnits(image, seg, **kw)
    raise InputError(
        f"unknown units {units!r}: use 'patches', 'superpixels', 'pixels', an (H, W) label map "
        "or ImageUnits"
    )


class ImageTask(CostMeter, Task):
    """One image, one image classifier, one target class (task kind ``"image"``: the image
    methods, and every perturbation method over image units).

    Args:
        model: an :class:`ImageClassifier` (``attribkit.load("efficientnet-lite0")`` or any
            torch module wrapped with its preprocessing).
        image: an (H, W[, C]) array (uint8 or float in [0, 1]; greyscale and RGBA are converted),
            a PIL image or a file path; it is resized and centre-cropped as the model expects.
        target: a class index, a label, or None for the predicted class.
        output: what methods explain by default: ``"prob"``, ``"logit"`` or ``"logprob"``.

    Building it costs one forward pass (to find the predicted class, or the class count of a
    model without labels); a given target of a labelled model costs none. ``cost`` counts every
    image the task sends through the model: the task is its own :attr:`meter`.
    """

    kind = "image"

    def __init__(
        self,
        model: ImageClassifier,
        image: Any,
        target: int | str | None = None,
        output: str = "prob",
    ) -> None:
        super().__init__()
        if not isinstance(model, ImageClassifier):
            if isinstance(model, (torch.nn.Module, TorchClassifier)):
                raise InputError(
                    "wrap a torch image model with its preprocessing first: "
                    "attribkit.models.ImageClassifier(module, input_size=224, normalize='imagenet', "
                    "labels=...) — or use attribkit.load('efficientnet-lite0')"
                )
            raise InputError(
                f"attribute_image needs an ImageClassifier, got {type(model).__name__}"
            )
        if output not in OUTPUTS:
            raise InputError(f"unknown output {output!r}: use 'prob', 'logit' or 'logprob'")
        self.model, self.output = model, output
        self.image = model.prepare(image)
        self._full_logits: np.ndarray | None = None
        self._layers: dict[tuple[str | None, str | None], Any] = {}
        if target is None or model.labels is None:  # the class count comes from the model
            row = self.full_logits
        else:  # a named or numbered class of a model with labels: checked without a pass
            row = np.zeros(len(model.labels))
        self.target = model._resolve_target(target, row)
        self.target_info = model._target_dict(self.target, output, predicted=target is None)

    @property
    def full_logits(self) -> np.ndarray:
        """The model's (C,) logits on the whole image (one forward pass, the first time)."""
        if self._full_logits is None:
            with torch.inference_mode():
                logits = self.logits(self.tensor(self.image[None]), grad=False)[0]
            self._full_logits = logits.numpy()
        return self._full_logits

    @property
    def full_probs(self) -> np.ndarray:
        """Class probabilities on the whole image (see :attr:`full_logits`)."""
        z = self.full_logits - self.full_logits.max()
        return np.exp(z) / np.exp(z).sum()

    @property
    def predicted(self) -> int:
        """The class the model predicts on the whole image."""
        return int(np.argmax(self.full_logits))

    # -- shapes and inputs ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the display image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def __repr__(self) -> str:
        return (
            f"ImageTask({self.model.name}, {self.shape[0]}x{self.shape[1]}, "
            f"target={self.target} {self.model.label(self.target)!r}, output={self.output!r})"
        )

    def tensor(self, images: Any) -> torch.Tensor:
        """Display images (B, H, W, 3) → the module's input batch on its device (no model call)."""
        return self.model._prepare(self.model.to_tensor(images))

    def logits(self, x: torch.Tensor, grad: bool = False, count: bool = True) -> torch.Tensor:
        """The module's (B, C) logits for a model-input batch ``x`` (see :meth:`tensor`), checked
        finite; detached float64 on the CPU unless ``grad``. One forward pass per row, counted on
        the task unless ``count=False``."""
        with torch.set_grad_enabled(grad):
            out = self.model._logits(x)
        if not torch.isfinite(out).all():
            raise ScorerError(
                f"{self.model.name} returned non-finite logits (NaN or inf) for an input batch; "
                "check the model's weights and the input"
            )
        if count:  # gradient scorers count their own rows (they share this task's Cost)
            self.cost.forward_passes += x.shape[0]
            self.cost.batches += 1
        return out if grad else out.detach().double().cpu()

    def transform(self, logits: torch.Tensor, output: str | None = None) -> torch.Tensor:
        """``output`` (default: the task's) of the target class for a (B, C) logit batch → (B,)."""
        return TorchClassifier._transform(logits, output or self.output)[:, self.target]

    def baseline_image(
        self, baseline: str | np.ndarray = "blur", blur_sigma: float = 10.0
    ) -> np.ndarray:
        """The (H, W, 3) reference image: ``"blur"`` (Gaussian, ``blur_sigma`` px), ``"mean"``
        (mean colour), ``"zero"`` (black) or a given array."""
        return ImageUnits._baseline(self.image, baseline, blur_sigma).astype(np.float32)

    # -- model evaluations ---------------------------------------------------------------------
    def values(self, images: Any, output: str | None = None) -> np.ndarray:
        """The target's ``output`` for each display image in ``images`` ((B, H, W, 3) in [0, 1],
        array or tensor) → (B,) float64. One forward pass per image, batched."""
        n = len(images)
        if n == 0:
            raise InputError("no images to evaluate")
        outs = []
        with self.timed(), torch.inference_mode():
            for s in range(0, n, self.model.batch_size):
                x = self.tensor(images[s : s + self.model.batch_size])
                outs.append(self.transform(self.logits(x, grad=False), output))
        return torch.cat(outs).numpy()

    def blend(self, masks: Any, baseline: str | np.ndarray = "blur") -> np.ndarray:
        """Images that keep the image where ``masks`` (B, H, W) is 1 and show ``baseline`` where it
        is 0 (soft masks blend): (B, H, W, 3) float32. No model call."""
        m = np.asarray(masks, dtype=np.float32)
        if m.ndim == 2:
            m = m[None]
        if m.shape[1:] != self.shape:
            raise InputError(f"masks of shape {m.shape[1:]} do not match the image {self.shape}")
        base = self.baseline_image(baseline) if isinstance(baseline, str) else np.asarray(baseline)
        return m[..., None] * self.image[None] + (1.0 - m[..., None]) * base[None]

    def mask_values(
        self, masks: Any, baseline: str | np.ndarray = "blur", output: str | None = None
    ) -> np.ndarray:
        """:meth:`values` of :meth:`blend` (masks, baseline), built chunk by chunk to bound memory.
        One forward pass per mask."""
        masks = np.asarray(masks, dtype=np.float32)
        base = self.baseline_image(baseline) if isinstance(baseline, str) else baseline
        step = max(self.model.batch_size, 1)
        return np.concatenate(
            [
                self.values(self.blend(masks[s : s + step], base), output)
                for s in range(0, len(masks), step)
            ]
        )

    # -- layers (ML-Att) -----------------------------------------------------------------------
    def layer_input(
        self, layer: str | None = "input", output: str | None = None
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """``(a, f)``: the representation at ``layer`` of this image (the model-input tensor
        (3, H, W) for ``"input"``, else the layer's activations (C, h, w)) and a differentiable
        batched ``f(batch) -> (B,)`` that runs the rest of the model from there (``f`` does not
        count its passes: wrap it in a GradientScorer, which does). Costs nothing at the input,
        two forward passes at a layer the first time (one counts the layer's calls, one reads
        it); the result is kept for later calls."""
        name = self.model.resolve_layer(layer)
        key = (name, output)
        if key in self._layers:  # probed before: the activations of this image do not change
            return self._layers[key]
        self._layers[key] = self._layer_input(name, output)
        return self._layers[key]

    def _layer_input(
        self, name: str | None, output: str | None
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        x = self.tensor(self.image[None])
        if name is None:

            def f_input(xb: torch.Tensor) -> torch.Tensor:
                return self.transform(self.logits(xb, torch.is_grad_enabled(), False), output)

            return x[0], f_input
        module = self.model.get_layer(name)
        calls = layer_hooks.count_calls(module, lambda: self.model.module(x))
        with layer_hooks.capture(module) as store, torch.no_grad():
            self.model.module(x)
        self.cost.forward_passes += 2
        acts = store["out"][0].detach()
        if acts.ndim != 3:
            raise InputError(
                f"layer {name!r} outputs shape {tuple(store['out'].shape)}; layer methods need a "
                "convolutional layer with (batch, channels, height, width) output"
            )

        def f_layer(ab: torch.Tensor) -> torch.Tensor:
            xb = x.expand(ab.shape[0], *x.shape[1:])
            with layer_hooks.replace(module, ab, calls):
                return self.transform(self.logits(xb, torch.is_grad_enabled(), False), output)

        return acts, f_layer

    def layer_mask_values(
        self, layer: str | None, masks: Any, output: str | None = None
    ) -> tuple[float, np.ndarray]:
        """Perturbation at a layer (ML-Att): ``(f(a), f(a ⊙ m) for each mask)`` where ``a`` are
        the activations at ``layer`` and each (h, w) mask in ``masks`` (B, h, w) scales every
        channel at a position (0 = the activation is zeroed). Costs 2 probe passes, then
        B + 1 forward passes, batched."""
        a, f = self.layer_input(layer, output)
        m = torch.as_tensor(np.asarray(masks, dtype=np.float32))
        if m.ndim != 3 or tuple(m.shape[1:]) != tuple(a.shape[1:]):
            raise InputError(
                f"layer masks must have shape (B, {a.shape[1]}, {a.shape[2]}), got {tuple(m.shape)}"
            )
        step = self.model.batch_size
        batches = [a[None]] + [
            a[None] * m[s : s + step, None].to(a) for s in range(0, len(m), step)
        ]
        outs = []
        with self.timed(), torch.inference_mode():
            for batch in batches:  # the unperturbed activations first
                outs.append(f(batch).double().cpu())
                self.cost.forward_passes += len(batch)
                self.cost.batches += 1
        values = torch.cat(outs).numpy()
        return float(values[0]), values[1:]

    def gradient_scorer(
        self,
        layer: str | None = "input",
        output: str | None = None,
        baseline: str | np.ndarray | torch.Tensor | None = None,
    ) -> GradientScorer:
        """A :class:`GradientScorer` on the representation at ``layer`` whose units are its
        spatial positions (pixels at the input, cells at a layer; channels summed).

        ``baseline`` (input layer): None = the model-input zero tensor (Captum's default),
        ``"black"``/``"blur"``/``"mean"`` = that display image, or an array/tensor; at a layer
        the baseline is zero activations. Building it costs 1–2 forward passes.
        """
        a, f = self.layer_input(layer, output)
        c, h, w = a.shape
        base = None
        if baseline is not None:
            if self.model.resolve_layer(layer) is not None:
                raise InputError("a baseline can only be given at the input layer")
            if isinstance(baseline, torch.Tensor):
                base = baseline
            else:
                kind = "zero" if isinstance(baseline, str) and baseline == "black" else baseline
                base = self.tensor(self.baseline_image(kind)[None])[0]
        index = torch.arange(h * w).reshape(1, h, w).expand(c, h, w)
        gs = GradientScorer(
            f,
            a,
            baseline=base,
            unit_index=index,
            units=_positions(h, w),
            target=self.target_info,
            batch_size=self.model.batch_size,
        )
        gs.cost = self.cost  # one meter: the task counts what its scorers spend
        return gs

    # -- the task contract ----------------------------------------------------------------------
    @property
    def meter(self) -> CostMeter:
        """The task itself: every image it sends through the model is counted on it."""
        return self

    @functools.cached_property
    def units(self) -> ImageUnits:  # type: ignore[override]
        """The default units: patches of min(H, W) // 14 px (16 px at 224). No model calls."""
        return self.make_units("patches")

    def make_units(self, units: UnitSpec = "patches", **kw: Any) -> ImageUnits:
        """:func:`image_units` of this image (``"patches"``, ``"superpixels"``, ``"pixels"``, a
        label map or ImageUnits; ``kw``: patch, n_segments, compactness, blur_sigma, baseline)."""
        return image_units(self.image, units, **kw)

    def prepare(self, spec: MethodSpec, params: dict[str, Any]) -> None:
        """Unit options (``patch``, ``n_segments``...) given to an image method become its
        ``units``."""
        unit_kw = {k: params.pop(k) for k in UNIT_OPTIONS if k in params}
        if spec.kind == "image" and unit_kw:
            given = params.get("units")
            params["units"] = self.make_units("patches" if given is None else given, **unit_kw)
        elif unit_kw:
            params["_unit_options"] = unit_kw

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """A :meth:`scorer` over ``params['units']`` (default patches) built with the unit
        options given; for a unit method ``baseline`` is what a removed unit shows."""
        unit_kw = params.pop("_unit_options", {})
        if "baseline" in params:
            unit_kw["baseline"] = params.pop("baseline")
        return self.scorer(self.make_units(params.pop("units", None), **unit_kw))

    def unit_result(self, attribution: Attribution, scorer: Scorer) -> Attribution:
        """The unit method's scores as an image Attribution: each unit's score spread over its
        pixels is the map. No model calls."""
        a, u = attribution, scorer.units
        hm = u.heatmap(np.nan_to_num(a.vector))  # type: ignore[attr-defined]
        return self.result(
            hm, a.method, a.params, a.cost, units=u, unit_scores=a.scores, **a.extras
        )

    def scorer(self, units: Units, output: str | None = None, **scorer_kw: Any) -> Scorer:
        """A mask :class:`Scorer` over ``units`` valued by the target's ``output``; its passes
        are also counted on the task."""
        out = output or self.output

        def value(batch: Any) -> np.ndarray:
            return self.values(np.asarray(batch, dtype=np.float32), out)

        target = dict(self.target_info, kind="class_" + out, output=out)
        return Scorer(
            units,
            value,
            target=target,
            batch_size=self.model.batch_size,
            meter=self,
            task_kind=self.kind,
            **scorer_kw,
        )

    def upsample(self, cell_map: Any) -> np.ndarray:
        """An (h, w) map resized bilinearly to the image's (H, W) (as Rao et al. do for layer
        attributions); a map already at (H, W) is returned as float64."""
        return upsample_map(cell_map, self.shape)

    def result(
        self,
        heatmap: Any,
        method: str,
        params: dict[str, Any],
        cost: Cost,
        units: UnitSpec = None,
        unit_scores: np.ndarray | None = None,
        **extras: Any,
    ) -> Attribution:
        """The Attribution of a map: ``heatmap`` ((h, w), upsampled to the image) is its
        ``image_map`` (read it as ``attribution.heatmap``); unit scores are
        ``unit_scores`` when the method scored units, else the heatmap summed over each unit
        (default units: patches of min(H, W) // 14 px, 16 px at 224)."""
        u = (
            self.units
            if units is None or (isinstance(units, str) and units == "patches")
            else self.make_units(units)
        )
        if len(u) < 2:
            raise InputError(
                f"only {len(u)} unit: attribution ranks units against each other; use smaller "
                "patches (patch=...), superpixels or pixels"
            )
        hm = self.upsample(heatmap)
        if unit_scores is None:
            unit_scores = np.bincount(u.segments.ravel(), weights=hm.ravel(), minlength=len(u))
        inp = dict(u.to_dict(), image=self.image)  # PNG-encoded when saved
        return Attribution(
            units=list(u.units),
            scores=np.asarray(unit_scores, dtype=float),
            method=method,
            target=self.target_info,
            params=params,
            cost=cost,
            input=inp,
            extras=extras,
            task=self.kind,
            image_map=hm,
        )


def upsample_map(cell_map: Any, shape: tuple[int, int]) -> np.ndarray:
    """An (h, w) map resized bilinearly to ``shape`` (H, W), float64; a map already at (H, W)
    is returned as it is. No model call."""
    m = torch.as_tensor(np.asarray(cell_map, dtype=np.float64))
    if m.ndim != 2:
        raise InputError(f"a map must be 2-D (h, w), got shape {tuple(m.shape)}")
    if tuple(m.shape) == tuple(shape):
        return m.numpy()
    up = F.interpolate(m[None, None], size=tuple(shape), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def attribute_image(
    model: ImageClassifier,
    image: Any,
    target: int | str | None = None,
    method: str = "grad_cam",
    units: UnitSpec = None,
    *,
    output: str | None = None,
    progress: bool = False,
    **params: Any,
) -> Attribution:
    """Explain ``model``'s ``target`` class (None: the predicted class) on ``image`` with
    ``method``; returns an Attribution whose ``heatmap`` is the 2-D map at the model's input
    resolution and whose units are ``units`` (default 16-px patches at 224 px; ``"superpixels"``,
    ``"pixels"``, a label map or ImageUnits).

    ``method`` is an image method (``attribkit methods --kind image``: saliency,
    input_x_gradient, integrated_gradients, smoothgrad, grad_cam, ... — most take ``layer=``,
    ``"input"`` by default, ``"middle"``/``"final"`` or any module name) or any perturbation
    method over units (``occlusion``, ``kernel_shap``, ``lime``, ``rise``, ``shapley``...).
    ``output`` defaults to the logit for gradient and CAM methods and to the probability
    otherwise. Unit options ``patch``, ``n_segments``, ``compactness`` and ``blur_sigma`` go to
    :func:`image_units` (and, for a unit method, ``baseline``: what a removed unit shows).
    ``result.cost`` is what the method cost; resolving the target takes one more forward pass.
    """
    spec = method_for_images(method)
    task = ImageTask(model, image, target, output=output or default_output(spec))
    if units is not None:
        params["units"] = units
    return attribute(task, method, progress=progress, **params)  # type: ignore[no-any-return]


def method_for_images(method: str) -> MethodSpec:
    """The image method ``method``, else the perturbation method of that name (which runs over
    image units); InputError listing both otherwise. No model calls."""
    try:
        return get_method(method, kind="image")
    except InputError:
        try:
            return get_method(method, kind="perturbation")
        except InputError:
            pass
    from attribkit.core.registry import list_methods

    names = sorted({s.name for s in list_methods() if s.kind in ("image", "perturbation")})
    raise InputError(
        f"unknown image method {method!r}; use an image method or a perturbation method over "
        f"units: {', '.join(names)}"
    )


def default_output(spec: MethodSpec) -> str:
    """What a method explains by default on images: its declared ``output``, else the logit for
    image methods (gradients, CAMs) and the probability for perturbation methods."""
    fallback = "logit" if spec.kind == "image" else "prob"
    return str(spec.defaults.get("output", fallback))
