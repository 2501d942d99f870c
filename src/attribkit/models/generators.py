"""Toy image generators ("model instances") for open-set model attribution.

The data of the model-attribution papers (POSE's benchmark of GANs and diffusion models trained
with different seeds, architectures and data sets) cannot be had here, so this module builds a
small real substitute with the same structure, on patches of the photos bundled with
scikit-image and scikit-learn (no download):

* an **architecture** is a fixed down-sample-by-2 (2x2 average pooling) followed by an up-sampler:
  ``"nearest"`` or ``"bilinear"`` (the two known families), ``"bicubic"`` or ``"transposed"``
  (a fixed stride-2 3x3 transposed convolution whose uneven overlap leaves the checkerboard trace
  of GAN up-samplers) for the unseen-architecture scenario;
* a **model instance** is an architecture plus a seed: after the up-sampling a seeded random 3x3
  convolution is added as a small residual, ``y = x + eps * conv_seed(x)``; the seed chooses the
  kernel (zero-mean, unit norm, mixing the three channels), so two instances of one architecture
  differ only by an imperceptible high-frequency trace, as two GANs trained with different seeds;
* ``"real"`` leaves the patch as it is (the real images as one more source).

Everything is deterministic given the seeds; the generators are plain torch operations on CPU
(no model calls to count). Used by :func:`attribkit.evaluation.image_provenance.image_provenance_study`
(Yang et al., "Progressive Open Space Expansion for Open-Set Model Attribution", CVPR 2023).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.errors import InputError

__all__ = [
    "ARCHITECTURES",
    "ToyGenerator",
    "bundled_photos",
    "check_images",
    "photo_patches",
    "toy_source_dataset",
]

#: the up-samplers; ``"real"`` is the identity (unprocessed patches).
ARCHITECTURES = ("nearest", "bilinear", "bicubic", "transposed", "real")

#: bundled photos used for patches: scikit-image's files shipped in its wheel (no pooch fetch)
#: and scikit-learn's two sample images. Mostly-flat ones (moon, cell, clock) are left out.
_SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "page",
    "text",
)
#: a patch whose pixel standard deviation is below this is flat (sky, black border) and skipped
_MIN_PATCH_STD = 0.03
#: 1-D taps of the "transposed" up-sampler (a bilinear kernel would be 0.5, 1, 0.5): even output
#: pixels get 1.0 * x, odd ones 0.55 * (x_i + x_i+1), a ~10 % checkerboard.
_TRANSPOSED_TAPS = (0.55, 1.0, 0.55)


def check_images(images: object, *, name: str = "images", even: bool = False) -> np.ndarray:
    """``images`` as a float32 (N, H, W, 3) array in [0, 1], or an :class:`InputError` saying what
    is wrong (type, dtype, shape, range, non-finite values; odd sides when ``even``). Costs no
    model calls."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise InputError(
            f"{name} must be a numpy array of shape (N, H, W, 3), got {type(images).__name__}"
        )
    if images.dtype.kind != "f":
        raise InputError(
            f"{name} must be float in [0, 1] (got dtype {images.dtype}); "
            "convert uint8 with images.astype(np.float32) / 255"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(
            f"{name} must have shape (N, H, W, 3) (channels last, RGB), got {images.shape}"
        )
    n, h, w, _ = images.shape
    if n == 0:
        raise InputError(f"{name} is empty (N = 0)")
    if min(h, w) < 8:
        raise InputError(f"{name} are too small ({h}x{w}); give at least 8x8 pixels")
    if even and (h % 2 or w % 2):
        raise InputError(f"{name} need even sides for the 2x down/up-sampling, got {h}x{w}")
    if not np.isfinite(images).all():
        raise InputError(f"{name} contain NaN or infinite values")
    if images.min() < -1e-6 or images.max() > 1 + 1e-6:
        raise InputError(
            f"{name} must lie in [0, 1] (got {images.min():.3g} .. {images.max():.3g}); "
            "divide uint8 values by 255"
        )
    return np.ascontiguousarray(images, dtype=np.float32)


@functools.cache
def bundled_photos() -> tuple[np.ndarray, ...]:
    """The bundled photos as float32 (H, W, 3) arrays in [0, 1] (greyscale ones repeated to three
    channels): scikit-image's sample photos shipped in its wheel and scikit-learn's
    ``load_sample_images()``. No network; loaded once per process."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    raw = [getattr(skimage.data, name)() for name in _SKIMAGE_PHOTOS]
    raw += list(load_sample_images().images)
    out = []
    for im in raw:
        im = np.asarray(im, dtype=np.float32) / 255.0
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(im[:, :, :3]))
    return tuple(out)


@functools.cache
def _tiles(size: int) -> np.ndarray:
    """(photo index, y, x) of every non-overlapping, non-flat size x size tile, in a fixed order."""
    rows = []
    for i, im in enumerate(bundled_photos()):
        h, w = im.shape[:2]
        for y in range(0, h - size + 1, size):
            for x in range(0, w - size + 1, size):
                if im[y : y + size, x : x + size].std() > _MIN_PATCH_STD:
                    rows.append((i, y, x))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def photo_patches(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` distinct, non-overlapping ``size`` x ``size`` patches of the bundled photos, drawn in
    a seeded random order: float32 (n, size, size, 3) in [0, 1]. Raises :class:`InputError` when
    the photos hold fewer than ``n`` such tiles (about 1,300 at 64 px, 5,100 at 32 px). No model
    calls."""
    if not isinstance(size, (int, np.integer)) or size < 8 or size % 2:
        raise InputError(f"size must be an even integer >= 8, got {size!r}")
    tiles = _tiles(int(size))
    if n > len(tiles):
        raise InputError(
            f"asked for {n} disjoint {size}px patches but the bundled photos hold only "
            f"{len(tiles)}; ask for fewer images or a smaller size"
        )
    order = np.random.default_rng(seed).permutation(len(tiles))[:n]
    photos = bundled_photos()
    out = np.empty((n, size, size, 3), dtype=np.float32)
    for j, (i, y, x) in enumerate(tiles[order]):
        out[j] = photos[i][y : y + size, x : x + size]
    return out


def _seed_kernel(seed: int) -> torch.Tensor:
    """The instance's (3, 3, 3, 3) kernel: normal entries, zero mean and unit norm per output
    channel (a high-pass filter mixing the channels), chosen by ``seed`` alone."""
    g = torch.Generator().manual_seed(int(seed))
    k = torch.randn((3, 3, 3, 3), generator=g, dtype=torch.float32)
    k = k - k.mean(dim=(1, 2, 3), keepdim=True)
    return k / k.flatten(1).norm(dim=1).view(3, 1, 1, 1)


@dataclass(frozen=True)
class ToyGenerator:
    """One toy "model instance": architecture ``arch`` (one of :data:`ARCHITECTURES`) and
    ``seed`` (chooses the residual kernel), with residual strength ``eps``.

    ``gen(patches)`` maps real patches, float (N, H, W, 3) in [0, 1] with even H and W, to the
    instance's images of the same shape (clipped to [0, 1]); ``gen.name`` is e.g.
    ``"bilinear-s3"`` (``"real"`` for the identity). Deterministic; costs no model calls.
    """

    arch: str
    seed: int = 0
    eps: float = 0.2

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise InputError(f"unknown architecture {self.arch!r}; choose one of {ARCHITECTURES}")
        if not np.isfinite(self.eps) or self.eps < 0:
            raise InputError(f"eps must be a finite number >= 0, got {self.eps!r}")

    @property
    def name(self) -> str:
        """A readable name: ``"<arch>-s<seed>"``, or ``"real"``."""
        return "real" if self.arch == "real" else f"{self.arch}-s{self.seed}"

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """The images this instance generates from ``patches``: float32 (N, H, W, 3) in [0, 1]."""
        x = check_images(patches, name="patches", even=True)
        if self.arch == "real":
            return x.copy()
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        with torch.no_grad():
            y = _upsample(F.avg_pool2d(t, 2), self.arch)
            if self.eps > 0:
                y = y + self.eps * F.conv2d(
                    F.pad(y, (1, 1, 1, 1), mode="reflect"), _seed_kernel(self.seed)
                )
        return np.ascontiguousarray(y.clamp(0, 1).permute(0, 2, 3, 1).numpy())


def _upsample(low: torch.Tensor, arch: str) -> torch.Tensor:
    if arch in ("bilinear", "bicubic"):
        return F.interpolate(low, scale_factor=2, mode=arch, align_corners=False)
    if arch == "nearest":
        return F.interpolate(low, scale_factor=2, mode="nearest")
    taps = torch.tensor(_TRANSPOSED_TAPS, dtype=low.dtype)
    kernel = torch.outer(taps, taps).expand(3, 1, 3, 3).contiguous()
    # stride 2, padding 1, output_padding 1: (h, w) -> (2h, 2w); depthwise (groups = 3)
    return F.conv_transpose2d(low, kernel, stride=2, padding=1, output_padding=1, groups=3)


def toy_source_dataset(
    generators: Sequence[ToyGenerator],
    n_per_source: int,
    size: int = 64,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images from each generator, each on its own disjoint patches (no patch is seen by two
    sources, so content cannot give the source away).

    Returns ``(images, labels, names)``: images float32 (len(generators) * n_per_source, size,
    size, 3) in [0, 1], grouped by source in the given order; labels int64, the generator's index;
    names, the generators' names. Deterministic in ``seed`` (which patches go where). Raises
    :class:`InputError` if the bundled photos hold too few patches. No model calls.
    """
    if not generators:
        raise InputError("give at least one generator")
    names = [g.name for g in generators]
    if len(set(names)) != len(names):
        raise InputError(f"the generators must be distinct, got {names}")
    if not isinstance(n_per_source, (int, np.integer)) or n_per_source < 1:
        raise InputError(f"n_per_source must be a positive integer, got {n_per_source!r}")
    n = int(n_per_source)
    patches = photo_patches(n * len(generators), size=size, seed=seed)
    images = np.concatenate([g(patches[i * n : (i + 1) * n]) for i, g in enumerate(generators)])
    labels = np.repeat(np.arange(len(generators), dtype=np.int64), n)
    return images, labels, names
