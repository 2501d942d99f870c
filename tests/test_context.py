"""Context attribution on the real bundled model, and the task's input errors."""

from __future__ import annotations

import numpy as np
import pytest

import attribkit as ak
from attribkit.tasks.context import attribute_context, context_scorer

CONTEXT = (
    "Tarvo Lindqvist keeps bees on a hill outside the city. "
    "He sells honey at the Saturday market. "
    "His neighbour Ilse grows tomatoes in a greenhouse. "
    "The market opens at seven in the morning. "
    "Tarvo Lindqvist's favourite colour is teal. "
    "The city built a new bridge last spring. "
    "Ilse once won a prize for her largest tomato. "
    "In winter the bees stay inside their hives."
)
QUERY = "What is Tarvo Lindqvist's favourite colour?"
ANSWER_SENTENCE = 4


@pytest.mark.model
def test_loo_ranks_the_answer_sentence_first_on_the_real_model(smollm2):
    attribution = attribute_context(
        smollm2, CONTEXT, QUERY, response="His favourite colour is teal.", method="loo"
    )
    assert len(attribution) == 8
    assert int(attribution.ranking[0]) == ANSWER_SENTENCE
    assert attribution.cost.forward_passes == 9
    assert attribution.target["response"] == "His favourite colour is teal."
    # The page shows the context with the answer sentence highlighted and nothing unescaped.
    html = attribution.to_html()
    assert "favourite colour is teal" in html


@pytest.mark.model
@pytest.mark.parametrize(
    "method", ["auto", "attention_heads", "hybrid", "contextcite", "tracllm", "shapley"]
)
def test_each_context_method_ranks_the_needle_first_on_the_real_model(smollm2, method):
    # light settings keep the suite fast; the benchmark runs each method at its defaults
    params = {
        "shapley": {"n_permutations": 2},
        "contextcite": {"n_ablations": 24},
        "tracllm": {"score_funcs": ("loo", "stc")},
    }.get(method, {})
    attribution = attribute_context(
        smollm2, CONTEXT, QUERY, response="His favourite colour is teal.", method=method, **params
    )
    assert int(attribution.ranking[0]) == ANSWER_SENTENCE, attribution
    if method == "auto":  # 8 sentences: a short context, heads verified by leave-one-out
        assert attribution.params["method"] == "hybrid"
        assert attribution.cost.forward_passes <= 6


@pytest.mark.model
def test_auto_reads_the_heads_alone_on_a_long_context(smollm2):
    from attribkit.methods.context.auto import LONG
    from attribkit.tasks.context_cases import make_cases

    case = make_cases("needle", LONG + 4, 1, seed=5)[0]
    task = ak.ContextTask(smollm2, case.text, case.query, case.response, units=case.context)
    attribution = task.attribute("auto")
    assert attribution.params["method"] == "attention_heads"
    assert attribution.cost.forward_passes == 1
    assert int(attribution.ranking[0]) in case.gold


@pytest.mark.model
def test_generated_response_is_attributed_when_none_is_given(smollm2):
    scorer = context_scorer(smollm2, CONTEXT, QUERY, max_new_tokens=24)
    assert "teal" in scorer.target["response"].lower()
    values = scorer(np.eye(8, dtype=bool)[[ANSWER_SENTENCE, 0]])
    assert values[0] > values[1]  # the answer sentence alone supports the answer more


class EchoLM:
    """A stand-in LM at the true boundary: returns the prompt length as its "log-probability"."""

    name = "echo"

    def generate(self, prompt: str, max_new_tokens: int = 64) -> str:
        return "an answer"

    def token_logprobs(self, prompts, response):
        return [np.array([float(len(p))]) for p in prompts]


def test_context_task_input_errors():
    lm = EchoLM()
    with pytest.raises(ak.InputError, match="context is empty"):
        attribute_context(lm, "  ", QUERY)
    with pytest.raises(ak.InputError, match="context is empty"):
        attribute_context(lm, [], QUERY)
    with pytest.raises(ak.InputError, match="query is empty"):
        attribute_context(lm, CONTEXT, "")
    with pytest.raises(ak.InputError, match="only 1 unit"):
        attribute_context(lm, "Just one sentence here.", QUERY)
    with pytest.raises(ak.InputError, match="unknown units"):
        attribute_context(lm, CONTEXT, QUERY, units="chapters")
    with pytest.raises(ak.InputError, match="does not occur in the context"):
        attribute_context(lm, CONTEXT, QUERY, units=["He sells honey", "Tarvo Lindqvist keeps"])
    with pytest.raises(ak.InputError, match="is not in the response"):
        attribute_context(lm, CONTEXT, QUERY, response="Teal.", span="blue")
    with pytest.raises(ak.InputError, match="not inside the response"):
        attribute_context(lm, CONTEXT, QUERY, response="Teal.", span=(2, 40))


def test_explicit_units_keep_exact_offsets():
    units = ["Tarvo Lindqvist keeps bees", "He sells honey at the Saturday market."]
    attribution = attribute_context(EchoLM(), CONTEXT, QUERY, units=units)
    for unit in attribution.units:
        assert CONTEXT[unit.start : unit.end] == unit.label
    assert [u.label for u in attribution.units] == units


def test_sentence_offsets_round_trip():
    attribution = attribute_context(EchoLM(), CONTEXT, QUERY)
    assert len(attribution) == 8
    for unit in attribution.units:
        assert CONTEXT[unit.start : unit.end] == unit.label


def test_context_passages_are_units_and_removal_deletes_text():
    lm = EchoLM()
    attribution = attribute_context(
        lm, ["short.", "a much longer passage."], QUERY, units="passages"
    )
    assert [u.label for u in attribution.units] == ["short.", "a much longer passage."]
    # With prompt length as the value, LOO scores are the characters each passage contributes.
    np.testing.assert_allclose(
        attribution.scores, [len("short.\n\n"), len("a much longer passage.")]
    )


TWO_CLAIMS = (
    "Tarvo Lindqvist keeps bees on a hill outside the city. "
    "His neighbour Ilse grows tomatoes in a greenhouse. "
    "The market opens at seven in the morning. "
    "Tarvo Lindqvist's favourite colour is teal. "
    "Ilse's greenhouse was built in 1998. "
    "The city built a new bridge last spring."
)


@pytest.mark.model
def test_span_queries_trace_two_claims_to_their_two_sources(smollm2):
    task = ak.ContextTask(
        smollm2,
        TWO_CLAIMS,
        "What do Tarvo and Ilse do?",
        "Tarvo keeps bees and Ilse grows tomatoes.",
    )
    bees = task.with_span("Tarvo keeps bees").attribute("loo")
    tomatoes = task.with_span("Ilse grows tomatoes").attribute("loo")
    assert int(bees.ranking[0]) == 0 and int(tomatoes.ranking[0]) == 1
    assert tomatoes.cost.forward_passes == 0  # the second span reuses the cached passes
    assert bees.target["span_text"] == "Tarvo keeps bees"


def test_window_overflow_gives_a_clear_error(tiny_lm):
    window = tiny_lm.max_positions  # 512 tokens for the tiny model
    long_query = "where did the cat sit " * window
    with pytest.raises(
        ak.InputError, match=r"query alone takes \d+ tokens but the model's window is 512"
    ):
        ak.ContextTask(tiny_lm, CONTEXT, long_query, response="On the mat.")
    long_context = "The cat sat on the mat. " * window
    with pytest.raises(ak.InputError, match=r"shorten the context by about \d+ tokens"):
        ak.ContextTask(tiny_lm, long_context, "Where?", response="On the mat.")


@pytest.mark.model
def test_attntrace_finds_the_birthplace_sentence_on_the_real_model(smollm2):
    # AttnTrace's all-heads attention is at chance on same-shape needles with SmolLM2 (see
    # benchmarks/README.md: P@1 0.00 on needle cases) but reliable on birthplace cases (1.00).
    from attribkit.tasks.context_cases import make_cases

    case = make_cases("birthplace", 10, 1, seed=3)[0]
    attribution = attribute_context(
        smollm2,
        case.context,
        case.query,
        response=case.response,
        units=case.context,
        method="attntrace",
        B=10,
    )
    assert int(attribution.ranking[0]) in case.gold
    assert attribution.cost.forward_passes == 10
