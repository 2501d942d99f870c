"""Judges (models/judge.py): the chat-completions judge against a scripted loopback server (reply
parsing, usage and call counts, concurrency, retries, clear errors that never show the key) and
the local constrained-choice judge on the tiny random Llama and on SmolLM2."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from attribkit.core.cost import measure
from attribkit.core.errors import InputError, ScorerError, WindowError
from attribkit.models.judge import (
    ChatJudge,
    Judgement,
    LocalJudge,
    Verdict,
    judge_from_env,
    match_option,
    parse_reply,
)

KEY_VAR = "ATTRIBKIT_TEST_JUDGE_KEY"
SECRET = "sk-test-SECRET-0123456789"
AGENTS = {"Agent Name": ["WebSurfer", "Orchestrator", "Assistant"], "Step Number": ["1", "12"]}
YES_NO = {"Answer": ["Yes", "No"]}


def chat(content: Any, prompt_tokens: int = 20, completion_tokens: int = 5) -> dict[str, Any]:
    """An OpenAI chat-completions answer with ``content`` and its usage."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@dataclass
class Reply:
    """A scripted answer: status, JSON (or raw bytes) body, a delay before answering, headers."""

    body: Any
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """A chat-completions server on 127.0.0.1 answering queued :class:`Reply` objects (or, when
    the queue is empty, ``respond(request_body)``), recording every request."""

    def __init__(self, replies: list[Reply], respond: Callable[[dict], Reply] | None) -> None:
        self.replies, self.respond = deque(replies), respond
        self.requests: list[dict[str, Any]] = []  # {"path", "headers", "body", "time"}
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "time": time.monotonic(),
                        }
                    )
                    reply = server.replies.popleft() if server.replies else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if reply is None:
                        assert server.respond is not None, "the script ran out of replies"
                        reply = server.respond(body)
                    time.sleep(reply.delay)
                    raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
                    data = raw if isinstance(raw, bytes) else raw.encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )


@contextmanager
def serve(*replies: Reply, respond: Callable[[dict], Reply] | None = None) -> Iterator[Any]:
    server = ScriptedServer(list(replies), respond)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        deadline = time.monotonic() + 10
        while server.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        server.httpd.server_close()
        server.thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chain_text(err: BaseException) -> str:
    """The messages of an error and every error it was raised from."""
    out, seen = [], set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(out)


# ---------------------------------------------------------------------- parsing


def test_parse_two_fields_numbers_and_markdown() -> None:
    got = parse_reply("Agent Name: WebSurfer\nStep Number: 12\nReason for Mistake: x", AGENTS)
    assert got["Agent Name"].choice == "WebSurfer" and got["Step Number"].choice == "12"
    assert all(v.parsed and v.scores is None for v in got.values())
    # "12" never matches the option "1"; "Step 1" does
    assert match_option("12", ["1"]) is None
    assert match_option("Step 12 (the search)", ["1", "12"]) == "12"
    assert match_option("step 1, then 12", ["1", "12"]) == "1"
    got = parse_reply("**Agent Name:** Orchestrator (-> WebSurfer)\n**Step Number**: 1.", AGENTS)
    assert got["Agent Name"].choice == "Orchestrator"  # the earliest, not the one inside ()
    assert got["Agent Name"].raw == "Orchestrator (-> WebSurfer)"
    assert got["Step Number"].choice == "1"
    got = parse_reply("agent name: `assistant`\nSTEP NUMBER: **12**", AGENTS)
    assert (got["Agent Name"].choice, got["Step Number"].choice) == ("Assistant", "12")
    # the longest of overlapping options wins; whole words only
    assert match_option("Web Surfer", ["Surfer", "Web Surfer"]) == "Web Surfer"
    assert match_option("WebSurfers", ["WebSurfer"]) is None
    assert match_option("Computer_terminal", ["terminal"]) is None
    # a value that names no option, or a missing field, is unparsed
    got = parse_reply("Agent Name: nobody\nStep Number: 7", AGENTS)
    assert got["Agent Name"].choice is None and not got["Agent Name"].parsed
    assert got["Step Number"].raw == "7" and got["Step Number"].choice is None
    got = parse_reply("Agent Name:\nWebSurfer\nStep Number:\nReason: none", AGENTS)
    assert got["Agent Name"].choice == "WebSurfer" and got["Step Number"].choice is None


def test_parse_single_field_without_label() -> None:
    for text, want in [
        ("1. yes. 2. Reason: the agent searched the wrong site.", "Yes"),
        ("1. No 2. Reason: fine.", "No"),
        ("**Yes**", "Yes"),
        ("Answer: no.", "No"),
        ("There is no mistake here", None),  # a Yes/No reply must start with it
        ("Yesterday the agent...", None),
    ]:
        assert parse_reply(text, YES_NO)["Answer"].choice == want, text
    halves = {"Answer": ["upper half", "lower half"]}
    assert parse_reply("upper half", halves)["Answer"].choice == "upper half"
    assert parse_reply("It is in the Lower Half.", halves)["Answer"].choice == "lower half"
    assert parse_reply("upper half or lower half?", halves)["Answer"].choice is None  # ambiguous
    # a number needs its label ("1." may be list numbering); two fields need their labels
    assert parse_reply("1. the mistake", {"Step": ["1", "2"]})["Step"].choice is None
    assert parse_reply("WebSurfer at 12", AGENTS)["Agent Name"].choice is None


def test_judgement_ranking() -> None:
    scored = Judgement(
        {"A": Verdict("y", {"x": -2.0, "y": -0.5, "z": -2.0}, True, ["x", "y", "z"], "y")}, "", 0, 0
    )
    assert scored.ranking("A") == ["y", "x", "z"]  # ties keep the given order
    chosen = Judgement({"A": Verdict("z", None, True, ["x", "y", "z"], "z")}, "", 0, 0)
    assert chosen.ranking("A") == ["z", "x", "y"] and chosen.choice("A") == "z"
    unparsed = Judgement({"A": Verdict(None, None, False, ["x", "y"], None)}, "", 0, 0)
    assert unparsed.ranking("A") == [] and not unparsed.parsed
    with pytest.raises(InputError, match="no field 'B'"):
        unparsed.ranking("B")
    assert json.loads(json.dumps(scored.to_dict()))["fields"]["A"]["scores"]["y"] == -0.5


def test_bad_fields() -> None:
    for bad, match in [
        ({}, "non-empty dict"),
        ({"Answer": []}, "non-empty list"),
        ({"Answer": "Yes"}, "non-empty list"),
        ({"Step": [1, 2]}, "str\\(i\\)"),
        ({"Step": ["1", "01"]}, "cannot be told apart"),
        ({"Answer": ["Yes", "yes"]}, "cannot be told apart"),
        ({"": ["a"]}, "non-empty one-line"),
    ]:
        with pytest.raises(InputError, match=match):
            parse_reply("x", bad)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=match):  # checked before any request
            ChatJudge("http://127.0.0.1:1", "m").ask("prompt", bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- endpoint judge


def test_chat_judge_asks_parses_and_counts(monkeypatch) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)
    replies = [
        Reply(chat("Agent Name: **WebSurfer**\nStep Number: 12\nReason for Mistake: x", 100, 9)),
        Reply(chat("1. yes. 2. Reason: wrong", 50, 7)),
        Reply(chat("I am not sure what you mean.", 40, 8)),  # malformed: unparsed
        Reply(chat("", 30, 0)),  # empty
        Reply(chat(None, 30)),  # null content (e.g. a refusal)
    ]
    with serve(*replies) as server:
        judge = ChatJudge(
            server.url + "/v1/", "judge-model", api_key_env=KEY_VAR, extra_body={"top_p": 0.5}
        )
        with measure(judge) as cost:
            a = judge.ask("Who made the mistake?", AGENTS, system="You are a careful judge.")
            b = judge.ask("Is there a mistake at this step?", YES_NO)
            c = judge.ask("Who made the mistake?", AGENTS)
            d = judge.ask("Is there a mistake?", YES_NO)
            e = judge.ask("Is there a mistake?", YES_NO)
        assert (a.choice("Agent Name"), a.choice("Step Number")) == ("WebSurfer", "12")
        assert a.parsed and a.prompt_tokens == 100 and a.completion_tokens == 9
        assert a.text.startswith("Agent Name: **WebSurfer**") and a.finish_reason == "stop"
        assert b.choice("Answer") == "Yes"
        assert not c.parsed and c.choice("Agent Name") is None and c.ranking("Agent Name") == []
        assert not d.parsed and d.text == "" and not e.parsed
        # one judge call per ask, whatever the reply; usage counted
        assert cost.judge_calls == 5 and cost.batches == 5 and cost.forward_passes == 0
        assert cost.generated_tokens == 9 + 7 + 8 + 0 + 5
        assert judge.prompt_tokens == 100 + 50 + 40 + 30 + 30
        first = server.requests[0]
        assert first["path"] == "/v1/chat/completions"
        assert first["headers"]["Authorization"] == f"Bearer {SECRET}"
        assert first["body"]["messages"] == [
            {"role": "system", "content": "You are a careful judge."},
            {"role": "user", "content": "Who made the mistake?"},
        ]
        body = first["body"]
        assert body["model"] == "judge-model" and body["temperature"] == 0.0
        assert body["max_tokens"] == 1024 and body["top_p"] == 0.5
        assert server.requests[1]["body"]["messages"] == [
            {"role": "user", "content": "Is there a mistake at this step?"}
        ]
    assert judge.name == "chat:judge-model"
    assert SECRET not in repr(judge) and KEY_VAR in repr(judge)
    assert SECRET not in json.dumps(judge.describe())


def test_chat_judge_bad_answers() -> None:
    with serve(Reply({"object": "error"}), Reply(b"<html>Bad gateway</html>")) as server:
        judge = ChatJudge(server.url, "m", retries=0)
        with pytest.raises(ScorerError, match="without 'choices'"):
            judge.ask("q", YES_NO)
        with pytest.raises(ScorerError, match=r"did not answer with JSON.*Bad gateway"):
            judge.ask("q", YES_NO)
        assert judge.cost.judge_calls == 2


def test_chat_judge_ask_many_in_order_and_concurrent() -> None:
    def respond(body: dict) -> Reply:
        n = int(body["messages"][-1]["content"].split()[-1])
        return Reply(chat(f"Step Number: {n}", 10, 2), delay=0.2 if n % 2 else 0.05)

    prompts = [f"question {n}" for n in range(8)]
    steps = {"Step Number": [str(i) for i in range(8)]}
    with serve(respond=respond) as server:
        judge = ChatJudge(server.url, "m", max_workers=4)
        start = time.perf_counter()
        got = judge.ask_many(prompts, steps)
        elapsed = time.perf_counter() - start
        assert [j.choice("Step Number") for j in got] == [str(n) for n in range(8)]
        assert server.max_in_flight > 1 and elapsed < 0.2 * 4 + 0.05 * 4
        assert judge.cost.judge_calls == 8 and judge.cost.generated_tokens == 16
        assert judge.prompt_tokens == 80
        # one fields mapping per prompt
        per = [{"Step Number": ["0", "1"]}, {"Step Number": ["1", "2"]}]
        got = judge.ask_many(prompts[:2], per)
        assert [j.choice("Step Number") for j in got] == ["0", "1"]
        with pytest.raises(InputError, match="2 prompts but 1 field"):
            judge.ask_many(prompts[:2], [per[0]])


def test_chat_judge_retries_then_succeeds() -> None:
    replies = [
        Reply({"error": {"message": "overloaded"}}, status=503),
        Reply({"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "0"}),
        Reply(chat("Answer: No")),
    ]
    with serve(*replies) as server:
        judge = ChatJudge(server.url, "m", retries=2, backoff=0.01)
        got = judge.ask("Is there a mistake?", YES_NO)
        assert got.choice("Answer") == "No"
        assert len(server.requests) == 3
        assert judge.cost.judge_calls == 1 and judge.cost.batches == 1
        # backoff doubles: the waits are >= 0.01 then >= 0.02 seconds
        times = [r["time"] for r in server.requests]
        assert times[1] - times[0] >= 0.01 and times[2] - times[1] >= 0.02
    with serve(Reply({"error": "busy"}, status=503), Reply(chat("Answer: No"))) as server:
        with pytest.raises(ScorerError, match="HTTP 503"):
            ChatJudge(server.url, "m", retries=0).ask("q", YES_NO)  # retries=0: no retry
        assert len(server.requests) == 1
    with serve(Reply({"error": "no such model"}, status=404), Reply(chat("Answer: No"))) as server:
        with pytest.raises(ScorerError, match=r"HTTP 404.*no such model") as err:
            ChatJudge(server.url, "m", retries=3, backoff=0.01).ask("q", YES_NO)
        assert len(server.requests) == 1 and "attempts" not in str(err.value)  # 4xx: no retry


def test_chat_judge_timeout_after_retries() -> None:
    slow = [Reply(chat("Answer: Yes"), delay=0.6) for _ in range(2)]
    with serve(*slow) as server:
        judge = ChatJudge(server.url, "m", timeout=0.15, retries=1, backoff=0.01)
        with pytest.raises(ScorerError, match=r"did not answer within 0.15s.*after 2 attempts"):
            judge.ask("q", YES_NO)
        assert len(server.requests) == 2  # the attempts are visible in the request log
        assert judge.cost.judge_calls == 1 and judge.cost.batches == 0


def test_chat_judge_401_names_the_variable_never_the_key(monkeypatch) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)
    echoed = {"error": {"message": f"Incorrect API key provided: {SECRET}", "code": 401}}
    with serve(Reply(echoed, status=401), Reply(chat("Answer: Yes"))) as server:
        judge = ChatJudge(server.url, "m", api_key_env=KEY_VAR, retries=2, backoff=0.01)
        with pytest.raises(ScorerError) as err:
            judge.ask("q", YES_NO)
        msg = str(err.value)
        assert "HTTP 401" in msg and f"environment variable {KEY_VAR} was rejected" in msg
        assert SECRET not in msg and "[redacted]" in msg
        assert SECRET not in chain_text(err.value)
        assert SECRET not in repr(judge) and SECRET not in repr(err.value)
        assert len(server.requests) == 1  # a 401 is not retried
        assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    with (
        serve(Reply({"error": "unauthorized"}, status=401)) as server,
        pytest.raises(ScorerError, match=r"wants an API key.*api_key_env"),
    ):
        ChatJudge(server.url, "m").ask("q", YES_NO)


def test_chat_judge_setup_errors(monkeypatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    port = free_port()
    judge = ChatJudge(f"http://127.0.0.1:{port}", "m", api_key_env=KEY_VAR)
    with pytest.raises(InputError, match=f"{KEY_VAR}.*not set"):
        judge.ask("q", YES_NO)
    assert judge.cost.judge_calls == 0  # no call was made
    monkeypatch.setenv(KEY_VAR, SECRET)
    start = time.perf_counter()
    with pytest.raises(ScorerError, match=f"connection refused.*{port}|{port}.*connection refused"):
        judge.ask("q", YES_NO)
    assert time.perf_counter() - start < 2  # a refused connection is not retried
    with pytest.raises(InputError, match="NAME of an environment variable") as err:
        ChatJudge("http://127.0.0.1:1", "m", api_key_env=SECRET)
    assert SECRET not in str(err.value)
    with pytest.raises(InputError, match="http://"):
        ChatJudge("localhost:8000", "m")
    with pytest.raises(InputError, match="max_workers"):
        ChatJudge("http://127.0.0.1:1", "m", max_workers=0)
    with pytest.raises(InputError, match="non-empty string"):
        ChatJudge("http://127.0.0.1:1", "m").ask("  ", YES_NO)


def test_judge_from_env(monkeypatch) -> None:
    for var in ("ATTRIBKIT_JUDGE_URL", "ATTRIBKIT_JUDGE_MODEL", "ATTRIBKIT_JUDGE_KEY_ENV"):
        monkeypatch.delenv(var, raising=False)
    assert judge_from_env() is None
    monkeypatch.setenv("ATTRIBKIT_JUDGE_URL", "http://127.0.0.1:8000/v1")
    with pytest.raises(InputError, match="ATTRIBKIT_JUDGE_MODEL"):
        judge_from_env()
    monkeypatch.setenv("ATTRIBKIT_JUDGE_MODEL", "gpt-x")
    monkeypatch.setenv("ATTRIBKIT_JUDGE_KEY_ENV", KEY_VAR)
    judge = judge_from_env(timeout=5)
    assert isinstance(judge, ChatJudge)
    assert (judge.url, judge.model, judge.api_key_env, judge.timeout) == (
        "http://127.0.0.1:8000/v1/chat/completions",
        "gpt-x",
        KEY_VAR,
        5,
    )


# ---------------------------------------------------------------------- local judge

PROMPT = (
    "Which agent made the mistake, and at which step?\n"
    "Step 0 - Orchestrator: find the population of Paris.\n"
    "Step 1 - WebSurfer: the population of Paris is 12 people.\n"
    "Answer in the format Agent Name: ... Step Number: ..."
)
LOCAL = {"Agent Name": ["Orchestrator", "WebSurfer", "Assistant"], "Step Number": ["0", "1", "2"]}


def check_local(lm: Any, judge: LocalJudge, prompt: str, fields: dict, system: str | None) -> None:
    """One ask: parsed, scores for every option, choice = argmax, score differences equal to
    independently computed log-probabilities of the reply lines, cost = one pass per option."""
    with measure(judge) as cost:
        got = judge.ask(prompt, fields, system=system)
    assert cost.judge_calls == 1 and cost.generated_tokens == 0
    assert cost.forward_passes == sum(len(o) for o in fields.values())
    assert got.parsed and list(got.fields) == list(fields)
    before = ""
    for label, options in fields.items():
        v = got.fields[label]
        assert v.scores is not None and list(v.scores) == options
        assert v.choice == max(options, key=lambda o: v.scores[o])  # type: ignore[index]
        assert got.ranking(label)[0] == v.choice and sorted(got.ranking(label)) == sorted(options)
        # independent: each full reply line scored through set_reference (which takes system=)
        full = [
            lm.set_reference(prompt, f"{before}{label}: {o}", system=system).sum() for o in options
        ]
        lm.clear_reference()
        mine = np.array([v.scores[o] for o in options])
        np.testing.assert_allclose(mine - mine[0], np.array(full) - full[0], atol=2e-3)
        assert np.all(mine < 0)
        before += f"{label}: {v.choice}\n"
    assert got.text == before.rstrip("\n")
    assert got.prompt_tokens == lm.count_tokens(prompt, system=system)


def test_local_judge_tiny(tiny_lm) -> None:
    judge = LocalJudge(tiny_lm, batch_size=2)
    assert judge.name == "local:tiny" and judge.cost is tiny_lm.cost
    check_local(tiny_lm, judge, PROMPT, LOCAL, None)
    check_local(tiny_lm, judge, "Is there a mistake at step 1?", YES_NO, None)
    check_local(tiny_lm, judge, PROMPT, LOCAL, "You judge multi-agent logs.")
    # without prefix reuse: the same scores, the options of a field batched
    plain = LocalJudge(tiny_lm, batch_size=8, reuse_prefix=False)
    with measure(tiny_lm) as cost:
        a = plain.ask(PROMPT, LOCAL)
    assert cost.batches == 2 and cost.forward_passes == 6 and cost.judge_calls == 1
    b = judge.ask(PROMPT, LOCAL)
    for label in LOCAL:
        np.testing.assert_allclose(
            list(a.fields[label].scores.values()), list(b.fields[label].scores.values()), atol=2e-3
        )
    many = plain.ask_many([PROMPT, "Is there a mistake?"], [LOCAL, YES_NO])
    assert [j.parsed for j in many] == [True, True] and set(many[1].fields) == {"Answer"}


def test_local_judge_errors(tiny_lm) -> None:
    judge = LocalJudge(tiny_lm)
    long = "Step 0 - WebSurfer: " + "the cat sat on the mat. " * 200
    with pytest.raises(InputError, match=r"tokens over tiny's 512-token window; truncate") as err:
        judge.ask(long, YES_NO)
    assert isinstance(err.value, WindowError) and err.value.over > 0
    assert f"at least {err.value.over} under" in str(err.value)
    with pytest.raises(InputError, match="cannot be told apart"):
        judge.ask(PROMPT, {"Step Number": ["1", "01"]})
    with pytest.raises(InputError, match="needs a local LanguageModel"):
        LocalJudge(object())  # type: ignore[arg-type]


@pytest.mark.model
def test_local_judge_smollm2(smollm2) -> None:
    judge = LocalJudge(smollm2)
    assert judge.name == f"local:{smollm2.name}"
    check_local(smollm2, judge, PROMPT, LOCAL, None)
    check_local(smollm2, judge, "Is Paris the capital of France? Answer Yes or No.", YES_NO, None)
    check_local(smollm2, judge, PROMPT, {"Answer": ["upper half", "lower half"]}, "Be brief.")
