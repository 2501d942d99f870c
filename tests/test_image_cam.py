"""CAM family (Grad-CAM, Grad-CAM++, Layer-CAM): closed forms on a GAP network, Captum parity
on the real EfficientNet-Lite0, localisation of a pasted object, upsampling and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

import attribkit as ak
import attribkit.methods.image.grad_cam as cam
from attribkit.core.errors import InputError
from attribkit.methods.image import gradients as image_gradients
from attribkit.models.image import ImageClassifier


# --- a small GAP network whose CAMs have closed forms ------------------------------------------
@pytest.fixture(scope="module")
def gap_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3, stride=2, padding=1),
        torch.nn.ReLU(),  # "3": the layer the CAMs read (8x8 at 16x16 input)
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 5),
    )
    model = ImageClassifier(net, input_size=None, normalize=None)
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    task = ak.ImageTask(model, img, target=2, output="logit")
    with torch.no_grad():
        acts = net[:4](torch.from_numpy(img).permute(2, 0, 1)[None])[0].double()
    w = net[6].weight[2].detach().double()
    return task, acts, w


def test_cams_match_their_closed_forms_on_a_gap_network(gap_net):
    # With global average pooling and a linear head, d logit / dA^k_ij = W_k / (h w) everywhere.
    task, acts, w = gap_net
    hw = acts.shape[1] * acts.shape[2]
    g = w / hw
    expected = {
        # Grad-CAM reduces to CAM (Zhou et al.): Σ_k W_k A^k / hw.
        "grad_cam": torch.einsum("k,khw->hw", g, acts),
        "layer_cam": torch.einsum("k,khw->hw", torch.clamp(g, min=0), acts),
        # Grad-CAM++: α = g² / (2g² + ΣA g³) = 1 / (2 + g ΣA), w_k = hw · α · ReLU(g).
        "grad_cam_plus_plus": torch.einsum(
            "k,khw->hw", hw * torch.clamp(g, min=0) / (2 + g * acts.sum((1, 2))), acts
        ),
    }
    for name, want in expected.items():
        a = getattr(cam, name)(task, layer="3")
        assert a.method == name and a.extras["map_shape"] == [8, 8]
        assert np.allclose(a.extras["layer_map"], torch.clamp(want, min=0).numpy(), atol=1e-6)
        assert a.cost.forward_passes == 1 and a.cost.backward_passes == 1
        signed = getattr(cam, name)(task, layer="3", relu=False)
        assert np.allclose(signed.extras["layer_map"], want.numpy(), atol=1e-6)


def test_nearest_upsampling_maps_each_cell_onto_a_pixel_block(gap_net):
    task = gap_net[0]
    a = cam.layer_cam(task, layer="3", upsample="nearest")
    cell = a.extras["layer_map"]
    assert np.array_equal(a.heatmap, np.kron(cell, np.ones((2, 2), np.float32)))
    b = cam.layer_cam(task, layer="3")  # bilinear (default) blends across cell borders
    assert not np.allclose(b.heatmap, a.heatmap)
    assert np.isclose(b.scores.sum(), b.heatmap.sum(), rtol=1e-5)


def test_bad_layers_and_options(gap_net, lite0):
    task = gap_net[0]
    with pytest.raises(InputError, match=r"valid layer names: 0, 1, 2"):
        cam.grad_cam(task, layer="conv5")
    with pytest.raises(InputError, match="CAM methods need a convolutional layer"):
        cam.grad_cam(task, layer="6")  # the Linear head: (1, 5) output
    with pytest.raises(InputError, match="'bilinear' or 'nearest'"):
        cam.grad_cam(task, layer="3", upsample="bicubic")
    with pytest.raises(InputError, match="valid layer names: _conv_stem"):
        ak.attribute_image(lite0, data.coffee(), method="grad_cam", layer="layer4")


class _Branchy(torch.nn.Module):
    """A conv read by Grad-CAM and followed by an in-place ReLU, a module called twice, and a
    layer that never reaches the output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.act = torch.nn.ReLU(inplace=True)
        self.shared = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.unused = torch.nn.Conv2d(3, 2, 1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(x)
        h = self.act(self.conv(x))
        h = self.shared(torch.tanh(self.shared(h)))
        return self.head(h.mean(dim=(2, 3)))


def test_the_graph_cut_at_the_layer_gives_the_full_graph_gradient():
    # The CAM forward records only what follows the layer; its gradient must equal the one
    # autograd gives on the whole graph, also with an in-place op after the layer and for a
    # module called twice (read at its last call).
    torch.manual_seed(0)
    net = _Branchy()
    model = ImageClassifier(net, input_size=None, normalize=None)
    img = np.random.default_rng(1).random((10, 10, 3)).astype(np.float32)
    task = ak.ImageTask(model, img, target=1, output="logit")
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    for layer, module in (("conv", net.conv), ("shared", net.shared)):
        store: dict = {}
        # Reference on the full graph: keep the layer's own output (its last call) and pass on a
        # copy, so that the in-place ReLU after "conv" does not overwrite the kept value.
        handle = module.register_forward_hook(lambda _m, _i, o, s=store: s.update(out=o) or o * 1)
        out = net(x)[0, 1]
        handle.remove()
        (want,) = torch.autograd.grad(out, store["out"])
        _, acts, grads, value = cam.layer_activations_and_gradients(task, layer)
        assert np.isclose(value, out.item())
        assert torch.allclose(acts, store["out"][0].detach().double(), atol=1e-6)
        assert torch.allclose(grads, want[0].double(), atol=1e-6), layer
    with pytest.raises(InputError, match="not connected to the output"):
        cam.grad_cam(task, layer="unused")


# --- the real model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chelsea_task(lite0):
    return ak.ImageTask(lite0, data.chelsea(), output="logit")


def test_grad_cam_equals_captum_layer_grad_cam(lite0, chelsea_task):
    from captum.attr import LayerAttribution, LayerGradCam

    task = chelsea_task
    x = task.tensor(task.image[None])
    for layer in ("final", "middle"):
        ours = ak.attribute_image(lite0, data.chelsea(), method="grad_cam", layer=layer)
        name = lite0.resolve_layer(layer)
        assert ours.extras["layer_name"] == name and ours.target["class"] == task.target
        theirs = LayerGradCam(lite0.module, lite0.get_layer(name)).attribute(
            x, target=task.target, relu_attributions=True
        )
        ref = theirs[0, 0].detach().numpy()
        scale = np.abs(ref).max()
        assert scale > 0 and np.allclose(ours.extras["layer_map"], ref, atol=1e-5 * scale)
        up = LayerAttribution.interpolate(theirs, (224, 224), "bilinear")[0, 0].detach().numpy()
        assert np.allclose(ours.heatmap, up, atol=1e-5 * scale)
    assert ours.extras["map_shape"] == [14, 14]  # "middle" = _blocks.5, stride 16


def test_integrated_gradients_equals_captum(lite0, chelsea_task):
    from captum.attr import IntegratedGradients

    task = chelsea_task
    x = task.tensor(task.image[None])
    ours = image_gradients.integrated_gradients(task, n_steps=4)
    theirs = IntegratedGradients(lite0.module).attribute(
        x, baselines=torch.zeros_like(x), target=task.target, n_steps=4, method="gausslegendre"
    )
    ref = theirs[0].sum(0).detach().numpy()
    assert np.allclose(ours.heatmap, ref, atol=1e-5 * np.abs(ref).max())


def _cat_on_grass(top: int, left: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 256x256 grass canvas with chelsea's face (112x128) pasted at (top, left), and the face's
    box (top, left, bottom, right) in the model's display image: ImageTask keeps a 256² image's
    size (short side already 256) and centre-crops 224², i.e. shifts by 16 px."""
    grass = data.grass()[:256, :256].astype(np.float32) / 255.0
    canvas = np.repeat(grass[:, :, None], 3, axis=2)
    face = resize(data.chelsea()[10:290, 40:380].astype(np.float32) / 255.0, (112, 128))
    canvas[top : top + 112, left : left + 128] = face
    return canvas, (top - 16, left - 16, top - 16 + 112, left - 16 + 128)


@pytest.mark.parametrize(("top", "left"), [(60, 40), (120, 110)])
def test_grad_cam_mass_lies_on_the_pasted_cat(lite0, top, left):
    img, (t, lf, b, r) = _cat_on_grass(top, left)
    task = ak.ImageTask(lite0, img, output="logit")
    assert np.allclose(task.image[t:b, lf:r], img[t + 16 : b + 16, lf + 16 : r + 16], atol=1e-6)
    assert 281 <= task.target <= 285  # still a cat (measured: Egyptian cat, p 0.46 / 0.74)
    hm = np.clip(cam.grad_cam(task).heatmap, 0, None)
    inside = hm[t:b, lf:r].sum() / hm.sum()
    # The box is 28.6 % of the image; measured inside fractions 0.831 and 0.789 (brick and
    # gravel backgrounds and another position: 0.80-0.84).
    assert inside > 0.6
