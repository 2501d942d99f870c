"""A black-box language model behind an OpenAI-compatible HTTP completions endpoint.

:class:`OpenAICompatibleLM` offers the scoring interface of the local
:class:`~attribkit.models.lm.LanguageModel` (``generate``, ``token_logprobs``, ``logprob``) for a
model served elsewhere — vLLM, llama.cpp server, any server implementing ``POST /v1/completions``
with ``echo`` and ``logprobs``. It uses only the standard library (``urllib.request`` + ``json``):
:func:`post_json` is the one HTTP call, shared with the chat judge
(:class:`~attribkit.models.judge.ChatJudge`).

Scoring a response sends ``prompt_format(prompt) + response`` with ``echo=True``,
``logprobs=1`` and ``max_tokens=0``: the server returns the log-probability of every token of the
text it was sent, with each token's character offset (``text_offset``). The response's tokens are
those starting at or after the end of the formatted prompt. The server tokenizes prompt and
response *together*; if a token straddles the boundary (the tokenizer merged the end of the
prompt with the start of the response), the response's log-probability is not defined by that
tokenization and an :class:`~attribkit.core.errors.InputError` says so (rather than silently
counting part of the prompt as response).
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.models.pairs import broadcast_pairs
from attribkit.models.sampling import check_sampling

__all__ = ["OpenAICompatibleLM", "RequestFailed", "api_root", "post_json"]

_NEEDS_ECHO = (
    "token log-probabilities need a completions endpoint that supports `echo` together with "
    "`logprobs` and `max_tokens=0` (e.g. vLLM or llama.cpp server); chat-only endpoints and "
    "OpenAI's hosted models do not return prompt log-probabilities"
)


def _excerpt(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def api_root(base_url: str) -> str:
    """The server root of an OpenAI-compatible ``base_url``: trailing ``/`` and ``/v1`` removed
    (endpoints are ``root + "/v1/..."``). Raises InputError unless it is an http(s) URL."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise InputError(f"base_url must start with http:// or https://, got {base_url!r}")
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class RequestFailed(ScorerError):
    """An HTTP request that got no usable answer. ``status`` is the HTTP status code when the
    server answered with an error (None when it did not answer), ``timed_out`` whether the wait
    ran out, ``retry_after`` the seconds a ``Retry-After`` header asked for (else None)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        timed_out: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.timed_out, self.retry_after = status, timed_out, retry_after


def _retry_after(headers: Any) -> float | None:
    try:
        value = float(headers.get("Retry-After")) if headers is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and value >= 0 else None


def post_json(
    url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 60
) -> Any:
    """POST ``body`` as JSON to ``url`` and return the decoded JSON answer (standard library
    only; no model calls counted: the caller counts). ``headers`` are added to the JSON
    content-type headers.

    Every failure raises :class:`RequestFailed` (a :class:`~attribkit.core.errors.ScorerError`)
    naming the URL and what went wrong: connection refused, no answer within ``timeout``
    seconds, an HTTP error status (with an excerpt of the body), or an answer that is not JSON.
    The message never contains the request's headers."""
    data = json.dumps(body).encode("utf-8")
    sent = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=sent, method="POST")
    late = f"{url} did not answer within {timeout}s; raise timeout= or check the server"
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        try:
            detail = e.read().decode("utf-8", "replace")
        except Exception:  # the body is only a hint
            detail = ""
        raise RequestFailed(
            f"{url} answered HTTP {e.code} {e.reason}: {_excerpt(detail) or '(empty body)'}",
            status=e.code,
            retry_after=_retry_after(e.headers),
        ) from e
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            raise RequestFailed(
                f"could not connect to {url}: connection refused; is the server running "
                "and is base_url (host and port) right?"
            ) from e
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise RequestFailed(late, timed_out=True) from e
        raise RequestFailed(f"could not reach {url}: {reason}") from e
    except TimeoutError as e:
        raise RequestFailed(late, timed_out=True) from e
    except (ConnectionError, OSError) as e:
        raise RequestFailed(f"the connection to {url} failed: {e}") from e
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestFailed(
            f"{url} did not answer with JSON: {_excerpt(raw.decode('utf-8', 'replace'))}"
        ) from e


class OpenAICompatibleLM(CostMeter):
    """A language model served over an OpenAI-compatible ``/v1/completions`` endpoint.

    Args:
        base_url: the server, e.g. ``"http://localhost:8000"`` (a trailing ``/v1`` is accepted).
        model: the model name the server expects in requests.
        api_key: optional; sent as ``Authorization: Bearer <api_key>``.
        prompt_format: a template with a ``{prompt}`` field applied to every prompt (when
            ``chat=True``, the default), e.g. the model's chat template written out:
            ``"<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n"``.
        timeout: seconds to wait for each request.
        max_workers: requests sent concurrently by ``token_logprobs``.
        extra_body: optional fields added to every request body (server-specific options).

    Cost accounting (``self.cost``): ``forward_passes`` += one per sequence scored (one per
    generated token for ``generate``, as the local model counts), ``batches`` += one per request. Every failure to talk to the server raises
    :class:`~attribkit.core.errors.ScorerError` naming the URL and what went wrong.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        prompt_format: str = "{prompt}",
        timeout: float = 60,
        max_workers: int = 4,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        root = api_root(base_url)
        if "{prompt}" not in prompt_format:
            raise InputError(
                f"prompt_format {prompt_format!r} has no {{prompt}} field; write where the prompt goes"
            )
        try:
            prompt_format.format(prompt="")
        except (KeyError, IndexError, ValueError) as e:
            raise InputError(
                f"prompt_format {prompt_format!r} is not a valid template ({e!r}); "
                "double literal braces as {{ and }}"
            ) from e
        if max_workers < 1:
            raise InputError("max_workers must be >= 1")
        self.base_url, self.model, self.api_key = root, model, api_key
        self.url = root + "/v1/completions"
        self.prompt_format, self.timeout, self.max_workers = prompt_format, timeout, max_workers
        self.extra_body = dict(extra_body or {})
        self.name = model
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatibleLM({self.model!r} at {self.base_url}, cost={self.cost})"

    # ------------------------------------------------------------------ HTTP

    def format_prompt(self, prompt: str) -> str:
        """``prompt_format`` applied to ``prompt``. No model calls."""
        return self.prompt_format.format(prompt=prompt)

    def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """POST ``body`` to the completions endpoint; return (first choice, whole answer).
        Counts one batch; the caller counts forward passes."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        payload = {"model": self.model, **self.extra_body, **body}
        try:
            out = post_json(self.url, payload, headers, self.timeout)
        except RequestFailed as e:
            if e.status in (400, 422) and body.get("echo"):
                raise RequestFailed(f"{e} ({_NEEDS_ECHO})", status=e.status) from e
            raise
        with self._lock:
            self.cost.batches += 1
        choices = out.get("choices") if isinstance(out, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ScorerError(
                f"{self.url} answered without 'choices' (not an OpenAI completions response): "
                f"{_excerpt(json.dumps(out))}"
            )
        return choices[0], out

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 128,
        chat: bool = True,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        n: int = 1,
        prefill: str | None = None,
        **kw: Any,
    ) -> str | list[str]:
        """Continuation of ``prompt`` (through ``prompt_format`` unless ``chat=False``); returns
        the server's text unchanged: a ``str`` for ``n == 1``, the ``n`` choices' texts in
        ``index`` order for ``n > 1``.

        ``temperature=0`` (the default) asks for greedy decoding, as before; ``temperature``,
        ``top_p`` (sent when < 1), ``seed`` (sent when given; how reproducible it is depends on
        the server) and ``n`` (sent when > 1) go into the completions request. ``prefill`` is
        appended to the (formatted) prompt, so the answer starts with it; it is not part of the
        returned text. Extra keyword arguments are added to the request (e.g. ``stop=["\\n"]``).
        Costs one request (``cost.batches``), counted as one forward pass per generated token
        when the server reports ``usage.completion_tokens`` (else one per answer);
        ``cost.generated_tokens`` += ``usage.completion_tokens`` (all ``n`` answers) when
        reported.
        """
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be a string, got {type(prompt).__name__}")
        check_sampling(max_new_tokens, temperature, top_p, seed, n, prefill)
        text = self.format_prompt(prompt) if chat else prompt
        if prefill:
            text += prefill
        body: dict[str, Any] = {"prompt": text, "max_tokens": max_new_tokens}
        body["temperature"] = temperature if temperature > 0 else 0
        if top_p < 1:
            body["top_p"] = top_p
        if seed is not None:
            body["seed"] = seed
        if n > 1:
            body["n"] = n
        body.update(kw)
        with self.timed():
            _, answer = self._post(body)
        choices = answer["choices"]
        if len(choices) != n or not all(isinstance(c, dict) for c in choices):
            raise ScorerError(
                f"{self.url} returned {len(choices)} choices for n={n}; the server may not "
                "support `n` (ask for one answer per request instead)"
            )
        if all(isinstance(c.get("index"), int) for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        texts = []
        for i, c in enumerate(choices):
            out = c.get("text")
            if not isinstance(out, str):
                raise ScorerError(
                    f"{self.url} returned no generated text (choices[{i}].text is {out!r})"
                )
            texts.append(out)
        usage = answer.get("usage")
        n_new = usage.get("completion_tokens") if isinstance(usage, dict) else None
        counted = isinstance(n_new, int) and not isinstance(n_new, bool) and n_new > 0
        self.cost.forward_passes += n_new if counted else n
        if counted:
            self.cost.generated_tokens += n_new
        return texts[0] if n == 1 else texts

    # ------------------------------------------------------------------ scoring

    def _pairs(
        self, prompts: str | Sequence[str], responses: str | Sequence[str], chat: bool
    ) -> list[tuple[str, str]]:
        pairs = broadcast_pairs(prompts, responses)
        return [(self.format_prompt(p) if chat else p, r) for p, r in pairs]

    def _score_one(self, prompt: str, response: str) -> np.ndarray:
        full = prompt + response
        body = {"prompt": full, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0}
        choice, _ = self._post(body)
        with self._lock:
            self.cost.forward_passes += 1
        lp = choice.get("logprobs")
        if not isinstance(lp, dict) or not lp.get("token_logprobs") or "text_offset" not in lp:
            raise ScorerError(f"{self.url} returned no logprobs: {_NEEDS_ECHO}")
        values, offsets = lp["token_logprobs"], lp["text_offset"]
        tokens = lp.get("tokens") or []
        if len(values) != len(offsets):
            raise ScorerError(
                f"{self.url} returned {len(values)} token_logprobs but {len(offsets)} text_offset "
                "entries; the server's logprobs are malformed"
            )
        boundary = len(prompt) + self._offset_shift(tokens, offsets, full)
        end = boundary + len(response)
        # Tokens starting inside the sent text; drop any generated ones (offset >= end).
        starts = [int(o) for o in offsets]
        inside = [i for i, s in enumerate(starts) if s < end]
        picked = [i for i in inside if starts[i] >= boundary]
        if not picked:
            raise ScorerError(
                f"{self.url} returned no log-probabilities for the response tokens (it did not echo "
                f"the prompt): {_NEEDS_ECHO}"
            )
        if starts[picked[0]] != boundary:
            before = [i for i in inside if starts[i] < boundary]
            tok = tokens[before[-1]] if before and before[-1] < len(tokens) else "?"
            raise InputError(
                f"the response does not start at a token boundary: the server's tokenizer merges the "
                f"end of the prompt with the start of the response (token {tok!r}), so the response's "
                "log-probability is undefined; end the prompt (or prompt_format) with a separator "
                "such as a space or newline, or start the response with one"
            )
        out = []
        for i in picked:
            v = values[i]
            if v is None:
                raise ScorerError(
                    "the server gave no log-probability for the response's first token (it is the "
                    "first token of the sequence); pass a non-empty prompt"
                )
            out.append(float(v))
        arr = np.array(out, dtype=float)
        if not np.isfinite(arr).all():
            raise ScorerError(f"{self.url} returned a non-finite log-probability: {out}")
        return arr

    @staticmethod
    def _offset_shift(tokens: list[Any], offsets: list[Any], full: str) -> int:
        """Characters the server's offsets are shifted by relative to the text sent.

        Some servers count a special start token's text (``"<s>"``) in ``text_offset``; when the
        tokens joined give exactly that prefix plus the text sent, the offsets are shifted by its
        length. Otherwise they are taken as offsets into the text sent (the OpenAI convention).
        """
        if not tokens or not all(isinstance(t, str) for t in tokens) or len(tokens) != len(offsets):
            return 0
        joined = "".join(tokens)
        if joined == full or not joined.endswith(full):
            return 0
        shift = len(joined) - len(full)
        if int(offsets[0]) == 0 and (len(offsets) < 2 or int(offsets[1]) >= shift):
            return shift
        return 0

    def token_logprobs(
        self,
        prompts: str | Sequence[str],
        responses: str | Sequence[str],
        chat: bool = True,
    ) -> list[np.ndarray]:
        """log p(response token | prompt, earlier response tokens) for each pair: a list of arrays,
        one value per response token (as the server tokenizes prompt + response). A single prompt
        or response is broadcast to the other's length; prompts go through ``prompt_format``
        unless ``chat=False``. Costs one request (one forward pass) per pair, ``max_workers``
        at a time."""
        pairs = self._pairs(prompts, responses, chat)
        with self.timed():
            if len(pairs) == 1 or self.max_workers == 1:
                return [self._score_one(p, r) for p, r in pairs]
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(pairs))) as pool:
                futures = [pool.submit(self._score_one, p, r) for p, r in pairs]
                return [f.result() for f in futures]

    def logprob(
        self,
        prompts: str | Sequence[str],
        responses: str | Sequence[str],
        chat: bool = True,
    ) -> np.ndarray:
        """Summed log-probability of each response given its prompt: an array, one per pair.
        Costs one request (one forward pass) per pair (see :meth:`token_logprobs`)."""
        return np.array([v.sum() for v in self.token_logprobs(prompts, responses, chat)])
