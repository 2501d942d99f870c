"""Dataset runs of every task kind: generation and image record schemas, per-task defaults and
errors, resume after SIGKILL (each record stored once), and the Ray backend for images."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attribkit import store as run_store
from attribkit.core.errors import InputError
from attribkit.core.png import png_bytes
from attribkit.dataset import read_records, run_dataset
from attribkit.dataset.runner import TASKS
from attribkit.testing import tiny_language_model

GENERATION = [
    {"prompt": "the cat sat on the mat", "response": "the cat"},
    {"prompt": "where did the dog run?", "response": "in the park", "id": "dog"},
    {"prompt": "Alice went to the market", "response": "she bought apples"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_png(path: Path, seed: int = 0, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    path.write_bytes(png_bytes((rng.random((size, size, 3)) * 255).astype(np.uint8)))
    return path


def image_rows(folder: Path) -> list[dict]:
    """Three image records: a relative file path, a file with a class index, a bundled photo."""
    write_png(folder / "imgs" / "a.png", 0)
    write_png(folder / "imgs" / "b.png", 1)
    return [
        {"image": "imgs/a.png"},
        {"image": "imgs/b.png", "target": 281},
        {"image": "skimage:chelsea", "target": "tabby", "id": "cat"},
    ]


# ------------------------------------------------------------------------------------ records


def test_generation_records_and_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [*GENERATION, {"prompt": "no response given"}])
    records = read_records(path, "generation")
    assert [r.task for r in records] == ["generation"] * 4
    assert records[1].key == "dog" and records[3].response is None
    body = {"prompt": "the cat sat on the mat", "response": "the cat"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert records[0].key == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert records[0].inputs() == {**body, "id": None}
    # Reordered, a line inserted: the keys stay.
    again = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "new"}, GENERATION[2], GENERATION[0]])
    keys = {r.prompt: r.key for r in read_records(again, "generation")}
    assert keys[GENERATION[0]["prompt"]] == records[0].key
    assert keys[GENERATION[2]["prompt"]] == records[2].key


def test_context_keys_are_unchanged() -> None:
    """A context record's content key is what earlier releases wrote (stores resume)."""
    from attribkit.dataset.records import content_key

    body = {"context": ["P one.", "P two."], "query": "q2", "response": "R."}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert content_key(("P one.", "P two."), "q2", "R.") == expected
    assert content_key("A.", "q", None) != content_key("A.", "q", "R.")


def test_image_records_resolve_paths_against_the_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data" / "i.jsonl", image_rows(tmp_path / "data"))
    records = read_records(path, "image")
    assert records[0].image == "imgs/a.png"
    assert records[0].image_path == str((tmp_path / "data" / "imgs" / "a.png").resolve())
    assert records[1].target == 281 and records[2].target == "tabby" and records[2].key == "cat"
    assert records[2].image_path == "skimage:chelsea"
    assert records[1].inputs() == {"image": "imgs/b.png", "target": 281, "id": None}
    # the key hashes the record as written, wherever it is read from
    elsewhere = tmp_path / "other" / "i.jsonl"
    elsewhere.parent.mkdir()
    elsewhere.write_text(path.read_text())
    (tmp_path / "other" / "imgs").symlink_to(tmp_path / "data" / "imgs")
    assert [r.key for r in read_records(elsewhere, "image")] == [r.key for r in records]


@pytest.mark.parametrize(
    ("task", "line", "message"),
    [
        ("generation", '{"response": "x"}', 'missing "prompt"'),
        ("generation", '{"prompt": "  "}', '"prompt" must be a non-empty string'),
        ("generation", '{"prompt": "p", "response": ""}', '"response" must be a non-empty'),
        (
            "generation",
            '{"context": "A.", "query": "q"}',
            "a generation record has only prompt, response, id "
            "(check the spelling, or remove the field); this looks like a context record: "
            "run with --task context",
        ),
        ("generation", '"just text"', 'a record must be a JSON object, got str; write {"prompt"'),
        ("image", '{"target": 3}', 'missing "image"'),
        ("image", '{"image": "missing.png"}', "no image file at "),
        ("image", '{"image": "skimage:nope"}', "scikit-image has no sample image 'nope'"),
        ("image", '{"image": "skimage:chelsea", "target": 1.5}', '"target" must be a class index'),
        ("image", '{"image": "skimage:chelsea", "target": true}', '"target" must be a class index'),
        ("image", '{"image": "skimage:chelsea", "target": -1}', "class index >= 0, got -1"),
        ("image", '{"image": "skimage:chelsea", "label": 1}', "unknown field(s) 'label'"),
        (
            "context",
            '{"prompt": "p", "response": "r"}',
            "this looks like a generation record: run with --task generation",
        ),
        ("context", '{"image": "a.png"}', "run with --task image"),
    ],
)
def test_bad_lines_name_file_line_and_fix(tmp_path: Path, task: str, line: str, message: str):
    path = tmp_path / "d.jsonl"
    good = {"generation": '{"prompt": "p"}', "image": '{"image": "skimage:coffee"}'}
    first = good.get(task, '{"context": "A. B.", "query": "q"}')
    path.write_text(f"{first}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_records(path, task)
    assert f"{path}:3: " in str(e.value)
    assert message in str(e.value)


def test_missing_image_names_the_folder(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "i.jsonl", [{"image": "pics/x.png"}])
    with pytest.raises(InputError) as e:
        read_records(path, "image")
    assert str((tmp_path / "pics" / "x.png").resolve()) in str(e.value)
    assert f"dataset's folder {tmp_path.resolve()}" in str(e.value)


# ------------------------------------------------------------------------------------ options


def test_per_task_defaults_and_method_errors(tmp_path: Path) -> None:
    assert TASKS["generation"].default_method == "integrated_gradients"
    assert TASKS["image"].default_method == "grad_cam"
    assert TASKS["image"].default_model == "efficientnet-lite0"
    assert TASKS["generation"].default_model == TASKS["context"].default_model == "smollm2"
    gen = write_jsonl(tmp_path / "g.jsonl", GENERATION)
    db = tmp_path / "runs.db"
    with pytest.raises(InputError) as e:
        run_dataset(gen, db, task="generation", method="loo", progress=False)
    text = str(e.value)
    assert "unknown method 'loo' for --task generation; choose one of: " in text
    assert "integrated_gradients" in text and "reagent" in text and "kernel_shap" not in text
    img = write_jsonl(tmp_path / "i.jsonl", [{"image": "skimage:coffee"}])
    with pytest.raises(InputError) as e:
        run_dataset(img, db, task="image", method="contextcite", progress=False)
    assert "grad_cam" in str(e.value) and "kernel_shap" in str(e.value)
    assert "contextcite" not in str(e.value).split("choose one of:")[1]
    with pytest.raises(InputError, match="unknown units 'sentences' for --task image"):
        run_dataset(img, db, task="image", units="sentences", progress=False)
    with pytest.raises(InputError, match="choose one of: context, generation, image"):
        run_dataset(img, db, task="audio", progress=False)
    # a model of the wrong kind is refused before any record runs
    with pytest.raises(InputError, match="--task image needs an image classifier"):
        run_dataset(img, db, task="image", model=tiny_language_model(), progress=False)
    assert not db.exists()


def test_language_model_for_images_is_refused_after_loading(tmp_path, tiny_model_dir):
    img = write_jsonl(tmp_path / "i.jsonl", [{"image": "skimage:coffee"}])
    with pytest.raises(InputError, match=r"needs an image classifier.*efficientnet-lite0"):
        run_dataset(img, tmp_path / "r.db", task="image", model=tiny_model_dir, progress=False)
    gen = write_jsonl(tmp_path / "g.jsonl", GENERATION)
    with pytest.raises(InputError, match="--task generation needs a language model"):
        run_dataset(
            gen, tmp_path / "r.db", task="generation", model="efficientnet-lite0", progress=False
        )


# ------------------------------------------------------------------------------------ local runs


def test_generation_run_stores_token_maps(tmp_path: Path) -> None:
    lm = tiny_language_model()
    gen = write_jsonl(tmp_path / "g.jsonl", GENERATION)
    db = tmp_path / "runs.db"
    before = lm.cost.model_calls
    summary = run_dataset(gen, db, task="generation", model=lm, method="occlusion", progress=False)
    assert (summary.stored, summary.task, summary.method) == (3, "generation", "occlusion")
    assert summary.failed == [] and summary.model_calls == lm.cost.model_calls - before > 0
    assert "(generation task)" in summary.describe()
    with run_store.open(db) as runs:
        stored = {r.key: r for r in runs.query(dataset="g.jsonl")}
        run = stored["dog"]
        assert (run.task, run.model, run.method) == ("generation", "tiny", "occlusion")
        assert run.inputs == {**GENERATION[1], "id": "dog"}
        a = run.attribution
        assert a.task == "generation" and a.scores.ndim == 2
        assert a.target["row_labels"] and runs.spans(run.id) == []


def test_image_run_stores_maps_and_counts_the_target_pass(tmp_path: Path, lite0) -> None:
    img = write_jsonl(
        tmp_path / "i.jsonl",
        [*image_rows(tmp_path), {"image": "imgs/a.png", "target": "no such class"}],
    )
    db = tmp_path / "runs.db"
    summary = run_dataset(img, db, task="image", model=lite0, progress=False)
    assert (summary.stored, summary.method, summary.task) == (3, "grad_cam", "image")
    assert len(summary.failed) == 1 and "line 4: " in summary.failed[0][1]
    # grad_cam: 1 forward + 1 backward per record; the predicted class of record 1 one more
    assert summary.model_calls == 3 * 2 + 1
    with run_store.open(db) as runs:
        by_key = {r.key: r for r in runs.query(dataset="i.jsonl")}
        cat = by_key["cat"]
        assert (cat.task, cat.model, cat.method) == ("image", "efficientnet-lite0", "grad_cam")
        assert cat.inputs == {"image": "skimage:chelsea", "target": "tabby", "id": "cat"}
        a = cat.attribution
        assert a.task == "image" and a.heatmap.shape == (224, 224)
        assert a.target["label"] == "tabby" and a.target["class"] == 281
        assert a.input["image_png"].startswith("data:image/png;base64,")
    again = run_dataset(img, db, task="image", model=lite0, progress=False)
    assert (again.stored, again.skipped, again.model_calls) == (0, 3, 0)


# ------------------------------------------------------------------------------------ resume

KILL_AFTER_FIRST = """
import os, signal, sys
from attribkit.dataset import runner
write = runner._write
def write_then_die(store, dataset, record, outcome, summary):
    write(store, dataset, record, outcome, summary)
    if summary.stored == 1:  # the first record is committed: die before the second is stored
        os.kill(os.getpid(), signal.SIGKILL)
runner._write = write_then_die
from attribkit.cli import app
app(sys.argv[1:], prog_name="attribkit")
"""


def _stored(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(
            con.execute(
                "SELECT record_key, COUNT(*) FROM runs WHERE parent IS NULL GROUP BY record_key"
            ).fetchall()
        )


@pytest.mark.parametrize("task", ["generation", "image"])
def test_killed_run_resumes_and_stores_each_record_once(tmp_path, task, tiny_model_dir):
    if task == "generation":
        data, model = write_jsonl(tmp_path / "d.jsonl", GENERATION), str(tiny_model_dir)
        extra = ["--model", model]
    else:
        data, model = write_jsonl(tmp_path / "d.jsonl", image_rows(tmp_path)), None
        extra = []  # the default model for images: efficientnet-lite0
    db = tmp_path / "runs.db"
    cmd = [sys.executable, "-c", KILL_AFTER_FIRST, "run-dataset", "--task", task]
    cmd += ["--input", str(data), "--store", str(db), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    first = _stored(db)
    assert list(first.values()) == [1]

    summary = run_dataset(data, db, task=task, model=model, progress=False)
    assert (summary.stored, summary.skipped, summary.failed) == (2, 1, [])
    assert summary.method == TASKS[task].default_method
    keys = {r.key for r in read_records(data, task)}
    assert _stored(db) == dict.fromkeys(keys, 1)
    with run_store.open(db) as runs:
        assert {r.task for r in runs.query()} == {task}
        assert {r.attribution.task for r in runs.query()} == {task}
    again = run_dataset(data, db, task=task, model=model, progress=False)
    assert (again.stored, again.skipped) == (0, 3)
