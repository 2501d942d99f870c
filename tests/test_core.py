"""Core objects: units, scorer, Attribution, cost accounting, registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import attribkit as ak
from attribkit.core.segment import paragraph_spans, sentence_spans


def linear_scorer(w=(0.5, -1.0, 2.0, 0.0), x=(1.0, 2.0, 3.0, 4.0), **kw):
    w = np.asarray(w)
    units = ak.FeatureUnits(x, names=[f"f{i}" for i in range(len(w))])
    return ak.Scorer(units, lambda X: X @ w, target="linear", **kw)


# --- segmentation -------------------------------------------------------------------------------
def test_sentence_spans_keep_exact_offsets_and_skip_abbreviations():
    text = "Dr. Smith met Mr. J. Doe at 3.15 p.m. today. It rained!  Was it cold?\nYes"
    spans = sentence_spans(text)
    got = [text[s:e] for s, e in spans]
    assert got == [
        "Dr. Smith met Mr. J. Doe at 3.15 p.m. today.",
        "It rained!",
        "Was it cold?",
        "Yes",
    ]


def test_paragraph_spans():
    text = "One. Two.\n\n  Three.\n\n\nFour"
    assert [text[s:e] for s, e in paragraph_spans(text)] == ["One. Two.", "Three.", "Four"]


# --- units --------------------------------------------------------------------------------------
def test_text_units_remove_unit_with_its_separator():
    units = ak.TextUnits.sentences("Alpha is one. Beta is two. Gamma is three.")
    assert units.labels == ["Alpha is one.", "Beta is two.", "Gamma is three."]
    assert units.compose([True, False, True]) == "Alpha is one. Gamma is three."
    assert units.compose([True, True, True]) == units.text
    assert units.compose([False, False, False]) == ""
    assert [(u.start, u.end) for u in units] == [(0, 13), (14, 26), (27, 42)]


def test_text_units_placeholder_removal_and_passages():
    units = ak.TextUnits.passages(["first passage", "second passage"], removal="[removed]")
    assert units.text == "first passage\n\nsecond passage"
    assert units.compose([False, True]) == "[removed]\n\nsecond passage"


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_a_clear_error(text):
    with pytest.raises(ak.InputError, match="empty"):
        ak.TextUnits.sentences(text)


def test_mask_of_wrong_length_is_a_clear_error():
    scorer = linear_scorer()
    with pytest.raises(ak.InputError, match=r"does not fit 4 units"):
        scorer(np.ones(3, dtype=bool))
    with pytest.raises(ak.InputError, match="boolean"):
        scorer(np.full(4, 2))


def test_feature_and_array_units_use_baseline():
    units = ak.FeatureUnits([1.0, 2.0, 3.0], baseline=[9.0, 9.0, 9.0])
    np.testing.assert_array_equal(units.compose([True, False, True]), [1.0, 9.0, 3.0])
    series = ak.ArrayUnits.windows(np.arange(12.0).reshape(6, 2), width=2)
    assert len(series) == 3 and series.labels[1] == "t[2:4]"
    out = series.compose([False, True, False])
    np.testing.assert_array_equal(out[2:4], [[4, 5], [6, 7]])
    assert (out[:2] == 0).all() and (out[4:] == 0).all()


def test_image_units_grid_boxes_and_blur_baseline():
    rng = np.random.default_rng(0)
    image = rng.random((20, 30, 3))
    units = ak.ImageUnits.grid(image, patch=10)
    assert len(units) == 6 and units[4].box == (10, 10, 20, 20)
    composed = units.compose_batch(np.eye(6, dtype=bool)[[4]])[0]
    np.testing.assert_array_equal(composed[10:20, 10:20], image[10:20, 10:20])
    assert not np.allclose(composed[:10, :10], image[:10, :10])  # blurred elsewhere
    assert units.heatmap(np.arange(6)).shape == (20, 30)
    with pytest.raises(ak.InputError, match="image must be"):
        ak.ImageUnits.grid(np.zeros((4,)), patch=2)


# --- scorer -------------------------------------------------------------------------------------
def test_scorer_batches_caches_and_counts():
    calls = []
    units = ak.FeatureUnits(np.ones(5))

    def fn(X):
        calls.append(len(X))
        return X.sum(axis=1)

    scorer = ak.Scorer(units, fn, batch_size=3)
    masks = np.array(
        [[1, 1, 0, 0, 0], [0, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1] * 5, [0] * 5], dtype=bool
    )
    np.testing.assert_array_equal(scorer(masks), [2, 4, 2, 5, 0])
    assert calls == [3, 1]  # 4 distinct masks in batches of 3
    assert (
        scorer.cost.forward_passes == 4 and scorer.cost.cache_hits == 1 and scorer.cost.batches == 2
    )
    scorer(masks[:2])
    assert scorer.cost.forward_passes == 4 and scorer.cost.cache_hits == 3


def test_scorer_rejects_nan_and_wrong_length():
    units = ak.FeatureUnits(np.ones(3))
    with pytest.raises(ak.ScorerError, match=r"nan.*keeps units"):
        ak.Scorer(units, lambda X: np.full(len(X), np.nan))(np.ones(3, bool))
    with pytest.raises(ak.ScorerError, match="one number per input"):
        ak.Scorer(units, lambda X: [1.0])(np.eye(3, dtype=bool)[:2])


def test_budget_stops_a_scorer_before_it_overspends():
    scorer = linear_scorer(budget=ak.Budget(forward_passes=3))
    with pytest.raises(ak.BudgetExhausted, match="3 forward passes"):
        ak.attribute(scorer, "loo")  # needs 5
    assert scorer.cost.forward_passes <= 3


# --- Attribution ---------------------------------------------------------------------------------
def test_loo_attribution_reading_and_cost():
    scorer = linear_scorer()
    attribution = ak.attribute(scorer, "loo")
    np.testing.assert_allclose(attribution.scores, [0.5, -2.0, 6.0, 0.0])
    assert [u.label for u, _ in attribution.top(2)] == ["f2", "f0"]
    assert list(attribution.ranking) == [2, 0, 3, 1]
    assert attribution.cost.forward_passes == 5 and attribution.cost.seconds > 0
    text = repr(attribution)
    assert "loo" in text and "f2" in text and "5 forward" in text


def test_attribution_save_load_round_trip(tmp_path):
    attribution = ak.attribute(linear_scorer(), "loo")
    attribution.scores[3] = np.nan  # an unscored unit survives the round trip
    path = attribution.save(tmp_path / "sub" / "a.json")
    data = json.loads(path.read_text())
    assert data["format"] == "attribkit.attribution" and data["version"] == 2
    assert data["task"] is None and data["heatmap"] is None  # a bare scorer's result
    assert data["scores"][3] is None
    loaded = ak.Attribution.load(path)
    np.testing.assert_array_equal(loaded.scores, attribution.scores)
    assert loaded.units == attribution.units and loaded.method == "loo"
    assert loaded.cost.forward_passes == 5
    assert list(loaded.ranking) == [2, 0, 1, 3]  # NaN last


def test_loading_a_newer_format_version_is_a_clear_error(tmp_path):
    data = ak.attribute(linear_scorer(), "loo").to_dict()
    data["version"] = 99
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ak.InputError, match="version 99 is not supported"):
        ak.Attribution.load(path)
    path.write_text("{not json")
    with pytest.raises(ak.InputError, match="not valid JSON"):
        ak.Attribution.load(path)


def test_failed_save_keeps_the_previous_file(tmp_path):
    attribution = ak.attribute(linear_scorer(), "loo")
    path = attribution.save(tmp_path / "a.json")
    before = path.read_text()
    attribution.extras["bad"] = object()  # not JSON-serialisable: the save fails midway
    with pytest.raises(TypeError):
        attribution.save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_single_unit_is_a_clear_error():
    scorer = ak.Scorer(ak.FeatureUnits([1.0]), lambda X: X[:, 0])
    with pytest.raises(ak.InputError, match="only 1 unit"):
        ak.attribute(scorer, "loo")


def test_unknown_method_lists_the_choices():
    with pytest.raises(ak.InputError, match=r"unknown method 'nope'.*loo"):
        ak.attribute(linear_scorer(), "nope")


def test_progress_bar_follows_the_scorer_and_restores_its_callback():
    seen = []
    scorer = linear_scorer(progress=seen.append)
    ak.attribute(scorer, "loo", progress=True)
    assert sum(seen) == 5 and scorer.progress == seen.append


def test_unscored_units_follow_the_methods_ranking_hint():
    units = ak.FeatureUnits(np.zeros(4))
    attribution = ak.Attribution(
        list(units), [np.nan, 2.0, np.nan, np.nan], "x", extras={"ranking": [1, 3, 0, 2]}
    )
    assert list(attribution.ranking) == [1, 3, 0, 2]
    assert list(ak.Attribution(list(units), [np.nan, 2.0, np.nan, np.nan], "x").ranking) == [
        1,
        0,
        2,
        3,
    ]


FORMAT_1 = Path(__file__).parent / "golden" / "format1"


@pytest.mark.parametrize(
    ("name", "task"),
    [("features", None), ("context", "context"), ("generation", "generation"), ("image", "image")],
)
def test_format_1_files_still_load(name, task, tmp_path):
    """Files written by attribkit 0.1 (format 1) load: the task kind is inferred, an image's
    map moves from extras to the typed field, and saving writes format 2 unchanged otherwise."""
    old = json.loads((FORMAT_1 / f"{name}.json").read_text())
    assert old["version"] == 1
    a = ak.Attribution.load(FORMAT_1 / f"{name}.json")
    assert a.task == task and a.method == old["method"] and len(a.units) == len(old["units"])
    np.testing.assert_array_equal(
        a.scores, np.array(old["scores"], dtype=float) if a.scores.ndim == 1 else a.scores
    )
    if name == "image":
        assert "heatmap" not in a.extras
        np.testing.assert_allclose(a.heatmap, np.array(old["extras"]["heatmap"]), atol=1e-7)
    else:
        with pytest.raises(ak.InputError, match="no image heatmap"):
            _ = a.heatmap
    again = ak.Attribution.load(a.save(tmp_path / "new.json"))
    assert again.to_dict()["version"] == 2 and again.task == task
    np.testing.assert_array_equal(again.scores, a.scores)
    assert again.cost == a.cost and again.target == a.target
