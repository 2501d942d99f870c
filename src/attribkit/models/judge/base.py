"""What every judge shares: the verdicts it returns (:class:`Verdict`, :class:`Judgement`),
the reply parsing (:func:`parse_reply`, :func:`match_option`, :func:`check_fields`) and the
:class:`Judge` contract. No model calls."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError

Fields = Mapping[str, Sequence[str]]


@dataclass
class Verdict:
    """The judge's answer for one field.

    ``choice`` is one of the field's options, or None when the reply did not name one;
    ``scores`` the log-probability of every option when the judge can give them (the local judge
    always, an endpoint judge never), else None; ``parsed`` whether a choice was made;
    ``options`` the field's options as asked; ``raw`` the reply's text for the field (the value
    after ``"{Field}:"``, cleaned of markdown), None when absent."""

    choice: str | None
    scores: dict[str, float] | None
    parsed: bool
    options: list[str] = field(default_factory=list)
    raw: str | None = None


@dataclass
class Judgement:
    """One judge call's answer: a :class:`Verdict` per field (in the order asked), the reply
    ``text`` (the server's raw reply; for the local judge the chosen ``"Field: choice"`` lines),
    the tokens of the prompt and of the reply as counted by the judge, and the server's
    ``finish_reason`` (``"length"``: the reply was cut at ``max_tokens``)."""

    fields: dict[str, Verdict]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None

    def _verdict(self, name: str) -> Verdict:
        if name not in self.fields:
            raise InputError(f"no field {name!r} in this judgement; it has {list(self.fields)}")
        return self.fields[name]

    def choice(self, name: str) -> str | None:
        """The option chosen for field ``name`` (None when unparsed)."""
        return self._verdict(name).choice

    @property
    def parsed(self) -> bool:
        """Whether every field was parsed."""
        return all(v.parsed for v in self.fields.values())

    def ranking(self, name: str) -> list[str]:
        """Field ``name``'s options best first: by score when the judge gave scores (ties keep
        the given order), else the choice then the other options in the given order; empty
        when the field is unparsed and has no scores (no information: a reciprocal rank of 0)."""
        v = self._verdict(name)
        if v.scores:
            scores = v.scores
            return sorted(scores, key=lambda o: -scores[o])
        if v.choice is None:
            return []
        return [v.choice] + [o for o in v.options if o != v.choice]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the judgement (scores as floats). No model calls."""
        return {
            "fields": {
                k: {
                    "choice": v.choice,
                    "parsed": v.parsed,
                    "scores": None
                    if v.scores is None
                    else {o: float(s) for o, s in v.scores.items()},
                    "raw": v.raw,
                }
                for k, v in self.fields.items()
            },
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }


def _is_int(s: str) -> bool:
    return re.fullmatch(r"[-+]?\d+", s.strip()) is not None


def check_fields(fields: Fields) -> dict[str, list[str]]:
    """``fields`` checked and copied: a non-empty mapping of field labels (non-empty, one line)
    to non-empty lists of distinct non-empty option strings (distinct also ignoring case, and as
    numbers for numeric options). Raises InputError saying what to fix. No model calls."""
    if not isinstance(fields, Mapping) or not fields:
        raise InputError(
            'fields must be a non-empty dict of field label -> options, e.g. {"Answer": '
            '["Yes", "No"]}'
        )
    out: dict[str, list[str]] = {}
    for label, options in fields.items():
        if not isinstance(label, str) or not label.strip() or "\n" in label:
            raise InputError(f"field label {label!r} must be a non-empty one-line string")
        if isinstance(options, str) or not isinstance(options, Sequence) or not options:
            raise InputError(
                f"field {label!r} needs a non-empty list of options (strings), got {options!r}"
            )
        seen: dict[str, str] = {}
        for o in options:
            if not isinstance(o, str) or not o.strip():
                raise InputError(
                    f"field {label!r}: every option must be a non-empty string, got {o!r}"
                    + (" (write step numbers as str(i))" if isinstance(o, int) else "")
                )
            key = str(int(o)) if _is_int(o) else o.strip().casefold()
            if key in seen:
                raise InputError(
                    f"field {label!r}: options {seen[key]!r} and {o!r} cannot be told apart in a "
                    "reply; make them distinct"
                )
            seen[key] = o
        out[label] = list(options)
    return out


def _check_prompt(prompt: str) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the judge prompt must be a non-empty string")


_TRAILING = ".,;:!?"
_QUOTES = " \t*_`\"'“”‘’"
_LABEL_LINE = re.compile(r"^\s*[#>*_\s]*[A-Za-z][\w ]{0,40}\**\s*:")


def _clean(value: str) -> str:
    v = value.replace("**", "").replace("`", "").strip().strip(_QUOTES)
    v = v.rstrip(_TRAILING + _QUOTES).strip()
    return v


def _spans(text: str, options: list[str], numbers: bool) -> list[tuple[int, int, int]]:
    """(start, end, option index) of every option found in ``text``: a non-numeric option as a
    whole word (case-insensitive); a numeric option (when ``numbers``) when the first integer
    in the text equals it."""
    found = []
    first = re.search(r"[-+]?\d+", text) if numbers else None
    for i, o in enumerate(options):
        if _is_int(o):
            if first is not None and int(first.group()) == int(o):
                found.append((first.start(), first.end(), i))
            continue
        pattern = rf"(?<!\w){re.escape(o.strip())}(?!\w)"
        found.extend((m.start(), m.end(), i) for m in re.finditer(pattern, text, re.IGNORECASE))
    # an option found inside a longer one's match ("Surfer" in "Web Surfer") does not count
    return [
        (s, e, i)
        for s, e, i in found
        if not any(s2 <= s and e <= e2 and e2 - s2 > e - s for s2, e2, _ in found)
    ]


def match_option(value: str, options: list[str]) -> str | None:
    """The option ``value`` names, or None: an exact match ignoring case; else an option found
    in it as a whole word or number, the longest where options overlap, the earliest otherwise;
    a numeric option matches only the value's first integer ("12" never matches "1")."""
    low = value.strip().casefold()
    for o in options:
        if o.strip().casefold() == low:
            return o
    spans = _spans(value, options, numbers=True)
    if not spans:
        return None
    return options[min(spans, key=lambda t: (t[0], -(t[1] - t[0]), t[2]))[2]]


def _field_value(text: str, label: str) -> str | None:
    """The text after the first ``label:`` (markdown bold around label or colon allowed); when
    the label's line holds nothing, the next line unless it is another ``Label:`` line."""
    pattern = rf"(?<!\w){re.escape(label.strip())}\s*\**\s*:[ \t]*(.*)"
    m = re.search(pattern, text, re.IGNORECASE)
    if m is None:
        return None
    value = _clean(m.group(1))
    if value:
        return value
    for line in text[m.end() :].splitlines():
        if not line.strip():
            continue
        return None if _LABEL_LINE.match(line) else _clean(line)
    return None


def _yes_no(options: list[str]) -> bool:
    return sorted(o.strip().casefold() for o in options) == ["no", "yes"]


def parse_reply(text: str, fields: Fields) -> dict[str, Verdict]:
    """The verdict for each field from a free-text reply (no model calls).

    For each field, the value after its first ``"{Field}:"`` (case-insensitive; markdown ``**``
    and trailing punctuation removed) is matched to an option by :func:`match_option`. A single
    field asked without its label in the reply is also read from the reply itself: a Yes/No
    field when the reply starts with "yes" or "no" (after numbering such as ``"1. "``, as
    Who&When's step-by-step answers), other non-numeric options when exactly one of them occurs
    in the reply ("upper half"). Anything else is unparsed (``choice=None``). Raises InputError
    for malformed ``fields`` (see :func:`check_fields`)."""
    checked = check_fields(fields)
    out: dict[str, Verdict] = {}
    text = text or ""
    for label, options in checked.items():
        raw = _field_value(text, label)
        choice = match_option(raw, options) if raw else None
        if choice is None and len(checked) == 1 and raw is None:
            raw, choice = _unlabelled(text, options)
        out[label] = Verdict(choice, None, choice is not None, options, raw)
    return out


def _unlabelled(text: str, options: list[str]) -> tuple[str | None, str | None]:
    body = re.sub(r"^[\s#>*_`]*(\d+\s*[.)]\s*)?[\s*_`]*", "", text)
    if _yes_no(options):
        m = re.match(r"(yes|no)(?!\w)", body, re.IGNORECASE)
        if m is None:
            return None, None
        word = m.group(1).casefold()
        return m.group(1), next(o for o in options if o.strip().casefold() == word)
    if any(_is_int(o) for o in options):
        return None, None  # a number needs its label: "1." may be list numbering
    hits = {i for _, _, i in _spans(text, options, numbers=False)}
    if len(hits) != 1:
        return None, None
    choice = options[hits.pop()]
    return choice, choice


class Judge(CostMeter, ABC):
    """A model that answers a prompt with a choice among given options for named fields.

    ``name`` names the judge in results; ``prompt_tokens`` totals the prompt tokens of every
    call (the reply tokens go into ``cost.generated_tokens``). Every :meth:`ask` is one judge
    call (``cost.judge_calls += 1``), whatever the reply."""

    name: str
    prompt_tokens: int

    @abstractmethod
    def ask(self, prompt: str, fields: Fields, system: str | None = None) -> Judgement:
        """Ask ``prompt`` (it holds the method's instructions and reply format) and return the
        :class:`Judgement` with a :class:`Verdict` per field of ``fields`` (field label as it
        appears in the reply, e.g. ``"Agent Name"`` -> its options). ``system`` is an optional
        system message. Costs one judge call."""

    def ask_many(
        self,
        prompts: Sequence[str],
        fields: Fields | Sequence[Fields],
        system: str | None = None,
    ) -> list[Judgement]:
        """:meth:`ask` for each prompt (``fields`` one mapping for all, or one per prompt); the
        judgements in prompt order. Costs one judge call per prompt."""
        return [
            self.ask(p, f, system)
            for p, f in zip(prompts, _per_prompt(prompts, fields), strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        """The judge's settings for a result's record (never a key). No model calls."""
        return {"judge": type(self).__name__, "name": self.name}


def _per_prompt(prompts: Sequence[str], fields: Fields | Sequence[Fields]) -> list[Fields]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise InputError("prompts must be a list of strings (use ask() for one prompt)")
    if isinstance(fields, Mapping):
        return [fields] * len(prompts)
    per = list(fields)
    if len(per) != len(prompts):
        raise InputError(f"{len(prompts)} prompts but {len(per)} field mappings; give one each")
    return per
