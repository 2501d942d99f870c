"""A minimal PNG encoder (zlib only), so images can be stored and shown without Pillow."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

from attribkit.core.errors import InputError


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 1|3|4) image as uint8; floats in [0, 1] are scaled by 255, other
    floats are min-max scaled."""
    img = np.asarray(image)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise InputError(f"an image must be (H, W) or (H, W, 1|3|4), got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    img = img.astype(float)
    if not np.isfinite(img).all():
        raise InputError("the image has NaN or infinite pixels")
    lo, hi = float(img.min()), float(img.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.round(img * 255).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.round(img).astype(np.uint8)
    return np.round((img - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG file bytes of an image (see :func:`to_uint8` for the accepted arrays)."""
    img = to_uint8(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    h, w = img.shape[:2]
    color = 0 if img.ndim == 2 else {3: 2, 4: 6}[img.shape[2]]  # grey, RGB, RGBA
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def png_data_url(image: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URL of an image."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
