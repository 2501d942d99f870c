"""Judges: a model asked to choose among given options, for one or more named fields.

Failure attribution over multi-agent logs (Who&When, Zhang et al., ICML 2025; A2P, West et al.,
2025) asks a *judge* questions such as "which agent made the mistake, and at which step?", "is
there a mistake at this step? Yes/No" or "is the mistake in the upper or the lower half?". A
method writes the whole prompt (its instructions and the reply format it wants) and names the
fields of the reply with their allowed options::

    j = judge.ask(prompt, {"Agent Name": ["WebSurfer", "Orchestrator"], "Step Number": ["0", "1"]})
    j.fields["Agent Name"].choice      # "WebSurfer", or None when the reply did not say
    j.ranking("Step Number")           # options best first (for MRR)

Two judges answer the same :meth:`Judge.ask`:

- :class:`ChatJudge` — any OpenAI-compatible ``/v1/chat/completions`` server (OpenAI, vLLM,
  llama.cpp server, Ollama). It parses ``"{Field}: value"`` lines of the free-text reply; a reply
  that does not name an option is *unparsed* (``choice=None``), never an error. The API key is
  read from an environment variable the user names, at request time; it is never stored, shown or
  logged.
- :class:`LocalJudge` — a local :class:`~attribkit.models.lm.LanguageModel` by *constrained
  choice*: every option is scored as the reply line ``"{Field}: {option}"`` after the
  chat-formatted prompt, and the most probable one is chosen. It never fails to parse and gives a
  log-probability for every option (a ranking).

Both count one ``judge_calls`` per :meth:`~Judge.ask` on their meter (``judge.cost``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.models.http_lm import RequestFailed, _excerpt, api_root, post_json

if TYPE_CHECKING:
    from attribkit.models.lm import LanguageModel

__all__ = [
    "ChatJudge",
    "Judge",
    "Judgement",
    "LocalJudge",
    "Verdict",
    "check_fields",
    "judge_from_env",
    "match_option",
    "parse_reply",
]

Fields = Mapping[str, Sequence[str]]


# ---------------------------------------------------------------------- results


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


# ---------------------------------------------------------------------- checks


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


# ---------------------------------------------------------------------- parsing

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


# ---------------------------------------------------------------------- base


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


# ---------------------------------------------------------------------- endpoint judge

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _count(value: Any) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return int(value) if ok else 0


class ChatJudge(Judge):
    """A judge behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: the server, e.g. ``"http://localhost:8000"`` or ``"https://api.openai.com/v1"``
            (a trailing ``/v1`` is accepted).
        model: the model name the server expects.
        api_key_env: the NAME of the environment variable holding the API key (sent as
            ``Authorization: Bearer``), read at each request and never stored, shown or logged;
            None for a server without a key.
        timeout: seconds to wait for each request.
        retries: extra attempts after a 429, a 5xx or a timeout, waiting ``backoff * 2**k``
            seconds (at least what a ``Retry-After`` header asks, up to 60 s); 0 disables.
            Other errors (401, 404, connection refused) are not retried.
        max_workers: requests in flight at once in :meth:`ask_many`.
        temperature, max_tokens: sent with every request (greedy by default).
        extra_body: fields added to every request body; they override the defaults (e.g.
            ``{"max_completion_tokens": 2048}`` or ``{"top_p": 0.95}``).
        backoff: the first retry's wait in seconds.

    Cost (``self.cost``): ``judge_calls`` += 1 per ask; ``batches`` += 1 per request answered;
    ``generated_tokens`` += the reply's ``usage.completion_tokens``; the prompt tokens
    (``usage.prompt_tokens``) add up in ``self.prompt_tokens``; ``seconds`` the time spent
    waiting. No forward passes are counted: the server's model is not ours to count.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 60,
        retries: int = 2,
        max_workers: int = 4,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        extra_body: dict[str, Any] | None = None,
        backoff: float = 0.5,
    ) -> None:
        super().__init__()
        root = api_root(base_url)
        if not isinstance(model, str) or not model.strip():
            raise InputError("model must be the (non-empty) model name the server expects")
        if api_key_env is not None and (
            not isinstance(api_key_env, str) or not _VAR_NAME.fullmatch(api_key_env)
        ):
            # never echo the value: it may be the key itself, passed by mistake
            raise InputError(
                "api_key_env must be the NAME of an environment variable holding the key "
                "(letters, digits and _, at most 64 characters), not the key itself"
            )
        if not timeout > 0:
            raise InputError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise InputError(f"retries must be an integer >= 0, got {retries!r}")
        if not isinstance(max_workers, int) or max_workers < 1:
            raise InputError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        if not temperature >= 0:
            raise InputError(f"temperature must be >= 0, got {temperature!r}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise InputError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        if not backoff >= 0:
            raise InputError(f"backoff must be >= 0 seconds, got {backoff!r}")
        self.base_url, self.model, self.api_key_env = root, model, api_key_env
        self.url = root + "/v1/chat/completions"
        self.timeout, self.retries, self.max_workers = timeout, retries, max_workers
        self.temperature, self.max_tokens, self.backoff = temperature, max_tokens, backoff
        self.extra_body = dict(extra_body or {})
        self.name = f"chat:{model}"
        self.prompt_tokens = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        key = f", key from ${self.api_key_env}" if self.api_key_env else ""
        return f"ChatJudge({self.model!r} at {self.base_url}{key}, cost={self.cost})"

    def describe(self) -> dict[str, Any]:
        """Model, server, sampling settings and the key's variable name (not its value)."""
        return {
            **super().describe(),
            "model": self.model,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "api_key_env": self.api_key_env,
            **({"extra_body": dict(self.extra_body)} if self.extra_body else {}),
        }

    # ------------------------------------------------------------------ HTTP

    def _key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise InputError(
                f"environment variable {self.api_key_env} (api_key_env) is not set or empty; "
                f"export {self.api_key_env} with the judge server's API key, or pass "
                "api_key_env=None for a server without a key"
            )
        return key

    def _failure(self, e: RequestFailed, attempts: int, key: str | None) -> RequestFailed:
        """The error to raise for a failed request, with the key (if the server echoed it)
        replaced by ``[redacted]``."""
        if e.status in (401, 403):
            if self.api_key_env:
                msg = (
                    f"{self.url} rejected the request (HTTP {e.status}): the key in environment "
                    f"variable {self.api_key_env} was rejected; check that it holds a valid key "
                    f"for this server. Server said: {e}"
                )
            else:
                msg = (
                    f"{self.url} rejected the request (HTTP {e.status}): the server wants an API "
                    "key; pass api_key_env='VAR' naming an environment variable that holds it. "
                    f"Server said: {e}"
                )
        else:
            msg = str(e)
            if attempts > 1:
                msg += f" (gave up after {attempts} attempts; retries={self.retries})"
        if key and len(key) >= 4:
            msg = msg.replace(key, "[redacted]")
        return RequestFailed(msg, status=e.status, timed_out=e.timed_out)

    def _request(self, body: dict[str, Any]) -> Any:
        """POST ``body``, retrying 429/5xx/timeouts; the decoded answer. Counts one batch."""
        key = self._key()
        headers = {"Authorization": f"Bearer {key}"} if key else None
        attempts = self.retries + 1
        for k in range(attempts):
            try:
                out = post_json(self.url, body, headers, self.timeout)
            except RequestFailed as e:
                error = e
            else:
                with self._lock:
                    self.cost.batches += 1
                return out
            # outside the except block, so a raised error has no implicit context
            status = error.status
            retry = error.timed_out or (status is not None and (status == 429 or status >= 500))
            if not retry or k == attempts - 1:
                err = self._failure(error, k + 1, key)
                if key and len(key) >= 4 and key in str(error):
                    raise err  # chaining the server's error would show the key
                raise err from error
            wait = self.backoff * 2**k
            if error.retry_after is not None:
                wait = max(wait, min(error.retry_after, 60.0))
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _reply(self, out: Any) -> tuple[str, str | None]:
        choices = out.get("choices") if isinstance(out, dict) else None
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise ScorerError(
                f"{self.url} answered without 'choices' (not an OpenAI chat completions "
                f"response): {_excerpt(str(out))}"
            )
        choice = choices[0]
        message = choice.get("message")
        if isinstance(message, dict):
            content = message.get("content")
        elif isinstance(choice.get("text"), str):
            content = choice["text"]
        else:
            raise ScorerError(
                f"{self.url} answered a choice without 'message' (not an OpenAI chat "
                f"completions response): {_excerpt(str(choice))}"
            )
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            content = "".join(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
        text = content if isinstance(content, str) else ""
        finish = choice.get("finish_reason")
        return text, finish if isinstance(finish, str) else None

    # ------------------------------------------------------------------ asking

    def _ask(self, prompt: str, fields: Fields, system: str | None) -> Judgement:
        checked = check_fields(fields)
        _check_prompt(prompt)
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": prompt})
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        self._key()  # a missing key variable is a setup error, not a judge call
        start = time.perf_counter()
        with self._lock:
            self.cost.judge_calls += 1
        try:
            out = self._request(body)
        finally:
            with self._lock:
                self.cost.seconds += time.perf_counter() - start
        text, finish = self._reply(out)
        usage = out.get("usage") if isinstance(out.get("usage"), dict) else {}
        n_prompt, n_reply = (
            _count(usage.get("prompt_tokens")),
            _count(usage.get("completion_tokens")),
        )
        with self._lock:
            self.prompt_tokens += n_prompt
            self.cost.generated_tokens += n_reply
        return Judgement(parse_reply(text, checked), text, n_prompt, n_reply, finish)

    def ask(self, prompt: str, fields: Fields, system: str | None = None) -> Judgement:
        """Send ``[system?, user: prompt]`` and parse the reply (see :func:`parse_reply`); an
        empty or unparsable reply gives unparsed verdicts, not an error. Costs one judge call,
        one request (up to ``1 + retries`` attempts), the reply's tokens in
        ``cost.generated_tokens``. Raises ScorerError when the server cannot be reached, refuses
        (401: names the key's variable, never the key), times out after the retries, or answers
        something that is not a chat completion."""
        return self._ask(prompt, fields, system)

    def ask_many(
        self,
        prompts: Sequence[str],
        fields: Fields | Sequence[Fields],
        system: str | None = None,
    ) -> list[Judgement]:
        """:meth:`ask` for each prompt, ``max_workers`` requests in flight at once; the
        judgements in prompt order. On the first error the requests not yet sent are cancelled
        and the error is raised. Costs one judge call per prompt."""
        per = _per_prompt(prompts, fields)
        if len(prompts) <= 1 or self.max_workers == 1:
            return [self._ask(p, f, system) for p, f in zip(prompts, per, strict=True)]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(prompts))) as pool:
            futures = [
                pool.submit(self._ask, p, f, system) for p, f in zip(prompts, per, strict=True)
            ]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


def judge_from_env(**kwargs: Any) -> ChatJudge | None:
    """A :class:`ChatJudge` from the environment, or None when ``ATTRIBKIT_JUDGE_URL`` is unset:
    ``ATTRIBKIT_JUDGE_URL`` (the server), ``ATTRIBKIT_JUDGE_MODEL`` (its model name, required
    with the URL) and ``ATTRIBKIT_JUDGE_KEY_ENV`` (the NAME of the variable holding the key;
    unset for a server without a key). ``kwargs`` go to :class:`ChatJudge` (timeout, retries...).
    No model calls."""
    url = os.environ.get("ATTRIBKIT_JUDGE_URL", "").strip()
    if not url:
        return None
    model = os.environ.get("ATTRIBKIT_JUDGE_MODEL", "").strip()
    if not model:
        raise InputError(
            "ATTRIBKIT_JUDGE_URL is set but ATTRIBKIT_JUDGE_MODEL is not; export the model name "
            "the judge server expects"
        )
    key_env = os.environ.get("ATTRIBKIT_JUDGE_KEY_ENV", "").strip() or None
    return ChatJudge(url, model, api_key_env=key_env, **kwargs)


# ---------------------------------------------------------------------- local judge


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
                raise InputError(
                    f"the judge prompt is {n_prompt} tokens (+ up to {longest} for the reply), "
                    f"{over} tokens over {lm.name}'s {window}-token window; truncate the log "
                    "(drop or shorten turns) before asking"
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
