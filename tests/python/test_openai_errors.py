"""The error contract of REFERENCE.md §5 on a live `peng serve`, through httpx (status AND body
shape): invalid JSON and types, out-of-range values, context arithmetic, bodies too large or too
deep, unsupported features, unknown routes; then API keys (a server started with --api-key)
and overload (a one-slot scheduler and a one-request queue answering 503 + Retry-After).
"""
from __future__ import annotations

import concurrent.futures

import httpx
import openai
import pytest

from conftest import start_peng_server, stop_peng_server
from openai_common import (CHAT, MODEL, PROMPT, TIMEOUT, assert_error, chat, client, complete,  # noqa: F401
                           endpoint, http, max_model_len)


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
    path, body = endpoint(kind, model=MODEL, max_tokens=2)
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
    path, body = endpoint(kind, model=MODEL, max_tokens=2)
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
    # REFERENCE.md §5 (vLLM's rule): greedy choices would be identical.
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
    path, body = endpoint("chat" if field == "max_completion_tokens" else "completion", stream=True)
    err = assert_error(http.post(path, json={**body, field: huge}), 400, param=field)
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
    # Integers beyond 64 bits reach the server as floats: still "out of range", not "not an integer".
    for huge in (10**30, 1e30):
        err = assert_error(http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": huge}),
                           400, param="max_tokens")
        assert "out of range" in err["message"], err


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
    ("chat", {"response_format": {"type": "xml"}}, "response_format"),
    ("chat", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"n": {"type": "integer", "not": {"const": 3}}}}}}}, "response_format"),
    ("chat", {"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ("completion", {"suffix": "the end"}, "suffix"),
    ("completion", {"best_of": 3}, "best_of"),
]


@pytest.mark.parametrize("kind,extra,param", UNSUPPORTED, ids=[p + "-" + str(i) for i, (_, _, p) in enumerate(UNSUPPORTED)])
def test_unsupported_features_are_refused_not_ignored(http, kind, extra, param):
    # Schemas, legacy function calls, insertion and best-of would silently come back as plain text.
    path, body = endpoint(kind, max_tokens=2, **extra)
    err = assert_error(http.post(path, json=body), 400, param=param)
    assert "not supported" in err["message"], err


def test_harmless_settings_of_unsupported_features_pass(http):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    for path, body in (("/v1/chat/completions", {"messages": CHAT, "response_format": {"type": "text"},
                                                 "tool_choice": "none"}),
                       ("/v1/chat/completions", {"messages": CHAT, "tools": tools, "tool_choice": "none"}),
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
