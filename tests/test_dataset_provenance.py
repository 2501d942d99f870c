"""run-dataset --task provenance and --task machine_text: record schemas, every input checked
before any model work, the source model fitted once per run from a folder of known authors,
results in the store (listed by `attribkit runs`, drawn by the viewer), a rerun skips them, a
killed run resumes. Generated authors and an n-gram LM or the tiny model only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attribkit import store as run_store
from attribkit.cli import app
from attribkit.core.errors import InputError
from attribkit.dataset import read_records, run_dataset
from attribkit.dataset.runner import FittedSource
from attribkit.models.authorship import open_set_authorship
from attribkit.models.ngram import NGramLM

cli = CliRunner()
_A = ["whilst", "upon", "thereby", "hence", "moreover"]
_B = ["while", "on", "so", "thus", "also"]
_COMMON = ["the", "people", "state", "power", "union", "law", "government", "of", "and"]
FOREIGN = "Zebras quickly jump over lazy foxes in Kyoto while seven drums echo."


def _text(words: list[str], rng: np.random.Generator, n: int = 4) -> str:
    return " ".join(
        " ".join(rng.choice(_COMMON + words + words, size=8)).capitalize() + "." for _ in range(n)
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two generated authors, alice and bob, six texts each."""
    root = tmp_path_factory.mktemp("known")
    rng = np.random.default_rng(0)
    for author, words in (("alice", _A), ("bob", _B)):
        (root / author).mkdir()
        for i in range(6):
            (root / author / f"{i}.txt").write_text(_text(words, rng, 6), encoding="utf-8")
    return root


def rows() -> list[dict]:
    rng = np.random.default_rng(1)
    return [
        {"text": _text(_A, rng), "source": "alice", "id": "a1"},
        {"text": _text(_B, rng), "source": "bob"},
        {"text": FOREIGN, "source": "carol"},  # by none of the known authors; one sentence
        {"text": _text(_B, rng)},  # no true source given
    ]


def test_provenance_and_machine_text_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", rows())
    records = read_records(path, "provenance")
    assert [r.task for r in records] == ["provenance"] * 4 and records[0].key == "a1"
    assert records[0].inputs() == {"text": rows()[0]["text"], "source": "alice", "id": "a1"}
    assert records[3].true_source is None
    # the content key hashes the text only: adding or fixing a source keeps stored results
    relabelled = [{**r, "source": "someone"} for r in rows()[1:]]
    again = read_records(write_jsonl(tmp_path / "q.jsonl", relabelled), "provenance")
    assert [r.key for r in again] == [r.key for r in records[1:]]
    texts = read_records(write_jsonl(tmp_path / "m.jsonl", [{"text": FOREIGN}]), "machine_text")
    assert texts[0].inputs() == {"text": FOREIGN, "id": None}


BAD = {
    "provenance": {
        '{"id": 3}': 'missing "text"',
        '{"text": "  "}': '"text" must be a non-empty string',
        '{"text": "Some words.", "source": ""}': '"source" must be a non-empty string',
        '{"text": "Some words.", "author": "x"}': "unknown field",
        '{"text": "Some words.", "query": "q"}': "unknown field",
    },
    "machine_text": {
        '{"text": 5}': '"text" must be a non-empty string',
        '{"text": "Some words.", "source": "x"}': "looks like a provenance record",
    },
    "context": {
        '{"text": "Some words."}': "machine_text or provenance record: run with --task "
        "machine_text or --task provenance",
    },
}


@pytest.mark.parametrize(
    "task,line,message", [(t, ln, m) for t, cases in BAD.items() for ln, m in cases.items()]
)
def test_bad_lines_name_file_line_and_fix(tmp_path: Path, task: str, line: str, message: str):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "A fine text. And more."}\n' + line + "\n", encoding="utf-8")
    if task == "context":
        path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as err:
        read_records(path, task)
    assert f"bad.jsonl:{1 if task == 'context' else 2}" in str(err.value)


def test_everything_is_checked_before_any_fit(tmp_path: Path, known: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", [*rows(), {"text": ""}])
    db = tmp_path / "runs.db"

    def fails(match: str, **kw) -> None:
        with pytest.raises(InputError, match=match):
            run_dataset(kw.pop("input", data), db, task="provenance", progress=False, **kw)
        assert not db.exists()  # nothing fitted, nothing opened

    fails(r"p\.jsonl:5", known=known)
    good = write_jsonl(tmp_path / "good.jsonl", rows())
    fails("needs the known texts: --known DIR", input=good)
    fails("does not exist", input=good, known=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    fails(r"holds no author folders", input=good, known=tmp_path / "empty")
    (tmp_path / "one" / "alice").mkdir(parents=True)
    (tmp_path / "one" / "alice" / "a.txt").write_text("Words.", encoding="utf-8")
    (tmp_path / "one" / "bob").mkdir()
    fails(r"author folder 'bob'", input=good, known=tmp_path / "one")
    fails("unknown authorship method 'bert'", input=good, known=known, authorship="bert")
    fails("--model 'smollm2' does not apply", input=good, model="smollm2")
    fails("not both", input=good, known=known, model=open_set_authorship(known)[0])
    fails("needs a fitted source model", input=good, model=NGramLM(2))
    fails("local backend only", input=good, known=known, backend="ray")
    fails("unknown units 'tokens'", input=good, known=known, units="tokens")
    fails("unknown method 'fast_detectgpt' for --task provenance", input=good, known=known,
          method="fast_detectgpt")  # fmt: skip
    with pytest.raises(InputError, match="applies to --task provenance only"):
        run_dataset(good, db, task="machine_text", known=known, progress=False)


def test_provenance_run_stores_decisions_and_resumes(tmp_path: Path, known: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    db = tmp_path / "runs.db"
    (tmp_path / "part").mkdir()
    part = write_jsonl(tmp_path / "part" / "p.jsonl", rows()[:2])  # the same dataset name
    first = run_dataset(part, db, task="provenance", known=known, progress=False)
    assert (first.stored, first.task, first.method, first.failed) == (2, "provenance", "loo", [])
    summary = run_dataset(data, db, task="provenance", known=known, progress=False)
    assert (summary.stored, summary.skipped, summary.failed) == (2, 2, [])
    assert "(provenance task)" in summary.describe()
    # loo on k units: k + 1 passes, plus the decision: 2 predictions (probabilities, max logit)
    assert summary.model_calls == (12 + 1 + 2) + (4 + 1 + 2)  # FOREIGN: 12 words; 4 sentences
    with run_store.open(db) as runs:
        stored = {r.inputs["source"]: r for r in runs.query(dataset="p.jsonl")}
        assert set(stored) == {"alice", "bob", "carol", None}
        for run in stored.values():
            assert (run.task, run.method, run.model) == ("provenance", "loo", "BurrowsDelta")
            assert run.attribution.target["confidence_score"] == "max logit"  # Delta
            assert run.attribution.extras["threshold_rule"].startswith("cross-validated")
            assert run.inputs["known"] == str(known)
        assert stored["alice"].inputs["prediction"] == "alice"
        assert stored["bob"].attribution.target["prediction"] == "bob"
        foreign = stored["carol"]
        assert foreign.inputs["prediction"] == "unknown" and foreign.attribution.target["unknown"]
        assert foreign.inputs["units"] == "words" and len(foreign.attribution.units) == 12
        assert len(stored["alice"].attribution.units) == 4
        from attribkit.viewer.server import provenance_payload, view_kind

        assert view_kind(foreign) == "provenance"
        assert provenance_payload(foreign.data)["prediction"] == "unknown"
    again = run_dataset(data, db, task="provenance", known=known, progress=False)
    assert (again.stored, again.skipped, again.model_calls) == (0, 4, 0)
    # another method and another authorship model (under another dataset name) beside the first
    shap = run_dataset(
        data, db, task="provenance", known=known, method="shapley",
        progress=False,
    )  # fmt: skip
    assert (shap.stored, shap.failed) == (4, [])
    mfw = run_dataset(
        data, db, task="provenance", known=known, authorship="mfw", dataset="p-mfw",
        units="words", progress=False,
    )  # fmt: skip
    assert (mfw.stored, mfw.failed) == (4, [])
    out = cli.invoke(app, ["runs", "--store", str(db), "--task", "provenance"])
    assert out.exit_code == 0, out.output
    assert out.output.count("proven") == 12 and out.output.count("shapley") == 4, out.output


def test_a_fitted_model_can_be_given(tmp_path: Path, known: Path) -> None:
    model, rule = open_set_authorship(known, "mfw", threshold=0.99)
    assert rule == "given" and model.tau == 0.99 and model.score == "softmax"
    data = write_jsonl(tmp_path / "p.jsonl", rows()[:2])
    db = tmp_path / "runs.db"
    summary = run_dataset(data, db, task="provenance", model=model, units="words", progress=False)
    assert (summary.stored, summary.failed) == (2, [])
    with run_store.open(db) as runs:
        for run in runs.query():
            assert run.attribution.extras["threshold_rule"] == "given with the model"
            assert run.attribution.target["threshold"] == 0.99 and "known" not in run.inputs
    assert FittedSource(model.base).threshold_rule == "closed set"
    assert open_set_authorship(known, closed_set=True)[1] == "closed set"
    with pytest.raises(InputError, match="not a probability"):
        open_set_authorship(known, "ngram", threshold=2.0)
    with pytest.raises(InputError, match="contradict"):
        open_set_authorship(known, threshold=-1.0, closed_set=True)


def test_provenance_cli_run(tmp_path: Path, known: Path) -> None:
    data = write_jsonl(tmp_path / "p.jsonl", rows()[:2])
    db = tmp_path / "runs.db"
    args = ["run-dataset", "--task", "provenance", "--input", str(data), "--store", str(db)]
    out = cli.invoke(app, [*args, "--known", str(known), "--authorship", "ngram"])
    assert out.exit_code == 0, out.output
    assert "2 stored" in out.output
    with run_store.open(db) as runs:
        assert {r.model for r in runs.query()} == {"CharNgramSVM"}
    out = cli.invoke(app, args)
    assert out.exit_code != 0 and "--known DIR" in out.output


NGRAM_TRAIN = [
    "the cat sat on the mat and the dog sat on the rug",
    "the dog ran to the park and the cat ran to the house",
    "a bird sat on the tree and the cat looked at the bird",
]


def test_machine_text_run_with_an_ngram_lm(tmp_path: Path) -> None:
    lm = NGramLM(2).fit(NGRAM_TRAIN)
    texts = [
        {"text": "The cat sat on the mat. The dog ran to the park.", "id": "machine"},
        {"text": "Quantum zebras juggle violet equations. Nobody saw it coming."},
    ]
    data = write_jsonl(tmp_path / "m.jsonl", texts)
    db = tmp_path / "runs.db"
    summary = run_dataset(data, db, task="machine_text", model=lm, progress=False)
    assert (summary.stored, summary.task, summary.method) == (2, "machine_text", "fast_detectgpt")
    assert summary.failed == [] and summary.model_calls == 2  # one pass per text (one model)
    sent = run_dataset(
        data, db, task="machine_text", model=lm, method="log_perplexity", units="sentences",
        progress=False,
    )  # fmt: skip
    assert (sent.stored, sent.failed) == (2, [])
    with run_store.open(db) as runs:
        found = runs.query(dataset="m.jsonl")
        assert len(found) == 4 and {r.task for r in found} == {"machine_text"}
        for run in found:
            a = run.attribution
            assert sum(a.scores) == pytest.approx(a.extras["statistic"], abs=1e-9)
            assert run.model == "ngram-word-2" and run.inputs["text"] in {t["text"] for t in texts}
        by_id = {(r.inputs["id"], r.method): r for r in found}
        assert len(by_id[("machine", "log_perplexity")].attribution.units) == 2
    again = run_dataset(data, db, task="machine_text", model=lm, progress=False)
    assert (again.stored, again.skipped, again.model_calls) == (0, 2, 0)
    with pytest.raises(InputError, match="unknown method 'loo' for --task machine_text"):
        run_dataset(data, db, task="machine_text", model=lm, method="loo", progress=False)
    with pytest.raises(InputError, match="needs a language model"):
        run_dataset(data, db, task="machine_text", model=object(), progress=False)


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


def test_killed_machine_text_run_resumes(tmp_path: Path, tiny_model_dir: Path) -> None:
    texts = ["The cat sat on the mat.", "A dog ran in the park today.", "Birds sing at dawn."]
    data = write_jsonl(tmp_path / "m.jsonl", [{"text": t} for t in texts])
    db = tmp_path / "runs.db"
    cmd = [sys.executable, "-c", KILL_AFTER_FIRST, "run-dataset", "--task", "machine_text"]
    cmd += ["--input", str(data), "--store", str(db), "--model", str(tiny_model_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with run_store.open(db) as runs:
        assert len(runs.query()) == 1
    summary = run_dataset(data, db, task="machine_text", model=str(tiny_model_dir), progress=False)
    assert (summary.stored, summary.skipped, summary.failed) == (2, 1, [])
    with run_store.open(db) as runs:
        assert sorted(r.key for r in runs.query()) == sorted(
            r.key for r in read_records(data, "machine_text")
        )
        assert {r.model for r in runs.query()} == {"tiny"}
