"""GrAInS steering on the bundled SmolLM2-135M-Instruct: sentiment of short greedy replies.

Steering vectors are built from 12 training triples written here (a prompt with a positive and
a negative cue, a positive reply, a negative reply) with
``attribkit.methods.generation.grains.grains_vectors`` (contrastive IG over the prompt, space-token
baseline; the top-k positive / negative prompt tokens replaced by the space token; last-token
raw hidden states; ``v = v_pos − v_neg``). The behaviour is measured on 16 HELD-OUT prompts
(other topics, other wording, no sentiment cue) as the rate of greedy replies
(``max_new_tokens`` tokens) that contain a word from a fixed positive list, and from a fixed
negative list, without steering and with ``steer(lm, vectors, layer, alpha)`` for a few alpha
values (alpha given as a multiple of the mean norm of that layer's hidden state; negative alpha
steers towards the dispreferred side). Layer and alphas were chosen on separate validation
prompts (``--validation``); nothing was selected on the held-out set. A fluency guard: mean
per-token log-probability of the steered replies under the *unsteered* model. Rates come with a
95% Wilson interval. One run, greedy decoding: deterministic up to float noise.

Run: ``.venv/bin/python benchmarks/grains_demo.py [--layer 12] [--method pca|mean]``
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
from attribkit.methods.generation.grains import grains_vectors, steer
from attribkit.models.loading import load

# Each training prompt carries a positive and a negative cue; the preferred reply follows the
# positive one. Contrastive IG then puts its largest positive score on the positive cue word and
# its largest negative score on the negative one (printed by the script), so ablating them moves
# the last-token state along a sentiment direction. (An earlier version used neutral prompts,
# e.g. "How was your holiday?": there the selected tokens were topic words and punctuation and
# steering changed nothing measurable.)
TRAIN = [
    ("The trip was wonderful but the flight was awful. Sum it up in one sentence.",
     "It was a wonderful trip.", "It was an awful trip."),
    ("The food was delicious, the service was terrible. How was dinner?",
     "Dinner was delicious.", "Dinner was terrible."),
    ("I love my job but my boss is horrible. How is work?",
     "Work is great, I love it.", "Work is horrible."),
    ("The movie had a brilliant cast and a boring plot. Review it briefly.",
     "A brilliant movie.", "A boring movie."),
    ("The weather was lovely in the morning and miserable at night. How was the day?",
     "It was a lovely day.", "It was a miserable day."),
    ("The hotel room was beautiful, the staff were rude. Describe your stay.",
     "My stay was beautiful.", "My stay was unpleasant."),
    ("The concert was fantastic although the crowd was annoying. How was it?",
     "It was fantastic.", "It was annoying."),
    ("My new phone is excellent but the battery is bad. What do you think of it?",
     "It is excellent.", "It is bad."),
    ("The park is pleasant, the traffic nearby is dreadful. Describe the area.",
     "The area is pleasant.", "The area is dreadful."),
    ("The book starts inspiring and ends disappointing. Your verdict?",
     "An inspiring book.", "A disappointing book."),
    ("The team played great in the first half and poorly in the second. How did they do?",
     "They did great.", "They did poorly."),
    ("The party was fun but the music was awful. How was the party?",
     "The party was fun.", "The party was awful."),
]  # fmt: skip

# The layer (12) and the alphas were chosen on these 8 validation prompts only (one look at
# alpha -0.5, -0.25, +0.25, +0.5 at layer 12); HELD_OUT was not used to choose anything.
VALIDATION = [
    "Write one sentence about your school.",
    "What do you think of the new park?",
    "Describe your morning coffee.",
    "How was the trip to the mountains?",
    "Write one sentence about winter evenings.",
    "What is your opinion of the local bus service?",
    "Describe the old library.",
    "How was the dinner with your friends?",
]

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
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--method", default="mean", choices=["pca", "mean"])
    ap.add_argument(
        "--alphas", default="-0.5,-0.25,0.25,0.5", help="multiples of the layer's mean norm"
    )
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--n-steps", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", action="store_true", help="print every reply")
    ap.add_argument(
        "--validation", action="store_true", help="measure on the validation prompts instead"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prompts = VALIDATION if args.validation else HELD_OUT
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
    for ex in vec.examples:
        print(f"  {ex['prompt']!r}: +{ex['positive_tokens']} -{ex['negative_tokens']}")

    def run(alpha_mult: float | None) -> tuple[list[str], float]:
        replies = []
        if alpha_mult is None:
            replies = [lm.generate(p, max_new_tokens=args.max_new_tokens) for p in prompts]
        else:
            with steer(lm, vec, args.layer, alpha_mult * norm):
                replies = [lm.generate(p, max_new_tokens=args.max_new_tokens) for p in prompts]
        # fluency guard: mean token log-prob of the replies under the unsteered model
        lps = [
            float(lm.token_logprobs(p, r)[0].mean())
            for p, r in zip(prompts, replies, strict=True)
            if r
        ]
        return replies, float(sum(lps) / max(len(lps), 1))

    rows, base_rates = [], None
    n = len(prompts)
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
            for p, r in zip(prompts, replies, strict=True):
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
