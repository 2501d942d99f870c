"""Causal channels (Ahmad et al., 2023; attribkit.internals, our reconstruction) vs gradient ×
activation (Taylor), activation magnitude and random choices, per layer of the tests' DigitsCNN.

Protocol (design notes ``vision_detection_causal.md`` §5.2): the DigitsCNN of
``tests/digits_cnn.py`` (conv1 16, conv2 32, conv3 32 channels, GAP + linear); per class, a causal
graph over the three layers (zero ablation, k = 4) from the probe set = the even indices of the
test split (correctly classified images of the class); the evaluation set = the odd indices
(every image of the class). Per layer and choice of 4 channels: the drop of the held-out class
accuracy and of p(label) when they are ablated (necessity), the class accuracy when only they are
kept (sufficiency), the top-4 Jaccard between two disjoint probe halves (stability: each half
ranks the channels again), the model calls that choosing them costs per class given the graph's
later layers, and seconds. "causal" is ACE at conv3 and the path effect (only through the kept
later channels) at conv1/conv2; "ACE (total)" is the total effect at those layers. Averages over
the classes; random: 5 draws per class.

Used by ``benchmarks/by_design.py`` (``causal_rows``); runnable alone:
``.venv/bin/python benchmarks/_by_design_causal.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _table import environment, fmt, markdown_table  # noqa: E402

LAYERS = {"features.0": "conv1", "features.1": "conv2", "features.2": "conv3"}
K = 4
RANDOM_DRAWS = 5
HEADER = [
    "layer",
    "choice",
    "acc drop",
    "p drop",
    "acc kept only",
    "Jaccard halves",
    "calls/class",
    "seconds (all classes)",
]


def _top(v: np.ndarray, k: int = K) -> list[int]:
    return [int(c) for c in np.argsort(-v, kind="stable")[:k]]


def _jaccard(a: list[int], b: list[int]) -> float:
    return len(set(a) & set(b)) / len(set(a) | set(b))


def causal_rows(quick: bool = False) -> tuple[list[str], list[list[object]], str]:
    """``(header, rows, note)``: the per-layer table above (rows: layer, choice, held-out class
    accuracy drop, p(label) drop, accuracy with only the channels kept, top-4 Jaccard between
    probe halves, model calls per class to choose the channels, seconds) and a one-line note
    (graph size and cost). ``quick``: classes 0–2 only. Trains the DigitsCNN (seconds)."""
    from attribkit.internals import causal_graph, channel_report, channel_scores
    from digits_cnn import digits_classifier, digits_data

    model = digits_classifier()
    x, y = digits_data("test")
    xp, yp, xe, ye = x[0::2], y[0::2], x[1::2], y[1::2]
    classes = range(3) if quick else range(10)
    choices = ["causal", "ACE (total)", "Taylor", "activation", "random"]
    stats: dict[tuple[str, str], dict[str, list[float]]] = {
        (L, c): {"acc": [], "p": [], "kept": [], "jac": [], "calls": [], "sec": []}
        for L in LAYERS
        for c in choices
    }
    graph_sec, graph_calls, probes = 0.0, 0, []
    for cls in classes:
        start = time.perf_counter()
        g = causal_graph(model, xp, cls, layers=tuple(LAYERS), k=K, labels=yp)
        graph_sec += time.perf_counter() - start
        graph_calls += g.cost.model_calls
        probes.append(g.n_probe)
        halves = np.array_split(np.random.default_rng(cls).permutation(g.n_probe), 2)
        rng = np.random.default_rng(100 + cls)
        for layer in LAYERS:
            last = layer == g.layers[-1]
            method_of = {"causal": "causal", "ACE (total)": "ace", "Taylor": "taylor"}
            method_of["activation"] = "activation"
            for choice in choices:
                if choice == "ACE (total)" and last:
                    continue  # the same as "causal" at the last layer
                st = stats[(layer, choice)]
                if choice == "random":
                    n_ch = g._probe.by_name[layer].channels
                    draws = [list(rng.choice(n_ch, K, replace=False)) for _ in range(RANDOM_DRAWS)]
                    st["calls"].append(0)
                    st["sec"].append(0.0)
                else:
                    method = method_of[choice]
                    before, t0 = model.cost.model_calls, time.perf_counter()
                    scores = channel_scores(g, method, layer, subset=np.arange(g.n_probe))
                    st["sec"].append(time.perf_counter() - t0)
                    st["calls"].append(model.cost.model_calls - before)
                    draws = [_top(scores)]
                    tops = [
                        _top(channel_scores(g, method, layer, subset=np.sort(h))) for h in halves
                    ]
                    st["jac"].append(_jaccard(*tops))
                for chans in draws:
                    r = channel_report(g, xe, ye, layer=layer, channels=[int(c) for c in chans])
                    st["acc"].append(r.acc_drop)
                    st["p"].append(r.p_drop)
                    st["kept"].append(r.acc_kept_only)
    rows: list[list[object]] = []
    for layer, short in LAYERS.items():
        for choice in choices:
            st = stats[(layer, choice)]
            if not st["acc"]:
                continue
            rows.append(
                [
                    f"{short} ({g._probe.by_name[layer].channels} ch)",
                    choice,
                    f"{np.mean(st['acc']):.3f}",
                    f"{np.mean(st['p']):.3f}",
                    f"{np.mean(st['kept']):.3f}",
                    f"{np.mean(st['jac']):.2f}" if st["jac"] else "—",
                    f"{np.mean(st['calls']):.0f}",
                    fmt(float(np.sum(st["sec"]))),
                ]
            )
    note = (
        f"{len(classes)} classes, k = {K}, zero ablation; probe {min(probes)}–{max(probes)} "
        f"images per class (even test indices, correctly classified), evaluation = the odd "
        f"indices; a 3-layer graph costs {graph_calls / len(classes):.0f} forward passes per "
        f"class ({graph_sec:.1f} s for all classes); random = {RANDOM_DRAWS} draws per class."
    )
    return HEADER, rows, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="classes 0-2 only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    header, rows, note = causal_rows(quick=args.quick)
    print(environment(["torch", "numpy"], threads=1))
    print()
    print(markdown_table(header, rows))
    print()
    print(note + f" Total {time.perf_counter() - start:.1f} s (training included).")


if __name__ == "__main__":
    main()
