"""The OpenAI-compatible HTTP API of a live `peng serve`, driven by the official `openai` client
(the happy paths) and by httpx (the error contract of REFERENCE.md §5, status AND body shape).

Uses the session fixture `peng_server` (tests/python/conftest.py) for everything that needs the
default configuration, and starts two small extra servers: one with `--api-key` (401s) and one
with a one-slot scheduler and a one-request queue (overload -> 503 + Retry-After).
"""
from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import time

import httpx
import openai
import pytest

from conftest import start_peng_server, stop_peng_server

MODEL = "SmolLM2-135M-Instruct"
TIMEOUT = 60.0
CHAT = [{"role": "user", "content": "Write one sentence about the sea."}]
PROMPT = "The capital of France is Paris. The capital of Germany is"


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers

@pytest.fixture(scope="module")
def client(peng_server):
    c = openai.OpenAI(base_url=peng_server.http_url + "/v1", api_key="x", timeout=TIMEOUT,
                      max_retries=0)
    yield c
    c.close()


@pytest.fixture(scope="module")
def http(peng_server):
    with httpx.Client(base_url=peng_server.http_url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def max_model_len(http) -> int:
    r = http.get("/v1/models")
    assert r.status_code == 200, r.text
    return int(r.json()["data"][0]["max_model_len"])


def assert_error(r: httpx.Response, status: int, param=..., contains: tuple = ()) -> dict:
    """The response is `status` with OpenAI's nested error body; returns the inner object."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] == status, err
    if param is not ...:
        assert err["param"] == param, err
    for s in contains:
        assert s in err["message"], err
    return err


def chat(client, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", CHAT)
    return client.chat.completions.create(**kw)


def complete(client, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("prompt", PROMPT)
    return client.completions.create(**kw)


def stream_chat_text(client, **kw):
    """(text, finish_reason, chunks) of a streamed chat completion with one choice."""
    text, finish, chunks = "", None, []
    for chunk in chat(client, stream=True, **kw):
        chunks.append(chunk)
        for c in chunk.choices:
            assert c.index == 0
            if c.delta.content:
                text += c.delta.content
            if c.finish_reason is not None:
                assert finish is None, "two finish reasons"
                finish = c.finish_reason
    return text, finish, chunks


def stream_completion_text(client, **kw):
    text, finish, chunks = "", None, []
    for chunk in complete(client, stream=True, **kw):
        chunks.append(chunk)
        for c in chunk.choices:
            assert c.index == 0
            text += c.text or ""
            if c.finish_reason is not None:
                assert finish is None, "two finish reasons"
                finish = c.finish_reason
    return text, finish, chunks


# ---------------------------------------------------------------------------------------------
# Health, models, tokenizer routes

def test_health_live_ready_version(http):
    r = http.get("/health")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"
    for path in ("/live", "/ready"):
        r = http.get(path)
        assert r.status_code == 200, (path, r.text)
    r = http.get("/version")
    assert r.status_code == 200
    assert isinstance(r.json()["version"], str) and r.json()["version"]


def test_models(client, http):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL]
    assert models.data[0].object == "model"
    m = client.models.retrieve(MODEL)
    assert m.id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    assert_error(http.get("/v1/models/no-such-model"), 404)


def test_tokenize_detokenize_round_trip(http, client):
    text = "Hello world, this is Peng serving SmolLM2. Ünïcödé ✓ 123"
    r = http.post("/tokenize", json={"model": MODEL, "prompt": text})
    assert r.status_code == 200, r.text
    tok = r.json()
    assert tok["count"] == len(tok["tokens"]) > 0
    assert all(isinstance(t, int) for t in tok["tokens"])
    r = http.post("/detokenize", json={"model": MODEL, "tokens": tok["tokens"]})
    assert r.status_code == 200, r.text
    assert r.json()["prompt"] == text
    # The completions endpoint counts the same prompt tokens.
    out = complete(client, prompt=text, max_tokens=1, temperature=0)
    assert out.usage.prompt_tokens == tok["count"]
    # Chat: /tokenize with messages counts what the chat endpoint counts.
    r = http.post("/tokenize", json={"model": MODEL, "messages": CHAT})
    assert r.status_code == 200, r.text
    out = chat(client, max_tokens=1, temperature=0)
    assert out.usage.prompt_tokens == r.json()["count"]


# ---------------------------------------------------------------------------------------------
# Generation through the official client

def test_chat_non_stream_and_stream_agree(client):
    full = chat(client, max_tokens=32, temperature=0)
    assert full.object == "chat.completion"
    assert full.model == MODEL
    assert len(full.choices) == 1
    choice = full.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    u = full.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 32
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens

    text, finish, chunks = stream_chat_text(client, max_tokens=32, temperature=0)
    assert text == choice.message.content
    assert finish == choice.finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"


def test_completion_non_stream_and_stream_agree(client):
    full = complete(client, max_tokens=24, temperature=0)
    assert full.object == "text_completion"
    assert len(full.choices) == 1 and full.choices[0].index == 0
    assert full.choices[0].text
    text, finish, chunks = stream_completion_text(client, max_tokens=24, temperature=0)
    assert text == full.choices[0].text
    assert finish == full.choices[0].finish_reason
    assert len({c.id for c in chunks}) == 1


def test_completion_echo(client):
    out = complete(client, max_tokens=4, temperature=0, echo=True)
    plain = complete(client, max_tokens=4, temperature=0)
    assert out.choices[0].text == PROMPT + plain.choices[0].text


def test_completion_list_of_prompts(client):
    prompts = ["One, two, three,", "Red, green,"]
    out = complete(client, prompt=prompts, max_tokens=4, temperature=0)
    assert sorted(c.index for c in out.choices) == [0, 1]
    for c in out.choices:
        alone = complete(client, prompt=prompts[c.index], max_tokens=4, temperature=0)
        assert c.text == alone.choices[0].text


def test_n2_chat_and_completions(client):
    out = chat(client, n=2, temperature=0.9, seed=11, max_tokens=8,
               extra_body={"ignore_eos": True})
    assert sorted(c.index for c in out.choices) == [0, 1]
    assert all(c.finish_reason == "length" for c in out.choices)
    assert out.usage.completion_tokens == 16

    out = complete(client, n=2, temperature=0.9, seed=11, max_tokens=8,
                   extra_body={"ignore_eos": True})
    assert sorted(c.index for c in out.choices) == [0, 1]
    assert out.usage.completion_tokens == 16

    # Streamed: chunks of both choices, each finishing once.
    finishes = {}
    for chunk in chat(client, n=2, temperature=0.9, seed=11, max_tokens=8, stream=True,
                      extra_body={"ignore_eos": True}):
        for c in chunk.choices:
            assert c.index in (0, 1)
            if c.finish_reason:
                assert c.index not in finishes
                finishes[c.index] = c.finish_reason
    assert finishes == {0: "length", 1: "length"}


def test_max_tokens_gives_length(client):
    out = chat(client, max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 5
    out = chat(client, max_completion_tokens=3, temperature=0)
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3
    out = complete(client, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 6


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings(client, stream):
    base = complete(client, max_tokens=40, temperature=0, extra_body={"ignore_eos": True})
    text = base.choices[0].text
    words = [w for w in text.split() if len(w) >= 3]
    assert len(words) >= 2, text
    stop = words[1]  # a word from the middle of the greedy continuation
    cut = text[:text.index(stop)]
    kw = dict(max_tokens=40, temperature=0, stop=[stop, "#never#"])
    if stream:
        got, finish, _ = stream_completion_text(client, **kw)
    else:
        out = complete(client, **kw)
        got, finish = out.choices[0].text, out.choices[0].finish_reason
    assert stop not in got
    assert got == cut, (got, cut, stop)
    assert finish == "stop"

    # Chat, single string form.
    base = chat(client, max_tokens=40, temperature=0).choices[0].message.content
    words = [w for w in base.split() if len(w) >= 3]
    assert len(words) >= 2, base
    stop = words[1]
    if stream:
        got, finish, _ = stream_chat_text(client, max_tokens=40, temperature=0, stop=stop)
    else:
        out = chat(client, max_tokens=40, temperature=0, stop=stop)
        got, finish = out.choices[0].message.content, out.choices[0].finish_reason
    assert stop not in got
    assert got == base[:base.index(stop)]
    assert finish == "stop"


def test_chat_logprobs(client):
    out = chat(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    assert "".join(t.token for t in content) == out.choices[0].message.content
    for t in content:
        assert t.logprob <= 0.0
        assert len(t.top_logprobs) == 3
        lps = [a.logprob for a in t.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert all(lp <= 0.0 for lp in lps)
        # Greedy: the chosen token is the most likely one.
        assert t.token == t.top_logprobs[0].token
        assert t.logprob == pytest.approx(lps[0], abs=1e-5)
        assert t.bytes == list(t.token.encode("utf-8"))
    # Streamed: the same logprobs.
    streamed = []
    for chunk in chat(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3,
                      stream=True):
        for c in chunk.choices:
            if c.logprobs and c.logprobs.content:
                streamed.extend(c.logprobs.content)
    assert [t.token for t in streamed] == [t.token for t in content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content],
                                                          abs=1e-5)
    # logprobs off -> null.
    assert chat(client, max_tokens=2, temperature=0).choices[0].logprobs is None


def test_completion_logprobs(client):
    out = complete(client, max_tokens=6, temperature=0, logprobs=2,
                   extra_body={"ignore_eos": True})
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset == sorted(lp.text_offset)
    for tok, tlp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert tlp <= 0.0
        assert 2 <= len(top) <= 3  # top-2, plus the chosen token when it is not among them
        assert tok in top
        assert top[tok] == pytest.approx(tlp, abs=1e-5)
        assert tlp == pytest.approx(max(top.values()), abs=1e-5)  # greedy


def tokenize(http, text) -> list[int]:
    r = http.post("/tokenize", json={"model": MODEL, "prompt": text})
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_echo_logprobs_score_the_prompt(client, http, smollm2_path):
    """echo + logprobs + max_tokens 0 (how scoring clients such as lm-evaluation-harness read a
    text's log-likelihood): every prompt token's logprob, checked against the numpy reference."""
    import numpy as np
    from llama_ref import LlamaRef

    ids = tokenize(http, PROMPT + " Berlin.")
    out = complete(client, prompt=PROMPT + " Berlin.", max_tokens=0, echo=True, logprobs=3,
                   temperature=0)
    c = out.choices[0]
    assert c.text == PROMPT + " Berlin."
    assert c.finish_reason == "length"
    assert out.usage.completion_tokens == 0 and out.usage.prompt_tokens == len(ids)
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids)
    assert "".join(lp.tokens) == c.text
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts it
    for tok, tlp, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert tlp <= 0.0
        assert 3 <= len(top) <= 4 and tok in top  # top-3, plus the prompt's own token
        assert top[tok] == pytest.approx(tlp, abs=1e-6)

    # The raw model distribution: log-softmax of float64 reference logits. Peng's int8
    # activations perturb logits slightly (test_reference_logits.py), hence the tolerance.
    logits = LlamaRef(str(smollm2_path)).forward(ids).astype(np.float64)
    z = logits - logits.max(axis=-1, keepdims=True)
    ref = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    want = np.array([ref[i - 1, ids[i]] for i in range(1, len(ids))])
    got = np.array(lp.token_logprobs[1:])
    diff = np.abs(got - want)
    # Measured: mean 0.03-0.06, max < 0.2 nats; the total within 0.2%. An off-by-one position
    # or a processed (biased, penalised) distribution is off by nats.
    assert diff.mean() < 0.1 and diff.max() < 0.5, (diff.mean(), diff.max())
    assert abs(got.sum() - want.sum()) < 0.03 * abs(want.sum()), (got.sum(), want.sum())
    # "Berlin" after "The capital of Germany is": the model is confident.
    assert lp.token_logprobs[-2] > -1.0, list(zip(lp.tokens, lp.token_logprobs))


def test_streamed_echo_chunks_carry_their_own_tokens(http):
    # Each chunk's logprobs tokens spell that chunk's text: the echoed prompt arrives with its
    # logprobs, not ahead of them.
    body = {"prompt": "Once upon a time", "max_tokens": 4, "echo": True, "logprobs": 1,
            "temperature": 0}
    whole = http.post("/v1/completions", json=body).json()["choices"][0]
    texts = []
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            if choice["logprobs"] is not None:
                assert "".join(choice["logprobs"]["tokens"]) == choice["text"], choice
            texts.append(choice["text"])
    assert texts[0].startswith("Once upon a time")
    assert "".join(texts) == whole["text"]


def test_echo_logprobs_agree_with_generation_logprobs(client, http):
    """Scoring prompt + greedy continuation reproduces the continuation's own logprobs (greedy:
    the sampled distribution is the raw one), streamed and not."""
    gen = complete(client, max_tokens=8, temperature=0, logprobs=1, extra_body={"ignore_eos": True})
    text = PROMPT + gen.choices[0].text
    prompt_ids, full_ids = tokenize(http, PROMPT), tokenize(http, text)
    # The continuation re-tokenizes to the generated tokens (checked: else the positions shift).
    assert full_ids[:len(prompt_ids)] == prompt_ids and len(full_ids) == len(prompt_ids) + 8
    scored = complete(client, prompt=full_ids, max_tokens=1, echo=True, logprobs=1, temperature=0)
    lp = scored.choices[0].logprobs
    n = len(full_ids)
    assert len(lp.token_logprobs) == n + 1  # the prompt, then one generated token
    assert lp.tokens[n - 8:n] == gen.choices[0].logprobs.tokens
    assert lp.token_logprobs[n - 8:n] == pytest.approx(gen.choices[0].logprobs.token_logprobs, abs=0.05)

    # Streamed: the prompt's entries arrive in the first chunk that carries logprobs.
    streamed = []
    for chunk in complete(client, prompt=full_ids, max_tokens=1, echo=True, logprobs=1,
                          temperature=0, stream=True):
        for ch in chunk.choices:
            if ch.logprobs is not None:
                streamed += ch.logprobs.token_logprobs
    assert streamed[0] is None
    assert streamed[1:] == pytest.approx(lp.token_logprobs[1:], abs=1e-6)


def test_seed_reproducibility(client):
    def sample(seed):
        return chat(client, max_tokens=12, temperature=1.0, seed=seed,
                    extra_body={"ignore_eos": True}).choices[0].message.content

    a, b = sample(1234), sample(1234)
    assert a == b
    others = {sample(s) for s in (1, 2)}
    assert others != {a}, "different seeds all gave the same text"
    # Completions too, streamed and not.
    x = complete(client, max_tokens=16, temperature=1.0, seed=99).choices[0].text
    y, _, _ = stream_completion_text(client, max_tokens=16, temperature=1.0, seed=99)
    assert x == y


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_stream_include_usage(client, kind):
    kw = dict(max_tokens=7, temperature=0, extra_body={"ignore_eos": True})
    ref = chat(client, **kw) if kind == "chat" else complete(client, **kw)
    chunks = list((chat if kind == "chat" else complete)(
        client, stream=True, stream_options={"include_usage": True}, **kw))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 7
    assert last.usage.prompt_tokens == ref.usage.prompt_tokens
    assert last.usage.total_tokens == ref.usage.prompt_tokens + 7
    # Only the final chunk carries usage.
    assert all(c.usage is None for c in chunks[:-1])
    # Without include_usage: no usage chunk at all.
    chunks = list((chat if kind == "chat" else complete)(client, stream=True, **kw))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_raw_sse_framing(http):
    """`data: {json}\\n\\n` events ending in `data: [DONE]`."""
    with http.stream("POST", "/v1/completions",
                     json={"prompt": PROMPT, "max_tokens": 3, "stream": True,
                           "temperature": 0}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert e.startswith("data: ")
        json.loads(e[len("data: "):])
    assert raw.endswith("\n\n")


def _raw_exchange(url: str, request: bytes) -> bytes:
    """Sends raw request bytes and reads until the server closes the connection."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_http10_stream_is_not_chunked(peng_server):
    # HTTP/1.0 knows no chunked encoding: the stream is plain SSE ending with the connection.
    body = json.dumps({"prompt": PROMPT, "max_tokens": 3, "stream": True}).encode()
    raw = _raw_exchange(peng_server.http_url, b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    head, _, stream = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower(), head
    events = [e for e in stream.decode().split("\n\n") if e.strip()]
    assert events[0].startswith("data: {") and events[-1] == "data: [DONE]", stream[:200]


def test_head_is_get_without_a_body(peng_server):
    raw = _raw_exchange(peng_server.http_url, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), raw
    length = int(next(l for l in first.split(b"\r\n") if l.lower().startswith(b"content-length")).split(b":")[1])
    assert length > 0
    # No body after the HEAD response: the next bytes are the GET's response.
    assert rest.startswith(b"HTTP/1.1 200"), raw
    assert len(rest.split(b"\r\n\r\n", 1)[1]) == length, rest
    # HEAD where only POST is allowed: 405, headers only.
    raw = _raw_exchange(peng_server.http_url, b"HEAD /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 405") and raw.endswith(b"\r\n\r\n"), raw


def test_requests_are_logged_with_their_ids(http, peng_server):
    r = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
    assert r.status_code == 200
    rid = r.json()["id"]
    assert http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": -1}).status_code == 400
    deadline = time.monotonic() + 5
    while f"request_id={rid}" not in peng_server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = peng_server.log()
    assert re.search(r"peng http: POST /v1/completions 200 [0-9.]+ s request_id=" + rid, log), log[-2000:]
    assert re.search(r"peng http: POST /v1/completions 400 ", log), log[-2000:]
    assert "GET /health" not in log  # probes are logged at debug only


def test_log_level_drops_lower_lines(peng_bin, smollm2_path, tmp_path):
    server = start_peng_server(peng_bin, smollm2_path, tmp_path, "", "--log-level", "warning")
    try:
        with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as h:
            assert h.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200
            assert h.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "zzz": 1}).status_code == 200
    finally:
        assert stop_peng_server(server) == 0, server.log()[-3000:]
    log = server.log()
    assert "POST /v1/completions" not in log and "serving " not in log, log[-2000:]
    assert "warning: /v1/completions: ignoring unknown field(s): zzz" in log, log[-2000:]


def test_unknown_fields_are_ignored(http):
    r = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2,
                                           "frobnicate": 3, "guided_json": None})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------------
# Error contract (REFERENCE.md §5)

def test_invalid_json(http):
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = http.post(path, content=b'{"model": "x", "prompt": ',
                      headers={"content-type": "application/json"})
        assert_error(r, 400)
        r = http.post(path, content=b"[1, 2, 3]", headers={"content-type": "application/json"})
        assert_error(r, 400)


WRONG_TYPES = [
    ("temperature", "hot"), ("top_p", "x"), ("top_k", 1.5), ("min_p", [0.1]),
    ("max_tokens", "5"), ("n", "2"), ("seed", "abc"), ("stream", "yes"),
    ("stop", 5), ("presence_penalty", {}), ("frequency_penalty", "0"),
    ("logit_bias", [1, 2]), ("ignore_eos", "true"), ("stream_options", "usage"),
]


@pytest.mark.parametrize("field,value", WRONG_TYPES, ids=[f for f, _ in WRONG_TYPES])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_wrong_field_types(http, kind, field, value):
    body = {"model": MODEL, "max_tokens": 2}
    if kind == "chat":
        body["messages"] = CHAT
        path = "/v1/chat/completions"
    else:
        body["prompt"] = PROMPT
        path = "/v1/completions"
    body[field] = value
    assert_error(http.post(path, json=body), 400, param=field)


def test_wrong_types_of_prompt_and_messages(http):
    assert_error(http.post("/v1/completions", json={"prompt": 5}), 400, param="prompt")
    assert_error(http.post("/v1/completions", json={"max_tokens": 2}), 400, param="prompt")
    assert_error(http.post("/v1/chat/completions", json={"messages": "hi"}), 400,
                 param="messages")
    assert_error(http.post("/v1/chat/completions", json={"messages": [{"content": "hi"}]}), 400,
                 param="messages")
    assert_error(http.post("/v1/chat/completions", json={"model": 7, "messages": CHAT}), 400,
                 param="model")
    assert_error(http.post("/v1/chat/completions",
                           json={"messages": CHAT, "logprobs": True, "top_logprobs": "3"}),
                 400, param="top_logprobs")


OUT_OF_RANGE = [
    ("temperature", -0.5), ("temperature", -1),
    ("top_p", 0), ("top_p", 1.01), ("top_p", -0.2),
    ("min_p", -0.01), ("min_p", 1.5),
    ("top_k", -2), ("top_k", -100),
    ("presence_penalty", 2.5), ("presence_penalty", -2.01),
    ("frequency_penalty", 3), ("frequency_penalty", -2.5),
    ("max_tokens", 0), ("max_tokens", -5),
    ("n", 0),
]


@pytest.mark.parametrize("field,value", OUT_OF_RANGE,
                         ids=[f"{f}={v}" for f, v in OUT_OF_RANGE])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_out_of_range_values(http, kind, field, value):
    body = {"model": MODEL, "max_tokens": 2}
    if kind == "chat":
        body["messages"] = CHAT
        path = "/v1/chat/completions"
    else:
        body["prompt"] = PROMPT
        path = "/v1/completions"
    body[field] = value
    err = assert_error(http.post(path, json=body), 400, param=field)
    assert field in err["message"]


def test_boundary_values_are_accepted(http):
    for extra in ({"top_p": 1.0}, {"min_p": 0.0}, {"min_p": 1.0}, {"top_k": -1},
                  {"top_k": 0}, {"presence_penalty": 2.0}, {"frequency_penalty": -2.0},
                  {"temperature": 0.0}, {"max_tokens": 1}):
        r = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1, **extra})
        assert r.status_code == 200, (extra, r.text)


def test_other_invalid_values(http):
    for extra, param in (({"logit_bias": {"99999999": 1.0}}, "logit_bias"),
                         ({"logit_bias": {"5": 200}}, "logit_bias"),
                         ({"logit_bias": {"abc": 1}}, "logit_bias"),
                         ({"repetition_penalty": 0}, "repetition_penalty"),
                         ({"logprobs": 50}, "logprobs"),
                         ({"logprobs": -1}, "logprobs"),
                         ({"prompt": []}, "prompt"),
                         ({"prompt": [99999999]}, "prompt"),
                         ({"stop_token_ids": [-3]}, "stop_token_ids"),
                         ({"stream_options": {"include_usage": True}}, "stream_options")):
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2, **extra}
        assert_error(http.post("/v1/completions", json=body), 400, param=param)
    assert_error(http.post("/v1/chat/completions",
                           json={"messages": CHAT, "max_tokens": 2, "top_logprobs": 3}),
                 400, param="top_logprobs")
    assert_error(http.post("/v1/chat/completions",
                           json={"messages": [{"role": "wizard", "content": "x"}]}),
                 400, param="messages")


def test_body_too_large(http):
    big = b'{"prompt": "' + b"a" * (2 << 20) + b'"}'
    r = http.post("/v1/completions", content=big, headers={"content-type": "application/json"})
    assert_error(r, 413)


def test_max_completion_tokens_out_of_range(http):
    assert_error(http.post("/v1/chat/completions",
                           json={"messages": CHAT, "max_completion_tokens": 0}),
                 400, param="max_completion_tokens")


def test_n_greater_than_one_with_greedy(http):
    # vLLM's rule, implemented in server/openai_request.cc: greedy choices would be identical.
    for path, body in (("/v1/completions", {"prompt": PROMPT}),
                       ("/v1/chat/completions", {"messages": CHAT})):
        assert_error(http.post(path, json={**body, "n": 2, "temperature": 0, "max_tokens": 2}),
                     400, param="n")


def test_unknown_model(http, client):
    for path, body in (("/v1/completions", {"prompt": PROMPT}),
                       ("/v1/chat/completions", {"messages": CHAT})):
        err = assert_error(http.post(path, json={**body, "model": "gpt-17", "max_tokens": 2}),
                           404, param="model")
        assert "gpt-17" in err["message"]
    with pytest.raises(openai.NotFoundError):
        chat(client, model="gpt-17", max_tokens=2)


def test_prompt_over_context(http, max_model_len):
    # A prompt that alone fills the context.
    long_prompt = "hello " * (max_model_len + 50)
    n = http.post("/tokenize", json={"prompt": long_prompt}).json()["count"]
    assert n > max_model_len
    err = assert_error(http.post("/v1/completions", json={"prompt": long_prompt,
                                                          "max_tokens": 4}),
                       400, param="prompt")
    assert str(max_model_len) in err["message"] and str(n) in err["message"], err


def test_prompt_plus_max_tokens_over_context(http, max_model_len):
    prompt = "hello " * 100
    n = http.post("/tokenize", json={"prompt": prompt}).json()["count"]
    max_tokens = max_model_len - n + 1
    err = assert_error(http.post("/v1/completions", json={"prompt": prompt,
                                                          "max_tokens": max_tokens}),
                       400, param="max_tokens")
    for number in (max_model_len, n + max_tokens, n, max_tokens):
        assert str(number) in err["message"], err
    # Chat, with max_completion_tokens.
    n_chat = http.post("/tokenize", json={"messages": CHAT}).json()["count"]
    err = assert_error(http.post("/v1/chat/completions",
                                 json={"messages": CHAT, "max_tokens": max_model_len}),
                       400, param="max_tokens")
    assert str(n_chat + max_model_len) in err["message"], err


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_near_2_63_is_refused_not_wrapped(http, max_model_len, field):
    # sys.maxsize, which some clients send for "no limit": prompt + max_tokens must not wrap
    # into a small total (it used to pass the check and loop in preemptions forever).
    huge = 2**63 - 1
    path, body = (("/v1/chat/completions", {"messages": CHAT}) if field == "max_completion_tokens"
                  else ("/v1/completions", {"prompt": PROMPT}))
    err = assert_error(http.post(path, json={**body, field: huge, "stream": True}), 400, param=field)
    assert str(max_model_len) in err["message"], err
    assert str(huge) in err["message"], err
    assert http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("path,key", [("/v1/chat/completions", "tools"),
                                      ("/v1/chat/completions", "chat_template_kwargs"),
                                      ("/tokenize", "messages"), ("/v1/completions", "prompt")])
def test_deeply_nested_json_is_a_400(http, path, key):
    deep = "[" * 50000 + "]" * 50000
    body = '{"messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "max_tokens": 1, "%s": %s}' % (key, deep)
    err = assert_error(http.post(path, content=body.encode(), headers={"content-type": "application/json"}), 400)
    assert "nests" in err["message"] and "64" in err["message"], err
    # Brackets inside strings are text, not nesting.
    r = http.post("/v1/completions", json={"prompt": "[" * 5000, "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert http.get("/health").status_code == 200


def test_values_beyond_64_bits_and_32_bit_fields(http):
    err = assert_error(http.post("/v1/completions", json={"prompt": [2**64 - 1], "max_tokens": 1}), 400, param="prompt")
    assert str(2**64 - 1) in err["message"], err
    err = assert_error(http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1, "seed": 2**64 - 1}),
                       400, param="seed")
    err = assert_error(http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1, "priority": 2**40}),
                       400, param="priority")


def test_completion_logprobs_false_means_none(http):
    r = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "logprobs": False})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["logprobs"] is None
    assert_error(http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "logprobs": True}),
                 400, param="logprobs")


def test_developer_role_is_the_system_role(http):
    ids = [http.post("/tokenize", json={"messages": [{"role": role, "content": "Be brief."},
                                                     {"role": "user", "content": "Hi"}]}).json()["tokens"]
           for role in ("developer", "system")]
    assert ids[0] == ids[1]


UNSUPPORTED = [
    ("chat", {"response_format": {"type": "json_object"}}, "response_format"),
    ("chat", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "response_format"),
    ("chat", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
              "tool_choice": "auto"}, "tool_choice"),
    ("chat", {"tool_choice": "required"}, "tool_choice"),
    ("chat", {"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ("completion", {"suffix": "the end"}, "suffix"),
    ("completion", {"best_of": 3}, "best_of"),
]


@pytest.mark.parametrize("kind,extra,param", UNSUPPORTED, ids=[p + "-" + str(i) for i, (_, _, p) in enumerate(UNSUPPORTED)])
def test_unsupported_features_are_refused_not_ignored(http, kind, extra, param):
    # JSON mode, tool calls, insertion and best-of would silently come back as plain text.
    path, body = (("/v1/chat/completions", {"messages": CHAT}) if kind == "chat"
                  else ("/v1/completions", {"prompt": PROMPT}))
    err = assert_error(http.post(path, json={**body, "max_tokens": 2, **extra}), 400, param=param)
    assert "not supported" in err["message"], err


def test_harmless_settings_of_unsupported_features_pass(http):
    for path, body in (("/v1/chat/completions", {"messages": CHAT, "response_format": {"type": "text"},
                                                 "tool_choice": "none"}),
                       ("/v1/completions", {"prompt": PROMPT, "best_of": 1, "suffix": ""})):
        r = http.post(path, json={**body, "max_tokens": 2})
        assert r.status_code == 200, r.text


def test_unknown_route_and_method(http):
    r = http.get("/v1/nothing-here")
    assert_error(r, 404)
    r = http.get("/v1/completions")
    assert_error(r, 405)
    assert r.headers["allow"] == "POST"


# ---------------------------------------------------------------------------------------------
# API keys (a server started with --api-key)

API_KEY = "sk-peng-test-key"


@pytest.fixture(scope="module")
def keyed_server(peng_bin, smollm2_path, tmp_path_factory):
    server = start_peng_server(peng_bin, smollm2_path, tmp_path_factory.mktemp("keyed"), "",
                               "--api-key", API_KEY)
    yield server
    code = stop_peng_server(server)
    assert code == 0, server.log()[-3000:]


def test_api_key_required(keyed_server):
    url = keyed_server.http_url
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
    with httpx.Client(base_url=url, timeout=TIMEOUT) as h:
        for path, b in (("/v1/completions", body),
                        ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 2})):
            assert_error(h.post(path, json=b), 401)
            assert_error(h.post(path, json=b, headers={"Authorization": "Bearer wrong"}), 401)
            assert_error(h.post(path, json=b, headers={"Authorization": API_KEY}), 401)
            assert_error(h.post(path, json=b, headers={"Authorization": f"Bearer {API_KEY}x"}), 401)
            for scheme in ("Bearer", "bearer", "BEARER"):  # the scheme is case-insensitive
                r = h.post(path, json=b, headers={"Authorization": f"{scheme} {API_KEY}"})
                assert r.status_code == 200, r.text
        assert_error(h.get("/v1/models"), 401)
        assert_error(h.post("/tokenize", json={"prompt": "x"}), 401)
        # Open routes stay open.
        for path in ("/health", "/live", "/ready", "/metrics"):
            assert h.get(path).status_code == 200, path
    # The official client: wrong key -> AuthenticationError, right key works.
    bad = openai.OpenAI(base_url=url + "/v1", api_key="nope", timeout=TIMEOUT, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=0)
    assert good.models.list().data[0].id == MODEL
    out = complete(good, max_tokens=2)
    assert out.choices[0].text is not None


# ---------------------------------------------------------------------------------------------
# Overload: a one-slot batch and a one-request queue, answering 503

def test_overload_returns_503_with_retry_after(peng_bin, smollm2_path, tmp_path):
    server = start_peng_server(
        peng_bin, smollm2_path, tmp_path,
        "scheduler: {max_waiting_requests: 1, max_num_seqs: 1, overload_status: 503, "
        "retry_after_s: 2}\n")
    try:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 48, "ignore_eos": True}

        def post(_):
            with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as h:
                return h.post("/v1/completions", json=body)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(post, range(8)))
        ok = [r for r in results if r.status_code == 200]
        rejected = [r for r in results if r.status_code != 200]
        assert ok, "no request completed"
        assert rejected, "nothing was rejected with max_num_seqs 1 and a 1-request queue"
        for r in rejected:
            assert_error(r, 503)
            assert r.headers.get("retry-after") == "2", r.headers
        for r in ok:
            assert r.json()["usage"]["completion_tokens"] == 48
        with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as h:
            assert h.get("/ready").status_code == 200
            # More prompts in one call than the queue can ever hold: 400 (a 429/503 would be
            # retried forever), and none of them is left running.
            err = assert_error(h.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2}), 400)
            assert "2 prompts" in err["message"] and "limit of 1" in err["message"], err
            metrics = h.get("/metrics").text
            assert 'peng:request_success_total{finished_reason="abort"} 0' in metrics or \
                'finished_reason="abort"' not in metrics, metrics
    finally:
        assert stop_peng_server(server) == 0, server.log()[-3000:]
