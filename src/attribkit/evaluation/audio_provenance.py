"""Audio source attribution with rejection on real speech synthesisers: LAVA's two-level protocol
("Towards Reliable Audio Deepfake Attribution and Model Recognition: A
Multi-Level Autoencoder-Based Framework", 2025) with espeak-ng and flite voices standing in for
the paper's deepfake generators and fixed spectral features standing in for its autoencoder.

Level 1 (the paper's ADA) decides the synthesiser family, level 2 (ADMR) the voice within it;
each level rejects below a max-softmax threshold chosen on validation utterances of the known
voices (95 % of them accepted). A voice left out of training is the open-set case: it should be
routed to its own family by level 1 and look unfamiliar to level 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attribkit.core.errors import InputError
from attribkit.evaluation.open_set import open_set_report
from attribkit.models.open_set import Hierarchy
from attribkit.models.voices import Voice, voice_corpus

#: Known voices: three espeak-ng settings of its formant engine (the default US male, the
#: female variant f3 and the male variant m3) and two flite clustergen voices (slt, US female;
#: rms, US male). Both families have a male and a female voice, so the family cannot be read
#: off the pitch alone.
KNOWN_VOICES: tuple[Voice, ...] = (
    Voice("espeak", "en-us"),
    Voice("espeak", "en+f3"),
    Voice("espeak", "en+m3"),
    Voice("flite", "slt"),
    Voice("flite", "rms"),
)
#: Held-out voices, one per family: flite awb (a Scottish male clustergen voice, the same flite
#: engine as slt/rms) and espeak-ng's variant f5 (another female setting of the formant engine).
HELD_OUT_VOICES: tuple[Voice, ...] = (Voice("flite", "awb"), Voice("espeak", "en+f5"))

#: the figures of :func:`~attribkit.evaluation.open_set.open_set_report` kept per held-out voice
_REPORT_KEYS = (
    "auroc",
    "tnr_at_95_tpr",
    "oscr",
    "closed_set_accuracy",
    "macro_f1_with_rejection",
    "tpr_at_threshold",
    "tnr_at_threshold",
    "n_known",
    "n_unknown",
)


def _linear() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def audio_hierarchy_study(
    n_per_voice: int = 50,
    seed: int = 0,
    *,
    known: tuple[Voice, ...] | list[Voice] = KNOWN_VOICES,
    held_out: tuple[Voice, ...] | list[Voice] = HELD_OUT_VOICES,
    split: tuple[float, float] = (0.5, 0.2),
    tpr: float = 0.95,
    cache_dir: str | Path | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Closed-set and open-set source attribution of synthetic speech, measured: LAVA's protocol
    ("Towards Reliable Audio Deepfake Attribution and Model Recognition: A Multi-Level
    Autoencoder-Based Framework", 2025) on espeak-ng and flite voices.

    Every voice speaks the same ``n_per_voice`` seeded sentences
    (:func:`~attribkit.models.voices.voice_corpus`); sentences are split by index into training
    (first ``split[0]``), validation (next ``split[1]``) and test (the rest), so no test
    sentence is heard in training. On the known voices it fits

    - a flat voice classifier (StandardScaler + LogisticRegression over the known voices):
      ``closed_set`` = macro-F1 and accuracy on the test utterances;
    - a two-level :class:`~attribkit.models.open_set.Hierarchy` (family, then voice within the
      family; thresholds at ``tpr`` of the validation knowns): ``hierarchy`` = family accuracy,
      the share of known test utterances given their exact voice (``exact_rate``), the share
      rejected at level 1 (``family_rejected_rate``) or at either level (``rejected_rate``),
      and the thresholds.

    For each held-out voice (test sentences only), ``held_out[label]`` gives ``routing_rate``
    (share whose most probable family at level 1 is its own), ``accepted_family_rate`` (share
    level 1 accepts as its own family, threshold applied), ``model_unknown_rate`` (share the
    hierarchy decides ``family/unknown``), and ``model_auroc``: AUROC of the level-2 confidence
    (max softmax of the family's voice classifier) separating the family's known test voices
    (positives) from the held-out voice (all its test utterances scored, whatever level 1 said),
    computed by :func:`~attribkit.evaluation.open_set.open_set_report`, whose TNR at 95 % TPR,
    OSCR and macro-F1 with rejection (at the level-2 threshold) are in ``model_open_set``.

    Returns a JSON-serialisable dict with those figures, the voices, the split sizes and
    ``seconds`` (``corpus``: synthesis and features, ``workers`` synthesiser processes at once;
    ``synthesised``: runs made, the rest came from the cache; ``fit``; ``total``). Cost: up to
    ``(len(known) + len(held_out)) * n_per_voice`` synthesiser runs (about 0.05 s of CPU each
    with its features) and a few logistic-regression fits; no model calls.
    """
    t0 = time.perf_counter()
    known, held_out = list(known), list(held_out)
    n_train = round(split[0] * n_per_voice)
    n_val = round(split[1] * n_per_voice)
    n_test = n_per_voice - n_train - n_val
    if min(n_train, n_val, n_test) < 2:
        raise InputError(
            f"n_per_voice={n_per_voice} with split={split} leaves {n_train}/{n_val}/{n_test} "
            "training/validation/test sentences per voice; use n_per_voice >= 10"
        )
    if len({v.family for v in known}) < 2:
        raise InputError("the known voices must come from at least two synthesiser families")
    overlap = {v.label for v in known} & {v.label for v in held_out}
    if overlap:
        raise InputError(f"held-out voices {sorted(overlap)} are also known; hold them out")
    bad = [v.label for v in held_out if v.family not in {k.family for k in known}]
    if bad:
        raise InputError(f"held-out voices {bad} belong to no known family; pick known families")

    stats: dict[str, Any] = {}
    X, labels, fams = voice_corpus(
        known + held_out, n_per_voice, seed, cache_dir, workers=workers, stats=stats
    )
    names = np.array([lab.split("/", 1)[1] for lab in labels])
    sent = np.tile(np.arange(n_per_voice), len(known) + len(held_out))
    is_known = np.isin(labels, [v.label for v in known])
    tr, va = sent < n_train, (sent >= n_train) & (sent < n_train + n_val)
    te = sent >= n_train + n_val
    t_fit = time.perf_counter()

    flat = _linear().fit(X[is_known & tr], labels[is_known & tr])
    kt = is_known & te
    pred = flat.predict(X[kt])
    closed = {
        "macro_f1": float(f1_score(labels[kt], pred, average="macro")),
        "accuracy": float(accuracy_score(labels[kt], pred)),
        "n_test": int(kt.sum()),
    }

    kv = is_known & va
    hier = Hierarchy.fit(
        X[is_known & tr],
        fams[is_known & tr],
        names[is_known & tr],
        X_val=X[kv],
        families_val=fams[kv],
        models_val=names[kv],
        tpr=tpr,
        estimator=_linear,
    )
    dec = hier.decide(X[kt])
    first = [d.level_path[0] if d.level_path else d for d in dec]
    hierarchy = {
        "family_accuracy": float(np.mean([d.top_source for d in first] == fams[kt])),
        "family_rejected_rate": float(np.mean([d.prediction == "unknown" for d in first])),
        "exact_rate": float(np.mean([d.prediction for d in dec] == labels[kt])),
        "rejected_rate": float(np.mean([d.is_unknown for d in dec])),
        "tau_family": float(hier.level1.tau),
        "tau_voice": {f: float(c.tau) for f, c in hier.level2.items()},
    }

    out_held: dict[str, Any] = {}
    for v in held_out:
        rows = (labels == v.label) & te
        d_held = hier.decide(X[rows])
        top1 = np.array([d.level_path[0].top_source for d in d_held])
        acc1 = np.array([d.level_path[0].prediction for d in d_held])
        entry: dict[str, Any] = {
            "family": v.family,
            "n_test": int(rows.sum()),
            "routing_rate": float(np.mean(top1 == v.family)),
            "accepted_family_rate": float(np.mean(acc1 == v.family)),
            "model_unknown_rate": float(
                np.mean([d.prediction == f"{v.family}/unknown" for d in d_held])
            ),
            "model_auroc": None,
        }
        clf2 = hier.level2.get(v.family)
        if clf2 is not None:
            pos = kt & (fams == v.family)
            proba = clf2.base.predict_proba(np.concatenate([X[pos], X[rows]]))
            index = {s: i for i, s in enumerate(clf2.sources)}
            y = np.r_[[index[m] for m in names[pos]], np.full(int(rows.sum()), -1)]
            rep = open_set_report(
                proba, y, known_labels=clf2.sources, inputs="proba", threshold=clf2.tau
            )
            entry["model_auroc"] = float(rep["auroc"])
            entry["model_open_set"] = {k: rep[k] for k in _REPORT_KEYS}
        out_held[v.label] = entry

    t_end = time.perf_counter()
    return {
        "known": [v.label for v in known],
        "held_out_voices": [v.label for v in held_out],
        "n_per_voice": n_per_voice,
        "seed": seed,
        "split": {"train": n_train, "val": n_val, "test": n_test},
        "n_features": int(X.shape[1]),
        "closed_set": closed,
        "hierarchy": hierarchy,
        "held_out": out_held,
        "seconds": {
            "corpus": float(stats["seconds"]),
            "synthesised": int(stats["synthesised"]),
            "per_synthesised_utterance": float(stats["seconds"] / max(stats["synthesised"], 1))
            if stats["synthesised"]
            else None,
            "fit": float(t_end - t_fit),
            "total": float(t_end - t0),
        },
    }
