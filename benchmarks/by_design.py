"""Explainable by design, and causal paths: COMET, the Affinity Explainer and channel
interventions, each on a model trained in the script (issue 21).

1. COMET ('Comprehensive Attribution: Inherently Explainable Vision Model with Feature
   Detector', ECCV 2024) on 16×16 digit canvases: the selector–predictor trained with the frozen
   detector vs the same selector–predictor without it and the black box; predictor accuracy,
   the detector's accuracy on the selected part D(x_s) and on its complement D(x_1−s), pixel AP
   against the digit's pixels, mask area; mean ± sd over 3 seeds (``benchmarks/_by_design_comet.py``).
2. Affinity Explainer ('Matching-Based Few-Shot Semantic Segmentation Models Are Interpretable by
   Design', 2025) on novel-class one-shot episodes: plain / masked / signed vs random, the support
   mask itself (the mandatory baseline), saliency and integrated gradients; foreground mIoU loss
   when only the top p % support pixels are kept (``benchmarks/_by_design_affex.py``).
3. Causal channels ('Causal Analysis for Robust Interpretability of Neural Networks', 2023) vs
   gradient × activation (Taylor), activation and random, per layer of the tests' digits CNN:
   the drop when the top-4 channels are ablated on held-out images
   (``benchmarks/_by_design_causal.py``).

Run: ``.venv/bin/python benchmarks/by_design.py [--quick] [--sections comet,affex,causal]``
(about 15 min in full on 2 shared cores). Measurements only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # digits_cnn
from _table import environment, markdown_table

SECTIONS = ("comet", "affex", "causal")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed, fewer episodes and epochs")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    args = ap.parse_args()
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    import torch

    torch.set_num_threads(1)
    print(environment(["torch", "numpy", "scikit-learn"], 1))
    if "comet" in sections:
        from _by_design_comet import HEADERS, comet_rows

        t0 = time.perf_counter()
        rows = comet_rows((0,) if args.quick else (0, 1, 2), quick=args.quick)
        print("\n## 1. COMET on 16×16 digit canvases\n")
        print(markdown_table(HEADERS, rows))
        print(f"\n({time.perf_counter() - t0:.0f} s)")
    if "affex" in sections:
        from _by_design_affex import affex_rows

        t0 = time.perf_counter()
        notes: list[str] = []
        rows, headers = affex_rows(args.quick, notes=notes)
        print("\n## 2. Affinity Explainer on novel-class one-shot episodes\n")
        print(markdown_table(headers, rows))
        print("\n" + "\n".join(notes) + f"\n({time.perf_counter() - t0:.0f} s)")
    if "causal" in sections:
        from _by_design_causal import causal_rows

        t0 = time.perf_counter()
        header, rows, note = causal_rows(args.quick)
        print("\n## 3. Causal channels vs Taylor, activation and random\n")
        print(markdown_table(header, rows))
        print(f"\n{note}\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
