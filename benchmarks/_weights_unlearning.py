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
[--losses graddiff npo] [--no-toy] [--save runs.jsonl]`` (``--save`` resumes a stopped run) (one torch thread). ``section(quick)`` returns the tables for a combined benchmark script.
"""

from __future__ import annotations

import argparse
import copy
import json
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
HEADERS = [
    "loss",
    "mask",
    "seeds",
    "steps to forget",
    "forget",
    "retain",
    "retain per seed",
    "other",
    "vs none",
    "seconds",
]


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


def _run_record(
    lm: Any, split: Any, loss: str, mask: Any, lr: float, max_steps: int, seed: int
) -> dict[str, Any]:
    """One unlearning run from the model's current weights, as a JSON-able record."""
    t0 = time.perf_counter()
    res = unlearn(
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
    return {
        "steps": res.steps,
        "stopped": res.stopped,
        "before": res.accuracy_before,
        "after": res.accuracy_after,
        "sizes": {k: len(getattr(split, k)) for k in ("forget", "retain", "other")},
        "unlearn_s": time.perf_counter() - t0,
    }


def _rows(
    records: Sequence[dict[str, Any]],
    masks: Sequence[tuple[str, str | None, float]],
    losses: Sequence[str],
) -> list[list[object]]:
    """One row per (loss, mask), accuracies pooled over the seeds recorded for that row; the
    verdict compares the row's retain interval with the unmasked row's over the same seeds."""
    rows: list[list[object]] = []
    for loss in losses:
        by_label = {
            label: sorted(
                (r for r in records if r["loss"] == loss and r["mask"] == label),
                key=lambda r: r["seed"],
            )
            for label, _, _ in masks
        }
        none = {r["seed"]: r for r in by_label[masks[0][0]]}
        for label, method, _ in masks:
            runs = by_label[label]
            if not runs:
                continue

            def pooled(runs: Sequence[dict[str, Any]], key: str) -> tuple[str, int, int]:
                return _cell([r["after"][key] for r in runs], [r["sizes"][key] for r in runs])

            cells = {k: pooled(runs, k) for k in ("forget", "retain", "other")}
            base_runs = [none[r["seed"]] for r in runs if r["seed"] in none]
            base = None
            if method is not None and len(base_runs) == len(runs):
                base = pooled(base_runs, "retain")[1:]
            verdict = _verdict(cells["retain"][1:], base) if method is None or base else "—"
            steps = ", ".join(f"{r['steps']}" + ("" if r["stopped"] else " (cap)") for r in runs)
            seconds = sum(r["mask_s"] + r["unlearn_s"] for r in runs)
            per_seed = " / ".join(f"{r['after']['retain']:.2f}" for r in runs)
            rows.append(
                [loss, label, ",".join(str(r["seed"]) for r in runs), steps, cells["forget"][0],
                 cells["retain"][0], per_seed, cells["other"][0], verdict, f"{seconds:.0f}"]
            )  # fmt: skip
    return rows


def _load(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def toy_table(seeds: Sequence[int] = (0, 1, 2)) -> Table:
    """Table 1: the notes' toy (trained once, seed 0), GradDiff, every mask, ``seeds`` runs
    (the unlearning seed changes the retain batches and the random mask)."""
    t0 = time.perf_counter()
    facts = make_people_facts(80, seed=0)
    lm = train_toy_lm(facts, seed=0)
    split = split_facts(facts, 8, relation="city", seed=0)
    state = copy.deepcopy(lm.model.state_dict())
    train_s = time.perf_counter() - t0
    records = []
    for label, method, mu in MASKS_FULL:
        for seed in seeds:
            lm.model.load_state_dict(state)
            t1 = time.perf_counter()
            mask = None
            if method is not None:
                mask = weight_mask(
                    lm, split.forget, split.retain, method, ratio=RATIO, mu=mu, seed=seed
                )
            mask_s = time.perf_counter() - t1
            rec = _run_record(lm, split, "graddiff", mask, 1e-3, 200, seed)
            rec.update(seed=seed, loss="graddiff", mask=label, mask_s=mask_s)
            records.append(rec)
    before = records[0]["before"]
    title = (
        f"Toy (notes §6.4): 2-layer Llama d = 128, 80 people × 2 relations, trained in "
        f"{train_s:.0f} s (before unlearning: "
        + ", ".join(f"{k} {v:.3f}" for k, v in before.items())
        + f"); GradDiff lr 1e-3 until forget accuracy 0; unlearning seeds {list(seeds)}; "
        "'other' = jobs"
    )
    return title, HEADERS, _rows(records, MASKS_FULL, ["graddiff"])


def smollm2_table(seeds: Sequence[int], masks: Sequence[tuple[str, str | None, float]],
                  losses: Sequence[str], n_people: int = 40,
                  save: Path | None = None) -> Table:  # fmt: skip
    """Table 2: SmolLM2 fine-tuned on invented facts (one fine-tune per seed), then every
    (loss, mask) until forget accuracy 0. Seed-major; each seed's masks are computed once on
    the fine-tuned weights and shared by both losses. With ``save`` every run is appended to a
    JSON-lines file and runs already there are skipped (a stopped run resumes)."""
    from attribkit.models.loading import load

    records = _load(save)
    done = {(r["seed"], r["loss"], r["mask"]) for r in records}
    lm = None
    initial: dict[str, torch.Tensor] = {}
    notes = []
    for seed in seeds:
        todo = [(loss, m) for m in masks for loss in losses if (seed, loss, m[0]) not in done]
        if not todo:
            continue
        if lm is None:
            lm = load("smollm2")
            initial = copy.deepcopy(lm.model.state_dict())
        t0 = time.perf_counter()
        lm.model.load_state_dict(initial)
        facts = make_people_facts(n_people, seed=100 + seed)
        split = split_facts(facts, 8, relation="city", seed=seed)
        steps = 5 * -(-len(facts) // 16)  # 5 epochs
        fit_facts(lm, facts, steps=steps, lr=2e-4, batch_size=16, seed=seed)
        state = copy.deepcopy(lm.model.state_dict())
        notes.append(f"seed {seed}: fine-tune {time.perf_counter() - t0:.0f} s")
        print(f"  {notes[-1]}", file=sys.stderr, flush=True)
        mask_cache: dict[str, tuple[Any, float]] = {}
        for loss, (label, method, mu) in todo:
            lm.model.load_state_dict(state)
            if method is not None and label not in mask_cache:
                t1 = time.perf_counter()
                mask = weight_mask(
                    lm, split.forget, split.retain, method, ratio=RATIO, mu=mu, seed=seed
                )
                mask_cache[label] = (mask, time.perf_counter() - t1)
            mask, mask_s = mask_cache.get(label, (None, 0.0))
            rec = _run_record(lm, split, loss, mask, 1e-4, MAX_STEPS, seed)
            rec.update(seed=seed, loss=loss, mask=label, mask_s=mask_s)
            records.append(rec)
            if save is not None:
                with save.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
            print(f"  seed {seed} {loss} / {label}: {rec['steps']} steps, after "
                  f"{rec['after']}, {rec['unlearn_s']:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    records = [r for r in records if r["seed"] in seeds]
    befores = {r["seed"]: r["before"] for r in records}
    before = "; ".join(
        f"seed {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in b.items())
        for s, b in sorted(befores.items())
    )
    title = (
        f"SmolLM2-135M-Instruct fine-tuned on {n_people} invented people × (city, job), seeds "
        f"{sorted(befores)} (before unlearning: {before}"
        + (f"; {'; '.join(notes)}" if notes else "")
        + f"); unlearning lr 1e-4 until forget accuracy 0 (cap {MAX_STEPS} steps); "
        "'other' = the job relation; a mask's seconds are counted once per seed, on the "
        "first loss that used it"
    )
    return title, HEADERS, _rows(records, masks, losses)


def section(
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    losses: Sequence[str] | None = None,
    toy: bool = True,
    save: Path | None = None,
) -> list[Table]:
    """The tables: the toy (3 unlearning seeds) and SmolLM2 (quick: seed 0, GradDiff, masks
    none / magnitude / WAGLE μ = 1e-6; full: seeds 0–2, GradDiff and NPO, every mask).
    ``seeds`` / ``losses`` override the SmolLM2 defaults; ``toy=False`` skips table 1;
    ``save`` keeps every SmolLM2 run in a JSON-lines file and resumes from it."""
    torch.set_num_threads(1)
    if seeds is None:
        seeds = (0,) if quick else (0, 1, 2)
    masks = MASKS_QUICK if quick else MASKS_FULL
    if losses is None:
        losses = ["graddiff"] if quick else ["graddiff", "npo"]
    return ([toy_table()] if toy else []) + [smollm2_table(seeds, masks, losses, save=save)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="seed 0, GradDiff, three masks")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="fine-tuning seeds")
    ap.add_argument("--losses", nargs="+", choices=["graddiff", "npo"], default=None)
    ap.add_argument("--no-toy", action="store_true", help="skip the toy table")
    ap.add_argument("--save", type=Path, default=None,
                    help="JSON-lines file of SmolLM2 runs: appended to, and runs in it are skipped")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(environment(["torch", "transformers", "numpy"], 1))
    t0 = time.perf_counter()
    for title, headers, rows in section(
        args.quick, args.seeds, args.losses, not args.no_toy, args.save
    ):
        print(f"\n## {title}\n")
        print(markdown_table(headers, rows))
    print(f"\n({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
