"""Dataset runs: record validation and keys, local runs into a run store, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from attribkit import store as run_store
from attribkit.core.errors import InputError
from attribkit.dataset import read_records, run_dataset
from attribkit.dataset import runner as dataset_runner
from attribkit.models.loading import load


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


def write_records(path: Path, n: int, sentences: int = 4, start: int = 0) -> Path:
    """``n`` records with ``sentences`` context sentences and two-sentence responses."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(start, start + n):
            context = " ".join(
                f"Fact {j} of item {i} says the cat sat near the dog in the park."
                for j in range(sentences)
            )
            f.write(
                json.dumps(
                    {
                        "context": context,
                        "query": f"Where did the cat of item {i} sit?",
                        "response": f"The cat of item {i} sat in the park. The dog was near.",
                    }
                )
                + "\n"
            )
    return path


def test_tiny_dir_loads_by_path(tiny_dir: Path) -> None:
    lm = load(tiny_dir)
    assert lm.name == "tiny" and lm.max_positions == 512
    out = lm.token_logprobs(["Context: a. b.\n\nQuery: q"], "The answer.")
    assert np.isfinite(np.asarray(out[0])).all()


# ------------------------------------------------------------------------------------ records


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"context": "A. B.", "query": "q"', "not valid JSON"),
        ('{"context": "A. B."}', 'missing "query"'),
        ('{"context": "A. B.", "query": ""}', '"query" must be a non-empty string'),
        ('{"query": "q"}', 'missing "context"'),
        ('{"context": 3, "query": "q"}', '"context" must be a string or a list'),
        ('{"context": "A. B.", "query": "q", "respnse": "x"}', "unknown field(s) 'respnse'"),
        ('["context", "query"]', "must be a JSON object"),
        ('{"context": "A. B.", "query": "q", "id": 1}', "duplicate id 1 (already used on line 1)"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    good = '{"context": "A. B.", "query": "q", "id": 1}'
    path.write_text(f"{good}\n\n{line}\n{good.replace('1}', '2}')}\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_records(path)
    assert f"{path}:3: " in str(e.value)
    assert message in str(e.value)


def test_keys_by_id_or_content_stable_under_reordering(tmp_path: Path) -> None:
    lines = [
        {"context": "A. B.", "query": "q1"},
        {"context": ["P one.", "P two."], "query": "q2", "response": "R."},
        {"context": "A. B.", "query": "q1"},  # identical copy of the first
        {"context": "C. D.", "query": "q3", "id": 7},
        {"context": "A. B.", "query": "q1", "response": None},  # same content again
    ]
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    records = read_records(first)
    keys = [r.key for r in records]
    assert keys[3] == "7" and records[3].id == 7
    assert keys[2] == keys[0] + "#2" and keys[4] == keys[0] + "#3"
    assert re.fullmatch(r"[0-9a-f]{16}", keys[0]) and keys[1] != keys[0]
    assert [r.line for r in records] == [1, 2, 3, 4, 5]
    # Reordered, with a new line inserted first: every record keeps its key.
    second = tmp_path / "b.jsonl"
    reordered = [{"context": "New. Text.", "query": "q0"}, lines[3], lines[1], lines[0]]
    second.write_text("\n".join(json.dumps(x) for x in reordered), encoding="utf-8")
    again = {(r.query, r.id): r.key for r in read_records(second)}
    assert again[("q1", None)] == keys[0]
    assert again[("q2", None)] == keys[1]
    assert again[("q3", 7)] == "7"


def test_everything_is_validated_before_any_model_work(tmp_path: Path) -> None:
    data = write_records(tmp_path / "d.jsonl", 3)
    with data.open("a") as f:
        f.write('{"context": "A. B.", "query": 5}\n')
    db = tmp_path / "runs.db"
    # The model path does not exist: the bad line must be reported before any loading.
    with pytest.raises(InputError, match=r"d\.jsonl:4: \"query\" must be"):
        run_dataset(data, db, model=tmp_path / "no-model", method="loo", progress=False)
    assert not db.exists()


def test_unknown_task_backend_units_and_loaded_model_for_ray(tmp_path: Path, tiny_dir: Path):
    data = write_records(tmp_path / "d.jsonl", 1)
    db = tmp_path / "runs.db"
    with pytest.raises(InputError, match="unknown task 'qa'; choose one of: context"):
        run_dataset(data, db, task="qa", progress=False)
    with pytest.raises(InputError, match="unknown backend 'spark'; choose one of: local, ray"):
        run_dataset(data, db, backend="spark", progress=False)
    with pytest.raises(InputError, match="unknown units"):
        run_dataset(data, db, units="words", progress=False)
    with pytest.raises(InputError, match="unknown method 'nope'"):
        run_dataset(data, db, method="nope", progress=False)
    with pytest.raises(InputError, match=r"pass a model name .* instead of a loaded LanguageModel"):
        run_dataset(data, db, model=load(tiny_dir), backend="ray", progress=False)
    assert not db.exists()


# ------------------------------------------------------------------------------------ local runs


def test_local_run_stores_each_record_once_with_spans_then_skips(tmp_path: Path, tiny_dir: Path):
    data = write_records(tmp_path / "d.jsonl", 5)
    with data.open("a") as f:  # a one-sentence response: no span results
        f.write(json.dumps({"context": "A cat. A dog. A bird.", "query": "q", "response": "Cat."}))
        f.write("\n")
    db = tmp_path / "runs.db"
    seen: list[tuple[int, int]] = []
    summary = run_dataset(
        data,
        db,
        model=str(tiny_dir),
        method="loo",
        progress=lambda s: seen.append((s.stored, s.done)),
    )
    assert (summary.total, summary.stored, summary.skipped, summary.failed) == (6, 6, 0, [])
    assert summary.dataset == "d.jsonl" and summary.method == "loo"
    # loo: n + 1 passes over each record (4 sentences -> 5; 3 -> 4); span results are cached.
    assert summary.model_calls == 5 * 5 + 4
    assert seen == [(i, i) for i in range(1, 7)]
    assert "6 records: 6 stored, 0 skipped" in summary.describe()
    records = read_records(data)
    with run_store.open(db) as runs:
        stored = runs.query(dataset="d.jsonl")
        assert sorted(r.key for r in stored) == sorted(r.key for r in records)
        assert runs.done_keys("d.jsonl", "loo") == {r.key for r in records}
        for run in stored:
            record = next(r for r in records if r.key == run.key)
            assert run.tags == {"line": record.line, "source": "d.jsonl"}
            assert run.inputs["query"] == record.query and run.inputs["id"] is None
            assert run.model == "tiny" and run.method == "loo"
            a = run.attribution
            assert len(a.units) == (3 if record.response == "Cat." else 4)
            assert np.isfinite(a.vector).all()
            children = runs.spans(run.id)
            if record.response == "Cat.":
                assert children == []
            else:
                assert [c.attribution.target["span_text"] for c in children] == [
                    record.response.split(" The")[0],
                    "The dog was near.",
                ]
    again = run_dataset(data, db, model=str(tiny_dir), method="loo", progress=False)
    assert (again.stored, again.skipped, again.failed, again.model_calls) == (0, 6, [], 0)
    with run_store.open(db) as runs:
        assert len(runs) == 6


def test_record_errors_are_reported_and_the_run_goes_on(tmp_path: Path, tiny_dir: Path):
    data = write_records(tmp_path / "d.jsonl", 2)
    long = " ".join(f"Sentence {j} is long enough to fill the small window." for j in range(60))
    with data.open("a") as f:
        f.write(json.dumps({"context": long, "query": "q", "response": "R.", "id": "big"}) + "\n")
    lm = load(tiny_dir)  # a loaded model is accepted by the local backend
    db = tmp_path / "runs.db"
    summary = run_dataset(data, db, model=lm, method="loo", spans=False, progress=True)
    assert summary.stored == 2 and [k for k, _ in summary.failed] == ["big"]
    message = summary.failed[0][1]
    assert message.startswith("line 3: ") and "window is 512" in message
    assert "1 failed" in summary.describe() and "big: line 3" in summary.describe()
    # A rerun retries only the failed record.
    again = run_dataset(data, db, model=lm, method="loo", spans=False, progress=False)
    assert (again.stored, again.skipped, len(again.failed)) == (0, 2, 1)


def test_other_errors_propagate_and_a_task_is_one_function(
    tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def flaky(lm, record, *, method, units, spans, params):
        calls.append(record.key)
        if len(calls) == 2:
            raise RuntimeError("worker crashed")
        return dataset_runner._context_record(
            lm, record, method=method, units=units, spans=spans, params=params
        )

    task = dataset_runner.DatasetTask("flaky", flaky, "loo")
    monkeypatch.setitem(dataset_runner.TASKS, "flaky", task)
    data = write_records(tmp_path / "d.jsonl", 3)
    db = tmp_path / "runs.db"
    with pytest.raises(RuntimeError, match="worker crashed"):
        run_dataset(data, db, task="flaky", model=str(tiny_dir), progress=False)
    with run_store.open(db) as runs:
        assert len(runs) == 1  # the record finished before the crash was kept
    summary = run_dataset(data, db, task="flaky", model=str(tiny_dir), progress=False)
    assert (summary.stored, summary.skipped) == (2, 1)


# ------------------------------------------------------------------------------------ resume


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return int(con.execute("SELECT COUNT(*) FROM runs WHERE parent IS NULL").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path, tiny_dir: Path) -> None:
    n = 40
    data = write_records(tmp_path / "d.jsonl", n, sentences=6)  # 7 passes per record
    db = tmp_path / "runs.db"
    cmd = [
        sys.executable,
        "-m",
        "attribkit.cli",
        "run-dataset",
        "--input",
        str(data),
        "--store",
        str(db),
        "--model",
        str(tiny_dir),
        "--method",
        "loo",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while _count(db) < 1:
            assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no record was stored within 120 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _count(db)
    assert 1 <= killed_at < n, f"the kill did not land mid-way ({killed_at} of {n} stored)"

    # Restart to completion (in this process, through the function the command calls: a second
    # interpreter start would add ~10 s on this machine).
    summary = run_dataset(data, db, model=str(tiny_dir), method="loo", progress=False)
    assert (summary.stored, summary.skipped, summary.failed) == (n - killed_at, killed_at, [])

    keys = {r.key for r in read_records(data)}
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        per_key = dict(
            con.execute(
                "SELECT record_key, COUNT(*) FROM runs WHERE parent IS NULL GROUP BY record_key"
            ).fetchall()
        )
        spans = con.execute(
            "SELECT p.record_key, COUNT(c.id) FROM runs p LEFT JOIN runs c ON c.parent = p.id "
            "WHERE p.parent IS NULL GROUP BY p.id"
        ).fetchall()
        orphans = con.execute(
            "SELECT COUNT(*) FROM runs WHERE parent IS NOT NULL "
            "AND parent NOT IN (SELECT id FROM runs WHERE parent IS NULL)"
        ).fetchone()[0]
    assert set(per_key) == keys and set(per_key.values()) == {1}
    assert {k: c for k, c in spans} == dict.fromkeys(keys, 2)  # both response sentences, once
    assert orphans == 0
