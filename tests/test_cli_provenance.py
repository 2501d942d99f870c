"""``attribkit authorship``: open-set authorship from a folder of known texts, with its reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attribkit.cli import app

runner = CliRunner()
_A = ["whilst", "upon", "thereby", "hence", "moreover"]
_B = ["while", "on", "so", "thus", "also"]
_COMMON = ["the", "people", "state", "power", "union", "law", "government", "of", "and"]


def _text(words: list[str], rng: np.random.Generator, n: int = 6) -> str:
    return " ".join(
        " ".join(rng.choice(_COMMON + words + words, size=8)).capitalize() + "." for _ in range(n)
    )


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("known")
    rng = np.random.default_rng(0)
    for author, words in (("alice", _A), ("bob", _B)):
        (root / author).mkdir()
        for i in range(6):
            (root / author / f"{i}.txt").write_text(_text(words, rng))
    (root / "query.txt").write_text(_text(_A, rng))
    (root / "foreign.txt").write_text(
        "Zebras quickly jump over lazy foxes in Kyoto while seven drums echo."
    )
    return root


@pytest.mark.parametrize("method", ["delta", "mfw", "ngram"])
def test_authorship_json_names_the_author_and_its_reasons(known: Path, method: str) -> None:
    out = runner.invoke(
        app,
        ["authorship", "--known", str(known), "--unknown", str(known / "query.txt"),
         "--method", method, "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["prediction"] == "alice"
    assert set(d["scores"]) == {"alice", "bob"} and d["scores"]["alice"] > d["scores"]["bob"]
    assert d["threshold"] is not None and d["confidence"] >= d["threshold"]
    assert len(d["explanation"]["scores"]) == 6  # one per sentence


def test_a_foreign_text_is_unknown_and_explained_word_by_word(known: Path) -> None:
    out = runner.invoke(
        app,
        ["authorship", "--known", str(known), "--unknown", str(known / "foreign.txt"), "--json"],
    )
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["prediction"] == "unknown" and d["unknown"]
    assert len(d["explanation"]["units"]) == 12  # a single sentence: words


def test_closed_set_and_bad_input(known: Path, tmp_path: Path) -> None:
    foreign = str(known / "foreign.txt")
    out = runner.invoke(
        app, ["authorship", "--known", str(known), "--unknown", foreign, "--closed-set"]
    )
    assert out.exit_code == 0 and "Prediction: unknown" not in out.output
    (tmp_path / "empty_author").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("Some words here.")
    out = runner.invoke(app, ["authorship", "--known", str(tmp_path), "--unknown", foreign])
    assert out.exit_code != 0 and "empty_author" in out.output
    out = runner.invoke(
        app, ["authorship", "--known", str(known), "--unknown", foreign, "--method", "bert"]
    )
    assert out.exit_code != 0 and "delta" in out.output


@pytest.mark.parametrize("method", ["log_perplexity", "fast_detectgpt", "binoculars"])
def test_detect_json_statistic_adds_up(tmp_path: Path, tiny_model_dir: Path, method: str) -> None:
    path = tmp_path / "t.txt"
    path.write_text("The cat sat on the mat all day. The dog ran <b>fast</b> to the park.")
    html = tmp_path / "d.html"
    args = ["detect", str(path), "--model", str(tiny_model_dir), "--method", method]
    out = runner.invoke(app, [*args, "--units", "sentences", "--json", "--html", str(html)])
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert d["method"] == method and len(d["units"]) == 2
    assert sum(d["scores"]) == pytest.approx(d["statistic"], abs=1e-9)
    assert d["model_calls"] >= 1
    assert "<b>fast</b>" not in html.read_text()  # the text is escaped


def test_detect_bad_input(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = runner.invoke(app, ["detect", str(tmp_path / "missing.txt")])
    assert out.exit_code != 0 and "not" in out.output and "file" in out.output
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    out = runner.invoke(app, ["detect", str(bad), "--model", str(tiny_model_dir)])
    assert out.exit_code != 0 and "UTF-8" in out.output
    empty = tmp_path / "empty.txt"
    empty.write_text("   ")
    out = runner.invoke(app, ["detect", str(empty), "--model", str(tiny_model_dir)])
    assert out.exit_code != 0 and "empty" in out.output
