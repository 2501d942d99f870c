"""A judge behind an OpenAI-compatible chat endpoint (:class:`ChatJudge`, :func:`judge_from_env`)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from attribkit.core.errors import InputError, ScorerError
from attribkit.models.http_lm import RequestFailed, _excerpt, api_root, post_json
from attribkit.models.judge.base import (
    Fields,
    Judge,
    Judgement,
    _check_prompt,
    _per_prompt,
    check_fields,
    parse_reply,
)

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
