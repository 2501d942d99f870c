"""The run store: transactional writes, queries, JSONL round trips, versions, concurrent writers."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest

from attribkit import store
from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError, StoreError
from attribkit.core.png import png_bytes
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits, ImageUnits
from attribkit.tasks.context import ContextTask

WEIGHTS = np.array([1.0, -2.0, 0.5, 3.0])


def feature_attribution(method: str = "loo", seed: int = 0) -> Attribution:
    units = FeatureUnits([1.0, 1.0, 1.0, 1.0], names=["a", "b", "c", "d"])
    scorer = Scorer(units, lambda xs: np.asarray(xs) @ WEIGHTS, target="linear score")
    return attribute(scorer, method, **({"seed": seed} if method != "loo" else {}))


def test_put_get_roundtrip(tmp_path: Path) -> None:
    a = feature_attribution()
    with store.open(tmp_path / "runs.db") as runs:
        run_id = runs.put(a, inputs={"x": np.ones(4)}, model="linear", tags={"note": "t"})
        run = runs.get(run_id[:8])  # a unique prefix is enough
        assert (run.task, run.model, run.method) == ("features", "linear", "loo")
        assert run.inputs == {"x": [1.0, 1.0, 1.0, 1.0]} and run.tags == {"note": "t"}
        np.testing.assert_allclose(
            run.attribution.vector, WEIGHTS
        )  # LOO is exact on a linear model
        assert run.cost.forward_passes == a.cost.forward_passes
        assert len(runs) == 1
        with pytest.raises(StoreError, match="no run"):
            runs.get("nope")


def test_query_filters_and_order(tmp_path: Path) -> None:
    with store.open(tmp_path / "runs.db") as runs:
        first = runs.put(feature_attribution("loo"), model="m1")
        second = runs.put(feature_attribution("kernel_shap"), model="m2")
        assert [r.id for r in runs.query()] == [second, first]  # newest first
        assert [r.id for r in runs.query(method="loo")] == [first]
        assert [r.id for r in runs.query(model="m2", task="features")] == [second]
        assert runs.query(task="image") == []
        future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        assert runs.query(since=future) == []
        assert len(runs.query(until=future.isoformat())) == 2
        assert len(runs.query(limit=1)) == 1


def test_dataset_records_are_unique(tmp_path: Path) -> None:
    a = feature_attribution()
    with store.open(tmp_path / "runs.db") as runs:
        run_id = runs.put(a, dataset="d", key="r1")
        with pytest.raises(StoreError, match="already stored"):
            runs.put(a, dataset="d", key="r1")
        assert runs.put(a, dataset="d", key="r1", if_exists="skip") == run_id
        runs.put(feature_attribution("kernel_shap"), dataset="d", key="r1")  # other method
        assert runs.done_keys("d", "loo") == {"r1"}
        assert len(runs) == 2
        with pytest.raises(InputError, match="both dataset"):
            runs.put(a, dataset="d")


def test_span_results_stored_with_their_run(tmp_path: Path, tiny_lm) -> None:
    task = ContextTask(
        tiny_lm,
        "Ada lives in Oslo. Ben likes tea. The sky is blue.",
        "Where does Ada live?",
        "Ada lives in Oslo. She likes tea.",
    )
    whole = task.attribute("loo")
    spans = task.attribute_spans("loo")
    assert [s.target["span_text"] for s in spans] == ["Ada lives in Oslo.", "She likes tea."]
    assert sum(s.cost.forward_passes for s in spans) == 0  # same masks: answered from the cache
    with store.open(tmp_path / "runs.db") as runs:
        run_id = runs.put(whole, spans=spans)
        run = runs.get(run_id)
        assert run.task == "context" and run.model == "tiny"
        stored = runs.spans(run_id)
        assert [s.span for s in stored] == [(0, 18), (19, 33)]
        found = runs.find_span(run_id, 19, 33)
        assert found is not None
        np.testing.assert_allclose(found.attribution.vector, spans[1].vector)
        assert runs.find_span(run_id, 0, 5) is None
        assert len(runs) == 1 and len(runs.query(spans=True)) == 3
        runs.delete(run_id)  # deletes its spans too
        assert runs.query(spans=True) == []


def test_failed_write_stores_nothing(tmp_path: Path) -> None:
    """A record and its spans are one transaction: an invalid span result aborts all of it."""
    with store.open(tmp_path / "runs.db") as runs:
        with pytest.raises(InputError, match="span"):
            runs.put(feature_attribution(), spans=[feature_attribution()])
        assert len(runs) == 0 and runs.query(spans=True) == []


def test_jsonl_export_import_roundtrip(tmp_path: Path, tiny_lm) -> None:
    task = ContextTask(tiny_lm, "One fact here. Another fact there.", "What?", "A fact. More.")
    whole = task.attribute("loo")
    with store.open(tmp_path / "a.db") as a:
        run_id = a.put(whole, spans=task.attribute_spans("loo"), model="tiny")
        a.put(feature_attribution(), dataset="d", key="k")
        assert a.export_jsonl(tmp_path / "out.jsonl") == 4
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert all(json.loads(line)["format"] == "attribkit.run" for line in lines)
    with store.open(tmp_path / "b.db") as b:
        assert b.import_jsonl(tmp_path / "out.jsonl") == 4
        assert b.import_jsonl(tmp_path / "out.jsonl") == 0  # already there: skipped
        assert len(b.spans(run_id)) == 2
        assert (
            b.get(run_id).attribution.to_dict()["scores"]
            == (store.open(tmp_path / "a.db").get(run_id).attribution.to_dict()["scores"])
        )
    (tmp_path / "bad.jsonl").write_text('{"format": "something else"}\n')
    with store.open(tmp_path / "b.db") as b, pytest.raises(InputError, match=r"bad\.jsonl:1"):
        b.import_jsonl(tmp_path / "bad.jsonl")


def test_schema_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=r"schema version 99.*reads version 1.*upgrade attribkit"):
        store.open(path)


def test_not_a_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("my precious notes\n" * 100)
    with pytest.raises(StoreError, match="not an attribkit run store"):
        store.open(text)
    assert text.read_text() == "my precious notes\n" * 100  # nothing a user saved is lost
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE customers (name TEXT)")
    with pytest.raises(StoreError, match="not an attribkit run store"):
        store.open(other)
    with pytest.raises(StoreError, match="directory"):
        store.open(tmp_path)


def _writer(path: str, name: str, n: int) -> None:
    with store.open(path) as runs:
        for i in range(n):
            runs.put(feature_attribution(), dataset=name, key=str(i))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, name, 60)) for name in ("w1", "w2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with store.open(path) as runs:
        assert (
            runs.done_keys("w1", "loo")
            == runs.done_keys("w2", "loo")
            == {str(i) for i in range(60)}
        )
        assert len(runs) == 120
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_image_inputs_are_stored_as_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((8, 12, 3))
    units = ImageUnits.grid(image, patch=4, baseline="zero")
    scorer = Scorer(units, lambda xs: np.asarray(xs).reshape(len(xs), -1).mean(1))
    with store.open(tmp_path / "runs.db") as runs:
        run = runs.get(runs.put(attribute(scorer, "loo"), inputs={"image": image}))
    assert run.task == "image" and run.inputs["image_shape"] == [8, 12, 3]
    assert run.inputs["image_png"].startswith("data:image/png;base64,")


def test_png_encoder_writes_decodable_pixels() -> None:
    image = (np.arange(2 * 3 * 3).reshape(2, 3, 3) * 9).astype(np.uint8)
    data = png_bytes(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat = data[data.index(b"IDAT") + 4 :]
    raw = zlib.decompress(
        idat[: int.from_bytes(data[data.index(b"IDAT") - 4 : data.index(b"IDAT")])]
    )
    rows = [raw[i * 10 + 1 : (i + 1) * 10] for i in range(2)]  # filter byte + 3 px × 3 channels
    assert np.array_equal(np.frombuffer(b"".join(rows), np.uint8).reshape(2, 3, 3), image)
    with pytest.raises(InputError, match="image"):
        png_bytes(np.zeros((2, 2, 5)))


def test_generation_and_image_runs_keep_their_task_kind(tmp_path: Path, tiny_lm) -> None:
    """A generation and an image Attribution come back from the store (and through a JSONL
    export) with their task kind, rows × columns scores and image map."""
    from attribkit.testing import toy_generation_task, toy_image_task

    gen = attribute(toy_generation_task(lm=tiny_lm), "occlusion")
    img = attribute(toy_image_task(), "grad_cam")
    assert np.isnan(gen.scores).any()  # tokens a row cannot see
    with store.open(tmp_path / "runs.db") as runs:
        ids = {"generation": runs.put(gen), "image": runs.put(img)}
        for kind, a in (("generation", gen), ("image", img)):
            run = runs.get(ids[kind])
            assert run.task == run.task_kind == kind
            assert [r.id for r in runs.query(task=kind)] == [ids[kind]]
            b = run.attribution
            assert b.task == kind and b.target == a.target
            np.testing.assert_array_equal(b.scores, a.scores)
            np.testing.assert_array_equal(b.vector, a.vector)
        assert run.attribution.heatmap.shape == img.heatmap.shape
        np.testing.assert_array_equal(run.attribution.heatmap, img.heatmap)
        assert runs.get(ids["generation"]).summary()["target"] == gen.target["response"]
        assert runs.get(ids["image"]).summary()["target"] == f"class {img.target['class']}"
        runs.export_jsonl(tmp_path / "runs.jsonl")
    with store.open(tmp_path / "copy.db") as copy:
        assert copy.import_jsonl(tmp_path / "runs.jsonl") == 2
        assert {r.task: r.attribution.task for r in copy.query()} == {
            "generation": "generation",
            "image": "image",
        }
