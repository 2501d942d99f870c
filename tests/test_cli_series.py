"""``attribkit series``: attribute a saved SeriesCNN's decision on a series file (cells, steps or
overlapping windows), as text, one JSON object or an HTML report; clear errors for bad input.
A tiny untrained CNN (2 channels, 3 classes): each test runs in well under a second."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attribkit.cli import app
from attribkit.models.timeseries import SeriesCNN, load_series_cnn, save_series_cnn
from attribkit.tasks.timeseries import attribute_timeseries, series_map

runner = CliRunner()
T, C = 24, 2


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("series")
    torch.manual_seed(0)
    model = save_series_cnn(SeriesCNN(C, 3, width=4, dilations=(1,)), root / "cnn.safetensors")
    x = np.random.default_rng(0).normal(size=(T, C))
    np.save(root / "x.npy", x)
    csv_file = root / "x.csv"
    csv_file.write_text("a,b\n" + "\n".join(f"{u:.6f},{v:.6f}" for u, v in x))
    return {"root": root, "model": model, "npy": root / "x.npy", "csv": csv_file}


def _run(*args: str) -> object:
    return runner.invoke(app, ["series", *args])


def test_json_matches_the_library(files: dict[str, Path]) -> None:
    out = _run(str(files["npy"]), "--model", str(files["model"]), "--method", "occlusion",
               "--width", "6", "--stride", "3", "--json")  # fmt: skip
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    x = np.load(files["npy"])
    a = attribute_timeseries(load_series_cnn(files["model"]), x, "occlusion", units="windows",
                             width=6, stride=3)  # fmt: skip
    assert d["method"] == "occlusion" and d["shape"] == [T, C]
    assert d["target"] == a.target["class"] == d["prediction"]
    assert np.allclose(d["map"], series_map(a), atol=1e-6)
    assert np.allclose(d["scores"], a.vector, atol=1e-6)
    assert len(d["units"]) == len(a.units) == 7  # starts 0, 3, ..., 18
    assert d["units"][1] == {"index": 1, "text": "t[3:9]", "t": [3, 9], "channel": None}
    assert d["model_calls"] == a.cost.model_calls and d["seconds"] >= 0
    assert sorted(d["ranking"]) == list(range(7))


def test_cells_target_text_and_html(files: dict[str, Path]) -> None:
    base = [str(files["csv"]), "--model", str(files["model"])]
    out = _run(*base, "--method", "integrated_gradients", "--target", "2", "--json")
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert d["target"] == 2 and len(d["units"]) == T * C and len(d["map"]) == T
    report = files["root"] / "report.html"
    out = _run(*base, "--method", "occlusion", "--units", "timesteps", "--html", str(report))
    assert out.exit_code == 0, out.output
    assert "Class:" in out.stdout and "top 10 of 24" in out.stdout
    page = report.read_text()
    assert page.count("<svg") == C and "<h2>Series</h2>" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "100"], "wider than the series"),
        (["--units", "cells", "--width", "4"], "apply to units='windows'"),
        (["--units", "blocks"], "units must be one of"),
        (["--target", "7"], "target must be a class index"),
        (["--method", "no_such_method"], "no_such_method"),
    ],
)
def test_bad_options(files: dict[str, Path], args: list[str], message: str) -> None:
    method = [] if "--method" in args else ["--method", "occlusion"]
    out = _run(str(files["npy"]), "--model", str(files["model"]), *method, *args)
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.output.split()), out.output


def test_bad_files(files: dict[str, Path], tmp_path: Path) -> None:
    model = str(files["model"])
    nan = tmp_path / "nan.csv"
    nan.write_text("1,2\n3,nan\n5,6\n")
    out = _run(str(nan), "--model", model, "--method", "occlusion")
    assert out.exit_code == 2 and "missing or infinite" in " ".join(out.output.split())
    three = tmp_path / "three.npy"
    np.save(three, np.zeros((T, 3)))
    out = _run(str(three), "--model", model, "--method", "occlusion")
    assert out.exit_code == 2 and "takes 2" in " ".join(out.output.split())
    out = _run(str(tmp_path / "absent.npy"), "--model", model, "--method", "occlusion")
    assert out.exit_code == 2 and "no such file" in out.output
    out = _run(str(files["npy"]), "--model", str(tmp_path / "none"), "--method", "occlusion")
    assert out.exit_code == 2 and "save_series_cnn" in " ".join(out.output.split())
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    (tmp_path / "broken.safetensors.json").write_text(Path(model + ".json").read_text())
    out = _run(str(files["npy"]), "--model", str(broken), "--method", "occlusion")
    assert out.exit_code == 2 and "cannot load the model" in " ".join(out.output.split())
