"""AMPLIFY on SmolLM2-135M-Instruct: few-shot demonstrations chosen by a proxy's
misclassification confidence, with rationales naming the proxy's top words, against the controls
the design note makes mandatory (prompt_knowledge.md §4: on "but"-sentiment a rationale naming
*random* words did as well as AMPLIFY's).

Tasks (generated, labels correct by construction; ``attribkit.tasks.prompt_cases``):
"but"-sentiment (``"Review: {input}\\nSentiment:"``, " negative"/" positive") and Coin Flip
(``"Question: {input}\\nAnswer:"``, " no"/" yes"). Per task three disjoint seeded sets: *train*
(the linear proxy's training data), *validation* (the LM's errors and the pool every shot comes
from) and *test* (held out; any test text also in train or validation is dropped).

Rows, all with 4 shots, 2 per label (``balanced=True``, the same for the random shots):
zero-shot; random shots; MCS-selected shots (linear proxy: scikit-learn logistic regression on
word counts); the same + AMPLIFY rationale (top-2 words of the proxy's gradient × input toward
the gold label, stop words out); the same shots + random-word rationale (same template, words
drawn at random from each shot's input, re-drawn for every test prompt); Self-AMPLIFY (the LM as its own proxy: MCS
from its own label probabilities, rationale from word-level leave-one-out on its own label
log-probability). Accuracy with Wilson 95 % intervals; "build passes" = LM forward passes spent
choosing shots and writing rationales (the three MCS rows share one ``amplify`` call), "proxy
calls" = proxy evaluations + explanations, "test passes" = one per test item, seconds = build +
test. Labels are read from the first token of each verbalizer (no generation).

Run: ``.venv/bin/python benchmarks/_prompts_amplify.py [--quick]``; the integrator's
``benchmarks/prompts_contexts.py`` calls :func:`section`.
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
from attribkit.applied.amplify import (
    amplify,
    few_shot_template,
    random_shots,
    random_word_prompts,
)
from attribkit.evaluation import format_proportion
from attribkit.tasks.prompt import evaluate_prompt, label_logprobs
from attribkit.tasks.prompt_cases import (
    COIN_VERBALIZERS,
    SENTIMENT_VERBALIZERS,
    LabeledExample,
    but_sentiment,
    coin_flip,
)

HEADERS = [
    "task",
    "prompt",
    "accuracy [95 % CI]",
    "n",
    "build passes",
    "proxy calls",
    "test passes",
    "s",
]
DETAIL_HEADERS = [
    "task",
    "selection",
    "validation n",
    "LM errors (base prompt)",
    "shots from errors",
    "shots' MCS",
    "proxy accuracy on validation",
    "rationales",
]
N_SHOTS, K_WORDS, SEED = 4, 2, 0
#: (name, generator, template, verbalizers, seeds of train / validation / test)
TASKS: list[tuple[str, Callable[..., list[LabeledExample]], str, dict[str, str]]] = [
    ('"but"-sentiment', but_sentiment, "Review: {input}\nSentiment:", SENTIMENT_VERBALIZERS),
    ("Coin Flip", coin_flip, "Question: {input}\nAnswer:", COIN_VERBALIZERS),
]


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(train, validation, test) items per task."""
    return (100, 12, 16) if quick else (300, 32, 120)


def _splits(
    make: Callable[..., list[LabeledExample]], quick: bool
) -> tuple[list[LabeledExample], list[LabeledExample], list[LabeledExample]]:
    n_train, n_val, n_test = _sizes(quick)
    train, val = make(n_train, seed=101), make(n_val, seed=202)
    seen = {e.text for e in train + val}
    test = [e for e in make(n_test, seed=303) if e.text not in seen]
    return train, val, test


def _accuracy(correct: np.ndarray) -> tuple[str, int]:
    return format_proportion(int(np.sum(correct)), len(correct)), len(correct)


def _evaluate(
    lm: Any, template: str, test: list[LabeledExample], verbalizers: dict[str, str]
) -> tuple[np.ndarray, int, float]:
    """(correct per item, passes, seconds) of one few-shot template on the test set."""
    ev = evaluate_prompt(lm, template, test, verbalizers)
    return np.asarray(ev.correct), ev.cost.forward_passes, ev.cost.seconds


def _evaluate_prompts(
    lm: Any, prompts: list[str], test: list[LabeledExample], verbalizers: dict[str, str]
) -> tuple[np.ndarray, int, float]:
    """The same for one prompt per test item (the random-word control)."""
    before, t0 = lm.cost.forward_passes, time.perf_counter()
    lp = label_logprobs(lm, prompts, verbalizers)
    labels = list(verbalizers)
    gold = np.array([labels.index(e.label) for e in test])
    return lp.argmax(axis=1) == gold, lm.cost.forward_passes - before, time.perf_counter() - t0


def _task_rows(
    lm: Any,
    name: str,
    make: Callable[..., list[LabeledExample]],
    template: str,
    verbalizers: dict[str, str],
    quick: bool,
) -> tuple[list[list[object]], list[list[object]]]:
    train, val, test = _splits(make, quick)
    rows: list[list[object]] = []

    def row(label: str, result: tuple[np.ndarray, int, float], build: Any, proxy: Any) -> None:
        correct, passes, seconds = result
        acc, n = _accuracy(correct)
        build_passes = build[0] if build else 0
        build_s = build[1] if build else 0.0
        rows.append([name, label, acc, n, build_passes, proxy, passes, fmt(seconds + build_s)])

    row("zero-shot", _evaluate(lm, template, test, verbalizers), None, 0)

    shots = random_shots(val, N_SHOTS, seed=SEED, balanced=True)
    row(
        "random shots",
        _evaluate(lm, few_shot_template(shots, verbalizers, template), test, verbalizers),
        None,
        0,
    )

    result = amplify(
        lm,
        train,
        val,
        verbalizers,
        n_shots=N_SHOTS,
        k_words=K_WORDS,
        template=template,
        balanced=True,
        seed=SEED,
    )
    proxy_calls = result.proxy_cost.forward_passes + result.proxy_cost.backward_passes
    shared = (f"{result.lm_cost.forward_passes} (shared)", result.cost.seconds)
    row(
        "MCS-selected shots",
        _evaluate(lm, result.without_rationales(), test, verbalizers),
        shared,
        f"{proxy_calls} (shared)",
    )
    row(
        "MCS shots + AMPLIFY rationale",
        _evaluate(lm, result.template, test, verbalizers),
        shared,
        f"{proxy_calls} (shared)",
    )
    selected = [s.example for s in result.shots]
    kw = dict(template=template, k_words=K_WORDS, seed=SEED)
    row(
        "MCS shots + random-word rationale",
        _evaluate_prompts(
            lm,
            random_word_prompts(selected, [e.text for e in test], verbalizers, **kw),
            test,
            verbalizers,
        ),
        shared,
        f"{proxy_calls} (shared)",
    )

    self_result = amplify(
        lm,
        [],
        val,
        verbalizers,
        proxy="self",
        n_shots=N_SHOTS,
        k_words=K_WORDS,
        template=template,
        balanced=True,
        seed=SEED,
    )
    row(
        "Self-AMPLIFY (LM as proxy, LOO words)",
        _evaluate(lm, self_result.template, test, verbalizers),
        (
            self_result.lm_cost.forward_passes + self_result.proxy_cost.forward_passes,
            self_result.cost.seconds,
        ),
        f"{self_result.proxy_cost.forward_passes} (LM passes)",
    )

    labels = list(verbalizers)
    gold = [labels.index(e.label) for e in val]
    linear_acc = result.proxy.probabilities([e.text for e in val]).argmax(axis=1) == gold
    details: list[list[object]] = []
    for what, res, acc in (
        ("linear proxy", result, linear_acc),
        ("Self-AMPLIFY", self_result, np.asarray(self_result.validation.correct)),
    ):
        details.append(
            [
                name,
                what,
                len(val),
                res.n_errors,
                sum(not s.lm_correct for s in res.shots),
                ", ".join(f"{s.mcs:+.2f}" for s in res.shots),
                format_proportion(int(np.sum(acc)), len(acc)),
                " / ".join(",".join(s.words) for s in res.shots),
            ]
        )
    return rows, details


def section(
    quick: bool = False, on_task: Callable[[list[list[object]]], None] | None = None
) -> list[tuple[str, list[str], list[list[object]]]]:
    """The "AMPLIFY" table (one row per prompt and task) and its selection details. Loads the
    bundled SmolLM2; about (6 × test + 2 × validation) forward passes per task plus the
    Self-AMPLIFY LOO passes. ``on_task`` receives each task's rows as soon as they are done."""
    from attribkit.models.loading import load

    lm = load("smollm2")
    rows: list[list[object]] = []
    details: list[list[object]] = []
    for name, make, template, verbalizers in TASKS:
        r, d = _task_rows(lm, name, make, template, verbalizers, quick)
        rows += r
        details += d
        if on_task is not None:
            on_task(r + d)
    n_train, n_val, _ = _sizes(quick)
    return [
        ("AMPLIFY", HEADERS, rows),
        (
            f"AMPLIFY: shot selection (validation {n_val} items, linear proxy trained on "
            f"{n_train})",
            DETAIL_HEADERS,
            details,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 test and 12 validation items")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print(environment(["torch", "transformers", "numpy", "scikit-learn"], 1))
    t0 = time.perf_counter()

    def progress(rows: list[list[object]]) -> None:  # partial results, in case the run is cut
        print(
            f"[{time.perf_counter() - t0:.0f} s] " + " | ".join(map(str, rows[0][:1])), flush=True
        )
        for r in rows:
            print("  " + " | ".join(map(str, r)), flush=True)

    for title, headers, rows in section(args.quick, on_task=progress):
        print(f"\n## {title}\n")
        print(markdown_table(headers, rows))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
