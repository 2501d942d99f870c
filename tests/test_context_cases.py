"""The synthetic context-traceback case generator (no model)."""

from __future__ import annotations

import re

import pytest

from attribkit.core.errors import InputError
from attribkit.tasks.context import context_units
from attribkit.tasks.context_cases import FAMILIES, ContextCase, make_cases, make_suite

SIZES = (10, 50, 200)


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_under_seed(family: str) -> None:
    a = make_cases(family, 10, 4, seed=3)
    b = make_cases(family, 10, 4, seed=3)
    c = make_cases(family, 10, 4, seed=4)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    assert [x.context for x in a] != [x.context for x in c]
    # Case i does not depend on how many cases were asked for.
    assert [x.to_dict() for x in make_cases(family, 10, 2, seed=3)] == [x.to_dict() for x in a[:2]]
    # Cases within one call differ.
    assert len({tuple(x.context) for x in a}) == len(a)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n", SIZES)
def test_lengths_and_gold(family: str, n: int) -> None:
    expected_gold = {"two_hop": 2, "redundant_injection": 3}.get(family, 1)
    for case in make_cases(family, n, 3, seed=0):
        assert isinstance(case, ContextCase)
        assert case.family == family and case.n_sentences == n == len(case.context)
        assert len(case.gold) == expected_gold == len(set(case.gold))
        assert case.gold == sorted(case.gold) and all(0 <= g < n for g in case.gold)
        assert case.answer in case.response
        # The answer occurs in the gold sentences only (the response cannot come from elsewhere).
        with_answer = [i for i, s in enumerate(case.context) if case.answer in s]
        if family == "two_hop":
            assert with_answer == [g for g in case.gold if g != case.meta["bridge_index"]]
            bridge = case.context[case.meta["bridge_index"]]
            assert case.meta["name"] in bridge and case.meta["bridge"] in bridge
            assert case.meta["bridge_index"] in case.gold
        else:
            assert with_answer == case.gold
        if family in ("injection", "redundant_injection"):
            assert all(case.context[g] == case.meta["instruction"] for g in case.gold)
            assert "Ignore the question" in case.meta["instruction"]
            assert case.response == case.answer
        # Sentences are distinct, end with a period and hold no newline.
        if family != "redundant_injection":
            assert len(set(case.context)) == n
        assert all(s.endswith(".") and "\n" not in s for s in case.context)
        # The queried name appears in the query and the response cannot be answered from it.
        assert case.meta["name"] in case.query and case.answer not in case.query


@pytest.mark.parametrize("family", ["needle", "birthplace", "two_hop"])
def test_distractors_share_the_gold_shape(family: str) -> None:
    case = make_cases(family, 50, 1, seed=1)[0]
    shape = re.sub(r"[A-Z0-9][\w-]*", "X", case.context[case.gold[-1]])
    same = [s for s in case.context if re.sub(r"[A-Z0-9][\w-]*", "X", s) == shape]
    assert len(same) >= 10


def test_codes_and_names_look_invented() -> None:
    case = make_cases("needle", 50, 1, seed=0)[0]
    assert re.fullmatch(r"\d{3}-[A-HJ-NP-Z]\d{2}", case.answer)
    names = [s.split(" of ")[1].split(" is ")[0] for s in case.context]
    assert len(set(names)) == 50


def test_families_differ() -> None:
    first = {f: make_cases(f, 10, 1, seed=0)[0] for f in FAMILIES}
    assert len({c.query for c in first.values()}) >= 4
    assert len({tuple(c.context) for c in first.values()}) == len(FAMILIES)
    assert len({len(c.gold) for c in first.values()}) == 3
    suite = make_suite(10, 2, seed=0)
    assert [c.family for c in suite] == [f for f in FAMILIES for _ in range(2)]


def test_explicit_units_round_trip() -> None:
    for family in FAMILIES:
        case = make_cases(family, 10, 1, seed=2)[0]
        units = context_units(case.text, case.context)
        assert [u.label for u in units] == case.context
        assert all(case.text[u.start : u.end] == u.label for u in units)


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="unknown family"):
        make_cases("haystack", 10, 1)
    with pytest.raises(InputError, match="at least 4"):
        make_cases("redundant_injection", 3, 1)
    with pytest.raises(InputError, match="n_cases"):
        make_cases("needle", 10, -1)
    assert make_cases("needle", 10, 0) == []
