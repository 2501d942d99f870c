"""Shared fixtures: a tiny random Llama with an in-process tokenizer, and the real SmolLM2."""

from __future__ import annotations

import os

import pytest
import torch

# Two threads by default; ATTRIBKIT_TEST_THREADS=1 when several test runs share the 2 cores
# (oversubscribed OpenMP threads make every matmul ~10x slower).
torch.set_num_threads(int(os.environ.get("ATTRIBKIT_TEST_THREADS", "2")))

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The capital of France is Paris. Paris is a city on the Seine.",
    "Context: the cat sat on the mat. The dog ran in the park.",
    "Query: where did the cat sit? Answer: on the mat.",
    "Alice went to the market and bought apples, pears and bread.",
    "What is the capital of Italy? Rome is the capital of Italy.",
    "The quick brown fox jumps over the lazy dog 0123456789 times!",
]


def make_tiny_tokenizer():
    """A byte-level BPE tokenizer trained in-process (no download) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|im_end|>", "<|im_start|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer randomly initialised LlamaForCausalLM (hidden 32, 4 heads, 2 kv heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    # Larger-than-default weights so that log-probabilities differ visibly between inputs.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
    return model


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
