"""WAGLE weight masks for unlearning (issue 23): GradDiff and NPO with no mask, a random, a
magnitude, a gradient, a SNIP and WAGLE masks (μ sweep), all selecting 20 % of the weights.

1. **Toy** (design notes §6.4): a 2-layer Llama (d = 128) trained from scratch on 80 invented
   people × 2 relations (city, job); forget = the city of 8 people, retain = the city of the other
   72, jobs = the job of all 80. GradDiff (lr 1e-3, batch 8) until forget accuracy reaches 0
   (cap 200 steps); 3 unlearning seeds on one trained model.
2. **SmolLM2-135M-Instruct** fine-tuned (every weight, AdamW lr 2e-4, batch 16) on invented facts
   generated with the seed (40 people × city, job; values drawn at random, so the model cannot
   know them before); forget = the city of 8 people, retain = the city of the other 32, other =
   the job relation of all 40 (knowledge the forget set does not state). Unlearning (lr 1e-4,
   batch 8, clip 1) runs until forget accuracy reaches 0 (cap ``MAX_STEPS``): every row is read
   at matched forget accuracy 0 unless "steps" shows the cap. One fine-tune per seed.

Accuracy = every answer token is the argmax under teacher forcing. Cells: accuracy over all
seeds' examples with its Wilson 95 % interval; "vs none" says whether the row's retain interval
lies above ("better") or below ("worse") the unmasked run's with the same loss, else "overlap"
(no claim). Seconds per row = mask + unlearning, all seeds.

Run alone: ``.venv/bin/python benchmarks/_weights_unlearning.py [--quick] [--seeds 0 1 2]
[--losses graddiff npo] [--no-toy]`` (one torch thread). ``section(quick)`` returns the tables for a combined benchmark script.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, markdown_table
from attribkit.evaluation import format_proportion, wilson_interval
from attribkit.internals.unlearning import unlearn
from attribkit.internals.weights import weight_mask
from attribkit.tasks.unlearning_cases import (
    fit_facts,
    make_people_facts,
    split_facts,
    train_toy_lm,
)

Table = tuple[str, list[str], list[list[object]]]
RATIO = 0.2
MAX_STEPS = 60
MASKS_FULL: list[tuple[str, str | None, float]] = [
    ("none (all weights)", None, 1e-6),
    ("random 20 %", "random", 1e-6),
    ("magnitude 20 %", "magnitude", 1e-6),
    ("gradient 20 %", "gradient", 1e-6),
    ("SNIP 20 %", "snip", 1e-6),
    ("WAGLE 20 %, μ = 1e-6", "wagle", 1e-6),
    ("WAGLE 20 %, μ = 1e-3", "wagle", 1e-3),
    ("WAGLE 20 %, μ = 1", "wagle", 1.0),
]
MASKS_QUICK = [MASKS_FULL[i] for i in (0, 2, 5)]
HEADERS = ["loss", "mask", "steps to forget", "forget", "retain", "other", "vs none", "seconds"]


def _cell(hits: Sequence[float], sizes: Sequence[int]) -> tuple[str, int, int]:
    k = round(sum(h * n for h, n in zip(hits, sizes, strict=True)))
    n = int(sum(sizes))
    return format_proportion(k, n), k, n


def _verdict(row: tuple[int, int], base: tuple[int, int] | None) -> str:
    if base is None:
        return "baseline"
    lo, hi = wilson_interval(*row)
    blo, bhi = wilson_interval(*base)
    return "better" if lo > bhi else "worse" if hi < blo else "overlap"


def _grid(
    lm: Any,
    splits: dict[int, Any],
    states: dict[int, dict[str, torch.Tensor]],
    masks: Sequence[tuple[str, str | None, float]],
    losses: Sequence[str],
    lr: float,
    max_steps: int,
    before: list[str] | None = None,
) -> list[list[object]]:
    """One row per (loss, mask), accuracies pooled over the seeds at the stopping step; the
    accuracies before unlearning are appended to ``before`` (when given and empty)."""
    rows: list[list[object]] = []
    for loss in losses:
        base: tuple[int, int] | None = None
        for label, method, mu in masks:
            runs, t0 = [], time.perf_counter()
            for seed, split in splits.items():
                lm.model.load_state_dict(states[seed])
                mask = None
                if method is not None:
                    mask = weight_mask(
                        lm, split.forget, split.retain, method, ratio=RATIO, mu=mu, seed=seed
                    )
                runs.append(
                    unlearn(
                        lm,
                        split.forget,
                        split.retain,
                        loss=loss,
                        mask=mask,
                        lr=lr,
                        steps=max_steps,
                        until_forget_accuracy=0.0,
                        eval_sets={"other": split.other},
                        seed=seed,
                    )
                )
            seconds = time.perf_counter() - t0
            sizes = {k: [len(getattr(s, k)) for s in splits.values()] for k in ("forget", "retain")}
            sizes["other"] = [len(s.other) for s in splits.values()]
            cells = {
                k: _cell([r.accuracy_after[k] for r in runs], sizes[k])
                for k in ("forget", "retain", "other")
            }
            steps = ", ".join(f"{r.steps}" + ("" if r.stopped else " (cap)") for r in runs)
            retain_kn = cells["retain"][1:]
            verdict = _verdict(retain_kn, base)  # type: ignore[arg-type]
            if method is None:
                base = retain_kn  # type: ignore[assignment]
                if before is not None and not before:
                    pooled = {
                        k: _cell([r.accuracy_before[k] for r in runs], sizes[k])[0]
                        for k in ("forget", "retain", "other")
                    }
                    before.append(", ".join(f"{k} {v}" for k, v in pooled.items()))
            rows.append(
                [loss, label, steps, cells["forget"][0], cells["retain"][0], cells["other"][0],
                 verdict, f"{seconds:.0f}"]
            )  # fmt: skip
            print(f"  {loss} / {label}: {rows[-1][2:]}", file=sys.stderr, flush=True)
    return rows


def toy_table(seeds: Sequence[int] = (0, 1, 2)) -> Table:
    """Table 1: the notes' toy (trained once, seed 0), GradDiff, every mask, ``seeds`` runs."""
    t0 = time.perf_counter()
    facts = make_people_facts(80, seed=0)
    lm = train_toy_lm(facts, seed=0)
    split = split_facts(facts, 8, relation="city", seed=0)
    state = copy.deepcopy(lm.model.state_dict())
    train_s = time.perf_counter() - t0
    # one trained model; the unlearning seed changes the retain batches and the random mask
    splits = dict.fromkeys(seeds, split)
    states = dict.fromkeys(seeds, state)
    before: list[str] = []
    rows = _grid(lm, splits, states, MASKS_FULL, ["graddiff"], 1e-3, 200, before)
    title = (
        f"Toy (notes §6.4): 2-layer Llama d = 128, 80 people × 2 relations, trained in "
        f"{train_s:.0f} s (before unlearning: {before[0]}); GradDiff lr 1e-3 until forget "
        f"accuracy 0; unlearning seeds {list(seeds)}; 'other' = jobs"
    )
    return title, HEADERS, rows


def smollm2_table(seeds: Sequence[int], masks: Sequence[tuple[str, str | None, float]],
                  losses: Sequence[str], n_people: int = 40) -> Table:  # fmt: skip
    """Table 2: SmolLM2 fine-tuned on invented facts (one fine-tune per seed), then every
    (loss, mask) until forget accuracy 0."""
    from attribkit.models.loading import load

    lm = load("smollm2")
    initial = copy.deepcopy(lm.model.state_dict())
    splits, states, notes = {}, {}, []
    for seed in seeds:
        t0 = time.perf_counter()
        lm.model.load_state_dict(initial)
        facts = make_people_facts(n_people, seed=100 + seed)
        splits[seed] = split_facts(facts, 8, relation="city", seed=seed)
        steps = 5 * -(-len(facts) // 16)  # 5 epochs
        fit_facts(lm, facts, steps=steps, lr=2e-4, batch_size=16, seed=seed)
        states[seed] = copy.deepcopy(lm.model.state_dict())
        notes.append(f"seed {seed}: fine-tune {time.perf_counter() - t0:.0f} s")
        print(f"  {notes[-1]}", file=sys.stderr, flush=True)
    before: list[str] = []
    rows = _grid(lm, splits, states, masks, losses, 1e-4, MAX_STEPS, before)
    title = (
        f"SmolLM2-135M-Instruct fine-tuned on {n_people} invented people × (city, job), seeds "
        f"{list(seeds)} ({'; '.join(notes)}; before unlearning: {before[0]}); unlearning "
        f"lr 1e-4 until forget accuracy 0 "
        f"(cap {MAX_STEPS} steps); 'other' = the job relation"
    )
    return title, HEADERS, rows


def section(
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    losses: Sequence[str] | None = None,
    toy: bool = True,
) -> list[Table]:
    """The tables: the toy (3 unlearning seeds) and SmolLM2 (quick: seed 0, GradDiff, masks
    none / magnitude / WAGLE μ = 1e-6; full: seeds 0–2, GradDiff and NPO, every mask).
    ``seeds`` / ``losses`` override the SmolLM2 defaults; ``toy=False`` skips table 1."""
    torch.set_num_threads(1)
    if seeds is None:
        seeds = (0,) if quick else (0, 1, 2)
    masks = MASKS_QUICK if quick else MASKS_FULL
    if losses is None:
        losses = ["graddiff"] if quick else ["graddiff", "npo"]
    return ([toy_table()] if toy else []) + [smollm2_table(seeds, masks, losses)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="seed 0, GradDiff, three masks")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="fine-tuning seeds")
    ap.add_argument("--losses", nargs="+", choices=["graddiff", "npo"], default=None)
    ap.add_argument("--no-toy", action="store_true", help="skip the toy table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(environment(["torch", "transformers", "numpy"], 1))
    t0 = time.perf_counter()
    for title, headers, rows in section(args.quick, args.seeds, args.losses, not args.no_toy):
        print(f"\n## {title}\n")
        print(markdown_table(headers, rows))
    print(f"\n({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
