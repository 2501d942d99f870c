"""Dataset runs on a local Ray actor pool give the local backend's results, each stored once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'attribkit[ray]')")

from attribkit import store as run_store  # noqa: E402
from attribkit.dataset import read_records, run_dataset  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


def _scores(db: Path, dataset: str) -> dict[str, list[np.ndarray]]:
    """Per record key: its scores, then each span result's scores in response order."""
    out = {}
    with run_store.open(db) as runs:
        for run in runs.query(dataset=dataset):
            assert run.key not in out, f"record {run.key} stored twice"
            out[run.key] = [run.attribution.vector] + [
                s.attribution.vector for s in runs.spans(run.id)
            ]
    return out


def test_ray_backend_matches_local_backend(
    tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    data = tmp_path / "d.jsonl"
    with data.open("w") as f:
        for i in range(7):
            context = " ".join(f"Fact {j} of item {i} is about a cat and a dog." for j in range(4))
            response = f"The cat of item {i} sat in the park. The dog was near."
            f.write(json.dumps({"context": context, "query": f"Item {i}?", "response": response}))
            f.write("\n")
        long = " ".join(f"Sentence {j} is long enough to fill the small window." for j in range(60))
        f.write(json.dumps({"context": long, "query": "q", "response": "R.", "id": "big"}) + "\n")
    keys = {r.key for r in read_records(data)} - {"big"}

    local = run_dataset(
        data, tmp_path / "local.db", model=str(tiny_dir), method="loo", progress=False
    )
    on_ray = run_dataset(
        data,
        tmp_path / "ray.db",
        model=str(tiny_dir),
        method="loo",
        backend="ray",
        workers=2,
        batch_size=3,
        progress=True,
    )
    assert not ray.is_initialized()  # the local instance it started is shut down
    assert (on_ray.stored, on_ray.skipped) == (7, 0) == (local.stored, local.skipped)
    assert [k for k, _ in on_ray.failed] == ["big"] and on_ray.failed == local.failed
    assert on_ray.model_calls == local.model_calls == 7 * 5
    a, b = _scores(tmp_path / "local.db", "d.jsonl"), _scores(tmp_path / "ray.db", "d.jsonl")
    assert set(a) == set(b) == keys
    for key in keys:
        assert len(a[key]) == len(b[key]) == 3  # the record and its two response sentences
        for x, y in zip(a[key], b[key], strict=True):
            assert np.allclose(x, y, atol=1e-5), (key, x, y)
    with run_store.open(tmp_path / "ray.db") as runs:
        run = runs.query(dataset="d.jsonl", limit=1)[0]
        assert run.model == "tiny" and run.method == "loo" and run.tags["source"] == "d.jsonl"


def test_ray_backend_runs_image_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Image records on Ray: each actor loads the default image model by name; the results,
    the failure and the model calls equal the local backend's."""
    from attribkit.core.png import png_bytes

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        pixels = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        (tmp_path / "imgs" / f"{name}.png").write_bytes(png_bytes(pixels))
    rows = [
        {"image": "imgs/a.png"},
        {"image": "imgs/b.png", "target": 3},
        {"image": "skimage:chelsea", "target": "tabby", "id": "cat"},
        {"image": "imgs/a.png", "target": "not a class", "id": "bad"},
    ]
    data = tmp_path / "i.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    local = run_dataset(data, tmp_path / "local.db", task="image", progress=False)
    on_ray = run_dataset(
        data,
        tmp_path / "ray.db",
        task="image",
        backend="ray",
        workers=2,
        batch_size=2,
        progress=False,
    )
    assert not ray.is_initialized()
    assert (on_ray.stored, on_ray.method) == (local.stored, local.method) == (3, "grad_cam")
    assert [k for k, _ in on_ray.failed] == ["bad"] and on_ray.failed == local.failed
    assert on_ray.model_calls == local.model_calls == 3 * 2 + 1
    maps = {}
    for name in ("local", "ray"):
        with run_store.open(tmp_path / f"{name}.db") as runs:
            found = runs.query(dataset="i.jsonl")
            assert len({r.key for r in found}) == len(found) == 3
            maps[name] = {r.key: r.attribution for r in found}
            assert {(r.task, r.model) for r in found} == {("image", "efficientnet-lite0")}
    assert set(maps["local"]) == set(maps["ray"])
    for key, a in maps["local"].items():
        b = maps["ray"][key]
        assert a.task == b.task == "image" and a.target == b.target
        assert np.allclose(a.heatmap, b.heatmap, atol=1e-4), key
