#!/usr/bin/env python3
"""What JSON mode costs: the same chat requests with and without response_format json_object,
one at a time (concurrency 1), against a running server. Prints a table of decode rate
(generated tokens / (end - first token)), mean time to first token and how many outputs ended
by themselves as one JSON object (Python's json module is the judge), then the ratio.

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


def run(client, model: str, json_mode: bool, max_tokens: int, seeds: int) -> dict:
    tokens = 0
    decode_s = 0.0
    ttfts, objects, ended = [], 0, 0
    for ask in ASKS:
        for seed in range(seeds):
            extra = {"response_format": {"type": "json_object"}} if json_mode else {}
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
                    finish = c.finish_reason or finish
            end = time.perf_counter()
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
    return {"tok_s": tokens / decode_s, "ttft_ms": 1e3 * statistics.mean(ttfts), "ended": ended,
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
    print("| round | mode | decode tok/s | mean TTFT ms | ended by themselves | of which JSON objects |")
    print("|---|---|---|---|---|---|")
    rates = {False: [], True: []}
    for r in range(args.rounds):
        for mode in (False, True):
            m = run(client, args.model, mode, args.max_tokens, args.seeds)
            rates[mode].append(m["tok_s"])
            print(f"| {r + 1} | {'json_object' if mode else 'text'} | {m['tok_s']:.1f} | {m['ttft_ms']:.1f} | "
                  f"{m['ended']}/{m['requests']} | {m['objects']} |", flush=True)
    print(f"\nJSON mode decode rate / plain: {statistics.mean(rates[True]) / statistics.mean(rates[False]):.3f}")


if __name__ == "__main__":
    main()
