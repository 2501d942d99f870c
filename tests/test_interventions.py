"""Causal graphs of channels (attribkit.internals.interventions; Ahmad et al., 2023, our
reconstruction): ACE and path effects against closed forms on hand-built nets, the causal CAM,
channel reports on the tests' DigitsCNN, exact pass counts and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.internals import causal_graph, channel_report, channel_scores


class Pooled(nn.Module):
    """conv (1×1, 4 channels; channel 3 is the constant 0.5) → mean over positions → linear."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(4, 3, 1, 1, generator=g))
            self.conv.bias.copy_(torch.randn(4, generator=g) * 0.1)
            self.conv.weight[3] = 0.0
            self.conv.bias[3] = 0.5
            self.head.weight.copy_(torch.randn(3, 4, generator=g))
            self.head.bias.zero_()

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))


class TwoLayer(nn.Module):
    """a1 = (r, g); a2 = (a1_0 + a1_1, 2·a1_1); logits = (0, 3·z0 + z1), z = mean of a2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.weight[0, 0] = self.conv1.weight[1, 1] = 1.0
            self.conv2.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 2.0]]).view(2, 2, 1, 1))
            self.head.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.conv1(x)).mean(dim=(2, 3)))


def _images(n: int = 12, size: int = 5, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, size, size, 3)) * scale).astype(np.float32)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).double()


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_ace_is_the_exact_drop_for_a_linear_head_on_pooled_features(ablation: str) -> None:
    net, images, label = Pooled(), _images(), 1
    g = causal_graph(net, images, label, layers=("conv",), ablation=ablation, correct_only=False)
    x, net64 = _tensor(images), Pooled().double()
    with torch.no_grad():
        z = net64.pooled(x)  # (N, 4)
        p = torch.softmax(net64.head(z), -1)[:, label]
        fill = z.mean(0) if ablation == "mean" else torch.zeros(4, dtype=torch.float64)
        expected = []
        for j in range(4):
            zj = z.clone()
            zj[:, j] = fill[j]
            expected.append(float((p - torch.softmax(net64.head(zj), -1)[:, label]).mean()))
    np.testing.assert_allclose(g.ace["conv"], expected, atol=1e-6)
    np.testing.assert_allclose(g.fill["conv"], fill.numpy(), atol=1e-6)
    # the constant channel 3 has no effect under mean ablation, a real one under zero ablation
    if ablation == "mean":
        assert abs(g.ace["conv"][3]) < 1e-6  # up to batch-shape rounding
    else:
        assert abs(g.ace["conv"][3]) > 1e-3
    assert g.kept["conv"] == list(np.argsort(-np.asarray(expected), kind="stable")[:4])
    assert g.path_effect == {} and g.edges == []
    # N clean passes, then one pass per (channel, image)
    assert g.cost.forward_passes == 12 + 4 * 12 and g.model.cost.forward_passes == 60
    assert json.loads(json.dumps(g.to_dict()))["nodes"][0]["layer"] == "conv"


def test_taylor_and_activation_scores_match_their_closed_forms() -> None:
    net, images, label = Pooled(), _images(), 2
    g = causal_graph(net, images, label, layers=("conv",), correct_only=False)
    x, net64 = _tensor(images), Pooled().double()
    with torch.no_grad():
        z = net64.pooled(x)
        probs = torch.softmax(net64.head(z), -1)
        W = net64.head.weight
        # Σ_pos ∂p_c/∂a_j · a_j = p_c (W_cj − Σ_i p_i W_ij) z_j for a mean-pooled linear head
        taylor = (probs[:, label : label + 1] * (W[label] - probs @ W) * z).mean(0)
        act = net64.conv(x).abs().mean(dim=(0, 2, 3))
    before = g.model.cost.copy()
    np.testing.assert_allclose(channel_scores(g, "taylor"), taylor.numpy(), atol=1e-6)
    spent = g.model.cost - before
    assert (spent.forward_passes, spent.backward_passes) == (12, 12)
    np.testing.assert_allclose(channel_scores(g, "activation"), act.numpy(), atol=1e-6)
    np.testing.assert_allclose(channel_scores(g, "ace"), g.ace["conv"])
    np.testing.assert_allclose(channel_scores(g, "ace", subset=range(12)), g.ace["conv"])
    with pytest.raises(InputError, match="unknown method"):
        channel_scores(g, "lrp")


def test_path_effect_passes_only_through_the_kept_later_channels() -> None:
    images = _images(n=10, size=4, scale=0.3, seed=1)
    g = causal_graph(TwoLayer(), images, 1, layers=("conv2", "conv1"), k=1, correct_only=False)
    assert g.layers == ["conv1", "conv2"]  # forward order, whatever order was given
    x = _tensor(images)
    r, gr = x[:, 0].mean(dim=(1, 2)), x[:, 1].mean(dim=(1, 2))

    def drop(logit: torch.Tensor) -> float:
        return float((torch.sigmoid(3 * r + 5 * gr) - torch.sigmoid(logit)).mean())

    # last layer: ACE of a2_0 (logit keeps z1 = 2g) and a2_1 (logit keeps 3(r + g))
    np.testing.assert_allclose(g.ace["conv2"], [drop(2 * gr), drop(3 * r + 3 * gr)], atol=1e-6)
    assert g.kept["conv2"] == [0]
    # conv1 total effects: removing r removes 3r; removing g removes 3g + 2g
    np.testing.assert_allclose(g.ace["conv1"], [drop(5 * gr), drop(3 * r)], atol=1e-6)
    # path effects only through a2_0 (a2_1 keeps its clean 2g): removing g removes 3g only
    pe = [drop(5 * gr), drop(3 * r + 2 * gr)]
    np.testing.assert_allclose(g.path_effect["conv1"], pe, atol=1e-6)
    assert g.path_effect["conv1"][1] < g.ace["conv1"][1]
    (j,) = g.kept["conv1"]
    assert j == int(np.argmax(pe))
    # the edge j → a2_0 weighs mean |Δa2_0| = the mean of the removed input channel
    ((a, jj, b, kk, w),) = g.edges
    assert (a, jj, b, kk) == ("conv1", j, "conv2", 0)
    assert w == pytest.approx(float(x[:, j].mean()), abs=1e-6)
    # N clean + (2 + 2) N ACE + 2 N path passes
    assert g.cost.forward_passes == 7 * 10
    # stability is recomputed on disjoint probe halves, through the same kept channels
    assert channel_scores(g, "causal", "conv1", subset=range(10)) == pytest.approx(pe, abs=1e-6)


class Shared(TwoLayer):
    """TwoLayer with one ReLU module run after both convolutions (inputs are non-negative)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv2(self.act(self.conv1(x)))).mean(dim=(2, 3)))


def test_a_module_run_twice_is_intervened_at_its_last_call() -> None:
    images = _images(n=10, size=4, scale=0.3, seed=1)
    shared = causal_graph(Shared(), images, 1, layers="act", k=1, correct_only=False)
    plain = causal_graph(TwoLayer(), images, 1, layers="conv2", k=1, correct_only=False)
    np.testing.assert_allclose(shared.ace["act"], plain.ace["conv2"], atol=1e-6)


def test_causal_cam_is_the_ace_weighted_map_of_the_kept_channels() -> None:
    images = _images(n=10, size=4, scale=0.3, seed=1)
    g = causal_graph(TwoLayer(), images, 1, layers=("conv1", "conv2"), k=1, correct_only=False)
    before = g.model.cost.forward_passes
    a = g.attribution(images[0])
    assert g.model.cost.forward_passes - before == 1 and a.cost.forward_passes == 1
    x = images[0]
    np.testing.assert_allclose(a.heatmap, g.ace["conv2"][0] * (x[..., 0] + x[..., 1]), atol=1e-6)
    assert a.method == "causal_cam" and a.task == "image" and a.extras["channels"] == [0]
    assert len(a.units) == 16 and a.scores.sum() == pytest.approx(a.heatmap.sum(), rel=1e-6)
    # an earlier layer uses the path effects; its map is upsampled to the image
    early = g.attribution(images[0], layer="conv1")
    np.testing.assert_allclose(
        early.heatmap, g.path_effect["conv1"][g.kept["conv1"][0]] * x[..., g.kept["conv1"][0]],
        atol=1e-6,
    )  # fmt: skip
    back = Attribution.from_dict(json.loads(json.dumps(a.to_dict())))
    np.testing.assert_allclose(back.scores, a.scores)
    with pytest.raises(InputError, match="not in this graph"):
        g.attribution(images[0], layer="head")


def test_channel_report_on_the_digits_cnn() -> None:
    from digits_cnn import digits_classifier, digits_data

    model = digits_classifier()
    x, y = digits_data("test")
    g = causal_graph(model, x[0::2], 3, layers=("middle", "final"), labels=y[0::2])
    assert g.layers == ["features.0", "features.2"] and g.n_probe > 20
    n, cost = g.n_probe, g.cost.forward_passes
    assert cost == int((y[0::2] == 3).sum()) + n * (16 + 32) + n * 16
    r = channel_report(g, x[1::2], y[1::2])
    E = int((y[1::2] == 3).sum())
    assert r.n_eval == E and r.cost.forward_passes == 3 * E + 32 * n
    assert r.channels == g.kept["features.2"]
    # necessity and sufficiency of 4 of 32 channels; the 4 least effective ones do little
    assert r.acc_drop > 0.5 and r.acc_kept_only > 0.8
    weakest = list(np.argsort(g.ace["features.2"])[:4])
    low = channel_report(g, x[1::2], y[1::2], channels=weakest)
    assert low.p_drop < r.p_drop - 0.4 and np.isnan(low.stability)
    assert 0.0 <= r.stability <= 1.0 and len(r.subset_channels) == 2
    by_name = causal_graph(model, x[0::2], "3", layers="final", labels=y[0::2].astype(str))
    np.testing.assert_allclose(by_name.ace["features.2"], g.ace["features.2"], atol=1e-6)
    cam = g.attribution(x[1::2][y[1::2] == 3][0])
    assert cam.heatmap.shape == (8, 8) and cam.extras["map_shape"] == [4, 4]


def test_bad_input_says_what_to_fix() -> None:
    net, images = Pooled(), _images()
    with pytest.raises(InputError, match="no channels"):
        causal_graph(net, images, 0, layers=("head",), correct_only=False)
    with pytest.raises(InputError, match="no layer 'nope'"):
        causal_graph(net, images, 0, layers=("nope",))
    with pytest.raises(InputError, match="hidden layers"):
        causal_graph(net, images, 0, layers=("input",))
    with pytest.raises(InputError, match="no image of class '2'"):
        causal_graph(net, images, 2, layers=("conv",), labels=np.zeros(12, dtype=int))
    pred = net(_tensor(images).float()).argmax(1).numpy()
    absent = next(c for c in range(3) if c not in pred)
    with pytest.raises(InputError, match="no probe image is classified as"):
        causal_graph(net, images, absent, layers=("conv",))
    with pytest.raises(InputError, match="unknown ablation"):
        causal_graph(net, images, 0, layers=("conv",), ablation="noise")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="k must be"):
        causal_graph(net, images, 0, layers=("conv",), k=0)
    with pytest.raises(InputError, match="out of range"):
        causal_graph(net, images, 7, layers=("conv",))
    with pytest.raises(InputError, match="display images"):
        causal_graph(net, np.zeros((0, 5, 5, 3)), 0, layers=("conv",))
    g = causal_graph(net, images, 0, layers=("conv",), correct_only=False)
    with pytest.raises(InputError, match="channels must be distinct"):
        channel_report(g, images, channels=[0, 9])
    with pytest.raises(InputError, match="no image of class"):
        channel_report(g, images, labels=np.ones(12, dtype=int))
