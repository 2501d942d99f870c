"""Learning per-head weights of ``attention_heads`` from ablation targets on real data (AT2).

After Cohen-Wang, Chuang, Mądry, "Learning to Attribute with Attention" (AT2, 2025): a unit's
score is a linear, non-negative, L1-normalised combination of per-head attention features, and the
weights are fit so that the score tracks what ablating the unit does to the response. Here the
ablation targets are leave-one-out drops (the fall of log p(response) when one unit is removed,
:func:`attribkit.methods.perturbation` ``loo``), one target per unit of each training example; the
features are :func:`~attribkit.methods.context.attention_reading.head_unit_features` of every
(layer, head). This module is written from the paper's description; it does not reuse its code.

Pipeline (the command line is ``attribkit train-heads --data FILE.jsonl --out FILE.json``):

1. :func:`collect_examples`: for each case (dev.jsonl schema: ``id, context_passages, query,
   answer, gold_sentences``), one attention pass for the features ``[L·H, n]`` and ``n + 1``
   passes (prefix key-value reuse) for the LOO targets ``[n]``; cached per case as ``.npz`` so
   that refits cost no model calls.
2. :func:`fit_head_weights`: non-negative weights, L1-normalised, maximising the mean per-example
   Pearson correlation between scores and targets (AT2's loss; ``objective="pearson"``) or a
   listwise softmax cross-entropy towards the target ranking (``objective="listwise"``), by Adam.
3. :func:`sparsify`: keep the ``k`` largest weights, renormalised (the shipped file).
4. :func:`evaluate_weights`: P@1 against the gold sentences, top-1 agreement with LOO, mean
   Pearson with LOO, on held-out examples (no model calls).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.core.jsonio import jsonl_lines
from attribkit.methods.context.attention_reading import all_heads, head_unit_features
from attribkit.methods.context.heads import heads_file_header

__all__ = [
    "OBJECTIVES",
    "collect_example",
    "collect_examples",
    "evaluate_weights",
    "fit_head_weights",
    "gold_units",
    "read_cases",
    "sparsify",
    "train_heads",
]

#: The fitting objectives of :func:`fit_head_weights`.
OBJECTIVES = ("pearson", "listwise")


# --- data -------------------------------------------------------------------------------------
def read_cases(path: str | Path, max_examples: int | None = None) -> list[dict[str, Any]]:
    """Cases from a JSONL file in the schema of ``context_qa/dev.jsonl`` (``id``,
    ``context_passages``, ``query``, ``answer``, ``gold_sentences``, ``meta``). InputError on a
    missing file, a malformed line or no cases. No model calls."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no case file at {p}")
    cases = []
    for number, case in jsonl_lines(p.read_text(encoding="utf-8"), p):
        missing = {"context_passages", "query", "answer"} - set(case)
        if missing:
            raise InputError(f"{p}:{number} lacks {sorted(missing)}")
        case.setdefault("id", f"line{number}")
        case.setdefault("gold_sentences", [])
        case.setdefault("meta", {})
        cases.append(case)
    if not cases:
        raise InputError(f"{p} holds no cases")
    return cases[:max_examples] if max_examples else cases


def gold_units(units: Any, gold_sentences: Sequence[str]) -> list[int]:
    """Indices of the units overlapping a gold sentence by ≥ 50 % of the shorter one's
    characters (the gold sentence located by exact search in the units' text; sentences not
    found are skipped). No model calls."""
    text, spans = units.text, [(u.start, u.end) for u in units]
    gold: set[int] = set()
    for sentence in gold_sentences:
        start = text.find(sentence)
        if start < 0:
            continue
        g0, g1 = start, start + len(sentence)
        for i, (u0, u1) in enumerate(spans):
            shared = min(u1, g1) - max(u0, g0)
            if shared > 0 and shared >= 0.5 * min(u1 - u0, g1 - g0):
                gold.add(i)
    return sorted(gold)


def _cache_key(lm: Any, case: dict[str, Any]) -> str:
    blob = json.dumps(
        [getattr(lm, "name", ""), case["context_passages"], case["query"], case["answer"]],
        ensure_ascii=False,
    )
    digest = hashlib.sha1(blob.encode("utf-8")).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(case.get("id", "case")))[:60]
    return f"{stem}-{digest}"


def collect_example(lm: Any, case: dict[str, Any]) -> dict[str, Any]:
    """Features and LOO targets of one case, with the gold answer as the response.

    Returns ``{"id", "features": [L·H, n] float32, "targets": [n] (LOO drop of log p(answer),
    nats), "gold": [unit indices], "n_units", "seconds", "passes"}``. Costs one attention pass
    (all heads) plus ``n + 1`` scoring passes (prefix key-value reuse) for ``n`` units.
    """
    from attribkit.tasks.context import ContextTask

    t0 = time.perf_counter()
    task = ContextTask(lm, case["context_passages"], case["query"], response=case["answer"])
    features = head_unit_features(task, "all").astype(np.float32)
    loo = task.attribute("loo")
    targets = np.asarray(loo.scores, dtype=np.float64)
    return {
        "id": str(case.get("id")),
        "source": case.get("source"),
        "split": case.get("meta", {}).get("split"),
        "features": features,
        "targets": targets,
        "gold": gold_units(task.units, case.get("gold_sentences", [])),
        "n_units": len(task.units),
        "seconds": time.perf_counter() - t0,
        "passes": int(getattr(loo.cost, "forward_passes", 0)) + 1,
    }


def _save(path: Path, ex: dict[str, Any]) -> None:
    meta = {k: ex[k] for k in ("id", "source", "split", "gold", "n_units", "seconds", "passes")}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, features=ex["features"], targets=ex["targets"], meta=json.dumps(meta))
    tmp.replace(path)


def _load(path: Path) -> dict[str, Any]:
    with np.load(path) as z:
        ex = json.loads(str(z["meta"]))
        ex["features"] = z["features"]
        ex["targets"] = z["targets"]
    return ex  # type: ignore[no-any-return]


def collect_examples(
    lm: Any,
    cases: Iterable[dict[str, Any]],
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`collect_example` for each case, cached as ``<cache_dir>/<id>-<hash>.npz`` (the hash
    covers the model name, passages, query and answer): a cached case costs no model calls.
    Cases that fail (e.g. longer than the model's window) are skipped with a log line."""
    from attribkit.core.errors import AttribkitError

    say = log or (lambda _m: None)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    out = []
    for k, case in enumerate(cases):
        path = cache / f"{_cache_key(lm, case)}.npz" if cache is not None else None
        if path is not None and path.is_file():
            ex = _load(path)
        else:
            try:
                ex = collect_example(lm, case)
            except AttribkitError as e:
                say(f"skip {case.get('id')}: {e}")
                continue
            if path is not None:
                _save(path, ex)
            say(
                f"[{k + 1}] {ex['id']}: {ex['n_units']} units, {ex['passes']} passes, "
                f"{ex['seconds']:.1f} s"
            )
        ex["split"] = case.get("meta", {}).get("split", ex.get("split"))
        out.append(ex)
    return out


# --- fitting ----------------------------------------------------------------------------------
def _check(features: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(features) == 0:
        raise InputError("fit_head_weights needs at least one example (features, targets)")
    if len(features) != len(targets):
        raise InputError(f"{len(features)} feature arrays but {len(targets)} target arrays")
    feats = [np.asarray(f, dtype=np.float64) for f in features]
    n_heads = feats[0].shape[0] if feats[0].ndim == 2 else -1
    for i, (f, t) in enumerate(zip(feats, targets, strict=True)):
        t = np.asarray(t)
        if f.ndim != 2 or f.shape[0] != n_heads:
            raise InputError(
                f"example {i}: features must be [heads, units] with {n_heads} heads, got {f.shape}"
            )
        if t.shape != (f.shape[1],):
            raise InputError(
                f"example {i}: {f.shape[1]} units in the features but targets of shape {t.shape}"
            )
        if not (np.isfinite(f).all() and np.isfinite(t).all()):
            raise InputError(f"example {i}: non-finite features or targets")
    return feats


def fit_head_weights(
    features: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    objective: str = "pearson",
    steps: int = 1000,
    lr: float = 0.01,
    temperature: float = 1.0,
    example_weights: Sequence[float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Non-negative head weights, summing to 1, that make ``w @ features[i]`` track
    ``targets[i]``.

    ``features[i]`` is ``[H, n_i]`` (per-head unit features of example ``i``, e.g.
    :func:`head_unit_features` of every head), ``targets[i]`` is ``[n_i]`` (e.g. leave-one-out
    drops). Objectives: ``"pearson"`` (AT2's loss): minimise the mean over examples of minus the
    Pearson correlation between the scores and the targets across the example's units;
    ``"listwise"``: softmax cross-entropy between the example's standardised scores and the
    target distribution ``softmax(z(targets) / temperature)`` (z = per-example standardisation),
    which weighs the top of the ranking. ``example_weights`` (one per example, ≥ 0) weigh the
    examples in the mean (e.g. to balance data sources); default equal. Examples with fewer than
    2 units or constant targets carry no signal and are ignored. Both losses are scale-free in ``w``; the weights are kept
    non-negative by projection after each Adam step (full batch, ``steps`` steps, rate ``lr``,
    cosine decay) from the uniform start 1/H, then L1-normalised.

    Returns an ``[H]`` float64 array (≥ 0, sum 1). No model calls. InputError on no examples,
    mismatched shapes or non-finite values.
    """
    import torch

    if objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if steps < 0 or lr <= 0 or temperature <= 0:
        raise InputError("steps must be >= 0, lr and temperature > 0")
    feats = _check(features, targets)
    ew_all = np.ones(len(feats)) if example_weights is None else np.asarray(example_weights, float)
    if ew_all.shape != (len(feats),) or not np.isfinite(ew_all).all() or (ew_all < 0).any():
        raise InputError(f"example_weights must be {len(feats)} finite numbers >= 0")
    keep = [
        i
        for i, t in enumerate(targets)
        if feats[i].shape[1] >= 2 and float(np.ptp(np.asarray(t, float))) > 0
    ]
    keep = [i for i in keep if ew_all[i] > 0]
    n_heads = feats[0].shape[0]
    if not keep:
        return np.full(n_heads, 1.0 / n_heads)
    n_max = max(feats[i].shape[1] for i in keep)
    F = np.zeros((len(keep), n_heads, n_max))
    T = np.zeros((len(keep), n_max))
    M = np.zeros((len(keep), n_max), dtype=bool)
    for j, i in enumerate(keep):
        n = feats[i].shape[1]
        F[j, :, :n], T[j, :n], M[j, :n] = feats[i], np.asarray(targets[i], float), True
    torch.manual_seed(seed)
    Ft, Tt, Mt = torch.tensor(F), torch.tensor(T), torch.tensor(M)
    ew = torch.tensor(ew_all[keep] / ew_all[keep].sum())
    cnt = Mt.sum(1, keepdim=True).double()

    def standardise(x: Any) -> Any:
        mean = (x * Mt).sum(1, keepdim=True) / cnt
        d = (x - mean) * Mt
        return d / (d.pow(2).sum(1, keepdim=True) / cnt).sqrt().clamp_min(1e-12)

    tz = standardise(Tt)
    target_p = torch.softmax(torch.where(Mt, tz / temperature, -torch.inf), dim=1)
    w = torch.full((n_heads,), 1.0 / n_heads, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr / n_heads)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    for _ in range(steps):
        opt.zero_grad()
        scores = torch.einsum("h,bhn->bn", w, Ft)
        sz = standardise(scores)
        if objective == "pearson":
            loss = -(ew * (sz * tz).sum(1) / cnt.squeeze(1)).sum()
        else:
            logp = torch.log_softmax(torch.where(Mt, sz, -torch.inf), dim=1)
            loss = -(ew * (target_p * torch.where(Mt, logp, 0.0)).sum(1)).sum()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            w.clamp_(min=0.0)
            if float(w.sum()) <= 0:
                w.fill_(1.0 / n_heads)
            w.div_(w.sum())
    out = w.detach().numpy().astype(np.float64)
    return out / out.sum()


def sparsify(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest (positive) weights, renormalised to sum 1: ``(indices, weights)``,
    largest first. No model calls."""
    w = np.asarray(weights, dtype=np.float64)
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    order = np.argsort(-w, kind="stable")[: min(k, w.size)]
    order = order[w[order] > 0] if (w[order] > 0).any() else order[:1]
    kept = w[order] if w[order].sum() > 0 else np.ones(order.size)
    return order, kept / kept.sum()


def evaluate_weights(
    examples: Sequence[dict[str, Any]], weights: np.ndarray, index: np.ndarray | None = None
) -> dict[str, float]:
    """Held-out metrics of a weighted head set on cached examples (no model calls): ``p_at_1``
    (the top unit is gold; examples without gold units are skipped), ``agree_loo`` (the top unit
    is LOO's top unit), ``pearson`` (mean per-example correlation with the LOO drops), ``n``.
    ``index`` selects the heads (rows of each example's features) that ``weights`` weigh;
    ``None``: all rows."""
    w = np.asarray(weights, dtype=np.float64)
    hits, agree, corr = [], [], []
    for ex in examples:
        f = np.asarray(ex["features"], dtype=np.float64)
        f = f if index is None else f[np.asarray(index)]
        s = w @ f
        t = np.asarray(ex["targets"], dtype=np.float64)
        top = int(np.argmax(s))
        if ex.get("gold"):
            hits.append(float(top in set(ex["gold"])))
        agree.append(float(top == int(np.argmax(t))))
        if s.size >= 2 and np.ptp(s) > 0 and np.ptp(t) > 0:
            corr.append(float(np.corrcoef(s, t)[0, 1]))
    return {
        "p_at_1": float(np.mean(hits)) if hits else float("nan"),
        "agree_loo": float(np.mean(agree)) if agree else float("nan"),
        "pearson": float(np.mean(corr)) if corr else float("nan"),
        "n": len(examples),
    }


def _by_source(
    examples: Sequence[dict[str, Any]], weights: np.ndarray, index: np.ndarray | None
) -> dict[str, dict[str, float]]:
    out = {"all": evaluate_weights(examples, weights, index)}
    for src in sorted({str(ex.get("source")) for ex in examples}):
        sub = [ex for ex in examples if str(ex.get("source")) == src]
        out[src] = evaluate_weights(sub, weights, index)
    return out


def _origins(cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct ``meta.origin`` records of the cases (where their raw data came from)."""
    seen: list[dict[str, Any]] = []
    for case in cases:
        origin = case.get("meta", {}).get("origin")
        if isinstance(origin, dict) and origin not in seen:
            seen.append(origin)
    return seen


def train_heads(
    lm: Any,
    cases: Sequence[dict[str, Any]],
    *,
    model_name: str | None = None,
    data_name: str | None = None,
    cache_dir: str | Path | None = None,
    objectives: Sequence[str] = OBJECTIVES,
    n_heads_grid: Sequence[int] = (8, 16, 24, 32),
    balance: Sequence[bool] = (False, True),
    steps: int = 1000,
    temperature: float = 1.0,
    baselines: dict[str, tuple[Sequence[Sequence[int]], Sequence[float]]] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Learn and select a head set of ``lm`` on real cases; returns the heads-file dict.

    Cases with ``meta.split == "val"`` are the validation split (model selection); the others
    are the training split (if no case is marked, the last 20 % are held out). Features and LOO
    targets come from :func:`collect_examples` (cached in ``cache_dir``). For each objective in
    ``objectives`` and each choice in ``balance`` (weigh the examples so that every ``source``
    counts equally, or not) the weights are fit on the training split
    (:func:`fit_head_weights`), cut to each ``k`` in ``n_heads_grid`` (:func:`sparsify`), and
    the candidate with the best validation P@1 + top-1 agreement with LOO, macro-averaged over
    the sources (ties: mean Pearson), is kept. ``baselines``
    (name → (heads, weights)) are evaluated beside it on the same splits.

    Costs one attention pass and ``n + 1`` LOO passes per uncached case; fitting costs no model
    calls. Cite: Cohen-Wang, Chuang, Mądry, "Learning to Attribute with Attention" (2025).
    """
    say = log or (lambda _m: None)
    cases = list(cases)
    if not cases:
        raise InputError("train_heads needs cases (context_passages, query, answer)")
    heads = all_heads(lm)
    examples = collect_examples(lm, cases, cache_dir, log)
    if not examples:
        raise InputError("no case could be scored; check the data and the model's window")
    if any(ex["features"].shape[0] != len(heads) for ex in examples):
        raise InputError("cached features do not match this model's heads; clear the cache")
    marked = any(ex.get("split") == "val" for ex in examples)
    if marked:
        val = [ex for ex in examples if ex.get("split") == "val"]
        train = [ex for ex in examples if ex.get("split") != "val"]
    else:
        cut = max(1, round(0.8 * len(examples)))
        train, val = examples[:cut], examples[cut:] or examples[:cut]
    say(f"{len(train)} training and {len(val)} validation examples")
    feats = [ex["features"] for ex in train]
    targs = [ex["targets"] for ex in train]
    sources = [str(ex.get("source")) for ex in train]
    per_source = {src: sources.count(src) for src in set(sources)}
    candidates = []
    for objective in objectives:
        for balanced in balance:
            ew = [1.0 / per_source[src] for src in sources] if balanced else None
            t0 = time.perf_counter()
            w = fit_head_weights(
                feats,
                targs,
                objective=objective,
                steps=steps,
                temperature=temperature,
                example_weights=ew,
            )
            fit_s = time.perf_counter() - t0
            for k in n_heads_grid:
                idx, wk = sparsify(w, k)
                by = _by_source(val, wk, idx)
                macro = [m for src, m in by.items() if src != "all"]
                score = (
                    float(np.mean([np.nan_to_num(m["p_at_1"]) + m["agree_loo"] for m in macro])),
                    float(np.mean([np.nan_to_num(m["pearson"]) for m in macro])),
                )
                say(
                    f"{objective} balanced={balanced} k={k}: val (P@1 + agree) macro "
                    f"{score[0]:.3f}, pearson {score[1]:.3f}; "
                    + ", ".join(
                        f"{src} P@1 {m['p_at_1']:.2f} agree {m['agree_loo']:.2f}"
                        for src, m in by.items()
                    )
                )
                candidates.append((score, objective, k, idx, wk, w, fit_s, balanced))
    candidates.sort(key=lambda c: c[0], reverse=True)
    _, objective, k, idx, wk, w_full, fit_s, balanced = candidates[0]
    chosen = [heads[i] for i in idx]
    uniform = np.full(len(heads), 1.0 / len(heads))
    results = {
        "learned": {"train": _by_source(train, wk, idx), "val": _by_source(val, wk, idx)},
        "learned_all_270": {
            "train": _by_source(train, w_full, None),
            "val": _by_source(val, w_full, None),
        },
        "all_heads": {
            "train": _by_source(train, uniform, None),
            "val": _by_source(val, uniform, None),
        },
    }
    index = {h: i for i, h in enumerate(heads)}
    for name, (bh, bw) in (baselines or {}).items():
        bidx = np.array([index[(int(h[0]), int(h[1]))] for h in bh])
        bw_arr = np.asarray(bw, dtype=np.float64)
        results[name] = {
            "train": _by_source(train, bw_arr, bidx),
            "val": _by_source(val, bw_arr, bidx),
        }
    n_src = lambda rows: {  # noqa: E731
        s: sum(1 for ex in rows if ex.get("source") == s)
        for s in sorted({str(ex.get("source")) for ex in rows})
    }
    return {
        **heads_file_header(lm),
        "heads": [list(h) for h in chosen],
        "weights": [float(x) for x in wk],
        "selection": {
            "method": "AT2 (Cohen-Wang, Chuang, Mądry, 'Learning to Attribute with Attention', "
            "2025): learned non-negative L1-normalised head weights",
            "criterion": "features: per-head attention from the response rows summed over each "
            "sentence's tokens (all layers × heads); targets: leave-one-out drop of "
            "log p(gold answer) per sentence; weights fit on the training split, cut to the k "
            "largest and renormalised; (objective, source balance, k) chosen by validation "
            "P@1 + top-1 agreement with LOO, macro-averaged over sources",
            "objective": objective,
            "balanced_sources": bool(balanced),
            "objectives_tried": list(objectives),
            "n_heads": len(chosen),
            "n_heads_grid": list(n_heads_grid),
            "steps": steps,
            "temperature": temperature,
            "data": data_name,
            "data_sources": _origins(cases),
            "n_train": len(train),
            "n_val": len(val),
            "train_by_source": n_src(train),
            "case_ids": {"train": [ex["id"] for ex in train], "val": [ex["id"] for ex in val]},
            "val_by_source": n_src(val),
            "template": "Context: {context}\n\nQuery: {query}",
            "chat": True,
            "response": "the gold answer",
            "command": (
                f"attribkit train-heads --data {data_name or 'FILE.jsonl'} --out FILE.json "
                f"--model {model_name or getattr(lm, 'name', 'MODEL')}"
            ),
            "fit_seconds": fit_s,
            "collect_seconds_per_example": float(np.mean([ex["seconds"] for ex in examples])),
            "passes_per_example": float(np.mean([ex["passes"] for ex in examples])),
            "grid": [
                {
                    "objective": c[1],
                    "balanced_sources": bool(c[7]),
                    "k": c[2],
                    "val_p_at_1_plus_agree_macro": c[0][0],
                    "val_pearson": c[0][1],
                }
                for c in candidates
            ],
        },
        "training": results,
    }
