"""run-dataset --task reasoning: record schema (text or problem folder), each record stored
once, a rerun skips them, a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from attribkit import store as run_store
from attribkit.core.errors import InputError
from attribkit.dataset import read_records, run_dataset
from attribkit.testing import tiny_language_model

TEXT = "First I add two and three. That gives five. So the answer is five."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_problem_folder(folder: Path) -> Path:
    """A minimal Thought Anchors problem folder with labelled chunks."""
    folder.mkdir(parents=True)
    (folder / "problem.json").write_text(
        json.dumps({"problem": "What is 3 * 4?", "gt_answer": "12"}), encoding="utf-8"
    )
    cot = "<think>\nThree times four is twelve. I double check it. Yes, twelve.\n</think> 12"
    (folder / "base_solution.json").write_text(json.dumps({"full_cot": cot}), encoding="utf-8")
    chunks = ["Three times four is twelve.", "I double check it.", "Yes, twelve."]
    labeled = [{"chunk": c, "counterfactual_importance_kl": i} for i, c in enumerate(chunks)]
    (folder / "chunks_labeled.json").write_text(json.dumps(labeled), encoding="utf-8")
    return folder


def rows(tmp_path: Path) -> list[dict]:
    write_problem_folder(tmp_path / "ta" / "problem_1")
    return [
        {"problem": "What is 2 + 3?", "text": TEXT, "answer": "5"},
        {"problem": "What is 2 + 3?", "text": TEXT, "answer": "five", "id": "words"},
        {"folder": "ta/problem_1"},
    ]


def test_reasoning_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", rows(tmp_path))
    records = read_records(path, "reasoning")
    assert [r.task for r in records] == ["reasoning"] * 3
    assert records[1].key == "words" and records[0].key != records[2].key
    assert records[2].folder_path == str((tmp_path / "ta" / "problem_1").resolve())
    assert records[0].inputs() == {"problem": "What is 2 + 3?", "text": TEXT, "answer": "5"} | {
        "id": None
    }
    bad = {
        '{"text": "x y z. a b c."}': 'missing "problem"',
        '{"problem": "p", "text": "Some text.", "folder": "ta/problem_1"}': "either",
        '{"folder": "nowhere"}': "no folder at",
        '{"problem": "p", "text": "Some reasoning here."}': "no answer",
        '{"problem": "p", "text": "Some text.", "answer": "a", "chunks": ["zzz"]}': "chunk 0",
        '{"problem": "p", "text": "Some text.", "answer": "a", "query": "q"}': "unknown field",
    }
    for line, message in bad.items():
        (tmp_path / "bad.jsonl").write_text(line + "\n", encoding="utf-8")
        with pytest.raises(InputError, match=message) as err:
            read_records(tmp_path / "bad.jsonl", "reasoning")
        assert "bad.jsonl:1" in str(err.value)


def test_reasoning_run_stores_each_record_once_and_resumes(tmp_path: Path) -> None:
    lm = tiny_language_model()
    data = write_jsonl(tmp_path / "r.jsonl", rows(tmp_path))
    db = tmp_path / "runs.db"
    summary = run_dataset(data, db, task="reasoning", model=lm, progress=False)
    assert (summary.stored, summary.task, summary.method) == (3, "reasoning", "forced_answer")
    assert summary.failed == [] and summary.model_calls == 3 * 4  # N + 1 passes, N = 3
    assert "(reasoning task)" in summary.describe()
    with run_store.open(db) as runs:
        stored = {r.key: r for r in runs.query(dataset="r.jsonl")}
        assert len(stored) == 3
        run = stored["words"]
        assert (run.task, run.method) == ("reasoning", "forced_answer")
        assert run.inputs["answer"] == "five" and run.inputs["text"] == TEXT
        a = run.attribution
        assert a.task == "reasoning" and a.target["answer"] == "five" and len(a.units) == 3
        folder_run = next(r for r in stored.values() if r.inputs.get("folder"))
        assert folder_run.inputs["answer"] == "12"
        assert folder_run.inputs["problem"] == "What is 3 * 4?"
        assert [u.label for u in folder_run.attribution.units][1] == "I double check it."
    again = run_dataset(data, db, task="reasoning", model=lm, progress=False)
    assert (again.stored, again.skipped, again.model_calls) == (0, 3, 0)
    # another method: stored beside the first
    loo = run_dataset(data, db, task="reasoning", model=lm, method="loo", progress=False)
    assert (loo.stored, loo.skipped) == (3, 0)
    with pytest.raises(InputError, match="unknown method"):
        run_dataset(data, db, task="reasoning", model=lm, method="grad_cam", progress=False)


KILL_AFTER_FIRST = """
import os, signal, sys
from attribkit.dataset import runner
write = runner._write
def write_then_die(store, dataset, record, outcome, summary):
    write(store, dataset, record, outcome, summary)
    if summary.stored == 1:
        os.kill(os.getpid(), signal.SIGKILL)
runner._write = write_then_die
from attribkit.cli import app
app(sys.argv[1:], prog_name="attribkit")
"""


def test_killed_reasoning_run_resumes(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "r.jsonl", rows(tmp_path))
    db = tmp_path / "runs.db"
    cmd = [sys.executable, "-c", KILL_AFTER_FIRST, "run-dataset", "--task", "reasoning"]
    cmd += ["--input", str(data), "--store", str(db), "--model", str(tiny_model_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with run_store.open(db) as runs:
        assert len(runs.query()) == 1
    summary = run_dataset(data, db, task="reasoning", model=str(tiny_model_dir), progress=False)
    assert (summary.stored, summary.skipped, summary.failed) == (2, 1, [])
    with run_store.open(db) as runs:
        keys = sorted(r.key for r in runs.query())
    assert keys == sorted(r.key for r in read_records(data, "reasoning"))
