"""The next-token protocol: a language model that gives the full next-token distribution at every
position of a token sequence (what zero-shot machine-text detectors read).

:class:`NextTokenModel` is a structural protocol (no base class to inherit): a name, a vocabulary
size, a :class:`~attribkit.core.cost.CostMeter`, ``encode`` / ``token_strings`` and
``logprobs``. :class:`HFNextToken` serves it from a :class:`~attribkit.models.lm.LanguageModel`
(any Hugging Face causal LM); the in-repo n-gram LM (``attribkit.models.ngram``) serves it too.
Two optional members are read when a model has them: ``token_spans(text)`` (the character span
of each token of ``encode(text)``; without it the spans are found by aligning
:meth:`~NextTokenModel.token_strings` with the text) and ``order`` (an n-gram order: texts
shorter than it are refused). :func:`same_vocabulary` checks that two models can score the same
token ids (the model pairs of Binoculars and Fast-DetectGPT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError

if TYPE_CHECKING:
    from attribkit.models.lm import LanguageModel

__all__ = ["HFNextToken", "NextTokenModel", "as_next_token", "same_vocabulary"]


@runtime_checkable
class NextTokenModel(Protocol):
    """A language model giving the full next-token distribution at every position.

    ``meter`` counts one forward pass per sequence scored (``cost.forward_passes``) and one
    batch per model call (``cost.batches``).
    """

    name: str
    vocab_size: int
    meter: CostMeter

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` (no special tokens). No model calls."""
        ...

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """The text of each token id. No model calls."""
        ...

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per sequence of T ids a float64 (T, V) array: row t = log p(next token | ids[:t]);
        row 0 is conditioned on the model's start state. One forward pass per sequence."""
        ...


class HFNextToken:
    """:class:`NextTokenModel` over a :class:`~attribkit.models.lm.LanguageModel` (a Hugging Face
    causal LM and its tokenizer).

    ``encode`` tokenizes without special tokens; every sequence is scored after the start token
    (the tokenizer's BOS token, or its EOS token when it has no BOS), so row 0 is
    log p(first token | start). Sequences run ``batch_size`` at a time, longest first,
    right-padded; each sequence's logits become a float64 full-vocabulary log-softmax one
    sequence at a time (a (T, V) float64 array is 8·T·V bytes: 39 MB for 100 tokens of a
    49k-token vocabulary). Counts on the LanguageModel's own meter (``meter`` is the LM): one
    forward pass per sequence, one batch per model call, and ``tokens_processed``.
    """

    def __init__(self, lm: LanguageModel, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        self.lm = lm
        self.batch_size = int(batch_size)
        self.name = str(lm.name)
        tok = lm.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise InputError(
                f"the tokenizer of {self.name!r} has neither a BOS nor an EOS token to start a "
                "sequence from; give it one (tokenizer.bos_token = ...)"
            )
        self.start_id = int(start)
        head = lm.model.get_output_embeddings()
        weight = getattr(head, "weight", None)
        self.vocab_size = int(weight.shape[0] if weight is not None else lm.model.config.vocab_size)

    def __repr__(self) -> str:
        return f"HFNextToken({self.name!r}, vocab_size={self.vocab_size})"

    @property
    def meter(self) -> CostMeter:
        """The LanguageModel itself (it is the meter of all its model work)."""
        return self.lm

    @property
    def tokenizer(self) -> Any:
        return self.lm.tokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens. No model calls."""
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Each token decoded alone (a token holding part of a character decodes to U+FFFD).
        No model calls."""
        return [str(self.tokenizer.decode([int(i)])) for i in ids]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The character span of each token of :meth:`encode`'s ids (the fast tokenizer's
        offsets; tokens holding part of one character share its span). No model calls."""
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError as e:
            raise InputError(
                "token spans need a fast tokenizer with offset mappings; load the tokenizer "
                "with use_fast=True"
            ) from e
        return [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per sequence of T ids a float64 (T, V) array of log p(next token | start, ids[:t]).
        Costs one forward pass per sequence in ceil(n / batch_size) model calls."""
        import torch

        seqs = [[int(i) for i in s] for s in sequences]
        limit = self.lm.max_positions
        for k, s in enumerate(seqs):
            if not s:
                raise InputError(f"sequence {k} is empty: score at least one token")
            if limit is not None and len(s) + 1 > limit:
                raise InputError(
                    f"sequence {k} has {len(s)} tokens plus the start token, more than the "
                    f"{limit} positions of {self.name!r}; score a shorter text"
                )
            if min(s) < 0 or max(s) >= self.vocab_size:
                raise InputError(f"sequence {k} has token ids outside 0..{self.vocab_size - 1}")
        out: list[np.ndarray | None] = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k]))
        lm, dev = self.lm, self.lm.device
        with lm.timed(), torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                width = max(len(seqs[k]) for k in idx) + 1
                ids = torch.full((len(idx), width), lm.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, k in enumerate(idx):
                    n = len(seqs[k]) + 1
                    ids[row, :n] = torch.tensor([self.start_id, *seqs[k]], dtype=torch.long)
                    mask[row, :n] = 1
                pos = torch.arange(width, dtype=torch.long)[None].expand(len(idx), -1)
                logits = lm.model(
                    input_ids=ids.to(dev),
                    attention_mask=mask.to(dev),
                    position_ids=pos.to(dev),
                    use_cache=False,
                ).logits
                lm.cost.forward_passes += len(idx)
                lm.cost.batches += 1
                lm.tokens_processed += sum(len(seqs[k]) + 1 for k in idx)
                for row, k in enumerate(idx):
                    rows = logits[row, : len(seqs[k])].double()
                    out[k] = torch.log_softmax(rows, dim=-1).cpu().numpy()
                del logits
        return [o for o in out if o is not None]


def as_next_token(model: Any) -> NextTokenModel:
    """``model`` itself when it is a :class:`NextTokenModel`, an :class:`HFNextToken` over it
    when it is a :class:`~attribkit.models.lm.LanguageModel`; InputError otherwise.
    No model calls."""
    if isinstance(model, NextTokenModel):
        return model
    if hasattr(model, "tokenizer") and hasattr(model, "model") and hasattr(model, "cost"):
        return HFNextToken(model)
    raise InputError(
        f"{type(model).__name__} is not a next-token model: pass a NextTokenModel (name, "
        "vocab_size, meter, encode, token_strings, logprobs), an attribkit LanguageModel or "
        "an attribkit.models.ngram.NGramLM"
    )


def _strings(model: Any, ids: Sequence[int]) -> list[str]:
    strings = model.token_strings(ids)
    if len(strings) != len(ids):
        raise ScorerError(
            f"{model.name!r}.token_strings returned {len(strings)} strings for {len(ids)} ids"
        )
    return [str(s) for s in strings]


def same_vocabulary(a: NextTokenModel, b: NextTokenModel) -> None:
    """Raise InputError unless ``a`` and ``b`` share a vocabulary (the same id means the same
    token), as a model pair of Binoculars or Fast-DetectGPT needs. Compares the vocabulary
    sizes, then the tokenizers' vocabularies when both are Hugging Face models, else the text
    of every token id (sampled evenly past 200,000 ids) and the encoding of a probe text.
    No model calls."""
    if a is b:
        return
    what = f"{a.name!r} and {b.name!r}"
    fix = "use two models with the same tokenizer (e.g. a base model and its instruct version)"
    if int(a.vocab_size) != int(b.vocab_size):
        raise InputError(
            f"{what} do not share a vocabulary ({a.vocab_size} vs {b.vocab_size} tokens); {fix}"
        )
    ta, tb = getattr(a, "tokenizer", None), getattr(b, "tokenizer", None)
    if ta is not None and tb is not None and hasattr(ta, "get_vocab") and hasattr(tb, "get_vocab"):
        if ta is not tb and ta.get_vocab() != tb.get_vocab():
            raise InputError(f"{what} have different tokenizers; {fix}")
        return
    n = int(a.vocab_size)
    ids = list(range(n)) if n <= 200_000 else np.linspace(0, n - 1, 200_000).astype(int).tolist()
    if _strings(a, ids) != _strings(b, ids):
        raise InputError(f"{what} give different tokens for the same ids; {fix}")
    probe = "The quick brown fox jumps over the lazy dog. 0123456789!"
    if list(a.encode(probe)) != list(b.encode(probe)):
        raise InputError(f"{what} tokenize the same text differently; {fix}")
