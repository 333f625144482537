"""The OpenAI-compatible HTTP API of a live `peng serve`, driven by the official `openai` client:
health, models and tokenizer routes, generation streamed and not, sampling, logprobs, stops,
HTTP framing and the request log. The error contract is in test_openai_errors.py.

Uses the session fixture `peng_server` (tests/python/conftest.py) and, for the log level, a
small extra server.
"""
from __future__ import annotations

import json
import re
import socket
import time

import httpx
import openai
import pytest

from conftest import start_peng_server, stop_peng_server
from openai_common import (CHAT, MODEL, PROMPT, TIMEOUT, assert_error, chat, client, complete,  # noqa: F401
                           http, max_model_len, stream_chat_text, stream_completion_text)


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


def test_min_tokens_holds_the_end_back(client, http):
    # vLLM's min_tokens: a short greedy chat reply, then the same with min_tokens past its
    # length: it goes on (the end token is banned until then) and starts with the short reply.
    short = chat(client, messages=[{"role": "user", "content": "Say hi."}], max_tokens=60, temperature=0)
    n = short.usage.completion_tokens
    assert short.choices[0].finish_reason == "stop" and n < 40, short
    longer = chat(client, messages=[{"role": "user", "content": "Say hi."}], max_tokens=60, temperature=0,
                  extra_body={"min_tokens": n + 10})
    assert longer.usage.completion_tokens >= n + 10, longer.usage
    assert longer.choices[0].message.content.startswith(short.choices[0].message.content), longer
    # A stop string inside the first min_tokens tokens does not end the output.
    base = complete(client, max_tokens=30, temperature=0, extra_body={"ignore_eos": True})
    first_word = base.choices[0].text.split()[0]
    held = complete(client, max_tokens=30, temperature=0, stop=[first_word], extra_body={"min_tokens": 20})
    assert held.usage.completion_tokens >= 20 and held.choices[0].text.startswith(base.choices[0].text[:5])
    for bad in (-1, 61, "5"):
        r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                    "max_tokens": 60, "min_tokens": bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens", r.text


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


def test_completion_top_logprobs_come_most_likely_first(client):
    # OpenAI's order: a client may take the first key as the top token. Sampled (temperature 1),
    # so the chosen token is sometimes not the top one; it then comes after the alternatives.
    out = complete(client, max_tokens=12, temperature=1.0, seed=3, logprobs=5,
                   extra_body={"ignore_eos": True})
    lp = out.choices[0].logprobs
    for tok, top in zip(lp.tokens, lp.top_logprobs):
        ranked = list(top.values())[:5]
        assert ranked == sorted(ranked, reverse=True), top
        assert list(top.values())[0] == max(top.values())
        assert tok in top


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


def test_text_offset_counts_characters(client):
    # OpenAI's text_offset indexes the text in characters: text[offset:] starts with the token
    # (for tokens that are whole characters; an emoji's byte tokens point at the emoji).
    text = "héllo 😀 naïve 東京 ok"
    out = complete(client, prompt=text, max_tokens=4, echo=True, logprobs=1, temperature=0)
    c = out.choices[0]
    lp = c.logprobs
    assert c.text.startswith(text)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[-1] < len(c.text)
    whole = [(tok, off) for tok, off in zip(lp.tokens, lp.text_offset) if "\ufffd" not in tok]
    assert len(whole) >= len(lp.tokens) // 2
    for tok, off in whole:
        assert c.text[off:].startswith(tok), (tok, off, c.text)
    emoji = text.index("😀")
    assert any(off == emoji for tok, off in zip(lp.tokens, lp.text_offset) if "\ufffd" in tok)


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


@pytest.mark.parametrize("prompt", ["The capital of France is", "Once upon a time in a small village,"])
def test_cli_generate_matches_the_server(client, peng_bin, smollm2_path, prompt):
    # Both read f16 KV by default (the server's engine.kv_format, generate's --kv-format), so at
    # temperature 0 they produce the same text, near-ties included.
    import subprocess
    served = complete(client, prompt=prompt, max_tokens=30, temperature=0).choices[0].text
    p = subprocess.run([str(peng_bin), "generate", "--model", str(smollm2_path), "--prompt", prompt,
                        "--temperature", "0", "--max-tokens", "30"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.removesuffix("\n") == served


def test_continue_final_message_continues_the_assistant_turn(http, client):
    # vLLM's extension: the reply continues the last (assistant) message, with no new turn.
    messages = [{"role": "user", "content": "Name the largest ocean on Earth."},
                {"role": "assistant", "content": "The largest ocean on Earth is the"}]
    extra = {"continue_final_message": True, "add_generation_prompt": False}
    tok = http.post("/tokenize", json={"messages": messages, **extra})
    assert tok.status_code == 200, tok.text
    text = http.post("/detokenize", json={"tokens": tok.json()["tokens"]}).json()["prompt"]
    assert text.endswith("<|im_start|>assistant\nThe largest ocean on Earth is the"), text
    out = chat(client, messages=messages, max_tokens=6, temperature=0, extra_body=extra)
    reply = out.choices[0].message.content
    assert reply and "Pacific" in reply, reply
    # Without it the model starts a new assistant turn after the finished one.
    r = http.post("/v1/chat/completions", json={"messages": messages, "continue_final_message": True,
                                                "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "continue_final_message", r.text


def test_prefix_cache_hit_gives_the_same_logprobs_as_a_cold_prompt(http):
    # A second turn whose prompt holds the first turn's reply: the reply's KV was computed by
    # the decode path, but a cold run computes it as prompt (long prompts may take other
    # kernels). The cache must not hand the one in place of the other. A request with prompt
    # logprobs (echo) never reads the cache, so it is the cold run (and asking for them must
    # not change the generated tokens' logprobs either).
    first = "The lighthouse keepers of the northern coast kept their lamps burning through storms. " * 5
    body = {"prompt": first, "max_tokens": 40, "temperature": 0, "ignore_eos": True}
    reply = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    second = {"prompt": first + reply + " Later", "max_tokens": 12, "temperature": 0,
              "logprobs": 1, "ignore_eos": True}
    warm_body = http.post("/v1/completions", json=second).json()
    cold_body = http.post("/v1/completions", json={**second, "echo": True}).json()
    warm, cold = warm_body["choices"][0], cold_body["choices"][0]
    # usage says how much of the prompt came from the cache (OpenAI's prompt_tokens_details)
    assert 0 < warm_body["usage"]["prompt_tokens_details"]["cached_tokens"] < warm_body["usage"]["prompt_tokens"]
    assert cold_body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    n = len(warm["logprobs"]["token_logprobs"])
    assert cold["text"].endswith(warm["text"])
    assert cold["logprobs"]["token_logprobs"][-n:] == warm["logprobs"]["token_logprobs"]
