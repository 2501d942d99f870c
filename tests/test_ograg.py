"""OG-RAG fact clusters: hyperedge units, JSON-LD flattening, greedy set cover, retrieval, the
reader-burden evaluator and the generated fact cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attribkit.applied.ograg import (
    HyperedgeUnits,
    flatten_jsonld,
    greedy_set_cover,
    ograg_retrieve,
    query_similarity,
)
from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.core.scorer import Scorer
from attribkit.core.units import TextUnits
from attribkit.evaluation.burden import attribution_burden
from attribkit.tasks.context import ContextTask, attribute_context
from attribkit.tasks.fact_cases import (
    ATTRIBUTES,
    MAX_ATTRIBUTES,
    MIN_ATTRIBUTES,
    make_fact_cases,
    word_chunk_spans,
)

PEOPLE = [
    {"name": "Ada", "city": "Oslo", "pet": "cat"},
    {"name": "Bo", "city": "Rome", "pet": "dog"},
    {"name": "Cy", "city": "Lima", "pet": "eel"},
]


# --- greedy set cover ---------------------------------------------------------------------------


def test_set_cover_returns_the_known_minimal_cover() -> None:
    edges = [[0, 1], [1, 2, 3], [3, 4], [0, 4]]
    chosen, covered = greedy_set_cover(edges, [0, 1, 2, 3, 4], top_k=5)
    assert chosen == [1, 3]  # 3 new nodes, then the only edge holding both 0 and 4
    assert covered == [[1, 2, 3], [0, 4]]
    # top_k stops the cover early
    assert greedy_set_cover(edges, [0, 1, 2, 3, 4], top_k=1) == ([1], [[1, 2, 3]])


def test_set_cover_tie_rules() -> None:
    # equal gain: the edge with more pairs wins, then the lower index
    assert greedy_set_cover([[0, 1], [0, 1, 5]], [0, 1], 3)[0] == [1]
    assert greedy_set_cover([[0, 1], [1, 0], [0, 1]], [0, 1], 3)[0] == [0]
    # a node retrieved by both lists counts twice, as in the reference
    assert greedy_set_cover([[0], [2, 3]], [0, 0, 2], 1)[0] == [0]
    assert greedy_set_cover([[0], [2, 3]], [0, 2, 3], 1)[0] == [1]


# --- flattening ---------------------------------------------------------------------------------

FARM = {
    "@type": "schema:Farm",
    "@id": "farm/1",
    "name": "Hillside",
    "area": 12,
    "crop": {
        "@type": "Crop",
        "name": "Wheat",
        "stage": [
            {"@type": "Stage", "name": "Sowing", "month": "May"},
            {"@type": "Stage", "name": "Harvest", "month": "Sept"},
        ],
    },
    "tags": ["organic", "irrigated"],
}


def test_jsonld_of_three_levels_gives_the_expected_edges() -> None:
    base = {"Farm name": "Hillside", "Farm area": 12}
    wheat = {"Farm crop Crop name": "Wheat"}
    expected = [
        base,
        {**base, **wheat},
        {
            **base,
            **wheat,
            "Farm crop Crop stage Stage name": "Sowing",
            "Farm crop Crop stage Stage month": "May",
        },
        {
            **base,
            **wheat,
            "Farm crop Crop stage Stage name": "Harvest",
            "Farm crop Crop stage Stage month": "Sept",
        },
        {**base, "Farm tags": "organic"},
        {**base, "Farm tags": "irrigated"},
    ]
    doc = {"@context": {"@vocab": "https://schema.org/"}, "@graph": [FARM, dict(FARM)]}
    assert flatten_jsonld(doc) == expected  # the duplicate node adds nothing
    units = HyperedgeUnits.from_jsonld(doc)
    assert len(units) == 6
    assert units.labels[0] == "Farm name: Hillside; Farm area: 12"
    assert units.labels[4] == "Farm name: Hillside; Farm area: 12; Farm tags: organic"
    assert [u.meta["facts"] for u in units] == expected
    assert [u.meta["edge"] for u in units] == list(range(6))
    assert units.text.split("\n") == units.labels
    # removing a unit deletes its edge line
    assert units.compose(np.array([True, False, False, False, False, True])) == (
        units.labels[0] + "\n" + units.labels[5]
    )


def test_flatten_of_scalar_lists() -> None:
    node = {"@type": "Person", "name": "Ada", "langs": ["en", "fr", "en", None]}
    assert flatten_jsonld(node) == [
        {"Person name": "Ada"},
        {"Person name": "Ada", "Person langs": "en"},
        {"Person name": "Ada", "Person langs": "fr"},
    ]
    # without a type, keys are bare; a node with no scalar adds no empty edge
    assert flatten_jsonld([{"tags": ["a", "b"]}]) == [{"tags": "a"}, {"tags": "b"}]


def test_hypernodes_are_shared_between_edges() -> None:
    units = HyperedgeUnits.from_facts([{"a": 1, "b": "x"}, {"a": "1", "c": True}])
    nodes, per_edge = units.hypernodes()
    assert nodes == [("a", "1"), ("b", "x"), ("c", "True")]  # values compared as strings
    assert per_edge == [[0, 1], [0, 2]]
    # exact duplicates removed
    assert len(HyperedgeUnits.from_facts([{"a": 1}, {"a": 1}, {"a": 2}])) == 2


# --- retrieval ----------------------------------------------------------------------------------


def test_tfidf_retrieval_picks_the_right_edge() -> None:
    units = HyperedgeUnits.from_facts(PEOPLE)
    query = "Which pet belongs to the person whose city is Rome?"
    selected, trace = ograg_retrieve(units, query, nodes_top_k=10, top_k=1)
    assert trace.selected == [1] and selected.edges == [PEOPLE[1]]
    assert selected.edge_ids == [1]
    names = {trace.nodes[i] for i in trace.key_nodes}
    assert ("pet", "dog") in names and ("city", "Rome") in names
    assert [trace.nodes[i] for i in trace.value_nodes] == [("city", "Rome")]
    assert trace.cost.forward_passes == 0 and trace.cost.seconds > 0
    # more edges when allowed: the cover continues until every retrieved node is covered
    _, trace3 = ograg_retrieve(units, query, nodes_top_k=10, top_k=5)
    assert trace3.selected[0] == 1 and sorted(trace3.selected) == [0, 1, 2]
    assert trace3.uncovered == []
    # the reference behaviour keeps zero-similarity nodes in the lists
    _, ref = ograg_retrieve(units, query, nodes_top_k=4, top_k=1, min_similarity=None)
    assert len(ref.key_nodes) == len(ref.value_nodes) == 4
    assert ref.to_dict()["params"]["min_similarity"] is None


def test_retrieval_with_a_callable_embedder() -> None:
    def bag(texts: list[str]) -> np.ndarray:  # a 2-word vocabulary
        return np.array([[t.lower().count("rome"), t.lower().count("pet")] for t in texts], float)

    units = HyperedgeUnits.from_facts(PEOPLE)
    _, trace = ograg_retrieve(units, "pet in Rome", top_k=1, embed=bag)
    assert trace.embed == "bag" and trace.selected == [1]
    sims, _ = query_similarity("Rome", ["Rome", "Oslo"], embed=bag)
    assert sims.tolist() == [1.0, 0.0]


def test_selected_units_go_straight_into_attribute_context(tiny_lm) -> None:
    units = HyperedgeUnits.from_facts(PEOPLE)
    selected, _ = ograg_retrieve(units, "What pet lives in Rome?", top_k=2)
    assert len(selected) == 2
    attribution = attribute_context(
        tiny_lm, selected, "What pet lives in Rome?", "dog", method="loo"
    )
    assert len(attribution) == 2
    assert [u.meta["facts"] for u in attribution.units] == selected.edges
    assert all(u.meta["facts"] in PEOPLE for u in attribution.units)
    assert attribution.input["text"] == selected.text
    assert attribution.input["units"] == "hyperedges"
    assert attribution.cost.forward_passes == 3  # n + 1
    # the meta survives a JSON round trip of the result
    again = Attribution.from_dict(attribution.to_dict())
    assert [u.meta["facts"] for u in again.units] == selected.edges


# --- reader burden ------------------------------------------------------------------------------

WEIGHTS = {"a": 3.0, "b": 0.0, "c": 1.0, "d": 0.0}


def _weighted_scorer() -> Scorer:
    units = TextUnits.passages(list(WEIGHTS))

    def value(texts: list[str]) -> list[float]:
        return [sum(WEIGHTS[p] for p in t.split("\n\n") if p) for t in texts]

    return Scorer(units, value)


def _attribution(scorer: Scorer, scores: list[float]) -> Attribution:
    return Attribution(list(scorer.units), np.array(scores), "hand")


def test_burden_on_a_hand_made_scorer() -> None:
    scorer = _weighted_scorer()
    good = _attribution(scorer, [3, 0, 1, 0])  # ranking a, c, b, d
    b = attribution_burden(good, scorer, keep=0.9)  # needs 3.6 of 4
    assert b.units == [0, 2] and b.labels == ["a", "c"] and b.characters == 2
    assert (b.value_full, b.value_empty, b.value_kept, b.gap) == (4.0, 0.0, 4.0, 4.0)
    assert b.kept_fraction == 1.0 and b.tokens is None and b.size == 2
    assert b.cost.forward_passes == 5  # full, empty, then prefixes 1..3 in one batch
    # a looser threshold needs only the top unit; cached prefixes cost nothing
    loose = attribution_burden(good, scorer, keep=0.7, batch_size=1)
    assert loose.units == [0] and loose.cost.forward_passes == 0
    assert loose.kept_fraction == pytest.approx(0.75)
    # a bad ranking makes the reader check more
    bad = attribution_burden(_attribution(scorer, [0, 3, 1, 2]), _weighted_scorer(), keep=0.9)
    assert bad.units == [1, 3, 2, 0] and bad.characters == 4
    assert bad.to_dict()["cost"]["forward_passes"] == bad.cost.forward_passes


def test_burden_is_empty_when_the_context_does_not_help() -> None:
    units = TextUnits.passages(["a", "b"])
    flat = Scorer(units, lambda texts: [1.0] * len(texts))
    b = attribution_burden(_attribution(flat, [1, 0]), flat)
    assert b.units == [] and b.characters == 0 and math.isnan(b.kept_fraction)


def test_burden_on_the_tiny_lm(tiny_lm) -> None:
    context = ["The cat sat on the mat.", "The dog ran far.", "Birds sing at dawn."]
    # (with this response the random tiny model's context gain f(all) - f(none) is positive)
    task = ContextTask(
        tiny_lm, context, "Where did the cat sit?", "Birds sing at dawn.", units="passages"
    )
    attribution = task.attribute("loo")
    b = attribution_burden(attribution, task, keep=0.9)
    assert b.units == [int(i) for i in attribution.ranking[: b.size]]
    assert b.value_full == pytest.approx(attribution.extras["full_value"], abs=1e-4)
    if b.gap > 0:
        assert 1 <= b.size <= 3
        assert b.value_kept >= b.value_empty + 0.9 * b.gap - 1e-6
        mask = np.zeros(3, dtype=bool)
        mask[b.units] = True
        assert task.scorer()(mask)[0] == pytest.approx(b.value_kept, abs=1e-4)
    else:
        assert b.size == 0
    expected_tokens = sum(
        len(tiny_lm.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in b.labels
    )
    assert b.tokens == expected_tokens
    assert b.characters == sum(len(context[i]) for i in b.units)
    # every prompt loo scored is cached: only the empty context and new prefixes cost passes
    assert b.cost.forward_passes <= 3


# --- errors -------------------------------------------------------------------------------------


def test_bad_inputs_raise_input_errors(tiny_lm) -> None:
    with pytest.raises(InputError, match="empty"):
        HyperedgeUnits.from_facts([])
    with pytest.raises(InputError, match="empty"):
        HyperedgeUnits.from_facts([{}])
    with pytest.raises(InputError, match="hypergraph would be empty"):
        HyperedgeUnits.from_jsonld({"@graph": []})
    with pytest.raises(InputError, match="hypergraph would be empty"):
        HyperedgeUnits.from_jsonld({"@type": "X", "@id": "y", "note": None})
    for bad in ({"a": [1]}, {"a": {"b": 1}}, {"a": None}):
        with pytest.raises(InputError, match="not a scalar"):
            HyperedgeUnits.from_facts([bad])
    with pytest.raises(InputError, match="nested lists"):
        flatten_jsonld({"a": [[1, 2]]})
    with pytest.raises(InputError, match="list of fact dicts"):
        HyperedgeUnits.from_facts({"a": 1})  # type: ignore[arg-type]
    units = HyperedgeUnits.from_facts(PEOPLE)
    with pytest.raises(InputError, match="HyperedgeUnits"):
        ograg_retrieve(TextUnits.sentences("A b. C d."), "query")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="top_k"):
        ograg_retrieve(units, "pet", top_k=0)
    with pytest.raises(InputError, match="no hypernode is similar"):
        ograg_retrieve(units, "zebra quantum")
    with pytest.raises(InputError, match="unknown embed"):
        ograg_retrieve(units, "pet", embed="bm25")
    with pytest.raises(InputError, match="query is empty"):
        ograg_retrieve(units, "  ")
    scorer = _weighted_scorer()
    attribution = _attribution(scorer, [3, 0, 1, 0])
    for keep in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(InputError, match=r"keep must lie in \(0, 1\]"):
            attribution_burden(attribution, scorer, keep=keep)
    other = Scorer(TextUnits.passages(["x", "y"]), lambda t: [0.0] * len(t))
    with pytest.raises(InputError, match="not the task's"):
        attribution_burden(attribution, other)
    with pytest.raises(InputError, match="needs the Task"):
        attribution_burden(attribution, "task")  # type: ignore[arg-type]


# --- generated fact cases -----------------------------------------------------------------------


def test_fact_cases_are_reproducible_and_well_formed() -> None:
    a, b = make_fact_cases(5, 6, seed=3), make_fact_cases(5, 6, seed=3)
    assert [c.to_dict() for c in a] == [c.to_dict() for c in b]
    assert [c.to_dict() for c in make_fact_cases(2, 6, seed=3)] == [c.to_dict() for c in a[:2]]
    assert [c.query for c in make_fact_cases(5, 6, seed=4)] != [c.query for c in a]
    for c in a:
        assert len(c.records) == 6
        for r in c.records:
            assert next(iter(r)) == "name"
            assert MIN_ATTRIBUTES <= len(r) - 1 <= MAX_ATTRIBUTES
            assert set(r) - {"name"} <= set(ATTRIBUTES)
        gold = c.gold_record
        assert c.answer == gold[c.answer_key] == c.response and c.key != c.answer_key
        assert gold[c.key] in c.query and c.answer not in c.query
        assert (
            c.answer_prefix == f"The {c.answer_key} of the person whose {c.key} is {gold[c.key]} is"
        )
        # the answer and the key value occur in the gold record only
        values = [v for r in c.records for v in r.values()]
        assert all(sum(x in v for v in values) == 1 for x in (c.answer, gold[c.key]))
        # one sentence per attribute; the two gold sentences hold the two facts
        assert len(c.sentences) == sum(len(r) - 1 for r in c.records)
        key_s, answer_s = (c.sentences[i] for i in c.gold_sentences)
        assert {gold[c.key], c.answer} == {
            v for v in gold.values() if v in key_s + " " + answer_s and v != gold["name"]
        }
        assert c.answer in c.sentences[c.answer_sentence]
        text, spans = c.text, c.sentence_spans()
        assert [text[s:e] for s, e in spans] == c.sentences
        flat = HyperedgeUnits.from_jsonld(c.jsonld())
        assert flat.edges[c.gold] == {f"Person {k}": v for k, v in gold.items()}


def test_word_chunks_cover_the_text() -> None:
    text = "one two three\nfour five six seven"
    spans = word_chunk_spans(text, 3)
    assert [text[s:e] for s, e in spans] == ["one two three", "four five six", "seven"]
    assert TextUnits(text, spans).compose(np.ones(3, dtype=bool)) == text
    with pytest.raises(InputError):
        word_chunk_spans(text, 0)
    with pytest.raises(InputError):
        word_chunk_spans("   ", 2)


# --- the real model -----------------------------------------------------------------------------


@pytest.mark.model
def test_gold_cluster_ranks_first_by_loo_on_smollm2(smollm2) -> None:
    case = make_fact_cases(1, 3, seed=0)[0]
    units = HyperedgeUnits.from_facts(case.records)
    attribution = attribute_context(smollm2, units, case.query, case.response, method="loo")
    assert int(attribution.ranking[0]) == case.gold
    assert attribution.units[case.gold].meta["facts"] == case.gold_record
    assert attribution.cost.forward_passes == 4
