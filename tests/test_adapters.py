"""Model adapters: TorchClassifier, CallableModel and the OpenAI-compatible HTTP LM."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError, ScorerError
from attribkit.core.gradient import GradientScorer
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits, ImageUnits, TextUnits
from attribkit.models.blackbox import CallableModel
from attribkit.models.classifier import TorchClassifier
from attribkit.models.http_lm import OpenAICompatibleLM

# ----------------------------------------------------------------------------- TorchClassifier


@pytest.fixture(scope="module")
def iris() -> tuple[TorchClassifier, np.ndarray, np.ndarray, list[str]]:
    """A small MLP trained on iris (about a second), wrapped in a TorchClassifier."""
    from sklearn.datasets import load_iris

    data = load_iris()
    x = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    y = data.target
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend on a busy machine
    try:
        for _ in range(300):  # full-batch gradient descent (torch.optim imports slowly)
            net.zero_grad()
            torch.nn.functional.cross_entropy(net(xt), yt).backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.5 * p.grad
    finally:
        torch.set_num_threads(threads)
    net.train()  # the adapter must switch it to eval mode
    clf = TorchClassifier(net, labels=list(data.target_names), batch_size=50)
    return clf, x, y, list(data.feature_names)


def test_classifier_predict(iris):
    clf, x, y, _ = iris
    assert not clf.module.training
    before = clf.cost.copy()
    p = clf.predict(x)
    assert p.shape == (150, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert (p.argmax(1) == y).mean() > 0.9  # it really learned
    spent = clf.cost - before
    assert spent.forward_passes == 150 and spent.batches == 3  # batch_size 50
    logits = clf.predict(x[:5], output="logit")
    logp = clf.predict(x[:5], output="logprob")
    np.testing.assert_allclose(np.exp(logp), p[:5], atol=1e-6)
    np.testing.assert_allclose(torch.softmax(torch.as_tensor(logits), 1).numpy(), p[:5], atol=1e-6)
    # a ready tensor works too
    np.testing.assert_allclose(clf.predict(torch.as_tensor(x[:5])), p[:5], atol=1e-6)
    with pytest.raises(InputError, match="unknown output"):
        clf.predict(x[:2], output="probability")


def test_classifier_scorer_over_features(iris):
    clf, x, _, names = iris
    xi = x[60]
    units = FeatureUnits(xi, names=names)
    p = clf.predict(xi[None])[0]
    before = clf.cost.copy()
    sc = clf.scorer(units)  # target=None -> predicted class
    assert (clf.cost - before).forward_passes == 1  # resolving the target
    assert isinstance(sc, Scorer)
    assert sc.target["class"] == int(p.argmax())
    assert sc.target["label"] == clf.labels[int(p.argmax())]
    assert sc.target["output"] == "prob" and sc.target["predicted"] is True
    assert sc.full() == pytest.approx(p.max(), abs=1e-6)
    # every mask: the class probability of the composed input
    masks = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]], dtype=bool)
    got = sc(masks)
    want = clf.predict(units.compose_batch(masks))[:, int(p.argmax())]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert sc.cost.forward_passes == 4  # full() + 3 new masks; the all-kept mask was cached
    assert sc.cost.cache_hits == 1

    sc2 = clf.scorer(units, target=0, output="logprob", batch_size=2)
    assert sc2.target["class"] == 0 and sc2.target["predicted"] is False
    assert sc2.full() == pytest.approx(np.log(p[0]), abs=1e-5)
    sc3 = clf.scorer(units, target="virginica", output="logit")
    assert sc3.target["class"] == 2
    with pytest.raises(InputError, match="out of range"):
        clf.scorer(units, target=3)
    with pytest.raises(InputError, match="unknown target class"):
        clf.scorer(units, target="rose")


def test_classifier_gradient_scorer(iris):
    clf, x, _, names = iris
    xi = x[120]
    gs = clf.gradient_scorer(xi)
    assert isinstance(gs, GradientScorer)
    logits = clf.predict(xi[None], output="logit")[0]
    assert gs.target["class"] == int(logits.argmax()) and gs.target["output"] == "logit"
    val = gs.value(gs.x[None])
    assert val[0] == pytest.approx(logits.max(), abs=1e-5)
    _, grad = gs.gradient(gs.x[None])
    assert grad.shape == (1, 4) and torch.isfinite(grad).all()
    assert gs.cost.backward_passes == 1
    # prob output and an explicit baseline and units
    units = FeatureUnits(xi, names=names)
    gs2 = clf.gradient_scorer(xi, target=1, output="prob", baseline=np.zeros(4), units=units)
    assert gs2.value(gs2.x[None])[0] == pytest.approx(clf.predict(xi[None])[0, 1], abs=1e-6)
    assert gs2.n_units == 4
    with pytest.raises(InputError, match="out of range"):
        clf.gradient_scorer(xi, target=5)


def test_classifier_wrong_shape(iris):
    clf = iris[0]
    with pytest.raises(InputError) as e:
        clf.predict(np.zeros((2, 5)))
    msg = str(e.value)
    assert "(2, 5)" in msg and "in_features=4" in msg
    with pytest.raises(InputError, match=r"\(1, 3\)"):
        clf.scorer(FeatureUnits(np.zeros(3)))
    with pytest.raises(InputError, match="in_features=4"):
        clf.gradient_scorer(np.zeros(6))


def test_classifier_images_with_preprocess():
    """A conv net on (H, W, C) images: preprocess permutes to (B, C, H, W); errors say so."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    img = np.random.default_rng(0).random((8, 8, 3))
    units = ImageUnits.grid(img, patch=4, baseline="zero")
    raw = TorchClassifier(net)
    with pytest.raises(InputError, match="permutes them to"):
        raw.scorer(units)

    def to_chw(batch: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(batch), dtype=torch.float32).permute(0, 3, 1, 2)

    clf = TorchClassifier(net, preprocess=to_chw)
    sc = clf.scorer(units, target=1)
    vals = sc(np.eye(4, dtype=bool))
    assert vals.shape == (4,) and np.all((vals > 0) & (vals < 1))
    gs = clf.gradient_scorer(img, target=1)
    assert gs.x.shape == (3, 8, 8)
    # a single-output (binary) model: class 1 has probability sigmoid(z)
    lin = torch.nn.Linear(2, 1)
    binary = TorchClassifier(lin)
    z = lin(torch.tensor([[0.5, -1.0]])).item()
    p = binary.predict(np.array([[0.5, -1.0]]))
    assert p[0, 1] == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-6)
    assert binary.predict(np.array([[0.5, -1.0]]), output="logit")[0, 1] == pytest.approx(z)


# ----------------------------------------------------------------------------- CallableModel


def _linear(batch: Any) -> np.ndarray:
    return np.asarray(batch) @ np.array([1.0, -2.0, 0.5])


def test_callable_batched_and_unbatched_agree():
    units = FeatureUnits([1.0, 2.0, 3.0])
    masks = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool)
    batched = CallableModel(_linear)
    calls = []

    def one(v: np.ndarray) -> float:
        calls.append(1)
        return float(v @ np.array([1.0, -2.0, 0.5]))

    single = CallableModel(one, batched=False, name="one-at-a-time")
    a = batched.scorer(units, batch_size=3)(masks)
    b = single.scorer(units)(masks)
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, [1 - 4 + 1.5, 2.5, 0.0, -4.0])
    assert batched.cost.forward_passes == 4 and batched.cost.batches == 2
    assert single.cost.forward_passes == 4 and single.cost.batches == 4 and len(calls) == 4
    assert batched.name == "_linear"
    assert single.scorer(units).target["model"] == "one-at-a-time"


def test_callable_two_dimensional_outputs():
    def two(batch: Any) -> np.ndarray:
        b = np.asarray(batch)
        return np.stack([b.sum(1), b.prod(1)], axis=1)

    model = CallableModel(two)
    units = FeatureUnits([2.0, 3.0], baseline=1.0)
    masks = np.array([[1, 1], [1, 0]], dtype=bool)
    assert model.predict(units.compose_batch(masks)).shape == (2, 2)
    np.testing.assert_allclose(model.scorer(units, target=0)(masks), [5.0, 3.0])
    np.testing.assert_allclose(model.scorer(units, target=1)(masks), [6.0, 2.0])
    with pytest.raises(InputError, match="pass target="):
        model.scorer(units)(masks)
    with pytest.raises(InputError, match="out of range"):
        model.scorer(units, target=2)(masks)
    with pytest.raises(InputError, match="leave target=None"):
        CallableModel(_linear).scorer(FeatureUnits([1.0, 2.0, 3.0]), target=0).full()


def test_callable_bad_outputs():
    units = TextUnits.words("alpha beta gamma")

    def nan_for_short(texts: list[str]) -> list[float]:
        return [float("nan") if len(t) < 10 else float(len(t)) for t in texts]

    sc = CallableModel(nan_for_short).scorer(units)
    assert sc.full() == len("alpha beta gamma")
    with pytest.raises(ScorerError, match="finite"):
        sc(np.array([[1, 0, 0]], dtype=bool))
    wrong = CallableModel(lambda texts: [1.0])
    with pytest.raises(ScorerError, match="returned shape"):
        wrong.predict(["a", "b"])
    with pytest.raises(InputError, match="batch of inputs"):
        wrong.predict("a")


# ----------------------------------------------------------------------------- HTTP LM


class _LMServer:
    """A real OpenAI-compatible completions server on loopback, backed by a real (tiny) LM."""

    def __init__(self, lm: Any, mode: str = "ok", delay: float = 0.05) -> None:
        self.lm, self.mode, self.delay = lm, mode, delay
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.generated: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._count_lock, self._model_lock = threading.Lock(), threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, payload: Any) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._count_lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    if self.path != "/v1/completions":
                        self._send(404, {"error": {"message": f"no route {self.path}"}})
                    elif server.mode == "error500":
                        self._send(500, b"Internal Server Error: CUDA out of memory")
                    else:
                        self._send(200, server.complete(body))
                finally:
                    with server._count_lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        enc = self.lm.tokenizer(
            body["prompt"], add_special_tokens=True, return_offsets_mapping=True
        )
        n_prompt = len(enc["input_ids"])
        # greedy at temperature 0, else sampled (seeded by the request's seed), n answers
        temperature = float(body.get("temperature") or 0)
        seed = body.get("seed")
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        choices, n_new = [], 0
        for index in range(int(body.get("n", 1))):
            choice = self._choice(body, enc, index, temperature, gen)
            choices.append(choice)
            n_new += choice.pop("_n_new")
        choices.reverse()  # the client must order choices by their index
        usage = {"prompt_tokens": n_prompt, "completion_tokens": n_new}
        return {"id": "cmpl-test", "object": "text_completion", "choices": choices, "usage": usage}

    def _choice(
        self, body: dict[str, Any], enc: Any, index: int, temperature: float, gen: Any
    ) -> dict[str, Any]:
        tok, model, prompt = self.lm.tokenizer, self.lm.model, body["prompt"]
        ids = list(enc["input_ids"])
        n_prompt = len(ids)
        with self._model_lock, torch.no_grad():
            for _ in range(int(body.get("max_tokens", 16))):
                logits = model(torch.tensor([ids])).logits[0, -1]
                if temperature > 0:
                    probs = torch.softmax(logits.float() / temperature, -1)
                    ids.append(int(torch.multinomial(probs, 1, generator=gen)))
                else:
                    ids.append(int(logits.argmax()))
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        new_text = tok.decode(ids[n_prompt:], skip_special_tokens=True)
        self.generated.append(new_text)
        choice: dict[str, Any] = {"index": index, "finish_reason": "length"}
        choice["text"] = (prompt + new_text) if body.get("echo") else new_text
        if body.get("logprobs") is not None and self.mode != "no_logprobs":
            # Each token owns the characters since the previous token ended (vLLM's convention).
            ends = [e for _, e in enc["offset_mapping"]]
            starts = [0, *ends[:-1]]
            tokens = [prompt[s:e] for s, e in zip(starts, ends, strict=True)]
            values: list[float | None] = [None] + [
                float(logp[i - 1, ids[i]]) for i in range(1, n_prompt)
            ]
            gen_values = [float(logp[i - 1, ids[i]]) for i in range(n_prompt, len(ids))]
            gen_tokens = [tok.decode([t]) for t in ids[n_prompt:]]
            gen_offsets = list(np.cumsum([len(prompt)] + [len(t) for t in gen_tokens])[:-1])
            if not body.get("echo"):
                tokens, values, starts = [], [], []
            elif self.mode == "bos_text":  # a server counting a start token's text in offsets
                tokens, values = ["<s>", *tokens], [None, *values]
                starts = [0] + [s + 3 for s in starts]
                gen_offsets = [o + 3 for o in gen_offsets]
            choice["logprobs"] = {
                "tokens": tokens + gen_tokens,
                "token_logprobs": values + gen_values,
                "text_offset": [int(s) for s in starts + gen_offsets],
                "top_logprobs": None,
            }
        choice["_n_new"] = len(ids) - n_prompt
        return choice


@contextmanager
def serve(lm: Any, mode: str = "ok", delay: float = 0.05) -> Iterator[_LMServer]:
    server = _LMServer(lm, mode, delay)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        deadline = time.monotonic() + 10
        while server.in_flight and time.monotonic() < deadline:  # let handlers finish
            time.sleep(0.01)
        server.httpd.server_close()
        server.thread.join(timeout=5)


PROMPT = "Context: the cat sat on the mat.\n\nQuery: where did the cat sit? Answer:"
RESPONSE = " on the mat."


def test_http_logprob_matches_local_model(tiny_lm):
    with serve(tiny_lm) as server:
        lm = OpenAICompatibleLM(server.url + "/v1/", "tiny", api_key="secret")
        got = lm.logprob(PROMPT, RESPONSE)
        want = tiny_lm.logprob(PROMPT, RESPONSE, chat=False)
        assert got.shape == (1,)
        np.testing.assert_allclose(got, want, atol=1e-4)
        tok = lm.token_logprobs(PROMPT, RESPONSE)[0]
        np.testing.assert_allclose(
            tok, tiny_lm.token_logprobs(PROMPT, RESPONSE, chat=False)[0], atol=1e-4
        )
        body = server.requests[0]
        assert body["echo"] is True and body["max_tokens"] == 0 and body["logprobs"] >= 0
        assert body["model"] == "tiny" and body["prompt"] == PROMPT + RESPONSE
        assert server.headers[0]["Authorization"] == "Bearer secret"
        assert lm.cost.forward_passes == 2 and lm.cost.batches == 2


def test_http_offsets_shifted_by_start_token_text(tiny_lm):
    with serve(tiny_lm, mode="bos_text", delay=0.0) as server:
        got = OpenAICompatibleLM(server.url, "tiny").logprob(PROMPT, RESPONSE)
        np.testing.assert_allclose(got, tiny_lm.logprob(PROMPT, RESPONSE, chat=False), atol=1e-4)


def test_http_many_prompts_concurrently(tiny_lm):
    prompts = [
        "Context: the cat sat on the mat.\n\nQuery: where did the cat sit? Answer:",
        "Context: the dog ran in the park.\n\nQuery: where did the cat sit? Answer:",
        "Context: Alice went to the market.\n\nQuery: where did the cat sit? Answer:",
        "Query: where did the cat sit? Answer:",
        "The capital of France is Paris. Answer:",
        "Answer:",
    ]
    with serve(tiny_lm, delay=0.2) as server:
        lm = OpenAICompatibleLM(server.url, "tiny", max_workers=4)
        start = time.perf_counter()
        got = lm.logprob(prompts, RESPONSE)
        elapsed = time.perf_counter() - start
        assert server.max_in_flight > 1  # requests really overlapped
        assert elapsed < 0.2 * len(prompts)
        want = tiny_lm.logprob(prompts, RESPONSE, chat=False)
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert len(set(np.round(got, 4))) > 1  # the prompts matter
        assert lm.cost.forward_passes == len(prompts) and lm.cost.batches == len(prompts)
        # prompt_format applies to every prompt (chat=True by default), not with chat=False
        fmt = OpenAICompatibleLM(server.url, "tiny", prompt_format="Context: {prompt} Answer:")
        a = fmt.logprob(["the cat sat on the mat.", "the dog ran."], RESPONSE)
        b = lm.logprob(
            ["Context: the cat sat on the mat. Answer:", "Context: the dog ran. Answer:"], RESPONSE
        )
        np.testing.assert_allclose(a, b, atol=1e-6)
        c = fmt.logprob("Context: the dog ran. Answer:", RESPONSE, chat=False)
        np.testing.assert_allclose(c, b[1:], atol=1e-6)


def test_http_generate(tiny_lm):
    with serve(tiny_lm, delay=0.0) as server:
        lm = OpenAICompatibleLM(server.url, "tiny")
        text = lm.generate(PROMPT, max_new_tokens=5)
        assert text == server.generated[-1] and text
        body = server.requests[-1]
        assert body["max_tokens"] == 5 and body["temperature"] == 0 and not body.get("echo")
        assert lm.cost.forward_passes == 5 and lm.cost.batches == 1  # one per generated token
        assert lm.cost.generated_tokens == 5


def test_http_response_not_at_token_boundary(tiny_lm):
    # " Paris" is one token of the tiny tokenizer: "... is Par" + "is." splits it.
    assert len(tiny_lm.tokenizer(" Paris", add_special_tokens=False)["input_ids"]) == 1
    with serve(tiny_lm, delay=0.0) as server:
        lm = OpenAICompatibleLM(server.url, "tiny")
        with pytest.raises(InputError, match="token boundary"):
            lm.logprob("The capital of France is Par", "is.")


def test_http_errors(tiny_lm):
    with serve(tiny_lm, mode="error500", delay=0.0) as server:
        lm = OpenAICompatibleLM(server.url, "tiny")
        with pytest.raises(ScorerError, match=r"HTTP 500.*CUDA out of memory"):
            lm.logprob(PROMPT, RESPONSE)
        with pytest.raises(ScorerError, match="HTTP 500"):
            lm.generate(PROMPT)
    with serve(tiny_lm, mode="no_logprobs", delay=0.0) as server:
        lm = OpenAICompatibleLM(server.url, "tiny")
        with pytest.raises(ScorerError, match=r"echo.*vLLM"):
            lm.logprob(PROMPT, RESPONSE)
    with (
        serve(tiny_lm, delay=0.5) as server,
        pytest.raises(ScorerError, match="did not answer within"),
    ):
        OpenAICompatibleLM(server.url, "tiny", timeout=0.1).generate(PROMPT, 2)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ScorerError, match=f"connection refused.*{port}|{port}.*connection refused"):
        OpenAICompatibleLM(url, "tiny").logprob(PROMPT, RESPONSE)
    with pytest.raises(InputError, match="3 prompts and 2 responses"):
        OpenAICompatibleLM(url, "tiny").logprob(["a", "b", "c"], ["x", "y"])
    with pytest.raises(InputError, match=re.escape("no {prompt} field")):
        OpenAICompatibleLM(url, "tiny", prompt_format="hello")
    with pytest.raises(InputError, match="http://"):
        OpenAICompatibleLM("localhost:8000", "tiny")
