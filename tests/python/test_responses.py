"""OpenAI's Responses API (POST /v1/responses) on a live `peng serve`, through the official
`openai` client: text in and out, streamed events, instructions, structured output with
`responses.parse`, function calls and their outputs fed back, stored responses
(`previous_response_id`, `responses.retrieve`, `responses.delete`), and the errors for what the
server does not do (background responses, built-in tools). The request runs as the chat
completion it translates to, so its text must match that chat completion's at temperature 0.
"""
from __future__ import annotations

import json

import pydantic
import pytest

from openai_common import MODEL, assert_error, chat, client, http  # noqa: F401


def test_text_in_text_out_matches_chat_completions(client):
    r = client.responses.create(model=MODEL, input="Write one sentence about the sea.", max_output_tokens=24,
                                temperature=0, instructions="You are terse.")
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status in ("completed", "incomplete")
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    c = chat(client, messages=[{"role": "system", "content": "You are terse."},
                               {"role": "user", "content": "Write one sentence about the sea."}],
             max_tokens=24, temperature=0)
    assert r.output_text == c.choices[0].message.content
    assert r.usage.input_tokens == c.usage.prompt_tokens
    assert r.usage.output_tokens == c.usage.completion_tokens
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    if c.choices[0].finish_reason == "length":
        assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.instructions == "You are terse." and r.max_output_tokens == 24 and r.store is True


def test_streamed_events_spell_the_same_text(client):
    kw = dict(model=MODEL, input=[{"role": "user", "content": [{"type": "input_text", "text": "Name three colours."}]}],
              max_output_tokens=30, temperature=0)
    whole = client.responses.create(**kw)
    types, deltas, sequence = [], "", []
    with client.responses.stream(**kw) as stream:
        for event in stream:
            types.append(event.type)
            sequence.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas += event.delta
            last = event
    # The last event carries the whole response: response.completed, or response.incomplete
    # when max_output_tokens cut it (the client's get_final_response wants the former).
    final = last.response
    assert final.status == whole.status
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    for t in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
              "response.content_part.done", "response.output_item.done"):
        assert t in types, types
    assert sequence == list(range(len(sequence)))
    assert deltas == whole.output_text == final.output_text
    assert final.usage.output_tokens == whole.usage.output_tokens


class City(pydantic.BaseModel):
    name: str
    country: str
    population: int = pydantic.Field(ge=0)


def test_parse_with_a_pydantic_text_format(client):
    parsed = 0
    for seed in range(3):
        r = client.responses.parse(model=MODEL, input="Describe a city as JSON.", text_format=City,
                                   max_output_tokens=120, temperature=0.8, extra_body={"seed": seed})
        if r.status == "completed":
            assert isinstance(r.output_parsed, City)
            parsed += 1
    assert parsed >= 1


WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_function_calls_and_their_outputs(client):
    r = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                tool_choice="required", parallel_tool_calls=False, max_output_tokens=60,
                                temperature=0)
    assert r.status == "completed"
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    assert calls[0].call_id.startswith("call_")
    # The call and its output go back as input items; the reply is text this time.
    follow = client.responses.create(
        model=MODEL, tools=[WEATHER], max_output_tokens=30, temperature=0,
        input=[{"role": "user", "content": "What is the weather in Paris?"},
               {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
                "arguments": calls[0].arguments},
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees, sunny"}],
        tool_choice="none")
    assert follow.output_text


def test_streamed_function_calls(client):
    kw = dict(model=MODEL, input="What is the weather in Oslo?", tools=[WEATHER],
              tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False,
              max_output_tokens=60, temperature=0)
    whole = client.responses.create(**kw)
    with client.responses.stream(**kw) as stream:
        args = "".join(e.delta for e in stream if e.type == "response.function_call_arguments.delta")
        final = stream.get_final_response()
    calls = [i for i in final.output if i.type == "function_call"]
    assert [json.loads(c.arguments) for c in calls] == \
        [json.loads(i.arguments) for i in whole.output if i.type == "function_call"]
    assert json.loads(args) == json.loads(calls[0].arguments)


BAD = [
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "store": "yes"}, "store"),
    ({"input": "hi", "previous_response_id": 7}, "previous_response_id"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]}, "input"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input"),
    ({"input": []}, "input"),
    ({}, "input"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text"),
    ({"input": "hi", "temperature": "hot"}, "temperature"),
    ({"input": [{"role": "wizard", "content": "hi"}]}, "input"),
]


@pytest.mark.parametrize("body,param", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_are_400s_naming_the_field(http, body, param):
    assert_error(http.post("/v1/responses", json={"model": MODEL, **body}), 400, param=param)


def test_unknown_model_is_404(http):
    assert_error(http.post("/v1/responses", json={"model": "nope", "input": "hi"}), 404, param="model")


def test_previous_response_id_continues_the_conversation(client):
    """A follow-up with previous_response_id runs as the chat completion of the whole
    conversation: the first turn's input and output, then the new input (the first turn's
    instructions are not carried over, as in OpenAI's API)."""
    first = client.responses.create(model=MODEL, input="My name is Ada. Say hello.", max_output_tokens=20,
                                    temperature=0, instructions="You are terse.")
    assert first.store is True
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input="What is my name?",
                                     max_output_tokens=20, temperature=0)
    assert second.previous_response_id == first.id
    c = chat(client, messages=[{"role": "user", "content": "My name is Ada. Say hello."},
                               {"role": "assistant", "content": first.output_text},
                               {"role": "user", "content": "What is my name?"}],
             max_tokens=20, temperature=0)
    assert second.output_text == c.choices[0].message.content
    assert second.usage.input_tokens == c.usage.prompt_tokens
    # Streamed follow-ups chain the same way.
    with client.responses.stream(model=MODEL, previous_response_id=second.id, input="Thanks!",
                                 max_output_tokens=8, temperature=0) as stream:
        third = [e for e in stream][-1].response  # response.completed, or .incomplete when cut
    again = client.responses.retrieve(third.id)
    assert again.id == third.id and again.output_text == third.output_text
    assert again.previous_response_id == second.id


def test_function_call_outputs_after_a_stored_call(client):
    r = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                tool_choice="required", parallel_tool_calls=False, max_output_tokens=60,
                                temperature=0)
    call = next(item for item in r.output if item.type == "function_call")
    follow = client.responses.create(model=MODEL, previous_response_id=r.id, tools=[WEATHER], tool_choice="none",
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "18 degrees, sunny"}],
                                     max_output_tokens=30, temperature=0)
    c = chat(client, messages=[{"role": "user", "content": "What is the weather in Paris?"},
                               {"role": "assistant", "content": None, "tool_calls": [
                                   {"id": call.call_id, "type": "function",
                                    "function": {"name": call.name, "arguments": call.arguments}}]},
                               {"role": "tool", "tool_call_id": call.call_id, "content": "18 degrees, sunny"}],
             tools=[{"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}],
             tool_choice="none", max_tokens=30, temperature=0)
    assert follow.output_text == c.choices[0].message.content


def test_retrieve_delete_and_store_false(client, http):
    r = client.responses.create(model=MODEL, input="Hi", max_output_tokens=4, temperature=0)
    got = http.get(f"/v1/responses/{r.id}")
    assert got.status_code == 200 and got.json()["id"] == r.id
    assert got.json()["output"][0]["content"][0]["text"] == r.output_text
    assert client.responses.retrieve(r.id).output_text == r.output_text
    deleted = client.responses.delete(r.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    assert_error(http.get(f"/v1/responses/{r.id}"), 404, param="response_id")
    assert_error(http.delete(f"/v1/responses/{r.id}"), 404, param="response_id")
    assert_error(http.post("/v1/responses", json={"model": MODEL, "input": "hi", "previous_response_id": r.id}),
                 404, param="previous_response_id")
    # store: false keeps nothing.
    unstored = client.responses.create(model=MODEL, input="Hi", max_output_tokens=4, temperature=0, store=False)
    assert unstored.store is False
    assert_error(http.get(f"/v1/responses/{unstored.id}"), 404, param="response_id")
    # Other methods on a stored response's path are 405s that list the allowed ones.
    put = http.put(f"/v1/responses/{r.id}", json={})
    assert put.status_code == 405 and put.headers["allow"] == "GET, DELETE, HEAD"


def test_input_items_list_the_request_input(client, http):
    r = client.responses.create(model=MODEL, max_output_tokens=4, temperature=0, input=[
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]},
        {"type": "message", "role": "assistant", "content": "Red."},
        {"role": "user", "content": "Another one?"}])
    page = client.responses.input_items.list(r.id)  # newest first, by default
    texts = [item.content[0].text for item in page.data]
    assert texts == ["Another one?", "Red.", "Name a colour.", "Answer briefly."], texts
    assert [item.role for item in page.data] == ["user", "assistant", "user", "developer"]
    assert page.data[1].content[0].type == "output_text" and page.data[0].content[0].type == "input_text"
    assert len({item.id for item in page.data}) == 4 and page.has_more is False
    # Pages: oldest first, two at a time, then the rest after the last id seen.
    first = http.get(f"/v1/responses/{r.id}/input_items?order=asc&limit=2").json()
    assert [i["content"][0]["text"] for i in first["data"]] == ["Answer briefly.", "Name a colour."]
    assert first["has_more"] is True and first["last_id"] == first["data"][1]["id"]
    rest = http.get(f"/v1/responses/{r.id}/input_items?order=asc&limit=2&after={first['last_id']}").json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["Red.", "Another one?"] and rest["has_more"] is False
    # A string input is one user message; a function call's output keeps its call id.
    s = client.responses.create(model=MODEL, input="Hi there", max_output_tokens=2, temperature=0)
    items = http.get(f"/v1/responses/{s.id}/input_items").json()["data"]
    assert len(items) == 1 and items[0]["role"] == "user" and items[0]["content"][0]["text"] == "Hi there"
    f = client.responses.create(model=MODEL, max_output_tokens=2, temperature=0, input=[
        {"role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}])
    items = http.get(f"/v1/responses/{f.id}/input_items?order=asc").json()["data"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items[2]["call_id"] == "call_1" and items[2]["output"] == "sunny"
    # Errors: unknown response, bad limit / order / after; other methods are 405s.
    assert_error(http.get("/v1/responses/resp_nope/input_items"), 404, param="response_id")
    assert_error(http.get(f"/v1/responses/{r.id}/input_items?limit=0"), 400, param="limit")
    assert_error(http.get(f"/v1/responses/{r.id}/input_items?limit=abc"), 400, param="limit")
    assert_error(http.get(f"/v1/responses/{r.id}/input_items?order=sideways"), 400, param="order")
    assert_error(http.get(f"/v1/responses/{r.id}/input_items?after=msg_nope"), 400, param="after")
    assert http.delete(f"/v1/responses/{r.id}/input_items").status_code == 405
