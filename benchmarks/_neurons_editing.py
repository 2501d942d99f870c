"""ACE at CPU scale on SmolLM2-135M-Instruct (issue 23, design notes §7–§8): neuron attribution
checked by ablation, then edits at attribution-chosen layers against fixed and random layers.

1. **Neuron ablation.** For the notes' 10 known facts (raw prompts, last position), the top-k
   FFN neurons by each score are zeroed together at the last position; the table gives the mean
   drop in log p(answer) (nats) and its minimum over facts, for k = 10 and 50: DLA, activation ×
   ‖W_down column‖ (magnitude), k random neurons, and the exact log-probability increase (ACE /
   Yu & Ananiadou) on a subset of facts (it reads out n_layers × 1536 vocab-sized rows per fact).
2. **Edits.** Chains landmark → country → capital that SmolLM2 answers before editing (both
   hops top-1, multi-hop capital ranked first among all capitals) are counted; each kept chain's
   landmark is moved to another country (seeded) by the MEMIT/PMET-style closed-form edit of
   ``attribkit.internals.edit`` at (a) ACE's layers (``locate_edit_layers``: 3 query + 3 value
   layers, two groups), (a') the same locator restricted to the middle layers 9–20
   (``within=``), (b) fixed mid layers 12–14, 15–17 (two groups), (c) 6 random layers of
   0–26 (two groups of 3, seeded). Columns: single-hop efficacy (new country top-1), paraphrase
   top-1, multi-hop accuracy (the new country's capital ranked first among all capitals; strict
   top-1 also given), specificity (unrelated facts: share whose top-1 is unchanged, mean |Δ log
   p(answer)|), seconds per edit. Proportions carry Wilson 95 % intervals; a condition "helps"
   only if its interval clears the baseline's.

Run alone: ``.venv/bin/python benchmarks/_neurons_editing.py [--quick] [--plans located window
fixed random] [--no-ablation]``; the integrator's
benchmark calls :func:`section`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, fmt, markdown_table

Table = tuple[str, list[str], list[list[object]]]


def _ablation(lm: Any, quick: bool) -> Table:
    from attribkit.internals import neurons as nz
    from attribkit.tasks.editing_cases import KNOWN_FACTS

    exact_facts = 0 if quick else 3
    rng = np.random.default_rng(0)
    ks = (10, 50)
    drops: dict[str, list[list[float]]] = {}
    secs: dict[str, float] = {}
    for f, (prompt, answer) in enumerate(KNOWN_FACTS):
        scores = ["dla", "magnitude"] + (["logprob_increase"] if f < exact_facts else [])
        sets, names = [], []
        for s in scores:
            t0 = time.perf_counter()
            a = nz.neuron_attribution(lm, prompt, answer, score=s)
            secs[s] = secs.get(s, 0.0) + time.perf_counter() - t0
            for k in ks:
                sets.append([(u.meta["layer"], u.meta["neuron"]) for u, _ in a.top(k)])
                names.append((s, k))
        for k in ks:
            sets.append([(int(rng.integers(30)), int(rng.integers(1536))) for _ in range(k)])
            names.append(("random", k))
        clean, abl = nz.ablate_neurons(lm, prompt, answer, sets)
        for (s, k), v in zip(names, abl, strict=True):
            drops.setdefault(s, [[] for _ in ks])[ks.index(k)].append(clean - float(v))
    rows: list[list[object]] = []
    label = {
        "logprob_increase": f"log-prob increase (exact; first {exact_facts} facts)",
        "dla": "DLA",
        "magnitude": "activation × ‖W_down col‖",
        "random": "random",
    }
    for s in ("logprob_increase", "dla", "magnitude", "random"):
        if s not in drops:
            continue
        d = drops[s]
        n = len(d[0])
        cells: list[object] = [label[s], n]
        for vals in d:
            cells.append(f"{np.mean(vals):.2f} (min {np.min(vals):.2f})")
        cells.append(fmt(secs.get(s, 0.0) / n) if s in secs else "—")
        rows.append(cells)
    header = ["score", "facts", "drop k=10", "drop k=50", "s / fact (score)"]
    return "Neuron ablation: mean drop in log p(answer), nats", header, rows


def _layer_plans(lm: Any, case: Any, seed: int) -> dict[str, tuple[str, list[list[int]]]]:
    """Plan key (of :data:`PLANS`) -> (row label, edit groups) for one chain."""
    from attribkit.internals.neurons import locate_edit_layers

    n = len(lm.model.model.layers)
    prompt, target = case.request["prompt"], case.request["target_true"]
    loc = locate_edit_layers(lm, prompt, target)
    mid = n // 2
    window = (mid - 6, mid + 6)
    in_window = locate_edit_layers(lm, prompt, target, within=window)
    rng = np.random.default_rng([seed, 7])
    rand = sorted(int(x) for x in rng.choice(n - 3, size=6, replace=False))
    return {
        "located": ("ACE layers (located)", loc.groups),
        "window": (f"ACE layers located within {window[0]}–{window[1] - 1}", in_window.groups),
        "fixed": ("fixed mid layers", [list(range(mid - 3, mid)), list(range(mid, mid + 3))]),
        "random": ("random layers", [rand[:3], rand[3:]]),
    }


PLANS = ("located", "window", "fixed", "random")


def _edits(lm: Any, quick: bool, plans: Sequence[str] = PLANS) -> tuple[Table, str]:
    from attribkit.evaluation import format_proportion
    from attribkit.internals.editing import edit, edit_report, module_covariance
    from attribkit.tasks.editing_cases import COVARIANCE_TEXT, known_chains, make_edit_cases

    passing, counts = known_chains(lm)
    n_chains = 2 if quick else 8
    cases = make_edit_cases(passing[:n_chains], counts["capitals_known"], seed=0)
    opts = {"steps": 8, "n_context": 1} if quick else {"steps": 20, "n_context": 2}
    cov: dict[str, Any] = {}
    stats: dict[str, dict[str, list[float]]] = {}
    for i, case in enumerate(cases):
        layer_plans = _layer_plans(lm, case, seed=i)
        for name, groups in (layer_plans[k] for k in PLANS if k in plans):
            print(f"  chain {i}: {name} {groups}", file=sys.stderr, flush=True)
            need = sorted({x for g in groups for x in g if f"L{x}.down_proj" not in cov})
            if need:
                cov.update(module_covariance(lm, COVARIANCE_TEXT, need))
            t0 = time.perf_counter()
            res = edit(lm, case.request, groups, covariance=cov, seed=i, **opts)
            rep = edit_report(
                lm,
                res,
                case.request,
                paraphrases=case.paraphrases,
                unrelated=case.unrelated,
                multihop=case.multihop,
                candidates=case.candidates,
            )
            sec = time.perf_counter() - t0
            s = rep.sections
            st = stats.setdefault(name, {})
            for key, val in (
                ("eff", s["efficacy"]["top1"]),
                ("para", s["paraphrase"]["top1"] * len(case.paraphrases)),
                ("n_para", len(case.paraphrases)),
                ("multi", s["multihop"]["ranked_first"]),
                ("multi_top1", s["multihop"]["top1"]),
                ("unch", s["specificity"]["unchanged"] * s["specificity"]["n"]),
                ("n_spec", s["specificity"]["n"]),
                ("abs", s["specificity"]["mean_abs_change"]),
                ("sec", sec),
                ("edit_sec", res.cost.seconds),
            ):
                st.setdefault(key, []).append(float(val))
            del res
    rows: list[list[object]] = []
    for name, st in stats.items():
        n = len(st["eff"])
        rows.append(
            [
                name,
                n,
                format_proportion(round(sum(st["eff"])), n),
                format_proportion(round(sum(st["para"])), round(sum(st["n_para"]))),
                format_proportion(round(sum(st["multi"])), n),
                format_proportion(round(sum(st["multi_top1"])), n),
                format_proportion(round(sum(st["unch"])), round(sum(st["n_spec"]))),
                f"{np.mean(st['abs']):.3f}",
                fmt(float(np.mean(st["sec"]))),
            ]
        )
    header = [
        "layers",
        "edits",
        "single-hop top-1",
        "paraphrase top-1",
        "multi-hop (ranked first)",
        "multi-hop top-1",
        "specificity: top-1 unchanged",
        "mean |Δ log p| unrelated",
        "s / edit (+report)",
    ]
    note = (
        f"Chains SmolLM2 passes before editing: {counts['passing']} of {counts['chains']} "
        f"(hop 1: {counts['hop1']}, hop 2: {counts['hop2']}, multi-hop ranked first: "
        f"{counts['multihop']}); edited: {len(cases)}; new countries drawn from "
        f"{len(counts['capitals_known'])} with a known capital. Edit settings: {opts}, "
        "λ = 750, covariance from the 40 sentences of COVARIANCE_TEXT (with 0.1 shrinkage)."
    )
    return ("Edits: ACE's layers vs fixed mid vs random layers", header, rows), note


def section(
    quick: bool = False, plans: Sequence[str] = PLANS, ablation: bool = True
) -> list[Table]:
    """The neuron-ablation table (unless ``ablation=False``) and the editing table (titles,
    headers, rows) on SmolLM2 for the layer ``plans`` (of :data:`PLANS`); the editing table's
    title carries the chain counts. About 4 min with ``quick``."""
    from attribkit.models.loading import load

    lm = load("smollm2")
    out = [_ablation(lm, quick)] if ablation else []
    table, note = _edits(lm, quick, plans)
    out.append((f"{table[0]} — {note}", table[1], table[2]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 chains, 8 steps, no exact score")
    ap.add_argument("--plans", nargs="+", choices=PLANS, default=list(PLANS),
                    help="layer choices to edit at (default: all)")  # fmt: skip
    ap.add_argument("--no-ablation", action="store_true", help="skip the neuron-ablation table")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print(environment(["torch", "transformers", "numpy"], 1))
    t0 = time.perf_counter()
    for title, header, rows in section(args.quick, args.plans, not args.no_ablation):
        print(f"\n## {title}\n")
        print(markdown_table(header, rows))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
