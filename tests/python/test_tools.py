"""Tool calling (tools, tool_choice, parallel_tool_calls) on a live `peng serve`, through the
official `openai` client and raw HTTP. tool_choice "required" or a named function constrains the
reply to calls of the listed functions; their arguments are checked with pydantic models of the
same schemas (the client's own `pydantic_function_tool` and `parse` included). "auto" lets the
model choose; reading calls back from its text is unit-tested in server/openai_tools_test.cc.
"""
from __future__ import annotations

import datetime
import json
from typing import Literal, Optional

import openai
import pydantic
import pytest

from openai_common import MODEL, assert_error, chat, client, http  # noqa: F401


class Weather(pydantic.BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


class Flight(pydantic.BaseModel):
    origin: str = pydantic.Field(pattern=r"^[A-Z]{3}$")
    destination: str = pydantic.Field(pattern=r"^[A-Z]{3}$")
    passengers: int = pydantic.Field(ge=1, le=9)
    date: Optional[datetime.date] = None


def tool(name: str, model: type[pydantic.BaseModel], description: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": model.model_json_schema()}}


TOOLS = [tool("get_weather", Weather, "The current weather in a city"),
         tool("book_flight", Flight, "Book a flight between two airports")]
MODELS = {"get_weather": Weather, "book_flight": Flight}
ASKS = ["What is the weather in Paris?", "Book me a flight from Oslo to Rome for two people.",
        "Is it raining in Tokyo, and can I fly there from London?"]


def check_calls(message, finish_reason: str, names=MODELS, text_before=False) -> list:
    assert finish_reason == "tool_calls", (finish_reason, message)
    # Constrained replies are calls alone; in "auto" the model may write text before them.
    assert text_before or message.content is None, message
    assert message.tool_calls, message
    for call in message.tool_calls:
        assert call.type == "function"
        assert call.id.startswith("call_") and len(call.id) == 29, call.id
        assert call.function.name in names, call
        MODELS[call.function.name].model_validate_json(call.function.arguments)
        assert isinstance(json.loads(call.function.arguments), dict)
    return message.tool_calls


def test_required_replies_are_calls_of_the_listed_tools(client):
    for ask in ASKS:
        for seed in range(2):
            r = chat(client, messages=[{"role": "user", "content": ask}], tools=TOOLS, tool_choice="required",
                     max_tokens=160, temperature=0.7, seed=seed, parallel_tool_calls=False)
            assert len(check_calls(r.choices[0].message, r.choices[0].finish_reason)) == 1


def test_parallel_calls_end_as_calls_or_are_cut(client):
    # With parallel calls allowed the small model sometimes lists calls until max_tokens: such a
    # reply keeps the calls it wrote whole (finish_reason "length"), or, with none whole, is the
    # cut text of the call list.
    ended = 0
    for ask in ASKS:
        for max_tokens in (200, 40):
            r = chat(client, messages=[{"role": "user", "content": ask}], tools=TOOLS, tool_choice="required",
                     max_tokens=max_tokens, temperature=0)
            c = r.choices[0]
            if c.finish_reason != "length":
                check_calls(c.message, c.finish_reason)
                ended += 1
            elif c.message.tool_calls:
                assert c.message.content is None
                for call in c.message.tool_calls:
                    MODELS[call.function.name].model_validate_json(call.function.arguments)
            else:
                assert c.message.content.lstrip().startswith("[")
                with pytest.raises(json.JSONDecodeError):
                    json.loads(c.message.content)
    assert ended >= 2, ended


def test_named_function_and_one_call_without_parallel_calls(client):
    for name in MODELS:
        r = chat(client, messages=[{"role": "user", "content": ASKS[2]}], tools=TOOLS, max_tokens=160,
                 tool_choice={"type": "function", "function": {"name": name}}, parallel_tool_calls=False,
                 temperature=0)
        calls = check_calls(r.choices[0].message, r.choices[0].finish_reason, names={name})
        assert len(calls) == 1


def test_streamed_calls_match_the_whole_reply(client):
    kw = dict(messages=[{"role": "user", "content": ASKS[0]}], tools=TOOLS, tool_choice="required",
              max_tokens=160, temperature=0, parallel_tool_calls=False)
    whole = chat(client, **kw).choices[0].message.tool_calls
    calls, finish, content = {}, None, ""
    for chunk in chat(client, stream=True, **kw):
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        content += c.delta.content or ""
        for d in c.delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
            entry["name"] += d.function.name or ""
            entry["arguments"] += d.function.arguments or ""
        finish = c.finish_reason or finish
    assert finish == "tool_calls"
    assert content == ""
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in whole]


def test_the_clients_parse_helper_reads_strict_pydantic_tools(client):
    r = client.beta.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": ASKS[1]}], max_tokens=160, temperature=0,
        tools=[openai.pydantic_function_tool(Weather), openai.pydantic_function_tool(Flight)],
        tool_choice="required", parallel_tool_calls=False)
    calls = r.choices[0].message.tool_calls
    assert calls
    for call in calls:
        assert isinstance(call.function.parsed_arguments, (Weather, Flight)), call


def test_auto_replies_are_text_or_calls(client):
    for ask in ASKS:
        r = chat(client, messages=[{"role": "user", "content": ask}], tools=TOOLS, max_tokens=60, temperature=0)
        choice = r.choices[0]
        if choice.message.tool_calls:
            check_calls(choice.message, choice.finish_reason, text_before=True)
        else:
            assert choice.finish_reason in ("stop", "length")
            assert isinstance(choice.message.content, str) and choice.message.content


def test_auto_calls_the_model_opens_are_well_formed(client, http):
    # "<" nudged up (token 44 in SmolLM2's vocabulary): the model opens <tool_call> blocks, as a
    # model trained on the format does by itself. The block is then constrained to one call of a
    # listed tool; the stop string ends the reply after the first block.
    lt = http.post("/tokenize", json={"prompt": "<", "add_special_tokens": False}).json()["tokens"]
    assert len(lt) == 1
    opened = 0
    for seed in range(4):
        r = chat(client, messages=[{"role": "user", "content": ASKS[seed % len(ASKS)]}], tools=TOOLS,
                 max_tokens=160, temperature=0.7, seed=seed, logit_bias={str(lt[0]): 5}, stop=["</tool_call>"])
        choice = r.choices[0]
        if choice.message.tool_calls:
            check_calls(choice.message, choice.finish_reason, text_before=True)
            opened += 1
        else:
            assert "<tool_call>" not in (choice.message.content or ""), choice
    assert opened >= 2, opened


def test_a_conversation_with_calls_and_results(client, http):
    messages = [{"role": "user", "content": ASKS[0]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"}]
    r = chat(client, messages=messages, tools=TOOLS, max_tokens=40, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # The template has no tools of its own: the tools, the call and its result are in the prompt.
    body = {"messages": messages, "tools": TOOLS}
    tokens = http.post("/tokenize", json=body).json()["tokens"]
    text = http.post("/detokenize", json={"tokens": tokens}).json()["prompt"]
    for part in ("<tools>", '"name": "book_flight"', "<tool_call>", '"city": "Paris"', "<tool_response>",
                 "18 degrees and sunny"):
        assert part in text, (part, text)
    # The prompt the reply was generated from is the one /tokenize shows.
    assert r.usage.prompt_tokens == len(tokens)


def test_n_choices_each_get_their_calls(client):
    r = chat(client, messages=[{"role": "user", "content": ASKS[0]}], tools=TOOLS, tool_choice="required",
             max_tokens=160, temperature=0.9, n=2, seed=3, parallel_tool_calls=False)
    assert len(r.choices) == 2
    for c in r.choices:
        check_calls(c.message, c.finish_reason)


BAD = [
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "two words"}}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}] * 2}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "none"}}]}, "tools"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": 3}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "number", "multipleOf": 0.25}}}}}],
      "tool_choice": "required"}, "tools"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": "f()"}], "tools": TOOLS}, "messages"),
]


@pytest.mark.parametrize("extra,param", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_tool_requests_are_400s(http, extra, param):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    assert_error(http.post("/v1/chat/completions", json=body), 400, param=param)
    assert http.get("/health").status_code == 200


def test_mutated_tool_requests_get_an_answer_and_never_a_crash(http):
    # Random values at random places inside tools, tool_choice and a call history: each request
    # is served or refused with OpenAI's error body, and the server stays healthy.
    import copy
    import random

    from test_api_fuzz import WEIRD, check_error_body

    base = {"model": MODEL, "max_tokens": 6, "tools": TOOLS, "tool_choice": "required",
            "messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "c", "content": "ok"}]}

    def spots(node, path=()):
        yield path
        if isinstance(node, dict):
            for k, v in node.items():
                yield from spots(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from spots(v, path + (i,))

    rng = random.Random(7)
    statuses = {}
    for i in range(200):
        body = copy.deepcopy(base)
        body["tool_choice"] = rng.choice(["required", "auto", "none",
                                          {"type": "function", "function": {"name": "book_flight"}}])
        for _ in range(rng.choice([1, 1, 2])):
            paths = [p for p in spots(body) if p and p[0] in ("tools", "tool_choice", "messages")]
            path = rng.choice(paths)
            at = body
            for k in path[:-1]:
                at = at[k]
            at[path[-1]] = copy.deepcopy(rng.choice(WEIRD))
        r = http.post("/v1/chat/completions", content=json.dumps(body, allow_nan=True),
                      headers={"content-type": "application/json"})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 404), (i, r.status_code, r.text[:300])
        if r.status_code != 200:
            check_error_body(r, f"request {i}")
    assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > 20, statuses
    assert http.get("/health").status_code == 200
