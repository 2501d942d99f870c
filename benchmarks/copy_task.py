"""Copy prompts: does each token-attribution method put its largest weight on the copied word?

Eight prompts ("Say the word zebra." → "Zebra", ...) on the bundled SmolLM2-135M-Instruct; the
first generated token is decided by the copied word. For each method (defaults) the table says
which input token got the largest score in row 0, and a "hits" row counts the hits. Eight
held-out prompts, written after the defaults were chosen on the first eight, follow with their
own count. The
all-layer attention variants are included to show why the defaults read the upper layers.

Run: ``.venv/bin/python benchmarks/copy_task.py [--threads 2]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, markdown_table

PROMPTS = [
    ("Say the word zebra.", "Zebra", " zebra"),
    ("Repeat the word: zebra", "Zebra", " zebra"),
    ("Write zebra.", "Zebra", " zebra"),
    ("Copy this word: banana", "Banana", " banana"),
    ("Say the word banana.", "Banana", " banana"),
    ("Repeat after me: pineapple", "Pineapple", " pineapple"),
    ("Please say zebra", "Zebra", " zebra"),
    ("Type the word giraffe.", "Giraffe", " giraffe"),
]
# Written after the defaults were chosen on PROMPTS, to check that they carry over.
HELD_OUT = [
    ("Say the word tiger.", "Tiger", " tiger"),
    ("Repeat this word: apple", "Apple", " apple"),
    ("Write the word river.", "River", " river"),
    ("Please repeat: elephant", "Elephant", " elephant"),
    ("Echo the word: mango", "Mango", " mango"),
    ("Say hello.", "Hello", " hello"),
    ("Type the word orange.", "Orange", " orange"),
    ("Copy this word: piano", "Piano", " piano"),
]
# Issue 24's form ("Say back the following word and nothing more: <word>"), on which ReAGent once
# put its largest weight on ":". Not part of the tables above; benchmarks/reagent_vs_inseq.py
# reports it as its own list. Not used to choose any default.
ISSUE_FORM = [
    (f"Say back the following word and nothing more: {w}", w.capitalize(), f" {w}")
    for w in ("zebra", "lantern", "tiger", "violin")
]
METHODS = [
    ("occlusion", {}),
    ("saliency", {}),
    ("input_x_gradient", {}),
    ("input_x_gradient", {"norm": None}),
    ("integrated_gradients", {}),
    ("reagent", {}),
    ("attention", {}),
    ("attention_rollout", {}),
    ("attention", {"layer": "mean"}),
    ("attention_rollout", {"start_layer": 0}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import attribkit as ak
    from attribkit.tasks.generation import GenerationTask

    lm = ak.load("smollm2")
    names = [m + "".join(f" {k}={v}" for k, v in p.items()) for m, p in METHODS]
    rows = []
    for name, prompts in (("hits", PROMPTS), ("held-out hits", HELD_OUT)):
        hits = np.zeros(len(METHODS), dtype=int)
        for prompt, response, word in prompts:
            task = GenerationTask(lm, prompt, response)
            row = [f"{prompt} → {response}"]
            for i, (method, params) in enumerate(METHODS):
                scores = task.attribute(method, **params).scores[0]
                top = task.columns[int(np.nanargmax(scores))].label
                hits[i] += top == word
                row.append(
                    ("**" if top == word else "") + repr(top) + ("**" if top == word else "")
                )
            rows.append(row)
        rows.append([name, *(f"{h}/{len(prompts)}" for h in hits)])
    print(environment(["attribkit", "torch", "transformers"], args.threads))
    print(markdown_table(["prompt", *names], rows))


if __name__ == "__main__":
    main()
