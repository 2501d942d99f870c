"""The image core: the bundled model, image preparation, ImageTask, attribute_image, heatmaps."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from skimage import data

import attribkit as ak
from attribkit.core.errors import InputError
from attribkit.models.image import ImageClassifier, imagenet_labels, prepare_image
from attribkit.viz.image import image_of, save_overlay


def test_imagenet_labels_are_shipped():
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[281] == "tabby" and labels[282] == "tiger cat" and labels[967] == "espresso"
    assert imagenet_labels(full=True)[281] == "tabby, tabby cat"


def test_bundled_model_recognises_real_photos(lite0):
    probs = lite0.predict(np.stack([lite0.prepare(data.chelsea()), lite0.prepare(data.coffee())]))
    assert int(np.argmax(probs[0])) in {281, 282, 285}  # tabby / tiger cat / Egyptian cat
    assert int(np.argmax(probs[1])) == 967 and probs[1, 967] > 0.9  # espresso


def test_prepare_handles_grey_rgba_uint8_and_float():
    rgb = data.chelsea()
    out = prepare_image(rgb)
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    grey = prepare_image(data.camera())
    assert grey.shape == (224, 224, 3)
    assert np.allclose(grey[..., 0], grey[..., 1]) and np.allclose(grey[..., 1], grey[..., 2])
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    assert np.allclose(prepare_image(rgba), out, atol=1e-6)  # opaque alpha changes nothing
    assert np.allclose(prepare_image(rgb.astype(np.float32) / 255.0), out, atol=1e-5)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((3, 64, 64)), "channels-first"),
        (np.zeros((64, 64, 2)), "RGBA"),
        (np.zeros((64,)), "(H, W)"),
        (np.full((32, 32, 3), 7.5), "[0, 1]"),
        (np.full((32, 32, 3), np.nan), "NaN"),
    ],
)
def test_prepare_rejects_bad_images(bad, message):
    with pytest.raises(InputError, match=re.escape(message)):
        prepare_image(bad)


def test_wrong_size_and_bad_target_and_bad_layer(lite0):
    with pytest.raises(InputError, match="224x224"):
        lite0.predict(np.zeros((1, 100, 100, 3), np.float32))
    with pytest.raises(InputError, match="out of range"):
        ak.ImageTask(lite0, data.coffee(), target=1000)
    with pytest.raises(InputError, match="unknown target class"):
        ak.ImageTask(lite0, data.coffee(), target="zebra crossing")
    assert ak.ImageTask(lite0, data.coffee(), target="espresso").target == 967
    with pytest.raises(InputError, match="valid layer names: _conv_stem"):
        ak.attribute_image(lite0, data.coffee(), method="saliency", layer="conv5_x")


def test_plain_module_needs_the_adapter():
    with pytest.raises(InputError, match="ImageClassifier"):
        ak.ImageTask(torch.nn.Conv2d(3, 2, 3), data.coffee())


def test_attribute_image_with_a_unit_method_and_heatmap_round_trip(lite0, tmp_path):
    a = ak.attribute_image(lite0, data.coffee(), method="loo", units="patches", patch=56)
    assert len(a) == 16 and a.heatmap.shape == (224, 224)
    # A unit method's heatmap is its unit scores spread over the units.
    assert np.isclose(a.heatmap[0, 0], a.scores[0]) and np.isclose(a.heatmap[-1, -1], a.scores[-1])
    assert a.cost.forward_passes == 17  # n + 1 masks (resolving the target is not counted)
    b = ak.Attribution.load(a.save(tmp_path / "a.json"))
    assert np.allclose(b.heatmap, a.heatmap) and b.target["label"] == "espresso"
    assert image_of(b).shape == (224, 224, 3)
    png = save_overlay(b, tmp_path / "overlay.png")
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (224, 224)


def test_gradient_map_units_sum_the_heatmap(lite0):
    a = ak.attribute_image(lite0, data.coffee(), method="input_x_gradient", units="patches")
    assert len(a) == 196 and np.isclose(a.scores.sum(), a.heatmap.sum(), rtol=1e-6)
    assert a.cost.forward_passes == 1 and a.cost.backward_passes == 1
    assert a.target["output"] == "logit"


def test_layer_maps_are_upsampled_and_cost_the_probe_passes(lite0):
    a = ak.attribute_image(
        lite0, data.coffee(), method="integrated_gradients", layer="final", n_steps=8
    )
    assert a.extras["map_shape"] == [7, 7] and a.extras["layer_name"] == "_bn1"
    assert a.heatmap.shape == (224, 224)
    assert a.cost.backward_passes == 8 and a.cost.forward_passes == 8 + 2 + 2
    # Completeness holds at a layer too (from zero activations), with modest steps.
    assert a.extras["completeness_error"] < 0.05


def test_integrated_gradients_completeness_on_a_linear_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    model = ImageClassifier(net, input_size=None, normalize=None)
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    a = ak.attribute_image(model, img, method="integrated_gradients", units="pixels", n_steps=4)
    x = torch.from_numpy(img).permute(2, 0, 1)
    w = net[1].weight[a.target["class"]].detach().reshape(3, 8, 8)
    expected = (w * x).sum(0).numpy()  # exact on a linear model, any number of steps
    assert np.allclose(a.heatmap, expected, atol=1e-5)
    assert a.extras["completeness_error"] < 1e-5


def test_cli_image_writes_an_overlay(tmp_path):
    from typer.testing import CliRunner

    from attribkit.cli import app

    runner = CliRunner()
    out, saved = tmp_path / "o.png", tmp_path / "a.json"
    args = ["image", "skimage:coffee", "--method", "saliency", "--layer", "final"]
    result = runner.invoke(app, [*args, "--out", str(out), "--save", str(saved)])
    assert result.exit_code == 0, result.output
    assert "espresso" in result.output and out.stat().st_size > 1000
    assert ak.Attribution.load(saved).target["class"] == 967
    bad = runner.invoke(app, ["image", "skimage:coffee", "--method", "saliency", "--layer", "x"])
    assert bad.exit_code == 2 and "valid layer names" in bad.output
    assert runner.invoke(app, ["image", str(tmp_path / "missing.png")]).exit_code == 2
