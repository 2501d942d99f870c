"""Who produced this? Source attribution on small real substitutes for the papers' data.

No paper's data can be had here (OmniFake, POSE's benchmark, OW-DFA faces, ASVspoof, CodecFake,
the machine-text corpora): every protocol runs exactly, on stand-ins, and no published number is
claimed as reproduced. Sections (each prints a table with seconds):

1. ``authorship``: the Federalist Papers (``../shared/data/federalist``; skipped without it),
   70 undisputed single-author papers for training, the 12 disputed papers: how many go to
   Madison (the consensus since Mosteller & Wallace, 1964) for Burrows' Delta, the most-frequent-
   word logistic model and char 3–5-gram TF-IDF + linear SVM, each beside its failure mode
   (unstandardised, unbalanced).
2. ``detectors``: zero-shot machine-text detectors on text sampled from a word trigram LM trained
   on 55 Federalist papers vs 200-word human chunks of the other papers: AUROC per sampling
   temperature, and where the sign flips (AUROC < 0.5: the detector calls human text machine).
3. ``which-model``: which generator produced a text? Known: word bigram, word trigram, char
   5-gram (all trained on Federalist papers) and the bundled SmolLM2 (its own samples); unknown:
   a word 4-gram (unseen model) and human chunks. Features: mean and std of token log-probs under
   each known LM; multinomial logistic regression; :func:`attribkit.open_set_report`.
4. ``impersonation``: forgeries by per-author trigram LMs attributed by each authorship model,
   beside forgeries of a pooled LM (Jones et al., 'Are You Robert or RoBERTa?', 2022).
5. ``images``: the toy image generators (architecture = up-sampler, instance = seeded conv
   residual): max-softmax on frequency-residual features and POSE-lite, unseen seed and unseen
   architecture; 5-way 10-shot episodes on held-out generators; open-world k-means.
6. ``audio``: espeak-ng and flite voices through a LAVA-style two-level hierarchy with rejection
   (skipped without the synthesisers).

Run: ``.venv/bin/python benchmarks/provenance.py [--quick] [--sections a,b] [--threads 2]``.
Measurements only: no timed assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, fmt, markdown_table

TEMPERATURES = (0.6, 0.8, 1.0, 1.2, 1.5)
DETECTORS = ("log_perplexity", "fast_detectgpt", "binoculars", "detectgpt")


def _federalist() -> Any:
    from attribkit.core.errors import InputError
    from attribkit.models.authorship import load_federalist

    try:
        return load_federalist()
    except InputError as e:
        print(f"(skipped: the Federalist Papers are not here: {e})")
        return None


def _chunks(texts: list[str], words: int) -> list[str]:
    """Consecutive ``words``-word chunks of every text (the last partial chunk dropped)."""
    out = []
    for text in texts:
        w = text.split()
        out += [" ".join(w[i : i + words]) for i in range(0, len(w) - words + 1, words)]
    return out


# --- 1. authorship ------------------------------------------------------------------------------
def authorship_rows(fed: Any) -> list[list[object]]:
    from attribkit.models.authorship import BurrowsDelta, CharNgramSVM, MFWLogistic

    texts, authors = fed.train
    _, disputed = fed.disputed
    variants: list[tuple[str, Callable[[], Any]]] = [
        ("Delta, 150 words", lambda: BurrowsDelta(150)),
        ("Delta, 50 words", lambda: BurrowsDelta(50)),
        ("MFW logistic, standardised, C=1", lambda: MFWLogistic(150, C=1.0)),
        ("MFW logistic, standardised, C=100", lambda: MFWLogistic(150, C=100.0)),
        ("MFW logistic, unstandardised", lambda: MFWLogistic(150, standardize=False)),
        ("char 3-5-gram SVM, balanced", lambda: CharNgramSVM(class_weight="balanced")),
        ("char 3-5-gram SVM, no class weights", lambda: CharNgramSVM(class_weight=None)),
    ]
    rows = []
    for name, make in variants:
        t0 = time.perf_counter()
        pred = make().fit(texts, authors).predict(disputed)
        madison = sum(p == "MADISON" for p in pred)
        rows.append([name, f"{madison} / {len(disputed)}", f"{time.perf_counter() - t0:.1f}"])
    return rows


# --- 2. detectors -------------------------------------------------------------------------------
def _auroc(machine: list[float], human: list[float]) -> float:
    from attribkit.evaluation.open_set import auroc

    return float(auroc(np.asarray(machine), np.asarray(human)))


def detector_rows(fed: Any, n: int, words: int) -> list[list[object]]:
    from attribkit.models.ngram import NGramLM
    from attribkit.tasks.machine_text import attribute_machine_text

    texts, _ = fed.train
    train, held = texts[:55], texts[55:] + fed.disputed[1]
    trigram = NGramLM(3, name="trigram").fit(train)
    bigram = NGramLM(2, name="bigram").fit(train)
    human = _chunks(held, words)[:n]
    rows = []
    for temperature in ("human", *TEMPERATURES):
        t0 = time.perf_counter()
        sample = (
            human
            if temperature == "human"
            else trigram.sample(n, words, temperature=float(temperature), seed=1)
        )
        stats = {}
        for method in DETECTORS:
            reference = bigram if method == "binoculars" else None
            stats[method] = [
                float(
                    attribute_machine_text(t, trigram, method, reference=reference).extras[
                        "statistic"
                    ]
                )
                for t in sample
            ]
        if temperature == "human":
            human_stats = stats
            continue
        row: list[object] = [temperature]
        for method in DETECTORS:
            a = _auroc(stats[method], human_stats[method])
            row.append(fmt(a) + (" (flipped)" if a < 0.5 else ""))
        row.append(f"{time.perf_counter() - t0:.1f}")
        rows.append(row)
    return rows


# --- 3. which model -----------------------------------------------------------------------------
def _smollm2_samples(lm: Any, n: int, tokens: int) -> list[str]:
    prompts = [
        "Write a short essay about the powers of a national government.",
        "Explain why a union of states is stronger than separate states.",
        "Describe the duties of a president and of a senate.",
    ]
    out: list[str] = []
    per = -(-n // len(prompts))
    for i, prompt in enumerate(prompts):
        got = lm.generate(prompt, max_new_tokens=tokens, temperature=1.0, seed=i, n=per)
        out += [t for t in got if len(t.split()) >= 20]
    return out[:n]


def _features(texts: list[str], ngrams: list[Any], hf: Any) -> np.ndarray:
    """Mean and std of token log-probs under each n-gram LM and SmolLM2: (n, 2 · models)."""
    cols = []
    for lm in ngrams:
        lp = [lm.token_logprobs(t) for t in texts]
        cols += [[x.mean() for x in lp], [x.std() for x in lp]]
    seqs = [hf.encode(t) for t in texts]
    rows = hf.logprobs(seqs)
    lp = [r[np.arange(len(s)), s] for r, s in zip(rows, seqs, strict=True)]
    cols += [[x.mean() for x in lp], [x.std() for x in lp]]
    return np.asarray(cols, dtype=float).T


def which_model_rows(fed: Any, n: int, words: int) -> tuple[list[list[object]], dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from attribkit.evaluation.open_set import open_set_report
    from attribkit.models import load
    from attribkit.models.next_token import HFNextToken
    from attribkit.models.ngram import NGramLM

    t0 = time.perf_counter()
    texts, _ = fed.train
    half_a, half_b = texts[0::2], texts[1::2]  # generators and the features' LMs see disjoint text
    gens = {
        "word bigram": NGramLM(2).fit(half_a),
        "word trigram": NGramLM(3).fit(half_a),
        "char 5-gram": NGramLM(5, level="char").fit(half_a),
        "word 4-gram (unknown)": NGramLM(4).fit(half_a),
    }
    lm = load("smollm2")
    corpus: dict[str, list[str]] = {}
    for i, (name, g) in enumerate(gens.items()):
        length = words * 6 if "char" in name else words
        corpus[name] = g.sample(n, length, temperature=1.0, seed=10 + i)
    corpus["smollm2"] = _smollm2_samples(lm, n, tokens=int(words * 1.4))
    corpus["human (unknown)"] = _chunks(fed.disputed[1] + texts[60:], words)[:n]
    gen_seconds = time.perf_counter() - t0
    scorers = [NGramLM(2).fit(half_b), NGramLM(3).fit(half_b), NGramLM(5, level="char").fit(half_b)]
    hf = HFNextToken(lm)
    t1 = time.perf_counter()
    feats = {name: _features(ts, scorers, hf) for name, ts in corpus.items()}
    feat_seconds = time.perf_counter() - t1
    known = ["word bigram", "word trigram", "char 5-gram", "smollm2"]
    unknown = ["word 4-gram (unknown)", "human (unknown)"]
    x_train, y_train, x_test, y_test, scen = [], [], [], [], []
    for k, name in enumerate(known):
        f = feats[name]
        half = len(f) // 2
        x_train.append(f[:half])
        y_train += [k] * half
        x_test.append(f[half:])
        y_test += [k] * (len(f) - half)
        scen += ["known"] * (len(f) - half)
    for name in unknown:
        x_test.append(feats[name])
        y_test += [-1] * len(feats[name])
        scen += [name] * len(feats[name])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(np.vstack(x_train), y_train)
    report = open_set_report(
        clf.predict_proba(np.vstack(x_test)), np.asarray(y_test), scenario=np.asarray(scen)
    )
    rows = [
        ["closed-set accuracy (4 known)", fmt(report["closed_set_accuracy"])],
        ["macro-F1", fmt(report["macro_f1"])],
        ["AUROC known vs unknown (max softmax)", fmt(report["auroc"])],
        ["TNR at 95 % TPR", fmt(report["tnr_at_95_tpr"])],
        ["OSCR", fmt(report["oscr"])],
        ["macro-F1 with rejection", fmt(report["macro_f1_with_rejection"])],
    ]
    for name, r in report["per_scenario"].items():
        rows.append([f"AUROC vs {name}", fmt(r["auroc"])])
    rows.append(["seconds: sampling / features", f"{gen_seconds:.0f} / {feat_seconds:.0f}"])
    return rows, report


# --- 4. impersonation ---------------------------------------------------------------------------
def impersonation_rows(fed: Any, n: int, words: int) -> list[list[object]]:
    from attribkit.evaluation.impersonation import impersonation_report
    from attribkit.models.authorship import authorship_model
    from attribkit.models.ngram import NGramLM

    texts, authors = fed.train
    names = sorted(set(authors))
    generators = {
        a: NGramLM(3).fit([t for t, b in zip(texts, authors, strict=True) if b == a]) for a in names
    }
    pooled = NGramLM(3).fit(texts)
    rows = []
    for method in ("delta", "mfw", "ngram"):
        t0 = time.perf_counter()
        model = authorship_model(method).fit(texts, authors)
        r = impersonation_report(
            model, generators, n=n, length=words, baseline_generator=pooled, seed=0
        )
        cells = [
            f"{fmt(v['target_rate'])} (pooled {fmt(v['baseline_rate'])})"
            for v in (r["per_author"][a] for a in names)
        ]
        rows.append([method, *cells, fmt(r["chance"]), f"{time.perf_counter() - t0:.1f}"])
    return rows


# --- 5. and 6.: images and audio ----------------------------------------------------------------
def image_rows(quick: bool, seeds: list[int]) -> list[list[list[object]]]:
    """Two tables: the open-set figures per model and seed, and few-shot / open-world figures
    per feature space and seed."""
    from attribkit.evaluation.image_provenance import image_provenance_study

    models = [
        ("max softmax on residual features", "baseline"),
        ("spectrum CNN, no expansion", "cnn_no_expansion"),
        ("POSE-lite, max softmax", "pose_lite"),
        ("POSE-lite, prototype cosine", "pose_lite_proto"),
    ]
    open_set, transfer = [], []
    for seed in seeds:
        r = image_provenance_study(seed=seed, **({"n_per_source": 40} if quick else {}))
        for name, key in models:
            m = r[key]
            acc = m.get("closed_set_accuracy")
            open_set.append(
                [name, seed, "—" if acc is None else fmt(acc), fmt(m["auroc"]),
                 fmt(m["auroc_unseen_seed"]), fmt(m["auroc_unseen_arch"]), fmt(m["auroc_real"]),
                 fmt(m["oscr"]), f"{m.get('seconds', 0.0):.1f}"]
            )  # fmt: skip
        for feats in ("baseline_features", "pose_embeddings"):
            fs, ow = r["few_shot"][feats], r["open_world"][feats]
            transfer.append(
                [feats.replace("_", " "), seed, f"{fmt(fs['accuracy'])} ± {fmt(fs['ci95'])}",
                 fmt(ow["accuracy"]), fmt(ow["novel_global"]), fmt(ow["nmi"]), fmt(ow["ari"])]
            )  # fmt: skip
    return [open_set, transfer]


def audio_rows(quick: bool) -> list[list[object]] | None:
    import shutil

    if not (shutil.which("espeak-ng") and shutil.which("flite")):
        print("(audio skipped: espeak-ng/flite not installed; run make test as root)")
        return None
    from attribkit.evaluation.audio_provenance import audio_hierarchy_study

    r = audio_hierarchy_study(**({"n_per_voice": 30} if quick else {}))
    h = r["hierarchy"]
    rows: list[list[object]] = [
        ["5 known voices, closed set", "macro-F1", fmt(r["closed_set"]["macro_f1"])],
        ["hierarchy, known test voices", "family accuracy", fmt(h["family_accuracy"])],
        ["hierarchy, known test voices", "exact (family/voice) accepted", fmt(h["exact_rate"])],
        ["hierarchy, known test voices", "rejected somewhere", fmt(h["rejected_rate"])],
    ]
    for voice, v in r["held_out"].items():
        rows += [
            [f"held-out {voice}", f"routed to {v['family']} (most probable)", fmt(v["routing_rate"])],
            [f"held-out {voice}", "accepted at level 1", fmt(v["accepted_family_rate"])],
            [f"held-out {voice}", "model-level AUROC vs its family's voices", fmt(v["model_auroc"])],
        ]  # fmt: skip
    rows.append(["seconds", "synthesis + features / fit", f"{r['seconds']['corpus']:.1f} / "
                 f"{r['seconds']['fit']:.2f}"])  # fmt: skip
    return rows


SECTIONS = ("authorship", "detectors", "which-model", "impersonation", "images", "audio")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer texts and images")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    n, words = (20, 100) if args.quick else (60, 200)
    print(environment(["torch", "scikit-learn", "numpy"], args.threads))
    fed = (
        _federalist()
        if {"authorship", "detectors", "which-model", "impersonation"} & set(sections)
        else None
    )
    if fed is not None and "authorship" in sections:
        print("\n## 1. Federalist authorship: disputed papers given to Madison\n")
        print(markdown_table(["model", "to Madison", "s"], authorship_rows(fed)))
    if fed is not None and "detectors" in sections:
        print(f"\n## 2. Detectors: trigram samples vs human chunks ({n} each, {words} words)\n")
        head = ["temperature", *DETECTORS, "s"]
        print(markdown_table(head, detector_rows(fed, n, words)))
    if fed is not None and "which-model" in sections:
        print(f"\n## 3. Which model wrote it ({n} texts per source)\n")
        rows, _ = which_model_rows(fed, n, min(words, 120))
        print(markdown_table(["figure", "value"], rows))
    if fed is not None and "impersonation" in sections:
        print(f"\n## 4. Impersonation: forgeries attributed to their target ({n} per author)\n")
        _, authors = fed.train
        head = ["model", *sorted(set(authors)), "chance", "s"]
        print(markdown_table(head, impersonation_rows(fed, n, words)))
    if "images" in sections:
        seeds = [0] if args.quick else [0, 1, 2]
        tables = image_rows(args.quick, seeds)
        print("\n## 5. Toy image generators: open set (known: nearest/bilinear × 3 seeds)\n")
        head = ["model", "seed", "accuracy", "AUROC", "unseen seed", "unseen arch", "real",
                "OSCR", "s"]  # fmt: skip
        print(markdown_table(head, tables[0]))
        print("\n5-way 10-shot episodes (chance 0.20) and open-world k-means on held-out sources\n")
        head = ["features", "seed", "5-way 10-shot", "open-world acc", "novel", "NMI", "ARI"]
        print(markdown_table(head, tables[1]))
    if "audio" in sections:
        rows = audio_rows(args.quick)
        if rows:
            print("\n## 6. Voices: two-level hierarchy with rejection\n")
            print(markdown_table(["set", "figure", "value"], rows))


if __name__ == "__main__":
    main()
