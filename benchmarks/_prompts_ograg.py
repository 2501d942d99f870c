"""OG-RAG fact clusters (Sharma, Kumar, Li, 2024) vs sentence chunks vs fixed-size chunks at the
same token budget, on generated entity records (SmolLM2-135M-Instruct).

Data: ``make_fact_cases(n, n_entities=8, seed=2024)`` — 8 invented people with 5–8 attributes
each; the question names one attribute value of the gold person and asks for another
(``"What is the employer of the person whose birthplace is Zoutheim?"``). The seed is used nowhere
else (the tests use seeds 0–4; the retrieval parameters below were looked at on seed 7 only).

Per case and embedder (TF-IDF over the case's texts, or all-MiniLM-L6-v2), three contexts:

- **hyperedges (OG-RAG)**: one edge per record (``HyperedgeUnits.from_facts``), retrieved by
  ``ograg_retrieve(nodes_top_k=20, top_k=2)`` (20: what the reference query engine passes; 2: the
  released configs). Its token count is the case's **budget**;
- **sentence chunks**: one sentence per attribute (``"The employer of Zarbo is Drakel Labs."``),
  ranked by cosine to the query, taken in rank order while the context fits the budget;
- **fixed chunks**: the same sentences as one text cut every 16 words, ranked and filled the same
  way.

Units are given to SmolLM2 in rank order, one per line, under the task's default template.
Columns: **answer acc** — the greedy answer contains the gold value (generation prefilled with the
question restated, ``"The employer of the person whose birthplace is Zoutheim is"``, then at most
8 new tokens: unprefilled, SmolLM2 spends its first ~14 tokens restating the question);
**facts in ctx** — both facts the question needs are wholly in the context; **P@1 gold** — the top
unit of ``loo`` (attributing the gold answer) holds the answer fact (for hyperedges: is the gold
record), counted over all cases (a case whose answer fact was not retrieved counts as a miss);
**burden** — characters / tokens of the smallest top-ranked unit set keeping 90 % of the
context's gain in log p(answer) (``attribution_burden``); context tokens and units per case;
forward passes (generation steps included), generations and seconds per case. A second table gives
retrieval alone (no language model) on more cases. Accuracies carry Wilson 95 % intervals.

Run: ``.venv/bin/python benchmarks/_prompts_ograg.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, fmt, markdown_table
from attribkit.applied.ograg import HyperedgeUnits, ograg_retrieve, query_similarity
from attribkit.core.units import TextUnits
from attribkit.evaluation import format_proportion
from attribkit.evaluation.burden import attribution_burden
from attribkit.tasks.context import PROMPT_TEMPLATE, ContextTask
from attribkit.tasks.fact_cases import FactCase, make_fact_cases, word_chunk_spans

SEED = 2024
N_ENTITIES = 8
N_CASES, N_QUICK = 20, 3
N_RETRIEVAL, N_RETRIEVAL_QUICK = 100, 10
NODES_TOP_K, TOP_K = 20, 2
CHUNK_WORDS = 16
MAX_NEW_TOKENS = 8
KEEP = 0.9
EMBEDDERS = ("tfidf", "minilm")
METHODS = ("hyperedges (OG-RAG)", "sentence chunks", "fixed chunks (16 words)")
HEADERS = [
    "embedder",
    "units",
    "answer acc [95 % CI]",
    "facts in ctx [95 % CI]",
    "P@1 gold [95 % CI]",
    "burden chars",
    "burden tokens",
    "context tokens",
    "units / case",
    "passes / case",
    "generations / case",
    "s / case",
]
RETRIEVAL_HEADERS = ["embedder", "units", "facts in ctx [95 % CI]", "context tokens", "s / case"]


@dataclass
class Context:
    """One method's retrieved context for one case."""

    units: TextUnits
    gold: list[bool]  # per unit: holds the answer fact
    facts_in: bool  # both needed facts are wholly in the context


@dataclass
class Tally:
    """Per-row sums over cases."""

    n: int = 0
    correct: int = 0
    facts: int = 0
    top_gold: int = 0
    chars: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    context_tokens: list[int] = field(default_factory=list)
    n_units: list[int] = field(default_factory=list)
    passes: int = 0
    generations: int = 0
    seconds: float = 0.0


def _count(lm: Any, text: str) -> int:
    return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def _fill(lm: Any, texts: list[str], scores: np.ndarray, budget: int) -> list[int]:
    """Indices of ``texts`` in rank order, each added while the joined context fits ``budget``
    tokens (a text that does not fit is skipped)."""
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if _count(lm, "\n".join(texts[j] for j in [*kept, int(i)])) <= budget:
            kept.append(int(i))
    return kept or [int(np.argmax(scores))]


def _covered(spans: list[tuple[int, int]], need: tuple[int, int]) -> bool:
    """Whether the union of ``spans`` covers every character of ``need``."""
    pos = need[0]
    for s, e in sorted(spans):
        if s <= pos < e:
            pos = e
    return pos >= need[1]


def contexts(lm: Any, case: FactCase, embed: str) -> tuple[dict[str, Context], dict[str, float]]:
    """The three budget-matched contexts of ``case`` and the retrieval seconds per method."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    edges = HyperedgeUnits.from_facts(case.records)
    selected, _ = ograg_retrieve(edges, case.query, NODES_TOP_K, TOP_K, embed)
    seconds[METHODS[0]] = time.perf_counter() - t0
    gold_edge = [e == case.gold_record for e in selected.edges]
    out = {METHODS[0]: Context(selected, gold_edge, any(gold_edge))}
    budget = _count(lm, selected.text)

    text, sentence_spans = case.text, case.sentence_spans()
    answer_start = text.index(case.answer, sentence_spans[case.answer_sentence][0])
    answer_span = (answer_start, answer_start + len(case.answer))
    needed = [sentence_spans[i] for i in case.gold_sentences]
    for method, spans in (
        (METHODS[1], sentence_spans),
        (METHODS[2], word_chunk_spans(text, CHUNK_WORDS)),
    ):
        t0 = time.perf_counter()
        texts = [text[s:e] for s, e in spans]
        sims, _ = query_similarity(case.query, texts, embed)
        kept = _fill(lm, texts, sims, budget)
        seconds[method] = time.perf_counter() - t0
        kept_spans = [spans[i] for i in kept]
        gold = [s < answer_span[1] and e > answer_span[0] for s, e in kept_spans]
        facts_in = all(_covered(kept_spans, need) for need in needed)
        units = TextUnits.passages([texts[i] for i in kept], sep="\n")
        out[method] = Context(units, gold, facts_in)
    return out, seconds


def evaluate(lm: Any, cases: list[FactCase]) -> list[list[object]]:
    """One row per (embedder, method) over ``cases``."""
    tallies = {(e, m): Tally() for e in EMBEDDERS for m in METHODS}
    for case in cases:
        for embed in EMBEDDERS:
            built, retrieval_s = contexts(lm, case, embed)
            for method, ctx in built.items():
                t = tallies[(embed, method)]
                before = lm.cost.copy()
                t0 = time.perf_counter()
                prompt = PROMPT_TEMPLATE.format(context=ctx.units.text, query=case.query)
                answer = lm.generate(
                    prompt, max_new_tokens=MAX_NEW_TOKENS, prefill=case.answer_prefix
                )
                task = ContextTask(lm, ctx.units, case.query, case.response)
                attribution = task.attribute("loo")
                burden = attribution_burden(attribution, task, keep=KEEP)
                t.seconds += time.perf_counter() - t0 + retrieval_s[method]
                t.passes += (lm.cost - before).forward_passes
                t.generations += 1
                t.n += 1
                t.correct += case.answer.lower() in str(answer).lower()
                t.facts += ctx.facts_in
                t.top_gold += ctx.gold[int(attribution.ranking[0])]
                t.chars.append(burden.characters)
                t.tokens.append(int(burden.tokens or 0))
                t.context_tokens.append(_count(lm, ctx.units.text))
                t.n_units.append(len(ctx.units))
    rows: list[list[object]] = []
    for (embed, method), t in tallies.items():
        rows.append(
            [
                embed,
                method,
                format_proportion(t.correct, t.n),
                format_proportion(t.facts, t.n),
                format_proportion(t.top_gold, t.n),
                fmt(float(np.mean(t.chars))),
                fmt(float(np.mean(t.tokens))),
                fmt(float(np.mean(t.context_tokens))),
                fmt(float(np.mean(t.n_units))),
                fmt(t.passes / t.n),
                fmt(t.generations / t.n),
                fmt(t.seconds / t.n),
            ]
        )
    return rows


def retrieval_rows(lm: Any, cases: list[FactCase]) -> list[list[object]]:
    """Retrieval alone: how often both needed facts reach the budget-matched context."""
    rows: list[list[object]] = []
    for embed in EMBEDDERS:
        facts = dict.fromkeys(METHODS, 0)
        tokens: dict[str, list[int]] = {m: [] for m in METHODS}
        seconds = dict.fromkeys(METHODS, 0.0)
        for case in cases:
            built, s = contexts(lm, case, embed)
            for m, ctx in built.items():
                facts[m] += ctx.facts_in
                tokens[m].append(_count(lm, ctx.units.text))
                seconds[m] += s[m]
        for m in METHODS:
            rows.append(
                [
                    embed,
                    m,
                    format_proportion(facts[m], len(cases)),
                    fmt(float(np.mean(tokens[m]))),
                    fmt(seconds[m] / len(cases)),
                ]
            )
    return rows


def section(quick: bool = False) -> list[tuple[str, list[str], list[list[object]]]]:
    """(title, headers, rows) of the OG-RAG tables on held-out generated fact clusters."""
    from attribkit.models.loading import load

    lm = load("smollm2")
    n = N_QUICK if quick else N_CASES
    cases = make_fact_cases(n, N_ENTITIES, seed=SEED)
    start = time.perf_counter()
    rows = evaluate(lm, cases)
    title = (
        f"OG-RAG hyperedges vs sentence / fixed chunks at the hyperedges' token budget: "
        f"SmolLM2-135M-Instruct, {n} held-out generated cases (seed {SEED}, {N_ENTITIES} people "
        f"× 5–8 attributes; nodes_top_k {NODES_TOP_K}, top_k {TOP_K}; loo; burden at keep "
        f"{KEEP}; {time.perf_counter() - start:.0f} s)"
    )
    n_ret = N_RETRIEVAL_QUICK if quick else N_RETRIEVAL
    start = time.perf_counter()
    ret_rows = retrieval_rows(lm, make_fact_cases(n_ret, N_ENTITIES, seed=SEED + 1))
    ret_title = (
        f"Retrieval alone (no LM): both needed facts in the budget-matched context, {n_ret} "
        f"held-out cases (seed {SEED + 1}; {time.perf_counter() - start:.0f} s)"
    )
    return [(title, HEADERS, rows), (ret_title, RETRIEVAL_HEADERS, ret_rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{N_QUICK} cases instead of {N_CASES}"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(environment(["torch", "transformers", "scikit-learn"], threads=1))
    for title, headers, rows in section(args.quick):
        print(f"\n### {title}\n")
        print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
