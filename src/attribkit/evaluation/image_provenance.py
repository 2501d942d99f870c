"""The toy open-set model-attribution study: which generator made this image, or none of them?

A small real stand-in for the protocol of Yang et al., "Progressive Open Space Expansion for
Open-Set Model Attribution" (POSE, CVPR 2023), with the few-shot protocol of OmniDFA (2025) and
the open-world clustering protocol of CPL (2023), on the toy generators of
:mod:`attribkit.models.generators` (architecture = up-sampler, model instance = seeded conv
residual) applied to disjoint patches of the bundled photos:

* known sources: ``nearest`` and ``bilinear`` x seeds 0, 1, 2 (six), split in half for training
  and testing;
* unknown scenarios: ``unseen_seed`` (the known architectures, seeds 10 and 11), ``unseen_arch``
  (``bicubic`` and ``transposed``, seeds 12 and 13) and ``real`` (unprocessed patches).

Classifiers: the max-softmax baseline on frequency-residual features
(:func:`attribkit.models.forensics.residual_features`) and POSE-lite
(:class:`attribkit.models.pose_lite.PoseLite`), beside the same CNN trained without open space
expansion (``warmup = epochs``), which isolates what the expansion adds.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from attribkit.core.errors import InputError

__all__ = ["image_provenance_study"]

_KNOWN = [("nearest", s) for s in (0, 1, 2)] + [("bilinear", s) for s in (0, 1, 2)]
_SCENARIOS = {
    "unseen_seed": [("nearest", 10), ("bilinear", 10), ("nearest", 11), ("bilinear", 11)],
    "unseen_arch": [("bicubic", 12), ("transposed", 12), ("bicubic", 13), ("transposed", 13)],
    "real": [("real", 0)],
}
_FIGURES = (
    "closed_set_accuracy",
    "macro_f1",
    "auroc",
    "tnr_at_95_tpr",
    "oscr",
    "macro_f1_with_rejection",
)


def _summary(report: dict[str, Any], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(report[k]) for k in _FIGURES}
    for name, fig in report["per_scenario"].items():
        out[f"auroc_{name}"] = float(fig["auroc"])
        out[f"oscr_{name}"] = float(fig["oscr"])
    out["seconds"] = round(seconds, 2)
    return out


def _few_shot(features: np.ndarray, labels: np.ndarray, classes: list[int], seed: int) -> dict:
    from attribkit.evaluation.open_set import few_shot_episodes

    t0 = time.perf_counter()
    r = few_shot_episodes(
        features, labels, n_way=5, k_shot=10, n_query=15, n_episodes=600, seed=seed, classes=classes
    )
    keys = ("accuracy", "ci95", "chance", "n_episodes")
    return {k: r[k] for k in keys} | {"seconds": round(time.perf_counter() - t0, 2)}


def _open_world(features: np.ndarray, labels: np.ndarray, known: list[int], seed: int) -> dict:
    from sklearn.cluster import KMeans

    from attribkit.evaluation.open_set import open_world_report

    t0 = time.perf_counter()
    k = len(np.unique(labels))
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
    r = open_world_report(labels, pred, known=known)
    g, s = r["global_matching"], r["separate_matching"]
    return {
        "accuracy": r["accuracy"],
        "known_global": g["known"],
        "novel_global": g["novel"],
        "known_separate": s["known"],
        "novel_separate": s["novel"],
        "nmi": r["nmi"],
        "ari": r["ari"],
        "n_clusters": k,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def image_provenance_study(
    n_per_source: int = 80,
    seed: int = 0,
    size: int = 64,
    pose: bool = True,
    *,
    eps: float = 0.2,
    epochs: int = 20,
    pose_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the toy open-set model-attribution study and return its figures.

    Builds 15 sources of ``n_per_source`` images each (``size`` px, residual strength ``eps``, on
    disjoint photo patches; at 64 px the photos hold enough for ``n_per_source`` <= 87), trains
    on half of each known source and evaluates:

    * ``baseline``: max-softmax of a standardised logistic regression on frequency-residual
      features; ``pose_lite`` (when ``pose``): POSE-lite trained ``epochs`` epochs, scored by
      max softmax, and ``pose_lite_proto`` by max cosine to the class prototypes;
      ``cnn_no_expansion``: the same CNN and losses with no augmentation network. Each holds
      :func:`attribkit.evaluation.open_set.open_set_report` figures (closed-set accuracy,
      macro-F1, AUROC known vs unknown, TNR at 95 % TPR, OSCR, macro-F1 with rejection) over all
      unknowns and ``auroc_<scenario>`` / ``oscr_<scenario>`` per scenario, and its seconds;
    * ``pose_minus_baseline`` and ``pose_minus_no_expansion``: differences of those figures;
    * ``few_shot``: 5-way 10-shot episodes (15 queries, 600 episodes, cosine prototypes;
      chance 0.20) on the nine held-out sources (all unknown generators and ``real``), on the
      standardised residual features and on POSE-lite's embeddings: accuracy ± 95 % interval;
    * ``open_world``: k-means (k = number of sources present) on the known test images plus all
      novel ones, :func:`attribkit.evaluation.open_set.open_world_report` (Hungarian accuracy
      on all, known and novel images in both matching conventions, NMI, ARI);
    * ``setup``: the sources, sizes and data seconds; ``seconds``: the whole study.

    Deterministic in ``seed`` for a fixed thread count (``torch.set_num_threads`` is left to the
    caller). Costs no model calls beyond the small classifiers' own training and forward passes
    (POSE-lite: up to about ``6 * epochs`` passes per training image; about 40 s at the
    defaults on one core).
    """
    from attribkit.evaluation.open_set import open_set_report
    from attribkit.models.forensics import max_softmax_baseline, residual_features
    from attribkit.models.generators import ToyGenerator, toy_source_dataset
    from attribkit.models.pose_lite import PoseLite

    if not isinstance(n_per_source, (int, np.integer)) or n_per_source < 26:
        raise InputError(
            f"n_per_source must be an integer >= 26 (10 shots + 15 queries + 1), got {n_per_source!r}"
        )
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    specs = list(_KNOWN) + [g for gens in _SCENARIOS.values() for g in gens]
    generators = [ToyGenerator(a, s, eps) for a, s in specs]
    images, labels, names = toy_source_dataset(generators, n_per_source, size=size, seed=seed)
    k = len(_KNOWN)
    scenario_of = np.array(
        [""] * k + [name for name, gens in _SCENARIOS.items() for _ in gens], dtype=object
    )[labels]
    rng = np.random.default_rng(seed)
    train = np.zeros(len(labels), dtype=bool)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        train[rng.permutation(idx)[: len(idx) // 2]] = True
    test = ~train
    y_test = np.where(labels[test] < k, labels[test], -1)
    scen_test = np.where(y_test >= 0, None, scenario_of[test])
    feats = residual_features(images)
    data_seconds = time.perf_counter() - t0

    def report(scores: np.ndarray, **kw: Any) -> dict[str, Any]:
        return open_set_report(
            scores, y_test, known_labels=names[:k], scenario=list(scen_test), **kw
        )

    out: dict[str, Any] = {
        "setup": {
            "known": ", ".join(names[:k]),
            **{
                name: ", ".join(g.name for g in generators if (g.arch, g.seed) in gens)
                for name, gens in _SCENARIOS.items()
            },
            "n_per_source": int(n_per_source),
            "size": int(size),
            "eps": float(eps),
            "n_train": int(train.sum()),
            "n_test_known": int((y_test >= 0).sum()),
            "n_test_unknown": int((y_test < 0).sum()),
            "data_and_features_seconds": round(data_seconds, 2),
        }
    }

    t0 = time.perf_counter()
    base = max_softmax_baseline().fit(feats[train], labels[train])
    out["baseline"] = _summary(report(base.predict_proba(feats[test])), time.perf_counter() - t0)

    held_out = list(range(k, len(names)))
    novel = labels >= k
    known_test = test & ~novel
    scaled = base[0].transform(feats)
    out["few_shot"] = {"baseline_features": _few_shot(scaled[novel], labels[novel], held_out, seed)}
    ow = known_test | novel
    out["open_world"] = {
        "baseline_features": _open_world(scaled[ow], labels[ow], list(range(k)), seed)
    }

    if pose:
        opts = dict(pose_options or {})
        t0 = time.perf_counter()
        plain = PoseLite(k, **(opts | {"warmup": epochs})).fit(
            images[train], labels[train], epochs=epochs, seed=seed
        )
        out["cnn_no_expansion"] = _summary(
            report(plain.predict_proba(images[test])), time.perf_counter() - t0
        )
        t0 = time.perf_counter()
        model = PoseLite(k, **opts).fit(images[train], labels[train], epochs=epochs, seed=seed)
        fit_seconds = time.perf_counter() - t0
        out["pose_lite"] = _summary(report(model.predict_proba(images[test])), fit_seconds)
        out["pose_lite"]["augnets"] = len(model.augnets_)
        out["pose_lite"]["epochs"] = int(epochs)
        proto = model.decision_function(images[test], score="proto")
        out["pose_lite_proto"] = _summary(report(proto, score="logit", inputs="logits"), 0.0)
        out["pose_minus_baseline"] = {
            key: round(out["pose_lite"][key] - out["baseline"][key], 4)
            for key in out["baseline"]
            if key != "seconds"
        }
        out["pose_minus_no_expansion"] = {
            key: round(out["pose_lite"][key] - out["cnn_no_expansion"][key], 4)
            for key in out["baseline"]
            if key != "seconds"
        }
        emb = model.embed(images)
        out["few_shot"]["pose_embeddings"] = _few_shot(emb[novel], labels[novel], held_out, seed)
        out["open_world"]["pose_embeddings"] = _open_world(
            emb[ow], labels[ow], list(range(k)), seed
        )
    out["seconds"] = round(time.perf_counter() - t_all, 2)
    return out
