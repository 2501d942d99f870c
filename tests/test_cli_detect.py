"""``attribkit detect`` on a photo: which regions made the detector find this object."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from attribkit.cli import app
from attribkit.models.blazeface import blazeface_available

runner = CliRunner()
needs_blazeface = pytest.mark.skipif(
    blazeface_available() is not None, reason=f"BlazeFace cannot run: {blazeface_available()}"
)


@needs_blazeface
def test_detect_photo_json_explains_the_face(tmp_path) -> None:
    out = tmp_path / "overlay.png"
    args = ["detect", "skimage:astronaut", "--method", "loo", "--json", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["method"] == "loo" and d["model"] == "blazeface"
    x1, y1, x2, y2 = d["target"]["box"]
    assert 150 < x1 < x2 < 300 and 50 < y1 < y2 < 200  # the astronaut's face
    assert d["model_calls"] == len(d["units"]) + 1 and out.is_file()


@needs_blazeface
def test_detect_photo_with_nothing_to_explain_or_bad_flags() -> None:
    result = runner.invoke(app, ["detect", "skimage:coffee"])
    assert result.exit_code == 2 and "no detection to explain" in result.output
    result = runner.invoke(app, ["detect", "skimage:astronaut", "--units", "sentences"])
    assert result.exit_code == 2 and "apply to a text" in result.output
    result = runner.invoke(app, ["detect", "skimage:astronaut", "--box", "1,2,3"])
    assert result.exit_code == 2 and "four numbers" in result.output


def test_detect_text_refuses_photo_flags(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("Some text to test.")
    result = runner.invoke(app, ["detect", str(path), "--box", "1,2,3,4"])
    assert result.exit_code == 2 and "apply to a photo" in result.output
