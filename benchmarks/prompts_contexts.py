"""Attribution that acts on prompts and contexts (issue 22): one table per paper, each on
held-out generated data with SmolLM2-135M-Instruct, next to a same-budget baseline.

1. GenerationPrograms ('GenerationPrograms: Fine-grained Attribution with Executable Programs',
   2025): citation precision / recall / F1 of post-hoc programs vs context top-k vs SmolLM2
   self-citation (``benchmarks/_prompts_programs.py``).
2. OG-RAG ('OG-RAG: Ontology-Grounded Retrieval-Augmented Generation', 2024): hyperedges vs
   sentence chunks vs fixed chunks at one token budget — answer accuracy, P@1 of the gold
   cluster, reader burden, context tokens (``benchmarks/_prompts_ograg.py``).
3. AMPLIFY ('Post Hoc Explanations of Language Models Can Improve Language Models', 2023) on
   "but"-sentiment and Coin Flip, with the mandatory random-word control
   (``benchmarks/_prompts_amplify.py``).
4. Prompt pruning ('Evolving Prompts In-Context', PromptQuine, 2025): full prompt, TAPruning,
   PromptQuine (budgeted), LOO pruning, random pruning of the same size
   (``benchmarks/_prompts_pruning.py``).

Run: ``.venv/bin/python benchmarks/prompts_contexts.py [--quick] [--sections programs,ograg,...]``.
Accuracies carry Wilson 95 % intervals; a method "helps" only where its interval clears the
baseline's. Measurements only.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import run_sections

SECTIONS = {
    "programs": "_prompts_programs",
    "ograg": "_prompts_ograg",
    "amplify": "_prompts_amplify",
    "pruning": "_prompts_pruning",
}

if __name__ == "__main__":
    run_sections(__doc__, SECTIONS, ["torch", "transformers", "numpy", "scikit-learn"])
