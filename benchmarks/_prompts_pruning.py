"""Prompt pruning on "but"-sentiment with SmolLM2 (design note prompt_knowledge.md §5): the full
few-shot prompt, TAPruning, PromptQuine (budgeted GGA), LOO-attribution pruning and random
pruning of the same size, scored on held-out items.

Task: ``but_sentiment`` ("The food was awful, but the staff was lovely." → the label of the
clause after "but"; 70 % of items have clauses of opposite polarity), raw completion, labels
" negative" / " positive" read from the next-token distribution. The starting prompt has 4
demonstrations (2 per class; 2 in ``--quick``) in the "Review: …\\nSentiment: label" format:
SmolLM2 is *worse* with them than zero-shot (§4), so the starting prompt is not at ceiling and
pruning back towards zero-shot is the expected gain; the zero-shot row is that reference. Units =
the template's SmolLM2 tokens (the "{input}" slot protected). Fitness = the mean label margin
p̃(gold) − max p̃(other) over a fitness set of 10 items (6 in ``--quick``), not accuracy on 8 (an
accuracy that starts saturated lets threshold accepting delete everything). Demonstrations,
fitness set and held-out set are three disjoint seeded draws (seeds 99, 202, 303): the fitness
set never doubles as test data.

Methods: TAPruning (threshold 0.96, budget of fitness calls, the best accepted prompt);
PromptQuine GGA (population 10, reproduction 16 — scaled down from 30/50 to the budget —
min_length 5, seed 0); LOO pruning (LOO over the tokens on the margin, drop the tokens whose
removal raises it most) and random pruning (2 seeds), both removing as many tokens as TAPruning.
Columns: tokens kept (of the prunable), fitness (margin) and fitness-set accuracy of the chosen
prompt, held-out accuracy with its Wilson 95 % interval, and the search's cost: fitness calls,
forward passes and seconds (one torch thread). A method helps only where its interval clears
the full prompt's.

Run: ``.venv/bin/python benchmarks/_prompts_pruning.py [--quick]``; the integrator's
``benchmarks/prompts_contexts.py`` calls :func:`section`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import environment, fmt, markdown_table
from attribkit.applied.pruning import (
    PruneResult,
    attribution_prune,
    promptquine,
    random_prune,
    tapruning,
)
from attribkit.evaluation.intervals import format_proportion
from attribkit.tasks.prompt import PromptTask, evaluate_prompt
from attribkit.tasks.prompt_cases import SENTIMENT_VERBALIZERS, but_sentiment

HEADERS = [
    "prompt",
    "tokens kept",
    "fitness (margin)",
    "fitness acc.",
    "held-out accuracy [95 % CI]",
    "fitness calls",
    "passes",
    "seconds",
]
FULL = {"demos": 4, "fit": 10, "test": 100, "ta_budget": 100, "pq_budget": 60}
QUICK = {"demos": 2, "fit": 6, "test": 40, "ta_budget": 25, "pq_budget": 20}
ZERO_SHOT = "Review: {input}\nSentiment:"


def _row(name: str, task: PromptTask, held: list[Any], r: PruneResult | None) -> list[object]:
    mask = None if r is None else r.kept
    values = task.fitness_values(mask)
    ev = task.evaluate(held, mask)
    kept = task.n_units if r is None else r.n_kept
    cost = ["-", "-", "-"]
    if r is not None:
        cost = [r.fitness_calls, r.cost.forward_passes, fmt(r.cost.seconds, 3)]
    return [
        name,
        f"{kept}/{task.n_units}",
        fmt(values["margin"], 3),
        fmt(values["accuracy"], 3),
        format_proportion(ev.n_correct, ev.n),
        *cost,
    ]


def section(quick: bool = False) -> list[tuple[str, list[str], list[list[object]]]]:
    """The "prompts" pruning table: (title, headers, rows). Loads SmolLM2. ``quick``: ~860
    forward passes, 119 s of CPU on one thread (measured; 608 s wall on a shared, loaded
    machine); full: ~3 300 passes of longer prompts, about 14 minutes of one idle thread
    (estimated from the quick run, not yet measured)."""
    from attribkit.models.loading import load

    torch.set_num_threads(1)
    cfg = QUICK if quick else FULL
    lm = load("smollm2")
    demos = but_sentiment(cfg["demos"], seed=99)
    fit_set = but_sentiment(cfg["fit"], seed=202)
    held = but_sentiment(cfg["test"], seed=303)

    def task() -> PromptTask:  # a fresh task (empty fitness cache) per method: honest costs
        return PromptTask.from_demonstrations(
            lm, demos, fit_set, SENTIMENT_VERBALIZERS, units="tokens", fitness="margin"
        )

    zero = evaluate_prompt(lm, ZERO_SHOT, held, SENTIMENT_VERBALIZERS)
    zero_fit = evaluate_prompt(lm, ZERO_SHOT, fit_set, SENTIMENT_VERBALIZERS)
    rows: list[list[object]] = [
        [
            "zero-shot (no demonstrations; reference)",
            "-",
            fmt(zero_fit.margin, 3),
            fmt(zero_fit.accuracy, 3),
            format_proportion(zero.n_correct, zero.n),
            "-",
            "-",
            "-",
        ]
    ]
    full = task()
    rows.append(_row(f"full prompt ({cfg['demos']} demonstrations)", full, held, None))
    t = task()
    ta = tapruning(t, threshold=0.96, budget=cfg["ta_budget"])
    rows.append(_row(f"TAPruning (0.96, budget {cfg['ta_budget']})", t, held, ta))
    t = task()
    pq = promptquine(t, "gga", population=10, reproduction=16, budget=cfg["pq_budget"],
                     min_length=5, seed=0)  # fmt: skip
    rows.append(_row(f"PromptQuine GGA (budget {cfg['pq_budget']})", t, held, pq))
    n_remove = max(ta.n_removed, 1)
    t = task()
    loo = attribution_prune(t, "loo", n_remove=n_remove)
    rows.append(_row(f"LOO pruning (-{n_remove} tokens)", t, held, loo))
    for seed in (0, 1):
        t = task()
        rnd = random_prune(t, n_remove, seed=seed)
        rows.append(_row(f"random pruning (-{n_remove}, seed {seed})", t, held, rnd))
    title = (
        f'"but"-sentiment, SmolLM2, {cfg["demos"]}-shot prompt pruned on a {cfg["fit"]}-item '
        f"margin fitness; held-out accuracy on {cfg['test']} items"
    )
    return [(title, HEADERS, rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    start = time.perf_counter()
    tables = section(quick=args.quick)
    print(environment(["torch", "transformers", "numpy"], threads=1))
    print(f"{time.perf_counter() - start:.0f} s in all\n")
    for title, headers, rows in tables:
        print(f"### {title}\n")
        print(markdown_table(headers, rows))
        print()


if __name__ == "__main__":
    main()
