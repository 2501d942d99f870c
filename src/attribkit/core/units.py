"""Units: an input split into the things that can be blamed, and how to rebuild it from a subset.

Every attribution method sees an input only through :class:`Units`: ``len(units)`` units, each a
:class:`Unit` (index, label, where it sits in the original input), and ``compose(mask)`` which
builds the input with the units where ``mask`` is True kept and the others *removed*. What
"removed" means is fixed per kind of unit and stated in its ``removal`` attribute:

- :class:`TextUnits` — the unit's text is deleted together with the separator that follows it
  (or replaced by a placeholder string when ``removal`` is given one);
- :class:`ArrayUnits` / :class:`FeatureUnits` — the elements take their baseline value (0, a
  mean, any array): features, time segments, any grouping of an array;
- :class:`ImageUnits` — the region's pixels take the baseline image (blurred, mean colour, zeros).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.core.segment import paragraph_spans, sentence_spans


@dataclass(frozen=True)
class Unit:
    """One attributable unit.

    ``label`` is the unit's text for text units, its name for features, a short description for
    image regions. ``start``/``end`` are character offsets into the source text (text units);
    ``box`` is ``(top, left, bottom, right)`` in pixels (image units).
    """

    index: int
    label: str
    start: int | None = None
    end: int | None = None
    box: tuple[int, int, int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "label": self.label}
        if self.start is not None:
            d["start"], d["end"] = self.start, self.end
        if self.box is not None:
            d["box"] = list(self.box)
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        box = d.get("box")
        return cls(
            index=int(d["index"]),
            label=str(d["label"]),
            start=d.get("start"),
            end=d.get("end"),
            box=tuple(box) if box is not None else None,  # type: ignore[arg-type]
            meta=dict(d.get("meta") or {}),
        )


class Units:
    """Base class: a sequence of :class:`Unit` plus ``compose(mask)``.

    Subclasses implement ``compose``; ``compose_batch`` may be overridden when a vectorised
    version is cheaper.
    """

    kind: str = "generic"
    removal: str = "undefined"

    def __init__(self, units: Sequence[Unit]) -> None:
        self.units: list[Unit] = list(units)

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i: int) -> Unit:
        return self.units[i]

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} units, removal={self.removal!r})"

    @property
    def labels(self) -> list[str]:
        return [u.label for u in self.units]

    def check_masks(self, masks: Any) -> np.ndarray:
        """Return ``masks`` as a boolean array of shape (B, n); raise InputError if malformed."""
        arr = np.asarray(masks)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(self):
            raise InputError(
                f"mask of shape {np.asarray(masks).shape} does not fit {len(self)} units: "
                f"pass one boolean per unit, shape ({len(self)},) or (batch, {len(self)})"
            )
        if arr.dtype != bool:
            if not np.isin(arr, (0, 1)).all():
                raise InputError(
                    "masks must be boolean (or 0/1): True keeps a unit, False removes it"
                )
            arr = arr.astype(bool)
        return arr

    def compose(self, mask: np.ndarray) -> Any:
        """Return the input with the units where ``mask`` is True kept and the others removed."""
        raise NotImplementedError

    def compose_batch(self, masks: np.ndarray) -> list[Any]:
        """Compose every row of a (B, n) boolean mask array."""
        return [self.compose(m) for m in self.check_masks(masks)]

    def to_dict(self) -> dict[str, Any]:
        """What an Attribution stores about its input (JSON-serialisable)."""
        return {"kind": self.kind, "removal": self.removal}


class TextUnits(Units):
    """Spans of a text (sentences, passages, words, tokens...) with exact character offsets.

    Removal deletes a unit's text together with the separator that follows it, so removing the
    middle sentence of ``"A. B. C."`` gives ``"A. C."``. Pass ``removal="[...]"`` (any string
    other than ``"delete"``) to replace removed units by that placeholder instead.
    """

    kind = "text"

    def __init__(
        self, text: str, spans: Sequence[tuple[int, int]], removal: str = "delete"
    ) -> None:
        if not isinstance(text, str):
            raise InputError(f"text units need a string, got {type(text).__name__}")
        if not text.strip():
            raise InputError(
                "the text is empty: there is nothing to attribute; pass a non-empty context"
            )
        spans = [(int(s), int(e)) for s, e in spans]
        if not spans:
            raise InputError("no units were found in the text; check the splitter or pass spans")
        prev = 0
        for s, e in spans:
            if not (prev <= s < e <= len(text)):
                raise InputError(
                    f"span ({s}, {e}) is empty, out of range or overlaps the previous one; "
                    "spans must be increasing, non-overlapping and inside the text"
                )
            prev = e
        super().__init__([Unit(i, text[s:e], s, e) for i, (s, e) in enumerate(spans)])
        self.text = text
        self.removal = removal
        # Each unit owns the gap that follows it (up to the next unit, or the end of the text).
        bounds = [s for s, _ in spans[1:]] + [len(text)]
        self._pieces = [text[s:b] for (s, _), b in zip(spans, bounds, strict=True)]
        self._gaps = [text[e:b] for (_, e), b in zip(spans, bounds, strict=True)]
        self._prefix = text[: spans[0][0]]

    @classmethod
    def sentences(cls, text: str, removal: str = "delete") -> TextUnits:
        """Units = sentences, found by the offline rule-based splitter (no model calls)."""
        return cls(text, sentence_spans(text), removal)

    @classmethod
    def paragraphs(cls, text: str, removal: str = "delete") -> TextUnits:
        """Units = blank-line separated paragraphs."""
        return cls(text, paragraph_spans(text), removal)

    @classmethod
    def passages(
        cls, passages: Sequence[str], sep: str = "\n\n", removal: str = "delete"
    ) -> TextUnits:
        """Units = the given passages, joined by ``sep`` into one text."""
        passages = list(passages)
        if not passages or not any(p.strip() for p in passages):
            raise InputError("no passages given: pass a non-empty list of non-empty strings")
        spans, pos = [], 0
        for i, p in enumerate(passages):
            if not p.strip():
                raise InputError(f"passage {i} is empty; remove it or give it text")
            spans.append((pos, pos + len(p)))
            pos += len(p) + len(sep)
        return cls(sep.join(passages), spans, removal)

    @classmethod
    def words(cls, text: str, removal: str = "delete") -> TextUnits:
        """Units = whitespace-separated words."""
        import re

        return cls(text, [(m.start(), m.end()) for m in re.finditer(r"\S+", text)], removal)

    def compose(self, mask: np.ndarray) -> str:
        mask = self.check_masks(mask)[0]
        parts = [self._prefix]
        for keep, piece, unit in zip(mask, self._pieces, self.units, strict=True):
            if keep:
                parts.append(piece)
            elif self.removal != "delete":
                parts.append(self.removal + self._gaps[unit.index])
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "removal": self.removal, "text": self.text}


def _layout(
    segments: np.ndarray, labels: Sequence[str] | None, boxes: bool
) -> tuple[np.ndarray, list[Unit]]:
    """The 0..n-1 relabelled segment map and one Unit per segment (with its bounding box when
    ``boxes``)."""
    flat = segments.ravel()
    if np.issubdtype(segments.dtype, np.integer) and flat.min() == 0 and np.bincount(flat).all():
        ids, segments = np.arange(int(flat.max()) + 1), segments  # already 0..n-1
    else:
        ids = np.unique(segments)
        segments = np.searchsorted(ids, segments)  # relabel to 0..n-1
    if labels is not None and len(labels) != len(ids):
        raise InputError(f"{len(labels)} labels for {len(ids)} units; give one label per unit")
    spans: list[Any] = [None] * len(ids)
    if boxes:  # bounding boxes of all units in one pass
        from scipy.ndimage import find_objects

        spans = find_objects(segments.reshape(segments.shape[:2]) + 1)
    units = []
    for i in range(len(ids)):
        box = None
        if spans[i] is not None:
            r, c = spans[i][0], spans[i][1]
            box = (int(r.start), int(c.start), int(r.stop), int(c.stop))
        label = labels[i] if labels is not None else f"unit {i}" + (f" {box}" if box else "")
        units.append(Unit(i, str(label), box=box))
    return segments, units


@functools.lru_cache(maxsize=16)
def _grid_layout(h: int, w: int, patch: int) -> tuple[np.ndarray, tuple[Unit, ...]]:
    """The segment map and units of an (h, w) grid of ``patch``-px squares, cached because
    every default image map (patch units) asks for the same few grids."""
    rows, cols = np.arange(h) // patch, np.arange(w) // patch
    seg = rows[:, None] * (int(cols.max()) + 1) + cols[None, :]
    seg, units = _layout(seg, None, boxes=True)
    seg.setflags(write=False)
    return seg, tuple(units)


class ArrayUnits(Units):
    """Groups of elements of an array (features, time segments, image regions...).

    ``segments`` is an integer array whose shape is a prefix of ``x.shape`` (e.g. (T,) for a
    (T, C) time series, (H, W) for an (H, W, C) image); equal values form one unit. A removed unit's
    elements take the ``baseline`` value (a number or an array like ``x``).
    """

    kind = "array"

    def __init__(
        self,
        x: np.ndarray,
        segments: np.ndarray,
        baseline: float | np.ndarray = 0.0,
        labels: Sequence[str] | None = None,
        boxes: bool = False,
        *,
        _units: Sequence[Unit] | None = None,
    ) -> None:
        x = np.asarray(x)
        segments = np.asarray(segments)
        if x.size == 0:
            raise InputError(
                f"the input array is empty (shape {x.shape}); there is nothing to attribute"
            )
        if segments.shape != x.shape[: segments.ndim]:
            raise InputError(
                f"segments map has shape {segments.shape} but the input has shape {x.shape}; "
                "the segments must cover the leading dimensions of the input"
            )
        if _units is None:
            self.segments, units = _layout(segments, labels, boxes)
        else:  # a cached layout: segments already 0..n-1, one unit each
            self.segments, units = segments, _units
        super().__init__(units)
        self.x = x
        try:
            self.baseline = np.broadcast_to(np.asarray(baseline, dtype=float), x.shape).copy()
        except ValueError as e:
            raise InputError(
                f"baseline of shape {np.shape(baseline)} does not fit input of shape {x.shape}"
            ) from e
        self.removal = (
            "baseline value" if np.ndim(baseline) else f"baseline value {float(baseline):g}"
        )

    @classmethod
    def windows(cls, x: np.ndarray, width: int, baseline: float | np.ndarray = 0.0) -> ArrayUnits:
        """Units = consecutive windows of ``width`` steps along axis 0 (time segments)."""
        x = np.asarray(x)
        if width < 1:
            raise InputError("window width must be >= 1")
        n = x.shape[0]
        labels = [f"t[{s}:{min(s + width, n)}]" for s in range(0, n, width)]
        return cls(x, np.arange(n) // width, baseline, labels)

    def element_masks(self, masks: np.ndarray) -> np.ndarray:
        """Boolean masks over the segmented dimensions, shape (B, *segments.shape)."""
        return self.check_masks(masks)[:, self.segments]

    def compose(self, mask: np.ndarray) -> np.ndarray:
        return self.compose_batch(mask)[0]

    def compose_batch(self, masks: np.ndarray) -> np.ndarray:  # type: ignore[override]
        keep = self.element_masks(masks)
        keep = keep.reshape(keep.shape + (1,) * (self.x.ndim - self.segments.ndim))
        return np.where(keep, self.x[None].astype(float), self.baseline[None])

    def heatmap(self, scores: np.ndarray) -> np.ndarray:
        """Spread one score per unit over the segmented dimensions (an (H, W) map for images)."""
        return np.asarray(scores, dtype=float)[self.segments]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "removal": self.removal, "shape": list(self.x.shape)}


class FeatureUnits(ArrayUnits):
    """Features of one input vector; a removed feature takes its baseline value."""

    kind = "features"

    def __init__(
        self,
        x: Sequence[float] | np.ndarray,
        names: Sequence[str] | None = None,
        baseline: float | Sequence[float] | np.ndarray = 0.0,
    ) -> None:
        x = np.asarray(x, dtype=float)
        if x.ndim != 1 or x.size == 0:
            raise InputError(f"features must be a non-empty 1-D vector, got shape {x.shape}")
        names = list(names) if names is not None else [f"x{i}" for i in range(x.size)]
        super().__init__(x, np.arange(x.size), np.asarray(baseline, dtype=float), labels=names)
        self.units = [
            Unit(u.index, u.label, meta={"value": float(v)})
            for u, v in zip(self.units, x, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "removal": self.removal,
            "x": self.x.tolist(),
            "baseline": self.baseline.tolist(),
        }


class ImageUnits(ArrayUnits):
    """Regions of an image given by a label map; a removed region takes the baseline image.

    ``image`` is an (H, W) or (H, W, C) array; ``segments`` an (H, W) integer map whose distinct
    values are the units (grid patches, superpixels...). ``baseline`` is ``"blur"`` (Gaussian
    blur, sigma ``blur_sigma``), ``"mean"`` (the mean colour), ``"zero"``, or an array like ``image``.
    """

    kind = "image"

    def __init__(
        self,
        image: np.ndarray,
        segments: np.ndarray,
        baseline: str | np.ndarray = "blur",
        blur_sigma: float = 10.0,
        *,
        _units: Sequence[Unit] | None = None,
    ) -> None:
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
        if np.asarray(segments).shape != image.shape[:2]:
            raise InputError(
                f"segments map has shape {np.asarray(segments).shape}, image has {image.shape[:2]}; they must match"
            )
        lazy = isinstance(baseline, str) and baseline == "blur"
        first = 0.0 if lazy else self._baseline(image, baseline, blur_sigma)
        super().__init__(image, segments, first, boxes=True, _units=_units)
        # The blurred image is made when a unit is first removed (maps never need it).
        self._baseline_image: np.ndarray | None = None if lazy else self._baseline_image
        self._blur_sigma = blur_sigma
        self.removal = (
            f"{baseline} baseline" if isinstance(baseline, str) else "given baseline image"
        )

    @property
    def baseline(self) -> np.ndarray:  # type: ignore[override]
        """What a removed unit shows, an array like the image."""
        if self._baseline_image is None:
            self._baseline_image = self._baseline(self.x, "blur", self._blur_sigma)
        return self._baseline_image

    @baseline.setter
    def baseline(self, value: np.ndarray) -> None:
        self._baseline_image = value

    @property
    def image(self) -> np.ndarray:
        return self.x

    @property
    def baseline_image(self) -> np.ndarray:
        return self.baseline

    @staticmethod
    def _baseline(image: np.ndarray, baseline: str | np.ndarray, sigma: float) -> np.ndarray:
        img = image.astype(float)
        if isinstance(baseline, np.ndarray):
            if baseline.shape != image.shape:
                raise InputError(
                    f"baseline image shape {baseline.shape} differs from image shape {image.shape}"
                )
            return baseline.astype(float)
        if baseline == "zero":
            return np.zeros_like(img)
        if baseline == "mean":
            return np.broadcast_to(img.mean(axis=(0, 1), keepdims=True), img.shape).copy()
        if baseline == "blur":
            from scipy.ndimage import gaussian_filter

            s = (sigma, sigma, 0) if img.ndim == 3 else sigma
            return gaussian_filter(img, sigma=s)
        raise InputError(f"unknown baseline {baseline!r}: use 'blur', 'mean', 'zero' or an array")

    @classmethod
    def grid(cls, image: np.ndarray, patch: int = 16, **kw: Any) -> ImageUnits:
        """Units = square patches of ``patch`` pixels (the last row/column may be smaller)."""
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise InputError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
        h, w = image.shape[:2]
        if patch < 1:
            raise InputError("patch size must be >= 1 pixel")
        seg, units = _grid_layout(h, w, patch)
        return cls(image, seg, _units=units, **kw)

    def pixel_masks(self, masks: np.ndarray) -> np.ndarray:
        """(B, H, W) boolean pixel masks for (B, n) unit masks."""
        return self.element_masks(masks)
