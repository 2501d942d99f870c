"""Held-out face-detection scenes with ground truth, from data shipped in wheels.

Each scene pastes one of the 100 faces or 100 non-faces of scikit-image's ``data.lfw_subset()``
(25×25 greyscale crops of Labeled Faces in the Wild), min–max stretched and resized to 56–100 px,
at a random place on a random crop of a bundled photo (scikit-image's and scikit-learn's sample
photos without people), resized to ``size``². The pasted square is the ground-truth box. With
BlazeFace they give natural correct detections, missed faces and false alarms on non-faces: the
cases detection attribution explains. No network, no model call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.errors import InputError

__all__ = ["FACE_SCENE_PHOTOS", "FaceScene", "face_scenes"]

#: background photos: scikit-image files shipped in its wheel, then scikit-learn's two sample
#: images; photos with a person (astronaut, camera) are left out so that the pasted patch is the
#: only face.
FACE_SCENE_PHOTOS = (
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "china.jpg",
    "flower.jpg",
)
LABELS = ("face", "non-face")


@dataclass(frozen=True)
class FaceScene:
    """One scene: ``image`` (size, size, 3) float32 in [0, 1], ``box`` (x1, y1, x2, y2) of the
    pasted patch in pixels, ``label`` ``"face"`` or ``"non-face"``, ``lfw_index`` (0–99 faces,
    100–199 non-faces of ``lfw_subset()``), ``photo`` (the background's name) and ``index`` (the
    scene's number within its label: scene ``i`` of a label depends only on ``seed`` and ``i``)."""

    image: np.ndarray
    box: tuple[float, float, float, float]
    label: str
    lfw_index: int
    photo: str
    index: int

    @property
    def is_face(self) -> bool:
        return self.label == "face"


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    import skimage.data
    from sklearn.datasets import load_sample_image

    out = []
    for name in FACE_SCENE_PHOTOS:
        im = load_sample_image(name) if name.endswith(".jpg") else getattr(skimage.data, name)()
        im = np.asarray(im, dtype=np.float32) / 255.0
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(im[:, :, :3]))
    return tuple(out)


@functools.cache
def _lfw() -> np.ndarray:
    from skimage.data import lfw_subset

    return np.asarray(lfw_subset(), dtype=np.float32)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous().numpy()


def _scene(i: int, label: str, seed: int, size: int, min_px: int, max_px: int) -> FaceScene:
    rng = np.random.default_rng([seed, LABELS.index(label), i])
    p = int(rng.integers(len(FACE_SCENE_PHOTOS)))
    photo = _photos()[p]
    h, w = photo.shape[:2]
    side = round(min(h, w) * float(rng.uniform(0.5, 1.0)))
    y0, x0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    image = _resize(photo[y0 : y0 + side, x0 : x0 + side], size, size)
    lfw_index = i + (0 if label == "face" else 100)
    patch = _lfw()[lfw_index]
    lo, hi = float(patch.min()), float(patch.max())
    patch = (patch - lo) / (hi - lo) if hi > lo else np.zeros_like(patch)
    s = int(rng.integers(min_px, max_px + 1))
    patch = _resize(np.repeat(patch[:, :, None], 3, axis=2), s, s)
    y, x = int(rng.integers(size - s + 1)), int(rng.integers(size - s + 1))
    image[y : y + s, x : x + s] = patch
    box = (float(x), float(y), float(x + s), float(y + s))
    return FaceScene(image, box, label, lfw_index, FACE_SCENE_PHOTOS[p], i)


def face_scenes(
    n: int = 100,
    seed: int = 0,
    *,
    label: str = "both",
    size: int = 256,
    min_px: int = 56,
    max_px: int = 100,
) -> list[FaceScene]:
    """``n`` scenes per label: ``label="face"`` (LFW faces 0..n−1), ``"non-face"`` (non-faces
    0..n−1) or ``"both"`` (the n face scenes, then the n non-face scenes). Each scene is an
    ``size``² crop of a bundled photo with the patch pasted at ``min_px``–``max_px`` pixels.
    Reproducible: scene ``i`` depends only on ``(seed, label, i)``. No model call.
    """
    if label not in (*LABELS, "both"):
        raise InputError(f"label must be 'face', 'non-face' or 'both', got {label!r}")
    if not 1 <= n <= 100:
        raise InputError(f"lfw_subset() has 100 faces and 100 non-faces: n must be 1..100, got {n}")
    if not 8 <= min_px <= max_px <= size:
        raise InputError(
            f"need 8 <= min_px <= max_px <= size, got min_px={min_px}, max_px={max_px}, size={size}"
        )
    labels = LABELS if label == "both" else (label,)
    return [_scene(i, lab, seed, size, min_px, max_px) for lab in labels for i in range(n)]
