#!/usr/bin/env python3
"""What JSON mode, structured output and tool calls cost: the same chat requests as plain text,
with response_format json_object, with a json_schema (a record of name, age, role enum, nested
address and a list), with the same schema whose list is a set (uniqueItems), and with two tools and tool_choice "required" (one call), one at a time
(concurrency 1), against a running server. Prints a table of decode rate (generated tokens /
(end - first token); tool calls arrive whole at the end, so not for them), end-to-end rate
(generated tokens / request time), mean time to first token and how many outputs ended by
themselves as one JSON object or as calls, then the ratios to plain text.

  .venv/bin/python tests/bench/json_mode_bench.py --base-url http://127.0.0.1:8000 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import openai

ASKS = ["Give me a JSON object describing a cat with a name and an age.",
        "Describe the city of Paris as JSON.",
        "Return a JSON object with three fruits and their colours.",
        "List the planets of the solar system in JSON.",
        "A JSON object for a book: title, author, year.",
        "Write a JSON record for an employee."]


SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "role": {"enum": ["admin", "user", "guest"]},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                "required": ["city", "country"]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}},
    "required": ["name", "age", "role", "address", "tags"]}
SET_SCHEMA = {**SCHEMA, "properties": {**SCHEMA["properties"], "tags": {**SCHEMA["properties"]["tags"], "uniqueItems": True}}}
FORMATS = {"text": None, "json_object": {"type": "json_object"},
           "json_schema": {"type": "json_schema", "json_schema": {"name": "record", "schema": SCHEMA}},
           # the same record with its tags a set (uniqueItems over strings: UniqueItems in
           # engine/json_constraint.h simulates the tokens that can close a tag)
           "json_schema_set": {"type": "json_schema", "json_schema": {"name": "record", "schema": SET_SCHEMA}},
           "tools": None}
TOOLS = [{"type": "function", "function": {"name": "save_record", "description": "Save a record",
                                           "parameters": SCHEMA}},
         {"type": "function", "function": {"name": "search", "description": "Search the web", "parameters": {
             "type": "object", "properties": {"query": {"type": "string", "maxLength": 80}}, "required": ["query"]}}}]


def run(client, model: str, mode: str, max_tokens: int, seeds: int) -> dict:
    tokens = e2e_tokens = 0
    decode_s = e2e_s = 0.0
    ttfts, objects, ended = [], 0, 0
    for ask in ASKS:
        for seed in range(seeds):
            extra = {"response_format": FORMATS[mode]} if FORMATS[mode] else {}
            if mode == "tools":
                extra = {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
            calls = []
            t0 = time.perf_counter()
            first = None
            text, finish, usage = "", None, None
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": ask}], max_tokens=max_tokens,
                temperature=0.8, seed=seed, stream=True, stream_options={"include_usage": True}, **extra)
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for c in chunk.choices:
                    if c.delta.content:
                        first = first or time.perf_counter()
                        text += c.delta.content
                    calls += c.delta.tool_calls or []
                    finish = c.finish_reason or finish
            end = time.perf_counter()
            e2e_tokens += usage.completion_tokens
            e2e_s += end - t0
            if mode == "tools":  # calls come whole at the end: no decode rate or TTFT
                ended += finish == "tool_calls"
                objects += bool(calls) and all(isinstance(json.loads(c.function.arguments), dict) for c in calls)
                continue
            ttfts.append((first or end) - t0)
            if usage.completion_tokens > 1 and first is not None:
                tokens += usage.completion_tokens - 1
                decode_s += end - first
            if finish == "stop":
                ended += 1
                try:
                    objects += isinstance(json.loads(text), dict)
                except json.JSONDecodeError:
                    pass
    return {"tok_s": tokens / decode_s if decode_s else None, "e2e_tok_s": e2e_tokens / e2e_s,
            "ttft_ms": 1e3 * statistics.mean(ttfts) if ttfts else None, "ended": ended,
            "objects": objects, "requests": len(ASKS) * seeds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="plain and JSON runs, alternating")
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url + "/v1", api_key="x", timeout=300, max_retries=0)
    print("| round | mode | decode tok/s | end-to-end tok/s | mean TTFT ms | ended by themselves | "
          "of which JSON objects (tools: calls) |")
    print("|---|---|---|---|---|---|---|")
    rates = {mode: [] for mode in FORMATS}
    e2e = {mode: [] for mode in FORMATS}
    fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    for r in range(args.rounds):
        for mode in FORMATS:
            m = run(client, args.model, mode, args.max_tokens, args.seeds)
            rates[mode].append(m["tok_s"])
            e2e[mode].append(m["e2e_tok_s"])
            print(f"| {r + 1} | {mode} | {fmt(m['tok_s'])} | {m['e2e_tok_s']:.1f} | {fmt(m['ttft_ms'])} | "
                  f"{m['ended']}/{m['requests']} | {m['objects']} |", flush=True)
    print()
    for mode in ("json_object", "json_schema", "json_schema_set"):
        print(f"{mode} decode rate / plain: {statistics.mean(rates[mode]) / statistics.mean(rates['text']):.3f}")
    for mode in ("json_object", "json_schema", "json_schema_set", "tools"):
        print(f"{mode} end-to-end rate / plain: {statistics.mean(e2e[mode]) / statistics.mean(e2e['text']):.3f}")


if __name__ == "__main__":
    main()
