"""Token attribution of generations: attribkit vs Captum's LLM attribution and Inseq.

Workload: the bundled SmolLM2-135M-Instruct (``attribkit.load("smollm2")``, float32, CPU), 20 short
chat prompts, each with a response generated once greedily with exactly ``--tokens`` new tokens
(``min_new_tokens = max_new_tokens``; the end-of-turn token is suppressed until then). Every library
gets the same chat-formatted prompt and the same response, and explains every generated token
(one row per token) with the target log p(y_t | prompt, y_<t). The token ids each library actually
attributes are compared with the generated ids (``ids`` column; mismatches are listed).

Configurations (each in its own subprocess: model load, one small warm-up call, then the timed
calls over all prompts):

* ``ak-ig-50-unk``: attribkit ``integrated_gradients(n_steps=50, target_error=None,
  baseline=<embedding of token id 0>)`` (id 0 = ``<|endoftext|>`` = the UNK token, the baseline of
  both peers): the equal-steps, equal-baseline comparison.
* ``ak-ig-default``: attribkit's default (space-token baseline, 32 trapezoid steps; rows above 2 %
  completeness error double their steps, reusing earlier nodes, up to 256).
* ``ak-ig-adaptive-unk``: the default adaptive setting with the token-0 baseline.
* ``captum-ig-50``: ``LLMGradientAttribution(LayerIntegratedGradients(model, embed_tokens))`` with
  ``n_steps=50`` (Gauss-Legendre, Captum's default), target = the response token ids (no
  re-tokenisation, no BOS trap), input = ``TextTokenInput`` of the formatted prompt whose
  interpretable mask is set to the user-prompt positions (chat-template tokens are kept, as in
  attribkit). Baseline: token id 0. One ``attribute`` per generated token (Captum's design).
* ``captum-ig-space`` (opt-in): the same with the space-token baseline, attribkit's default,
  so that its completeness error can be compared with ``ak-ig-default``'s.
* ``inseq-ig-50``: ``inseq.load_model(model, "integrated_gradients", tokenizer=tok).attribute(
  formatted_prompt, formatted_prompt + response, n_steps=50, return_convergence_delta=True,
  logprob=True)``. Baseline: the UNK (id 0) embedding at every position except EOS-id tokens
  (Inseq's default: the chat template and the generated prefix are interpolated too). One IG call
  per generated token (Inseq's design).
* ``ak-attention``, ``inseq-attention``: attention weights of the position that predicts each
  token, averaged over heads and layers, one eager forward pass per prompt (attribkit) vs Inseq's
  ``attention`` method (model loaded with ``attn_implementation="eager"``). Captum has no attention
  attribution. ``agree`` = max |attribkit - Inseq| over the attribkit columns.

Completeness error, per row: |sum of attributions - (f(x) - f(x'))| / max(|f(x) - f(x')|, 1e-3),
with f(x') at each library's own baseline (what it interpolates from). attribkit: its
``completeness_error`` extra. Captum and Inseq: signed raw sums (summed over the hidden dimension
and positions, no normalisation) against f(x) - f(x') computed here by teacher-forced forwards
(outside the timing); for Inseq, the gap implied by its own convergence delta is cross-checked.

Memory: peak resident set size of the child process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
and its growth over the RSS right after the model is loaded (``+MB``).

Inseq's token list leaves out the EOS-id tokens (SmolLM2's ``<|im_end|>``, twice in the chat
template) although the model sees them, and its attribution matrices are only as wide as that
list: their columns are the model's positions, so the last positions fall off. The ids check
accepts Inseq's list when it is ours without those tokens; the attention agreement is taken over
the columns Inseq covers; its recomputed completeness over the rows whose context it covers.

Run: ``.venv/bin/python benchmarks/generation.py [--prompts 20] [--tokens 16] [--steps 50]``
(``--prompts 2 --tokens 4`` for a quick check; ``--configs`` picks configurations;
``--peer-every 4`` runs the fixed-step IG configurations on every 4th prompt; ``--save`` and
``--load`` let several runs, e.g. two at once on two cores, be merged into one table).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import environment, fmt, markdown_table

PROMPTS: list[str] = [
    "What is the capital of France?",
    "Give me three tips for staying healthy.",
    "Explain photosynthesis in one sentence.",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Name a famous painting by Leonardo da Vinci.",
    "How do I boil an egg?",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
    "Suggest a name for a pet goldfish.",
    "What does a CPU do in a computer?",
    "List two benefits of regular exercise.",
    "Who wrote Romeo and Juliet?",
    "Describe a cat in a few words.",
    "What is the boiling point of water in Celsius?",
    "Give an example of a renewable energy source.",
    "Summarize the plot of Cinderella briefly.",
    "What is the largest planet in the solar system?",
    "How many days are in a leap year?",
    "Recommend a good book for a long flight.",
]

CONFIGS = [
    "ak-ig-50-unk",
    "captum-ig-50",
    "inseq-ig-50",
    "ak-ig-default",
    "ak-attention",
    "inseq-attention",
    "ak-ig-adaptive-unk",
    "captum-ig-space",
]
# ak-ig-adaptive-unk is opt-in (--configs): from the token-0 baseline the 2 % target is rarely
# met, so it runs 32 + 64 + 128 + 256 steps on most prompts. captum-ig-space (opt-in) is Captum
# from attribkit's default baseline, the space token: the matched-completeness comparison.
DEFAULT_CONFIGS = CONFIGS[:-2]
# the fixed-step IG configurations, subject to --peer-every: the peers' and attribkit's equal-steps
FIXED_STEPS = {"captum-ig-50", "captum-ig-space", "inseq-ig-50", "ak-ig-50-unk"}
GAP_FLOOR = 1e-3  # as attribkit.methods.generation.common.GAP_FLOOR
BASELINE_ID = 0  # Captum's default baseline id and SmolLM2's UNK id


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- children ---------------------------------------------------------------------------------


def child_prepare(n_prompts: int, n_tokens: int) -> dict[str, Any]:
    """Generate every response once (greedy, exactly ``n_tokens`` new tokens)."""
    import torch

    from attribkit import load

    lm = load("smollm2")
    items = []
    for prompt in PROMPTS[:n_prompts]:
        pids = lm._prompt_ids(prompt, True, None)
        ids = torch.tensor([pids])
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n_tokens,
                min_new_tokens=n_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=lm.stop_ids or None,
                pad_token_id=lm.pad_id,
            )
        gen = out[0, ids.shape[1] :].tolist()
        response = lm.tokenizer.decode(gen)
        items.append(
            {
                "prompt": prompt,
                "formatted": lm.format_prompt(prompt),
                "prompt_ids": pids,
                "gen_ids": gen,
                "response": response,
                "roundtrip_ok": lm._response_ids(response) == gen,
                "user_pos": _user_positions(lm, prompt),
            }
        )
    return {"items": items}


def _row_logprobs(model: Any, ids: list[int], n_prompt: int, targets: list[int]) -> np.ndarray:
    """Teacher-forced log p(targets[t] | ids[: n_prompt + t]) for every t, one forward pass."""
    import torch

    x = torch.tensor([ids])
    with torch.inference_mode():
        logits = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False).logits
    lp = torch.log_softmax(logits[0, n_prompt - 1 : n_prompt - 1 + len(targets)].double(), -1)
    return lp.gather(-1, torch.tensor(targets)[:, None])[:, 0].numpy()


def _errors(sums: np.ndarray, gap: np.ndarray) -> list[float]:
    return (np.abs(sums - gap) / np.maximum(np.abs(gap), GAP_FLOOR)).tolist()


def run_attribkit(cfg: str, data: dict[str, Any], steps: int) -> dict[str, Any]:
    import torch

    from attribkit import load
    from attribkit.tasks.generation import GenerationTask

    attention = cfg == "ak-attention"
    lm = load("smollm2", attn_implementation="eager") if attention else load("smollm2")
    loaded = rss_mb()

    def params(task: GenerationTask) -> dict[str, Any]:
        if attention:  # Inseq's aggregation: the mean over heads and layers
            return {"layer": "mean"}
        if cfg == "ak-ig-default":
            return {}
        emb = lm.model.get_input_embeddings()
        with torch.no_grad():
            e0 = emb(torch.tensor([BASELINE_ID])).float()
        base = e0.expand(len(task.ids), -1).clone()
        if cfg == "ak-ig-50-unk":
            return {
                "n_steps": steps,
                "target_error": None,
                "baseline": base,
                "rule": "gauss_legendre",
            }
        return {"baseline": base}  # ak-ig-adaptive-unk

    method = "attention" if attention else "integrated_gradients"
    # warm-up: the first prompt, its first generated token only, 2 steps
    it = data["items"][0]
    warm = GenerationTask(lm, it["prompt"], lm.tokenizer.decode(it["gen_ids"][:1]))
    warm.attribute(method, **(params(warm) if attention else {**params(warm), "n_steps": 2}))
    out: dict[str, Any] = {"loaded_mb": loaded, "rows": [], "ids": [], "steps": [], "scores": []}
    out["prompt_seconds"] = []
    for it in data["items"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            task = GenerationTask(lm, it["prompt"], it["response"])
            att = task.attribute(method, **params(task))
            out["prompt_seconds"].append(time.perf_counter() - t0)
        out["ids"].append(task.ids)
        if attention:
            out["scores"].append(np.nan_to_num(att.scores, nan=0.0).tolist())
        else:
            out["rows"].extend(att.extras["completeness_error"])
            out["steps"].extend(att.extras["steps"])
    out["seconds"] = sum(out["prompt_seconds"])
    return out


def _user_positions(lm: Any, prompt: str) -> list[int]:
    """Positions of the user prompt's tokens in the formatted prompt (attribkit's columns)."""
    from attribkit.tasks.generation import GenerationTask

    task = GenerationTask(lm, prompt, "x")
    n_p = len(task.prompt_ids)
    return [p for p, u in enumerate(task.position_unit[:n_p]) if u >= 0]


def run_captum(data: dict[str, Any], steps: int, space: bool = False) -> dict[str, Any]:
    import torch
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    from attribkit import load

    lm = load("smollm2")
    model, tok = lm.model, lm.tokenizer
    baseline_id = lm.space_id if space else BASELINE_ID
    loaded = rss_mb()
    llm_attr = LLMGradientAttribution(
        LayerIntegratedGradients(model, model.get_input_embeddings()), tok
    )

    def make_input(it: dict[str, Any]) -> Any:
        inp = TextTokenInput(it["formatted"], tok, baselines=baseline_id)
        mask = torch.zeros_like(inp.inp_tensor, dtype=torch.bool)
        mask[0, it["user_pos"]] = True  # keep chat-template tokens real
        inp.itp_mask = mask
        inp.itp_tensor = inp.inp_tensor[mask][None]
        inp.values = tok.convert_ids_to_tokens(inp.itp_tensor[0].tolist())
        inp.n_itp_features = len(inp.values)
        return inp

    it = data["items"][0]
    llm_attr.attribute(make_input(it), target=torch.tensor(it["gen_ids"][:1]), n_steps=2)
    out: dict[str, Any] = {"loaded_mb": loaded, "rows": [], "ids": [], "prompt_seconds": []}
    results = []
    for it in data["items"]:
        t0 = time.perf_counter()
        inp = make_input(it)
        res = llm_attr.attribute(inp, target=torch.tensor(it["gen_ids"]), n_steps=steps)
        out["prompt_seconds"].append(time.perf_counter() - t0)
        results.append((it, inp, res))
    out["seconds"] = sum(out["prompt_seconds"])
    for it, inp, res in results:  # completeness, outside the timing
        ids = inp.inp_tensor[0].tolist()
        out["ids"].append(ids + it["gen_ids"])
        n_p = len(ids)
        base = list(ids)
        for p in np.flatnonzero(inp.itp_mask[0].numpy()):
            base[p] = baseline_id
        fx = _row_logprobs(model, ids + it["gen_ids"], n_p, it["gen_ids"])
        fb = _row_logprobs(model, base + it["gen_ids"], n_p, it["gen_ids"])
        sums = res.token_attr.double().sum(-1).numpy()
        out["rows"].extend(_errors(sums, fx - fb))
    return out


def run_inseq(cfg: str, data: dict[str, Any], steps: int) -> dict[str, Any]:
    import inseq
    import torch

    from attribkit import load

    attention = cfg == "inseq-attention"
    lm = load("smollm2", attn_implementation="eager") if attention else load("smollm2")
    model, tok = lm.model, lm.tokenizer
    loaded = rss_mb()
    im = inseq.load_model(
        model, "attention" if attention else "integrated_gradients", tokenizer=tok
    )
    kw: dict[str, Any] = {"show_progress": False}
    warm_steps = {} if attention else {"n_steps": 2}
    if not attention:
        kw.update(
            n_steps=steps, return_convergence_delta=True, logprob=True, step_scores=["probability"]
        )
    it = data["items"][0]
    first = tok.decode(it["gen_ids"][:1])
    im.attribute(it["formatted"], it["formatted"] + first, **{**kw, **warm_steps})
    out: dict[str, Any] = {"loaded_mb": loaded, "rows": [], "ids": [], "delta_check": 0.0}
    out["scores"], out["prompt_seconds"] = [], []
    results = []
    for it in data["items"]:
        t0 = time.perf_counter()
        res = im.attribute(it["formatted"], it["formatted"] + it["response"], **kw)
        out["prompt_seconds"].append(time.perf_counter() - t0)
        results.append((it, res.sequence_attributions[0]))
    out["seconds"] = sum(out["prompt_seconds"])
    for it, sa in results:
        shown = [t.id for t in sa.target]
        ids = it["prompt_ids"] + it["gen_ids"]
        # Inseq's token list omits the EOS-id tokens (SmolLM2's <|im_end|>) that the model did
        # see: the ids are right if they are ours without those
        out["ids"].append(ids if shown == [i for i in ids if i != tok.eos_token_id] else shown)
        n_p, gen = len(it["prompt_ids"]), it["gen_ids"]
        ta = sa.target_attributions.double()  # (positions, rows, ...)
        if attention:
            rows = ta.reshape(ta.shape[0], ta.shape[1], -1).mean(-1).T.numpy()  # (rows, positions)
            out["scores"].append(np.nan_to_num(rows, nan=0.0).tolist())
            continue
        sums = ta.reshape(ta.shape[0], ta.shape[1], -1).nansum(-1).nansum(0).numpy()
        base = [i if i == tok.eos_token_id else tok.unk_token_id for i in ids]
        fx = _row_logprobs(model, ids, n_p, gen)
        fb = _row_logprobs(model, base, n_p, gen)
        # Inseq's own convergence delta (= sum - (f(x) - f(x'))) gives the gap it integrated
        delta = sa.step_scores["deltas"].double().numpy()
        out["rows"].extend(_errors(sums, sums - delta))
        # its matrix is as wide as its token list (EOS-id tokens left out), so the last rows'
        # last positions fall off it: recompute only rows whose context it covers
        ok = np.arange(len(gen)) + n_p <= ta.shape[0]
        out.setdefault("rows_recomputed", []).extend(_errors(sums[ok], (fx - fb)[ok]))
        out["rows_cut"] = out.get("rows_cut", 0) + int((~ok).sum())
        gap_diff = np.abs(sums - delta - (fx - fb))[ok]
        out["delta_check"] = max(out["delta_check"], float(gap_diff.max(initial=0.0)))
        out.setdefault("fx_check", 0.0)
        fx_inseq = sa.step_scores["probability"].double().numpy()
        out["fx_check"] = max(out["fx_check"], float(np.abs(fx_inseq - fx).max()))
    _ = torch  # imported for inseq's side effects only
    return out


def child(cfg: str, data_path: str, steps: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    data = json.loads(Path(data_path).read_text())
    if cfg == "prepare":
        out = child_prepare(data["prompts"], data["tokens"])
    elif cfg.startswith("ak-"):
        out = run_attribkit(cfg, data, steps)
    elif cfg.startswith("captum"):
        out = run_captum(data, steps, space=cfg == "captum-ig-space")
    else:
        out = run_inseq(cfg, data, steps)
    out["peak_mb"] = rss_mb()
    print("@@RESULT@@" + json.dumps(out))


def spawn(cfg: str, data_path: str, steps: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", cfg, "--data", data_path]
    cmd += ["--steps", str(steps), "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return {**json.loads(line[len("@@RESULT@@") :]), "wall": wall}
    raise RuntimeError(f"{cfg} failed:\n{proc.stderr[-4000:]}")


# --- parent -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=20, help="number of prompts (max 20)")
    ap.add_argument("--tokens", type=int, default=16, help="generated tokens per prompt")
    ap.add_argument("--steps", type=int, default=50, help="IG steps for the fixed-step rows")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    ap.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS, choices=CONFIGS)
    ap.add_argument("--save", help="write the raw results (JSON) to this file")
    ap.add_argument(
        "--only-prompts",
        help="comma-separated prompt indices for the fixed-step IG configurations (overrides "
        "--peer-every): to finish them in several runs, merged with --load",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument(
        "--load",
        nargs="+",
        help="start from the raw results of --save files (merged; same prompts and responses); "
        "rerun only --configs (none: print the table)",
    )
    ap.add_argument(
        "--peer-every",
        type=int,
        default=1,
        help="run the fixed-step IG configurations (the peers' and ak-ig-50-unk) on every K-th "
        "prompt only (0, K, 2K, ...): the peers run one IG per generated token and take hours at "
        "20 x 16 on 2 cores; the table then also gives every configuration's s/prompt on the "
        "prompts they all ran",
    )
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data, args.steps, args.threads)
        return
    n_prompts = min(args.prompts, len(PROMPTS))
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.json"
        path.write_text(json.dumps({"prompts": n_prompts, "tokens": args.tokens}))
        results: dict[str, Any] = {}
        if args.load:
            data, results = load_results(args.load)
            n_prompts = len(data["items"])
        else:
            data = spawn("prepare", str(path), args.steps, args.threads)
            if args.save:  # the prompts and responses, for other runs to --load
                Path(args.save).write_text(json.dumps({"data": data, "results": results}))
        for cfg in args.configs:
            every = args.peer_every if cfg in FIXED_STEPS else 1
            subset = list(range(0, len(data["items"]), every))
            if args.only_prompts and cfg in FIXED_STEPS:
                subset = [int(k) for k in args.only_prompts.split(",")]
            path.write_text(json.dumps({"items": [data["items"][k] for k in subset]}))
            results[cfg] = {
                **spawn(cfg, str(path), args.steps, args.threads),
                "prompts": subset,
                "n_steps": args.steps,
            }
            r = results[cfg]
            if args.save:  # after every configuration, so a late failure loses nothing
                Path(args.save).write_text(json.dumps({"data": data, "results": results}))
            print(f"{cfg}: {r['seconds']:.1f}s, peak {r['peak_mb']:.0f} MB", file=sys.stderr)
    items = data["items"]
    expected = [it["prompt_ids"] + it["gen_ids"] for it in items]
    rows, notes = [], []
    common = sorted(set.intersection(*(set(prompts_of(r, len(items))) for r in results.values())))
    for cfg, r in results.items():
        lib = cfg.split("-")[0].replace("ak", "attribkit")
        method = "attention" if cfg.endswith("attention") else "IG"
        if r.get("steps"):
            st = r["steps"]
            steps = f"{min(st)}-{max(st)} (med {statistics.median(st):g})"
            steps = str(st[0]) if min(st) == max(st) else steps
        else:
            steps = str(r.get("n_steps", args.steps)) if cfg in FIXED_STEPS else "–"
        ran = prompts_of(r, len(items))
        bad = [k for k, got in zip(ran, r["ids"], strict=True) if got != expected[k]]
        if bad:
            notes.append(f"{cfg}: attributed ids differ from the generated ids on prompts {bad}")
        errs = np.array(r.get("rows") or [np.nan])
        n_steps = r.get("n_steps", args.steps)
        setting = {
            "ak-ig-50-unk": f"{n_steps} steps, baseline id 0",
            "ak-ig-default": "default: space baseline, adaptive ≤2 %",
            "ak-ig-adaptive-unk": "adaptive ≤2 %, baseline id 0",
            "captum-ig-50": f"LayerIG, {n_steps} steps, baseline id 0",
            "captum-ig-space": f"LayerIG, {n_steps} steps, space baseline",
            "inseq-ig-50": f"IG, {n_steps} steps, UNK (id 0) baseline",
            "ak-attention": "head+layer mean",
            "inseq-attention": "head+layer mean",
        }[cfg]
        rows.append(
            [
                lib,
                method,
                setting,
                steps,
                str(len(ran)),
                fmt(r["seconds"]),
                fmt(r["seconds"] / len(ran)),
                shared_seconds(r, common),
                f"{r['peak_mb']:.0f}",
                f"+{r['peak_mb'] - r['loaded_mb']:.0f}",
                "n/a" if method != "IG" else f"{np.median(errs):.1e}",
                "n/a" if method != "IG" else f"{errs.max():.1e}",
                "ok" if not bad else f"{len(bad)} differ",
            ]
        )
        if cfg == "inseq-ig-50" and "rows_recomputed" in r:
            rec = np.array(r["rows_recomputed"])
            notes.append(
                "inseq-ig-50: completeness from Inseq's own convergence delta; recomputed here "
                f"by teacher-forced forwards, on the {len(rec)} rows whose context Inseq's matrix "
                f"covers (it cuts {r.get('rows_cut', 0)}), med/max "
                f"{np.median(rec):.1e}/{rec.max():.1e}; max |gap implied by Inseq's delta - "
                f"recomputed gap| = {r['delta_check']:.1e}; max |Inseq's log p(y_t) - "
                f"recomputed| = {r['fx_check']:.1e}"
            )
    if "ak-attention" in results and "inseq-attention" in results:
        notes.append(attention_agreement(results, items))
    if len(common) < len(items):
        notes.append(
            f"'common' = the prompts every configuration ran ({common}): the like-for-like time"
        )
    n_rows = sum(len(it["gen_ids"]) for it in items)
    n_tok = len(items[0]["gen_ids"])
    roundtrip = [k for k, it in enumerate(items) if not it["roundtrip_ok"]]
    print("# Token attribution of generations: attribkit vs Captum vs Inseq")
    print(environment(["attribkit", "torch", "captum", "inseq", "transformers"], args.threads))
    print(
        f"SmolLM2-135M-Instruct (float32, CPU); {len(items)} prompts x {n_tok} generated "
        f"tokens = {n_rows} rows; each configuration in its own process (model load and one "
        "small warm-up call not timed); seconds = total over the prompts; peak MB = ru_maxrss of "
        "the process, +MB = growth over the RSS after the model load; completeness error per "
        "row = |sum attr - (f(x) - f(x'))| / max(|f(x) - f(x')|, 1e-3), median / max over rows; "
        "ids = the attributed token ids equal the generated ids (prompt + response)."
    )
    if roundtrip:
        print(f"note: responses of prompts {roundtrip} do not re-tokenize to the generated ids")
    print(f"load average before/after: {BEFORE_LOAD} / {os.getloadavg()}")
    print(f"total wall time: {time.perf_counter() - t_start:.0f}s")
    for n in notes:
        print("note:", n)
    print()
    header = [
        "library",
        "method",
        "setting",
        "steps",
        "prompts",
        "seconds",
        "s/prompt",
        f"s/prompt on {len(common)} common",
        "peak MB",
        "+MB",
        "compl. med",
        "compl. max",
        "ids",
    ]
    print(markdown_table(header, rows))


def prompts_of(r: dict[str, Any], n_items: int) -> list[int]:
    """The prompt indices a configuration ran (all of them for results saved before subsets)."""
    return r.get("prompts", list(range(n_items)))


def shared_seconds(r: dict[str, Any], common: list[int]) -> str:
    """Mean seconds per prompt over the ``common`` prompts, from the per-prompt times."""
    per = dict(zip(prompts_of(r, len(r["ids"])), r.get("prompt_seconds", []), strict=False))
    if not common or any(k not in per for k in common):
        return "–"
    return fmt(sum(per[k] for k in common) / len(common))


def load_results(paths: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge the (data, results) of several --save files; their prompts and responses must agree.
    One configuration's runs on different prompts are merged; a rerun of the same prompts
    replaces the earlier run."""
    data: dict[str, Any] | None = None
    results: dict[str, Any] = {}
    for p in paths:
        saved = json.loads(Path(p).read_text())
        if data is not None and saved["data"]["items"] != data["items"]:
            raise SystemExit(f"{p}: other prompts or responses than {paths[0]}; cannot merge")
        data = saved["data"]
        n = len(data["items"])
        for cfg, r in saved["results"].items():
            old = results.get(cfg)
            fresh = old is None or set(prompts_of(old, n)) & set(prompts_of(r, n))
            # a later run of the same prompts replaces the earlier one; other prompts add up
            results[cfg] = r if fresh else merge_runs(old, r, data["items"])
    assert data is not None
    return data, results


PER_PROMPT = ("ids", "scores", "prompt_seconds")  # one entry per prompt
PER_ROW = ("rows", "steps")  # one entry per generated token, prompt after prompt


def merge_runs(a: dict[str, Any], b: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's results from two runs on different prompts, as if from one run
    (seconds add up; the peak memory is the larger run's)."""
    n = len(items)
    pa, pb = prompts_of(a, n), prompts_of(b, n)

    def split(r: dict[str, Any], ran: list[int]) -> dict[int, dict[str, Any]]:
        parts: dict[int, dict[str, Any]] = {k: {} for k in ran}
        for key in PER_PROMPT:
            for k, v in zip(ran, r.get(key, []), strict=False):
                parts[k][key] = v
        for key in PER_ROW:
            flat, start = r.get(key, []), 0
            for k in ran:
                end = start + len(items[k]["gen_ids"]) if flat else start
                parts[k][key] = flat[start:end]
                start = end
        return parts

    parts = {**split(a, pa), **split(b, pb)}
    ran = sorted(parts)
    big = a if a["peak_mb"] >= b["peak_mb"] else b
    out = {**big, "prompts": ran, "seconds": a["seconds"] + b["seconds"]}
    for key in PER_PROMPT:
        if key in a or key in b:
            out[key] = [parts[k][key] for k in ran if key in parts[k]]
    for key in PER_ROW:
        out[key] = [v for k in ran for v in parts[k].get(key, [])]
    if "rows_recomputed" in a or "rows_recomputed" in b:  # only summarised: order is no matter
        out["rows_recomputed"] = a.get("rows_recomputed", []) + b.get("rows_recomputed", [])
    for key in ("delta_check", "fx_check"):
        if key in a or key in b:
            out[key] = max(a.get(key, 0.0), b.get(key, 0.0))
    if "rows_cut" in a or "rows_cut" in b:
        out["rows_cut"] = a.get("rows_cut", 0) + b.get("rows_cut", 0)
    return out


def attention_agreement(results: dict[str, Any], items: list[dict[str, Any]]) -> str:
    """Max |attribkit - Inseq| attention weight over attribkit's columns (tokens) that Inseq's
    matrix covers. Inseq's matrix is as wide as its token list, which leaves out the EOS-id
    tokens (SmolLM2's <|im_end|>, twice in the chat template) although the model saw them; its
    columns are still the model's positions, so the last positions fall off the end."""
    worst, cut, mass = 0.0, 0, 0.0
    for k, it in enumerate(items):
        ak = np.array(results["ak-attention"]["scores"][k])  # (rows, prompt cols + response cols)
        ins = np.array(results["inseq-attention"]["scores"][k])  # (rows, positions)
        n_p, n_gen = len(it["prompt_ids"]), len(it["gen_ids"])
        positions = it["user_pos"] + list(range(n_p, n_p + n_gen - 1))
        if ak.shape[1] != len(positions) or ins.shape[0] != ak.shape[0]:
            return "attention: columns and tokens differ in number; agreement not computed"
        covered = [c for c, p in enumerate(positions) if p < ins.shape[1]]
        worst = max(
            worst, float(np.abs(ak[:, covered] - ins[:, [positions[c] for c in covered]]).max())
        )
        cut += len(positions) - len(covered)
        mass = max(mass, float(1.0 - ins.sum(1).min()))
    return (
        f"attention: max |attribkit - Inseq| = {worst:.1e} over the columns Inseq's matrix "
        f"covers; it lacks {cut} column(s) in all (the last positions: its matrix is as wide as "
        f"its token list, which omits the EOS-id tokens), so up to {mass:.2f} of a row's attention "
        "is missing from Inseq's rows"
    )


BEFORE_LOAD = os.getloadavg()

if __name__ == "__main__":
    main()
