"""Affinity Explainer on novel-class few-shot segmentation episodes (part of
``benchmarks/by_design.py``; runnable alone).

Model: :class:`attribkit.by_design.affinity.DigitMatcher` (DCAMA-like: two feature levels of a
tiny CNN, cosine attention query→support with the support mask as values, a small decoder),
trained per seed on base classes 0–4 (16×16 canvases of scikit-learn digits, the target digit in
one cell and 0–2 distractor digits, each class turned into 8 pseudo-classes by rotations and
mirroring); evaluated on 1-way 1-shot episodes of the novel classes 5–9 drawn from the held-out
test digits (distractors from all classes).

Maps over the 256 support pixels: AffEx plain / masked / signed (feature-ablation level weights,
region = the predicted foreground, mask blur kernel 5, σ 2 px: the authors' 31 / 50 at ~400 px
scaled), random, the support mask itself (plus 1e-3 uniform noise to break ties: the trivial
baseline the cut protocol favours), saliency (|∂ mean foreground probability over the region /
∂ support image|) and integrated gradients (16 midpoint steps, signed) from the zero image —
which on these black canvases leaves every background pixel at exactly 0, so IG can only rank
digit pixels — and from a uniform grey (0.5) image.

Metrics (De Marinis et al.'s protocol, ``affex/metrics.py``): the cut — keep only the top p of the
support pixels in image **and** mask, zero the rest, and report the loss of foreground IoU
against the full support, mean over episodes (lower is better) at p = 5 %, 15 % and at as many
pixels as the support mask has (|M|); insertion and deletion AUC of the foreground IoU over the
support pixels (most relevant first, 33 points); the share of the map's top |M| pixels that lie
in the support mask (how much the map copies the mask); forward + backward passes and seconds
per episode for the map.

Run: ``.venv/bin/python benchmarks/_by_design_affex.py [--quick]``. Measurements, no
assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, fmt, markdown_table

HEADERS = [
    "support map",
    "mIoU loss @5 %",
    "@15 %",
    "@|M|",
    "insertion AUC",
    "deletion AUC",
    "top |M| in mask",
    "passes / episode",
    "s / episode",
]
METHODS = [
    "random",
    "support mask",
    "saliency",
    "integrated gradients",
    "IG, grey baseline",
    "AffEx plain",
    "AffEx masked",
    "AffEx signed",
]


def _maps(task: Any, support_mask: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Every method's (map, passes, seconds) on one episode."""
    import attribkit as ak
    from attribkit.by_design.affinity import affinity_explainer

    out: dict[str, Any] = {}
    n = task.n_units
    out["random"] = (rng.random(n), 0, 0.0)
    out["support mask"] = (support_mask.reshape(-1) + 1e-3 * rng.random(n), 0, 0.0)
    for name, run in [
        ("saliency", lambda: ak.attribute(task, "saliency")),
        (
            "integrated gradients",
            lambda: ak.attribute(task, "integrated_gradients", n_steps=16, rule="riemann_middle"),
        ),
        (
            "IG, grey baseline",
            lambda: ak.attribute(
                task, "integrated_gradients", n_steps=16, rule="riemann_middle", baseline=0.5
            ),
        ),
        ("AffEx plain", lambda: affinity_explainer(task, variant="plain")),
        ("AffEx masked", lambda: affinity_explainer(task, variant="masked")),
        ("AffEx signed", lambda: affinity_explainer(task, variant="signed")),
    ]:
        att = run()
        out[name] = (att.scores, att.cost.model_calls, att.cost.seconds)
    return out


def _seed_run(seed: int, n_episodes: int, train: dict[str, Any], steps: int) -> dict[str, Any]:
    from attribkit.by_design.affinity import (
        SupportTask,
        digit_episodes,
        segmentation_iou,
        support_curves,
        support_cut_curve,
        support_weight,
        train_digit_matcher,
    )

    t0 = time.perf_counter()
    model = train_digit_matcher(seed=seed, **train)
    train_s = time.perf_counter() - t0
    novel = digit_episodes(
        n_episodes, classes=range(5, 10), split="test", distractor_classes=range(10),
        seed=1000 + seed,
    )  # fmt: skip
    base = digit_episodes(200, split="test", seed=2000 + seed)
    rng = np.random.default_rng(seed)
    rec: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    fallbacks = 0
    negative_inside = []
    for i in range(len(novel)):
        support, mask, query, qmask = novel.episode(i)
        task = SupportTask(model, support, mask, query, query_mask=qmask)
        fallbacks += int(task.fallback)
        w = support_weight(mask, "signed")
        negative_inside.append(float((w[mask > 0.5] < 0).mean()))
        for name, (scores, passes, secs) in _maps(task, mask, rng).items():
            cut = support_cut_curve(model, support, mask, query, qmask, scores, (0.05, 0.15))
            area = support_cut_curve(model, support, mask, query, qmask, scores, (1.0,), of="mask")
            curves = support_curves(
                model, support, mask, query, scores, query_mask=qmask, measure="iou",
                explanation_mask="all", steps=steps,
            )  # fmt: skip
            top = np.argsort(-np.asarray(scores), kind="stable")[: int(mask.sum())]
            r = rec[name]
            for key, value in [
                ("cut5", cut.loss[0]), ("cut15", cut.loss[1]), ("cutM", area.loss[0]),
                ("ins", curves.insertion.auc), ("del", curves.deletion.auc),
                ("in_mask", mask.reshape(-1)[top].mean()),
                ("passes", passes), ("s", secs),
            ]:  # fmt: skip
                r.setdefault(key, []).append(float(value))
    return {
        "rec": rec,
        "train_s": train_s,
        "novel_iou": segmentation_iou(model, novel),
        "base_iou": segmentation_iou(model, base),
        "fallbacks": fallbacks,
        "negative_inside": float(np.mean(negative_inside)),
        "mask_px": float(novel.support_mask.sum(axis=(1, 2, 3)).mean()),
    }


def affex_rows(
    quick: bool = False, notes: list[str] | None = None
) -> tuple[list[list[str]], list[str]]:
    """(rows, headers) of the AffEx table: per method the cut losses, insertion/deletion AUCs,
    passes and seconds per episode, mean over 3 seeds (± the spread of the seed means when
    there are several); ``quick``: 1 seed, 30 episodes, a shorter training. Lines describing the
    setting and the diagnostics go to ``notes`` when given. Trains one model per seed (~30–60 s
    each here) and evaluates ~1 s per episode."""
    torch.set_num_threads(1)
    seeds = (0,) if quick else (0, 1, 2)
    n_episodes = 30 if quick else 80
    train = (
        {"n_episodes": 2000, "epochs": 3, "augment": True}
        if quick
        else {"n_episodes": 4000, "epochs": 6, "augment": True}
    )
    steps = 17 if quick else 33
    runs = [_seed_run(s, n_episodes, train, steps) for s in seeds]
    rows = []
    for name in METHODS:
        row = [name]
        for key in ("cut5", "cut15", "cutM", "ins", "del", "in_mask"):
            means = [float(np.mean(r["rec"][name][key])) for r in runs]
            cell = fmt(float(np.mean(means)))
            if len(means) > 1:
                cell += f" ± {fmt(float(np.std(means)), 2)}"
            row.append(cell)
        row.append(fmt(float(np.mean([np.mean(r["rec"][name]["passes"]) for r in runs]))))
        row.append(fmt(float(np.mean([np.mean(r["rec"][name]["s"]) for r in runs]))))
        rows.append(row)
    if notes is not None:
        train_s = ", ".join(f"{r['train_s']:.0f}" for r in runs)
        notes.append(
            f"AffEx: {len(seeds)} seed(s) × {n_episodes} novel-class 1-shot episodes (classes "
            f"5–9, test digits); DigitMatcher trained on base classes 0–4 "
            f"({train['n_episodes']} episodes × {train['epochs']} epochs, rotations/mirrors as "
            f"pseudo-classes): novel foreground IoU "
            f"{', '.join(fmt(r['novel_iou']) for r in runs)}, base "
            f"{', '.join(fmt(r['base_iou']) for r in runs)}; training "
            f"{train_s} s."
        )
        notes.append(
            f"Support masks average {fmt(runs[0]['mask_px'])} px of 256 (5 % = 13 px, 15 % = 39 "
            f"px). Empty predictions (region fell back to all query pixels, AffEx map flat): "
            f"{sum(r['fallbacks'] for r in runs)} of {len(seeds) * n_episodes} episodes. "
            f"Signed variant: {fmt(100 * np.mean([r['negative_inside'] for r in runs]))} % of the "
            "support-mask pixels get a negative weight 2·blur(mask) − 1 (thin strokes blur "
            "below 1/2), so they rank below background pixels of near-zero affinity."
        )
    return rows, HEADERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 30 episodes")
    args = parser.parse_args()
    start = time.perf_counter()
    notes: list[str] = []
    rows, headers = affex_rows(quick=args.quick, notes=notes)
    print(environment(["torch", "numpy", "scikit-learn"], threads=1))
    print()
    print(markdown_table(headers, rows))
    print()
    for line in notes:
        print(line)
    print(f"\nTotal {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
