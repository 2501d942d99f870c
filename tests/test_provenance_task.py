"""The provenance task: a source decision with "unknown", explained by perturbation methods."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import attribkit as ak
from attribkit.core.errors import InputError, ScorerError
from attribkit.tasks.provenance import ProvenanceTask, attribute_provenance

# Two generated "authors" with disjoint favourite words.
_A = ["whilst", "upon", "thereby", "hence", "moreover"]
_B = ["while", "on", "so", "thus", "also"]
_COMMON = ["the", "people", "state", "power", "union", "law", "government", "of", "and"]


def _texts(words: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sents = []
        for _ in range(4):
            ws = rng.choice(_COMMON + words + words, size=8)
            sents.append(" ".join(ws).capitalize() + ".")
        out.append(" ".join(sents))
    return out


@pytest.fixture(scope="module")
def model():
    texts = _texts(_A, 30, 0) + _texts(_B, 30, 1)
    authors = ["austen"] * 30 + ["brontë"] * 30
    return make_pipeline(CountVectorizer(), LogisticRegression(max_iter=1000)).fit(texts, authors)


def test_decision_and_loo_blame_the_foreign_sentence(model) -> None:
    text = (
        "Whilst the people upon the union hence moreover. "
        "Upon the law thereby whilst hence the state. "
        "While on the power so thus also the law."
    )
    task = ProvenanceTask(text, model)
    assert task.prediction == "austen"
    assert task.decision["scores"]["austen"] > 0.5
    a = ak.attribute(task, "loo")
    assert a.task == "provenance" and len(a) == 3
    assert a.target["prediction"] == "austen" and a.target["source"] == "austen"
    # The third sentence is in the other author's words: removing it raises p(austen).
    assert a.scores[2] < 0 < min(a.scores[0], a.scores[1])
    assert a.cost.forward_passes == 3 + 1  # n + 1 masks; the decision is counted on the task
    back = ak.Attribution.from_dict(a.to_dict())
    assert back.target["scores"] == pytest.approx(a.target["scores"])


def test_threshold_rejects_as_unknown_and_source_can_be_chosen(model) -> None:
    text = "The people of the state and the law of the union."  # no author's words
    task = ProvenanceTask(text, model, threshold=0.99)
    assert task.prediction == "unknown" and task.decision["unknown"]
    assert task.decision["confidence"] < 0.99
    other = ProvenanceTask(text, model, source="brontë", units="words")
    assert other.source == "brontë" and len(other.units) == 11
    a = attribute_provenance(text, model, method="shapley", units="words", source="brontë")
    assert a.extras["exact"]  # 11 words: exact Shapley values, which are efficient
    full, empty = a.extras["full_value"], a.extras["empty_value"]
    assert empty == pytest.approx(np.log(0.5))  # no word left: no evidence
    assert np.sum(a.scores) == pytest.approx(full - empty, abs=1e-9)


def test_empty_composition_scores_uniform(model) -> None:
    task = ProvenanceTask("Whilst upon hence.", model, units="words")
    values = task.scorer()(np.zeros((1, 3), dtype=bool))
    assert values[0] == pytest.approx(np.log(0.5))


class _NaNModel:
    classes_ = ("a", "b")

    def predict_proba(self, texts):
        return np.full((len(texts), 2), np.nan)


def test_bad_input_errors(model) -> None:
    with pytest.raises(InputError, match="empty"):
        ProvenanceTask("   ", model)
    with pytest.raises(InputError, match="fitted"):
        ProvenanceTask("Some text.", object())
    with pytest.raises(InputError, match="not one of"):
        ProvenanceTask("Some text.", model, source="dickens")
    with pytest.raises(InputError, match="probability"):
        ProvenanceTask("Some text.", model, threshold=3.0)
    with pytest.raises(InputError, match="units must be"):
        ProvenanceTask("Some text.", model, units="tokens")
    with pytest.raises(ScorerError, match="NaN"):
        ProvenanceTask("Some text.", _NaNModel())


def test_cross_validated_threshold_accepts_most_new_knowns() -> None:
    from attribkit.models.open_set import RejectingClassifier, cross_validated_threshold

    texts = _texts(_A, 30, 0) + _texts(_B, 30, 1)
    authors = ["austen"] * 30 + ["brontë"] * 30

    def make():
        return make_pipeline(CountVectorizer(), LogisticRegression(max_iter=1000))

    tau = cross_validated_threshold(make, texts, authors)
    fresh = _texts(_A, 20, 5) + _texts(_B, 20, 6)
    accepted = RejectingClassifier(make().fit(texts, authors), tau).confidence(fresh) >= tau
    assert accepted.mean() >= 0.8
    with pytest.raises(InputError, match="single sample"):
        cross_validated_threshold(make, texts[:31], authors[:31])
