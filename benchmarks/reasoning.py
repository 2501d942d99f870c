"""Reasoning-step attribution: SmolLM2's proxies vs Thought Anchors' counterfactual importance.

The benchmark of issue 17. Traces: the shipped Thought Anchors problem folders
(``/work/shared/data/thought_anchors/<model>/<kind>_base_solution/problem_<id>``, every folder
:meth:`attribkit.ReasoningTrace.from_folder` accepts), each cut to its longest head within
``--tokens`` tokens (the issue's size: 2,048, prompt and answer included) or to its first
``--sentences`` sentences (default 12, a quick run); the labels are those of the kept sentences.
``--with-matrix`` keeps only the traces with a shipped 14B suppression matrix and compares the
``suppression`` matrix with it at matched distance (:func:`matched_distance_rho`, beside word
overlap and random matrices). ``--cache DIR`` saves each Attribution as it finishes and reuses
it on a rerun (long runs survive a crash).

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

Run: ``.venv/bin/python benchmarks/reasoning.py [--tokens 2048 | --sentences 12] [--with-matrix]
[--traces K] [--methods a,b] [--threads 2] [--cache DIR] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import sys
import time
import zlib
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
SUPP = "step_importance_supp.json"
DEFAULT_METHODS = ("forced_answer", "suppression", "receiver_heads")
TRANSFER = "transfer: 135M reader, labels from 8–14B models"
BASELINE = "baseline, same sentences and labels"
TOP_K_HEADS = 20
PROXIMITY = 4


def load_traces(
    n_sentences: int | None, limit: int | None, with_matrix: bool = False
) -> tuple[list[Any], list[str]]:
    """The shipped traces that load and carry the labels, cut to ``n_sentences`` (all when None;
    only those with a shipped suppression matrix when ``with_matrix``, the matrix then in
    ``trace.meta["supp"]``); notes on the folders left out."""
    traces, notes = [], []
    for folder in sorted(DATA.glob("*/*/problem_*")):
        supp = folder / SUPP
        if with_matrix and not supp.is_file():
            continue
        try:
            trace = attribkit.ReasoningTrace.from_folder(folder)
        except InputError as e:
            notes.append(f"{folder}: not loaded ({e})")
            continue
        if LABEL not in trace.labels or trace.answer is None:
            notes.append(f"{folder}: no {LABEL} labels or no answer")
            continue
        if n_sentences is not None:
            trace = trace.head(n_sentences)
        trace.meta["name"] = "/".join(folder.parts[-3:])
        if supp.is_file():
            trace.meta["supp"] = shipped_matrix(supp, len(trace.labels[LABEL]))
        traces.append(trace)
        if limit is not None and len(traces) >= limit:
            break
    return traces, notes


def shipped_matrix(path: Path, n: int) -> np.ndarray:
    """The shipped 14B suppression matrix as ``M[target j, source i]`` over the trace's ``n``
    labelled chunks (NaN where absent or j <= i)."""
    m = np.full((n, n), np.nan)
    for row in json.loads(path.read_text(encoding="utf-8")):
        i = int(row["source_chunk_idx"])
        for cell in row["target_impacts"]:
            j = int(cell["target_chunk_idx"])
            if i < j < n and cell["importance_score"] is not None:
                m[j, i] = float(cell["importance_score"])
    return m


def cut_to_tokens(lm: Any, trace: Any, budget: int) -> Any:
    """The longest head of ``trace`` whose prompt and answer fit ``budget`` tokens (binary search
    over ``trace.head(n)``; tokenizer only, no model calls)."""

    def size(n: int) -> int:
        head = trace.head(n)
        try:
            task = attribkit.ReasoningTask(lm, head)
        except InputError:  # longer than the model's window
            return budget + 1
        return lm.count_tokens(task.prompt(), head.answer, chat=False)

    lo, hi = 2, len(trace)
    if size(hi) <= budget:
        return trace
    while lo < hi:  # largest n with size(n) <= budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(mid) <= budget else (lo, mid - 1)
    return trace.head(lo)


def word_overlap_matrix(trace: Any) -> np.ndarray:
    """Baseline for the matrix: Jaccard overlap of the word sets of sentences j and i (j > i)."""
    words = [set(re.findall(r"[a-z0-9]+", s.lower())) for s in trace.units.labels]
    n = len(words)
    m = np.full((n, n), np.nan)
    for j in range(n):
        for i in range(j):
            union = words[i] | words[j]
            m[j, i] = len(words[i] & words[j]) / len(union) if union else 0.0
    return m


def matched_distance_rho(ours: np.ndarray, theirs: np.ndarray, min_pairs: int = 5) -> float:
    """Spearman correlation of two sentence×sentence matrices at matched distance: for every
    distance d = j - i with at least ``min_pairs`` finite pairs, the rank correlation of the
    entries at that distance; their mean weighted by pairs (NaN when no distance qualifies). A
    distance-only matrix scores 0 by construction."""
    from scipy.stats import spearmanr

    n = min(len(ours), len(theirs))
    total, weight = 0.0, 0
    for d in range(1, n):
        j = np.arange(d, n)
        x, y = ours[j, j - d], theirs[j, j - d]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < min_pairs or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
            continue
        total += float(spearmanr(x[ok], y[ok]).statistic) * int(ok.sum())
        weight += int(ok.sum())
    return total / weight if weight else float("nan")


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


def run_method(
    lm: Any, method: str, traces: list[Any], cache: Path | None = None
) -> dict[str, Any]:
    """One method on every trace: the Attributions (None where skipped) and the cost. With
    ``cache``, each Attribution is saved there as it finishes and a rerun loads it instead (its
    recorded passes and seconds are added to the totals)."""
    before = lm.cost.copy()
    t0 = time.perf_counter()
    results: list[Any] = [None] * len(traces)
    skipped: list[str] = []
    calib: dict[str, Any] = {}
    from_cache = attribkit.Cost()

    def task_of(i: int) -> Any:
        return attribkit.ReasoningTask(lm, traces[i])

    def attribute(i: int, **params: Any) -> Any:
        path = None
        if cache is not None:
            key = f"{method}-{traces[i].meta['name']}-{len(traces[i])}-{params}"
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", traces[i].meta["name"])
            path = cache / f"{method}-{name}-{len(traces[i])}-{zlib.crc32(key.encode()):08x}.json"
            if path.is_file():
                result = attribkit.Attribution.load(path)
                from_cache.forward_passes += result.cost.forward_passes
                from_cache.seconds += result.cost.seconds
                return result
        result = attribkit.attribute(task_of(i), method, **params)
        if path is not None:
            result.save(path)
        return result

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
                results[i] = attribute(i, heads=heads)
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
                results[i] = attribute(i)
            except Exception as e:
                skipped.append(f"{trace.meta['name']}: {type(e).__name__}: {e}")
    seconds = time.perf_counter() - t0 + from_cache.seconds
    spent = lm.cost.copy()
    return {
        "results": results,
        "skipped": skipped,
        "passes": spent.forward_passes - before.forward_passes + from_cache.forward_passes,
        "generated_tokens": spent.generated_tokens - before.generated_tokens,
        "seconds": seconds,
        "peak_rss_mib": rss_mib(),
        **calib,
    }


def matrix_agreement(run: dict[str, Any] | None, traces: list[Any], n_boot: int) -> list[list]:
    """Rows comparing the suppression matrices (and two baselines) with the shipped ones."""
    if run is None:
        return []
    rng = np.random.default_rng(0)
    per: dict[str, list[float]] = {"suppression": [], "word overlap": [], "random": []}
    for trace, result in zip(traces, run["results"], strict=True):
        theirs = trace.meta.get("supp")
        if result is None or theirs is None:
            continue
        ours = np.array(result.extras["matrix"], dtype=float)
        noise = np.where(np.isfinite(ours), rng.random(ours.shape), np.nan)
        per["suppression"].append(matched_distance_rho(ours, theirs))
        per["word overlap"].append(matched_distance_rho(word_overlap_matrix(trace), theirs))
        per["random"].append(matched_distance_rho(noise, theirs))
    rows = []
    for name, values in per.items():
        v = np.array([x for x in values if math.isfinite(x)])
        if not len(v):
            continue
        boot = [rng.choice(v, len(v)).mean() for _ in range(n_boot)]
        m = {
            "mean": float(v.mean()),
            "lo": float(np.percentile(boot, 2.5)),
            "hi": float(np.percentile(boot, 97.5)),
        }
        kind = TRANSFER if name == "suppression" else "baseline, same pairs"
        rows.append([name, kind, interval(m), len(v)])
    return rows


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
    ap.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="instead of --sentences: cut each trace to its longest head whose prompt and answer "
        "fit N tokens (the issue's size: 2048)",
    )
    ap.add_argument(
        "--with-matrix",
        action="store_true",
        help=f"only the traces with a shipped {SUPP} (suppression at matched distance)",
    )
    ap.add_argument("--cache", type=Path, default=None, help="save/reuse each Attribution here")
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
    sentences = None if args.tokens else args.sentences
    traces, load_notes = load_traces(sentences, args.traces, args.with_matrix)
    lm = attribkit.load("smollm2")
    if args.tokens:
        traces = [cut_to_tokens(lm, t, args.tokens) for t in traces]
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
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
    cut = (
        f"to its longest head within {args.tokens} tokens"
        if args.tokens
        else f"to its first {args.sentences} sentences"
    )
    sizes = [len(t) for t in traces]
    print(
        f"\n{len(traces)} traces ({len(load_notes)} folders left out), each cut {cut}: "
        f"{min(sizes)}–{max(sizes)} sentences (median {int(np.median(sizes))}), "
        f"{min(lengths)}–{max(lengths)} tokens with prompt and answer (median "
        f"{int(np.median(lengths))}). Reader: {lm.name}. Labels: {LABEL}."
    )

    runs: dict[str, dict[str, Any]] = {}
    agreements: dict[str, Any] = {}
    for method in methods:
        run = run_method(lm, method, traces, args.cache)
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

    matrix_rows = matrix_agreement(runs.get("suppression"), traces, args.boot)
    if matrix_rows:
        print(
            f"\n### Suppression matrix against the shipped 14B matrices ({SUPP}), at matched "
            "distance\n"
        )
        print(
            markdown_table(
                ["matrix", "kind", "Spearman ρ at matched distance", "traces"], matrix_rows
            )
        )
        print(
            "\nPer trace: the Spearman correlation of M[j, i] with the shipped matrix over the "
            "pairs at each distance d = j − i (≥ 5 pairs), averaged weighted by pairs; mean over "
            "traces with a bootstrap 95 % interval. A distance-only matrix scores 0. Ours: mean "
            "KL at temperature 1 over the full vocabulary; theirs: mean log(KL + 1e-9) at "
            "temperature 0.6 over top-p supports (see the method's docstring)."
        )

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
            "suppression_matrix_vs_shipped": matrix_rows,
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
