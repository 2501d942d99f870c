"""ReAGent for generated text (kind ``generation``): replace random tokens, watch the target.

Zhao & Shan, 'ReAGent: A Model-agnostic Feature Attribution Method for Generative Language
Models', 2024 (arXiv 2402.00794). For every attributed row (generated token y_t) the inputs are
the columns that row can see (prompt tokens and earlier generated tokens); chat-template tokens
are never replaced. Each step replaces a random fraction of a probe's units with replacement
tokens, measures the drop Δ of the target and adds +g(Δ) to the replaced units' logits and
−g(Δ) to the kept ones (g(Δ) = ln((1+Δ)/(1−Δ))); importance = softmax of the logits. A probe
stops once keeping only its current top-n units (all others replaced) still leaves y_t in the
model's top-k predictions; the row's scores average the probes that stopped.

Replacement tokens. The paper replaces tokens with RoBERTa predictions; the authors' released
scripts (and Inseq's port) use a POS-tag sampler (a uniform draw among vocabulary tokens with the
same NLTK POS tag), a fresh random draw for every replacement. Neither works offline here:
RoBERTa is a second model to download (and its ids are in another vocabulary) and the NLTK tagger
is a separate data download. The default ``"lm_sample"`` keeps both properties that matter: a
plausible in-context token (the paper's LM prediction, here the explained model's own prediction
from the original prefix, computed once from one forward pass) drawn afresh for every replacement
(the released code's randomness): a draw from the model's top-50 tokens at that position,
renormalised, the original token and special ids excluded. ``"lm_top1"`` (the default before
issue 24) is the authors' ``inferential`` sampler with the original token excluded: one fixed
replacement per position, so a position whose top-1 alternative is a near synonym or raises the
target is always judged by that one counterfactual. ``"uniform"`` is the authors' uniform
sampler (special ids excluded).

The drop Δ. The paper and Inseq use the probability drop Δp = p(y_t | x) − p(y_t | x̃)
(``delta="prob"``). It is bounded above by p(y_t | x), which is small for many rows (0.01–0.2 on
SmolLM2's copy prompts), while a replacement that *raises* the target can give Δp near −1: the
rare raises outweigh the drops and the kept tokens of those steps (often punctuation such as
":") collect the weight. The default ``delta="value"`` uses the drop of the task's own target
(log p(y_t) by default) through Δ = tanh(Δf/2), so that g(Δ) = Δf, the rule attribkit already
applied to logit and contrastive targets: a 10× drop and a 1000× drop are told apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError, ScorerError
from attribkit.methods.generation.common import count, metered
from attribkit.tasks.generation import GenerationTask

# Δ is clipped to ±(1 − CLIP) so that g(Δ) = ln((1+Δ)/(1−Δ)) stays finite (|g| ≤ ~14.5).
CLIP = 1e-6
DELTAS = ("value", "prob")
SAMPLERS = ("lm_sample", "lm_top1", "uniform")
# lm_sample draws among the explained model's SAMPLE_TOP most likely tokens at each position.
SAMPLE_TOP = 50

# A custom sampler: (task, rng, n) -> (n, positions) int array of replacement ids, one candidate
# per position for each of n probes (only the entries at replaced positions are used). It must
# not run the model (its passes would not be counted); draw randomness only from ``rng``.
Sampler = Callable[[GenerationTask, np.random.Generator, int], np.ndarray]


def _special_ids(task: GenerationTask) -> list[int]:
    tok = task.lm.tokenizer
    return sorted({int(i) for i in getattr(tok, "all_special_ids", []) or []})


def _vocab_size(task: GenerationTask) -> int:
    n_emb = task.lm.model.get_input_embeddings().num_embeddings
    return min(int(n_emb), len(task.lm.tokenizer))


def lm_top1_replacements(task: GenerationTask, logits: torch.Tensor) -> np.ndarray:
    """(positions,) replacement ids: at position p the model's top-1 prediction from the
    original prefix (logits at p − 1), excluding the original token and special ids. Position 0
    has no prefix: it takes the top prediction at position 0 under the same exclusions.
    ``logits``: (positions, V) of one forward pass over ``task.ids``. No model calls."""
    ids = torch.tensor(task.ids, device=logits.device)
    lg = logits.float().clone()
    lg = torch.cat([lg[:1], lg[:-1]])  # row p predicts position p (row 0: position 0's logits)
    lg = lg[:, : _vocab_size(task)]
    special = [i for i in _special_ids(task) if i < lg.shape[1]]
    if special:
        lg[:, special] = -torch.inf
    lg[torch.arange(len(ids)), ids.clamp(max=lg.shape[1] - 1)] = -torch.inf
    return lg.argmax(-1).cpu().numpy()


def lm_sample_candidates(
    task: GenerationTask, logits: torch.Tensor, top: int = SAMPLE_TOP
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, top) candidate ids and their probabilities (rows sum to 1): at position p
    the model's ``top`` most likely tokens from the original prefix (logits at p − 1; position
    0 takes position 0's logits), the original token and special ids excluded, renormalised.
    ``logits``: (positions, V) of one forward pass over ``task.ids``. No model calls."""
    ids = torch.tensor(task.ids, device=logits.device)
    lg = logits.float().clone()
    lg = torch.cat([lg[:1], lg[:-1]])
    lg = lg[:, : _vocab_size(task)]
    special = [i for i in _special_ids(task) if i < lg.shape[1]]
    if special:
        lg[:, special] = -torch.inf
    lg[torch.arange(len(ids)), ids.clamp(max=lg.shape[1] - 1)] = -torch.inf
    val, idx = lg.topk(min(top, lg.shape[1] - len(special) - 1), dim=-1)
    return idx.cpu().numpy(), torch.softmax(val.double(), -1).cpu().numpy()


def _lm_sample_sampler(cand: np.ndarray, prob: np.ndarray) -> Sampler:
    cum = np.cumsum(prob, -1)
    cum[:, -1] = 1.0

    def draw(_task: GenerationTask, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random((n, len(cand)))
        k = (cum[None] < u[..., None]).sum(-1)
        return np.take_along_axis(cand[None].repeat(n, 0), k[..., None], -1)[..., 0]

    return draw


def _uniform_sampler(task: GenerationTask) -> Sampler:
    allowed = np.setdiff1d(np.arange(_vocab_size(task)), np.asarray(_special_ids(task), int))

    def draw(_task: GenerationTask, rng: np.random.Generator, n: int) -> np.ndarray:
        return allowed[rng.integers(0, len(allowed), size=(n, len(_task.ids)))]

    return draw


def probe_sequences(
    task: GenerationTask, replace: np.ndarray, replacements: np.ndarray
) -> np.ndarray:
    """(n, positions) id sequences: ``task.ids`` with every position of each replaced column
    (``replace``: (n, columns) bool) set to ``replacements`` ((n, positions) ids). Chat-template
    positions (``position_unit == -1``) are never replaced. No model calls."""
    ids = np.asarray(task.ids, dtype=np.int64)
    pos_unit = np.asarray(task.position_unit)
    protected = pos_unit < 0
    col = np.where(protected, 0, pos_unit)
    mask = replace[:, col] & ~protected[None]
    return np.where(mask, replacements, ids[None])


def _forward(
    task: GenerationTask, seqs: np.ndarray, row_of: np.ndarray, k: int, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """Target value of row ``row_of[j]`` for sequence j, and whether its generated token is in
    the top-``k`` predictions there. One model call per ``chunk`` sequences, all counted."""
    vals, hits = [], []
    rows = torch.tensor(task.rows)
    y = torch.tensor([task.response_ids[r] for r in task.rows])
    for s in range(0, len(seqs), chunk):
        ids = torch.as_tensor(seqs[s : s + chunk], device=task.lm.device)
        r = torch.as_tensor(row_of[s : s + chunk])
        b = ids.shape[0]
        logits = task.forward_logits(ids)
        count(task, b)
        v = task.row_values(logits)  # (b, rows); ScorerError on NaN
        lg = logits[torch.arange(b), rows[r].to(logits.device)].float()  # (b, V)
        yy = y[r].to(lg.device)
        rank = (lg > lg.gather(1, yy[:, None])).sum(1)
        vals.append(v[torch.arange(b), r.to(v.device)].double().cpu().numpy())
        hits.append((rank < k).cpu().numpy())
    if not vals:
        return np.zeros(0), np.zeros(0, bool)
    return np.concatenate(vals), np.concatenate(hits)


def _g(delta: np.ndarray) -> np.ndarray:
    d = np.clip(delta, -1 + CLIP, 1 - CLIP)
    return np.log((1 + d) / (1 - d))


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reagent(
    task: GenerationTask,
    *,
    sampler: str | Sampler = "lm_sample",
    ratio: float = 0.3,
    n_probes: int = 8,
    keep_top: int = 3,
    top_k: int = 3,
    min_steps: int = 5,
    max_steps: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    delta: str = "value",
) -> Attribution:
    """ReAGent importance of each visible column for each row (a distribution over the columns
    the row can see, summing to 1; NaN where it cannot see).

    Per row: ``n_probes`` probes start from zero logits; each step replaces ``ratio`` of the
    row's columns (round(ratio · columns), at least one, chosen at random) with ``sampler``
    tokens (``"lm_sample"``, ``"lm_top1"``, ``"uniform"`` or a callable, see :data:`Sampler`) and
    updates the logits by ±g(Δ), g(Δ) = ln((1+Δ)/(1−Δ)). ``delta="value"``: Δ = tanh(Δf/2) of the
    drop Δf of the task's value (log p(y_t) by default), so g(Δ) = Δf. ``delta="prob"``: the
    paper's Δ = p(y_t | x) − p(y_t | x̃) (a log-probability or probability target without a foil).
    From ``min_steps`` on, each step also checks every running probe: keep its
    top-``keep_top`` columns (at most columns − 1), replace all others; the probe stops when the
    generated token is still in the model's top-``top_k`` predictions at that row. ``keep_top=3``
    is the authors' sequence-level setting (their token-level config uses 8, Inseq 5). Rows run
    until all probes stop or ``max_steps`` (default 100 to stay CPU-friendly; the authors cap at
    3000–5000). A row's scores average its stopped probes' importances, or all probes when none
    stopped. The update and the check of a step share one batched forward over all rows.

    ``extras``: ``steps`` (update steps per row), ``converged`` (stopped probes per row),
    ``sampler``. Costs 1 forward pass (the original sequence, also the lm_sample / lm_top1
    replacements) + per step the running probes' updates and checks, batched (see the
    registration)."""
    if not 0.0 < ratio < 1.0:
        raise InputError("ratio must be in (0, 1): the fraction of columns each step replaces")
    for name, v, lo in (
        ("n_probes", n_probes, 1),
        ("keep_top", keep_top, 1),
        ("top_k", top_k, 1),
        ("min_steps", min_steps, 0),
        ("max_steps", max_steps, 1),
        ("batch_size", batch_size, 1),
    ):
        if not isinstance(v, int) or v < lo:
            raise InputError(f"{name} must be an integer ≥ {lo}, got {v!r}")
    if delta not in DELTAS:
        raise InputError(f"unknown delta {delta!r}: use one of {DELTAS}")
    if delta == "prob" and (task.target_kind not in ("logprob", "prob") or task.foil is not None):
        raise InputError(
            "delta='prob' needs a log-probability or probability target without a foil; "
            "use delta='value' for logit or contrastive targets"
        )
    if isinstance(sampler, str) and sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}: use one of {SAMPLERS} or a callable")
    rng = np.random.default_rng(seed)
    vis = task.visible()
    n_rows, n_cols = vis.shape
    with metered(task) as cost:
        ids = torch.tensor([task.ids], device=task.lm.device)
        with torch.inference_mode():
            out = task.lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        task.lm.tokens_processed += ids.shape[1]
        count(task, 1)
        logits = out.logits[0]
        n_p = len(task.prompt_ids)
        f0 = task.row_values(logits[None, n_p - 1 : -1])[0].double().cpu().numpy()  # (rows,)
        if not torch.isfinite(logits).all():
            raise ScorerError("the model gave non-finite logits; check the model's weights")
        if sampler == "lm_sample":
            draw = _lm_sample_sampler(*lm_sample_candidates(task, logits))
        elif sampler == "lm_top1":
            top1 = lm_top1_replacements(task, logits)

            def draw(_t: GenerationTask, _r: np.random.Generator, n: int) -> np.ndarray:
                return np.broadcast_to(top1, (n, len(top1)))

        elif sampler == "uniform":
            draw = _uniform_sampler(task)
        else:
            draw = sampler  # type: ignore[assignment]

        if delta == "prob":
            to_p = np.exp if task.target_kind == "logprob" else (lambda v: v)
            p0 = to_p(f0)

            def drop(i: int, f: np.ndarray) -> np.ndarray:
                return p0[i] - to_p(f)
        else:

            def drop(i: int, f: np.ndarray) -> np.ndarray:
                return np.tanh((f0[i] - f) / 2)

        units = [np.flatnonzero(vis[i]) for i in range(n_rows)]
        logit = np.zeros((n_rows, n_probes, n_cols))
        stopped = np.zeros((n_rows, n_probes), bool)
        steps = np.zeros(n_rows, int)
        done = np.array([len(u) <= 1 for u in units])  # one column: importance 1, nothing to do
        for step in range(1, max_steps + 2):
            seq_parts, row_parts, meta = [], [], []
            for i in np.flatnonzero(~done):
                u = units[i]
                n = len(u)
                # stop check on the state after step - 1 updates
                check = np.flatnonzero(~stopped[i]) if step - 1 >= min_steps else np.zeros(0, int)
                if len(check):
                    keep_n = min(keep_top, n - 1)
                    imp = logit[i][check][:, u]
                    order = np.argsort(-imp, axis=1, kind="stable")[:, :keep_n]
                    rep = np.zeros((len(check), n_cols), bool)
                    rep[:, u] = True
                    rep[np.arange(len(check))[:, None], u[order]] = False
                    seq_parts.append(probe_sequences(task, rep, draw(task, rng, len(check))))
                    row_parts.append(np.full(len(check), i))
                    meta.append(("check", i, check))
                # update of the running probes (step ≤ max_steps)
                if step <= max_steps:
                    run = np.flatnonzero(~stopped[i])
                    k = max(1, min(n, round(ratio * n)))
                    pick = np.argsort(rng.random((len(run), n)), axis=1)[:, :k]
                    rep = np.zeros((len(run), n_cols), bool)
                    rep[np.arange(len(run))[:, None], u[pick]] = True
                    seq_parts.append(probe_sequences(task, rep, draw(task, rng, len(run))))
                    row_parts.append(np.full(len(run), i))
                    meta.append(("update", i, (run, rep)))
            if not seq_parts:
                break
            vals, hits = _forward(
                task,
                np.concatenate(seq_parts),
                np.concatenate(row_parts),
                top_k,
                batch_size,
            )
            pos = 0
            pending: dict[int, np.ndarray] = {}
            for what, i, info in meta:
                m = len(info) if what == "check" else len(info[0])
                v, h = vals[pos : pos + m], hits[pos : pos + m]
                pos += m
                if what == "check":
                    pending[i] = info[h]
                    continue
                run, rep = info
                g = _g(drop(i, v))[:, None]
                upd = np.where(rep, g, -g) * vis[i][None]
                newly = pending.get(i, np.zeros(0, int))
                frozen = np.isin(run, newly)
                logit[i, run[~frozen]] += upd[~frozen]
                if (~frozen).any():
                    steps[i] = step
            for i, newly in pending.items():
                stopped[i, newly] = True
            for i in np.flatnonzero(~done):
                if stopped[i].all() or step > max_steps:
                    done[i] = True
    scores = np.full((n_rows, n_cols), np.nan)
    converged = stopped.sum(1)
    for i in range(n_rows):
        u = units[i]
        imp = _softmax(logit[i][:, u])  # (probes, n)
        use = stopped[i] if stopped[i].any() else np.ones(n_probes, bool)
        scores[i, u] = imp[use].mean(0)
    params = {
        "sampler": sampler if isinstance(sampler, str) else "custom",
        "ratio": ratio,
        "n_probes": n_probes,
        "keep_top": keep_top,
        "top_k": top_k,
        "min_steps": min_steps,
        "max_steps": max_steps,
        "seed": seed,
        "delta": delta,
    }
    return task.result(
        scores,
        "reagent",
        params,
        cost,
        steps=[int(s) for s in steps],
        converged=[int(c) for c in converged],
        sampler=params["sampler"],
    )


__all__ = ["SAMPLERS", "Sampler", "lm_top1_replacements", "probe_sequences", "reagent"]
