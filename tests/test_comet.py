"""COMET (Zhang, Lee & Wang, ECCV 2024): the authors' loss pieces on hand-made tensors, the
training protocol (frozen detector, predictor stepped on its own loss only), the explanation as
a counted Attribution, the evaluators, a short training run on 16 × 16 digit canvases, and bad
input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from attribkit.by_design import (
    Comet,
    area_penalty,
    canvas_cnn,
    canvas_selector,
    comet_loss,
    coverage,
    digit_canvases,
    fidelity,
    mask_pxap,
    top_k_masks,
    train_classifier,
    train_comet,
)
from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError, ScorerError

T = torch.tensor


# --- loss pieces --------------------------------------------------------------------------------
def test_hinge_loss_values():
    half = torch.full((2, 1, 4, 4), 0.5)  # area 0.5 < 0.6: no area cost
    # 1·loss1 + 4·max(loss1 − loss2 + 2, 0)
    assert float(comet_loss(T(1.0), T(2.0), half)) == pytest.approx(1 + 4 * 1.0)
    assert float(comet_loss(T(1.0), T(2.5), half)) == pytest.approx(1 + 4 * 0.5)
    assert float(comet_loss(T(1.0), T(3.0), half)) == pytest.approx(1.0)  # hinge at 0
    assert float(comet_loss(T(1.0), T(9.0), half)) == pytest.approx(1.0)  # no reward beyond
    assert float(comet_loss(T(1.0), T(2.0), half, m_closs=1, gap=0.5)) == pytest.approx(1.0)
    # the paper's form: loss1 − a·loss2, unbounded
    assert float(comet_loss(T(1.0), T(9.0), half, loss="paper")) == pytest.approx(-8.0)
    assert float(comet_loss(T(1.0), T(9.0), half, loss="paper", a=0.5)) == pytest.approx(-3.5)
    # the ablation without a detector: loss1 + area
    assert float(comet_loss(T(1.0), None, half)) == pytest.approx(1.0)


def test_area_hinge_values():
    masks = torch.stack([torch.full((1, 4, 4), 0.8), torch.full((1, 4, 4), 0.4)])
    # 100 · mean(max(0.8 − 0.6, 0), max(0.4 − 0.6, 0)) = 100 · 0.1
    assert float(area_penalty(masks)) == pytest.approx(10.0)
    assert float(area_penalty(masks[:, 0], threshold=0.3, weight=1.0)) == pytest.approx(0.3)
    assert float(comet_loss(T(0.0), T(5.0), masks)) == pytest.approx(10.0)
    with pytest.raises(InputError, match="mask batch"):
        area_penalty(torch.ones(4, 4))
    with pytest.raises(InputError, match="unknown COMET loss"):
        comet_loss(T(1.0), T(1.0), masks, loss="minimax")


# --- a small trained setting (seconds) ----------------------------------------------------------
@pytest.fixture(scope="module")
def canvases():
    return digit_canvases("train", seed=0), digit_canvases("test", seed=0)


@pytest.fixture(scope="module")
def detector(canvases):
    train, _ = canvases
    return train_classifier(canvas_cnn(seed=0), (train.x, train.y), epochs=8, lr=1e-2)


@pytest.fixture(scope="module")
def comet(canvases, detector):
    train, _ = canvases
    return train_comet(
        canvas_selector(seed=1), canvas_cnn(seed=2), detector, (train.x, train.y),
        epochs=6, lr=4e-3,
    )  # fmt: skip


def test_canvases():
    c = digit_canvases("test", seed=3)
    assert c.x.shape == (597, 1, 16, 16) and c.y.shape == (597,)
    for i in range(5):
        r, col = 8 * (c.cell[i] // 2), 8 * (c.cell[i] % 2)
        outside = c.x[i, 0].copy()
        outside[r : r + 8, col : col + 8] = 0
        assert not outside.any() and c.cell_mask[i].sum() == 64
        assert (c.digit_mask[i] == (c.x[i, 0] > 0)).all() and c.cell_mask[i][c.digit_mask[i]].all()
    assert (
        len(digit_canvases("train", copies=2)) == 5
        and len(digit_canvases("train", copies=2).x) == 2400
    )


def test_short_training_beats_chance(canvases, comet, detector):
    _, test = canvases
    r = comet.evaluate(test.x, test.y, test.digit_mask)
    assert r["accuracy"] > 0.3  # chance 0.1
    assert 0.0 < r["area"] < 1.0 and 0.0 <= r["coverage"] <= 1.0
    assert r["pxap"] > test.digit_mask.mean()  # above the pixel share (chance PxAP)
    assert r["d_complement"] < r["d_selected"]
    assert len(comet.history) == 6 and comet.history[-1]["loss1"] < comet.history[0]["loss1"]
    assert comet.detector is detector and comet.fill.shape == (1,)


def test_detector_frozen(canvases):
    train, _ = canvases
    det = canvas_cnn(seed=5)
    det.train()  # even a detector handed over in train mode is run and left in eval mode
    det.features[0].weight.requires_grad_(False)  # its flags are restored afterwards
    before = copy.deepcopy(det.state_dict())
    flags = [p.requires_grad for p in det.parameters()]
    model = train_comet(
        canvas_selector(), canvas_cnn(), det, (train.x[:128], train.y[:128]), epochs=1, lr=1e-2
    )
    after = det.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not det.training and model.detector is det
    assert [p.requires_grad for p in det.parameters()] == flags
    assert all(p.grad is None for p in det.parameters())


def test_predictor_not_stepped_by_the_selector_loss(canvases, detector):
    """One full-batch step with the hinge on (m_closs = 4, gap large enough to be active) and
    off (m_closs = 0): the predictor ends identical (it sees ∇loss1 only), the selector not."""
    train, _ = canvases
    data = (train.x[:96], train.y[:96])
    sel, pred = canvas_selector(seed=3), canvas_cnn(seed=4)
    runs = []
    for m_closs in (0.0, 4.0):
        s, p = copy.deepcopy(sel), copy.deepcopy(pred)
        train_comet(s, p, detector, data, epochs=1, batch_size=96, lr=1e-2, m_closs=m_closs, gap=50)
        runs.append((s, p))
    (s0, p0), (s1, p1) = runs
    assert all(torch.equal(a, b) for a, b in zip(p0.parameters(), p1.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(s0.parameters(), s1.parameters(), strict=True))
    assert not torch.equal(next(p0.parameters()), next(pred.parameters()))  # it was stepped


def test_explain_is_one_counted_pass(canvases, comet):
    _, test = canvases
    image = test.x[7]
    before = comet.meter.cost.forward_passes
    a = comet.explain(image)
    assert isinstance(a, Attribution) and a.task == "by_design" and a.method == "comet"
    assert a.cost.forward_passes == 1 and a.cost.batches == 1
    assert comet.meter.cost.forward_passes == before + 1
    assert a.heatmap.shape == (16, 16) and len(a.units) == 256
    np.testing.assert_allclose(a.heatmap, comet.mask(test.x[7:8])[0], atol=1e-6)
    np.testing.assert_allclose(a.scores, a.heatmap.ravel(), atol=1e-6)
    probs = comet.predict(test.x[7:8])[0]
    assert a.target["class"] == int(probs.argmax())
    assert a.target["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    assert a.input["image"].shape == (16, 16, 3)
    back = Attribution.from_dict(json.loads(json.dumps(a.to_dict())))
    np.testing.assert_allclose(back.heatmap, a.heatmap, atol=1e-6)
    assert comet.explain(image[0]).target == a.target  # (H, W) for a one-channel model


def test_ablation_without_detector(canvases):
    train, test = canvases
    m = train_comet(canvas_selector(), canvas_cnn(), None, (train.x[:128], train.y[:128]), epochs=1)
    assert m.detector is None and "no detector" in m.name
    r = m.evaluate(test.x[:50], test.y[:50], test.digit_mask[:50])
    assert "d_selected" not in r and np.isnan(m.history[0]["loss2"])


# --- evaluators ---------------------------------------------------------------------------------
def test_mask_pxap_and_coverage():
    rng = np.random.default_rng(0)
    gt = rng.random((3, 8, 8)) < 0.2
    assert mask_pxap(gt.astype(float), gt) == pytest.approx(1.0)
    scores = rng.random((3, 8, 8))
    assert mask_pxap(scores, gt) == pytest.approx(
        average_precision_score(gt.ravel(), scores.ravel())
    )
    m = np.zeros((4, 4))
    g = np.zeros((4, 4), bool)
    g[0, :] = True
    m[0, :2] = 0.9
    m[0, 2] = 0.5  # not above the threshold
    assert coverage(m, g) == pytest.approx(0.5)
    assert coverage(m, g, threshold=0.4) == pytest.approx(0.75)


def test_top_k_masks():
    m = np.arange(16, dtype=float).reshape(1, 4, 4)
    k = top_k_masks(m, 0.25)
    assert k.dtype == bool and k.sum() == 4 and k[0, 3].all()
    assert top_k_masks(np.ones((4, 4)), 0.5).sum() == 8  # ties: a fixed area all the same


def test_fidelity_exact(canvases, detector):
    _, test = canvases
    x, y = test.x[:100], test.y[:100]
    with torch.no_grad():
        full = detector(torch.from_numpy(x)).argmax(1).numpy()
        blank = detector(torch.zeros(1, 1, 16, 16)).argmax(1).item()
    from attribkit.core.cost import CostMeter

    meter = CostMeter()
    r = fidelity(detector, x, y, np.ones((100, 16, 16)), meter=meter)
    assert r["d_selected"] == pytest.approx((full == y).mean())
    assert r["d_complement"] == pytest.approx((y == blank).mean())  # a blank canvas
    assert meter.cost.forward_passes == 200
    swapped = fidelity(detector, x, y, np.zeros((100, 16, 16)))
    assert swapped == {"d_selected": r["d_complement"], "d_complement": r["d_selected"]}


# --- bad input ----------------------------------------------------------------------------------
class _WrongSizeSelector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_bad_input(canvases, comet, detector):
    train, test = canvases
    data = (train.x[:32], train.y[:32])
    with pytest.raises(InputError, match="shape"):
        mask_pxap(np.zeros((8, 8)), np.ones((16, 16), bool))  # a mask of the wrong size
    with pytest.raises(InputError, match="empty"):
        mask_pxap(np.zeros((8, 8)), np.zeros((8, 8), bool))
    with pytest.raises(InputError, match="NaN"):
        coverage(np.full((4, 4), np.nan), np.ones((4, 4), bool))
    with pytest.raises(ScorerError, match="one mask logit per pixel"):
        train_comet(_WrongSizeSelector(), canvas_cnn(), detector, data, epochs=1)
    with pytest.raises(InputError, match="classes"):
        train_comet(canvas_selector(), canvas_cnn(n_classes=12), detector, data, epochs=1)
    with pytest.raises(InputError, match="out of range"):
        train_comet(canvas_selector(), canvas_cnn(n_classes=5), None, data, epochs=1)
    with pytest.raises(InputError, match="labels for"):
        train_comet(canvas_selector(), canvas_cnn(), detector, (train.x[:32], train.y[:5]))
    with pytest.raises(InputError, match="unknown COMET loss"):
        train_comet(canvas_selector(), canvas_cnn(), detector, data, loss="minimax")
    with pytest.raises(InputError, match="separate"):
        pred = canvas_cnn()
        train_comet(canvas_selector(), pred, pred, data)
    with pytest.raises(InputError, match="NaN"):
        bad = train.x[:32].copy()
        bad[0, 0, 0, 0] = np.nan
        train_comet(canvas_selector(), canvas_cnn(), detector, (bad, train.y[:32]))
    with pytest.raises(InputError, match="channels"):
        train_comet(canvas_selector(), canvas_cnn(), detector, data, fill=[0.0, 0.0])
    with pytest.raises(InputError, match="do not fit"):
        fidelity(detector, test.x[:4], test.y[:4], np.ones((4, 8, 8)))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        fidelity(detector, test.x[:4], test.y[:4], np.full((4, 16, 16), 2.0))
    with pytest.raises(InputError, match="one image"):
        comet.explain(test.x[:2])
    with pytest.raises(InputError, match="could not run"):
        comet.mask(np.zeros((2, 3, 16, 16), np.float32))  # three channels for a 1-channel model
    with pytest.raises(InputError, match="area"):
        top_k_masks(np.zeros((4, 4)), 0.0)
    with pytest.raises(InputError, match="init_area"):
        canvas_selector(init_area=1.0)
    assert isinstance(comet, Comet) and "frozen detector" in repr(comet)
