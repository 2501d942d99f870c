"""Context traceback: every registered context-attribution method vs the ``context-cite`` package.

Cases come from :mod:`attribkit.tasks.context_cases` (seeded; invented names and codes, so the
bundled model cannot answer from memory): ``needle``, ``birthplace``, ``two_hop``, ``injection``
and ``redundant_injection``, in contexts of 10, 50 and 200 sentences. Every method attributes the
*forced* gold response (``response=case.response``), so no generation is timed; the units are the
case's sentences (``units=case.context`` over the space-joined context).

Methods: every context-kind method registered at run time (``attribkit.list_methods()``, after
importing every module under ``attribkit.methods``), plus the perturbation methods ``loo``,
``shapley`` (permutation sampling), ``lasso_surrogate`` and ``tracllm``, plus the default
(``attribkit.tasks.context.DEFAULT_METHOD``). Missing methods are skipped with a note. Each row
prints the settings it used; expensive methods get fewer cases, permutations or a forward-pass
budget at large n, and a cell stops early once it has spent ``--max-cell-seconds``.

Peer: ``context_cite.ContextCiter`` (PyPI ``context-cite`` 0.0.4) on the same model object, the
same sentences (a partitioner over the case's sentences; its NLTK download is stubbed), the same
forced response (``_cache["output"]`` = chat prompt + response), 32 and 64 ablations.

Metrics per case, averaged per (method, family, n): P@1 (the top unit is gold), R@k for k = the
number of gold units and for k = 5 (TracLLM's convention), forward passes (``Attribution.cost``),
token-equivalents (tokens the model ran on / tokens of the full prompt + response) and wall
seconds of attribution. Rankings use ``extras['ranking']`` when a method provides one (hybrid)
and :func:`attribkit.methods.perturbation.tracllm.full_ranking` for TracLLM. No timed assertions.

Run: ``.venv/bin/python benchmarks/context_traceback.py [--quick] [--cases N] [--sizes 10,50,200]
[--methods a,b] [--families f,g] [--heavy] [--threads 2] [--json out.json]``
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pkgutil
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attribkit
from _table import environment, markdown_table
from attribkit.core.cost import Budget
from attribkit.tasks import context as context_mod
from attribkit.tasks.context_cases import FAMILIES, ContextCase, make_cases

#: Methods always asked for (perturbation methods are not "context" kind, so they are listed).
WANTED = (
    "loo",
    "shapley",
    "contextcite",
    "tracllm",
    "attntrace",
    "attention_heads",
    "hybrid",
)
#: Cases per family at each size (full run) and with --quick.
FULL_CASES = {10: 2, 50: 1, 200: 1}
QUICK_CASES = {10: 1, 50: 1}  # and only the needle and injection families
PEER = "context-cite"


@dataclass
class Plan:
    """How one method runs at one size: params, budget, which cases, and a label for the table.

    ``per_family`` caps the cases per family (None: all of them); ``families`` restricts the
    families (None: all)."""

    params: dict[str, Any] = field(default_factory=dict)
    budget: Budget | None = None
    per_family: int | None = None
    families: tuple[str, ...] | None = None
    label: str = "defaults"


INJECTIONS = ("injection", "redundant_injection")


MID = ("needle", "two_hop", "injection")  # the n=50 subset for the costlier methods


def plan_for(method: str, n: int, quick: bool = False, heavy: bool = False) -> Plan | None:
    """Settings of ``method`` at ``n`` sentences (None = skipped at this size: too expensive).

    The caps keep the full run near 45 minutes on 2 shared cores with 1 torch thread, where a
    pass costs ~0.6 s at n=10, ~2 s at n=50 and ~10 s at n=200. Cheap methods (attention,
    hybrid, the default) run on every case; the others on fewer cases at larger n. ``heavy``
    adds Shapley at n=50 and the ContextCite rows at n=200 (about +25 min)."""
    small, big = n <= 10, n > 50
    if quick and not small and method in ("shapley", f"{PEER} 64"):
        return None
    if not heavy and (
        (method == "shapley" and not small)
        or (big and method in ("contextcite", "lasso_surrogate", f"{PEER} 32"))
    ):
        return None
    if method == "loo":
        # n + 1 passes with prefix reuse: ~10 min per case at n=200.
        if big:
            return None
        return Plan(families=None if small else MID, label="n+1 passes, KV prefix reuse")
    if method == "shapley":
        if big:
            return None  # n_permutations·(n−1)+2 >= 400 passes of ~4k tokens
        perms = 4 if small else 2
        return Plan(
            {"exact": False, "n_permutations": perms},
            per_family=1,
            families=None if small else ("needle",),
            label=f"permutation sampling, {perms} antithetic perms",
        )
    if method in ("contextcite", "lasso_surrogate", f"{PEER} 32"):
        label = {
            "contextcite": "32 ablations, logit-prob value",
            "lasso_surrogate": "32 ablations, log-prob value",
        }.get(method, "32 ablations, batch 1")
        params = {} if method.startswith(PEER) else {"n_ablations": 32}
        return Plan(
            params,
            per_family=1,
            families=None if small else (MID if not big else ("injection",)),
            label=label,
        )
    if method == f"{PEER} 64":
        if not small:
            return None
        return Plan(per_family=1, families=("needle", "injection"), label="64 ablations, batch 1")
    if method == "tracllm":
        perms = 5
        budget = {10: 150, 50: 250}.get(n, 200)
        funcs = ["stc", "loo", "denoised_shapley"] if not big else ["stc", "loo"]
        return Plan(
            {"n_permutations": perms, "score_funcs": funcs},
            budget=Budget(forward_passes=budget),
            per_family=1,
            families=None if small else (INJECTIONS if not big else ("injection",)),
            label=f"K=5, {'+'.join(funcs)}, sh_N={perms}, budget {budget} passes",
        )
    if method == "attntrace":
        return Plan(
            per_family=None if small else 1,
            families=None if small else (MID if not big else ("injection",)),
            label="defaults (paper: B=30, q=0.4, top-5 tokens)",
        )
    return Plan()


def discover_methods() -> tuple[list[str], list[str]]:
    """Import every module under ``attribkit.methods`` (registers methods not yet re-exported);
    return (names, notes about modules that failed to import)."""
    import attribkit.methods as pkg

    notes = []
    for info in pkgutil.walk_packages(pkg.__path__, prefix="attribkit.methods."):
        try:
            importlib.import_module(info.name)
        except Exception as e:  # a module being written by someone else
            notes.append(f"{info.name} does not import: {type(e).__name__}: {e}")
    return [s.name for s in attribkit.list_methods()], notes


def heads_overlap(lm: Any, seed: int, sizes: list[int], families: list[str]) -> list[str]:
    """A note when the model's attention-head file was selected on cases this run also uses
    (same generator seed, size and family: in-sample results for the head-based methods)."""
    try:
        from attribkit.methods.context.heads import load_heads

        selection = load_heads(lm).get("selection", {})
    except Exception:
        return []
    if selection.get("seed") != seed or selection.get("n_sentences") not in sizes:
        return []
    shared = [f for f in selection.get("families", []) if f in families]
    if not shared:
        return []
    return [
        f"WARNING: the heads of {getattr(lm, 'name', 'the model')} were selected on "
        f"{', '.join(shared)} cases with seed {seed} at n={selection['n_sentences']}: the "
        "head-based rows there are in-sample; use another --seed"
    ]


def ranking_of(attr: Any) -> list[int]:
    """A full ranking of the units, best first: ``Attribution.ranking`` (which orders unscored
    units by the method's ``extras['ranking']`` hint), or TracLLM's :func:`full_ranking`."""
    if "pruned_scores" in (getattr(attr, "extras", {}) or {}):
        try:
            from attribkit.methods.perturbation.tracllm import full_ranking

            return [int(i) for i in full_ranking(attr)]
        except ImportError:
            pass
    return [int(i) for i in attr.ranking]


def case_metrics(ranking: list[int], gold: list[int]) -> dict[str, float]:
    """P@1, R@|gold| and R@5 of one ranking."""
    g = set(gold)
    k = len(g)
    return {
        "p1": float(ranking[0] in g),
        "rk": len(g & set(ranking[:k])) / k,
        "r5": len(g & set(ranking[:5])) / k,
    }


class ContextCitePeer:
    """The ``context-cite`` package on attribkit's model object, with the case's sentences as
    sources and the forced response injected into its cache (no generation)."""

    def __init__(self, lm: Any) -> None:
        import nltk

        nltk.download = lambda *a, **k: False  # offline: no punkt_tab download at import
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import context_cite.utils as ccu
            from context_cite import ContextCiter
            from context_cite.context_partitioner import BaseContextPartitioner

        ccu.tqdm = lambda it, **kw: it  # no progress bars in the table output
        self.lm, self.ContextCiter = lm, ContextCiter

        class SentencePartitioner(BaseContextPartitioner):
            def __init__(self, context: str, sentences: list[str]) -> None:
                super().__init__(context)
                self.parts = list(sentences)

            @property
            def num_sources(self) -> int:
                return len(self.parts)

            def split_context(self) -> None:
                pass

            def get_source(self, index: int) -> str:
                return self.parts[index]

            def get_context(self, mask: Any = None) -> str:
                if mask is None:
                    mask = np.ones(self.num_sources, dtype=bool)
                return " ".join(p for p, keep in zip(self.parts, mask, strict=True) if keep)

        self.Partitioner = SentencePartitioner
        import context_cite

        try:
            from importlib import metadata

            self.version = metadata.version("context-cite")
        except Exception:  # pragma: no cover
            self.version = getattr(context_cite, "__version__", "?")

    def attribute(self, case: ContextCase, n_ablations: int) -> tuple[np.ndarray, int]:
        """Scores for the case's sentences and the number of forward passes (= ablations)."""
        lm = self.lm
        citer = self.ContextCiter(
            lm.model,
            lm.tokenizer,
            case.text,
            case.query,
            num_ablations=n_ablations,
            partitioner=self.Partitioner(case.text, case.context),
        )
        _, chat_prompt = citer._get_prompt_ids(return_prompt=True)
        citer._cache["output"] = chat_prompt + case.response  # the forced response, no generation
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = citer.get_attributions(verbose=False)
        return np.asarray(scores, dtype=float), n_ablations


def run_method(
    lm: Any, method: str, case: ContextCase, plan: Plan, peer: ContextCitePeer | None
) -> dict[str, Any]:
    """Attribute one case with one method; returns metrics, passes, token-eq and seconds."""
    if method.startswith(PEER):
        assert peer is not None
        n_abl = int(method.split()[-1])
        t0 = time.perf_counter()
        scores, passes = peer.attribute(case, n_abl)
        seconds = time.perf_counter() - t0
        ranking = [int(i) for i in np.argsort(-scores, kind="stable")]
        return {**case_metrics(ranking, case.gold), "passes": passes, "teq": math.nan, "s": seconds}
    tokens_before = getattr(lm, "tokens_processed", None)
    t0 = time.perf_counter()
    attr = attribkit.attribute_context(
        lm,
        case.text,
        case.query,
        response=case.response,
        units=case.context,
        method=method,
        budget=plan.budget,
        **plan.params,
    )
    seconds = time.perf_counter() - t0
    teq = math.nan
    if tokens_before is not None:
        full = lm.count_tokens(
            context_mod.PROMPT_TEMPLATE.format(context=case.text, query=case.query), case.response
        )
        teq = (lm.tokens_processed - tokens_before) / full
    return {
        **case_metrics(ranking_of(attr), case.gold),
        "passes": int(attr.cost.forward_passes),
        "teq": teq,
        "s": seconds,
    }


def mean(xs: list[float]) -> float:
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(xs)) if xs else math.nan


def f2(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="needle and injection only, 1 case each, n = 10 and 50 (a few minutes)",
    )
    ap.add_argument("--cases", type=int, default=None, help="cases per family at every size")
    ap.add_argument("--sizes", default=None, help="comma-separated sentence counts")
    ap.add_argument("--methods", default=None, help="comma-separated method names (default all)")
    ap.add_argument("--families", default=None, help="comma-separated families (default all)")
    ap.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="case seed (the SmolLM2 heads were selected on seed 0 and checked on seed 1)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument(
        "--heavy",
        action="store_true",
        help="also Shapley at n=50 and ContextCite (ours and the package) at n=200",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip the context-cite package")
    ap.add_argument(
        "--max-cell-seconds",
        type=float,
        default=240.0,
        help="stop running further cases of a (method, n) once it has spent this long",
    )
    ap.add_argument("--json", default=None, help="also write per-case results to this file")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    counts = dict(QUICK_CASES if args.quick else FULL_CASES)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else sorted(counts)
    for n in sizes:
        counts[n] = args.cases if args.cases is not None else counts.get(n, 1)
    if args.families:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
    else:
        families = ["needle", "injection"] if args.quick else list(FAMILIES)

    registered, notes = discover_methods()
    default = context_mod.DEFAULT_METHOD
    context_kind = [s.name for s in attribkit.list_methods() if s.kind == "context"]
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        wanted = list(dict.fromkeys([*WANTED, *context_kind, default]))
    methods = []
    for m in wanted:
        if m.startswith(PEER):
            continue
        if m in registered:
            methods.append(m)
        else:
            notes.append(f"method {m!r} is not registered in this attribkit: skipped")
    peer = None
    print(f"loading smollm2 ({args.threads} threads)...", file=sys.stderr)
    lm = attribkit.load("smollm2")
    if not args.no_peer and (not args.methods or any(m.startswith(PEER) for m in wanted)):
        try:
            peer = ContextCitePeer(lm)
            asked = [m for m in wanted if m.startswith(PEER)]
            both = not asked or PEER in asked
            methods += [m for m in (f"{PEER} 32", f"{PEER} 64") if both or m in asked]
        except Exception as e:
            notes.append(f"context-cite peer unavailable ({type(e).__name__}: {e}): skipped")

    notes += heads_overlap(lm, args.seed, sizes, families)

    # Warm-up (not recorded): one small attribution so first-call overheads are not timed.
    warm = make_cases("needle", 10, 1, seed=10_000)[0]
    attribkit.attribute_context(
        lm, warm.text, warm.query, response=warm.response, units=warm.context
    )

    results: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    spent: dict[tuple[str, int], float] = defaultdict(float)
    labels: dict[tuple[str, int], str] = {}
    t_start = time.perf_counter()
    for n in sizes:
        cases = {f: make_cases(f, n, counts[n], seed=args.seed) for f in families}
        for method in methods:
            plan = plan_for(method, n, args.quick, args.heavy)
            if plan is None and method == default:
                plan = Plan(per_family=1, families=("needle",), label="1 case (scaling target)")
            if plan is None:
                notes.append(f"{method} skipped at n={n} (too expensive; see plan_for and --heavy)")
                continue
            labels[(method, n)] = plan.label
            fams = [f for f in families if plan.families is None or f in plan.families]
            todo = [
                (i, fam)
                for i in range(counts[n])
                if plan.per_family is None or i < plan.per_family
                for fam in fams
            ]
            for i, fam in todo:
                if spent[(method, n)] > args.max_cell_seconds:
                    notes.append(
                        f"{method} at n={n}: stopped after {spent[(method, n)]:.0f}s "
                        f"(--max-cell-seconds {args.max_cell_seconds:.0f})"
                    )
                    break
                case = cases[fam][i]
                try:
                    r = run_method(lm, method, case, plan, peer)
                except Exception as e:
                    notes.append(f"{method} failed at n={n} on {fam} #{i}: {type(e).__name__}: {e}")
                    break
                spent[(method, n)] += r["s"]
                results[(method, fam, n)].append({**r, "case": i})
                print(
                    f"  n={n:<3d} {method:<18s} {fam:<19s} #{i} P@1={r['p1']:.0f} "
                    f"passes={r['passes']:<4d} {r['s']:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
    total = time.perf_counter() - t_start

    header = ["method", "settings", "n", "family", "cases", "P@1", "R@k", "R@5", "passes"]
    header += ["T-eq", "s/case"]
    rows = []
    for method in methods:
        name = f"{method} (default)" if method == default else method
        for n in sizes:
            per_family = [(f, results.get((method, f, n), [])) for f in families]
            every = [r for _, rs in per_family for r in rs]
            if not every:
                continue
            for fam, rs in [*per_family, ("all", every)]:
                if not rs:
                    continue
                rows.append(
                    [
                        name,
                        labels.get((method, n), ""),
                        n,
                        fam,
                        len(rs),
                        f2(mean([r["p1"] for r in rs])),
                        f2(mean([r["rk"] for r in rs])),
                        f2(mean([r["r5"] for r in rs])),
                        f"{mean([r['passes'] for r in rs]):.0f}",
                        f"{mean([r['teq'] for r in rs]):.1f}".replace("nan", "–"),
                        f"{mean([r['s'] for r in rs]):.2f}",
                    ]
                )

    pkgs = ["attribkit", "torch", "transformers", "context-cite", "numpy", "scikit-learn"]
    print(f"# Context traceback on smollm2 ({environment(pkgs, threads=args.threads)})")
    print(
        f"cases per family: {', '.join(f'n={n}: {counts[n]}' for n in sizes)}; seed {args.seed}; "
        f"forced gold responses; default method: {default!r}; total {total / 60:.1f} min\n"
    )
    print(markdown_table(header, rows))
    print()
    for line in targets(results, default, families):
        print(line)
    if notes:
        print("\nnotes:")
        for note in dict.fromkeys(notes):
            print(f"- {note}")
    if args.json:
        out = {f"{m}|{f}|{n}": rs for (m, f, n), rs in results.items()}
        Path(args.json).write_text(json.dumps(out, indent=1))


def targets(
    results: dict[tuple[str, str, int], list[dict[str, Any]]], default: str, families: list[str]
) -> list[str]:
    """The issue's three targets, checked on this run's numbers."""

    def pooled(method: str, n: int, fams: list[str] | None = None) -> list[dict[str, Any]]:
        return [r for f in (fams or families) for r in results.get((method, f, n), [])]

    lines = ["targets (issue 3):"]
    d10, l10 = pooled(default, 10), pooled("loo", 10)
    if d10 and l10:
        p_d, p_l = mean([r["p1"] for r in d10]), mean([r["p1"] for r in l10])
        s_d = mean([r["s"] for r in d10])
        ok = p_d >= p_l and s_d <= 1.5
        lines.append(
            f"- n=10: default {default!r} P@1 {p_d:.2f} vs loo {p_l:.2f}, {s_d:.2f} s/case "
            f"(target: >= loo at <= 1.5 s): {'MET' if ok else 'NOT MET'}"
        )
    else:
        lines.append("- n=10 default vs loo: not measured in this run")
    d200 = pooled(default, 200)
    if d10 and d200:
        ratio = mean([r["passes"] for r in d200]) / mean([r["passes"] for r in d10])
        lines.append(
            f"- passes of {default!r} at n=200 / n=10 = {ratio:.2f} (target <= 3): "
            f"{'MET' if ratio <= 3 else 'NOT MET'}"
        )
    else:
        lines.append("- default passes n=200 / n=10: not measured in this run (needs n=10 and 200)")
    inj = [r for n in (10, 50, 200) for r in pooled("tracllm", n, ["injection"])]
    if inj:
        p = mean([r["p1"] for r in inj])
        lines.append(
            f"- tracllm (budgeted) P@1 on injection cases: {p:.2f} over {len(inj)} cases "
            f"(target >= 0.9): {'MET' if p >= 0.9 else 'NOT MET'}"
        )
    else:
        lines.append("- tracllm on injection: not measured in this run")
    return lines


if __name__ == "__main__":
    main()
