"""Toy image generators, frequency-residual features, the max-softmax baseline and POSE-lite
(Yang et al., "Progressive Open Space Expansion for Open-Set Model Attribution", CVPR 2023) on
the toy open-set model-attribution task: six known sources (nearest and bilinear up-samplers x
three seeds), unknown sources with unseen seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from attribkit.core.errors import InputError
from attribkit.models.forensics import max_softmax_baseline, residual_features
from attribkit.models.generators import ToyGenerator, photo_patches, toy_source_dataset
from attribkit.models.pose_lite import PoseLite, batch_hard_triplet_loss

KNOWN = [ToyGenerator(a, s) for a in ("nearest", "bilinear") for s in (0, 1, 2)]
UNSEEN_SEED = [ToyGenerator(a, s) for a in ("nearest", "bilinear") for s in (10, 11)]


@pytest.fixture(scope="module")
def toy_task() -> dict:
    """80 images per source at 64 px; half of each known source for training."""
    images, labels, names = toy_source_dataset(KNOWN + UNSEEN_SEED, 80, size=64, seed=0)
    k = len(KNOWN)
    rng = np.random.default_rng(0)
    train = np.zeros(len(labels), dtype=bool)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        train[rng.permutation(idx)[:40]] = True
    return {"images": images, "labels": labels, "names": names, "k": k, "train": train}


def test_generators_are_deterministic_distinct_and_small_changes() -> None:
    patches = photo_patches(4, size=32, seed=3)
    assert patches.shape == (4, 32, 32, 3) and patches.dtype == np.float32
    assert np.array_equal(patches, photo_patches(4, size=32, seed=3))
    outs = {g.name: g(patches) for g in [*KNOWN, ToyGenerator("transposed", 0)]}
    for g in KNOWN:
        again = ToyGenerator(g.arch, g.seed)(patches)
        assert np.array_equal(outs[g.name], again)
        assert outs[g.name].shape == patches.shape and outs[g.name].dtype == np.float32
        assert outs[g.name].min() >= 0 and outs[g.name].max() <= 1
    names = list(outs)
    for i, a in enumerate(names):  # every pair of instances differs ...
        for b in names[i + 1 :]:
            assert np.abs(outs[a] - outs[b]).mean() > 1e-3, (a, b)
    # ... yet only by a small trace: two seeds of one architecture stay close
    assert np.abs(outs["nearest-s0"] - outs["nearest-s1"]).mean() < 0.05
    # nearest up-sampling without the residual repeats each 2x2 block exactly
    plain = ToyGenerator("nearest", 0, eps=0.0)(patches)
    assert np.array_equal(plain[:, 0::2, 0::2], plain[:, 1::2, 1::2])
    assert np.array_equal(ToyGenerator("real")(patches), patches)


def test_dataset_patches_are_disjoint_between_sources() -> None:
    images, labels, names = toy_source_dataset([ToyGenerator("real")] * 1 + KNOWN[:2], 10, 32)
    assert images.shape == (30, 32, 32, 3) and list(np.bincount(labels)) == [10, 10, 10]
    assert names == ["real", "nearest-s0", "nearest-s1"]
    real = images[:10].reshape(10, -1)
    assert len({r.tobytes() for r in real}) == 10
    again, _, _ = toy_source_dataset([ToyGenerator("real"), *KNOWN[:2]], 10, 32)
    assert np.array_equal(images, again)
    with pytest.raises(InputError, match="distinct"):
        toy_source_dataset([KNOWN[0], KNOWN[0]], 5, 32)
    with pytest.raises(InputError, match="bundled photos hold only"):
        toy_source_dataset(KNOWN, 10_000, 64)


def test_residual_features_shape_and_content_independence() -> None:
    patches = photo_patches(6, size=32, seed=1)
    f = residual_features(patches)
    assert f.shape == (6, 3 * 64 + 3 * 12 + 6) and np.isfinite(f).all()
    assert residual_features(patches, pool=4, n_radial=5).shape == (6, 3 * 16 + 15 + 6)
    # brightness and contrast (0.8 x + 0.1) only shift the log spectrum by log 0.8 and leave
    # the cross-channel correlations as they are: the features see traces, not exposure
    g = residual_features((patches * 0.8 + 0.1).astype(np.float32))
    assert np.median(g[:, :-6] - f[:, :-6]) == pytest.approx(np.log(0.8), abs=0.01)
    assert np.allclose(g[:, -3:], f[:, -3:], atol=1e-3)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((2, 32, 32, 3), dtype=np.uint8), "float in"),
        (np.zeros((2, 3, 32, 32), dtype=np.float32), r"\(N, H, W, 3\)"),
        (np.zeros((32, 32, 3), dtype=np.float32), r"\(N, H, W, 3\)"),
        (np.full((2, 32, 32, 3), 2.0, dtype=np.float32), r"\[0, 1\]"),
        (np.full((2, 32, 32, 3), np.nan, dtype=np.float32), "NaN"),
        ([[0.0]], "numpy array"),
    ],
)
def test_bad_images_give_a_clear_input_error(bad: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        residual_features(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=match):
        PoseLite(2).fit(bad, [0, 1])  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="even sides"):
        KNOWN[0](np.zeros((1, 33, 33, 3), dtype=np.float32))
    with pytest.raises(InputError, match="unknown architecture"):
        ToyGenerator("pixelshuffle", 0)
    x = photo_patches(4, size=32)
    with pytest.raises(InputError, match="at least two sources"):
        PoseLite(2).fit(x, [0, 0, 0, 0])
    with pytest.raises(InputError, match=r"integers in 0 \.\. 1"):
        PoseLite(2).fit(x, [0, 1, 2, 0])
    with pytest.raises(InputError, match="not fitted"):
        PoseLite(2).predict_proba(x)


def test_max_softmax_baseline_meets_the_issue_bars(toy_task: dict) -> None:
    x, y, k, train = toy_task["images"], toy_task["labels"], toy_task["k"], toy_task["train"]
    feats = residual_features(x)
    clf = max_softmax_baseline().fit(feats[train], y[train])
    test_known = ~train & (y < k)
    unseen = y >= k
    proba = clf.predict_proba(feats)
    acc = float((proba[test_known].argmax(1) == y[test_known]).mean())
    msp = proba.max(1)
    auroc = roc_auc_score(
        np.r_[np.ones(test_known.sum()), np.zeros(unseen.sum())],
        np.r_[msp[test_known], msp[unseen]],
    )
    print(f"baseline: closed-set accuracy {acc:.3f}, unseen-seed AUROC {auroc:.3f}")
    assert acc >= 0.70  # measured 0.88
    assert auroc >= 0.62  # measured 0.74


def test_triplet_loss_is_zero_when_classes_are_separated_by_the_margin() -> None:
    e = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert float(batch_hard_triplet_loss(e, y, margin=0.3)) == 0.0
    assert float(batch_hard_triplet_loss(e, torch.tensor([0, 1, 0, 1]), margin=0.3)) > 1.0


def test_pose_lite_trains_grows_its_bank_and_beats_chance(toy_task: dict) -> None:
    torch.manual_seed(1234)  # fit must not depend on the global RNG
    x, y, train = toy_task["images"], toy_task["labels"], toy_task["train"]
    # a small, quick run: 3 known sources, 6 epochs, 3 augmentation networks
    sub = train & (y < 3)
    model = PoseLite(3, warmup=3).fit(x[sub], y[sub], epochs=6, seed=0)
    assert len(model.augnets_) == 3 and len(model.history_) == 6
    assert model.forward_passes_ > 6 * sub.sum()
    test = ~train & (y < 3)
    proba = model.predict_proba(x[test])
    assert proba.shape == (test.sum(), 3) and np.allclose(proba.sum(1), 1)
    acc = float((proba.argmax(1) == y[test]).mean())
    print(f"POSE-lite (3 sources, 6 epochs): closed-set accuracy {acc:.3f}")
    assert acc > 0.5  # chance 1/3
    emb = model.embed(x[test][:5])
    assert emb.shape == (5, model.embed_dim) and np.allclose(np.linalg.norm(emb, axis=1), 1)
    proto = model.decision_function(x[test][:5], score="proto")
    assert proto.shape == (5, 3) and (np.abs(proto) <= 1 + 1e-9).all()
    assert np.array_equal(model.decision_function(x[test][:5]).argmax(1), proba[:5].argmax(1))
    torch.manual_seed(999)
    again = PoseLite(3, warmup=3).fit(x[sub], y[sub], epochs=6, seed=0)
    assert np.allclose(again.predict_proba(x[test]), proba, atol=1e-6)
    with pytest.raises(InputError, match="fitted on"):
        model.predict_proba(photo_patches(2, size=32))


def test_grid_patches_explain_which_generator_made_which_half() -> None:
    """Two-generator composites (left half nearest-s0, right half bilinear-s0) explained by
    exact Shapley over 32-px quadrants of a ProvenanceTask: the decided generator's half
    carries the positive evidence, the other half the negative."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    import attribkit as ak

    gens = [ToyGenerator("nearest", 0), ToyGenerator("bilinear", 0)]
    x, y, _ = toy_source_dataset(gens, 60, size=64, seed=0)
    clf = make_pipeline(
        FunctionTransformer(residual_features), StandardScaler(), LogisticRegression(max_iter=2000)
    ).fit(x[::2], y[::2])
    for i in range(3):
        left, right = x[np.flatnonzero(y == 0)[i + 2]], x[np.flatnonzero(y == 1)[i + 2]]
        composite = left.copy()
        composite[:, 32:] = right[:, 32:]
        task = ak.ProvenanceTask(composite, clf, patch=32)
        a = ak.attribute(task, "shapley")
        assert len(a) == 4 and a.cost.forward_passes <= 16
        grid = a.scores.reshape(2, 2)
        decided_left = task.prediction == str(clf.classes_[0])
        assert (grid[:, 0].mean() > grid[:, 1].mean()) == decided_left
