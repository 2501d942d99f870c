"""Run one benchmark on two revisions of attribkit in the same session, alternating, and compare.

A refactor must give the same numbers and no slower times. This script runs the same benchmark
command against revision A (a source tree, e.g. a ``git worktree`` of the commit before the
change) and revision B (this checkout), ``--repeats`` times each, alternating A, B, A, B so that
machine noise hits both alike. Each revision runs its own copy of the benchmark script with its
own ``src`` first on ``PYTHONPATH``. It prints each revision's last output, whether the outputs
are identical once timing columns are masked, and the wall times with the ratio B / A.

    git worktree add /tmp/base <commit>
    python benchmarks/ab.py --base /tmp/base -- benchmarks/generation.py --prompts 2 --tokens 4

Times are whole-process wall times (model loading included, identical for both revisions).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
#: columns whose header mentions time or memory are masked before comparing outputs
TIMING = re.compile(r"(s/|sec|time|wall|\bs\b|ms|speed|ratio|×|MB)", re.IGNORECASE)


def _run(root: Path, argv: list[str], threads: int) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(root / "src"), OMP_NUM_THREADS=str(threads))
    script = root / argv[0]
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(script), *argv[1:]],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{script} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return seconds, out.stdout


def _masked(text: str) -> list[str]:
    """The output's table lines, with timing and memory columns masked (text around the tables
    reports times, loads and dates, so it is left out)."""
    lines, masked_cols = [], set()
    for line in text.splitlines():
        if not line.startswith("|"):
            masked_cols = set()  # a new table follows
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if all(set(c) <= set("-:") for c in cells):
            lines.append(line)
            continue
        if not masked_cols and any(TIMING.search(c) for c in cells):
            masked_cols = {i for i, c in enumerate(cells) if TIMING.search(c)}
            lines.append(line)
            continue
        lines.append(" | ".join("<t>" if i in masked_cols else c for i, c in enumerate(cells)))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="source tree of revision A")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- script.py [args]")
    args = parser.parse_args()
    argv = [a for a in args.command if a != "--"]
    if not argv:
        parser.error("give the benchmark command after --")
    roots = {"A (base)": args.base.resolve(), "B (this)": HERE}
    times: dict[str, list[float]] = {k: [] for k in roots}
    outputs: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, root in roots.items():
            seconds, outputs[name] = _run(root, argv, args.threads)
            times[name].append(seconds)
    for name in roots:
        print(f"## {name}: {roots[name]}\n\n{outputs[name]}")
    same = _masked(outputs["A (base)"]) == _masked(outputs["B (this)"])
    a, b = (statistics.median(times[k]) for k in roots)
    print(f"command: {' '.join(argv)}")
    print(f"outputs identical apart from timing columns: {'yes' if same else 'NO'}")
    print(
        f"wall time, median of {args.repeats}: A {a:.1f} s, B {b:.1f} s, ratio B/A {b / a:.3f} "
        f"(A runs {', '.join(f'{t:.1f}' for t in times['A (base)'])}; "
        f"B runs {', '.join(f'{t:.1f}' for t in times['B (this)'])})"
    )


if __name__ == "__main__":
    main()
