"""A judge by constrained choice with a local language model (:class:`LocalJudge`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from attribkit.core.cost import Cost
from attribkit.core.errors import InputError, WindowError
from attribkit.models.judge.base import (
    Fields,
    Judge,
    Judgement,
    Verdict,
    _check_prompt,
    check_fields,
)

if TYPE_CHECKING:
    from attribkit.models.lm import LanguageModel


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LocalJudge(Judge):
    """A judge by constrained choice with a local :class:`~attribkit.models.lm.LanguageModel`.

    For each field in order, every option is scored as the reply ``"{Field}: {option}"`` after
    the chat-formatted prompt, following the lines already chosen for the earlier fields (so a
    two-field question reads like one reply: ``"Agent Name: X\\nStep Number: 3"``); the choice
    is the option of highest log-probability. An option's score is log p(its tokens | prompt,
    earlier lines, ``"{Field}:"``) — the tokens shared by every option's line are left out, so
    the scores of a field are comparable and rank the options. It never fails to parse.

    Args:
        lm: the language model (``attribkit.load("smollm2")``).
        system: a default system message (``ask(system=...)`` overrides it).
        batch_size: sequences per model call when scoring a field's options.
        reuse_prefix: run the prompt once and score each option over its key-value cache
            (``lm.set_reference`` / ``token_logprobs(reuse_prefix=True)``): the same values up to
            float rounding, far faster on long prompts (it replaces the LM's reference cache).

    Cost: the judge counts on its LM's meter — ``judge.cost`` *is* ``lm.cost`` — so one
    ``measure(judge)`` (or ``measure(lm)``) sees, per ask, one ``judge_calls`` and one forward
    pass per option of every field (counted by the LM as it scores). ``self.prompt_tokens`` adds
    up the prompt's tokens per ask. Nothing is generated (``generated_tokens`` unchanged).
    """

    def __init__(
        self,
        lm: LanguageModel,
        system: str | None = None,
        batch_size: int = 8,
        reuse_prefix: bool = True,
    ) -> None:
        for attr in ("token_logprobs", "format_prompt", "count_tokens", "tokenizer"):
            if not hasattr(lm, attr):
                raise InputError(
                    f"LocalJudge needs a local LanguageModel (attribkit.load(...)); "
                    f"{type(lm).__name__} has no {attr!r}"
                )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self._own = None if isinstance(getattr(lm, "cost", None), Cost) else Cost()
        self.lm, self.system, self.batch_size = lm, system, batch_size
        self.reuse_prefix = bool(reuse_prefix) and hasattr(lm, "set_reference")
        self.name = f"local:{lm.name}"
        self.prompt_tokens = 0

    @property  # type: ignore[override]
    def cost(self) -> Cost:
        """The LM's cost (one meter for judge calls and the passes they run)."""
        return self._own if self._own is not None else self.lm.cost

    @cost.setter
    def cost(self, value: Cost) -> None:
        if self._own is not None:
            self._own = value
        else:
            self.lm.cost = value

    def __repr__(self) -> str:
        return f"LocalJudge({self.lm.name!r}, cost={self.cost})"

    def describe(self) -> dict[str, Any]:
        """The LM's name, the system message and the scoring settings."""
        return {**super().describe(), "lm": self.lm.name, "system": self.system}

    def _prompt(self, prompt: str, system: str | None) -> tuple[str, bool]:
        """(text, chat) to pass to ``lm.token_logprobs`` so that the model sees the prompt
        chat-formatted with ``system``, token for token as ``lm.generate(system=...)`` would."""
        lm = self.lm
        if system is None:
            return prompt, True
        if not lm.has_chat_template:
            return f"{system}\n\n{prompt}", True
        text = lm.format_prompt(prompt, system)
        want = lm.count_tokens(prompt, chat=True, system=system)
        if lm.count_tokens(text, chat=False) == want:
            return text, False
        bos = getattr(lm.tokenizer, "bos_token", None)  # the tokenizer adds its own start token
        if bos and text.startswith(bos) and lm.count_tokens(text[len(bos) :], chat=False) == want:
            return text[len(bos) :], False
        raise InputError(
            f"cannot pass a system message to {lm.name}'s scoring (its tokenizer adds special "
            "tokens to the formatted chat); put the system text at the start of the prompt"
        )

    def _token_ids(self, text: str) -> list[int]:
        return list(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def ask(self, prompt: str, fields: Fields, system: str | None = None) -> Judgement:
        """Choose an option for each field by log-probability (see the class docstring). Every
        verdict is parsed, with ``scores`` for every option; ``text`` holds the chosen
        ``"Field: choice"`` lines. Costs one judge call and one forward pass per option of each
        field, each field's options in ``ceil(n / batch_size)`` model calls (with
        ``reuse_prefix``: one call per option over the cached prompt, plus one full pass the
        first time a prompt is seen). Raises InputError when the prompt and its longest reply
        do not fit the LM's context window."""
        checked = check_fields(fields)
        _check_prompt(prompt)
        lm = self.lm
        text, chat = self._prompt(prompt, self.system if system is None else system)
        n_prompt = lm.count_tokens(text, chat=chat)
        window = getattr(lm, "max_positions", None)
        if window:
            longest = sum(
                max(len(self._token_ids(f"{f}: {o}\n")) for o in opts)
                for f, opts in checked.items()
            )
            if n_prompt + longest > window:
                over = n_prompt + longest - window
                raise WindowError(
                    f"the judge prompt is {n_prompt} tokens (+ up to {longest} for the reply), "
                    f"{over} tokens over {lm.name}'s {window}-token window; truncate the log "
                    "(drop or shorten turns) before asking; for an agents log, pass "
                    f"AgentTask(..., max_tokens=N) with N at least {over} under the tokens its "
                    "prompt takes now (target_info['truncation'] says them when it was cut)",
                    over,
                )
        self.cost.judge_calls += 1
        self.prompt_tokens += n_prompt
        verdicts: dict[str, Verdict] = {}
        before = ""
        for label, options in checked.items():
            replies = [f"{before}{label}: {o}" for o in options]
            values = lm.token_logprobs(
                text, replies, chat=chat, batch_size=self.batch_size, reuse_prefix=self.reuse_prefix
            )
            if self._own is not None:
                self._own.forward_passes += len(replies)
            head = self._token_ids(f"{before}{label}:")
            ids = [self._token_ids(r) for r in replies]
            shared = min(min(_common_prefix(head, r), len(r) - 1) for r in ids)
            totals = [float(np.sum(v[shared:])) for v in values]
            best = int(np.argmax(totals))
            choice = options[best]
            verdicts[label] = Verdict(
                choice, dict(zip(options, totals, strict=True)), True, options, choice
            )
            before += f"{label}: {choice}\n"
        return Judgement(verdicts, before.rstrip("\n"), n_prompt, 0)
