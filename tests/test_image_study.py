"""The study recipe: methods × metrics over real photos, a random row, AggAtt figures, the CLI."""

from __future__ import annotations

import json

import pytest
from skimage import data
from sklearn.datasets import load_sample_image
from typer.testing import CliRunner

from attribkit.cli import app
from attribkit.core.errors import InputError
from attribkit.evaluation.study import image_study


def test_study_table_has_every_method_and_the_random_row(lite0, tmp_path):
    photos = [data.chelsea(), data.coffee(), data.rocket(), load_sample_image("china.jpg")]
    result = image_study(
        lite0,
        photos,
        ["grad_cam", "saliency"],
        ["insertion", "deletion", "srg", "difull"],
        steps=4,
        grids=2,
        out=tmp_path,
        progress=False,
    )
    rows = {r["method"]: r for r in result.rows}
    assert set(rows) == {"grad_cam", "saliency", "random order"}
    assert len(result.per_image) == 8  # 4 images x 2 methods
    # DiFull: the gradient is exactly confined to its cell; Grad-CAM's pooled weights leak.
    assert rows["saliency"]["difull"] == pytest.approx(1.0, abs=1e-6)
    assert rows["grad_cam"]["difull"] < 0.99
    assert rows["random order"]["difull"] == 0.25
    assert rows["grad_cam"]["forward/img"] == 1 and rows["grad_cam"]["backward/img"] == 1
    assert rows["grad_cam"]["insertion"] > rows["random order"]["insertion"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result.rows))
    assert "random order" in (tmp_path / "table.md").read_text()
    assert len(result.figures) == 2 and all((tmp_path / f).exists() for f in result.figures)


def test_study_rejects_unknown_metrics_and_empty_inputs(lite0):
    with pytest.raises(InputError, match="unknown metrics"):
        image_study(lite0, [data.coffee()], ["saliency"], ["accuracy"])
    with pytest.raises(InputError, match="at least one image"):
        image_study(lite0, [], ["saliency"])


def test_cli_study_images_writes_the_table(tmp_path):
    result = CliRunner().invoke(
        app,
        ["study", "images", "--methods", "saliency", "--metrics", "insertion,deletion",
         "--images", "skimage:coffee", "--steps", "4", "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "random order" in result.output and (tmp_path / "table.md").exists()


def test_smdl_runs_on_difull_grids(lite0):
    """SMDL's diversity term embeds each region; on a DiFull grid model the embedding layer runs
    once per cell, and the per-cell features are joined into one embedding per image."""
    photos = [data.chelsea(), data.coffee(), data.rocket(), load_sample_image("china.jpg")]
    result = image_study(
        lite0, photos, {"smdl": {"n_segments": 8}}, ["difull"], grids=1, progress=False
    )
    assert 0.0 <= result.rows[0]["difull"] <= 1.0
