"""Integrated gradients: attribkit's ``integrated_gradients`` vs ``captum.attr.IntegratedGradients``.

Workloads (the same function, input, baseline, quadrature and batch size for both libraries):

* ``smollm2 #k``: the real bundled SmolLM2-135M-Instruct (``attribkit.models.loading.load``), IG
  at the input-embedding level for a context + question prompt and a fixed answer; the target is
  the summed log-probability of the answer tokens. attribkit runs on
  ``lm.gradient_scorer(prompt, answer)``; Captum runs on an independent forward function written
  here (``inputs_embeds`` (B, T, d) -> summed answer log-prob (B,)) with the scorer's ``x`` and
  ``baseline`` (zero embeddings for prompt tokens; template and answer tokens keep their real
  embeddings). Captum's element-wise attribution is summed into the same units (prompt tokens).
* ``mlp``: a small smooth torch MLP on a 64-feature vector with a zero baseline, every feature a unit.

Both use Gauss-Legendre quadrature (attribkit ``rule="gauss_legendre"``, Captum
``method="gausslegendre"``) with ``n_steps`` points, Captum's ``internal_batch_size`` = attribkit's
batch size, the same torch threads, and a warm-up run first. Both compute f(x) and f(x') once
(attribkit always, Captum with ``return_convergence_delta=True``). Repeats alternate the two
libraries and report the median time. Completeness error = |sum attr - (f(x) - f(x'))| /
|f(x) - f(x')|. Agreement = max |attribkit - Captum| over unit scores / max |unit score|.
No timed assertions: these are measurements.

Run: ``.venv/bin/python benchmarks/integrated_gradients_vs_captum.py [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import environment, fmt, markdown_table
from attribkit.core.gradient import GradientScorer
from attribkit.methods.gradient.integrated_gradients import integrated_gradients

PAIRS: list[tuple[str, str]] = [
    (
        "Context: The Eiffel Tower in Paris was completed in 1889 and is 330 metres tall."
        "\n\nQuestion: When was the Eiffel Tower completed?",
        "The Eiffel Tower was completed in 1889.",
    ),
    (
        "Context: Marie Curie was a physicist and chemist who did pioneering research on "
        "radioactivity. She was the first woman to win a Nobel Prize and the only person to win "
        "Nobel Prizes in two sciences. She was born in Warsaw and later studied in Paris."
        "\n\nQuestion: In which city was Marie Curie born?",
        "Marie Curie was born in Warsaw.",
    ),
]


class Counted:
    """Wrap a batched forward function; count rows evaluated with and without autograd."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn, self.grad_rows, self.nograd_rows = fn, 0, 0

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and xb.requires_grad:
            self.grad_rows += len(xb)
        else:
            self.nograd_rows += len(xb)
        return self.fn(xb)

    def reset(self) -> None:
        self.grad_rows = self.nograd_rows = 0


def lm_forward(model: Any, prompt_len: int, answer_ids: list[int]) -> Callable:
    """inputs_embeds (B, T, d) -> summed log p(answer | prompt) (B,), written independently."""
    targets = torch.tensor(answer_ids, dtype=torch.long)
    n = len(answer_ids)

    def forward(emb: torch.Tensor) -> torch.Tensor:
        logits = model(inputs_embeds=emb, use_cache=False, logits_to_keep=n + 1).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        return logp.gather(-1, targets.expand(len(emb), n)[..., None])[..., 0].sum(-1)

    return forward


def lm_workloads(n_pairs: int) -> list[dict[str, Any]]:
    from attribkit.models.loading import load

    lm = load("smollm2")
    out = []
    for k, (prompt, answer) in enumerate(PAIRS[:n_pairs]):
        gs = lm.gradient_scorer(prompt, answer)
        answer_ids = lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
        t = gs.x.shape[0]
        fwd = lm_forward(lm.model, t - len(answer_ids), answer_ids)
        out.append(
            {
                "name": f"smollm2 #{k + 1}",
                "shape": f"T={t} ({gs.n_units} units), d={gs.x.shape[1]}",
                "gs": gs,
                "captum_fn": fwd,
            }
        )
    return out


def mlp_workload(batch_size: int) -> dict[str, Any]:
    torch.manual_seed(0)
    d = 64
    net = torch.nn.Sequential(
        torch.nn.Linear(d, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, 256),
        torch.nn.Tanh(),
        torch.nn.Linear(256, 1),
    ).eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def fn(xb: torch.Tensor) -> torch.Tensor:
        return net(xb)[:, 0]

    x = torch.randn(d)
    gs = GradientScorer(fn, x, baseline=torch.zeros(d), batch_size=batch_size)
    return {"name": "mlp", "shape": f"d={d} (64 units)", "gs": gs, "captum_fn": fn}


def run_attribkit(gs: GradientScorer, n_steps: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    att = integrated_gradients(gs, n_steps=n_steps, rule="gauss_legendre")
    sec = time.perf_counter() - t0
    return {
        "sec": sec,
        "scores": att.vector,
        "err": att.extras["completeness_error"],
        "fwd": att.cost.forward_passes,
        "bwd": att.cost.backward_passes,
        "diff": att.extras["value"] - att.extras["baseline_value"],
    }


def run_captum(gs: GradientScorer, fn: Counted, n_steps: int) -> dict[str, Any]:
    from captum.attr import IntegratedGradients

    fn.reset()
    t0 = time.perf_counter()
    attr, delta = IntegratedGradients(fn).attribute(
        gs.x[None],
        baselines=gs.baseline[None],
        n_steps=n_steps,
        method="gausslegendre",
        internal_batch_size=gs.batch_size,
        return_convergence_delta=True,
    )
    sec = time.perf_counter() - t0
    return {
        "sec": sec,
        "scores": gs.to_units(attr[0].detach()),
        "delta": float(delta[0]),
        "fwd": fn.grad_rows + fn.nograd_rows,
        "bwd": fn.grad_rows,
    }


def check_forward(w: dict[str, Any], timed: bool) -> str:
    """Compare attribkit's and the benchmark's forward: values at x and x' and (if ``timed``)
    the second of two fwd+bwd batches of ``batch_size`` rows each."""
    gs: GradientScorer = w["gs"]
    fa, fc = gs.forward_fn, w["captum_fn"]
    with torch.no_grad():
        both = torch.stack([gs.x, gs.baseline])
        va, vc = fa(both), fc(both)
    msg = (
        f"{w['name']}: f(x), f(x') = {va[0]:.4f}, {va[1]:.4f} (attribkit forward) vs "
        f"{vc[0]:.4f}, {vc[1]:.4f} (benchmark forward)"
    )
    if not timed:
        return msg
    times = {}
    xb = both[:1].expand(gs.batch_size, *gs.x.shape).clone()
    for name, fn in (("attribkit", fa), ("benchmark", fc)) * 2:
        xr = xb.clone().requires_grad_(True)
        t0 = time.perf_counter()
        torch.autograd.grad(fn(xr).sum(), xr)
        times[name] = time.perf_counter() - t0
    return (
        msg + f"; one fwd+bwd batch of {gs.batch_size}: {times['attribkit']:.2f}s (attribkit "
        f"forward) vs {times['benchmark']:.2f}s (benchmark forward)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one prompt, fewer steps and repeats")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the LM rows")
    ap.add_argument("--repeats", type=int, default=None, help="timed LM runs per library/cell")
    ap.add_argument("--steps", type=int, nargs="*", default=None, help="n_steps values")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    steps = args.steps or ([8, 16] if args.quick else [16, 32, 64])
    repeats = args.repeats or (1 if args.quick else 2)
    n_pairs = 1 if args.quick else len(PAIRS)

    # The MLP is too small to split over threads: on a busy machine, 2 threads measure OpenMP
    # synchronisation, not the libraries. It runs on 1 thread (both libraries), the LM on --threads.
    workloads = [
        {**mlp_workload(batch_size=16), "threads": 1, "repeats": 5},
        *({**w, "threads": args.threads, "repeats": repeats} for w in lm_workloads(n_pairs)),
    ]
    checks = []
    rows: list[list[object]] = []
    for k, w in enumerate(workloads):
        torch.set_num_threads(w["threads"])
        gs: GradientScorer = w["gs"]
        counted = Counted(w["captum_fn"])
        if w["name"] != "mlp":
            checks.append(check_forward(w, timed=k == 1 and not args.quick))
        # warm-up: one run of each library (allocator, thread pools, first-call paths)
        run_attribkit(gs, gs.batch_size)
        run_captum(gs, counted, gs.batch_size)
        for n in steps:
            ak_runs, ca_runs = [], []
            for _ in range(w["repeats"]):  # alternate so machine load hits both alike
                ak_runs.append(run_attribkit(gs, n))
                ca_runs.append(run_captum(gs, counted, n))
            ak, ca = ak_runs[-1], ca_runs[-1]
            ak_sec = statistics.median(r["sec"] for r in ak_runs)
            ca_sec = statistics.median(r["sec"] for r in ca_runs)
            ca_err = abs(ca["delta"]) / max(abs(ak["diff"]), 1e-12)
            scale = max(np.abs(ak["scores"]).max(), 1e-12)
            agree = float(np.abs(ak["scores"] - ca["scores"]).max() / scale)
            corr = float(np.corrcoef(ak["scores"], ca["scores"])[0, 1])
            rows.append(
                [
                    w["name"],
                    n,
                    fmt(ak_sec),
                    fmt(ca_sec),
                    f"{ak_sec / ca_sec:.2f}",
                    f"{ak['err']:.1e}",
                    f"{ca_err:.1e}",
                    f"{ak['fwd']}/{ak['bwd']}",
                    f"{ca['fwd']}/{ca['bwd']}",
                    f"{agree:.1e}",
                    f"{corr:.6f}",
                ]
            )
            print(" ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)

    header = [
        "workload",
        "n_steps",
        "attribkit s",
        "captum s",
        "ratio",
        "attribkit compl.err",
        "captum compl.err",
        "attribkit fwd/bwd",
        "captum fwd/bwd",
        "max|diff|/max|attr|",
        "corr",
    ]
    print(f"# Integrated gradients: attribkit vs Captum ({'quick' if args.quick else 'full'} run)")
    print(environment(["attribkit", "torch", "captum", "transformers"]))
    print(
        "Gauss-Legendre quadrature; seconds = median of the runs per library (runs alternate "
        "between the libraries, after a warm-up run of each); ratio = attribkit s / captum s; "
        "fwd/bwd = rows through the model (forward) / rows differentiated (backward)."
    )
    for w in workloads:
        print(
            f"workload {w['name']}: {w['shape']}, batch size {w['gs'].batch_size}, "
            f"{w['threads']} torch thread(s), {w['repeats']} timed run(s) per cell"
        )
    for c in checks:
        print("check:", c)
    print()
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
