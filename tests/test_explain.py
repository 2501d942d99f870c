"""Saliency map verbalization: template (model-free) and instruction-based (LLM) explanations."""

from __future__ import annotations

import numpy as np
import pytest

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost
from attribkit.core.errors import InputError
from attribkit.core.units import Unit
from attribkit.viz.explain import explain

LABELS = ["the", "cat\nsat", "on", "mat"]


def _att(scores, method="occlusion", target=None) -> Attribution:
    units = [Unit(i, label, 0, len(label)) for i, label in enumerate(LABELS)]
    return Attribution(
        units=units,
        scores=np.asarray(scores, dtype=float),
        method=method,
        target=target or {"description": "log p(response)", "response": "yes"},
        cost=Cost(forward_passes=5, seconds=0.25),
    )


def test_template_names_top_unit_method_share_and_cost():
    text = explain(_att([0.1, 0.6, -0.2, 0.3]))
    assert '"cat\\nsat"' in text  # quoted, newline escaped
    assert "\n" not in text
    assert "'occlusion'" in text
    assert "60%" in text  # 0.6 / (0.1 + 0.6 + 0.3)
    assert "against the target" in text and '"on"' in text
    assert "5 model calls" in text
    assert 'the response "yes"' in text
    assert text == explain(_att([0.1, 0.6, -0.2, 0.3]))  # deterministic


def test_template_changes_with_ranking():
    a = explain(_att([0.1, 0.6, 0.0, 0.3]), k=1)
    b = explain(_att([0.6, 0.1, 0.0, 0.3]), k=1)
    assert a != b
    assert 'Most important: "cat\\nsat"' in a
    assert 'Most important: "the"' in b
    assert "No unit pushes against the target." in a


def test_template_nan_and_all_negative():
    text = explain(_att([np.nan, -0.5, np.nan, -0.1]))
    assert "2 of the 4 units were not scored" in text
    assert "No unit has a positive score" in text and '"mat"' in text
    none = explain(_att([np.nan] * 4))
    assert "none of the units" in none


def test_template_matrix_rows():
    target = {
        "kind": "generation",
        "response": "a b",
        "row_labels": ["a", " b"],
        "span": None,
        "foil": None,
    }
    scores = [[0.1, 0.5, np.nan, np.nan], [0.2, 0.1, 0.9, np.nan]]
    text = explain(_att(scores, method="saliency", target=target))
    assert "2 generated tokens" in text and "summed over the 2 rows" in text
    assert '"on"' in text.split("Most important: ")[1][:10]  # 0.9 is the top column sum
    assert '"a" ← "cat\\nsat"' in text and '" b" ← "on"' in text
    assert "1 of the 4 units was not scored" in text


def test_bad_arguments():
    with pytest.raises(InputError):
        explain(_att([1, 2, 3, 4]), mode="poem")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        explain(_att([1, 2, 3, 4]), k=0)
    with pytest.raises(InputError):
        explain(_att([1, 2, 3, 4]), mode="llm", lm=object())


def test_llm_mode_counts_one_generation(tiny_lm):
    before = tiny_lm.cost.forward_passes
    text = explain(_att([0.1, 0.6, -0.2, 0.3]), mode="llm", lm=tiny_lm, max_new_tokens=4)
    assert isinstance(text, str)
    spent = tiny_lm.cost.forward_passes - before
    assert 1 <= spent <= 4


def test_llm_mode_on_generation_attribution(tiny_lm):
    from attribkit.tasks.generation import attribute_generation

    att = attribute_generation(tiny_lm, "the cat sat on the mat", "the cat", method="saliency")
    assert isinstance(explain(att), str)
    assert isinstance(explain(att, mode="llm", lm=tiny_lm, max_new_tokens=3), str)


@pytest.mark.model
def test_llm_mode_smollm2(smollm2):
    att = _att([0.1, 0.6, -0.2, 0.3])
    text = explain(att, mode="llm", lm=smollm2, max_new_tokens=40)
    assert text.strip()
