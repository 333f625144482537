"""JSON mode (response_format {"type": "json_object"}) on a live `peng serve`, through the
official `openai` client, raw HTTP and gRPC: every output that ends by itself is one JSON object
that Python's json module parses; one cut by max_tokens is a prefix of one. The grammar itself
is unit-tested in engine/json_grammar_test.cc.
"""
from __future__ import annotations

import json

import pytest

from openai_common import MODEL, chat, client, complete, http, stream_chat_text  # noqa: F401

JSON = {"type": "json_object"}
ASKS = ["Give me a JSON object describing a cat with a name and an age.",
        "Describe the city of Paris as JSON.",
        "Return a JSON object with three fruits and their colours.",
        "hello"]


def assert_object_or_cut(text: str, finish_reason: str) -> bool:
    """True when the output ended by itself (then it is a JSON object)."""
    if finish_reason == "length":
        # Cut by max_tokens: no complete document may sit inside it (JSON mode ends there).
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        return False
    assert finish_reason == "stop", finish_reason
    value = json.loads(text)
    assert isinstance(value, dict), text
    return True


def test_chat_outputs_are_json_objects(client):
    ended = 0
    for ask in ASKS:
        for seed in range(3):
            r = chat(client, messages=[{"role": "user", "content": ask}], max_tokens=200,
                     temperature=0.8, seed=seed, response_format=JSON)
            ended += assert_object_or_cut(r.choices[0].message.content, r.choices[0].finish_reason)
    # The small model closes most objects well before 200 tokens.
    assert ended >= len(ASKS) * 3 // 2, ended


def test_without_json_mode_the_same_asks_are_prose(client):
    # What makes the outputs above JSON is the constraint, not the model's habit.
    prose = 0
    for ask in ASKS:
        r = chat(client, messages=[{"role": "user", "content": ask}], max_tokens=60, temperature=0)
        try:
            prose += not isinstance(json.loads(r.choices[0].message.content), dict)
        except json.JSONDecodeError:
            prose += 1
    assert prose >= 2, prose


def test_streamed_json_mode_matches_the_whole_response(client):
    messages = [{"role": "user", "content": ASKS[0]}]
    whole = chat(client, messages=messages, max_tokens=200, temperature=0, response_format=JSON)
    text, finish, _ = stream_chat_text(client, messages=messages, max_tokens=200, temperature=0,
                                       response_format=JSON)
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert assert_object_or_cut(text, finish)


def test_completions_n2_each_choice_is_an_object(client):
    r = complete(client, prompt="A JSON object for a book:", max_tokens=200, n=2, temperature=0.8,
                 seed=5, extra_body={"response_format": JSON})
    assert len(r.choices) == 2
    for c in r.choices:
        assert_object_or_cut(c.text, c.finish_reason)


def test_alternatives_are_only_tokens_the_grammar_allows(http):
    # At the end only the end-of-turn token is possible: the other alternatives are banned and
    # are not listed (OpenAI clients need a number for every logprob).
    r = http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": ASKS[0]}], "max_tokens": 200,
        "temperature": 0, "response_format": JSON, "logprobs": True, "top_logprobs": 5})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert assert_object_or_cut(choice["message"]["content"], choice["finish_reason"])
    content = choice["logprobs"]["content"]
    for entry in content:
        assert isinstance(entry["logprob"], float)
        assert all(isinstance(t["logprob"], float) for t in entry["top_logprobs"]), entry
    assert len(content[-1]["top_logprobs"]) < 5, content[-1]


@pytest.mark.parametrize("fmt", [{"type": "text"}, None])
def test_text_format_is_unconstrained(client, fmt):
    extra = {} if fmt is None else {"response_format": fmt}
    a = chat(client, messages=[{"role": "user", "content": "hello"}], max_tokens=20, temperature=0, **extra)
    b = chat(client, messages=[{"role": "user", "content": "hello"}], max_tokens=20, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content


# ---------------------------------------------------------------------------------------------
# Structured output: response_format json_schema

from datetime import date, datetime  # noqa: E402
from typing import Annotated, Literal, Optional, Union  # noqa: E402
from uuid import UUID  # noqa: E402

import openai  # noqa: E402
from pydantic import BaseModel, Field, StringConstraints, conint  # noqa: E402


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):
    name: str
    age: int
    email: Optional[str]
    role: Literal["admin", "user", "guest"]
    address: Address
    hobbies: list[str]


def parse_replies(client, model_cls, ask: str, max_tokens: int, seeds: int = 4) -> list:
    """The official client's structured-output helper: it sends model_cls's JSON schema and
    validates each reply with pydantic (an independent check of every constraint the schema
    states). Replies cut by max_tokens are skipped (the small model can list for ever)."""
    parsed = []
    for seed in range(seeds):
        try:
            r = client.beta.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": ask}],
                                                   response_format=model_cls, max_tokens=max_tokens,
                                                   temperature=0.8, seed=seed)
        except openai.LengthFinishReasonError:
            continue
        assert r.choices[0].finish_reason == "stop"
        assert isinstance(r.choices[0].message.parsed, model_cls)
        parsed.append(r.choices[0].message.parsed)
    return parsed


def test_openai_parse_with_a_pydantic_model(client):
    parsed = parse_replies(client, Person, "Invent a person.", max_tokens=300)
    assert len(parsed) >= 2, parsed


class Inventory(BaseModel):
    shop: str
    stock: dict[str, int]


def test_openai_parse_with_a_dict_field(client):
    # dict[str, int] is an object with additionalProperties and no properties: any keys.
    parsed = parse_replies(client, Inventory, "Make up a fruit shop and how many of each fruit it has.",
                           max_tokens=150)
    assert parsed, "no reply ended within 150 tokens"
    assert any(p.stock for p in parsed), parsed  # keys the model chose, not just {}


class Booking(BaseModel):
    guest: Annotated[str, StringConstraints(min_length=2, max_length=24)]
    nights: Annotated[int, Field(ge=1, le=14)]
    day: date
    created: datetime
    ref: UUID
    code: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}\d{2}$")]


def test_openai_parse_with_formats_and_patterns(client):
    # date, datetime and UUID fields (JSON Schema formats), a pattern, string lengths and
    # integer bounds: pydantic refuses any value that breaks them, so every reply that ends
    # must keep them.
    parsed = parse_replies(client, Booking, "Make up a hotel booking.", max_tokens=200)
    assert parsed, "no reply ended within 200 tokens"


class Review(BaseModel):
    score: Annotated[float, Field(ge=0, le=1)]
    where: tuple[float, float]
    price: Annotated[float, Field(gt=0, lt=500)]
    delta: Annotated[float, Field(ge=-2.5, le=-0.5)]


class Pet(BaseModel):
    kind: Literal["cat"]
    lives: int


class Fish(BaseModel):
    kind: Literal["fish"]
    fins: Annotated[int, Field(ge=0, le=8)]


class Tank(BaseModel):
    pets: list[Annotated[Union[Pet, Fish], Field(discriminator="kind")]]


class Circle(BaseModel):
    radius: float


class Rect(BaseModel):
    width: float
    height: float


class Drawing(BaseModel):
    shapes: list[Union[Circle, Rect]]  # no tag: the first key tells them apart
    colours: set[Literal["red", "green", "blue"]]  # uniqueItems


def test_openai_parse_with_number_bounds_and_tagged_unions(client):
    # Float bounds (pydantic ge/gt/le/lt on floats), a tuple (prefixItems), a discriminated
    # union of models, a plain one and a set: pydantic refuses any value that breaks them (a set
    # parses from a list with repeats, so the test reads the JSON list too).
    parsed = parse_replies(client, Review, "Review a restaurant with a score, a price and a delta.",
                           max_tokens=120)
    assert parsed, "no reply ended within 120 tokens"
    parsed = parse_replies(client, Tank, "List the animals in an aquarium.", max_tokens=200)
    assert parsed, "no reply ended within 200 tokens"
    parsed = parse_replies(client, Drawing, "Draw a few shapes in colour.", max_tokens=200)
    assert parsed, "no reply ended within 200 tokens"
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Draw a few shapes in colour."}], max_tokens=200,
        temperature=0.8, seed=1, response_format={"type": "json_schema", "json_schema": {
            "name": "Drawing", "schema": Drawing.model_json_schema()}})
    if r.choices[0].finish_reason == "stop":
        colours = json.loads(r.choices[0].message.content)["colours"]
        assert len(colours) == len(set(colours)), colours


class Tagged(BaseModel):
    tags: Annotated[set[str], Field(max_length=4)]          # uniqueItems over strings
    years: Annotated[frozenset[int], Field(max_length=4)]   # ... and integers (maxItems: the small
                                                            # model lists for ever otherwise)


def test_sets_of_strings_and_integers_never_repeat_an_item(client):
    # The model is asked for repeats; the constraint bans every token that would finish an item
    # equal to an earlier one (as a JSON value).
    seen_items = 0
    for seed in range(4):
        r = client.chat.completions.create(
            model=MODEL, max_tokens=200, temperature=0.9, seed=seed,
            messages=[{"role": "user", "content": "Tag this post with cat, cat, cat and the years 2020, 2020, 2020."}],
            response_format={"type": "json_schema", "json_schema": {"name": "Tagged", "schema": Tagged.model_json_schema()}})
        if r.choices[0].finish_reason != "stop":
            continue
        value = json.loads(r.choices[0].message.content)
        for key in ("tags", "years"):
            items = [json.dumps(v) for v in value[key]]
            assert len(items) == len(set(items)), (key, value[key])
            seen_items += len(items)
        Tagged.model_validate(value)
    assert seen_items > 0, "no reply ended with items"
    parsed = parse_replies(client, Tagged, "Tags and years for a post about the moon landing.", max_tokens=200)
    assert parsed, "no reply ended within 200 tokens"


def test_schema_properties_come_in_the_declared_order(http):
    schema = {"type": "object", "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "boolean"},
                                               "mid": {"enum": ["x", "y"]}},
              "required": ["zeta", "alpha", "mid"]}
    r = http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "Fill in the record."}], "max_tokens": 60,
        "temperature": 0, "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    pairs = json.loads(choice["message"]["content"], object_pairs_hook=list)
    assert [k for k, _ in pairs] == ["zeta", "alpha", "mid"]
    value = dict(pairs)
    assert isinstance(value["zeta"], int) and isinstance(value["alpha"], bool) and value["mid"] in ("x", "y")


def test_schema_outside_the_subset_is_a_400_naming_the_keyword(http):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "not": {"const": 3}}}}
    r = http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "response_format" and "'not'" in err["message"], err


class Scored(BaseModel):
    score: conint(ge=0, le=100, multiple_of=5)   # multipleOf on integers
    step: Annotated[float, Field(multiple_of=2, ge=0, le=20)]  # a whole multipleOf on a number
    big: Annotated[int, Field(ge=0, le=10**30)]  # a bound beyond 64-bit integers


def test_multiple_of_and_bounds_beyond_int64(client):
    parsed = parse_replies(client, Scored, "Score this essay out of 100, in steps of 5.", max_tokens=80)
    assert parsed, "no reply ended within 80 tokens"
    for p in parsed:  # pydantic validated them; and again, independently
        assert p.score % 5 == 0 and 0 <= p.score <= 100 and p.step % 2 == 0 and 0 <= p.big <= 10**30


# ---------------------------------------------------------------------------------------------
# vLLM's guided decoding fields: guided_json and guided_choice

def test_guided_choice_answers_with_one_of_the_choices(client):
    choices = ["positive", "negative", "neutral"]
    for text in ("I love this phone, it is wonderful!", "This is the worst meal I have ever had."):
        r = chat(client, messages=[{"role": "user", "content": f"Sentiment of: {text}"}], max_tokens=20,
                 temperature=0.8, seed=1, extra_body={"guided_choice": choices})
        assert r.choices[0].message.content in choices, r.choices[0].message.content
        assert r.choices[0].finish_reason == "stop"


def test_guided_json_is_a_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}},
              "required": ["city", "rank"]}
    r = chat(client, messages=[{"role": "user", "content": "Name a city and rank it."}], max_tokens=80,
             temperature=0, extra_body={"guided_json": schema})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    value = json.loads(r.choices[0].message.content)
    assert list(value) == ["city", "rank"] and isinstance(value["rank"], int)


def test_guided_regex_output_matches_the_whole_regex(client):
    import re

    cases = [(r"\d{3}-\d{4}", "Give me a phone number."),
             (r"(yes|no), because [a-z ]{5,40}\.", "Is the sky blue? Answer and say why."),
             (r"[A-Z][a-z]+ \d{1,2}, (19|20)\d\d", "When was the moon landing?"),
             (r'\{"name": "[A-Za-z ]{1,20}"\}\n?', "A name as JSON."),
             (r"^[a-z]+(?:-[a-z]+)*?$", "A slug for a blog post about cats.")]
    for pattern, ask in cases:
        for seed in range(2):
            r = chat(client, messages=[{"role": "user", "content": ask}], max_tokens=60, temperature=0.8,
                     seed=seed, extra_body={"guided_regex": pattern})
            text = r.choices[0].message.content
            if r.choices[0].finish_reason == "length":
                continue
            assert r.choices[0].finish_reason == "stop", text
            assert re.fullmatch(pattern.strip("^$"), text), (pattern, text)


def test_structured_outputs_takes_vllms_newer_form(client):
    import re

    r = chat(client, messages=[{"role": "user", "content": "Is fire hot?"}], max_tokens=10, temperature=0,
             extra_body={"structured_outputs": {"choice": ["yes", "no"]}})
    assert r.choices[0].message.content in ("yes", "no")
    r = chat(client, messages=[{"role": "user", "content": "A year?"}], max_tokens=10, temperature=0,
             extra_body={"structured_outputs": {"regex": r"\d{4}", "disable_any_whitespace": True}})
    assert re.fullmatch(r"\d{4}", r.choices[0].message.content), r.choices[0].message.content
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = chat(client, messages=[{"role": "user", "content": "Name a city."}], max_tokens=40, temperature=0,
             extra_body={"structured_outputs": {"json": schema}})
    assert list(json.loads(r.choices[0].message.content)) == ["city"]
    r = chat(client, messages=[{"role": "user", "content": "Name a city."}], max_tokens=60, temperature=0,
             extra_body={"structured_outputs": {"json_object": True}})
    assert r.choices[0].finish_reason == "length" or isinstance(json.loads(r.choices[0].message.content), dict)
    r = complete(client, prompt="The answer is", max_tokens=10, temperature=0,
                 extra_body={"guided_regex": " (forty-two|42)"})
    assert r.choices[0].text in (" forty-two", " 42")


@pytest.mark.parametrize("extra,param", [
    ({"guided_regex": "a(?=b)"}, "guided_regex"),
    ({"guided_regex": "(" * 100_000 + "a" + ")" * 100_000}, "guided_regex"),  # too deep: refused, not a crash
    ({"guided_regex": "((a{64}){64}){64}"}, "guided_regex"),                  # too large once expanded
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
        "s": {"type": "string", "pattern": "^(a|b)*a(a|b){12}$"}}}}}}, "response_format"),
    ({"guided_regex": 5}, "guided_regex"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_regex"),
    ({"structured_outputs": {"regex": "(", "choice": ["a"]}}, "structured_outputs.regex"),
    ({"structured_outputs": {"regex": "[z-a]"}}, "structured_outputs.regex"),
    ({"structured_outputs": {"grammar": "root ::= \"a\""}}, "structured_outputs.grammar"),
    ({"structured_outputs": {"bogus": 1}}, "structured_outputs.bogus"),
    ({"structured_outputs": "json"}, "structured_outputs"),
    ({"structured_outputs": {"json_object": "yes"}}, "structured_outputs.json_object"),
    ({"structured_outputs": {"choice": ["a"]}, "response_format": {"type": "json_object"}}, "structured_outputs.choice"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_choice": ["a", 1]}, "guided_choice"),
    ({"guided_choice": ["a"], "guided_json": {"type": "object"}}, "guided_json"),
    ({"guided_choice": ["a"], "response_format": {"type": "json_object"}}, "guided_choice"),
    ({"guided_json": "{not json"}, "guided_json"),
])
def test_guided_fields_errors(http, extra, param):
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                "max_tokens": 5, **extra})
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"]["param"] == param, r.text[:300]
    assert len(r.json()["error"]["message"]) < 1000  # a pattern is quoted short


def _random_schema(rng, depth=0):
    """A random schema over the keywords JSON mode reads and some it refuses, with junk values."""
    kinds = ["string", "integer", "number", "boolean", "null", "object", "array", "enum", "anyOf", "ref", "junk"]
    k = rng.choice(kinds if depth < 4 else kinds[:5] + ["junk"])
    if k == "object":
        props = {f"k{i}": _random_schema(rng, depth + 1) for i in range(rng.randint(0, 3))}
        s = {"type": "object", "properties": props, "required": rng.sample(list(props), rng.randint(0, len(props)))}
        if rng.random() < 0.3:
            s["additionalProperties"] = _random_schema(rng, depth + 1)
        return s
    if k == "array":
        s = {"type": "array", "items": _random_schema(rng, depth + 1)}
        if rng.random() < 0.5:
            s["maxItems"] = rng.choice([0, 1, 3, -1, "x"])
        return s
    if k == "enum":
        return {"enum": rng.choice([["a", "b"], [1, 2, 10], [], [None, True, {"x": 1}], "nope"])}
    if k == "anyOf":
        return {"anyOf": [_random_schema(rng, depth + 1) for _ in range(rng.randint(0, 3))]}
    if k == "ref":
        return {"$ref": rng.choice(["#/$defs/D", "#/$defs/Missing", "#", 7])}
    if k == "junk":
        return rng.choice([{"type": "string", "pattern": "x"}, {"minimum": 3}, [], 5, {"type": ["string", "null"]},
                           {"type": "nope"}, {}, True, False, {"const": [1, 2]}])
    return {"type": k}


def test_random_schemas_get_an_answer_or_a_400(http):
    # Nothing a client can put in a schema takes the server down or hangs a request: each one
    # is served (then the reply is a JSON object) or refused with a 400 that names response_format.
    import random
    rng = random.Random(3)
    served = 0
    for i in range(60):
        schema = {"type": "object", "properties": {"a": _random_schema(rng), "b": _random_schema(rng)},
                  "$defs": {"D": _random_schema(rng)}}
        if i % 7 == 0:
            schema = _random_schema(rng)
        r = http.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "Fill it in."}], "max_tokens": 40,
            "temperature": 0.8, "seed": i,
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}})
        assert r.status_code in (200, 400), (r.status_code, r.text, schema)
        if r.status_code == 400:
            assert r.json()["error"]["param"] == "response_format", r.text
            continue
        served += 1
        choice = r.json()["choices"][0]
        if choice["finish_reason"] == "stop":
            assert isinstance(json.loads(choice["message"]["content"]), dict), (choice, schema)
    assert served >= 10, served
    assert http.get("/health").status_code == 200
