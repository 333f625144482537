"""Shared by the OpenAI API tests (test_openai_api.py, test_openai_errors.py): the served model's
id, prompts, the module-scoped `client` (official `openai` client) and `http` (httpx) fixtures on
the session server, and `assert_error`, which checks OpenAI's nested error shape. Test modules
import the fixtures by name."""
from __future__ import annotations

import httpx
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"
TIMEOUT = 60.0
CHAT = [{"role": "user", "content": "Write one sentence about the sea."}]
PROMPT = "The capital of France is Paris. The capital of Germany is"


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


def endpoint(kind: str, **fields) -> tuple[str, dict]:
    """(path, body) of a chat ("chat") or completions request with the default messages or
    prompt, plus `fields`."""
    if kind == "chat":
        return "/v1/chat/completions", {"messages": CHAT, **fields}
    return "/v1/completions", {"prompt": PROMPT, **fields}


def _stream_text(chunks_of, piece):
    """(text, finish_reason, chunks) of a stream with one choice; piece(choice) -> its text."""
    text, finish, chunks = "", None, []
    for chunk in chunks_of:
        chunks.append(chunk)
        for c in chunk.choices:
            assert c.index == 0
            text += piece(c) or ""
            if c.finish_reason is not None:
                assert finish is None, "two finish reasons"
                finish = c.finish_reason
    return text, finish, chunks


def stream_chat_text(client, **kw):
    """(text, finish_reason, chunks) of a streamed chat completion with one choice."""
    return _stream_text(chat(client, stream=True, **kw), lambda c: c.delta.content)


def stream_completion_text(client, **kw):
    return _stream_text(complete(client, stream=True, **kw), lambda c: c.text)
