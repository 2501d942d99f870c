"""Attention-based context attribution: token→unit mapping, AttnTrace, learned heads (AT2-lite)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import attribkit.models
from attribkit.cli import app
from attribkit.core.cost import Budget
from attribkit.core.errors import BudgetExhausted, InputError
from attribkit.core.registry import get_method
from attribkit.core.units import TextUnits
from attribkit.methods.context.attention_heads import attention_heads
from attribkit.methods.context.attention_reading import head_unit_features, unit_token_mask
from attribkit.methods.context.attntrace import _subsample_units, attntrace
from attribkit.methods.context.head_selection import dumps_heads, select_heads
from attribkit.methods.context.heads import load_heads
from attribkit.models.lm import LanguageModel
from attribkit.tasks.context import ContextTask
from attribkit.tasks.context_cases import make_cases
from attribkit.testing import TOY_CONTEXT, check_method


@pytest.fixture
def task(tiny_lm):
    return ContextTask(
        tiny_lm, TOY_CONTEXT, "Where did the cat sit?", "On the mat.", units=TOY_CONTEXT
    )


# --------------------------------------------------------------------------- tokens -> units


def test_unit_token_mask_by_hand():
    context = "Ab cd. Ef gh."
    units = TextUnits(context, [(0, 6), (7, 13)])
    prompt = f"Context: {context}\n\nQuery: q?"  # the context starts at character 9
    spans = [(-1, -1), (0, 8), (8, 11), (11, 14), (14, 15), (15, 18), (18, 21), (21, 22), (22, 24)]
    mask = unit_token_mask(prompt, units, spans)
    expected = np.zeros((2, len(spans)), dtype=bool)
    expected[0, [2, 3, 4]] = True  # " Ab", " cd", "."
    expected[1, [5, 6, 7]] = True  # " Ef", " gh", "."
    np.testing.assert_array_equal(mask, expected)
    # a token straddling the boundary belongs to both units
    both = unit_token_mask(prompt, units, [(8, 11), (13, 17), (17, 22)])
    np.testing.assert_array_equal(both, [[True, True, False], [False, True, True]])
    with pytest.raises(InputError, match="does not occur in the prompt"):
        unit_token_mask("Query: q?", units, spans)
    with pytest.raises(InputError, match="cover no prompt token"):
        unit_token_mask(prompt, units, spans[:5])


def test_unit_token_mask_is_exact_on_a_tiny_model(tiny_lm, task):
    prompt = task.prompt()
    spans = tiny_lm.prompt_token_spans(prompt)
    mask = unit_token_mask(prompt, task.units, spans)
    offset = prompt.find(task.units.text)
    assert mask.shape == (len(TOY_CONTEXT), len(spans))
    for unit, row in zip(task.units, mask, strict=True):
        tokens = [spans[t] for t in np.flatnonzero(row)]
        assert tokens == sorted(tokens)
        # the unit's tokens are contiguous and spell the unit (plus the space before it)
        text = "".join(prompt[s:e] for s, e in tokens)
        assert text.strip() == unit.label
        assert tokens[0][0] <= unit.start + offset and tokens[-1][1] >= unit.end + offset
    # no token belongs to two sentences; context tokens outside every unit are blank
    assert mask.sum(axis=0).max() == 1
    ctx = [t for t, (s, e) in enumerate(spans) if s < offset + len(task.units.text) and e > offset]
    assert all(not prompt[spans[t][0] : spans[t][1]].strip() for t in ctx if not mask[:, t].any())


def test_subsampled_context_keeps_exact_offsets(task):
    keep = np.array([False, True, False, True, True, False])
    sub = _subsample_units(task.units, keep)
    assert sub.text == task.units.compose(keep)
    assert [u.label for u in sub] == [TOY_CONTEXT[i] for i in (1, 3, 4)]
    assert all(sub.text[u.start : u.end] == u.label for u in sub)


# --------------------------------------------------------------------------- attention_heads


def _manual_features(lm, task, heads, rows=None):
    attn, spans = lm.attention_rows(task.prompt(), task.response, heads=heads)
    attn = attn if rows is None else attn[:, rows]
    mask = unit_token_mask(task.prompt(), task.units, spans)
    return attn.mean(axis=1).astype(float) @ mask.T


def test_attention_heads_one_pass_weighted_head_features(tiny_lm, task):
    heads, weights = [(0, 1), (1, 2)], [2.0, 1.0]
    before = tiny_lm.cost.forward_passes
    a = attention_heads(task, heads=heads, weights=weights)
    assert tiny_lm.cost.forward_passes - before == 1  # exactly one forward pass
    assert a.cost.forward_passes == 1 and a.cost.seconds > 0
    assert a.method == "attention_heads" and a.scores.shape == (len(TOY_CONTEXT),)
    expected = np.array(weights) @ _manual_features(tiny_lm, task, heads)
    np.testing.assert_allclose(a.scores, expected, rtol=1e-5)
    np.testing.assert_allclose(
        a.extras["features"], _manual_features(tiny_lm, task, heads), rtol=1e-5
    )
    assert a.params["heads"] == [[0, 1], [1, 2]] and a.params["source"] == "given"
    # heads="all": the plain average over every layer and head (the naive baseline)
    every = attention_heads(task, heads="all")
    np.testing.assert_allclose(
        every.scores, _manual_features(tiny_lm, task, "all").mean(0), rtol=1e-5
    )
    assert json.loads(json.dumps(a.to_dict(), allow_nan=False))["method"] == "attention_heads"


def test_attention_heads_span_uses_only_the_span_rows(tiny_lm):
    span_task = ContextTask(
        tiny_lm, TOY_CONTEXT, "Where did the cat sit?", "On the mat.", units=TOY_CONTEXT, span="mat"
    )
    rows = span_task.span_token_mask
    assert 0 < rows.sum() < rows.size
    a = attention_heads(span_task, heads=[(1, 0)])
    np.testing.assert_allclose(
        a.scores, _manual_features(tiny_lm, span_task, [(1, 0)], rows)[0], rtol=1e-5
    )


def test_attention_heads_bad_input(tiny_lm, task):
    with pytest.raises(InputError, match=r"no attention-head file for model 'tiny'.*select_heads"):
        attention_heads(task)
    with pytest.raises(InputError, match="do not exist"):
        attention_heads(task, heads=[(2, 0)])
    with pytest.raises(InputError, match="one per head"):
        attention_heads(task, heads=[(0, 0), (1, 1)], weights=[1.0])
    with pytest.raises(InputError, match="needs heads"):
        attention_heads(task, weights=[1.0])
    with pytest.raises(BudgetExhausted):
        attention_heads(task, heads=[(0, 0)], budget=Budget(forward_passes=0))


# --------------------------------------------------------------------------- AttnTrace


def test_attntrace_subsamples_and_counts_passes(tiny_lm, task):
    a = attntrace(task, B=5, q=0.5, seed=3)
    assert a.cost.forward_passes == 5 and a.extras["subsamples"] == 5
    assert a.extras["subsample_size"] == 3 and sum(a.extras["times_sampled"]) == 15
    counts = np.array(a.extras["times_sampled"])
    assert np.isnan(a.scores[counts == 0]).all() and np.isfinite(a.scores[counts > 0]).all()
    np.testing.assert_array_equal(attntrace(task, B=5, q=0.5, seed=3).scores, a.scores)
    # the budget caps the number of subsamples
    assert attntrace(task, B=5, q=0.5, budget=Budget(forward_passes=2)).cost.forward_passes == 2
    with pytest.raises(BudgetExhausted):
        attntrace(task, budget=Budget(forward_passes=0))


def test_attntrace_full_context_is_top_k_token_attention(tiny_lm, task):
    a = attntrace(task, q=1.0, avg_k=2)  # every subsample is the full context: one pass
    assert a.cost.forward_passes == 1
    attn, spans = tiny_lm.attention_rows(task.prompt(), task.response, heads="all")
    values = attn.mean(axis=(0, 1))
    mask = unit_token_mask(task.prompt(), task.units, spans)
    expected = [np.sort(values[row])[-2:].mean() for row in mask]
    np.testing.assert_allclose(a.scores, expected, rtol=1e-5)
    with pytest.raises(InputError, match="q"):
        attntrace(task, q=0.0)


def test_methods_pass_the_conformance_suite():
    assert get_method("attntrace").kind == "context"
    check_method("attntrace", B=3)
    check_method("attention_heads", heads=[(0, 0), (1, 3)])


# --------------------------------------------------------------------------- head selection


def test_select_heads_returns_a_usable_json_spec(tiny_lm):
    cases = make_cases("needle", 4, 2, seed=0)
    before = tiny_lm.cost.forward_passes
    spec = select_heads(tiny_lm, cases, n_heads=3, description={"families": ["needle"]})
    assert tiny_lm.cost.forward_passes - before == len(cases)  # one pass per case
    spec = json.loads(json.dumps(spec, allow_nan=False))
    assert spec["model"] == {
        "name": "tiny",
        "architecture": "LlamaForCausalLM",
        "num_layers": 2,
        "num_heads": 4,
    }
    assert len(spec["heads"]) == 3 and np.isclose(sum(spec["weights"]), 1.0)
    assert spec["selection"]["families"] == ["needle"] and spec["selection"]["n_cases"] == 2
    top = spec["train"]["top_heads"]
    assert [t["head"] for t in top[:3]] == spec["heads"]
    assert all(
        (a["p_at_1"], a["mrr"]) >= (b["p_at_1"], b["mrr"]) for a, b in itertools.pairwise(top)
    )
    task = ContextTask(
        tiny_lm, cases[0].text, cases[0].query, cases[0].response, units=cases[0].context
    )
    a = attention_heads(task, heads=spec["heads"], weights=spec["weights"])
    features = head_unit_features(task, [tuple(h) for h in spec["heads"]])
    np.testing.assert_allclose(a.scores, np.mean(features, axis=0), rtol=1e-6)


def test_select_heads_command_writes_the_heads_file(tiny_lm, monkeypatch, tmp_path):
    monkeypatch.setattr(attribkit.models, "load", lambda name="smollm2", **kw: tiny_lm)
    out = tmp_path / "tiny.json"
    args = ["select-heads", "--model", "tiny", "--out", str(out), "--families", "needle"]
    args += ["--n-sentences", "4", "--n-cases", "2", "--n-heads", "3", "--eval-cases", "2"]
    before = tiny_lm.cost.forward_passes
    result = CliRunner().invoke(app, [*args, "--eval", "needle:4,birthplace:4"])
    assert result.exit_code == 0, result.output
    assert "selecting 3 heads of tiny on 2 cases" in result.stderr and "wrote" in result.stderr
    assert tiny_lm.cost.forward_passes - before == 2 + 2 * 2  # one pass per case
    text = out.read_text(encoding="utf-8")
    assert text == dumps_heads(json.loads(text))  # the shipped files' layout
    spec = json.loads(text)
    assert (spec["format"], spec["version"]) == ("attribkit.heads", 1)
    assert len(spec["heads"]) == len(spec["weights"]) == 3
    assert spec["selection"]["families"] == ["needle"] and spec["selection"]["n_cases"] == 2
    assert spec["selection"]["command"] == (
        "attribkit select-heads --model tiny --families needle --n-sentences 4 --n-cases 2 "
        "--seed 0 --n-heads 3 --eval needle:4,birthplace:4 --eval-cases 2 --eval-seed 1"
    )
    assert [(r["family"], r["n_sentences"], r["seed"]) for r in spec["held_out"]] == [
        ("needle", 4, 1),
        ("birthplace", 4, 1),
    ]
    bad = CliRunner().invoke(app, [*args, "--eval", "needle", "--quiet"])
    assert bad.exit_code == 2 and "family:n_sentences" in bad.stderr


def test_shipped_smollm2_heads_files():
    learned = load_heads("smollm2")  # the default: weights learned on real QA (train-heads)
    assert (learned["model"]["num_layers"], learned["model"]["num_heads"]) == (30, 9)
    w = np.asarray(learned["weights"])
    assert len(learned["heads"]) == len(w) and (w > 0).all() and abs(w.sum() - 1) < 1e-6
    assert all(0 <= layer < 30 and 0 <= head < 9 for layer, head in learned["heads"])
    assert "train-heads" in learned["selection"]["command"]
    spec = load_heads("smollm2", variant="synthetic")  # selected on template cases
    assert spec["model"]["name"] == "smollm2"
    assert (spec["model"]["num_layers"], spec["model"]["num_heads"]) == (30, 9)
    assert len(spec["heads"]) == len(spec["weights"]) == 8
    assert spec["selection"]["families"] == ["needle", "birthplace"]
    assert spec["selection"]["n_sentences"] == 10
    held = {(r["family"], r["n_sentences"]) for r in spec["held_out"]}
    assert {
        ("needle", 10),
        ("birthplace", 10),
        ("injection", 10),
        ("two_hop", 10),
        ("needle", 50),
    } <= held
    assert all(r["seed"] != spec["selection"]["seed"] for r in spec["held_out"])


def test_heads_file_for_another_model_shape_is_refused(tiny_lm):
    impostor = LanguageModel(tiny_lm.model, tiny_lm.tokenizer, name="smollm2")
    with pytest.raises(InputError, match="30 layers"):
        load_heads(impostor)


# --------------------------------------------------------------------------- real model


@pytest.mark.model
def test_attention_heads_finds_the_needle_on_the_real_model(smollm2):
    for case in make_cases("needle", 10, 3, seed=5):  # held out: the heads were fit on seed 0
        task = ContextTask(smollm2, case.text, case.query, case.response, units=case.context)
        a = attention_heads(task)
        assert a.cost.forward_passes == 1
        assert a.params["source"] == "file:smollm2.json"
        assert int(a.ranking[0]) == case.gold[0], (case.context, a.scores)


class _UnmeteredLM:
    """A language model adapter without a meter of its own (no ``cost``)."""

    def __init__(self, lm):
        self._lm = lm

    def __getattr__(self, name):
        if name == "cost":
            raise AttributeError(name)
        return getattr(self._lm, name)


def test_an_unmetered_lm_is_counted_on_the_tasks_meter(tiny_lm):
    task = ContextTask(
        _UnmeteredLM(tiny_lm),
        TOY_CONTEXT,
        "Where did the cat sit?",
        "On the mat.",
        units=TOY_CONTEXT,
    )
    assert task.meter is not task.lm  # the task's own meter
    a = attention_heads(task, heads=[(0, 1), (1, 2)])
    assert a.cost.forward_passes == a.cost.batches == 1 and task.meter.cost.forward_passes == 1
    b = attntrace(task, B=3, seed=0)
    assert b.cost.forward_passes == 3 and task.meter.cost.forward_passes == 4
    c = task.attribute("loo")  # the scorer's passes too: n + 1, on the same meter
    assert c.cost.forward_passes == 7 and task.meter.cost.forward_passes == 11
