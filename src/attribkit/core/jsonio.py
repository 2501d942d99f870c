"""JSON helpers shared by results, the store, the viewer and reports."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np


def to_json(x: Any) -> Any:
    """``x`` as plain JSON values: numpy scalars and arrays become numbers and lists, tuples
    become lists, dict keys strings, and non-finite floats ``None``."""
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_json(x.tolist())
    if isinstance(x, np.generic):
        return to_json(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def scores_from_json(rows: Any) -> np.ndarray:
    """A float array from JSON scores (a list, or a list of lists), ``None`` read as NaN."""
    return np.array(
        [
            [np.nan if s is None else s for s in row]
            if isinstance(row, list)
            else (np.nan if row is None else row)
            for row in rows or []
        ],
        dtype=float,
    )


def unit_vector(scores: Any) -> np.ndarray:
    """One score per unit from 1-D scores or rows × units: the column sum over scored rows,
    NaN where no row scored the unit (the one per-unit vector of evaluation, store and viewer)."""
    s = np.asarray(scores, dtype=float)
    if s.ndim == 1:
        return s.copy()
    v = np.nansum(s, axis=0)
    v[np.isnan(s).all(axis=0)] = np.nan
    return v


def jsonl_lines(text: str, source: object) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line of the JSONL ``text``, numbered
    from 1; InputError ``"<source>:<line> is not valid JSON (...)"`` on a malformed line."""
    from attribkit.core.errors import InputError

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{source}:{number} is not valid JSON ({e.msg})") from e
