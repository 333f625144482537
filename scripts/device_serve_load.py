#!/usr/bin/env python3
"""Closed-loop load on a running `peng serve`, standard library only.

The device machine has Python and PyTorch but not the benchmark's dependencies (aiohttp,
tokenizers), so scripts/device-check.sh measures the CUDA worker's serving throughput with
this instead of tests/bench/serve_bench.py. Each request is a streamed /v1/completions call
whose prompt is a list of token ids (no tokenizer needed) with ignore_eos, so every request
generates exactly --max-tokens tokens; usage comes from stream_options.include_usage.

  device_serve_load.py --base-url http://127.0.0.1:8000 --concurrency 1,16,64 \
      --requests 8,64,128 --prompt-tokens 128 --max-tokens 128

Prints one markdown row per concurrency: output tok/s, mean and p99 TTFT, median ITL, and the
ratio of output throughput to concurrency 1's.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse


def one_request(host, port, model, prompt, max_tokens, timeout):
    """Returns (ttft_s, token_times, completion_tokens) for one streamed completion."""
    body = json.dumps({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    })
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    times, usage = [], None
    for raw in resp:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            raise RuntimeError(f"stream error: {event['error']}")
        if event.get("usage"):
            usage = event["usage"]
        if event.get("choices"):
            times.append(time.perf_counter() - t0)
    conn.close()
    if usage is None:
        raise RuntimeError("stream ended without usage")
    return (times[0] if times else float("nan")), times, usage["completion_tokens"]


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def run_level(args, host, port, model, concurrency, n_requests, rng):
    prompts = [[rng.randrange(1000, 40000) for _ in range(args.prompt_tokens)]
               for _ in range(n_requests)]
    lock = threading.Lock()
    next_index = [0]
    ttfts, itls, tokens, errors = [], [], [0], []

    def worker():
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= n_requests:
                return
            try:
                ttft, times, n = one_request(host, port, model, prompts[i], args.max_tokens,
                                             args.timeout)
            except Exception as e:  # recorded and reported; the level still completes
                with lock:
                    errors.append(str(e))
                continue
            with lock:
                ttfts.append(ttft)
                itls.extend(b - a for a, b in zip(times, times[1:]))
                tokens[0] += n

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency, "requests": n_requests, "errors": len(errors),
        "first_error": errors[0] if errors else "", "wall_s": wall,
        "output_tok_s": tokens[0] / wall, "completion_tokens": tokens[0],
        "ttft_mean_ms": 1000 * sum(ttfts) / max(len(ttfts), 1),
        "ttft_p99_ms": 1000 * percentile(ttfts, 99),
        "itl_p50_ms": 1000 * percentile(itls, 50),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="", help="model id (default: the first of /v1/models)")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--requests", default="8,64,128", help="requests per level (one per level)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--label", default="peng")
    ap.add_argument("--json", default="", help="append one JSON line per level here")
    args = ap.parse_args()

    url = urllib.parse.urlparse(args.base_url)
    host, port = url.hostname, url.port or 80
    model = args.model
    if not model:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/v1/models")
        model = json.loads(conn.getresponse().read())["data"][0]["id"]
    levels = [int(c) for c in args.concurrency.split(",")]
    counts = [int(n) for n in args.requests.split(",")]
    if len(counts) != len(levels):
        sys.exit("--requests needs one count per --concurrency level")

    rng = random.Random(args.seed)
    print(f"| {args.label} | concurrency | requests | output tok/s | vs c=1 | TTFT mean ms | "
          "TTFT p99 ms | ITL p50 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = None
    failed = False
    for c, n in zip(levels, counts):
        r = run_level(args, host, port, model, c, n, rng)
        base = base or r["output_tok_s"]
        print(f"| {args.label} | {c} | {n} | {r['output_tok_s']:,.1f} | "
              f"{r['output_tok_s'] / base:.2f}x | {r['ttft_mean_ms']:.1f} | "
              f"{r['ttft_p99_ms']:.1f} | {r['itl_p50_ms']:.2f} | {r['errors']} |", flush=True)
        if r["errors"]:
            print(f"first error: {r['first_error']}", file=sys.stderr)
            failed = True
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"label": args.label, **r}) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
