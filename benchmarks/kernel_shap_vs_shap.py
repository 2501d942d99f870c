"""KernelSHAP: attribkit's ``kernel_shap`` (and permutation ``shapley``) vs ``shap.KernelExplainer``.

Two real non-linear scikit-learn models on bundled datasets with 10 features, so exact Shapley
values (2^10 = 1024 evaluations) are the ground truth:

* ``diabetes/GBR``: a GradientBoostingRegressor on ``load_diabetes`` (10 features);
* ``cancer/MLP``: an MLPClassifier's probability of "benign" on ``load_breast_cancer`` restricted
  to its 10 most discriminative features (ANOVA F).

Removing a feature replaces it by its training mean. That is attribkit's
``FeatureUnits(x, baseline=mean)`` and exactly ``shap.KernelExplainer`` with one background row
equal to the mean, so all estimators approximate the same exact Shapley values. attribkit's exact
``shapley`` is checked against ``shap.explainers.Exact`` on one instance.

For each n_samples, over several test instances and seeds, it reports seconds per explanation,
model rows evaluated per explanation (counted by wrapping the model) and the relative L2 error
||phi - phi_exact|| / ||phi_exact||. The permutation ``shapley`` row gets a matched budget
(permutations = n_samples // n_features). No timed assertions: these are measurements.

Run: ``.venv/bin/python benchmarks/kernel_shap_vs_shap.py [--quick]``
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import environment, fmt, markdown_table
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits


class CountingModel:
    """``f(X) -> (B,)`` wrapping a model's prediction and counting the rows it evaluates."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        self.predict, self.rows, self.calls = predict, 0, 0

    def __call__(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        X = X[None, :] if X.ndim == 1 else X
        self.rows += len(X)
        self.calls += 1
        return np.asarray(self.predict(X), dtype=float).reshape(-1)

    def reset(self) -> None:
        self.rows = self.calls = 0


def build_models(seed: int = 0) -> list[dict[str, Any]]:
    """Fit the two models; return name, counting f, feature names, baseline and test rows."""
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = []
    data = load_diabetes()
    Xtr, Xte, ytr, _ = train_test_split(data.data, data.target, random_state=seed)
    gbr = GradientBoostingRegressor(
        n_estimators=150, max_depth=3, learning_rate=0.05, random_state=seed
    ).fit(Xtr, ytr)
    out.append(
        {
            "name": "diabetes/GBR",
            "f": CountingModel(gbr.predict),
            "names": list(data.feature_names),
            "baseline": Xtr.mean(axis=0),
            "test": Xte,
        }
    )

    data = load_breast_cancer()
    sel = SelectKBest(f_classif, k=10).fit(data.data, data.target)
    X = sel.transform(data.data)
    Xtr, Xte, ytr, _ = train_test_split(X, data.target, random_state=seed)
    mlp = make_pipeline(
        StandardScaler(), MLPClassifier((32, 32), max_iter=2000, random_state=seed)
    ).fit(Xtr, ytr)
    out.append(
        {
            "name": "cancer/MLP",
            "f": CountingModel(lambda Z, m=mlp: m.predict_proba(Z)[:, 1]),
            "names": [str(n) for n in np.asarray(data.feature_names)[sel.get_support()]],
            "baseline": Xtr.mean(axis=0),
            "test": Xte,
        }
    )
    return out


def scorer_for(model: dict[str, Any], x: np.ndarray) -> Scorer:
    units = FeatureUnits(x, names=model["names"], baseline=model["baseline"])
    return Scorer(units, model["f"], target="model output", batch_size=1024)


def rel_err(phi: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(phi - exact) / max(np.linalg.norm(exact), 1e-12))


@functools.cache
def n_permutations_for(n_rows: int, n_features: int, seed: int) -> int:
    """The most permutations (even: antithetic pairs) for which attribkit's sampled ``shapley``
    evaluates at most ``n_rows`` distinct coalitions with this seed. Found by dry runs on a
    constant value function (coalitions depend only on the seed); no model calls."""
    from attribkit.methods.perturbation.shapley import shapley

    def rows(n_perm: int) -> int:
        units = FeatureUnits(np.zeros(n_features))
        sc = Scorer(units, lambda X: np.zeros(len(X)), batch_size=4096)
        return shapley(sc, exact=False, n_permutations=n_perm, seed=seed).cost.forward_passes

    n_perm = 2
    while rows(n_perm + 2) <= n_rows:
        n_perm += 2
    return n_perm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer instances, seeds and budgets")
    ap.add_argument("--instances", type=int, default=None, help="test instances per model")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per instance")
    args = ap.parse_args()
    budgets = [64, 256] if args.quick else [32, 64, 128, 256, 512]
    n_inst = args.instances or (3 if args.quick else 10)
    n_seeds = args.seeds or (1 if args.quick else 3)

    warnings.filterwarnings("ignore")
    import shap

    from attribkit.methods.perturbation.kernel_shap import kernel_shap
    from attribkit.methods.perturbation.shapley import shapley

    models = build_models()
    checks: list[str] = []
    rows: list[list[object]] = []
    for model in models:
        f: CountingModel = model["f"]
        rng = np.random.default_rng(0)
        xs = model["test"][rng.choice(len(model["test"]), n_inst, replace=False)]
        background = model["baseline"][None, :]

        # Ground truth: attribkit's exact Shapley; checked against shap's exact explainer once.
        exact, exact_evals, exact_secs = [], [], []
        for x in xs:
            sc = scorer_for(model, x)
            f.reset()
            t0 = time.perf_counter()
            att = shapley(sc)
            exact_secs.append(time.perf_counter() - t0)
            exact_evals.append(f.rows)
            exact.append(att.vector)
        x0 = xs[0]
        masker = shap.maskers.Independent(background, max_samples=1)
        shap_exact = shap.explainers.Exact(f, masker)(x0[None, :], silent=True).values[0]
        efficiency = abs(exact[0].sum() - (f(x0[None])[0] - f(background)[0]))
        checks.append(
            f"{model['name']}: exact attribkit shapley vs shap Exact max|diff| = "
            f"{np.abs(exact[0] - shap_exact).max():.2e} (|phi|max {np.abs(exact[0]).max():.3g}); "
            f"efficiency gap |sum phi - (f(x) - f(b))| = {efficiency:.2e}; "
            f"exact costs {int(np.median(exact_evals))} rows, {np.median(exact_secs):.3f}s"
        )

        explainer = shap.KernelExplainer(f, background)
        # warm-up: one call of each estimator (first-call imports and allocations)
        kernel_shap(scorer_for(model, xs[0]), n_samples=budgets[0])
        explainer.shap_values(xs[0], nsamples=budgets[0], silent=True)
        shapley(scorer_for(model, xs[0]), exact=False, n_permutations=4)
        for budget in budgets:
            res: dict[str, dict[str, list[float]]] = {
                k: {"err": [], "sec": [], "rows": []} for k in ("ak", "shap", "perm")
            }
            for i, x in enumerate(xs):
                for seed in range(n_seeds):
                    # Interleave the libraries so load on a shared machine hits both alike.
                    sc = scorer_for(model, x)
                    f.reset()
                    t0 = time.perf_counter()
                    att = kernel_shap(sc, n_samples=budget, seed=seed)
                    res["ak"]["sec"].append(time.perf_counter() - t0)
                    res["ak"]["rows"].append(f.rows)
                    res["ak"]["err"].append(rel_err(att.vector, exact[i]))

                    np.random.seed(seed)
                    f.reset()
                    t0 = time.perf_counter()
                    phi = explainer.shap_values(x, nsamples=budget, silent=True)
                    res["shap"]["sec"].append(time.perf_counter() - t0)
                    res["shap"]["rows"].append(f.rows)
                    res["shap"]["err"].append(rel_err(np.asarray(phi).reshape(-1), exact[i]))

                    n_perm = n_permutations_for(budget + 2, len(x), seed)
                    sc = scorer_for(model, x)
                    f.reset()
                    t0 = time.perf_counter()
                    att = shapley(sc, exact=False, n_permutations=n_perm, seed=seed)
                    res["perm"]["sec"].append(time.perf_counter() - t0)
                    res["perm"]["rows"].append(f.rows)
                    res["perm"]["err"].append(rel_err(att.vector, exact[i]))

            def cols(k: str, r: dict[str, dict[str, list[float]]] = res) -> list[str]:
                return [
                    fmt(float(np.mean(r[k]["err"]))),
                    f"{np.mean(r[k]['rows']):.0f}",
                    fmt(1000 * float(np.median(r[k]["sec"])), 3),
                ]

            rows.append([model["name"], budget, *cols("ak"), *cols("shap"), *cols("perm")])

    header = [
        "model",
        "n_samples",
        "ak KS err",
        "ak KS rows",
        "ak KS ms",
        "shap err",
        "shap rows",
        "shap ms",
        "ak perm err",
        "ak perm rows",
        "ak perm ms",
    ]
    print(f"# KernelSHAP vs shap.KernelExplainer ({'quick' if args.quick else 'full'} run)")
    print(environment(["attribkit", "shap", "scikit-learn", "numpy"]))
    print(
        f"{n_inst} test instances x {n_seeds} seeds per model. ak KS = attribkit kernel_shap, "
        "shap = shap.KernelExplainer (defaults, one background row = the baseline), ak perm = "
        "attribkit shapley(exact=False), antithetic permutations, as many as fit in the same rows. "
        "err = mean ||phi - phi_exact||_2 / ||phi_exact||_2; rows = mean model rows evaluated per "
        "explanation; ms = median wall time per explanation"
    )
    for c in checks:
        print("check:", c)
    print()
    print(markdown_table(header, rows))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
