"""Failure attribution on Who&When's logs: which agent, at which step (issue 18).

Logs: the shared Who&When files (``/work/shared/data/who_and_when/Who&When/<family>/*.json``,
found by pattern), per family (Algorithm-Generated, Hand-Crafted). **They embed GAIA questions and
answers that must not be reshared: this script prints and saves ids, agents' names, steps and
numbers only, never a log's text.**

Rows, per family and setting (``without`` / ``with`` the gold answer):

* trivial rules from the same scoring code (:func:`attribkit.trivial_baselines`): random
  (seed 0), most turns (not the last speaker) and its first turn, most turns without terminal
  agents, step 0, and the majority gold agent and the majority gold step, each fitted on the
  other folds (5-fold);
* each judge-free method (``--methods``, default ``turn_loo,prefix_drop,agent_shapley,backtrace``;
  also ``backtrace_lexical``, the influence-graph backtrace with no model at all) read by
  SmolLM2-135M: without the gold answer they score the system's own final answer (the
  last turn: ``outcome="final"``), with it the gold answer (``outcome="gold"``);
* judge methods (``--judge-methods``, default none: ``all_at_once,step_by_step,binary_search,
  hybrid,a2p``) with the local constrained-choice judge on SmolLM2 — a **plumbing check, 135M**,
  not a judge — or, when ``ATTRIBKIT_JUDGE_URL``/``ATTRIBKIT_JUDGE_MODEL`` (and optionally
  ``ATTRIBKIT_JUDGE_KEY_ENV``) are set, the endpoint judge.

Columns: agent and step accuracy (exact, bootstrap 95 % interval over logs), step within ±1,
joint, MRR of the gold step (methods that rank turns), the official ``evaluate.py`` agent and
step accuracies (substring rules, all logs in the denominator), then forward passes, judge calls,
generated tokens and seconds per log (mean, median, max). A method "works" only if the lower
bound of its exact interval clears the best trivial rule's accuracy on the same logs (agent and
step separately). Under each table, Who&When's own ``evaluate.py`` (``Automated_FA/``, beside the
logs) is run as a subprocess on every row's predictions written in its text format, and its
counts of correct agents and steps are checked against the official columns.
Each method runs on a fresh task (its standalone cost); with ``--share-task`` the judge-free
methods of one log and setting share one task in ``--methods`` order, so prompts an earlier
method scored cost a later one nothing: its row's passes and seconds are what it added (the row
says ``shared_task``), and the table says so.

Logs over SmolLM2's 8,192-token window are cut to ``--max-turn-chars`` characters per turn (400;
recorded in each result), and a log that still does not fit has its turns cut further, to the
longest length that fits the window (``max_tokens="window"``; rows saved before session 16 count
such logs as failed); a judge method whose own prompt (the log and its instructions) is then
over the window has the log fitted tighter by the excess and asks again (``judge_refits`` in its
row; rows saved before session 16 count it as failed); a log a method refuses (one agent for
agent Shapley) is a failed prediction and counts as wrong. ``--max-tokens N`` cuts the turns of every log over N tokens to the longest
length that fits N (rows record it and are tabled apart): it bounds the ablation methods' time,
which grows with the log's length times its number of turns.

Results are appended per (family, setting, method, log) to ``--save`` (JSONL; a rerun skips
what it holds) and ``--load`` tabulates saved rows without a model.

``--dtype bfloat16`` loads the reader in bfloat16 (about 3× faster on CPUs with AMX); its rows
record the dtype (and ``--device``) and are tabled and resumed apart from float32 rows.
``--agree-with FILE`` then prints, per method, on how many logs the decisions of this run and of
the rows in FILE agree. ``--every K --offset N`` (N = 0 … K−1) splits the logs between K
processes, each with its own ``--save`` file; ``--ids 9.json,36.json`` runs and tables only those
logs (e.g. the ones a partial run finished).

Run: ``.venv/bin/python benchmarks/agents.py [--families Algorithm-Generated] [--limit K]
[--every K [--offset N]] [--methods ...] [--judge-methods ...] [--threads 2] [--dtype bfloat16]
--save /tmp/agents.jsonl``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attribkit as ak
from _table import environment, markdown_table
from attribkit.core.errors import AttribkitError, WindowError

DATA = Path("/work/shared/data/who_and_when/Who&When")
EVALUATE = DATA.parent / "Automated_FA" / "evaluate.py"  # Who&When's official scorer
FAMILIES = ("Algorithm-Generated", "Hand-Crafted")
METHODS = ("turn_loo", "prefix_drop", "agent_shapley", "backtrace")
RULES = (
    "random",
    "most_turns",
    "most_turns_no_terminal",
    "first_turn",
    "majority",
    "majority_step",
)
#: how many times a judge method whose prompt is over the window is asked again with the log
#: fitted tighter by the reported excess
JUDGE_REFITS = 3
#: benchmark rows that are a registered method with parameters
VARIANTS = {"backtrace_lexical": ("backtrace", {"suspicion": "none"})}  # model-free: 0 passes


def label(row: dict[str, Any]) -> str:
    """A row's name in the tables: the method, with the reader's dtype and device when they are
    not float32 and cpu (rows saved before these were recorded are float32 on cpu), and the
    token budget when there was one (``--max-tokens``)."""
    dtype, device = row.get("dtype", "float32"), row.get("device", "cpu")
    extra = [x for x, default in ((dtype, "float32"), (device, "cpu")) if x != default]
    if row.get("max_tokens") is not None:
        extra.append(f"≤{row['max_tokens']} tokens")
    return f"{row['method']} ({', '.join(extra)})" if extra else row["method"]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows saved in a JSONL file (``--save``), one per non-blank line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_logs(
    family: str,
    limit: int | None,
    every: int = 1,
    offset: int = 0,
    ids: frozenset[str] | None = None,
) -> list[ak.AgentLog]:
    """The family's logs, sorted by file id, the first ``limit``, then every ``every``-th of
    those from the ``offset``-th (a systematic sample; offsets 0 … K−1 with ``every`` K split
    the logs between K processes), then only the file ids in ``ids`` when given; each read by
    ``AgentLog``."""
    logs = ak.AgentLog.from_dir(DATA / family)
    logs = (logs[:limit] if limit else logs)[offset::every]
    return logs if ids is None else [log for log in logs if log.id in ids]


def make_task(
    lm: Any,
    judge: Any,
    log: ak.AgentLog,
    setting: str,
    max_chars: int,
    max_tokens: int | None = None,
) -> Any:
    """The log's AgentTask for ``setting``, its turns cut to fit ``max_tokens`` when given; a
    log over the window has every turn cut to ``max_chars`` (as in every run so far), and if
    that is not enough, to the longest length that fits the window (recorded in each
    result). Costs no model call."""
    outcome = "gold" if setting == "with" else "final"
    kw = {"lm": lm, "judge": judge, "outcome": outcome, "with_answer": setting == "with"}
    for chars in (None, max_chars):  # whole; over the window: every turn cut to max_chars
        with contextlib.suppress(AttribkitError):
            return ak.AgentTask(log, max_turn_chars=chars, max_tokens=max_tokens, **kw)
    return ak.AgentTask(log, max_tokens="window", **kw)  # still over: cut further, to fit


def run_one(
    lm: Any,
    judge: Any,
    log: ak.AgentLog,
    method: str,
    setting: str,
    max_chars: int,
    task: Any = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """One method on one log: the prediction (agent, step, ranking of steps) and its cost, or
    the reason it failed (counted wrong). ``task`` (shared between methods) reuses the prompts
    earlier methods scored, so the cost is what this method added; None builds a fresh one.
    A judge that refuses its prompt as over the window (before any model call) is asked again
    with the log fitted that many tokens tighter, up to :data:`JUDGE_REFITS` times."""
    t0 = time.perf_counter()
    refits = 0
    try:
        if task is None:
            task = make_task(lm, judge, log, setting, max_chars, max_tokens)
        name, params = VARIANTS.get(method, (method, {}))
        while True:
            try:
                result = task.attribute(name, **params)
                break
            except WindowError as e:  # a judge's prompt (log + instructions) is over the window
                if refits == JUDGE_REFITS or lm is None:
                    raise
                refits += 1  # fit the log that many tokens (and a little) tighter, and ask again
                tokens = lm.count_tokens(task.prompt(), task.response, chat=False)
                task = make_task(lm, judge, log, setting, max_chars, tokens - e.over - 16)
    except AttribkitError as e:
        return {"failed": type(e).__name__, "seconds": time.perf_counter() - t0}
    decision = result.extras.get("decision") or {}
    steps = [int(u.meta["step"]) for u in result.units]
    ranking = [steps[int(i)] for i in result.ranking]
    return {
        "agent": decision.get("agent"),
        "step": decision.get("step"),
        "ranking": ranking,
        "truncated": task.max_turn_chars is not None,
        "turn_chars": task.max_turn_chars,
        "judge_refits": refits,
        "passes": result.cost.forward_passes,
        "judge_calls": result.cost.judge_calls,
        "generated_tokens": result.cost.generated_tokens,
        "seconds": result.cost.seconds,
    }


def evaluate_py_counts(family: str, preds: list[Any], logs: list[ak.AgentLog]) -> tuple[int, int]:
    """Correct agents and steps as Who&When's own ``evaluate.py`` counts them, run as a
    subprocess on these predictions written in its text format (only counts are read back;
    the denominators differ under ``--limit``, since it counts every file of the folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = ak.write_predictions(preds, logs, Path(tmp) / "predictions.txt")
        command = [sys.executable, str(EVALUATE), "--data_path", str(DATA / family)]
        out = subprocess.run(
            [*command, "--eval_file", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
    counts = [re.search(rf"Correct {k} Predictions:\s*(\d+)", out) for k in ("Agent", "Step")]
    if not all(counts):
        raise RuntimeError("evaluate.py printed an unexpected report")
    return int(counts[0].group(1)), int(counts[1].group(1))  # type: ignore[union-attr]


def tabulate(
    rows: list[dict[str, Any]],
    families: list[str],
    settings: list[str],
    limit: int | None,
    every: int = 1,
    offset: int = 0,
    only: frozenset[str] | None = None,
) -> None:
    """Print one table per family and setting (of those asked) from the saved rows; ``only``:
    just the logs with these file ids."""
    for family in families:
        logs = load_logs(family, limit, every, offset, only)
        if not logs:
            continue
        ids = [log.id for log in logs]
        present = {r["setting"] for r in rows if r["family"] == family}
        for setting in [s for s in settings if s in present]:
            mine = {
                (label(r), r["id"]): r
                for r in rows
                if r["family"] == family and r["setting"] == setting
            }
            methods = sorted({m for m, _ in mine}, key=lambda m: (m.split()[0] not in METHODS, m))
            table, best = [], {"agent": 0.0, "step": 0.0}
            candidates: dict[str, tuple[list[Any], str]] = {
                f"rule: {name}": (preds, "rule")
                for name, preds in ak.trivial_baselines(logs, RULES).items()
            }
            for m in methods:
                got = [mine.get((m, i)) for i in ids]
                if any(g is None for g in got):
                    continue  # only methods run on every log of the table
                preds = [None if g.get("failed") else g for g in got]
                candidates[m] = (preds, "method")
            scores, disagree = {}, []
            for name, (preds, kind) in candidates.items():
                exact = ak.who_when_score(preds, logs)
                official = ak.who_when_score(preds, logs, scoring="official")
                scores[name] = (exact, official, kind)
                if EVALUATE.is_file():
                    ours = tuple(official.metrics[k]["correct"] for k in ("agent", "step"))
                    if evaluate_py_counts(family, preds, logs) != ours:
                        disagree.append(name)
                if kind == "rule":
                    best = {k: max(best[k], exact[k]) for k in best}
            for name, (exact, official, kind) in scores.items():
                m = exact.metrics

                def cell(key: str, m: dict = m) -> str:
                    v = m[key]
                    return f"{100 * v['mean']:.1f} [{100 * v['lo']:.0f}, {100 * v['hi']:.0f}]"

                cost = [""] * 7  # passes, judge calls, tokens, mean, median, max s, failed
                works = ""
                if kind == "method":
                    got = [mine[(name, i)] for i in ids]
                    n = len(got)
                    failed = sum(bool(g.get("failed")) for g in got)
                    cost = [
                        f"{sum(g.get('passes', 0) for g in got) / n:.1f}",
                        f"{sum(g.get('judge_calls', 0) for g in got) / n:.1f}",
                        f"{sum(g.get('generated_tokens', 0) for g in got) / n:.0f}",
                        f"{sum(g['seconds'] for g in got) / n:.1f}",
                        f"{np.median([g['seconds'] for g in got]):.1f}",
                        f"{max(g['seconds'] for g in got):.0f}",
                        f"{failed} / {sum(bool(g.get('truncated')) for g in got)}",
                    ]
                    works = ", ".join(k for k in ("agent", "step") if m[k]["lo"] > best[k]) or "no"
                table.append(
                    [
                        name,
                        cell("agent"),
                        cell("step"),
                        cell("step_within_1"),
                        cell("joint"),
                        f"{m['mrr']['mean']:.3f}" if "mrr" in m else "",
                        f"{100 * official['agent']:.1f}",
                        f"{100 * official['step']:.1f}",
                        *cost,
                        works,
                    ]
                )
            print(f"\n### {family}, {setting} the gold answer: {len(logs)} logs\n")
            if any(r.get("shared_task") for r in mine.values()):
                print(
                    "(judge-free methods shared one task per log, in the order run: their "
                    "passes and seconds are what each added to the earlier ones)\n"
                )
            print(
                markdown_table(
                    [
                        "row",
                        "agent % [95 %]",
                        "step %",
                        "step ±1 %",
                        "joint %",
                        "MRR",
                        "official agent %",
                        "official step %",
                        "passes / log",
                        "judge calls / log",
                        "gen. tokens / log",
                        "s / log",
                        "median s",
                        "max s",
                        "failed / truncated",
                        "works (clears best rule)",
                    ],
                    table,
                )
            )
            if not EVALUATE.is_file():
                print(f"\n({EVALUATE} is absent: official scores not checked against it)")
            elif disagree:
                print(f"\nevaluate.py counts differently for: {', '.join(disagree)}")
            else:
                print(
                    f"\nevaluate.py, run on each row's prediction file, counts the same correct "
                    f"agents and steps as the official columns for all {len(scores)} rows."
                )


def agreement(rows: list[dict[str, Any]], other: list[dict[str, Any]]) -> None:
    """Print, per family, setting and method run in both sets of saved rows (e.g. float32 and
    bfloat16 readers), on how many logs they decide the same agent, the same step and rank the
    same three turns first. No model calls."""

    def key(r: dict[str, Any]) -> tuple[str, str, str, str]:
        return r["family"], r["setting"], r["method"], r["id"]

    theirs = {key(r): r for r in other}
    counts: dict[tuple[str, str, str], list[int]] = {}
    for r in rows:
        o = theirs.get(key(r))
        if o is None or r.get("failed") or o.get("failed"):
            continue
        c = counts.setdefault(key(r)[:3], [0, 0, 0, 0])
        c[0] += 1
        c[1] += r["agent"] == o["agent"]
        c[2] += r["step"] == o["step"]
        c[3] += r["ranking"][:3] == o["ranking"][:3]
    table = [[*k, *c] for k, c in sorted(counts.items())]
    print("\n### Agreement with the other saved rows (logs both ran without failing)\n")
    headers = ["family", "setting", "method", "logs", "same agent", "same step", "same top 3"]
    print(markdown_table(headers, table))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--settings", default="without,with", help="without,with the gold answer")
    ap.add_argument("--methods", default=",".join(METHODS), help="judge-free methods")
    ap.add_argument("--judge-methods", default="", help="judge methods (local judge or endpoint)")
    ap.add_argument("--limit", type=int, default=None, help="first K logs per family")
    ap.add_argument("--every", type=int, default=1, help="then every K-th of those logs")
    ap.add_argument("--offset", type=int, default=0, help="from the N-th of them (0-based)")
    ap.add_argument(
        "--ids", default="", help="then only these file ids, comma-separated (e.g. 9.json,36.json)"
    )
    ap.add_argument("--max-turn-chars", type=int, default=400)
    ap.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="cut the turns of every log over N tokens to the longest length that fits (rows "
        "apart from uncut ones): bounds the ablation methods' time",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the reader's weights and activations (bfloat16: a separate row per method)",
    )
    ap.add_argument("--device", default="cpu", help="where the reader runs (cpu, cuda)")
    ap.add_argument("--save", type=Path, default=None, help="append each result here (JSONL)")
    ap.add_argument("--load", action="store_true", help="only tabulate the rows in --save")
    ap.add_argument(
        "--agree-with",
        type=Path,
        default=None,
        help="saved rows of another run (e.g. another --dtype): print how often each method's "
        "decisions agree with them",
    )
    ap.add_argument(
        "--share-task",
        action="store_true",
        help="one task per log and setting for the judge-free methods, in --methods order: "
        "prompts an earlier method scored are free, so each row's cost is what it added",
    )
    args = ap.parse_args()
    if args.every < 1:
        ap.error("--every takes a positive number of logs")
    if not 0 <= args.offset < args.every:
        ap.error("--offset takes 0 … --every − 1")
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: the shared Who&When logs are needed")
    families = [f for f in args.families.split(",") if f]
    settings = [s for s in args.settings.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    judge_methods = [m for m in args.judge_methods.split(",") if m]
    ids = frozenset(i for i in args.ids.split(",") if i) or None
    if ids is not None:
        known = {
            log.id for f in families for log in load_logs(f, args.limit, args.every, args.offset)
        }
        if ids - known:
            ap.error(f"--ids: no log {', '.join(sorted(ids - known))} among the logs selected")
    rows: list[dict[str, Any]] = []
    if args.save is not None and args.save.exists():
        rows = read_rows(args.save)
    print(environment(["attribkit", "torch", "transformers"], args.threads))
    if not args.load:
        lm = ak.load("smollm2", dtype=args.dtype, device=args.device)
        endpoint = ak.judge_from_env()
        judge = endpoint if endpoint is not None else ak.LocalJudge(lm)
        judge_label = judge.name if endpoint is not None else "local judge (plumbing check, 135M)"
        print(f"reader {lm.name} ({args.dtype}, {args.device}); judge: {judge_label}")
        done = {(r["family"], r["setting"], label(r), r["id"]) for r in rows}
        for family in families:
            logs = load_logs(family, args.limit, args.every, args.offset, ids)
            for setting in settings:
                for k, log in enumerate(logs):  # log-major: a partial run covers every method
                    t0 = time.perf_counter()
                    shared = None
                    for method in [*methods, *judge_methods]:
                        row = {"family": family, "setting": setting, "method": method}
                        row |= {"id": log.id, "threads": args.threads}
                        row |= {"dtype": args.dtype, "device": args.device}
                        if args.max_tokens is not None:
                            row["max_tokens"] = args.max_tokens
                        if (family, setting, label(row), log.id) in done:
                            continue
                        task = None
                        if args.share_task and method in methods:
                            if shared is None:
                                # on failure run_one builds its own task and records why
                                with contextlib.suppress(AttribkitError):
                                    shared = make_task(
                                        lm,
                                        judge,
                                        log,
                                        setting,
                                        args.max_turn_chars,
                                        args.max_tokens,
                                    )
                            task, row["shared_task"] = shared, shared is not None
                        row |= run_one(
                            lm,
                            judge,
                            log,
                            method,
                            setting,
                            args.max_turn_chars,
                            task,
                            args.max_tokens,
                        )
                        rows.append(row)
                        if args.save is not None:
                            with args.save.open("a") as f:
                                f.write(json.dumps(row) + "\n")
                    print(
                        f"- {family} / {setting} / log {k + 1}/{len(logs)}: "
                        f"{time.perf_counter() - t0:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    tabulate(rows, families, settings, args.limit, args.every, args.offset, ids)
    if args.agree_with is not None:
        asked = [r for r in rows if r["family"] in families and r["setting"] in settings]
        agreement([r for r in asked if ids is None or r["id"] in ids], read_rows(args.agree_with))
    if os.environ.get("ATTRIBKIT_JUDGE_URL") is None and judge_methods:
        print("\nJudge rows used the local judge: a plumbing check on a 135M model, not a judge.")


if __name__ == "__main__":
    main()
