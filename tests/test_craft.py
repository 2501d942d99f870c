"""CRAFT concepts (NMF of a layer's activations), their importance (Sobol / occlusion /
gradient × input) and concept maps: planted-concept recovery, the exact linear-head identities,
the generic (run-the-rest-of-the-model) head, a real EfficientNet-Lite0 run and bad input."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from scipy.optimize import nnls
from skimage import data

import attribkit as ak
from attribkit.core.errors import InputError
from attribkit.methods.image.craft import (
    CraftConcepts,
    concept_importance,
    concept_maps,
    factorize,
    fit_concepts,
    nnls_coefficients,
    sobol_design,
    sobol_total_indices,
)
from attribkit.models.image import ImageClassifier
from attribkit.tasks.image import ImageTask


class TinyCNN(torch.nn.Module):
    """conv-ReLU-conv-ReLU, global average pooling, linear head (32² input, 8×8 final map)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture(scope="module")
def tiny():
    return ImageClassifier(TinyCNN(), input_size=32, resize=None, normalize=None, batch_size=64)


@pytest.fixture(scope="module")
def tiny_images():
    rng = np.random.default_rng(0)
    coarse = rng.random((6, 3, 8, 8)).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(32, 32), mode="bilinear")
    return list(up.permute(0, 2, 3, 1).numpy())


@pytest.fixture(scope="module")
def tiny_concepts(tiny, tiny_images):
    return fit_concepts(tiny, tiny_images, target=1, n_concepts=4, seed=0)


# -- numerical pieces ---------------------------------------------------------------------------
def test_factorize_recovers_planted_concepts():
    rng = np.random.default_rng(0)
    r, p, n = 4, 40, 400
    W = rng.random((r, p)) * (rng.random((r, p)) < 0.3)
    U = rng.exponential(size=(n, r)) * (rng.random((n, r)) < 0.5)
    A = U @ W + 0.01 * np.abs(rng.normal(size=(n, p)))
    _, W_hat, err = factorize(A, r, seed=0)
    assert err < 0.05
    cos = (W / np.linalg.norm(W, axis=1, keepdims=True)) @ (
        W_hat / np.linalg.norm(W_hat, axis=1, keepdims=True)
    ).T
    assert cos.max(axis=1).min() > 0.95  # every planted concept has a match
    assert sorted(cos.argmax(axis=1).tolist()) == list(range(r))  # ... and a different one


def test_nnls_coefficients_match_the_full_problem():
    rng = np.random.default_rng(1)
    W = rng.random((5, 30))
    A = np.abs(rng.normal(size=(12, 30)))
    U = nnls_coefficients(A, W)
    ref = np.array([nnls(W.T, a)[0] for a in A])
    assert U.min() >= 0.0 and np.allclose(U, ref, atol=1e-8)


def test_sobol_design_shape_and_replication():
    m = sobol_design(3, 8, seed=0)
    assert m.shape == (8 * 5, 3) and m.min() >= 0 and m.max() <= 1
    a, b, c = m[:8], m[8:16], m[16:].reshape(3, 8, 3)
    for i in range(3):
        assert np.array_equal(c[i][:, i], b[:, i])
        others = [j for j in range(3) if j != i]
        assert np.array_equal(c[i][:, others], a[:, others])
    assert np.array_equal(m, sobol_design(3, 8, seed=0))  # seeded


@pytest.mark.parametrize("seed", range(5))
def test_sobol_indices_of_a_linear_head_rank_concepts_exactly(seed):
    """h(u ⊙ M) = ((u ⊙ M) W) · w + b: total index of concept i ∝ (u_i (W w)_i)²."""
    rng = np.random.default_rng(seed)
    r = 5
    W = rng.random((r, 12))
    w = rng.normal(size=12)
    c = rng.permutation([1.0, 2.0, 3.0, 4.0, 5.0]) * rng.choice([-1.0, 1.0], size=r)
    u = np.abs(c / (W @ w))  # u_i ≥ 0 with |u_i (W w)_i| = |c_i|
    contrib = u * (W @ w)

    def h(masks: np.ndarray) -> np.ndarray:
        return ((u * masks) @ W) @ w + 0.7

    s = sobol_total_indices(h, r, nb_design=64, seed=seed)
    assert np.array_equal(np.argsort(-s), np.argsort(-np.abs(contrib)))
    exact = contrib**2 / np.sum(contrib**2)
    assert np.abs(s - exact).max() < 0.1  # measured 0.008-0.067 over these seeds
    s_sobol = sobol_total_indices(h, r, nb_design=256, seed=seed, sampler="sobol")
    assert np.abs(s_sobol - exact).max() < 0.005  # measured <= 0.0017


# -- the tiny CNN: linear head identities, generic head ----------------------------------------
def test_fit_on_tiny_cnn(tiny, tiny_images, tiny_concepts):
    c = tiny_concepts
    assert isinstance(c, CraftConcepts) and c.layer == "relu2"  # the last non-negative map
    assert c.W.shape == (4, 16) and c.W.min() >= 0 and c.U.shape == (6 * 16, 4)
    assert c.patch == 9 and c.stride == 7  # round(32 / 3.5), int(0.8 · 9)
    assert 0 < c.reconstruction_error < 0.5
    assert c.cost.forward_passes == 2 + 6 * 16  # probe, read the layer, one per crop
    assert np.bincount(c.crop_boxes[:, 0]).tolist() == [16] * 6  # crops cut in chunks of images
    again = CraftConcepts.fit(tiny, tiny_images, target=1, n_concepts=4, seed=0)
    assert np.array_equal(again.W, c.W)  # seeded
    crops = c.top_crops(tiny, tiny_images, concept=2, k=3)
    assert len(crops) == 3 and all(cr.shape == (9, 9, 3) for cr in crops)


def test_occlusion_equals_grad_input_with_a_linear_head(tiny, tiny_images, tiny_concepts):
    occ = concept_importance(tiny_concepts, tiny, tiny_images[:3], method="occlusion")
    gxi = concept_importance(tiny_concepts, tiny, tiny_images[:3], method="grad_input")
    assert occ.extras["head"] == "linear" and gxi.extras["head"] == "linear"
    assert np.allclose(occ.extras["per_image"], gxi.extras["per_image"], atol=1e-10)
    assert np.abs(occ.scores).max() > 1e-3
    # Sobol on this head is exactly Jansen on y(M) = Σ_i c_i M_i with c = the occlusion scores
    sob = concept_importance(tiny_concepts, tiny, tiny_images[:1], method="sobol", nb_design=16)
    c = occ.extras["per_image"][0]
    ref = sobol_total_indices(lambda m: m @ c, 4, nb_design=16, seed=0)
    assert np.allclose(sob.scores, ref, atol=1e-9)
    assert [u.label for u in sob.units] == [f"concept {i}" for i in range(4)]


@pytest.mark.parametrize("method", ["sobol", "occlusion", "grad_input"])
def test_fast_head_matches_running_the_model(tiny, tiny_images, tiny_concepts, method):
    kw = {"method": method, "nb_design": 8}
    fast = concept_importance(tiny_concepts, tiny, tiny_images[:2], **kw)
    full = concept_importance(tiny_concepts, tiny, tiny_images[:2], head="model", **kw)
    assert fast.extras["head"] == "linear" and full.extras["head"] == "model"
    assert np.allclose(fast.scores, full.scores, rtol=1e-4, atol=1e-5)
    # the model head pays one forward pass per evaluation of h
    assert full.cost.forward_passes == 2 + full.extras["head_evaluations"]
    assert fast.cost.forward_passes == 2 + 2  # two images + two head-check passes


def test_inner_layer_uses_the_rest_of_the_model(tiny, tiny_images):
    c = fit_concepts(tiny, tiny_images[:2], target=0, layer="relu1", n_concepts=3)
    assert c.W.shape == (3, 8)
    imp = concept_importance(c, tiny, tiny_images[:1], method="sobol", nb_design=8)
    assert imp.extras["head"] == "model" and np.isfinite(imp.scores).all()
    assert imp.cost.forward_passes == 1 + 8 * (3 + 2)  # the image + nb_design·(r+2)
    maps = concept_maps(c, tiny, tiny_images[0])
    assert maps.shape == (3, 16, 16) and maps.min() >= 0


@pytest.mark.parametrize("importance", ["grad_input", "sobol"])
def test_craft_map_sums_as_documented(tiny, tiny_images, tiny_concepts, importance):
    img = tiny_images[4]
    a = ak.attribute_image(
        tiny, img, target=1, method="craft", concepts=tiny_concepts, importance=importance
    )
    imp, maps = a.extras["importances"], a.extras["concept_maps"]
    assert maps.shape == (4, 8, 8) and a.heatmap.shape == (32, 32)
    # 1. heatmap = Σ_i importance_i · upsample(map_i) (bilinear upsampling is linear)
    task = ImageTask(tiny, img, target=1)
    summed = sum(imp[i] * task.upsample(maps[i]) for i in range(4))
    assert np.allclose(a.heatmap, summed, rtol=1e-5, atol=1e-6)
    assert np.allclose(a.extras["cell_map"], np.tensordot(imp, maps, axes=1))
    # 2. logit = Σ_i contributions_i + residual + bias, contributions_i = mean(map_i)·(W w_c)_i
    dec = a.extras["logit_decomposition"]
    logit = tiny.predict(tiny.prepare(img)[None], output="logit")[0, 1]
    assert dec["contributions"].sum() + dec["residual"] + dec["bias"] == pytest.approx(
        logit, abs=1e-5
    )
    wc = tiny.module.fc.weight.detach().double()[1].numpy()
    per_concept = maps.reshape(4, -1).mean(axis=1) * (tiny_concepts.W @ wc)
    assert np.allclose(dec["contributions"], per_concept)
    if importance == "grad_input":
        assert np.allclose(imp, dec["contributions"])
    # the concept maps are those concept_maps() returns
    assert np.allclose(maps, concept_maps(tiny_concepts, tiny, img))


# -- the real model ----------------------------------------------------------------------------
def _quadrant_composite(model: ImageClassifier, q: int) -> np.ndarray:
    """A 224² image: chelsea (the cat) shrunk into quadrant ``q``, grey textures elsewhere."""

    def small(img: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(model.prepare(img)).permute(2, 0, 1)[None]
        t = torch.nn.functional.interpolate(t, size=(112, 112), mode="bilinear", antialias=True)
        return t[0].permute(1, 2, 0).numpy()

    fills = [small(np.repeat(f()[..., None], 3, 2)) for f in (data.grass, data.brick, data.gravel)]
    out, k = np.zeros((224, 224, 3), np.float32), 0
    for cell in range(4):
        r0, c0 = (cell // 2) * 112, (cell % 2) * 112
        if cell == q:
            out[r0 : r0 + 112, c0 : c0 + 112] = small(data.chelsea())
        else:
            out[r0 : r0 + 112, c0 : c0 + 112] = fills[k]
            k += 1
    return out


def test_real_model_concepts_find_the_cat(lite0):
    start = time.perf_counter()
    concepts = fit_concepts(lite0, [data.chelsea()], n_concepts=5, seed=0)
    assert concepts.layer == "_swish"  # Lite0's final ReLU6 (the last call of the shared module)
    assert concepts.target in {281, 282, 285} and concepts.W.shape == (5, 1280)
    assert concepts.cost.forward_passes == 2 + 16  # probe + read + 16 crops of 64 px
    composite = _quadrant_composite(lite0, q=3)
    a = ak.attribute_image(
        lite0, composite, target=concepts.target, method="craft", concepts=concepts, nb_design=8
    )
    imp = a.extras["importances"]
    assert a.extras["head"] == "linear" and np.isfinite(imp).all() and imp.max() > 0
    # the most important concept lives on the cat: measured 0.74 of its map's mass in the cat's
    # quadrant (chance 0.25; 0.74-0.78 for every quadrant)
    task = ImageTask(lite0, composite, target=concepts.target)
    best = task.upsample(a.extras["concept_maps"][int(np.argmax(imp))])
    assert best[112:, 112:].sum() / best.sum() > 0.5
    # the linear-head identities on the real model
    occ = concept_importance(concepts, lite0, [composite], method="occlusion")
    gxi = concept_importance(concepts, lite0, [composite], method="grad_input")
    assert np.allclose(occ.scores, gxi.scores, atol=1e-9)
    g = ak.attribute_image(
        lite0, composite, target=concepts.target, method="craft", concepts=concepts,
        importance="grad_input",
    )  # fmt: skip
    dec = g.extras["logit_decomposition"]
    logit = lite0.predict(lite0.prepare(composite)[None], output="logit")[0, concepts.target]
    total = dec["contributions"].sum() + dec["residual"] + dec["bias"]
    assert total == pytest.approx(logit, abs=1e-3)
    assert time.perf_counter() - start < 20


def test_real_model_self_contained_craft(lite0):
    a = ak.attribute_image(lite0, data.coffee(), method="craft", n_concepts=3, crop_size=112)
    assert a.params["fitted_here"] and a.params["layer"] == "_swish"
    assert a.target["class"] == 967  # espresso, the predicted class
    assert np.isfinite(a.heatmap).all() and a.heatmap.shape == (224, 224)
    assert a.cost.forward_passes == 2 * 2 + 4  # 4 crops of 112 px + probe, read, 2 head checks


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input(tiny, tiny_images, tiny_concepts, lite0):
    with pytest.raises(InputError, match="n_concepts must be >= 1"):
        fit_concepts(tiny, tiny_images, n_concepts=0)
    with pytest.raises(InputError, match="no images"):
        fit_concepts(tiny, [], n_concepts=2)
    with pytest.raises(InputError, match="no images"):
        concept_importance(tiny_concepts, tiny, [])
    with pytest.raises(InputError, match=re.escape("post-ReLU") + ".*'relu2'"):
        fit_concepts(tiny, tiny_images, layer="conv2")
    with pytest.raises(InputError, match=re.escape("post-ReLU") + ".*'_swish'"):
        fit_concepts(lite0, [data.chelsea()], layer="_bn1")
    with pytest.raises(InputError, match="not the input"):
        fit_concepts(tiny, tiny_images, layer="input")
    with pytest.raises(InputError, match="unknown importance method"):
        concept_importance(tiny_concepts, tiny, tiny_images, method="shap")
    with pytest.raises(InputError, match="unknown sampler"):
        concept_importance(tiny_concepts, tiny, tiny_images, sampler="random")
    with pytest.raises(InputError, match="nb_design"):
        concept_importance(tiny_concepts, tiny, tiny_images, nb_design=1)
    with pytest.raises(InputError, match="fitted at layer"):
        ak.attribute_image(
            tiny, tiny_images[0], method="craft", concepts=tiny_concepts, layer="relu1"
        )
    with pytest.raises(InputError, match="non-negative"):
        factorize(-np.ones((3, 4)), 2)
