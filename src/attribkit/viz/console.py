"""Print an Attribution as a rich table in the terminal (used by the CLI)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from attribkit.core.attribution import Attribution

_BAR_WIDTH = 10
_LABEL_WIDTH = 60


def _describe(x: Any) -> str:
    if isinstance(x, dict) and "description" in x:
        return str(x["description"])
    return str(x)


def _short(s: str, width: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= width else s[: width - 3] + "..."


def _bar(score: float, scale: float) -> Text:
    if not math.isfinite(score) or scale <= 0:
        return Text("")
    n = max(1, round(_BAR_WIDTH * min(1.0, abs(score) / scale))) if score else 0
    return Text("█" * n, style="red" if score > 0 else "blue")


def print_attribution(
    attribution: Attribution, k: int = 10, console: Console | None = None
) -> None:
    """Print the method/target/cost line and a table of the ``k`` top-ranked units.

    Columns: rank, unit index, score, a bar (red positive, blue negative, length ∝ |score| /
    max |score|) and the unit label (whitespace collapsed, truncated). Labels are printed as
    plain text, never interpreted as rich markup. Unscored (NaN) units are listed last as
    ``n/a``. Cost: no model calls.
    """
    console = console or Console()
    att = attribution
    v = att.vector
    finite = np.abs(v[np.isfinite(v)])
    scale = float(finite.max()) if finite.size else 0.0
    key = np.where(np.isnan(v), np.inf, -v)
    order = np.argsort(key, kind="stable")

    header = Text()
    header.append("method ", style="bold")
    header.append(str(att.method))
    header.append("  target ", style="bold")
    header.append(_short(_describe(att.target), 80))
    header.append("  cost ", style="bold")
    header.append(str(att.cost))
    console.print(header)

    kind = att.input.get("kind", "")
    shown = min(max(int(k), 0), len(att))
    table = Table(
        title=Text(f"top {shown} of {len(att)} {kind} units".replace("  ", " ")),
        show_lines=False,
    )
    table.add_column("rank", justify="right")
    table.add_column("unit", justify="right")
    table.add_column("score", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("label", overflow="fold")
    for r, i in enumerate(order[:shown], start=1):
        score = float(v[i])
        table.add_row(
            str(r),
            str(int(i)),
            "n/a" if not math.isfinite(score) else f"{score:+.4f}",
            _bar(score, scale),
            Text(_short(att.units[i].label, _LABEL_WIDTH)),
        )
    console.print(table)
    if shown < len(att):
        console.print(Text(f"... {len(att) - shown} more", style="dim"))
