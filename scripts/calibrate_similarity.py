"""Calibrate the cosine threshold of the mean-pooled LM embedder (``resampling(embed="lm")``).

Thought Anchors splits rollouts into "same meaning" and "different" by all-MiniLM-L6-v2 cosine
≥ 0.8. A local LM's mean-pooled hidden states live on another scale, so their threshold is the
one that best reproduces MiniLM's split (:func:`attribkit.models.embedding.calibrate_similarity`:
max F1 against MiniLM ≥ 0.8 over pairs of sentences at most 8 apart in the same trace). The
sentences: every shipped Thought Anchors trace in ``/work/shared/data/thought_anchors`` (found by
pattern). Prints the threshold to put in ``LM_SIMILARITY`` (``methods/reasoning/resampling.py``)
with its F1, precision, recall and pair counts; no text of the traces is printed.

Run: ``.venv/bin/python scripts/calibrate_similarity.py [--model smollm2] [--threads 2]``
(about 4 min on 2 idle cores for SmolLM2; both embedders run on ~3,300 sentences).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import attribkit
from attribkit.core.errors import InputError
from attribkit.methods.reasoning.resampling import mean_pooled_embedder
from attribkit.models.embedding import calibrate_similarity

DATA = Path("/work/shared/data/thought_anchors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=8, help="pairs at most this many apart")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    docs = []
    for folder in sorted(DATA.glob("*/*/problem_*")):
        try:
            docs.append(attribkit.ReasoningTrace.from_folder(folder).units.labels)
        except InputError:
            continue
    if not docs:
        raise SystemExit(f"no Thought Anchors trace under {DATA}")
    lm = attribkit.load(args.model)
    out = calibrate_similarity(mean_pooled_embedder(lm), docs, window=args.window)
    print(json.dumps({"model": lm.name, "traces": len(docs), **out}, indent=1))


if __name__ == "__main__":
    main()
