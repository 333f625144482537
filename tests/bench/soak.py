#!/usr/bin/env python3
"""Mixed-traffic soak of a running `peng serve`: everything at once, for minutes, then checks.

The tests exercise each behaviour alone; a production server meets them interleaved. This
client runs --concurrency workers for --duration seconds, each picking one action at a time at
random (seeded):

  - streamed and plain completions and chat completions with random sampling parameters
    (temperature, top_p, top_k, min_p, seeds, penalties, logit_bias, stop strings, n, echo,
    logprobs), prompts as text or token ids;
  - clients that vanish: mid-stream, right after sending, or halfway through the body;
  - bad requests: malformed or truncated JSON, wrong types, out-of-range values, an unknown
    model, prompts over the context, oversized bodies;
  - /tokenize + /detokenize round trips, /v1/models, /health, /metrics scrapes;
  - gRPC Generate streams, some cancelled after a few messages (with --grpc).

Every answer is checked as it arrives: a success has the right shape (finish reasons, usage
arithmetic, n choices, [DONE] last), an error has OpenAI's nested shape and a 4xx status where
the request was bad. No 5xx is expected. After the load stops the server must be ready with no
running or waiting request and no KV page in use, and, with --pid, its resident memory must not
have kept growing (the last quarter of the run against the second).

  soak.py --base-url http://127.0.0.1:8000 --grpc 127.0.0.1:50051 --duration 600 --pid PID

Exit status 0 when every check held; the summary lists counts per action and every failure.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import importlib
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.parse

import httpx

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
         "every jolly knight and their zebra near old Paris in spring 1999 -- why? "
         "naïve café résumé 東京 数据 🙂 \\n\t {\"json\": [1, 2]} <|im_start|> </s>").split()


# Values each field must refuse with a 400 (wrong type or out of range).
BAD_VALUES = [
    ("max_tokens", ["x", [1], {"a": 1}, True, -5, 2.5]),
    ("temperature", ["x", [1], {"a": 1}, -5]),  # no upper bound (vLLM): 1e30 is uniform
    ("n", ["x", [1], -5, 1e30]),
    ("top_p", ["x", [1], -5, 1e30]),
    ("stop", [[1], {"a": 1}, -5, True]),
    ("seed", ["x", [1], {"a": 1}, 2.5]),
    ("logprobs", ["x", [1], {"a": 1}, -5]),
]


class Soak:
    def __init__(self, args):
        self.args = args
        self.base = args.base_url.rstrip("/")
        u = urllib.parse.urlparse(self.base)
        self.host, self.port = u.hostname, u.port or 80
        self.counts = collections.Counter()
        self.failures: list[str] = []
        self.model = None
        self.max_len = 2048
        self.headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        self.pb = None
        self.response_ids: list[str] = []  # stored responses to continue (previous_response_id)

    def fail(self, what: str, detail: str):
        self.counts["FAILED " + what] += 1
        if len(self.failures) < 200:
            self.failures.append(f"{what}: {detail[:400]}")

    # ---- random inputs ------------------------------------------------------------------
    def text(self, rng, lo=1, hi=40):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    def sampling(self, rng) -> dict:
        body = {}
        if rng.random() < 0.5:
            body["temperature"] = rng.choice([0, 0, 0.3, 0.8, 1.0, 1.7])
        if rng.random() < 0.3:
            body["top_p"] = rng.choice([0.05, 0.5, 0.9, 1.0])
        if rng.random() < 0.3:
            body["top_k"] = rng.choice([-1, 1, 5, 50])
        if rng.random() < 0.2:
            body["min_p"] = rng.choice([0.0, 0.05, 0.5])
        if rng.random() < 0.3:
            body["seed"] = rng.randint(0, 2**31)
        if rng.random() < 0.2:
            body["presence_penalty"] = rng.uniform(-2, 2)
        if rng.random() < 0.2:
            body["frequency_penalty"] = rng.uniform(-2, 2)
        if rng.random() < 0.2:
            body["repetition_penalty"] = rng.choice([0.8, 1.0, 1.3])
        if rng.random() < 0.15:
            body["logit_bias"] = {str(rng.randint(0, 49151)): rng.uniform(-100, 100) for _ in range(rng.randint(1, 5))}
        if rng.random() < 0.25:
            body["stop"] = rng.choice([".", ["\n", "the"], [" a", "!", "?", "zebra"]])
        if rng.random() < 0.1:
            body["ignore_eos"] = True
        return body

    # ---- checks -------------------------------------------------------------------------
    def check_error_body(self, what, r_status, text, allowed):
        if r_status >= 500 and r_status not in allowed:
            return self.fail(what, f"status {r_status}: {text}")
        if r_status not in allowed:
            return self.fail(what, f"status {r_status} not in {sorted(allowed)}: {text}")
        try:
            err = json.loads(text)["error"]
            assert isinstance(err["message"], str) and err["message"]
            assert "type" in err
        except Exception as e:  # noqa: BLE001
            self.fail(what, f"error body not OpenAI's shape ({e!r}): {text}")

    def check_choices(self, what, body, n, max_tokens, kind):
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) != n:
            return self.fail(what, f"{len(choices or [])} choices for n={n}")
        for c in choices:
            if c.get("finish_reason") not in ("stop", "length"):
                self.fail(what, f"finish_reason {c.get('finish_reason')!r}")
            if kind == "chat" and not isinstance(c.get("message", {}).get("content"), str):
                self.fail(what, f"no message content: {c}")
            if kind == "completion" and not isinstance(c.get("text"), str):
                self.fail(what, f"no text: {c}")
        usage = body.get("usage") or {}
        if usage.get("total_tokens") != usage.get("prompt_tokens", -1) + usage.get("completion_tokens", -1):
            self.fail(what, f"usage arithmetic: {usage}")
        if kind == "completion" and max_tokens == 0 and usage.get("completion_tokens") != 0:
            self.fail(what, f"max_tokens 0 generated {usage.get('completion_tokens')} tokens")
        if usage.get("completion_tokens", 0) > n * max_tokens:
            self.fail(what, f"completion_tokens {usage.get('completion_tokens')} > n*max_tokens {n * max_tokens}")

    def check_prompt_logprobs(self, what, body):
        """echo + logprobs: each choice's entries start with the prompt's tokens, the first null."""
        per_prompt = (body.get("usage") or {}).get("prompt_tokens", 0)  # the soak sends one prompt
        for c in body["choices"]:
            lp = c.get("logprobs") or {}
            tokens, values = lp.get("tokens") or [], lp.get("token_logprobs") or []
            if not values or values[0] is not None or len(tokens) < per_prompt or len(values) != len(tokens):
                return self.fail(what, f"prompt logprobs: {len(tokens)} tokens, first {values[:1]} "
                                       f"for a {per_prompt}-token prompt")
            if any(v is None or v > 0 for v in values[1:]):
                return self.fail(what, f"prompt logprobs: bad values {values[:8]}")

    # ---- actions ------------------------------------------------------------------------
    async def generate(self, client, rng, stream: bool):
        kind = rng.choice(["chat", "completion"])
        n = rng.choice([1, 1, 1, 2, 3])
        max_tokens = rng.choice([1, 2, 8, 16, 32, 64])
        body = {"model": self.model, "max_tokens": max_tokens, **self.sampling(rng)}
        if n > 1:
            body["n"] = n
            body.setdefault("temperature", 0.8)
            if body["temperature"] == 0:
                body["temperature"] = 0.8
        if kind == "chat":
            path = "/v1/chat/completions"
            msgs = [{"role": "user", "content": self.text(rng)}]
            if rng.random() < 0.3:
                msgs.insert(0, {"role": "system", "content": self.text(rng, 1, 10)})
            if rng.random() < 0.2:
                msgs += [{"role": "assistant", "content": self.text(rng, 1, 10)},
                         {"role": "user", "content": self.text(rng, 1, 10)}]
            body["messages"] = msgs
            if rng.random() < 0.2:
                body["logprobs"] = True
                body["top_logprobs"] = rng.randint(0, 5)
        else:
            path = "/v1/completions"
            if rng.random() < 0.3:
                body["prompt"] = [rng.randint(0, 49151) for _ in range(rng.randint(1, 200))]
            else:
                body["prompt"] = self.text(rng, 1, 120)
            if rng.random() < 0.2:
                body["logprobs"] = rng.randint(0, 5)
            if rng.random() < 0.15:
                body["echo"] = True
                if rng.random() < 0.5:
                    body["max_tokens"] = max_tokens = 0  # score the prompt alone
        what = f"{kind}{' stream' if stream else ''}"
        self.counts[what] += 1
        if not stream:
            r = await client.post(self.base + path, json=body)
            if r.status_code != 200:
                return self.check_error_body(what, r.status_code, r.text, {429, 503})
            out = r.json()
            self.check_choices(what, out, n, max_tokens, kind)
            if kind == "completion" and body.get("echo") and "logprobs" in body:
                self.check_prompt_logprobs(what, out)
            return
        body["stream"] = True
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
        disconnect_after = rng.choice([None, None, None, 0, 1, 3])
        async with client.stream("POST", self.base + path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return self.check_error_body(what, r.status_code, r.text, {429, 503})
            events, done, finished, usage = 0, False, collections.Counter(), None
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if done:
                    self.fail(what, f"data after [DONE]: {data}")
                if data == "[DONE]":
                    done = True
                    continue
                ev = json.loads(data)
                if "error" in ev:
                    return self.fail(what, f"error in stream: {ev}")
                for c in ev.get("choices", []):
                    if c.get("finish_reason"):
                        finished[c["index"]] += 1
                if ev.get("usage"):
                    usage = ev["usage"]
                events += 1
                if disconnect_after is not None and events > disconnect_after:
                    self.counts["disconnect mid-stream"] += 1
                    return  # leaving the block closes the connection
            if not done:
                return self.fail(what, "stream ended without [DONE]")
            if sorted(finished) != list(range(n)) or any(v != 1 for v in finished.values()):
                self.fail(what, f"finish reasons per choice: {dict(finished)} for n={n}")
            if body.get("stream_options") and usage is None:
                self.fail(what, "include_usage but no usage chunk")

    TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
                 "type": "object", "properties": {"q": {"type": "string", "maxLength": 40}}, "required": ["q"]}}},
             {"type": "function", "function": {"name": "add", "parameters": {
                 "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "number", "minimum": 0}},
                 "required": ["a", "b"]}}}]
    SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["name", "n"]}
    SET_SCHEMA = {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "uniqueItems": True, "maxItems": 4},
        "ids": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 6, "multipleOf": 2},
                "uniqueItems": True}}, "required": ["tags", "ids"]}
    REGEX = r"(yes|no), [a-z ]{3,20}\."

    async def structured(self, client, rng):
        """Constrained output beside plain traffic: JSON mode, a schema, a schema of sets, a
        regex (with min_tokens), tool calls (required and auto) and the Responses API, streamed
        or not, some streams dropped early."""
        kind = rng.choice(["json_object", "json_schema", "json_sets", "regex", "tools_required", "tools_auto",
                           "responses"])
        max_tokens = rng.choice([4, 16, 48])
        stream = rng.random() < 0.4
        what = f"structured {kind}{' stream' if stream else ''}"
        self.counts[what] += 1
        messages = [{"role": "user", "content": self.text(rng, 1, 20)}]
        body = {"model": self.model, "temperature": rng.choice([0, 0.8]), "stream": stream}
        path = "/v1/chat/completions"
        if kind == "responses":
            path = "/v1/responses"
            body.update(input=messages, max_output_tokens=max_tokens)
            if rng.random() < 0.5:
                body["tools"] = [{"type": "function", **t["function"]} for t in self.TOOLS]
            if self.response_ids and rng.random() < 0.4:  # continue a stored conversation
                body["previous_response_id"] = rng.choice(self.response_ids)
            body["store"] = rng.random() < 0.8
        else:
            body.update(messages=messages, max_tokens=max_tokens)
            if kind == "json_object":
                body["response_format"] = {"type": "json_object"}
            elif kind == "json_schema":
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "r", "schema": self.SCHEMA}}
            elif kind == "json_sets":
                body["structured_outputs"] = {"json": self.SET_SCHEMA}
            elif kind == "regex":
                body.update(guided_regex=self.REGEX, min_tokens=min(3, max_tokens))
            else:
                body["tools"] = self.TOOLS
                body["tool_choice"] = "required" if kind == "tools_required" else "auto"
        if not stream:
            r = await client.post(self.base + path, json=body)
            if r.status_code != 200:
                # 404: the previous response was evicted; 400: its conversation outgrew the context.
                allowed = {429, 503, 404, 400} if "previous_response_id" in body else {429, 503}
                return self.check_error_body(what, r.status_code, r.text, allowed)
            out = r.json()
            if kind == "responses":
                if out.get("object") != "response" or out.get("status") not in ("completed", "incomplete"):
                    self.fail(what, f"not a finished response: {r.text[:300]}")
                if body["store"]:
                    self.response_ids = (self.response_ids + [out["id"]])[-64:]
                    got = await client.get(self.base + "/v1/responses/" + out["id"])
                    if got.status_code != 200 or got.json().get("id") != out["id"]:
                        self.fail(what, f"stored response not retrievable: {got.status_code} {got.text[:200]}")
                return
            choice = out["choices"][0]
            if choice["finish_reason"] == "tool_calls":
                for call in choice["message"]["tool_calls"]:
                    if not isinstance(json.loads(call["function"]["arguments"]), dict):
                        self.fail(what, f"arguments not an object: {call}")
            elif choice["finish_reason"] == "stop" and kind in ("json_object", "json_schema", "json_sets"):
                value = json.loads(choice["message"]["content"])
                if not isinstance(value, dict):
                    self.fail(what, f"not a JSON object: {choice}")
                elif kind == "json_sets" and any(len(value[k]) != len({json.dumps(v) for v in value[k]})
                                                 for k in ("tags", "ids")):
                    self.fail(what, f"a set repeats an item: {value}")
            elif choice["finish_reason"] == "stop" and kind == "regex":
                if not re.fullmatch(self.REGEX, choice["message"]["content"]):
                    self.fail(what, f"does not match the regex: {choice['message']['content']!r}")
            return
        disconnect_after = rng.choice([None, None, 0, 2])
        async with client.stream("POST", self.base + path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                allowed = {429, 503, 404, 400} if "previous_response_id" in body else {429, 503}
                return self.check_error_body(what, r.status_code, r.text, allowed)
            events, last = 0, None
            async for line in r.aiter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                last = json.loads(line[5:].strip())
                if "error" in last or last.get("type") == "error":
                    return self.fail(what, f"error in stream: {last}")
                events += 1
                if disconnect_after is not None and events > disconnect_after:
                    self.counts["disconnect mid-stream"] += 1
                    return
            if kind == "responses" and (last or {}).get("type") not in ("response.completed", "response.incomplete"):
                self.fail(what, f"the stream ended with {last}")
            if kind != "responses" and not any(c.get("finish_reason") for c in (last or {}).get("choices", [])):
                self.fail(what, f"the stream ended without a finish: {last}")

    async def raw(self, payload: bytes, close_after_send: bool, what: str, allowed: set[int]):
        """Sends bytes on a fresh connection; reads the status unless it hangs up first."""
        self.counts[what] += 1
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            try:
                writer.write(payload)
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                # A server may answer an oversized upload early and close before reading it all;
                # the status is then lost with the connection. Only a body over the limit may.
                if 413 not in allowed:
                    raise
                self.counts[what + " (cut off by the server)"] += 1
                return
            if close_after_send:
                return
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for h in head.split(b"\r\n"):
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":", 1)[1])
            text = (await asyncio.wait_for(reader.readexactly(length), 30)).decode("utf-8", "replace") if length else ""
            self.check_error_body(what, status, text, allowed)
        finally:
            writer.close()

    def request_bytes(self, path, body: bytes, declared_len=None) -> bytes:
        auth = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        return (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n{auth}"
                f"Content-Length: {declared_len if declared_len is not None else len(body)}\r\n\r\n").encode() + body

    async def bad_request(self, client, rng):
        choice = rng.randrange(9)
        path = rng.choice(["/v1/completions", "/v1/chat/completions"])
        base = {"model": self.model, "max_tokens": 4}
        if path.endswith("chat/completions"):
            base["messages"] = [{"role": "user", "content": "hi"}]
        else:
            base["prompt"] = "hi"
        if choice == 0:
            body = json.dumps(base)[: rng.randint(1, 20)].encode()
            return await self.raw(self.request_bytes(path, body), False, "bad: truncated json", {400})
        if choice == 1:
            body = json.dumps(base).encode()
            # Declares more than it sends, then hangs up: the server must not wait forever or leak.
            return await self.raw(self.request_bytes(path, body[: len(body) // 2], len(body)), True,
                                  "bad: body cut short", set())
        if choice == 2:
            field, bad = rng.choice(BAD_VALUES)
            base[field] = rng.choice(bad)
            allowed = {400}
        elif choice == 3:
            base["model"] = "no-such-model"
            allowed = {404}
        elif choice == 4:
            base["max_tokens"] = rng.choice([0, -1, 10**12])
            allowed = {400}
        elif choice == 5:
            if "prompt" in base:
                base["prompt"] = [1] * (self.max_len + 10)
            else:
                base["messages"][0]["content"] = "word " * (self.max_len + 10)
            allowed = {400}
        elif choice == 6:
            base["temperature"] = rng.choice([-1, 3, float("nan")]) if rng.random() < 0.5 else 0
            base["top_p"] = rng.choice([0, 1.5, -0.1])
            allowed = {400}
        elif choice == 7:
            return await self.raw(self.request_bytes(path, b"{" * 10000), False, "bad: nested braces", {400})
        else:
            return await self.raw(self.request_bytes(path, b" " * (9 << 20)), False, "bad: huge body", {400, 413})
        self.counts["bad: fields"] += 1
        try:
            r = await client.post(self.base + path, content=json.dumps(base, allow_nan=True))
        except httpx.HTTPError as e:
            return self.fail("bad: fields", repr(e))
        if r.status_code == 200:
            return self.fail("bad: fields", f"accepted: {json.dumps(base)[:200]}")
        self.check_error_body("bad: fields", r.status_code, r.text, allowed | {429, 503})

    async def misc(self, client, rng):
        choice = rng.randrange(4)
        if choice == 0:
            self.counts["tokenize round trip"] += 1
            text = self.text(rng)
            r = await client.post(self.base + "/tokenize", json={"model": self.model, "prompt": text,
                                                               "add_special_tokens": False})
            if r.status_code != 200:
                return self.fail("tokenize", f"{r.status_code} {r.text}")
            ids = r.json()["tokens"]
            r = await client.post(self.base + "/detokenize", json={"model": self.model, "tokens": ids})
            if r.status_code != 200 or r.json().get("prompt") != text:
                self.fail("detokenize", f"{r.status_code} {r.text[:200]} != {text!r}")
        elif choice == 1:
            self.counts["metrics scrape"] += 1
            r = await client.get(self.base + "/metrics")
            if r.status_code != 200 or "peng:num_requests_running" not in r.text:
                self.fail("metrics", f"{r.status_code}")
        elif choice == 2:
            self.counts["models"] += 1
            r = await client.get(self.base + "/v1/models")
            if r.status_code != 200:
                self.fail("models", f"{r.status_code} {r.text}")
        else:
            self.counts["health"] += 1
            r = await client.get(self.base + "/health")
            if r.status_code != 200:
                self.fail("health", f"{r.status_code} {r.text}")

    def grpc_generate(self, rng_seed: int):
        """One gRPC Generate (blocking; run in a thread), cancelled early half the time."""
        import grpc
        rng = random.Random(rng_seed)
        pb2, pb2_grpc = self.pb
        self.counts["grpc generate"] += 1
        req = pb2.GenerateRequest(text=self.text(rng), max_tokens=rng.choice([1, 8, 32]))
        if rng.random() < 0.25:  # a chat, with tools half the time ("required" calls or "auto")
            req.chat.messages.add(role="user", content=self.text(rng))
            if rng.random() < 0.5:
                req.chat.tools = json.dumps(self.TOOLS)
                req.chat.tool_choice = rng.choice(["required", "auto"])
                req.max_tokens = 48
        elif rng.random() < 0.15:  # a regex, at least min_tokens long
            req.regex = self.REGEX
            req.max_tokens = 32
            req.min_tokens = 3
        if rng.random() < 0.5:
            req.sampling.temperature = rng.choice([0.0, 0.7])
        if rng.random() < 0.3:
            req.sampling.logprobs = rng.randint(0, 3)
        if rng.random() < 0.15:  # score the prompt, sometimes alone
            req.prompt_logprobs = rng.randint(0, 3)
            if rng.random() < 0.5:
                req.max_tokens = 0
                req.min_tokens = 0
        md = [("authorization", f"Bearer {self.args.api_key}")] if self.args.api_key else []
        with grpc.insecure_channel(self.args.grpc) as ch:
            call = pb2_grpc.InferenceStub(ch).Generate(req, metadata=md, timeout=120)
            cancel_after = rng.choice([None, 0, 2])
            first = last = None
            try:
                for i, msg in enumerate(call):
                    if first is None:
                        first = msg
                    last = msg
                    if cancel_after is not None and i >= cancel_after:
                        call.cancel()
                        self.counts["grpc cancel"] += 1
                        return
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.CANCELLED and cancel_after is not None:
                    return
                if e.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                    return
                return self.fail("grpc generate", f"{e.code()} {e.details()}")
            if last is None or last.finish_reason == 0 or last.usage.completion_tokens > req.max_tokens:
                self.fail("grpc generate", f"last message {last}")
            elif last.tool_calls and (last.finish_reason not in (pb2.FINISH_REASON_TOOL_CALLS,
                                                                 pb2.FINISH_REASON_LENGTH) or any(
                    c.name not in ("lookup", "add") or not isinstance(json.loads(c.arguments), dict) for c in last.tool_calls)):
                self.fail("grpc generate", f"tool calls {last}")
            elif req.regex and last.finish_reason == pb2.FINISH_REASON_STOP and last.usage.completion_tokens < 3:
                self.fail("grpc generate", f"min_tokens 3 but {last.usage.completion_tokens} tokens")
            elif req.HasField("prompt_logprobs") and len(first.prompt_logprobs) != last.usage.prompt_tokens - 1:
                self.fail("grpc generate", f"{len(first.prompt_logprobs)} prompt logprobs for "
                                           f"{last.usage.prompt_tokens} prompt tokens")

    async def worker(self, wid: int, deadline: float):
        rng = random.Random(self.args.seed * 1000 + wid)
        async with httpx.AsyncClient(timeout=300, headers=self.headers) as client:
            while time.monotonic() < deadline:
                x = rng.random()
                try:
                    if x < 0.30:
                        await self.generate(client, rng, stream=True)
                    elif x < 0.50:
                        await self.generate(client, rng, stream=False)
                    elif x < 0.58:
                        await self.structured(client, rng)
                    elif x < 0.65:
                        await self.bad_request(client, rng)
                    elif x < 0.80 and self.pb is not None:
                        await asyncio.to_thread(self.grpc_generate, rng.randrange(2**31))
                    else:
                        await self.misc(client, rng)
                except (httpx.HTTPError, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                    self.fail("transport", repr(e))

    # ---- setup and final checks ---------------------------------------------------------
    def load_grpc(self):
        from grpc_tools import protoc
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = tempfile.mkdtemp(prefix="peng-soak-")
        assert protoc.main(["grpc_tools.protoc", f"-I{os.path.join(root, 'proto')}", f"--python_out={out}",
                            f"--grpc_python_out={out}", "peng/v1/inference.proto"]) == 0
        sys.path.insert(0, out)
        self.pb = (importlib.import_module("peng.v1.inference_pb2"), importlib.import_module("peng.v1.inference_pb2_grpc"))

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in httpx.get(self.base + "/metrics", headers=self.headers, timeout=30).text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main_async(args) -> int:
    s = Soak(args)
    models = httpx.get(s.base + "/v1/models", headers=s.headers, timeout=30).json()["data"]
    s.model = models[0]["id"]
    s.max_len = int(models[0].get("max_model_len") or s.max_len)
    if args.grpc:
        s.load_grpc()
    start = time.monotonic()
    deadline = start + args.duration
    rss: list[tuple[float, int]] = []

    async def sample_rss():
        while time.monotonic() < deadline:
            if args.pid:
                rss.append((time.monotonic() - start, rss_kib(args.pid)))
            await asyncio.sleep(5)

    await asyncio.gather(sample_rss(), *(s.worker(i, deadline) for i in range(args.concurrency)))
    elapsed = time.monotonic() - start

    # Quiet: everything must drain and free.
    settled = None
    for _ in range(120):
        m = s.metrics()
        if (m.get("peng:num_requests_running", -1) == 0 and m.get("peng:num_requests_waiting", -1) == 0
                and m.get("peng:kv_cache_usage_perc", -1) == 0):
            settled = m
            break
        await asyncio.sleep(0.5)
    if settled is None:
        s.fail("settle", f"60 s after the load: running {m.get('peng:num_requests_running')}, waiting "
                         f"{m.get('peng:num_requests_waiting')}, kv {m.get('peng:kv_cache_usage_perc')}")
    ready = httpx.get(s.base + "/ready", timeout=30)
    if ready.status_code != 200:
        s.fail("ready", f"{ready.status_code} {ready.text}")
    if args.pid:
        try:
            os.kill(args.pid, 0)
        except OSError:
            s.fail("alive", f"pid {args.pid} is gone")
    growth = None
    if len(rss) >= 8:
        q = len(rss) // 4
        second = sum(v for _, v in rss[q:2 * q]) / q
        last = sum(v for _, v in rss[-q:]) / q
        growth = (last - second) / second
        if growth > args.max_rss_growth:
            s.fail("memory", f"RSS grew {growth:.1%} from the second quarter to the last "
                             f"({second / 1024:.0f} → {last / 1024:.0f} MiB)")

    print(f"soak: {elapsed:.0f} s, {args.concurrency} workers, seed {args.seed}")
    for k, v in sorted(s.counts.items()):
        print(f"  {k:32s} {v}")
    if rss:
        print(f"  RSS MiB: first {rss[0][1] / 1024:.0f}, max {max(v for _, v in rss) / 1024:.0f}, "
              f"last {rss[-1][1] / 1024:.0f}" + (f", growth second→last quarter {growth:+.1%}" if growth is not None else ""))
    if s.failures:
        print(f"FAILED: {len(s.failures)} shown")
        for f in s.failures:
            print("  " + f)
        return 1
    print("OK: every answer well-formed, no 5xx, drained to zero, ready")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--grpc", default=None, help="host:port of the gRPC frontend (omit to skip gRPC)")
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--concurrency", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pid", type=int, default=0, help="the server's pid: liveness and RSS checks")
    ap.add_argument("--max-rss-growth", type=float, default=0.10)
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
