"""Prompt/response pairing shared by the language-model adapters."""

from __future__ import annotations

from collections.abc import Sequence

from attribkit.core.errors import InputError


def _as_list(x: str | Sequence[str], what: str) -> list[str]:
    if isinstance(x, str):
        return [x]
    out = list(x)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise InputError(f"{what} {i} is a {type(s).__name__}; pass strings")
    return out


def broadcast_pairs(
    prompts: str | Sequence[str], responses: str | Sequence[str]
) -> list[tuple[str, str]]:
    """Pair prompts with responses; a single prompt or response is repeated to the other's length.

    Raises InputError for unequal lengths, no prompts, or an empty response. No model calls.
    """
    ps, rs = _as_list(prompts, "prompt"), _as_list(responses, "response")
    if len(rs) == 1 and len(ps) > 1:
        rs = rs * len(ps)
    elif len(ps) == 1 and len(rs) > 1:
        ps = ps * len(rs)
    if len(ps) != len(rs):
        raise InputError(
            f"{len(ps)} prompts and {len(rs)} responses: pass equally many, or one of either"
        )
    if not ps:
        raise InputError("no prompts given: pass at least one prompt")
    if any(not r for r in rs):
        raise InputError("the response is empty: pass the text whose probability to explain")
    return list(zip(ps, rs, strict=True))
