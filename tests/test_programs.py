"""GenerationPrograms (attribkit.applied.programs): grammar, execution, citation propagation,
post-hoc planning, program attributions and the module verifier."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from attribkit.applied.programs import (
    Call,
    CitationCounts,
    ExtractiveTextOps,
    LMTextOps,
    Source,
    citation_counts,
    cite_with_program,
    execute,
    parse_program,
    plan_post_hoc,
    program_attribution,
    select_sources,
    verify,
)
from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.tasks.context import ContextTask
from attribkit.tasks.program_cases import make_program_cases

UNITS = ["Ana was born in Oslo, a cold city.", "Ana works for Zeta Labs.", "Bo lives in Rome."]


# --- grammar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan",
    [
        "- paraphrase(S1)",
        "- compression(S2, instruction='short')",
        "- fusion(S1, S2, S3)",
        "- fusion(paraphrase(S1), compression(S2), instruction=None)",
        "* fusion(S1, fusion(S2, S3))",
        "- **paraphrase(S3)**",
        "- S3",
        "- paraphrase('S1')",
        "```python\n- paraphrase(S1)\n\n- fusion(S2, S3)\n```",
    ],
)
def test_parser_accepts_the_reference_grammar(plan: str) -> None:
    program = parse_program(plan, n_units=3)
    assert program.repairs == []
    assert parse_program(program.plan_text()).sentences == program.sentences


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("- summarize(S1)", "unknown function"),
        ("- paraphrase(S1, S2)", "exactly 1"),
        ("- compression()", "exactly 1"),
        ("- fusion(S1)", "at least 2"),
        ("- fusion(S1, S2, style='x')", "unknown keyword"),
        ("- paraphrase(S1, instruction=S2)", "instruction must be a string"),
        ("- paraphrase(X1)", "not a sentence id"),
        ("- paraphrase(S0)", "not a sentence id"),
        ("- paraphrase(3)", "not a sentence id"),
        ("- paraphrase(S9)", "only 3 sentences"),
        ("- os.system(S1)", "not a plain function name"),
        ("- paraphrase(S1); paraphrase(S2)", "not a valid call"),
        ("- fusion(S1, S2", "not a valid call"),
        ("", "empty"),
        ("\n  \n- \n", "empty"),
    ],
)
def test_parser_rejects_outside_the_grammar(plan: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_program(plan, n_units=3)


def test_parser_never_evaluates() -> None:
    with pytest.raises(InputError):
        parse_program("- __import__('os').system('echo hi')")


def test_repairs_apply_only_after_a_failure_and_are_reported() -> None:
    # the reference's first repair: ")), instruction" -> "), instruction"
    program = parse_program("- paraphrase(fusion(S1, S2)), instruction='brief')")
    assert program.sentences[0] == Call(
        "paraphrase", (Call("fusion", (Source(0), Source(1))),), "brief"
    )
    (repair,) = program.repairs
    assert repair.rule == ")), instruction" and repair.sentence == 0
    assert repair.after == "paraphrase(fusion(S1, S2), instruction='brief')"
    # the second: every "))" -> ")" (here it changes the plan's structure: it is reported)
    program = parse_program("- paraphrase(S3)\n- fusion(S1, paraphrase(S2)))")
    assert [r.rule for r in program.repairs] == ["))"]
    assert program.repairs[0].sentence == 1
    assert str(program.sentences[1]) == "fusion(S1, paraphrase(S2))"
    assert program.repairs[0].after == "fusion(S1, paraphrase(S2))"
    # a valid plan holding "))" is left alone
    program = parse_program("- fusion(S1, paraphrase(S2))")
    assert program.repairs == []
    assert "repairs" in program.to_dict() and program.to_dict()["repairs"] == []


# --- execution ---------------------------------------------------------------------------------


class RecordingOps(ExtractiveTextOps):
    """Extractive ops that record the order of the calls they run."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def run(self, op: str, inputs: Sequence[str], instruction=None, question=None) -> str:  # type: ignore[no-untyped-def]
        self.calls.append((op, tuple(inputs)))
        return super().run(op, inputs, instruction, question)


def test_inner_calls_run_first_and_citations_are_the_union() -> None:
    ops = RecordingOps()
    program = parse_program("- fusion(compression(S1), paraphrase(S3))\n- S2")
    run = execute(program, UNITS, ops)
    assert [c[0] for c in ops.calls] == ["compression", "paraphrase", "fusion"]
    assert ops.calls[2][1] == ("Ana was born in Oslo.", "Bo lives in Rome.")
    assert run.sentences == ["Ana was born in Oslo; Bo lives in Rome.", "Ana works for Zeta Labs."]
    root = run.roots[0]
    assert root.citations == [0, 2]
    assert [c.citations for c in root.children] == [[0], [2]]
    assert run.roots[1].op == "copy" and run.citations(1) == [1]
    assert run.failures == [] and run.generations == 0 and run.cost.forward_passes == 0
    assert run.cited_response() == (
        "Ana was born in Oslo; Bo lives in Rome[1][3]. Ana works for Zeta Labs[2]."
    )
    d = json.loads(json.dumps(run.to_dict()))
    node = d["nodes"][0]
    assert set(node) >= {"op", "args", "instruction", "output", "citations", "children"}
    assert node["children"][0]["children"][0] == {
        "id": "",
        "op": "source",
        "args": ["S1"],
        "instruction": None,
        "output": UNITS[0],
        "citations": [0],
        "error": None,
        "cached": False,
        "children": [],
    }


def test_same_sentence_in_two_documents_keeps_separate_citations() -> None:
    units = ["Ana was born in Oslo.", "Bo lives in Rome.", "Ana was born in Oslo."]
    run = execute(parse_program("- paraphrase(S1)\n- paraphrase(S3)"), units)
    # equal outputs from different units: citations stay by unit, nothing overwritten
    assert run.sentences[0] == run.sentences[1]
    assert run.citations(0) == [0] and run.citations(1) == [2]
    run = execute(parse_program("- fusion(S1, S3)"), units)
    assert run.citations(0) == [0, 2]


def test_equal_calls_are_answered_once() -> None:
    ops = RecordingOps()
    run = execute(parse_program("- compression(S1)\n- fusion(compression(S1), S2)"), UNITS, ops)
    assert [c[0] for c in ops.calls] == ["compression", "fusion"]
    assert run.roots[1].children[0].cached
    assert run.citations(1) == [0, 1]


class FailingOps(ExtractiveTextOps):
    """Extractive ops whose compression fails."""

    name = "failing"

    def run(self, op: str, inputs: Sequence[str], instruction=None, question=None) -> str:  # type: ignore[no-untyped-def]
        if op == "compression":
            raise InputError("compression back end unavailable")
        return super().run(op, inputs, instruction, question)


def test_a_failed_inner_call_is_reported() -> None:
    run = execute(
        parse_program("- fusion(compression(S1), S2)\n- paraphrase(S3)"), UNITS, FailingOps()
    )
    assert run.sentences == [None, "Bo lives in Rome."]
    assert len(run.failures) == 1 and "compression" in run.failures[0]
    root = run.roots[0]
    assert root.error and root.error.startswith("input 1.1")
    assert root.children[0].error and "unavailable" in root.children[0].error
    assert run.response == "Bo lives in Rome."


def test_execute_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="only 3 sentences"):
        execute(parse_program("- paraphrase(S4)"), UNITS)
    with pytest.raises(InputError, match="TextOps"):
        execute(parse_program("- paraphrase(S1)"), UNITS, object())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="list of strings"):
        execute(parse_program("- paraphrase(S1)"), "one string")


# --- generated cases ---------------------------------------------------------------------------


def test_generated_cases_are_reproducible_and_well_formed() -> None:
    cases = make_program_cases(30, seed=3)
    assert [c.to_dict() for c in make_program_cases(5, seed=3)] == [c.to_dict() for c in cases[:5]]
    assert any(c.meta["duplicated"] for c in cases)
    for c in cases:
        units = c.units()
        assert units.labels == c.sentences and len(c.documents) == 3
        for facts in c.gold:
            assert 2 <= len(facts) <= 4
            for fact in facts:
                assert len({c.sentences[u] for u in fact}) == 1  # copies hold the same text
                assert len({c.document_of[u] for u in fact}) == len(fact)


def test_extractive_gold_programs_cite_exactly_the_gold() -> None:
    total = CitationCounts(0, 0, 0, 0)
    for case in make_program_cases(40, seed=1):
        run = execute(parse_program(case.gold_plan()), case.units())
        assert run.failures == []
        for i, facts in enumerate(case.gold):
            total = total + citation_counts(run.citations(i), facts)
            # each answer entity appears in the executed sentence
            assert case.meta["answers"][i]["person"] in str(run.sentences[i])
    assert total.precision == 1.0 and total.recall == 1.0 and total.f1 == 1.0


def test_citation_counts() -> None:
    c = citation_counts([0, 3, 5], [[0], [1, 3], [4]])
    assert (c.correct, c.cited, c.covered, c.facts) == (2, 3, 2, 3)
    assert citation_counts([1, 3], [[1, 3]]).covered == 1
    with pytest.raises(InputError):
        citation_counts([0], [])


# --- planning and attributions -----------------------------------------------------------------


def test_select_sources() -> None:
    assert select_sources(np.array([0.1, 2.0, 1.2, 0.9, 1.5])) == [1, 4, 2]
    assert select_sources(np.array([0.1, 2.0, 0.5])) == [1]
    assert select_sources(np.array([-1.0, -0.5, np.nan])) == [1]
    assert select_sources(np.array([3.0, 2.0, 1.9]), max_sources=2) == [0, 1]
    with pytest.raises(InputError):
        select_sources(np.ones(3), ratio=0)


def test_post_hoc_plan_and_program_attribution_on_tiny_lm(tiny_lm) -> None:
    case = make_program_cases(1, seed=0, n_people=2, n_answers=2)[0]
    task = ContextTask(tiny_lm, case.units(), case.query, case.response)
    before = tiny_lm.cost.forward_passes
    program = plan_post_hoc(task, "loo")
    n = len(case.sentences)
    assert program.planner == "post_hoc:loo" and len(program) == 2
    assert program.response_sentences == case.response_sentences
    # loo's masks are shared by both sentences: n + 1 passes in all
    assert tiny_lm.cost.forward_passes - before == n + 1 == program.cost.forward_passes
    for i, attribution in enumerate(program.attributions or []):
        cited = program.citations(i)
        assert cited == sorted(select_sources(attribution.vector))
        node = program.sentences[i]
        assert isinstance(node, Call)
        assert node.op == ("paraphrase" if len(cited) == 1 else "fusion")
    attributions = program_attribution(program)
    for i, a in enumerate(attributions):
        assert a.task == "program" and a.method == "program:post_hoc:loo"
        assert np.flatnonzero(a.scores).tolist() == program.citations(i)
        assert set(a.scores.tolist()) <= {0.0, 1.0}
        assert a.extras["program"]["citations"] == program.citations(i)
        np.testing.assert_allclose(
            a.extras["post_hoc_scores"], program.attributions[i].vector, atol=1e-9
        )
        assert a.target["sentence"] == case.response_sentences[i]
        json.dumps(a.to_dict())


def test_program_attribution_of_a_run() -> None:
    case = make_program_cases(1, seed=2)[0]
    program = parse_program(case.gold_plan())
    run = execute(program, case.units())
    attributions = program_attribution(program, case.units(), run)
    for i, a in enumerate(attributions):
        assert np.flatnonzero(a.scores).tolist() == sorted(f[0] for f in case.gold[i])
        assert a.extras["program"]["output"] == run.sentences[i]
        assert a.input["kind"] == "text"
    with pytest.raises(InputError, match="units="):
        program_attribution(program)
    back = Attribution.from_dict(json.loads(json.dumps(attributions[0].to_dict())))
    assert back.task == "program" and back.extras["program"] == attributions[0].extras["program"]
    np.testing.assert_array_equal(back.scores, attributions[0].scores)


def test_cite_with_program_on_tiny_lm(tiny_lm) -> None:
    case = make_program_cases(1, seed=4, n_people=2)[0]
    result = cite_with_program(
        tiny_lm, case.units(), case.query, case.response, "loo", ops="extractive"
    )
    assert result.run is not None and result.run.failures == []
    assert len(result.attributions) == len(case.response_sentences)
    assert result.cost.forward_passes == len(case.sentences) + 1
    assert "[" in result.cited_response()
    json.dumps(result.to_dict())
    with pytest.raises(InputError, match="unknown ops"):
        cite_with_program(tiny_lm, case.units(), case.query, case.response, ops="gpt")


# --- verification ------------------------------------------------------------------------------


class WordOverlapLM:
    """A deterministic scoring LM: a response word has log p -1 when it occurs in the prompt,
    else -6 (no meter of its own)."""

    name = "overlap"

    def generate(self, prompt: str, max_new_tokens: int = 64) -> str:
        return prompt.splitlines()[-3]

    def token_logprobs(self, prompts, responses):  # type: ignore[no-untyped-def]
        responses = [responses] * len(prompts) if isinstance(responses, str) else responses
        out = []
        for p, r in zip(prompts, responses, strict=True):
            words = set(p.lower().replace(".", " ").split())
            out.append(
                np.array([-1.0 if w in words else -6.0 for w in r.lower().rstrip(".").split()])
            )
        return out


class IgnoringOps(ExtractiveTextOps):
    """Fusion that returns only its first input (ignores the others)."""

    name = "ignoring"

    def run(self, op: str, inputs: Sequence[str], instruction=None, question=None) -> str:  # type: ignore[no-untyped-def]
        return inputs[0] if op == "fusion" else super().run(op, inputs, instruction, question)


def test_verify_flags_an_output_that_ignores_an_input() -> None:
    lm = WordOverlapLM()
    program = parse_program("- fusion(S1, S2)\n- fusion(S2, S3)")
    units = ["Ana was born in Oslo.", "Ana works for Zeta.", "Bo lives in Rome."]
    faithful = verify(program, lm, units, execute(program, units))
    assert faithful.flagged == []
    assert all(d > 0 for c in faithful.checks for d in c.drops)
    ignoring = verify(program, lm, units, execute(program, units, IgnoringOps()))
    assert [c.id for c in ignoring.flagged] == ["1.1", "2.1"]
    check = ignoring.checks[0]
    assert check.inputs == ["S1", "S2"] and check.drops[1] == 0 and check.drops[0] > 0
    assert ignoring.cost.forward_passes == 6  # (1 + 2 inputs) per call
    json.dumps(ignoring.to_dict())
    # the default run goes through LMTextOps(lm)
    assert len(verify(program, lm, units).checks) == 2


@pytest.mark.model
def test_smollm2_fusion_verify_and_post_hoc_loo(smollm2) -> None:
    units = ["Brakou was born in Dalewick.", "The river Tessel floods.", "Brakou works for Tremon."]
    ops = LMTextOps(smollm2, max_new_tokens=24)
    program = parse_program("- fusion(S1, S3)")
    run = execute(program, units, ops)
    assert run.failures == [] and run.sentences[0] and ops.generations == 1
    assert run.generations == 1 and run.cost.generated_tokens > 0
    assert run.citations(0) == [0, 2]
    # an output that copies S1 and ignores S2 is flagged; a faithful fusion is not
    check_program = parse_program("- fusion(S1, S3)\n- fusion(S1, S2)")

    class Fixed(ExtractiveTextOps):
        name = "fixed"

        def run(self, op, inputs, instruction=None, question=None):  # type: ignore[no-untyped-def]
            if "Tessel" in inputs[-1]:
                return inputs[0]
            return "Brakou was born in Dalewick and works for Tremon."

    result = verify(check_program, smollm2, units, execute(check_program, units, Fixed()))
    assert [c.id for c in result.flagged] == ["2.1"]
    assert min(result.checks[0].drops_per_token) > 1.0
    assert result.cost.forward_passes == 6
    # post-hoc planning with loo cites a gold sentence on an easy generated case
    case = make_program_cases(1, seed=0, n_people=2, n_answers=1, duplicate_prob=0.0)[0]
    task = ContextTask(smollm2, case.units(), case.query, case.response)
    plan = plan_post_hoc(task, "loo")
    assert set(plan.citations(0)) & set(case.gold_units(0))
    assert plan.cost.forward_passes == len(case.sentences) + 1
