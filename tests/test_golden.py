"""No behaviour change: every registered method (and DLA, GrAInS) gives, on its toy task, the
scores and costs recorded in ``tests/golden/methods.json`` before the task-contract refactor.

Scores agree to 1e-6 times their scale on a CPU with the kernels they were recorded with (the
file notes which: ``torch.backends.cpu.get_cpu_capability()``), and to 1e-4 times their scale
elsewhere (float32 kernels of another instruction set round differently, e.g. under
``ATEN_CPU_CAPABILITY=avx2``); forward/backward passes, batches and cache hits agree exactly.
Regenerate only when a change of behaviour is intended: ``python tests/test_golden.py --record``.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import attribkit as ak
from attribkit import testing

GOLDEN = Path(__file__).parent / "golden" / "methods.json"
COUNTS = ("forward_passes", "backward_passes", "batches", "cache_hits")


def _toy(kind: str) -> Any:
    """The conformance suite's toy of ``kind`` (``attribkit.testing.TOY_KINDS``)."""
    toy, _ = testing.TOY_KINDS[kind].make()
    if kind == "generation":
        testing.warm_template_cache(toy)  # the one-time cache check is not the method's cost
    return toy


def _run_registered(kind: str, name: str) -> ak.Attribution:
    """The method through the one dispatcher, as a user calls it: ``ak.attribute(toy, name)``."""
    spec = ak.get_method(name, kind=kind)
    params = testing.toy_params(kind, name)
    if "seed" in inspect.signature(spec.fn).parameters:
        params.setdefault("seed", 0)
    toy = _toy(kind)
    assert ak.core.registry.resolve(toy, name) == spec
    return ak.attribute(toy, name, **params)


def _run_dla() -> ak.Attribution:
    task = testing.toy_generation_task()
    return ak.direct_logit_attribution(task, row=1)


def _run_grains() -> Any:
    lm = testing.tiny_language_model()
    examples = [
        ("hello there world", "the cat sat", "a dog ran"),
        ("the world is big", "yes", "no"),
    ]
    testing.warm_template_cache(ak.GenerationTask(lm, *examples[0][:2]))
    return ak.grains_vectors(lm, examples, k=2, n_steps=4)


def _record(scores: Any, cost: Any) -> dict[str, Any]:
    scores = np.asarray(scores, dtype=float)
    return {
        "shape": list(scores.shape),
        "scores": [None if np.isnan(s) else float(s) for s in scores.ravel()],
        **{c: int(getattr(cost, c)) for c in COUNTS},
    }


def _cases() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    for spec in ak.list_methods():
        if spec.name == "direct_logit_attribution":  # recorded below, at row 1
            continue
        cases.append(
            (f"{spec.kind}:{spec.name}", lambda k=spec.kind, n=spec.name: _run_registered(k, n))
        )
    cases.append(("generation:direct_logit_attribution", _run_dla))
    return cases


def _observe(key: str, run: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    a = run()
    return _record(a.scores, a.cost)


def _observe_grains() -> dict[str, Any]:
    v = _run_grains()
    return _record(v.vectors, v.cost)


def record() -> None:
    out = {key: _observe(key, run) for key, run in _cases()}
    out["grains_vectors"] = _observe_grains()
    out["_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(out)} methods in {GOLDEN}")


#: tolerance between CPU kernels (``ATEN_CPU_CAPABILITY``) per kind, where 1e-4 is too tight:
#: AffEx min-max scales softmax affinities of an untrained conv net, which amplifies rounding
#: (measured 1.1e-4 between avx2 and default)
CROSS_KERNEL_ATOL = {"few_shot": 1e-3}


def _compare(key: str, got: dict[str, Any]) -> None:
    golden = json.loads(GOLDEN.read_text())
    want = golden[key]
    same_kernels = golden["_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert got["shape"] == want["shape"], key
    g = np.array([np.nan if s is None else s for s in got["scores"]], dtype=float)
    w = np.array([np.nan if s is None else s for s in want["scores"]], dtype=float)
    scale = max(1.0, float(np.nanmax(np.abs(w))) if np.isfinite(w).any() else 1.0)
    across = CROSS_KERNEL_ATOL.get(key.split(":")[0], 1e-4)
    np.testing.assert_allclose(
        g, w, rtol=0, atol=(1e-6 if same_kernels else across) * scale, err_msg=key
    )
    for c in COUNTS:
        assert got[c] == want[c], f"{key}: {c} {got[c]} != recorded {want[c]}"


CASES = _cases()


def test_every_method_is_recorded() -> None:
    recorded = set(json.loads(GOLDEN.read_text()))
    assert {key for key, _ in CASES} | {"grains_vectors"} <= recorded


@pytest.mark.parametrize(("key", "run"), CASES, ids=[k for k, _ in CASES])
def test_same_scores_and_costs(key: str, run: Any) -> None:
    _compare(key, _observe(key, run))


def test_grains_same_vectors_and_cost() -> None:
    _compare("grains_vectors", _observe_grains())


if __name__ == "__main__" and "--record" in sys.argv:
    record()
