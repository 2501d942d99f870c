"""Affinity Explainer (De Marinis et al., 2025): exact maps on hand-built attentions, the level
ablation, the three variants, the cut protocol on a hand-made segmenter, bad input, and a small
trained DCAMA-like digit matcher end to end."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attribkit as ak
from attribkit.by_design.affinity import (
    DigitMatcher,
    MatchingSegmenter,
    MatchResult,
    SupportTask,
    attribute_support,
    digit_episodes,
    foreground_iou,
    segmentation_iou,
    support_curves,
    support_cut_curve,
    support_weight,
    train_digit_matcher,
)
from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError, ScorerError

torch.set_num_threads(1)


class FixedMatcher:
    """A matching segmenter with hand-set affinities (one (Nq, K·Ns) matrix per level, the same
    for every episode) and a linear decoder: logits = Σ_l alpha_l · up(coarse_l) + bias, where
    coarse_l = softmax(A_l) @ (support mask area-pooled to the level)."""

    def __init__(self, affinities, query_shapes, support_shapes, alphas, bias=0.0):
        self.A = [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in affinities]
        self.qs, self.ss = list(query_shapes), list(support_shapes)
        self.alphas, self.bias = list(alphas), bias
        self.n_levels = len(self.A)

    def match(self, query, support, support_mask):
        b, k = support.shape[:2]
        coarse = []
        for a, (hq, wq), (hs, ws) in zip(self.A, self.qs, self.ss, strict=True):
            m = F.adaptive_avg_pool2d(support_mask.double(), (hs, ws)).reshape(b, -1)
            c = (a.softmax(-1)[None] @ m[..., None]).reshape(b, 1, hq, wq)
            coarse.append(c)
        res = MatchResult(
            torch.empty(0),
            [a[None].expand(b, -1, -1) for a in self.A],
            self.qs,
            self.ss,
            int(k),
            {"coarse": coarse, "size": tuple(query.shape[-2:])},
        )
        res.logits = self.decode(res)
        return res

    def decode(self, result, ablate=()):
        out = torch.full((result.state["coarse"][0].shape[0], *result.state["size"]), self.bias)
        for level, (c, alpha) in enumerate(zip(result.state["coarse"], self.alphas, strict=True)):
            if level not in ablate:
                up = F.interpolate(c, size=result.state["size"], mode="bilinear")
                out = out + alpha * up[:, 0]
        return out.float()


class CopyMatcher(FixedMatcher):
    """Each query pixel attends (temperature 50) to the same pixel of every shot; the prediction
    is foreground where the mean attended support mask exceeds 1/2: the query's foreground is
    the kept part of the support mask."""

    def __init__(self, size=(4, 4), shots=1):
        n = size[0] * size[1]
        a = np.tile(50.0 * np.eye(n), (1, shots))
        super().__init__([a], [size], [size], [20.0], bias=-10.0)


P = np.array(
    [[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.1, 0.7]]
)
ONES = np.ones((2, 2), np.float32)


def _episode(mask=((1, 0), (0, 1))):
    m = np.asarray(mask, np.float32)
    return ONES, m, ONES  # support, support mask, query (2×2 grey)


def _affex_by_hand(p, region, level=None, support_level=None, support_size=None, shots=1):
    """Steps 2–4 by hand: each support position's query map (resized bilinearly from ``level`` to
    the region's size when given) normalised to sum 1, its mean over the region, per shot
    resized from ``support_level`` to ``support_size``, normalised over all shots."""
    cols = torch.tensor(p.T, dtype=torch.float64)
    if level is not None:
        cols = F.interpolate(cols.reshape(-1, 1, *level), size=region.shape, mode="bilinear")
    cols = cols.reshape(len(cols), -1)
    cols = cols / cols.sum(dim=1, keepdim=True)
    c = cols[:, torch.from_numpy(region.reshape(-1))].mean(dim=1)
    if support_level is not None:
        c = c.reshape(shots, 1, *support_level)
        c = F.interpolate(c, size=support_size, mode="bilinear")
    c = c.reshape(-1).numpy()
    return c / c.sum()


def _min_max(x):
    return (x - x.min()) / (x.max() - x.min())


# --- exact maps ---------------------------------------------------------------------------------


def test_affex_on_a_hand_built_attention_gives_the_exact_map():
    model = FixedMatcher([np.log(P)], [(2, 2)], [(2, 2)], [1.0])
    assert isinstance(model, MatchingSegmenter)
    region = np.array([[True, True], [False, False]])
    att = attribute_support(model, *_episode(), explanation_mask=region)
    # columns sum to 1.15, 1.15, 0.55, 1.15; the region's mean of each column is 0.4/1.15,
    # 0.4/1.15, 0.1/0.55, 0.1/1.15; min–max: 1, 1, 4/11, 0
    np.testing.assert_allclose(att.scores, [1, 1, 4 / 11, 0], atol=1e-9)
    assert att.heatmap.shape == (2, 2) and att.extras["shot_maps"].shape == (1, 2, 2)
    assert att.task == "few_shot" and att.method == "affinity_explainer"
    assert att.target["explanation_mask"] == "given" and att.target["region_pixels"] == 2
    # one forward pass and one decoder pass for the single level; no gradient
    assert (att.cost.forward_passes, att.cost.backward_passes) == (2, 0)


def test_the_softmax_is_over_support_positions_and_optional():
    a = np.array([[1.0, 2.0, 0.0, 0.5], [0.0, 0.0, 3.0, 1.0], [0.5, 0.0, 0.0, 0.0], [0, 1, 2, 3]])
    model = FixedMatcher([a], [(2, 2)], [(2, 2)], [1.0])
    region = np.array([[True, False], [True, False]])
    soft = attribute_support(model, *_episode(), explanation_mask=region)
    p = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(soft.scores, _min_max(_affex_by_hand(p, region)), atol=1e-9)
    raw = attribute_support(model, *_episode(), explanation_mask=region, use_softmax=False)
    np.testing.assert_allclose(raw.scores, _min_max(_affex_by_hand(a, region)), atol=1e-9)
    assert not np.allclose(soft.scores, raw.scores)


def test_levels_are_weighted_by_their_ablation_effect():
    p2 = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.25] * 4, [0.7, 0.1, 0.1, 0.1]])
    alphas = [2.0, -3.0]
    model = FixedMatcher([np.log(P), np.log(p2)], [(2, 2)] * 2, [(2, 2)] * 2, alphas)
    support, mask, query = _episode()
    region = np.array([[True, True], [False, False]])
    att = attribute_support(model, support, mask, query, explanation_mask=region)
    # zeroing level l moves the region's mean logit by alpha_l · (region's mean of coarse_l)
    m, top = mask.reshape(-1), region.reshape(-1)
    effects = [abs(al * (p @ m)[top].mean()) for al, p in zip(alphas, [P, p2], strict=True)]
    weights = np.array(effects) / sum(effects)
    np.testing.assert_allclose(att.extras["level_weights"], weights, atol=1e-9)
    levels = [_affex_by_hand(p, region) for p in (P, p2)]
    np.testing.assert_allclose(att.extras["level_maps"].reshape(2, -1), levels, atol=1e-9)
    expected = _min_max(weights[0] * levels[0] + weights[1] * levels[1])
    np.testing.assert_allclose(att.scores, expected, atol=1e-9)
    # one forward + one decoder pass per level; "mean" weighs the levels equally, one pass
    assert att.cost.forward_passes == 3
    mean = attribute_support(
        model, support, mask, query, explanation_mask=region, aggregation="mean"
    )
    np.testing.assert_allclose(mean.scores, _min_max(levels[0] + levels[1]), atol=1e-9)
    assert mean.cost.forward_passes == 1


def test_coarse_levels_are_resized_to_the_query_and_the_support():
    # a 2×2 query level explained on a 4×4 query, a 2×2 support level on a 4×4 support
    rng = np.random.default_rng(1)
    p = rng.random((4, 4)) + 0.05
    p /= p.sum(axis=1, keepdims=True)
    model = FixedMatcher([np.log(p)], [(2, 2)], [(2, 2)], [1.0])
    ones = np.ones((4, 4), np.float32)
    mask = np.zeros((4, 4), np.float32)
    mask[:2, :2] = 1
    region = np.zeros((4, 4), bool)
    region[:2, 1:3] = True
    att = attribute_support(model, ones, mask, ones, explanation_mask=region)
    hand = _affex_by_hand(p, region, (2, 2), (2, 2), (4, 4))
    np.testing.assert_allclose(att.scores, _min_max(hand), atol=1e-9)
    # the resized maps are not those of the 2×2 level read pixel by pixel
    assert att.heatmap.shape == (4, 4) and len(np.unique(att.scores.round(9))) > 4


def test_the_three_variants_on_a_tiny_case():
    model = FixedMatcher([np.log(P)], [(2, 2)], [(2, 2)], [1.0])
    region = np.array([[True, True], [False, False]])
    plain = np.array([1, 1, 4 / 11, 0])
    mask = np.array([1, 0, 1, 0], np.float32)  # shot pixels 0 and 2 are the object
    support, query = ONES, ONES
    kw = {"explanation_mask": region, "blur_kernel": 1}  # kernel 1: the mask itself
    masked = attribute_support(model, support, mask.reshape(2, 2), query, "masked", **kw)
    np.testing.assert_allclose(masked.scores, _min_max(plain * mask), atol=1e-9)
    signed = attribute_support(model, support, mask.reshape(2, 2), query, "signed", **kw)
    # × (2m − 1): [1, -1, 4/11, 0], min–max → [1, 0, 15/22, 1/2]
    np.testing.assert_allclose(signed.scores, [1, 0, 15 / 22, 0.5], atol=1e-9)
    assert masked.params["variant"] == "masked" and signed.params["variant"] == "signed"


def test_the_mask_blur_is_a_normalised_gaussian():
    mask = np.zeros((1, 9, 9), np.float32)
    mask[0, 4, 4] = 1
    w = support_weight(mask, "masked", blur_kernel=5, blur_sigma=1.0)[0]
    g = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    np.testing.assert_allclose(w[2:7, 2:7], np.outer(g, g) / g.sum() ** 2, atol=1e-12)
    assert w.sum() == pytest.approx(1.0) and w[0].max() == 0
    full = support_weight(np.ones((1, 6, 6), np.float32), "signed", blur_kernel=5, blur_sigma=2)
    np.testing.assert_allclose(full, 1.0)  # reflect padding keeps a full mask at 1
    dilated = support_weight(mask, "masked", blur_kernel=1, blur_sigma=1.0, dilation=1)[0]
    assert dilated.sum() == 9 and dilated[3:6, 3:6].min() == 1
    assert support_weight(mask, "plain") is None


def test_an_empty_prediction_falls_back_to_all_query_pixels():
    model = FixedMatcher([np.log(P)], [(2, 2)], [(2, 2)], [1.0], bias=-5.0)
    att = attribute_support(model, *_episode())
    assert att.target["fallback"] is True and att.target["region_pixels"] == 4
    assert att.target["explanation_mask"].startswith("all")
    # every support position's query map sums to 1, so over all query pixels they tie: flat
    np.testing.assert_array_equal(att.scores, np.zeros(4))


def test_per_shot_maps_are_normalised_over_all_shots():
    rng = np.random.default_rng(0)
    p = rng.random((4, 8)) + 0.1
    p /= p.sum(axis=1, keepdims=True)
    model = FixedMatcher([np.log(p)], [(2, 2)], [(2, 2)], [1.0])
    support = np.ones((2, 2, 2), np.float32)
    mask = np.array([[[1, 0], [0, 0]], [[1, 1], [0, 0]]], np.float32)
    region = np.array([[True, True], [False, False]])
    att = attribute_support(model, support, mask, ONES, explanation_mask=region)
    expected = _min_max(_affex_by_hand(p, region)).reshape(2, 2, 2)
    np.testing.assert_allclose(att.extras["shot_maps"], expected, atol=1e-9)
    np.testing.assert_allclose(att.heatmap, np.concatenate(expected, axis=1), atol=1e-9)
    assert len(att) == 8 and att.units[5].meta == {"shot": 1} and att.units[5].box == (0, 1, 1, 2)
    back = Attribution.from_dict(json.loads(json.dumps(att.to_dict())))
    np.testing.assert_allclose(back.heatmap, att.heatmap)
    assert back.task == "few_shot" and back.input["shots"] == 2


# --- the cut protocol and curves ------------------------------------------------------------------


def _copy_episode():
    support = np.ones((4, 4), np.float32)
    mask = np.zeros((4, 4), np.float32)
    mask[1, 1:3] = mask[2, 1:3] = 1  # a 4-pixel object
    return support, mask, support.copy(), mask.copy()  # the query's object = the support's


def test_the_cut_curve_on_a_hand_made_segmenter():
    model = CopyMatcher()
    support, mask, query, qmask = _copy_episode()
    fractions = (1 / 16, 0.25, 0.5)
    # ranking the object's pixels first: 1 of 4 kept, then all of them
    first = support_cut_curve(
        model, support, mask, query, qmask, mask + 0.01 * np.arange(16).reshape(4, 4), fractions
    )
    np.testing.assert_array_equal(first.counts, [1, 4, 8])
    assert first.full_iou == 1.0
    np.testing.assert_allclose(first.iou, [0.25, 1, 1])
    np.testing.assert_allclose(first.loss, [0.75, 0, 0])
    # ranking them last: the 8 kept pixels are all background, the object is lost
    last = support_cut_curve(model, support, mask, query, qmask, 1 - mask, fractions)
    np.testing.assert_allclose(last.loss, [1, 1, 1])
    # one forward pass per fraction and one for the full support
    assert first.cost.forward_passes == 4
    # of="mask": fractions of the object's 4 pixels
    rel = support_cut_curve(model, support, mask, query, qmask, mask, (0.5, 1.0), of="mask")
    np.testing.assert_array_equal(rel.counts, [2, 4])
    np.testing.assert_allclose(rel.loss, [0.5, 0])
    assert json.loads(json.dumps(rel.to_dict()))["full_iou"] == 1.0


def test_the_cut_removes_image_and_mask_together():
    support, mask, query, qmask = _copy_episode()
    task = SupportTask(
        CopyMatcher(), support, mask, query, query_mask=qmask, explanation_mask="all"
    )
    keep = np.zeros(16, bool)
    keep[[5, 0]] = True
    images, masks = task.units.compose_batch(keep)
    assert images.shape == (1, 1, 1, 4, 4) and masks.shape == (1, 1, 4, 4)
    assert images.sum() == 2 and masks.sum() == 1 and masks[0, 0, 1, 1] == 1


def test_insertion_and_deletion_over_support_pixels():
    model = CopyMatcher()
    support, mask, query, qmask = _copy_episode()
    good = support_curves(
        model, support, mask, query, mask, query_mask=qmask, measure="iou", steps=17
    )
    bad = support_curves(
        model, support, mask, query, 1 - mask, query_mask=qmask, measure="iou", steps=17
    )
    # the object's pixels first: IoU rises at once on insertion and falls at once on deletion
    np.testing.assert_allclose(good.insertion.values[:5], [0, 0.25, 0.5, 0.75, 1])
    assert good.deletion.values[4] == 0
    assert good.insertion.auc > bad.insertion.auc and good.deletion.auc < bad.deletion.auc
    prob = support_curves(model, support, mask, query, mask, steps=5)
    assert prob.insertion.values[0] < 0.01 and prob.insertion.values[-1] > 0.99


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_clear_message():
    model = FixedMatcher([np.log(P)], [(2, 2)], [(2, 2)], [1.0])
    with pytest.raises(InputError, match="does not fit the support images"):
        attribute_support(model, ONES, np.ones((3, 3), np.float32), ONES)
    with pytest.raises(InputError, match="shot 0 is empty"):
        attribute_support(model, ONES, np.zeros((2, 2), np.float32), ONES)
    two = np.ones((2, 2, 2), np.float32)
    with pytest.raises(InputError, match="shot 1 is empty"):
        attribute_support(model, two, np.stack([ONES, 0 * ONES]), ONES)
    with pytest.raises(InputError, match="channel"):
        attribute_support(model, ONES, ONES, np.ones((2, 2, 3), np.float32))
    with pytest.raises(InputError, match="query mask has shape"):
        attribute_support(model, ONES, ONES, ONES, query_mask=np.ones((3, 3)))
    with pytest.raises(InputError, match="needs the query_mask"):
        attribute_support(model, ONES, ONES, ONES, explanation_mask="gt")
    with pytest.raises(InputError, match="variant"):
        attribute_support(model, ONES, ONES, ONES, "blurred")
    with pytest.raises(InputError, match="odd integer"):
        attribute_support(model, ONES, ONES, ONES, "masked", blur_kernel=4)
    one = np.ones((1, 1), np.float32)
    with pytest.raises(InputError, match="only 1 unit"):
        attribute_support(FixedMatcher([[0.0]], [(1, 1)], [(1, 1)], [1.0]), one, one, one)
    with pytest.raises(InputError, match="not a MatchingSegmenter"):
        attribute_support(object(), ONES, ONES, ONES)
    with pytest.raises(InputError, match="NaN"):
        attribute_support(model, ONES * np.nan, ONES, ONES)
    with pytest.raises(InputError, match="one value per support pixel"):
        support_cut_curve(model, ONES, ONES, ONES, ONES, np.ones(5))
    with pytest.raises(InputError, match="fractions"):
        support_cut_curve(model, ONES, ONES, ONES, ONES, np.ones(4), (0.0, 0.5))


def test_a_model_returning_nan_or_a_wrong_affinity_is_refused():
    class Broken(FixedMatcher):
        def match(self, query, support, support_mask):
            res = super().match(query, support, support_mask)
            res.logits = res.logits * float("nan")
            return res

    with pytest.raises(ScorerError, match="NaN"):
        attribute_support(Broken([np.log(P)], [(2, 2)], [(2, 2)], [1.0]), ONES, ONES, ONES)

    class Wrong(FixedMatcher):
        def match(self, query, support, support_mask):
            res = super().match(query, support, support_mask)
            res.support_shapes = [(3, 3)]  # claims a 3×3 support level for 4 columns
            return res

    wrong = Wrong([np.log(P)], [(2, 2)], [(2, 2)], [1.0])
    with pytest.raises(ScorerError, match="does not fit"):
        attribute_support(wrong, ONES, ONES, ONES, explanation_mask="all")


# --- the trained DCAMA-like digit matcher -------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _trained() -> DigitMatcher:
    return train_digit_matcher(n_episodes=2000, epochs=2, lr=3e-3, seed=0)  # ~5 s


def test_digit_episodes_split_base_and_novel_classes():
    ep = digit_episodes(20, seed=3, shots=2)
    assert ep.support.shape == (20, 2, 16, 16) and ep.query_mask.shape == (20, 16, 16)
    assert set(ep.label) <= set(range(5)) and (ep.support_mask.sum(axis=(2, 3)) > 0).all()
    # the mask marks the target digit's pixels only; distractors stay unmasked
    assert ((ep.support_mask > 0) <= (ep.support > 0.3)).all()
    novel = digit_episodes(20, classes=range(5, 10), split="test", seed=3)
    assert set(novel.label) <= set(range(5, 10))
    assert foreground_iou(novel.query_mask > 0, novel.query_mask > 0).min() == 1.0


def test_the_digit_matcher_learns_and_exposes_its_levels():
    model = _trained()
    assert isinstance(model, MatchingSegmenter) and model.n_levels == 2
    assert segmentation_iou(model, digit_episodes(60, split="test", seed=5)) > 0.5
    ep = digit_episodes(1, classes=range(5, 10), split="test", seed=7)
    q = torch.from_numpy(ep.query)[:, None]
    s = torch.from_numpy(ep.support)[:, :, None]
    with torch.no_grad():
        res = model.match(q, s, torch.from_numpy(ep.support_mask))
        torch.testing.assert_close(model.decode(res), res.logits)
        # with every level ablated the prediction no longer depends on the support mask
        other = model.match(q, s, torch.from_numpy(np.roll(ep.support_mask, 8, axis=-1)))
        torch.testing.assert_close(model.decode(res, (0, 1)), model.decode(other, (0, 1)))
        assert not torch.allclose(model.decode(res, (0,)), res.logits)
    assert [tuple(a.shape) for a in res.affinities] == [(1, 64, 64), (1, 16, 16)]


def test_affex_and_the_gradient_baselines_on_a_novel_episode():
    model = _trained()
    ep = digit_episodes(1, classes=range(5, 10), split="test", seed=11)
    support, mask, query, qmask = ep.episode(0)
    plain = attribute_support(model, support, mask, query)
    assert len(plain) == 256 and plain.heatmap.shape == (16, 16)
    assert (plain.cost.forward_passes, plain.cost.backward_passes) == (3, 0)
    assert plain.scores.min() == 0 and plain.scores.max() == 1
    masked = attribute_support(model, support, mask, query, "masked")
    far = support_weight(mask, "masked")[0] == 0
    assert (masked.heatmap[far] == 0).all()
    task = SupportTask(model, support, mask, query, query_mask=qmask)
    sal = ak.attribute(task, "saliency")
    assert sal.task == "few_shot" and sal.heatmap.shape == (16, 16)
    ig = ak.attribute(task, "integrated_gradients", n_steps=8, rule="riemann_middle")
    assert ig.cost.backward_passes == 8 and ig.extras["shot_maps"].shape == (1, 16, 16)
    # a zero baseline on a black canvas leaves the background unscored; a grey one does not
    assert (ig.heatmap[support[0] == 0] == 0).all()
    grey = ak.attribute(task, "integrated_gradients", n_steps=8, baseline=0.5)
    assert (grey.heatmap[support[0] == 0] != 0).any()
    cut = support_cut_curve(model, support, mask, query, qmask, plain, (0.15, 1.0))
    assert cut.loss[-1] == 0
