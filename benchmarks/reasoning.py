"""Reasoning-step attribution: SmolLM2's proxies vs Thought Anchors' counterfactual importance.

A reduced first version of the benchmark of issue 17. Traces: the shipped Thought Anchors
problem folders (``/work/shared/data/thought_anchors/<model>/<kind>_base_solution/problem_<id>``,
every folder :meth:`attribkit.ReasoningTrace.from_folder` accepts), each cut to its first
``--sentences`` sentences (default 12) with ``trace.head(n)``, so that SmolLM2-135M runs every
method in minutes on 2 CPU cores. The issue's target is the first 2,048 tokens of each trace;
this is much less (a few hundred tokens), and the labels are those of the kept sentences.

Methods (``--methods``, default ``forced_answer,suppression,receiver_heads``), each on every
trace through :func:`attribkit.attribute` on a fresh :class:`attribkit.ReasoningTask` (so no
method reuses another's scored prompts). ``receiver_heads`` is calibrated leave-one-trace-out as
the paper: each trace's sentence attention (all layers, one eager pass,
:func:`sentence_attention`) is computed once and cached as its per-head kurtosis table; for the
scored trace the top-20 heads by mean kurtosis over the OTHER traces (layer 0 excluded, the rule
of :func:`select_receiver_heads`) are passed as ``heads=`` to the method, which runs one pass
with only those layers. So it costs 2 passes per trace, not K - 1.

Evaluation: :func:`attribkit.anchor_agreement` of each method's scores against the shipped
``counterfactual_importance_kl`` with the shipped ``function_tags`` (tag prior, leave one trace
out): Spearman, partial Spearman given position, top-5 overlap, bootstrap 95 % intervals over
traces, beside the position, length, random and tag-prior baselines on the SAME sentences (a
method leaves unscored sentences out: suppression the last one, receiver heads the last 4, so
each method has its own baseline rows). Every method row is a transfer result: a 135M reader
scoring chains of thought whose labels came from resampling 8B and 14B models.

Cost per method: forward passes and generated tokens (the LM's meter, calibration included),
seconds, and the process's peak RSS after the method (``resource.getrusage``; the peak is
monotone over the run, so a later method's value includes the earlier ones'). Traces that do not
fit the model's window or whose method fails are skipped and counted. No timed assertions.

Run: ``.venv/bin/python benchmarks/reasoning.py [--sentences 12] [--traces K]
[--methods a,b] [--threads 2] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attribkit
from _table import environment, markdown_table
from attribkit.core.errors import InputError
from attribkit.methods.reasoning.receiver_heads import (
    head_kurtosis,
    sentence_attention,
    vertical_scores,
)

DATA = Path("/work/shared/data/thought_anchors")
LABEL = "counterfactual_importance_kl"
TAGS = "function_tags"
DEFAULT_METHODS = ("forced_answer", "suppression", "receiver_heads")
TRANSFER = "transfer: 135M reader, labels from 8–14B models"
BASELINE = "baseline, same sentences and labels"
TOP_K_HEADS = 20
PROXIMITY = 4


def load_traces(n_sentences: int, limit: int | None) -> tuple[list[Any], list[str]]:
    """The shipped traces that load and carry the labels, cut to ``n_sentences``; notes on the
    folders left out."""
    traces, notes = [], []
    for folder in sorted(DATA.glob("*/*/problem_*")):
        try:
            trace = attribkit.ReasoningTrace.from_folder(folder)
        except InputError as e:
            notes.append(f"{folder}: not loaded ({e})")
            continue
        if LABEL not in trace.labels or trace.answer is None:
            notes.append(f"{folder}: no {LABEL} labels or no answer")
            continue
        trace = trace.head(n_sentences)
        trace.meta["name"] = "/".join(folder.parts[-3:])
        traces.append(trace)
        if limit is not None and len(traces) >= limit:
            break
    return traces, notes


def rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def top_heads(table: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The ``k`` heads of highest kurtosis in a (layers, heads) table, layer 0 and NaN left out,
    ties by lower layer then head (the rule of ``select_receiver_heads``)."""
    t = np.array(table, dtype=float)
    t[0] = np.nan
    flat = t.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    order = finite[np.argsort(-flat[finite], kind="stable")][:k]
    return [(int(i // t.shape[1]), int(i % t.shape[1])) for i in order]


def run_method(lm: Any, method: str, traces: list[Any]) -> dict[str, Any]:
    """One method on every trace: the Attributions (None where skipped) and the cost."""
    before = lm.cost.copy()
    t0 = time.perf_counter()
    results: list[Any] = [None] * len(traces)
    skipped: list[str] = []
    calib: dict[str, Any] = {}

    def task_of(i: int) -> Any:
        return attribkit.ReasoningTask(lm, traces[i])

    if method == "receiver_heads":
        tables: dict[int, np.ndarray] = {}
        for i, trace in enumerate(traces):  # the cached per-trace calibration: one pass each
            try:
                blocks = sentence_attention(task_of(i))
                tables[i] = head_kurtosis(vertical_scores(blocks, PROXIMITY))
            except Exception as e:
                skipped.append(
                    f"{trace.meta['name']}: calibration failed ({type(e).__name__}: {e})"
                )
        heads_used = []
        for i, trace in enumerate(traces):
            if i not in tables:
                continue
            others = [t for j, t in tables.items() if j != i]
            if not others:
                skipped.append(f"{trace.meta['name']}: no other trace to calibrate heads on")
                continue
            stack = np.stack(others)
            ok = np.isfinite(stack)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(ok.any(0), np.where(ok, stack, 0).sum(0) / ok.sum(0), np.nan)
            heads = top_heads(mean, TOP_K_HEADS)
            heads_used.append(heads)
            try:
                results[i] = attribkit.attribute(task_of(i), method, heads=heads)
            except Exception as e:
                skipped.append(f"{trace.meta['name']}: {type(e).__name__}: {e}")
        flat = [tuple(h) for hs in heads_used for h in hs]
        common = sorted(set(flat), key=lambda h: -flat.count(h))[:5]
        calib = {
            "calibration": f"leave one trace out, top {TOP_K_HEADS} heads by mean kurtosis, "
            f"layer 0 excluded, proximity {PROXIMITY}",
            "most_chosen_heads": [[*h, flat.count(h)] for h in common],
        }
    else:
        for i, trace in enumerate(traces):
            try:
                results[i] = attribkit.attribute(task_of(i), method)
            except Exception as e:
                skipped.append(f"{trace.meta['name']}: {type(e).__name__}: {e}")
    seconds = time.perf_counter() - t0
    spent = lm.cost.copy()
    return {
        "results": results,
        "skipped": skipped,
        "passes": spent.forward_passes - before.forward_passes,
        "generated_tokens": spent.generated_tokens - before.generated_tokens,
        "seconds": seconds,
        "peak_rss_mib": rss_mib(),
        **calib,
    }


def interval(m: dict[str, Any]) -> str:
    if not math.isfinite(m["mean"]):
        return "n/a"
    lo, hi = m["lo"], m["hi"]
    ci = f" [{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{m['mean']:+.2f}{ci}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sentences",
        type=int,
        default=12,
        help="cut each trace to its first N sentences (the issue's target: the first 2,048 "
        "tokens; 12 keeps SmolLM2 at minutes on 2 cores)",
    )
    ap.add_argument("--traces", type=int, default=None, help="first K traces (default all)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    print(environment(["attribkit", "torch", "transformers", "numpy"], args.threads))
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: the shipped Thought Anchors traces are needed")
    traces, load_notes = load_traces(args.sentences, args.traces)
    lm = attribkit.load("smollm2")
    fitting, lengths = [], []
    for t in traces:  # ReasoningTask refuses a prompt longer than the model's window
        try:
            task = attribkit.ReasoningTask(lm, t)
        except InputError as e:
            load_notes.append(f"{t.meta['name']}: does not fit ({e})")
            continue
        fitting.append(t)
        lengths.append(lm.count_tokens(task.prompt(), t.answer, chat=False))
    traces = fitting
    if not traces:
        sys.exit("no trace loaded and fitted the model's window")
    print(
        f"\n{len(traces)} traces ({len(load_notes)} folders left out), each cut to its first "
        f"{args.sentences} sentences: {min(lengths)}–{max(lengths)} tokens with prompt and "
        f"answer (median {int(np.median(lengths))}). The issue's target is the first 2,048 "
        f"tokens of each trace; this is a reduced run. Reader: {lm.name}. Labels: {LABEL}."
    )

    runs: dict[str, dict[str, Any]] = {}
    agreements: dict[str, Any] = {}
    for method in methods:
        run = run_method(lm, method, traces)
        runs[method] = run
        keep = [i for i, r in enumerate(run["results"]) if r is not None]
        print(
            f"- {method}: {len(keep)} traces scored, {len(run['skipped'])} skipped "
            f"({run['seconds']:.1f} s)",
            flush=True,
        )
        if not keep:
            continue
        agreements[method] = attribkit.anchor_agreement(
            [run["results"][i] for i in keep],
            [traces[i].labels[LABEL] for i in keep],
            tags=[traces[i].labels.get(TAGS, [None] * len(traces[i])) for i in keep],
            k=5,
            n_boot=args.boot,
        )

    rows = []
    for method, agr in agreements.items():
        for r in agr.aggregate:
            is_method = r["method"] == agr.method
            name = method if is_method else f"  {r['method']} ({method}'s sentences)"
            rows.append(
                [
                    name,
                    TRANSFER if is_method else BASELINE,
                    interval(r["spearman"]),
                    interval(r["partial_spearman"]),
                    interval(r["top_k_overlap"]),
                    ("yes" if agr.informative else "no") if is_method else "",
                    r["spearman"]["n"],
                ]
            )
    print(f"\n### Agreement with {LABEL} (mean over traces, bootstrap 95 % interval over traces)\n")
    print(
        markdown_table(
            [
                "row",
                "kind",
                "Spearman ρ",
                "partial ρ given position",
                "top-5 overlap",
                "informative",
                "traces",
            ],
            rows,
        )
    )
    print(
        "\ninformative = partial-Spearman interval above 0 and top-5 overlap at least the "
        "position baseline's (on the same sentences)."
    )
    for method, agr in agreements.items():
        print(f"- {method}: {agr.reason}")
        for note in agr.notes:
            print(f"  - {note}")

    cost_rows = []
    for method, run in runs.items():
        n_ok = sum(r is not None for r in run["results"])
        cost_rows.append(
            [
                method,
                n_ok,
                len(run["skipped"]),
                run["passes"],
                run["generated_tokens"],
                f"{run['seconds']:.1f}",
                f"{run['seconds'] / max(n_ok, 1):.2f}",
                f"{run['peak_rss_mib']:.0f}",
            ]
        )
    print("\n### Cost (SmolLM2-135M, CPU)\n")
    print(
        markdown_table(
            [
                "method",
                "traces",
                "skipped",
                "forward passes",
                "generated tokens",
                "seconds",
                "s/trace",
                "peak RSS so far (MiB)",
            ],
            cost_rows,
        )
    )
    for method, run in runs.items():
        if "calibration" in run:
            heads = ", ".join(f"L{a}H{b} ({c}×)" for a, b, c in run["most_chosen_heads"])
            print(f"- {method}: {run['calibration']} (2 passes per trace); most chosen: {heads}")
        for s in run["skipped"]:
            print(f"- {method} skipped {s}")
    for note in load_notes:
        print(f"- {note}")

    if args.json:
        out = {
            "environment": environment(["attribkit", "torch", "transformers"], args.threads),
            "args": vars(args),
            "traces": [t.meta["name"] for t in traces],
            "tokens": lengths,
            "left_out": load_notes,
            "methods": {
                m: {
                    **{k: v for k, v in run.items() if k != "results"},
                    "agreement": agreements[m].to_dict() if m in agreements else None,
                    "scores": [None if r is None else r.to_dict() for r in run["results"]],
                }
                for m, run in runs.items()
            },
        }
        Path(args.json).write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
