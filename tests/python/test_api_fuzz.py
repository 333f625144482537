"""Randomised bad input against a live `peng serve` (a server of its own, contexts capped at 1,024
tokens so that a request whose max_tokens a mutation removed ends in seconds): valid requests
to every POST route with fields replaced by values of the wrong type or size, fields removed,
unknown fields added, bodies truncated, bytes flipped or inserted, and some streamed. Seeded, so
a failure replays. Whatever arrives, the server must answer: 200 with a body that parses (SSE
events that parse, ending in [DONE], when streamed), or an error status with OpenAI's nested
error body; never a 5xx other than 503, never a dropped connection. Afterwards it is still
ready and holds no request or KV page.
"""
from __future__ import annotations

import copy
import json
import random

import httpx
import pytest

from conftest import start_peng_server, stop_peng_server
from openai_common import MODEL, TIMEOUT


@pytest.fixture(scope="module")
def http(peng_bin, smollm2_path, tmp_path_factory):
    # Without max_tokens a completion runs to the end of the context: 1,024 tokens here, where
    # the default KV budget gives 8,192 (over a minute of decode on two cores).
    server = start_peng_server(peng_bin, smollm2_path, tmp_path_factory.mktemp("fuzz"), "", "--max-model-len", "1024")
    try:
        with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as c:
            yield c
    finally:
        assert stop_peng_server(server) == 0

BASES = {
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
        "max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "n": 1, "seed": 3,
        "stop": ["\n\n"], "stop_token_ids": [2], "presence_penalty": 0.1, "frequency_penalty": 0.1,
        "repetition_penalty": 1.1, "logit_bias": {"42": -1}, "logprobs": True, "top_logprobs": 2,
        "stream": False, "ignore_eos": False, "priority": 0,
        "user": "u"},
    "/v1/completions": {
        "model": MODEL, "prompt": "Once upon", "max_tokens": 3, "echo": True, "logprobs": 2, "n": 2,
        "stream": False, "temperature": 0.7},
    "/v1/responses": {
        "model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        "instructions": "Be brief.", "max_output_tokens": 3, "temperature": 0.5, "top_p": 0.9,
        "text": {"format": {"type": "text"}}, "store": False, "metadata": {"k": "v"}},
    # Constrained chats (the part after '#' only names the base): a regex with min_tokens, and
    # vLLM's structured_outputs with a set-valued schema.
    "/v1/chat/completions#regex": {
        "model": MODEL, "messages": [{"role": "user", "content": "A date?"}], "max_tokens": 6, "min_tokens": 2,
        "guided_regex": "(19|20)\\d\\d-[01]\\d", "temperature": 0.5, "stop": ["-"]},
    "/v1/chat/completions#structured": {
        "model": MODEL, "messages": [{"role": "user", "content": "Tags?"}], "max_tokens": 8,
        "structured_outputs": {"json": {"type": "object", "properties": {
            # bounded, so a mutation that drops max_tokens still ends in seconds (sanitizer builds too)
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "uniqueItems": True, "maxItems": 3},
            "n": {"type": "integer", "multipleOf": 3, "maximum": 1e30}}, "required": ["tags", "n"]}}},
    "/tokenize": {"model": MODEL, "prompt": "hello world", "add_special_tokens": True},
    "/detokenize": {"model": MODEL, "tokens": [1, 2, 3, 100]},
}

# Values of every JSON type, at the edges of their ranges, and of the shapes fields take.
WEIRD = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -2**63, 10**30, 1e308, -1e308, 0.5, -0.5,
    float("nan"), float("inf"), "", "x", "\u0000", "\ud800", "😀" * 50, "a" * 100_000,
    [], [1], [[1]], ["a"], [None], {}, {"a": 1}, [{"role": "user"}],
    [{"role": "user", "content": None}], [{"role": "x", "content": "y"}],
    [{"role": "user", "content": [{"type": "text"}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
    list(range(20_000)), [-5, 49_152, 10**9], {"1": 1e9}, {"x": "y"},
]
UNKNOWN = ["foo", "tools", "response_format", "functions", "tool_choice", "max_completion_tokens",
           "prompt_logprobs", "stream", "parallel_tool_calls"]


def mutate_json(rng: random.Random, base: dict) -> dict:
    o = copy.deepcopy(base)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op, keys = rng.random(), list(o)
        if op < 0.6 and keys:
            o[rng.choice(keys)] = copy.deepcopy(rng.choice(WEIRD))
        elif op < 0.75 and keys:
            del o[rng.choice(keys)]
        elif op < 0.85:
            o[rng.choice(UNKNOWN)] = copy.deepcopy(rng.choice(WEIRD))
        elif isinstance(o.get("messages"), list) and o["messages"] and isinstance(o["messages"][-1], dict):
            o["messages"][-1][rng.choice(["role", "content", "name", "tool_calls"])] = copy.deepcopy(rng.choice(WEIRD))
    return o


def mutate_bytes(rng: random.Random, b: bytes) -> bytes:
    b = bytearray(b)
    op = rng.random()
    if op < 0.3:
        return bytes(b[:rng.randint(0, len(b))])
    if op < 0.6:
        for _ in range(rng.randint(1, 5)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if op < 0.8:
        i = rng.randint(0, len(b))
        return bytes(b[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))) + b[i:])
    return bytes(b) * rng.randint(2, 3)


def check_error_body(r: httpx.Response, what: str):
    try:
        err = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        pytest.fail(f"{what}: {r.status_code} without OpenAI's error body: {r.text[:300]!r}")
    assert isinstance(err.get("message"), str) and err["message"], (what, err)


def check_stream(r: httpx.Response, what: str):
    lines = [ln for ln in r.text.split("\n") if ln.startswith("data: ")]
    if "/v1/responses" in what:  # typed events, the last one the whole response; no [DONE]
        assert lines, (what, r.text[-300:])
        events = [json.loads(ln[len("data: "):]) for ln in lines]
        assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed"), (what, events[-1])
        return
    assert lines and lines[-1] == "data: [DONE]", (what, r.text[-300:])
    for ln in lines[:-1]:
        json.loads(ln[len("data: "):])  # every event is JSON (an error event too)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_requests_get_an_answer_and_never_a_crash(http, seed):
    rng = random.Random(seed)
    statuses: dict[int, int] = {}
    streams = 0
    for i in range(500):
        path = rng.choice(list(BASES))
        # A quarter go through unmutated (streamed or not), so the answers include generations.
        body = mutate_json(rng, BASES[path]) if rng.random() < 0.75 else copy.deepcopy(BASES[path])
        if path.startswith("/v1/") and rng.random() < 0.25:  # (every base under /v1/ can stream)
            body.update(stream=True, stream_options={"include_usage": True})
        streamed = body.get("stream") is True
        raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
        if rng.random() < 0.3:
            raw = mutate_bytes(rng, raw)
        what = f"seed {seed} request {i} {path} {raw[:200]!r}"
        try:
            r = http.post(path.split("#")[0], content=raw, headers={"content-type": "application/json"})
        except httpx.HTTPError as e:
            pytest.fail(f"{what}: no answer ({e!r})")
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        streams += r.status_code == 200 and streamed
        assert r.status_code < 500 or r.status_code == 503, (what, r.status_code, r.text[:300])
        if r.status_code != 200:
            check_error_body(r, what)
        elif r.headers.get("content-type", "").startswith("text/event-stream"):
            check_stream(r, what)
        else:
            r.json()
    # Both kinds of answer were exercised, not only rejections.
    assert statuses.get(200, 0) > 100 and statuses.get(400, 0) > 100 and streams > 10, (statuses, streams)
    health = http.get("/health")
    assert health.status_code == 200, health.text
    assert http.get("/ready").status_code == 200
    state = health.json()
    assert state["num_requests_running"] == 0 and state["num_requests_waiting"] == 0, state
    assert state["kv_cache_usage_perc"] == 0.0, state
