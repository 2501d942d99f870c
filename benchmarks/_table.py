"""A tiny markdown table printer and the environment line shared by the benchmark scripts."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Sequence
from importlib import metadata


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return ``rows`` under ``header`` as a GitHub-markdown table with padded columns."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def environment(packages: Sequence[str], threads: int | None = None) -> str:
    """One line: date, CPU count, threads used, Python and the versions of ``packages``."""
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    cpus = os.cpu_count()
    parts = [
        _dt.date.today().isoformat(),
        f"{cpus} CPU cores" + (f", {threads} torch threads" if threads else ""),
        f"Python {platform.python_version()}",
        *versions,
    ]
    return "; ".join(parts)


def fmt(x: float, digits: int = 3) -> str:
    """A compact number: fixed notation for ordinary magnitudes, scientific for tiny/huge ones."""
    if x != x:  # NaN
        return "n/a"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{max(digits - 1, 1)}f}"
    return f"{x:.{max(digits - 1, 1)}e}"


def run_sections(doc: str, sections: dict[str, str], packages: Sequence[str]) -> None:
    """The command line of a benchmark made of sections: ``--quick`` and ``--sections a,b``;
    each section is a module (``sections[name]``) whose ``section(quick)`` returns
    ``(title, headers, rows)`` tables, printed in order with the time each section took."""
    import argparse
    import importlib
    import time

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few cases per table (minutes)")
    ap.add_argument("--sections", default=",".join(sections), help="comma-separated subset")
    args = ap.parse_args()
    chosen = args.sections.split(",")
    unknown = set(chosen) - set(sections)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(sections)}")
    import torch

    torch.set_num_threads(1)
    print(environment(packages, 1))
    for name in chosen:
        start = time.perf_counter()
        module = importlib.import_module(sections[name])
        for title, headers, rows in module.section(quick=args.quick):
            print(f"\n### {title}\n")
            print(markdown_table(headers, rows))
        print(f"\n({name}: {time.perf_counter() - start:.0f} s)")
