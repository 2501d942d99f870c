"""Shared fixtures: a tiny random Llama with an in-process tokenizer, and the real SmolLM2."""

from __future__ import annotations

import os

import pytest
import torch

# Two threads by default; ATTRIBKIT_TEST_THREADS=1 when several test runs share the 2 cores
# (oversubscribed OpenMP threads make every matmul ~10x slower).
torch.set_num_threads(int(os.environ.get("ATTRIBKIT_TEST_THREADS", "2")))

from attribkit.testing import make_tiny_model, make_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm():
    """LanguageModel(tiny random Llama, in-process BPE tokenizer with chat template), name 'tiny'."""
    from attribkit.models.lm import LanguageModel

    tok = make_tiny_tokenizer()
    model = make_tiny_model(len(tok))
    return LanguageModel(model, tok, name="tiny")


@pytest.fixture(scope="session")
def smollm2():
    """The real bundled SmolLM2-135M-Instruct (use with @pytest.mark.model)."""
    from attribkit.models.loading import load

    return load("smollm2")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama and its tokenizer saved as safetensors, loadable by path anywhere
    (e.g. in a subprocess or a Ray actor)."""
    path = tmp_path_factory.mktemp("models") / "tiny"
    tok = make_tiny_tokenizer()
    make_tiny_model(len(tok)).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def lite0():
    """The bundled ImageNet EfficientNet-Lite0 as an ImageClassifier (loads in ~0.2 s)."""
    from attribkit.models.loading import load

    return load("efficientnet-lite0")
