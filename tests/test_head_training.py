"""Learning attention-head weights from ablation targets (AT2): the fitter on planted weights,
the collection of features and LOO targets on a tiny random model, the heads files (the learned
default and the synthetic variant) and the ``train-heads`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import attribkit
from attribkit.cli import app
from attribkit.core.errors import InputError
from attribkit.methods.context.attention_heads import attention_heads
from attribkit.methods.context.head_selection import dumps_heads
from attribkit.methods.context.head_training import (
    collect_examples,
    evaluate_weights,
    fit_head_weights,
    gold_units,
    read_cases,
    sparsify,
    train_heads,
)
from attribkit.methods.context.heads import heads_path, heads_variants, load_heads
from attribkit.tasks.context import ContextTask, context_units


def planted(n_examples=60, n_heads=40, seed=0, noise=0.05):
    """Features of ``n_heads`` heads over 4-12 units; targets = planted weights @ features."""
    rng = np.random.default_rng(seed)
    w = np.zeros(n_heads)
    w[[3, 17, 29]] = [0.5, 0.3, 0.2]
    feats, targs = [], []
    for _ in range(n_examples):
        n = int(rng.integers(4, 13))
        f = rng.dirichlet(np.ones(n), size=n_heads)  # each head's attention over the units
        feats.append(f)
        targs.append(w @ f + noise * rng.standard_normal(n) * (w @ f).std())
    return feats, targs, w


@pytest.mark.parametrize("objective", ["pearson", "listwise"])
def test_fit_recovers_planted_heads(objective):
    feats, targs, _w = planted()
    fit = fit_head_weights(feats, targs, objective=objective, steps=400, lr=0.05)
    assert fit.shape == (40,) and (fit >= 0).all()
    np.testing.assert_allclose(fit.sum(), 1.0, rtol=1e-9)
    assert set(np.argsort(-fit)[:3].tolist()) == {3, 17, 29}
    idx, wk = sparsify(fit, 3)
    assert set(idx.tolist()) == {3, 17, 29} and np.isclose(wk.sum(), 1.0)
    # held-out examples from the same planted weights: the fit ranks like the truth
    held_f, held_t, _ = planted(seed=1)
    held = [
        {"features": f, "targets": t, "gold": [int(np.argmax(t))]}
        for f, t in zip(held_f, held_t, strict=True)
    ]
    m = evaluate_weights(held, wk, idx)
    assert m["agree_loo"] >= 0.9 and m["p_at_1"] >= 0.9 and m["pearson"] > 0.9
    uniform = evaluate_weights(held, np.full(40, 1 / 40))
    assert uniform["pearson"] < m["pearson"]


def test_fit_is_deterministic_and_ignores_flat_examples():
    feats, targs, _ = planted(n_examples=10)
    a = fit_head_weights(feats, targs, steps=50)
    b = fit_head_weights(feats, targs, steps=50)
    np.testing.assert_allclose(a, b)
    # constant targets and single-unit examples carry no signal: ignored, not an error
    flat = fit_head_weights(
        [np.ones((4, 3)), np.ones((4, 1))], [np.zeros(3), np.zeros(1)], steps=10
    )
    np.testing.assert_allclose(flat, np.full(4, 0.25))
    # a zero example weight drops the example: the fit equals the fit without it
    feats2, targs2, _ = planted(n_examples=5, seed=3)
    dropped = fit_head_weights(feats + feats2, targs + targs2, steps=50,
                               example_weights=[1.0] * 10 + [0.0] * 5)  # fmt: skip
    np.testing.assert_allclose(dropped, a, rtol=1e-9, atol=1e-12)


def test_fit_bad_input():
    with pytest.raises(InputError, match="at least one example"):
        fit_head_weights([], [])
    with pytest.raises(InputError, match="2 feature arrays but 1"):
        fit_head_weights([np.ones((3, 4)), np.ones((3, 4))], [np.ones(4)])
    with pytest.raises(InputError, match="4 units in the features but targets of shape"):
        fit_head_weights([np.ones((3, 4))], [np.ones(5)])
    with pytest.raises(InputError, match="with 3 heads"):
        fit_head_weights([np.ones((3, 4)), np.ones((2, 4))], [np.ones(4), np.ones(4)])
    with pytest.raises(InputError, match="non-finite"):
        fit_head_weights([np.full((3, 4), np.nan)], [np.ones(4)])
    with pytest.raises(InputError, match="objective"):
        fit_head_weights([np.ones((3, 4))], [np.arange(4.0)], objective="mse")
    with pytest.raises(InputError, match="example_weights"):
        fit_head_weights([np.ones((3, 4))], [np.arange(4.0)], example_weights=[-1.0])
    with pytest.raises(InputError, match="k must be"):
        sparsify(np.ones(3), 0)


def test_gold_units_by_overlap():
    units = context_units(["Ab cd ef. Gh ij kl.", "Mn op qr."])
    assert gold_units(units, ["Gh ij kl."]) == [1]
    assert gold_units(units, ["Mn op qr.", "Ab cd ef."]) == [0, 2]
    assert gold_units(units, ["not in the context"]) == []


# --------------------------------------------------------------------------- tiny model


CASES = [
    {
        "id": f"c{i}",
        "source": "toy",
        "context_passages": ["The cat sat on the mat. The dog ran far.", "A bird sang. It rained."],
        "query": "Where did the cat sit?",
        "answer": answer,
        "gold_sentences": ["The cat sat on the mat."],
        "meta": {"split": "val" if i == 2 else "train"},
    }
    for i, answer in enumerate(["On the mat.", "The mat.", "Mat."])
]


def test_collect_examples_counts_passes_and_caches(tiny_lm, tmp_path):
    before = tiny_lm.cost.forward_passes
    ex = collect_examples(tiny_lm, CASES[:1], tmp_path)
    n = len(context_units(CASES[0]["context_passages"]))
    assert len(ex) == 1 and ex[0]["n_units"] == n == 4
    assert ex[0]["features"].shape == (tiny_lm.n_layers * tiny_lm.n_heads, n)
    assert ex[0]["targets"].shape == (n,) and ex[0]["gold"] == [0]
    used = tiny_lm.cost.forward_passes - before
    assert used <= n + 2  # one attention pass + LOO's n + 1 (fewer with caching of the base)
    # features agree with the method's own reading
    task = ContextTask(
        tiny_lm, CASES[0]["context_passages"], CASES[0]["query"], response=CASES[0]["answer"]
    )
    np.testing.assert_allclose(
        ex[0]["features"][:2], attention_heads(task, heads=[(0, 0), (0, 1)]).extras["features"],
        rtol=1e-5, atol=1e-7,
    )  # fmt: skip
    np.testing.assert_allclose(ex[0]["targets"], task.attribute("loo").scores, rtol=1e-4, atol=1e-6)
    before = tiny_lm.cost.forward_passes
    again = collect_examples(tiny_lm, CASES[:1], tmp_path)
    assert tiny_lm.cost.forward_passes == before  # from the cache: no model calls
    np.testing.assert_allclose(again[0]["features"], ex[0]["features"])


def test_train_heads_writes_a_loadable_heads_file(tiny_lm, tmp_path, monkeypatch):
    spec = train_heads(
        tiny_lm, CASES, cache_dir=tmp_path / "cache", n_heads_grid=(2, 3), steps=20,
        baselines={"first_head": ([(0, 0)], [1.0])},
    )  # fmt: skip
    assert (spec["format"], spec["version"]) == ("attribkit.heads", 1)
    assert len(spec["heads"]) == len(spec["weights"]) in (2, 3)
    w = np.array(spec["weights"])
    assert (w > 0).all() and np.isclose(w.sum(), 1.0)
    sel = spec["selection"]
    assert (sel["n_train"], sel["n_val"]) == (2, 1) and sel["objective"] in ("pearson", "listwise")
    assert {"learned", "all_heads", "first_head"} <= set(spec["training"])
    assert set(spec["training"]["learned"]["val"]) == {"all", "toy"}
    # the file round-trips through load_heads and drives attention_heads
    folder = tmp_path / "pkg" / "attribkit" / "data" / "heads"
    folder.mkdir(parents=True)
    (folder / "tiny.json").write_text(dumps_heads(spec), encoding="utf-8")
    (folder / "tiny.synthetic.json").write_text(
        dumps_heads({**spec, "heads": [[0, 0]], "weights": [1.0]}), encoding="utf-8"
    )
    import attribkit.methods.context.heads as heads_module

    monkeypatch.setattr(
        heads_module.resources, "files", lambda _pkg: tmp_path / "pkg" / "attribkit"
    )
    loaded = load_heads(tiny_lm)
    assert loaded["heads"] == spec["heads"] and loaded["weights"] == spec["weights"]
    assert heads_variants(tiny_lm) == ["synthetic"]
    task = ContextTask(tiny_lm, CASES[0]["context_passages"], CASES[0]["query"], response="Mat.")
    a = attention_heads(task)
    assert a.params["source"] == "file:tiny.json" and a.cost.forward_passes == 1
    s = attention_heads(task, heads="synthetic")
    assert s.params["source"] == "file:tiny.synthetic.json" and s.params["heads"] == [[0, 0]]
    with pytest.raises(InputError, match=r"no 'other' attention-head file.*synthetic"):
        attention_heads(task, heads="other")
    with pytest.raises(InputError, match="needs heads"):
        attention_heads(task, heads="synthetic", weights=[1.0])


def test_train_heads_bad_input(tiny_lm, tmp_path):
    with pytest.raises(InputError, match="needs cases"):
        train_heads(tiny_lm, [])
    with pytest.raises(InputError, match="no case file"):
        read_cases(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="lacks"):
        read_cases(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="no cases"):
        read_cases(empty)


def test_train_heads_command(tiny_lm, monkeypatch, tmp_path):
    monkeypatch.setattr(attribkit.models, "load", lambda name="smollm2", **kw: tiny_lm)
    data = tmp_path / "cases.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in CASES), encoding="utf-8")
    out = tmp_path / "tiny.json"
    args = ["train-heads", "--data", str(data), "--out", str(out), "--model", "tiny"]
    args += ["--cache", str(tmp_path / "cache"), "--n-heads", "2", "--steps", "10"]
    result = CliRunner().invoke(app, [*args, "--max-examples", "3"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr
    text = out.read_text(encoding="utf-8")
    assert text == dumps_heads(json.loads(text))
    spec = json.loads(text)
    assert len(spec["heads"]) == 2
    assert spec["selection"]["command"].startswith(
        f"attribkit train-heads --data {data} --out {out} --model tiny --cache {tmp_path / 'cache'} "
        "--max-examples 3"
    )
    bad = CliRunner().invoke(
        app, ["train-heads", "--data", str(tmp_path / "no.jsonl"), "--out", str(out)]
    )
    assert bad.exit_code == 2 and "no case file" in bad.stderr


# --------------------------------------------------------------------------- shipped files


def test_shipped_smollm2_files():
    learned = load_heads("smollm2")
    synthetic = load_heads("smollm2", variant="synthetic")
    for spec in (learned, synthetic):
        assert (spec["model"]["num_layers"], spec["model"]["num_heads"]) == (30, 9)
        assert len(spec["heads"]) == len(spec["weights"]) >= 1
        assert all(0 <= h[0] < 30 and 0 <= h[1] < 9 for h in spec["heads"])
        assert np.isclose(sum(spec["weights"]), 1.0) and min(spec["weights"]) > 0
    assert synthetic["selection"]["families"] == ["needle", "birthplace"]
    assert "synthetic" in heads_variants("smollm2")
    assert heads_path("smollm2", "synthetic").name == "smollm2.synthetic.json"
    assert heads_path("smollm2", "default").name == heads_path("smollm2").name == "smollm2.json"
    with pytest.raises(InputError, match="one word"):
        heads_path("smollm2", "a.b")
