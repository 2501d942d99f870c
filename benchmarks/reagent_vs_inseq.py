"""ReAGent: attribkit's ``reagent`` against Inseq 0.7.1's ReAGent, on copy and generation prompts.

Workload: the bundled SmolLM2-135M-Instruct (``attribkit.load("smollm2")``, float32, CPU, one torch
thread by default). Both implementations get the same chat-formatted prompt ids, the same response
ids and explain the same rows (one per response token, target p(y_t | prompt, y_<t)):

* copy prompts: ``PROMPTS`` (8, on which attribkit's defaults were chosen), ``HELD_OUT`` (8, never
  used to choose anything) and ``ISSUE_FORM`` (issue 24's "Say back the following word and nothing
  more: <word>") from ``copy_task.py``, with their given responses. A hit: row 0's largest score
  is on the copied word's column (only row 0 is attributed: ``span=(0, 1)``).
* generation prompts: the 20 ``PROMPTS`` of ``generation.py``, each with a greedy response of
  ``--tokens`` tokens (2; generated once), every row attributed.

Configurations:

* ``attribkit``: ``reagent(task, seed=s)`` with its defaults.
* ``attribkit-before`` (opt-in, ``--configs``): ``sampler="lm_top1", delta="prob"``, the
  defaults before issue 24.
* ``inseq``: Inseq's own ReAGent classes (``inseq.attr.feat.ops.reagent_core``: the delta-prob
  evaluator, the top-k stopping condition, the uniform replacer, the aggregate rationalizer) wired
  as ``inseq.attr.feat.ops.reagent.Reagent`` wires them, with its defaults (keep_top_n=5,
  stopping_condition_top_k=3, replacing_ratio=0.3, num_probes=16), driven per row as its
  ``attribute`` does for a decoder-only model (the whole prefix, chat template included, and the
  target id). Two departures, both forced: ``max_probe_steps`` is ``--inseq-max-steps`` (100,
  attribkit's cap; Inseq's 3000 takes ~15 CPU minutes per row that never converges), and the
  sampler is a uniform draw over the non-special vocabulary (the authors' ``uniform`` sampler)
  instead of Inseq's POS-tag sampler, which needs NLTK's tagger data, a download this machine
  cannot make (Inseq has no other sampler). Seeded with ``torch.manual_seed``.

Columns: copy hits per list; agreement with Inseq per row (same top column; Spearman correlation
over the columns the row can see: user-prompt tokens and earlier response tokens, the chat
template left out since attribkit never scores it); forward passes (sequences the model ran) and
seconds per prompt; rows where no Inseq probe met its stopping rule (Inseq then returns NaN:
counted as misses and left out of the correlations). Several seeds with ``--seeds``.

Run: ``.venv/bin/python benchmarks/reagent_vs_inseq.py [--quick] [--seeds 1] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, fmt, markdown_table
from copy_task import HELD_OUT, ISSUE_FORM, PROMPTS

CONFIGS = ("attribkit", "inseq", "attribkit-before")
DEFAULT_CONFIGS = ("attribkit", "inseq")


def gen_prompts() -> list[str]:
    from generation import PROMPTS as GEN

    return list(GEN)


class _PassCounter:
    """Counts the sequences every forward of ``model`` runs (a forward pre-hook)."""

    def __init__(self, model: Any) -> None:
        self.n = 0

        def hook(_m: object, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                ids = kwargs["inputs_embeds"]
            self.n += int(ids.shape[0])

        self.handle = model.register_forward_pre_hook(hook, with_kwargs=True)


def make_inseq(lm: Any, max_steps: int) -> Any:
    """Inseq's ReAGent pipeline with Inseq's defaults, a uniform non-special sampler."""
    from inseq.attr.feat.ops.reagent_core import (
        AggregateRationalizer,
        DeltaProbImportanceScoreEvaluator,
        TopKStoppingConditionEvaluator,
        UniformTokenReplacer,
    )
    from inseq.attr.feat.ops.reagent_core.token_sampler import TokenSampler

    tok = lm.tokenizer
    special = set(tok.all_special_ids)
    n_vocab = min(lm.model.get_input_embeddings().num_embeddings, len(tok))
    allowed = torch.tensor([i for i in range(n_vocab) if i not in special])

    class UniformNonSpecial(TokenSampler):
        def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            pick = torch.randint(len(allowed), input_ids.shape)
            return allowed[pick].to(input_ids.device)

    sampler = UniformNonSpecial()
    stop = TopKStoppingConditionEvaluator(
        model=lm.model, sampler=sampler, top_k=3, keep_top_n=5, keep_ratio=None, invert_keep=False
    )
    evaluator = DeltaProbImportanceScoreEvaluator(
        model=lm.model,
        tokenizer=tok,
        token_replacer=UniformTokenReplacer(sampler=sampler, ratio=0.3),
        stopping_condition_evaluator=stop,
        max_steps=max_steps,
    )
    return AggregateRationalizer(
        importance_score_evaluator=evaluator,
        batch_size=16,
        overlap_threshold=0,
        overlap_strict_pos=True,
        keep_top_n=5,
        keep_ratio=None,
    )


def run_inseq(rationalizer: Any, task: Any, seed: int) -> np.ndarray:
    """(rows, columns) scores: one rationalizer call per row on the row's whole prefix."""
    torch.manual_seed(seed)
    n_p = len(task.prompt_ids)
    per_pos = np.zeros((task.n_rows, len(task.ids)))
    for i, r in enumerate(task.rows):
        ids = torch.tensor([task.ids[: n_p + r]])
        rationalizer(ids, torch.tensor([task.response_ids[r]]))
        per_pos[i, : n_p + r] = rationalizer.mean_importance_score.double().numpy()
    return task.to_columns(per_pos)


def run_one(cfg: str, lm: Any, task: Any, seed: int, rationalizer: Any) -> dict[str, Any]:
    counter = _PassCounter(lm.model)
    t0 = time.perf_counter()
    try:
        if cfg == "inseq":
            scores = run_inseq(rationalizer, task, seed)
        else:
            kw = {"sampler": "lm_top1", "delta": "prob"} if cfg == "attribkit-before" else {}
            scores = task.attribute("reagent", seed=seed, **kw).scores
    finally:
        counter.handle.remove()
    return {"scores": scores, "seconds": time.perf_counter() - t0, "passes": counter.n}


def compare(a: np.ndarray, b: np.ndarray, vis: np.ndarray) -> tuple[list[bool], list[float]]:
    """Per row with finite scores in both: same top column, Spearman correlation."""
    from scipy.stats import spearmanr

    same, rho = [], []
    for i in range(len(a)):
        x, y = a[i, vis[i]], b[i, vis[i]]
        if not (np.isfinite(x).all() and np.isfinite(y).all()) or len(x) < 2:
            continue
        same.append(int(np.argmax(x)) == int(np.argmax(y)))
        r = spearmanr(x, y).statistic
        rho.append(float(r) if np.isfinite(r) else 0.0)
    return same, rho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 generation prompts, 1 token")
    parser.add_argument("--gen", type=int, default=20, help="generation prompts (of 20)")
    parser.add_argument("--lists", default="train,held-out,issue form", help="copy lists to run")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=2, help="greedy response tokens")
    parser.add_argument("--inseq-max-steps", type=int, default=100)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=",".join(CONFIGS))
    parser.add_argument(
        "--save",
        type=Path,
        help="JSONL of per-prompt results, appended as each finishes; a rerun with the same "
        "file skips what it holds (so a long Inseq run survives a crash)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import warnings

    import attribkit as ak
    from attribkit.tasks.generation import GenerationTask

    warnings.filterwarnings("ignore")
    configs = [c for c in args.configs.split(",") if c]
    lm = ak.load("smollm2")
    rationalizer = make_inseq(lm, args.inseq_max_steps) if "inseq" in configs else None
    n_gen, n_tok = (4, 1) if args.quick else (args.gen, args.tokens)
    copy_lists = {"train": PROMPTS, "held-out": HELD_OUT, "issue form": ISSUE_FORM}
    copy_lists = {k: v for k, v in copy_lists.items() if k in args.lists.split(",")}
    items: list[tuple[str, Any, str | None]] = []
    for name, prompts in copy_lists.items():
        for prompt, response, word in prompts:
            # row 0 only (the first response token, the one a copy hit is read from)
            task = GenerationTask(lm, prompt, response, span=(0, 1))
            items.append((name, task, word))
    for prompt in gen_prompts()[:n_gen]:
        items.append(("gen", GenerationTask(lm, prompt, max_new_tokens=n_tok), None))

    saved = _load_saved(args.save)
    # results[cfg][seed] = list over items
    results: dict[str, list[list[dict[str, Any]]]] = {c: [] for c in configs}
    for seed in range(args.seeds):
        for cfg in configs:
            out = []
            for j, (name, task, _) in enumerate(items):
                key = (cfg, seed, name, task.prompt, tuple(task.response_ids))
                if key not in saved:
                    saved[key] = run_one(cfg, lm, task, seed, rationalizer)
                    _append_saved(args.save, key, saved[key])
                out.append(saved[key])
                print(f"  {cfg} {j + 1}/{len(items)} {out[-1]['seconds']:.0f} s", file=sys.stderr)
            results[cfg].append(out)
            print(f"seed {seed} {cfg}: {sum(o['seconds'] for o in out):.0f} s", file=sys.stderr)

    def top_label(task: Any, row: np.ndarray) -> str | None:
        if not np.isfinite(row[task.visible()[0]]).all():
            return None
        return task.columns[int(np.nanargmax(row))].label

    rows = []
    for cfg in configs:
        hits = {k: [] for k in copy_lists}
        agree = {"copy": [], "gen": []}
        rho = {"copy": [], "gen": []}
        nan_rows, secs, passes = 0, [], []
        for seed, out in enumerate(results[cfg]):
            for k in copy_lists:
                hits[k].append(0)
            for (name, task, word), o in zip(items, out, strict=True):
                s = o["scores"]
                nan_rows += int((~np.isfinite(np.where(task.visible(), s, 0.0))).any(1).sum())
                secs.append(o["seconds"])
                passes.append(o["passes"])
                if word is not None:
                    hits[name][-1] += top_label(task, s[0]) == word
                if cfg != "inseq" and "inseq" in results:
                    ref = results["inseq"][seed][len(passes) - 1 - seed * len(items)]["scores"]
                    same, r = compare(s, ref, task.visible())
                    group = "gen" if word is None else "copy"
                    agree[group] += same
                    rho[group] += r
        row = [cfg]
        for k, prompts in copy_lists.items():
            row.append(f"{np.mean(hits[k]):.3g}/{len(prompts)}" + _spread(hits[k]))
        for g in ("copy", "gen"):
            row.append(f"{np.mean(agree[g]):.2f} ({len(agree[g])})" if agree[g] else "—")
        for g in ("copy", "gen"):
            row.append(fmt(float(np.mean(rho[g]))) if rho[g] else "—")
        row += [f"{np.mean(passes):.0f}", fmt(float(np.mean(secs))), str(nan_rows)]
        rows.append(row)
    header = [
        "config",
        *(f"copy hits {k}" for k in copy_lists),
        "top-1 = Inseq's (copy rows)",
        "(gen rows)",
        "Spearman vs Inseq (copy)",
        "(gen)",
        "fwd passes / prompt",
        "s / prompt",
        "NaN rows",
    ]
    print(environment(["attribkit", "torch", "transformers", "inseq"], args.threads))
    print(
        f"{len(items) - n_gen} copy prompts, {n_gen} generation prompts × {n_tok} tokens, "
        f"seeds 0..{args.seeds - 1}; Inseq max_probe_steps {args.inseq_max_steps}"
    )
    print(markdown_table(header, rows))
    # per copy prompt: each config's top column (seed 0)
    detail = []
    for j, (name, task, word) in enumerate(items):
        if word is None:
            continue
        cells = [f"{name}: {task.prompt}"]
        for cfg in configs:
            top = top_label(task, results[cfg][0][j]["scores"][0])
            cells.append(("**" if top == word else "") + repr(top) + ("**" if top == word else ""))
        detail.append(cells)
    print()
    print(markdown_table(["copy prompt (seed 0)", *configs], detail))


def _load_saved(path: Path | None) -> dict[tuple, dict[str, Any]]:
    """Results saved by earlier runs, keyed by (config, seed, list, prompt, response ids)."""
    if path is None or not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = (r["config"], r["seed"], r["list"], r["prompt"], tuple(r["response_ids"]))
        scores = np.array([[np.nan if v is None else v for v in row] for row in r["scores"]])
        out[key] = {"scores": scores, "seconds": r["seconds"], "passes": r["passes"]}
    return out


def _append_saved(path: Path | None, key: tuple, result: dict[str, Any]) -> None:
    if path is None:
        return
    cfg, seed, name, prompt, response_ids = key
    scores = [[v if np.isfinite(v) else None for v in row] for row in result["scores"].tolist()]
    record = {"config": cfg, "seed": seed, "list": name, "prompt": prompt}
    record |= {"response_ids": list(response_ids), "scores": scores}
    record |= {"seconds": result["seconds"], "passes": result["passes"]}
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _spread(values: list[int]) -> str:
    return (
        f" ({min(values)}–{max(values)})" if len(values) > 1 and min(values) != max(values) else ""
    )


if __name__ == "__main__":
    main()
