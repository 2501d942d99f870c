"""Image attribution maps as pictures: a colour map, overlays on the image, PNG files.

No matplotlib needed: the colour map is a small piecewise-linear table and PNGs come from
:mod:`attribkit.core.png`.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.core.png import png_bytes

__all__ = ["colorize", "image_of", "overlay", "save_overlay"]

# (position, r, g, b): dark blue → cyan → yellow → red, readable on photos (a "turbo"-like map).
_STOPS = np.array(
    [
        [0.00, 0.19, 0.07, 0.23],
        [0.25, 0.16, 0.47, 0.93],
        [0.50, 0.10, 0.86, 0.66],
        [0.75, 0.98, 0.73, 0.22],
        [1.00, 0.48, 0.02, 0.01],
    ]
)


def colorize(values: Any, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 picture of a 2-D map: values scaled to [vmin, vmax] (default: the
    map's 0.5th–99.5th percentiles; NaN shows as grey), through a blue-to-red colour map."""
    m = np.asarray(values, dtype=float)
    if m.ndim != 2:
        raise InputError(f"a map to colour must be 2-D, got shape {m.shape}")
    finite = m[np.isfinite(m)]
    lo = float(np.percentile(finite, 0.5)) if vmin is None and finite.size else (vmin or 0.0)
    hi = float(np.percentile(finite, 99.5)) if vmax is None and finite.size else (vmax or 1.0)
    t = np.clip((m - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = np.stack([np.interp(t, _STOPS[:, 0], _STOPS[:, c]) for c in (1, 2, 3)], axis=-1)
    rgb[~np.isfinite(m)] = 0.5
    return np.round(rgb * 255).astype(np.uint8)


def overlay(image: Any, heatmap: Any, alpha: float = 0.5, positive_only: bool = True) -> np.ndarray:
    """The image with the heatmap blended on top ((H, W, 3) uint8). With ``positive_only``
    the colour scale runs from 0 to the 99.5th percentile of the positive part (the usual view
    of "evidence for the class"); the heatmap must have the image's height and width."""
    img = np.asarray(image, dtype=float)
    if img.dtype != np.uint8 and img.max() > 1.0:
        img = img / 255.0
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    hm = np.asarray(heatmap, dtype=float)
    if hm.shape != img.shape[:2]:
        raise InputError(f"heatmap of shape {hm.shape} does not match the image {img.shape[:2]}")
    if positive_only:
        pos = np.clip(np.nan_to_num(hm), 0.0, None)
        top = float(np.percentile(pos, 99.5)) if pos.any() else 1.0
        colours = colorize(pos, 0.0, top).astype(float) / 255.0
    else:
        colours = colorize(hm).astype(float) / 255.0
    out = (1.0 - alpha) * img[:, :, :3] + alpha * colours
    return np.round(np.clip(out, 0.0, 1.0) * 255).astype(np.uint8)


def image_of(attribution: Any) -> np.ndarray:
    """The display image stored in an image Attribution (``input['image']``, or
    ``input['image_png']`` once saved and loaded), (H, W, 3)."""
    inp = getattr(attribution, "input", None) or {}
    if isinstance(inp.get("image"), np.ndarray):
        return inp["image"]
    url = inp.get("image_png")
    if not url:
        raise InputError("this attribution stores no image; pass the image explicitly")
    from PIL import Image

    data = base64.b64decode(url.split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def save_overlay(
    attribution: Any, path: str | os.PathLike[str], image: Any = None, alpha: float = 0.5
) -> Path:
    """Write the attribution's heatmap over its image (the stored one by default) as a PNG.
    Returns the path."""
    img = image_of(attribution) if image is None else image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(overlay(img, attribution.heatmap, alpha=alpha)))
    return path
