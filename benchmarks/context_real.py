"""Context traceback on real questions: every context method beside trivial baselines.

Cases: ``../shared/data/context_qa/dev.jsonl`` (93 real cases: 28 HotpotQA dev, distractor
setting, ~40 sentences over up to 10 Wikipedia paragraphs; 65 SQuAD 2.0 dev paragraphs of 3-12
sentences; the annotators' gold evidence sentences; CC BY-SA 4.0, see that folder's README). The
data stay outside the repository; this script reads them where they are (``--data``).

Units are the context's sentences (attribkit's splitter over the blank-line-joined passages). A
unit counts as gold when it overlaps a gold sentence by at least 50 % of the shorter one's
characters. Two responses are attributed: the gold answer (``--response gold``) and the model's
own greedy answer (``--response greedy``, at most 24 new tokens, generated once per case).

Per case and method:

* **plausibility**: P@1 (the top unit is gold) and R@k (gold units among the top k, k = number
  of gold units);
* **faithfulness to the model** (log p of the response, nats): ``drop@1`` = f(all) − f(all but
  the top-1 unit), ``drop@k`` = f(all) − f(all but the top k), ``keep@k`` = f(all) − f(only the
  top k) (smaller is better); ``agree`` = the top unit is leave-one-out's top unit. These
  evaluation passes run on a separate task and are not charged to the method;
* **cost**: forward passes (``Attribution.cost``) and wall seconds of the attribution alone, on
  a fresh task (no cache shared between methods).

Methods: ``auto`` (the default), ``attention_heads`` with the shipped heads file and with the
synthetic-template heads when a second file ships, the all-heads attention average,
``attntrace``, ``hybrid``, ``loo``; with ``--heavy`` also ``contextcite`` (32 ablations) and
``tracllm`` (budget 150 passes). Baselines (no model calls): random (seeded), longest sentence,
word overlap with the query, with the query + answer, and BM25 (query + answer, IDF over the
case's sentences).

Results are appended per (case, response, method) to ``--save`` (JSONL), so a run can be stopped
and resumed, or split over processes and merged (``--load a.jsonl b.jsonl``).

Run: ``.venv/bin/python benchmarks/context_real.py [--sources hotpot,squad] [--limit N]
[--response gold,greedy] [--methods a,b] [--heavy] [--threads 1] [--save out.jsonl]``
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attribkit
from _table import environment, markdown_table
from attribkit.core.cost import Budget

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "context_qa" / "dev.jsonl"
GREEDY_TOKENS = 24

#: label -> (registered method, params, budget); ``HEAVY`` only with --heavy.
METHODS: dict[str, tuple[str, dict[str, Any], Budget | None]] = {
    "auto": ("auto", {}, None),
    "attention_heads": ("attention_heads", {}, None),
    "heads synthetic": ("attention_heads", {"heads": "synthetic"}, None),
    "attention (all heads)": ("attention_heads", {"heads": "all"}, None),
    "attntrace": ("attntrace", {}, None),
    "hybrid": ("hybrid", {}, None),
    "loo": ("loo", {}, None),
}
HEAVY: dict[str, tuple[str, dict[str, Any], Budget | None]] = {
    "contextcite 32": ("contextcite", {"n_ablations": 32}, None),
    "tracllm": ("tracllm", {}, Budget(forward_passes=150)),
}
BASELINES = ("random", "longest", "overlap query", "overlap query+answer", "bm25 query+answer")

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    re.findall(
        r"\w+",
        "a an the of in on at to for from by with and or but is are was were be been being what "
        "which who whom whose when where why how that this these those it its as into than then "
        "did do does has have had not no yes",
    )
)


# --- data -------------------------------------------------------------------------------------
def load_cases(path: Path, sources: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
    """The cases of ``sources`` in file order, at most ``limit`` per source."""
    if not path.is_file():
        raise SystemExit(f"no data at {path}: pass --data PATH to context_qa/dev.jsonl")
    cases, seen = [], Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        if case["source"] in sources and (limit is None or seen[case["source"]] < limit):
            seen[case["source"]] += 1
            cases.append(case)
    return cases


def gold_units(units: Any, gold_sentences: Sequence[str]) -> list[int]:
    """Indices of the units that overlap a gold sentence by >= 50 % of the shorter one's
    characters (gold sentences are located by exact search in the joined context)."""
    text, spans = units.text, [(u.start, u.end) for u in units]
    gold = []
    for sentence in gold_sentences:
        start = text.find(sentence)
        if start < 0:
            raise ValueError(f"gold sentence not in the context: {sentence[:60]!r}")
        g0, g1 = start, start + len(sentence)
        for i, (u0, u1) in enumerate(spans):
            shared = min(u1, g1) - max(u0, g0)
            if shared > 0 and shared >= 0.5 * min(u1 - u0, g1 - g0):
                gold.append(i)
    return sorted(set(gold))


# --- baselines --------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def bm25(sentences: Sequence[str], query: str, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Okapi BM25 of each sentence for ``query``, IDF over the given sentences."""
    docs = [words(s) for s in sentences]
    n, avg = len(docs), max(np.mean([len(d) for d in docs]), 1.0)
    df = Counter(w for d in docs for w in set(d))
    scores = np.zeros(n)
    for w in set(words(query)):
        idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(w)
            scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avg))
    return scores


def baseline_scores(name: str, sentences: Sequence[str], query: str, answer: str, seed: int):
    """Scores of one baseline (higher = more important); ties keep text order."""
    if name == "random":
        return np.random.default_rng(seed).random(len(sentences))
    if name == "longest":
        return np.array([len(s) for s in sentences], dtype=float)
    if name.startswith("overlap"):
        probe = set(words(query + (" " + answer if "answer" in name else "")))
        return np.array([len(probe & set(words(s))) for s in sentences], dtype=float)
    if name.startswith("bm25"):
        return bm25(sentences, query + " " + answer)
    raise ValueError(name)


# --- metrics ----------------------------------------------------------------------------------
def order(scores: np.ndarray) -> list[int]:
    """Units best first; NaN last; ties in text order."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return [int(i) for i in np.argsort(-s, kind="stable")]


def plausibility(ranking: list[int], gold: list[int]) -> dict[str, float]:
    g, k = set(gold), max(len(gold), 1)
    return {"p1": float(ranking[0] in g), "rk": len(g & set(ranking[:k])) / k}


class Faithfulness:
    """Deletion and keep values of a case's response, on its own cached scorer (not charged to
    the methods), with leave-one-out's ranking as the reference."""

    def __init__(self, task: Any, k: int) -> None:
        self.scorer, self.n, self.k = task.scorer(), task.n_units, max(1, min(k, task.n_units - 1))
        self.full = float(self.scorer(np.ones((1, self.n), dtype=bool))[0])
        self.loo_top: int | None = None

    def __call__(self, ranking: list[int]) -> dict[str, float]:
        masks = np.ones((3, self.n), dtype=bool)
        masks[0, ranking[0]] = False
        masks[1, ranking[: self.k]] = False
        masks[2] = False
        masks[2, ranking[: self.k]] = True
        v = self.scorer(masks)
        out = {
            "drop1": self.full - v[0],
            "dropk": self.full - v[1],
            "keepk": self.full - v[2],
        }
        if self.loo_top is not None:
            out["agree"] = float(ranking[0] == self.loo_top)
        return out


# --- running ----------------------------------------------------------------------------------
def make_task(lm: Any, case: dict[str, Any], response: str) -> Any:
    return attribkit.ContextTask(lm, case["context_passages"], case["query"], response=response)


def run_method(lm: Any, case: dict[str, Any], response: str, label: str) -> dict[str, Any]:
    """Attribute one case with one method on a fresh task: ranking, passes, seconds."""
    method, params, budget = {**METHODS, **HEAVY}[label]
    task = make_task(lm, case, response)
    tokens = lm.tokens_processed
    t0 = time.perf_counter()
    attr = task.attribute(method, budget=budget, **params)
    seconds = time.perf_counter() - t0
    tokens = lm.tokens_processed - tokens
    ranking = [int(i) for i in attr.ranking]
    if "pruned_scores" in attr.extras:
        from attribkit.methods.perturbation.tracllm import full_ranking

        ranking = [int(i) for i in full_ranking(attr)]
    return {
        "ranking": ranking,
        "passes": int(attr.cost.forward_passes),
        "s": seconds,
        "tokens": tokens / lm.count_tokens(task.prompt(), response),
    }


def has_synthetic_heads(lm: Any) -> bool:
    try:
        task = attribkit.ContextTask(lm, ["A b c.", "D e f."], "q?", response="x")
        task.attribute("attention_heads", heads="synthetic")
        return True
    except Exception:
        return False


def run(
    lm: Any,
    cases: Iterable[dict[str, Any]],
    responses: Sequence[str],
    labels: Sequence[str],
    save: Path | None,
    old: Sequence[dict[str, Any]],
    say: Callable[[str], None],
    caps: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Every (case, response, method or baseline) row not already in ``old``; rows are appended
    to ``save`` as they finish. Leave-one-out runs first on a fresh task: its row is also the
    reference (top unit, and its cached passes serve the deletion metrics). ``caps`` limits a
    method to the first N cases of each source."""
    rows: list[dict[str, Any]] = []
    prior = {(r["id"], r["response"], r["method"]): r for r in old}
    seen: Counter[tuple[str, str]] = Counter()
    out = save.open("a", encoding="utf-8") if save else None
    for case in cases:
        seen[(case["source"], "")] += 1
        for mode in responses:
            wanted = [
                x
                for x in ["loo", *BASELINES, *labels]
                if (caps or {}).get(x, math.inf) >= seen[(case["source"], "")]
            ]
            todo = [x for x in dict.fromkeys(wanted) if (case["id"], mode, x) not in prior]
            if not todo:
                continue
            t0 = time.perf_counter()
            loo_row = prior.get((case["id"], mode, "loo"))
            response = case["answer"]
            if loo_row is not None:
                response = loo_row["answer"]
            elif mode == "greedy":  # one greedy generation from the full context
                response = attribkit.ContextTask(
                    lm, case["context_passages"], case["query"], max_new_tokens=GREEDY_TOKENS
                ).response
            ref = make_task(lm, case, response)
            sentences = [u.label for u in ref.units]
            gold = gold_units(ref.units, case["gold_sentences"])
            base = {
                "id": case["id"],
                "source": case["source"],
                "response": mode,
                "n": len(sentences),
                "gold": gold,
                "answer": response,
            }
            if loo_row is None:  # timed on the fresh task, before any evaluation pass
                t1 = time.perf_counter()
                attr = ref.attribute("loo")
                loo_row = {
                    **base,
                    "method": "loo",
                    "ranking": order(attr.scores),
                    "passes": int(attr.cost.forward_passes),
                    "s": time.perf_counter() - t1,
                }
                todo.remove("loo")
                todo.insert(0, "loo")  # its metrics below, from the now-cached passes
            faith = Faithfulness(ref, len(gold))
            faith.loo_top = loo_row["ranking"][0]
            for label in todo:
                if label == "loo":
                    got = {k: loo_row[k] for k in ("ranking", "passes", "s")}
                elif label in BASELINES:
                    seed = int(re.sub(r"\D", "", case["id"]) or 0)
                    scores = baseline_scores(label, sentences, case["query"], response, seed)
                    got = {"ranking": order(scores), "passes": 0, "s": 0.0}
                else:
                    got = run_method(lm, case, response, label)
                row = {
                    **base,
                    "method": label,
                    **got,
                    **plausibility(got["ranking"], gold),
                    **faith(got["ranking"]),
                }
                rows.append(row)
                if out:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
            say(f"{case['id']} {mode}: n={len(sentences)} {time.perf_counter() - t0:.0f}s")
    if out:
        out.close()
    return rows


def speed(lm: Any, cases: Sequence[dict[str, Any]], labels: Sequence[str], k: int) -> str:
    """Cost side by side: the first ``k`` cases of each source, every method of ``labels`` and
    leave-one-out run back to back on each case in this one process (so they share the
    machine's load), gold answer as the response. A table of passes, tokens run (in units of
    the full prompt + response) and seconds per case, and the speed-up over leave-one-out."""
    got: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    seen: Counter[str] = Counter()
    for case in cases:
        seen[case["source"]] += 1
        if seen[case["source"]] > k:
            continue
        for label in dict.fromkeys(["loo", *labels]):
            got[(case["source"], label)].append(run_method(lm, case, case["answer"], label))
    out = []
    for (src, label), runs in got.items():
        loo = got[(src, "loo")]
        s, t = (float(np.mean([r[x] for r in runs])) for x in ("s", "tokens"))
        s0, t0 = (float(np.mean([r[x] for r in loo])) for x in ("s", "tokens"))
        passes = float(np.mean([r["passes"] for r in runs]))
        out.append(
            [
                src,
                label,
                len(runs),
                f"{passes:.1f}",
                f"{t:.1f}",
                f"{s:.2f}",
                f"{s0 / s:.1f}×",
                f"{t0 / t:.1f}×",
            ]
        )
    header = [
        "source",
        "method",
        "cases",
        "passes",
        "tokens ×prompt",
        "s/case",
        "vs LOO (s)",
        "vs LOO (tokens)",
    ]
    return markdown_table(header, out)


# --- table ------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    """One row per (source, response, method): means over cases, with the case count. Within a
    (source, response) the methods that ran on most cases are compared on the same cases (those
    where every one of them ran); methods capped to a few cases (``--caps``) keep theirs."""
    per: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        per[(r["source"], r["response"])][r["method"]].add(r["id"])
    common = {}
    for key, methods in per.items():
        most = max(len(ids) for ids in methods.values())
        full = [ids for ids in methods.values() if len(ids) > most / 2]
        common[key] = set.intersection(*full)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = (r["source"], r["response"])
        if r["id"] in common[key] or len(per[key][r["method"]]) <= len(common[key]) / 2:
            groups[(*key, r["method"])].append(r)
    loo_s = {
        (src, mode): np.mean([r["s"] for r in g])
        for (src, mode, m), g in groups.items()
        if m == "loo"
    }
    rank = {m: i for i, m in enumerate([*BASELINES, *METHODS, *HEAVY])}
    out = []
    for (src, mode, m), g in sorted(groups.items(), key=lambda kv: (*kv[0][:2], rank[kv[0][2]])):

        def mean(key: str, g: list[dict[str, Any]] = g) -> float:
            return float(np.mean([r[key] for r in g if key in r]))

        s = mean("s")
        speed = loo_s.get((src, mode), math.nan) / s if s > 0 else math.inf
        out.append(
            [
                src,
                mode,
                m,
                len(g),
                f"{mean('p1'):.2f}",
                f"{mean('rk'):.2f}",
                f"{mean('drop1'):.2f}",
                f"{mean('dropk'):.2f}",
                f"{mean('keepk'):.2f}",
                f"{mean('agree'):.2f}",
                f"{mean('passes'):.1f}",
                f"{s:.2f}",
                "–" if s == 0 else f"{speed:.1f}×",
            ]
        )
    header = [
        "source",
        "response",
        "method",
        "cases",
        "P@1",
        "R@k",
        "drop@1",
        "drop@k",
        "keep@k ↓",
        "top-1 = LOO",
        "passes",
        "s/case",
        "vs LOO",
    ]
    return markdown_table(header, out)


def filter_rows(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Saved rows of ``--sources``; with ``--methods`` only those methods (leave-one-out and the
    baselines always stay); with ``--limit`` only the first N cases of each source in the data
    file's order."""
    sources = set(args.sources.split(","))
    rows = [r for r in rows if r["source"] in sources]
    if args.methods:
        keep = {*args.methods.split(","), "loo", *BASELINES}
        rows = [r for r in rows if r["method"] in keep]
    if args.limit:
        ids = {c["id"] for c in load_cases(args.data, sorted(sources), args.limit)}
        rows = [r for r in rows if r["id"] in ids]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sources", default="hotpot,squad")
    ap.add_argument("--limit", type=int, default=None, help="cases per source")
    ap.add_argument("--response", default="gold", help="gold, greedy or gold,greedy")
    ap.add_argument("--methods", default=None, help="comma-separated labels (default: all)")
    ap.add_argument("--heavy", action="store_true", help="add contextcite and tracllm")
    ap.add_argument(
        "--caps",
        default="attntrace:8,contextcite 32:8,tracllm:5",
        help="method:N runs a method on the first N cases of each source only",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", type=Path, default=None, help="append rows here (JSONL); resumes")
    ap.add_argument(
        "--load",
        type=Path,
        nargs="*",
        default=[],
        help="only tabulate these files (--sources, --methods and --limit filter the rows)",
    )
    ap.add_argument(
        "--speed", type=int, default=0, help="also time LOO and --methods back to back on K cases"
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    if args.load:
        rows = [json.loads(x) for p in args.load for x in p.read_text().splitlines() if x.strip()]
        rows = filter_rows(rows, args)
    else:
        lm = attribkit.load("smollm2")
        labels = [*METHODS, *(HEAVY if args.heavy else {})]
        if not has_synthetic_heads(lm):
            labels.remove("heads synthetic")
        if args.methods:
            labels = [m for m in args.methods.split(",") if m]
        cases = load_cases(args.data, args.sources.split(","), args.limit)
        old: list[dict[str, Any]] = []
        if args.save and args.save.is_file():
            old = [json.loads(x) for x in args.save.read_text().splitlines() if x.strip()]
        caps = {}
        for item in filter(None, args.caps.split(",")):
            name, _, cap = item.partition(":")
            caps[name] = int(cap)
        responses = args.response.split(",")
        rows = old + run(lm, cases, responses, labels, args.save, old, say, caps)
        if args.speed:
            speed_table = speed(lm, cases, [x for x in labels if x not in HEAVY], args.speed)
    print(environment(["attribkit", "torch", "transformers"], args.threads))
    print()
    print(table(rows))
    if not args.load and args.speed:
        print()
        print(speed_table)


if __name__ == "__main__":
    main()
