"""Attribution inside the model (issue 23): weights and neurons as units, each acted on and
measured against same-budget baselines with SmolLM2-135M-Instruct on held-out generated data.

1. WAGLE ('WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in Large
   Language Models', 2024): SmolLM2 fine-tuned on invented facts, then unlearned with GradDiff
   and NPO through masks (none, random, magnitude, gradient, SNIP, WAGLE with a μ sweep);
   forget / retain / other-relation accuracy at matched forget accuracy
   (``benchmarks/_weights_unlearning.py``).
2. ACE ('ACE: Attribution-Controlled Knowledge Editing for Multi-hop Factual Recall', 2025): the
   neuron-ablation table (log-probability increase, DLA, activation, random), then edits at
   ACE's layers vs fixed vs random layers, single-hop and multi-hop accuracy, specificity
   (``benchmarks/_neurons_editing.py``).

Run: ``.venv/bin/python benchmarks/weights_neurons.py [--quick] [--sections weights,neurons]``.
Accuracies carry Wilson 95 % intervals; a method "helps" only where its interval clears the
baseline's. Measurements only.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import run_sections

SECTIONS = {"weights": "_weights_unlearning", "neurons": "_neurons_editing"}

if __name__ == "__main__":
    run_sections(__doc__, SECTIONS, ["torch", "transformers", "numpy", "safetensors"])
