"""Token attribution of generated text in the terminal (a heat map) and as plain JSON.

Used by ``attribkit tokens``: rows are generated tokens, columns the input tokens (prompt tokens,
then generated tokens), as produced by :func:`attribkit.tasks.generation.attribute_generation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError

_LABEL_WIDTH = 12


def _label(s: str, width: int = _LABEL_WIDTH) -> str:
    """A token label on one line: whitespace made visible, truncated."""
    s = s.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "·") or "∅"
    return s if len(s) <= width else s[: width - 1] + "…"


def _matrix(attribution: Attribution) -> np.ndarray:
    if not isinstance(attribution, Attribution):
        raise InputError(f"expected an Attribution, got {type(attribution).__name__}")
    return np.atleast_2d(np.asarray(attribution.scores, dtype=float))


def _row_labels(attribution: Attribution, n_rows: int) -> list[str]:
    t = attribution.target if isinstance(attribution.target, dict) else {}
    labels = [str(x) for x in (t.get("row_labels") or [])]
    if len(labels) != n_rows:
        labels = ["(all)"] if n_rows == 1 else [f"row {i}" for i in range(n_rows)]
    return labels


def _cell(value: float) -> Text:
    """A heat-map cell: ``value`` in [-1, 1] as a percentage on a red (+) / blue (−) background."""
    if not np.isfinite(value):
        return Text("")
    a = min(1.0, abs(value))
    fade = round(255 * (1 - a))
    bg = f"rgb(255,{fade},{fade})" if value > 0 else f"rgb({fade},{fade},255)"
    pct = round(100 * value)
    return Text(str(pct if pct else 0), style=f"black on {bg}")


def print_token_attribution(
    attribution: Attribution,
    console: Console | None = None,
    max_rows: int = 20,
    max_cols: int = 30,
) -> None:
    """Print a rows × columns token attribution as a heat map.

    One line per generated token (the first ``max_rows``), one column per input token. When
    there are more than ``max_cols`` columns, the ``max_cols`` with the largest total |score|
    are shown, in input order. Each cell is the score divided by the largest |score| of its row,
    as a percentage (−100…100) on a red (positive) or blue (negative) background; NaN (a column
    the row cannot see) is blank. Labels are plain text, never rich markup. A 1-D attribution is
    shown as one row. Cost: no model calls.
    """
    if max_rows < 1 or max_cols < 1:
        raise InputError("max_rows and max_cols must be >= 1")
    console = console or Console()
    att = attribution
    s = _matrix(att)
    n_rows, n_cols = s.shape
    rows = list(range(min(n_rows, max_rows)))
    if n_cols > max_cols:
        weight = np.nansum(np.abs(s[rows]), axis=0)
        cols = sorted(np.argsort(-weight, kind="stable")[:max_cols].tolist())
    else:
        cols = list(range(n_cols))

    header = Text()
    header.append("method ", style="bold")
    header.append(str(att.method))
    t = att.target if isinstance(att.target, dict) else {}
    if t.get("description"):
        header.append("  target ", style="bold")
        header.append(str(t["description"]))
    header.append("  cost ", style="bold")
    header.append(f"{att.cost.model_calls} model calls ({att.cost})")
    console.print(header)

    table = Table(
        title=Text(f"{n_rows} generated × {n_cols} input tokens; % of each row's largest |score|"),
        show_lines=False,
        pad_edge=False,
    )
    table.add_column(Text("generated"), no_wrap=True)
    for j in cols:
        table.add_column(Text(_label(att.units[j].label)), justify="right", no_wrap=True)
    labels = _row_labels(att, n_rows)
    for i in rows:
        row = s[i, cols]
        full = s[i]
        finite = np.abs(full[np.isfinite(full)])
        scale = float(finite.max()) if finite.size else 0.0
        cells = [_cell(x / scale) if scale > 0 else _cell(0.0 * x) for x in row]
        table.add_row(Text(_label(labels[i], 16)), *cells)
    console.print(table)
    notes = []
    if n_rows > len(rows):
        notes.append(f"{n_rows - len(rows)} more generated tokens not shown (max_rows)")
    if n_cols > len(cols):
        notes.append(f"{n_cols - len(cols)} input tokens with the least weight hidden (max_cols)")
    for note in notes:
        console.print(Text(note, style="dim"))


def token_attribution_json(attribution: Attribution) -> dict[str, Any]:
    """A plain JSON dict of a token attribution: ``prompt``, ``response``, ``row_labels``,
    ``columns`` (input token labels), ``column_roles`` (``prompt``/``response``), ``matrix``
    (rows × columns, NaN as null), ``method``, ``params``, ``target``, ``model_calls`` and
    ``seconds``. A 1-D attribution gives a one-row matrix. No model calls."""
    s = _matrix(attribution)
    full = attribution.to_dict()  # JSON-safe target and params (NaN → null)
    target = full.get("target")
    t = target if isinstance(target, dict) else {}
    return {
        "prompt": t.get("prompt"),
        "response": t.get("response"),
        "row_labels": _row_labels(attribution, s.shape[0]),
        "columns": [u.label for u in attribution.units],
        "column_roles": [(u.meta or {}).get("role") for u in attribution.units],
        "matrix": [[float(x) if np.isfinite(x) else None for x in row] for row in s],
        "method": attribution.method,
        "params": full.get("params") or {},
        "target": target,
        "model_calls": attribution.cost.model_calls,
        "seconds": float(attribution.cost.seconds),
    }


__all__ = ["print_token_attribution", "token_attribution_json"]
