"""Grid localisation (Rao, Böhle & Schiele 2022) on a tiny CNN trained on scikit-learn digits:
DiFull's ground truth (backprop methods localise exactly), the leaks of Grad-CAM, RISE and
border-straddling occlusion, DiPart below DiFull, GridPG, and AggAtt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attribkit.core.errors import InputError
from attribkit.evaluation.aggatt import aggatt, aggatt_figure
from attribkit.evaluation.grid import (
    GridModel,
    cell_slices,
    evaluate_grid,
    grid_localization,
    make_grids,
)
from attribkit.models.image import ImageClassifier
from attribkit.tasks.image import attribute_image
from digits_cnn import digits_classifier, digits_data

N_GRIDS = 20


@pytest.fixture(scope="module")
def digits():
    return digits_classifier()


@pytest.fixture(scope="module")
def grids(digits):
    x, y = digits_data("test")
    return make_grids(digits, x, y, n=2, conf=0.99, count=N_GRIDS, seed=0)


@pytest.fixture(scope="module")
def difull(digits):
    return GridModel.from_classifier(digits, 2, "difull").as_classifier()


@pytest.fixture(scope="module")
def dipart(digits):
    return GridModel.from_classifier(digits, 2, "dipart").as_classifier()


def _scores(ev, method, layer=None):
    return np.concatenate(
        [v for (m, lay, _), v in ev.scores.items() if m == method and layer in (None, lay)]
    )


def test_make_grids_distinct_confident_cells(digits, grids):
    x, _ = digits_data("test")
    assert grids.images.shape == (N_GRIDS, 16, 16, 3) and grids.cell == (8, 8)
    assert all(len(set(row)) == 4 for row in grids.labels)  # distinct classes per grid
    assert len(np.unique(grids.sources)) == grids.sources.size  # no image reused
    assert (grids.confidence >= 0.99).all() and grids.kept >= 4 * N_GRIDS
    np.testing.assert_array_equal(grids.targets, np.arange(4)[None] * 10 + grids.labels)
    # cell k (row-major) holds its source digit
    g, k = 3, 2
    rs, cs = cell_slices((16, 16), k, 2)
    np.testing.assert_allclose(grids.images[g, rs, cs, 0], x[grids.sources[g, k]])
    assert grids.cost.forward_passes == len(x)
    assert grids.target(g, k, "gridpg") == grids.labels[g, k]
    with pytest.raises(InputError, match="reusing"):
        make_grids(digits, x, n=2, conf=0.99, count=10_000)
    with pytest.raises(InputError, match="distinct classes"):
        make_grids(digits, x[:3], n=2, conf=0.5)
    reused = make_grids(digits, x[:60], n=2, conf=0.9, count=40, reuse=True)
    assert len(reused) == 40 and all(len(set(r)) == 4 for r in reused.sources)


def test_difull_head_k_is_the_model_on_cell_k(digits, grids, difull, dipart):
    imgs = grids.images[:5]
    out = difull.predict(imgs, output="logit")
    assert out.shape == (5, 40)
    for k in range(4):
        rs, cs = cell_slices((16, 16), k, 2)
        np.testing.assert_allclose(
            out[:, k * 10 : (k + 1) * 10], digits.predict(imgs[:, rs, cs], "logit"), atol=1e-4
        )
    # heads classify their own cells
    assert (out.reshape(5, 4, 10).argmax(-1) == grids.labels[:5]).all()
    assert dipart.predict(imgs, output="logit").shape == (5, 40)
    gridpg = GridModel.from_classifier(digits, 2, "gridpg")
    assert gridpg.target(3, 7) == 7 and difull.grid.target(3, 7) == 37
    np.testing.assert_allclose(
        gridpg.as_classifier().predict(imgs, "logit"), digits.predict(imgs, "logit"), atol=1e-4
    )
    assert difull.default_layers == {"middle": "backbone.0", "final": "backbone.2"}
    assert difull.labels[13] == "cell 1: 3"


def test_split_errors(digits, difull):
    with pytest.raises(InputError, match="stage outputs"):
        difull.resolve_layer("backbone.0.stage.0")
    bare = ImageClassifier(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), input_size=None,
                           normalize=None)  # fmt: skip
    with pytest.raises(InputError, match="pass backbone="):
        GridModel.from_classifier(bare)
    wrong = GridModel.from_classifier
    with pytest.raises(InputError, match="does not reproduce"):
        wrong(digits, backbone=digits.module.features[:2], head=nn.Linear(32, 10))
    with pytest.raises(InputError, match="setting"):
        GridModel.from_classifier(digits, 2, "full")
    with pytest.raises(InputError, match="cells"):
        difull.predict(np.zeros((1, 15, 15, 3), dtype=np.float32))


def test_grid_localization_formula():
    m = np.zeros((16, 16))
    m[:8, :8] = 1.0  # cell 0
    m[8:, 8:] = 3.0  # cell 3
    m[:8, 8:] = -5.0  # negative mass is ignored
    assert grid_localization(m, 0, 2) == pytest.approx(0.25)
    assert grid_localization(m, 3, 2) == pytest.approx(0.75)
    assert grid_localization(m, 1, 2) == 0.0
    assert grid_localization(-np.ones((16, 16)), 0, 2) == 0.0  # no positive mass
    with pytest.raises(InputError):
        grid_localization(m, 4, 2)


def test_difull_backprop_methods_localise_exactly(grids, difull):
    methods = {
        "saliency": {},
        "input_x_gradient": {},
        "integrated_gradients": {"n_steps": 8},
    }
    ev = evaluate_grid(difull, grids, methods, heads="corners", layer=["input", "middle"])
    assert len(ev.rows) == N_GRIDS * 2 * 3 * 2
    for row in ev.rows:
        assert row["localization"] == pytest.approx(1.0, abs=1e-6), row
    # ML-Att at the final (stride-2) layer: exact with nearest upsampling; bilinear upsampling
    # bleeds one pixel across the cell border (measured 0.938 / 0.946 on 30 grids)
    near = evaluate_grid(difull, grids, methods, layer="final", upsample="nearest")
    assert all(r["localization"] == pytest.approx(1.0, abs=1e-6) for r in near.rows)
    bil = evaluate_grid(difull, grids, ["input_x_gradient"], layer="final")
    assert 0.85 < _scores(bil, "input_x_gradient").mean() < 0.99
    summary = {(s["method"], s["layer"]): s for s in ev.summary()}
    assert summary[("saliency", "input")]["above_0.99"] == 1.0
    assert ev.maps[("saliency", "input", 0)].shape == (N_GRIDS, 16, 16)
    assert ev.cost.backward_passes > 0


def test_dipart_backprop_below_difull_at_input(grids, dipart):
    methods = {"saliency": {}, "input_x_gradient": {}, "integrated_gradients": {"n_steps": 8}}
    ev = evaluate_grid(dipart, grids, methods, layer="input")
    # measured on 30 grids: saliency 0.68, IxG 0.82, IG 0.78 (notes §3.1: 0.71 / 0.83 / 0.83)
    for m in methods:
        s = _scores(ev, m)
        assert 0.4 < s.mean() < 0.95 and (s < 0.99).mean() > 0.8, m


def test_cam_occlusion_and_rise_leak_on_difull(grids, difull):
    ev = evaluate_grid(
        difull,
        grids,
        {
            "grad_cam": {},
            "layer_cam_nearest": {"method": "layer_cam", "upsample": "nearest"},
            # occlusion in pixel space (it also runs at a layer: ML-Att)
            "occlusion_k4s2": {"method": "occlusion", "kernel": 4, "stride": 2, "layer": "input"},
            "occlusion_k4s4": {"method": "occlusion", "kernel": 4, "stride": 4, "layer": "input"},
        },
        layer="final",
    )
    # measured on 30 grids x 2 corners: Grad-CAM 0.59 (channel weights pooled over the cell are
    # applied to every cell's activations), occlusion k4 s2 0.92 (windows straddle the border)
    assert _scores(ev, "grad_cam").mean() < 0.8
    assert _scores(ev, "occlusion_k4s2").mean() < 0.97
    assert (_scores(ev, "occlusion_k4s2") < 0.99).mean() > 0.5
    # Layer-CAM with nearest upsampling and occlusion aligned with the cells do not leak
    np.testing.assert_allclose(_scores(ev, "layer_cam_nearest"), 1.0, atol=1e-6)
    assert (_scores(ev, "occlusion_k4s4") > 0.999).all()
    # RISE's constant offset sits near chance (measured 0.29 with 500 masks)
    few = make_grids_subset(grids, 6)
    rise = evaluate_grid(difull, few, {"rise": {"n_masks": 200, "grid_size": 4}}, heads=[0])
    assert _scores(rise, "rise").mean() < 0.5


def make_grids_subset(grids, k):
    from dataclasses import replace

    return replace(
        grids,
        images=grids.images[:k],
        labels=grids.labels[:k],
        targets=grids.targets[:k],
        sources=grids.sources[:k],
        confidence=grids.confidence[:k],
    )


def test_attribute_image_on_grid_classifier(grids, difull):
    t = int(grids.targets[0, 3])
    a = attribute_image(difull, grids.images[0], target=t, method="saliency", units="pixels")
    assert grid_localization(a, 3, 2) == pytest.approx(1.0, abs=1e-6)
    assert a.target["class"] == t


def test_aggatt_bins_and_figure(grids, difull, tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(100, 16, 16))
    scores = rng.random(100)
    r = aggatt(maps, scores, head=0, n=2)
    assert r.sizes == [2, 3, 45, 45, 3, 2] and r.maps.shape == (6, 16, 16)
    assert np.all(np.diff(r.mean_scores) < 0) and (r.maps >= 0).all()
    np.testing.assert_allclose(r.maps[0], np.clip(maps[np.argsort(-scores)[:2]], 0, None).mean(0))
    assert r.vmax == pytest.approx(np.percentile(r.maps, 99.5))
    assert aggatt(maps[:50], scores[:50]).sizes == [1, 1, 23, 23, 1, 1]
    # ties broken by the positive mass inside the cell
    tied = np.zeros((2, 4, 4))
    tied[0, :2, :2], tied[1, :2, :2] = 1.0, 2.0
    assert aggatt(tied, [0.5, 0.5], bins=(0, 0.5, 1), head=0).members[0].tolist() == [1]
    with pytest.raises(InputError, match="empty"):
        aggatt(maps[:10], scores[:10])
    with pytest.raises(InputError, match="one score per map"):
        aggatt(maps, scores[:5])
    path = aggatt_figure(r, tmp_path / "agg.png", cell=64)
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == (6 * 64 + 5 * 4, 64) and im.mode == "RGB"
        px = np.asarray(im)
    assert (px[0, :32] == 255).all()  # the top edge of cell 0's box, drawn in white
    # on real Grad-CAM maps of 20 grids (bins need >= 50 maps at the default fractions)
    ev = evaluate_grid(difull, grids, ["grad_cam"], heads="corners", layer="final")
    maps_gc = np.concatenate([ev.maps[("grad_cam", "final", h)] for h in (0, 3)])
    sc_gc = np.concatenate([ev.scores[("grad_cam", "final", h)] for h in (0, 3)])
    r2 = aggatt(maps_gc, sc_gc, bins=(0, 0.1, 0.5, 0.9, 1.0))
    assert sum(r2.sizes) == 2 * N_GRIDS and r2.mean_scores[0] >= r2.mean_scores[-1]


def test_from_classifier_on_lite0_shapes(lite0):
    grid = GridModel.from_classifier(lite0, 2, "difull")  # checks the split on a 224 probe
    assert grid.default_layers == {"middle": "backbone.6", "final": "backbone.17"}
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert grid(x).shape == (1, 4000)
