"""One token of a language model's vocabulary, named by id or by a one-token string."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.errors import InputError


def single_token_id(lm: Any, token: int | str, what: str = "token", hint: str = "") -> int:
    """The vocabulary id of ``token`` (an id, or a string that tokenizes to exactly one token,
    e.g. ``" Paris"`` with its leading space). InputError naming the pieces of a multi-token
    string (followed by ``hint``: what the caller needs instead), a non-token or an id outside
    the vocabulary. No model calls."""
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        tid = int(token)
    elif isinstance(token, str) and token:
        ids = lm.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [lm.tokenizer.decode([i]) for i in ids]
            first = pieces[0] if pieces else token
            raise InputError(
                f"the {what} {token!r} is {len(ids)} tokens {pieces}; "
                + hint.format(first=repr(first))
            )
        tid = int(ids[0])
    else:
        raise InputError(f"the {what} must be a token id or a non-empty single-token string")
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    if not 0 <= tid < vocab:
        raise InputError(f"the {what} id {tid} is outside the vocabulary (0..{vocab - 1})")
    return tid
