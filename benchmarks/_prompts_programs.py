"""GenerationPrograms post hoc (Wan et al., COLM 2025) vs plain context attribution vs
self-citation, on generated multi-document QA cases with gold source sentences (SmolLM2).

Data: ``make_program_cases(n, seed=1000)`` — 3 people × 4 facts in 3 documents (plus, in half the
cases, one gold sentence copied into a second document), 1–2 answer sentences each fusing 2–4
facts of one person. The seed is used nowhere else (the tests use seeds 0–4) and no parameter was
tuned on any case: the program's selection rule is the design note's default (top-1 plus every
unit within 50 % of its score, at most 3).

Rows, per response sentence against its gold facts (a fact held by two units counts once; citing
either copy covers it):

- **program (post hoc, M)**: ``plan_post_hoc(task, M)`` — the cited units of each bullet;
- **top-k (M)**: the same attributions, the top k units with k fixed for all sentences = the
  program's mean number of cited units, rounded (same budget, no adaptive threshold); and with
  k = the sentence's number of gold facts (an oracle k, for reference);
- **random k**: k random units, k = the program's per-sentence count (seeded);
- **self-citation**: SmolLM2 is shown the numbered sentences ``[1] ... [n]`` and the question
  with an ALCE-style instruction to cite ``[n]``, the answer is forced up to the sentence's final
  period followed by `` [`` (prefill), and the markers it then writes are parsed.

Columns: micro precision (correct cited / cited) and recall (covered facts / facts) with Wilson
95 % intervals, mean per-sentence F1, mean units cited, and per case the forward passes,
generations and seconds (top-k rows reuse the program's attribution: same cost).

Run: ``.venv/bin/python benchmarks/_prompts_programs.py [--quick]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, fmt, markdown_table
from attribkit.applied.programs import CitationCounts, citation_counts, plan_post_hoc
from attribkit.core.cost import measure
from attribkit.evaluation import format_proportion
from attribkit.tasks.context import ContextTask
from attribkit.tasks.program_cases import ProgramCase, make_program_cases

SEED = 1000
N_CASES, N_QUICK = 40, 5
METHODS = ("loo", "attention_heads")
HEADERS = [
    "citations",
    "sentences",
    "precision [95 % CI]",
    "recall [95 % CI]",
    "mean F1",
    "mean k",
    "passes / case",
    "generations / case",
    "s / case",
]
SELF_CITE = (
    "Answer the question using only the numbered sentences below. Cite the sentences that "
    "support each claim with their numbers in square brackets, like [1][3].\n\n{sentences}\n\n"
    "Question: {query}"
)


class Tally:
    """Citation counts, per-sentence F1s and costs of one row."""

    def __init__(self) -> None:
        self.counts = CitationCounts(0, 0, 0, 0)
        self.f1: list[float] = []
        self.k: list[int] = []
        self.passes = 0
        self.generations = 0
        self.seconds = 0.0

    def add(self, cited: list[int], facts: list[list[int]]) -> None:
        c = citation_counts(cited, facts)
        self.counts = self.counts + c
        self.f1.append(c.f1)
        self.k.append(len(set(cited)))

    def row(self, name: str, n_cases: int) -> list[object]:
        c = self.counts
        return [
            name,
            len(self.f1),
            format_proportion(c.correct, c.cited) if c.cited else "n/a",
            format_proportion(c.covered, c.facts),
            f"{np.mean(self.f1):.3f}",
            f"{np.mean(self.k):.2f}",
            fmt(self.passes / n_cases),
            fmt(self.generations / n_cases),
            fmt(self.seconds / n_cases),
        ]


def self_citations(lm: Any, case: ProgramCase) -> tuple[list[list[int]], int]:
    """Per response sentence, the units SmolLM2 cites ([n] markers after a forced answer);
    and the number of generations."""
    numbered = "\n".join(f"[{i + 1}] {s}" for i, s in enumerate(case.sentences))
    prompt = SELF_CITE.format(sentences=numbered, query=case.query)
    out = []
    for i, sentence in enumerate(case.response_sentences):
        before = " ".join(case.response_sentences[:i])
        prefill = (before + " " if before else "") + sentence.rstrip(".") + " ["
        text = str(lm.generate(prompt, max_new_tokens=12, prefill=prefill))
        tail = re.split(r"[.\n]", "[" + text, maxsplit=1)[0]
        # numbers outside 1..n are cited units that hold nothing: they count against precision
        out.append(sorted({int(m) - 1 for m in re.findall(r"\[(\d+)\]", tail)}))
    return out, len(case.response_sentences)


def evaluate(lm: Any, cases: list[ProgramCase]) -> list[list[object]]:
    """Every row of the table on ``cases``."""
    n = len(cases)
    programs = {m: Tally() for m in METHODS}
    vectors: dict[str, list[tuple[np.ndarray, list[list[int]], int]]] = {m: [] for m in METHODS}
    self_cite = Tally()
    for case in cases:
        units = case.units()
        for method in METHODS:
            task = ContextTask(lm, units, case.query, case.response)
            with measure(lm) as cost:
                program = plan_post_hoc(task, method)
            tally = programs[method]
            tally.passes += cost.forward_passes
            tally.seconds += cost.seconds
            for i, facts in enumerate(case.gold):
                cited = program.citations(i)
                tally.add(cited, facts)
                vec = (program.attributions or [])[i].vector
                vectors[method].append((vec, facts, len(cited)))
        with measure(lm) as cost:
            cited_lists, generations = self_citations(lm, case)
        self_cite.passes += cost.forward_passes
        self_cite.seconds += cost.seconds
        self_cite.generations += generations
        for cited, facts in zip(cited_lists, case.gold, strict=True):
            self_cite.add(cited, facts)
    rows = []
    rng = np.random.default_rng(SEED)
    for method in METHODS:
        prog = programs[method]
        rows.append(prog.row(f"program (post hoc, {method})", n))
        k_fixed = max(1, round(float(np.mean(prog.k))))
        fixed, oracle, random_k = Tally(), Tally(), Tally()
        for vec, facts, k in vectors[method]:
            order = np.argsort(-np.where(np.isnan(vec), -np.inf, vec), kind="stable")
            fixed.add([int(u) for u in order[:k_fixed]], facts)
            oracle.add([int(u) for u in order[: len(facts)]], facts)
            random_k.add([int(u) for u in rng.choice(len(vec), size=k, replace=False)], facts)
        for t in (fixed, oracle):
            t.passes, t.seconds = prog.passes, prog.seconds
        rows.append(fixed.row(f"top-k ({method}, k = {k_fixed})", n))
        rows.append(oracle.row(f"top-k ({method}, k = gold facts: oracle)", n))
        rows.append(random_k.row(f"random k (k = program's, {method})", n))
    rows.append(self_cite.row("self-citation (SmolLM2, [n] markers)", n))
    return rows


def section(quick: bool = False) -> list[tuple[str, list[str], list[list[object]]]]:
    """(title, headers, rows) of the programs table on held-out generated cases."""
    from attribkit.models.loading import load

    lm = load("smollm2")
    cases = make_program_cases(N_QUICK if quick else N_CASES, seed=SEED)
    start = time.perf_counter()
    rows = evaluate(lm, cases)
    n_sent = sum(len(c.gold) for c in cases)
    n_dup = sum(c.meta["duplicated"] is not None for c in cases)
    title = (
        f"GenerationPrograms post hoc vs context top-k vs self-citation: SmolLM2-135M-Instruct, "
        f"{len(cases)} held-out generated cases (seed {SEED}; {n_sent} answer sentences, "
        f"{n_dup} cases with a duplicated gold sentence; {time.perf_counter() - start:.0f} s)"
    )
    return [(title, HEADERS, rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{N_QUICK} cases instead of {N_CASES}"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(environment(["torch", "transformers"], threads=1))
    for title, headers, rows in section(args.quick):
        print(f"\n### {title}\n")
        print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
