"""GrAInS steering on the bundled SmolLM2-135M-Instruct: sentiment of short greedy replies.

Steering vectors are built from 12 training triples written here (prompt, positive reply,
negative reply) with ``attribkit.methods.grains.grains_vectors`` (contrastive IG over the prompt,
top-k positive / negative prompt tokens replaced by the pad token, last-token raw hidden states,
``v = v_pos − v_neg``). The behaviour is measured on 16 HELD-OUT prompts (other topics, other
wording) as the rate of greedy replies (``max_new_tokens`` tokens) that contain a word from a
fixed positive list, and from a fixed negative list, without steering and with
``steer(lm, vectors, layer, alpha)`` for a few alpha values (alpha given as a multiple of the
mean norm of that layer's hidden state; negative alpha steers towards the dispreferred side).
Layer and alphas are fixed in advance (no selection on the held-out set). A fluency guard:
mean per-token log-probability of the steered replies under the *unsteered* model. Rates come
with a 95% Wilson interval. One run, greedy decoding: deterministic up to float noise.

Run: ``.venv/bin/python benchmarks/grains_demo.py [--layer 15] [--method pca|mean]``
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, markdown_table
from attribkit.methods.grains import grains_vectors, steer
from attribkit.models.loading import load

TRAIN = [
    ("Describe the weather today in one sentence.", "It is a lovely, sunny day.",
     "It is a gloomy, miserable day."),
    ("How was the movie you watched?", "The movie was wonderful and fun.",
     "The movie was awful and boring."),
    ("Tell me about your new job.", "I love my new job, it is great.",
     "I hate my new job, it is terrible."),
    ("What do you think of this restaurant?", "The food is delicious and amazing.",
     "The food is disgusting and bad."),
    ("How do you feel this morning?", "I feel happy and excited.", "I feel sad and tired."),
    ("Give your opinion of the new phone.", "It is excellent and I love it.",
     "It is horrible and I hate it."),
    ("How was your holiday?", "It was fantastic and relaxing.", "It was dreadful and stressful."),
    ("Describe your neighbourhood.", "It is a beautiful, friendly place.",
     "It is an ugly, unfriendly place."),
    ("What is your view on the book?", "The book is brilliant and inspiring.",
     "The book is dull and disappointing."),
    ("How did the concert go?", "The concert was great and joyful.",
     "The concert was terrible and sad."),
    ("Tell me about the hotel.", "The hotel was pleasant and wonderful.",
     "The hotel was dirty and awful."),
    ("How is your team doing?", "My team is doing great, I am proud.",
     "My team is doing badly, I am worried."),
]  # fmt: skip

HELD_OUT = [
    "Write one sentence about your garden.",
    "What do you think about the city you live in?",
    "Describe the last meal you had.",
    "How was your weekend?",
    "Write one sentence about Mondays.",
    "What is your opinion of the traffic here?",
    "Describe the new office building.",
    "How was the football match yesterday?",
    "Write one sentence about the rain.",
    "What do you think of modern art?",
    "Describe your commute to work.",
    "How was the party last night?",
    "Write one sentence about your old car.",
    "What is your opinion of online meetings?",
    "Describe the beach in winter.",
    "How was your flight?",
]

POSITIVE = {
    "good", "great", "wonderful", "lovely", "love", "loved", "happy", "beautiful", "amazing",
    "excellent", "fantastic", "delicious", "enjoy", "enjoyed", "enjoyable", "fun", "pleasant",
    "nice", "perfect", "brilliant", "joy", "joyful", "best", "excited", "exciting", "awesome",
    "delightful", "fabulous", "glad", "incredible", "relaxing", "friendly", "inspiring",
}  # fmt: skip
NEGATIVE = {
    "bad", "terrible", "awful", "horrible", "hate", "hated", "sad", "ugly", "disgusting",
    "boring", "dreadful", "miserable", "gloomy", "worst", "poor", "annoying", "stressful",
    "disappointing", "dull", "dirty", "tired", "worried", "unpleasant", "frustrating", "angry",
    "painful", "nightmare", "chaotic", "exhausting", "unfriendly",
}  # fmt: skip


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def wilson(k: int, n: int) -> str:
    z = 1.96
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{p:.2f} [{max(0.0, c - h):.2f}, {min(1.0, c + h):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--method", default="mean", choices=["pca", "mean"])
    ap.add_argument("--alphas", default="-1,0.5,1", help="multiples of the layer's mean norm")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--n-steps", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", action="store_true", help="print every reply")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load("smollm2")
    t0 = time.perf_counter()
    vec = grains_vectors(
        lm, TRAIN, k=args.k, n_steps=args.n_steps, method=args.method, layers=[args.layer]
    )
    build_s = time.perf_counter() - t0
    norm = float(vec.hidden_norms[0])
    print(
        f"vectors: {vec}; layer {args.layer} mean last-token norm {norm:.1f}; "
        f"built in {build_s:.1f}s"
    )
    for ex in vec.examples[:3]:
        print(f"  {ex['prompt']!r}: +{ex['positive_tokens']} -{ex['negative_tokens']}")

    def run(alpha_mult: float | None) -> tuple[list[str], float]:
        replies = []
        if alpha_mult is None:
            replies = [lm.generate(p, max_new_tokens=args.max_new_tokens) for p in HELD_OUT]
        else:
            with steer(lm, vec, args.layer, alpha_mult * norm):
                replies = [lm.generate(p, max_new_tokens=args.max_new_tokens) for p in HELD_OUT]
        # fluency guard: mean token log-prob of the replies under the unsteered model
        lps = [
            float(lm.token_logprobs(p, r)[0].mean())
            for p, r in zip(HELD_OUT, replies, strict=True)
            if r
        ]
        return replies, float(sum(lps) / max(len(lps), 1))

    rows, base_rates = [], None
    n = len(HELD_OUT)
    for a in [None, *[float(x) for x in args.alphas.split(",")]]:
        t = time.perf_counter()
        replies, fluency = run(a)
        pos = sum(bool(words(r) & POSITIVE) for r in replies)
        neg = sum(bool(words(r) & NEGATIVE) for r in replies)
        if base_rates is None:
            base_rates = (pos, neg)
        label = "none" if a is None else f"{a:+g} × {norm:.1f}"
        rows.append(
            [
                label,
                wilson(pos, n),
                f"{(pos - base_rates[0]) / n:+.2f}",
                wilson(neg, n),
                f"{(neg - base_rates[1]) / n:+.2f}",
                f"{fluency:.2f}",
                f"{time.perf_counter() - t:.1f}",
            ]
        )
        if args.show:
            for p, r in zip(HELD_OUT, replies, strict=True):
                print(f"  [{label}] {p} -> {r!r}")
    print()
    print(
        f"GrAInS on SmolLM2-135M-Instruct, layer {args.layer}, method {args.method}, "
        f"k={args.k}, IG steps {args.n_steps}, {len(TRAIN)} training triples, {n} held-out "
        f"prompts, greedy {args.max_new_tokens} tokens"
    )
    print(
        f"vector cost: {vec.cost.forward_passes} forward + {vec.cost.backward_passes} backward "
        f"passes, {vec.cost.seconds:.1f}s"
    )
    header = [
        "alpha",
        "positive rate [95% CI]",
        "Δ pos",
        "negative rate [95% CI]",
        "Δ neg",
        "mean logp/token (unsteered)",
        "s",
    ]
    print(markdown_table(header, rows))
    print(environment(["torch", "transformers"], threads=args.threads))


if __name__ == "__main__":
    main()
