#!/usr/bin/env python3
"""LeanKV in `peng serve` (issue 5): greedy agreement with dense KV, and capacity and throughput
at a fixed KV budget, dense vs LeanKV, measured side by side on this machine.

1. Agreement: the same --agree-prompts ShareGPT prompts (chat, temperature 0, up to
   --agree-tokens tokens, stopping at EOS) through a dense f16 server and through each
   compressed mode (one K8V4 tier; LeanKV with the --alphas pairs), and through dense bf16 as a
   control: how often a 135M model's greedy path flips under rounding alone. Per prompt, the generated
   tokens that match dense before the first difference, as a fraction of dense's answer;
   reported as the mean and the count of answers identical to dense.
2. Fixed budget: the same server config but for kv (engine.kv_budget = --budget), closed loop
   at --concurrency with tests/bench/serve_bench.py (ShareGPT prompts, EOS ignored). Reports
   output tok/s, the peak of peng:num_requests_running (polled from /metrics while the load
   runs), preemptions, and LeanKV's KV bytes/token and compression at the end of the run.

Both parts run servers one after another (each alone on the machine), on free loopback ports;
logs go to /tmp/peng_leankv_<mode>.log. With --record the tables are appended to
docs/BENCHMARKS.md with the date, machine and command.

  .venv/bin/python tests/bench/run_leankv_bench.py [--budget 64MiB] [--concurrency 64] [--record]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import shlex
import socket
import sys
import threading
import time

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import serve_bench  # noqa: E402
from machine_info import cpu_name  # noqa: E402
from run_serve_bench import Server  # noqa: E402

MODEL_ID = "SmolLM2-135M-Instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kv_config(mode: str) -> tuple[str, str]:
    """(kv section, engine.kv_format) of a mode name: dense, k8v8/k8v4/k4v2 (one quantized
    tier) or leankv-<alpha_prune>-<alpha_quant>."""
    if mode in ("dense", "f32", "bf16"):  # dense f16, or another dense format (a control)
        return "{mode: dense}", "f16" if mode == "dense" else mode
    if mode in ("k8v8", "k8v4", "k4v2"):
        return "{mode: quantized}", mode
    _, ap, aq = mode.split("-")
    return f"{{mode: leankv, alpha_prune: {ap}, alpha_quant: {aq}}}", "f16"


def start(args, mode: str, budget: str, tmp: str) -> tuple[Server, str]:
    port = free_port()
    kv, kv_format = kv_config(mode)
    config = os.path.join(tmp, f"{mode}.yaml")
    with open(config, "w") as f:
        f.write(f"model: {{path: {args.model}, name: {MODEL_ID}}}\n"
                f"server: {{host: 127.0.0.1, http_port: {port}, grpc_port: 0}}\n"
                f"engine: {{kv_budget: {budget}, kv_format: {kv_format}, threads: {args.threads}}}\n"
                f"kv: {kv}\n"
                f"scheduler: {{max_num_seqs: 256, max_waiting_requests: 4096}}\n")
    url = f"http://127.0.0.1:{port}"
    return Server(mode, [args.peng, "serve", "--config", config], url + "/ready",
                  f"/tmp/peng_leankv_{mode}.log"), url


def prompts(args) -> list[str]:
    tok = serve_bench.load_tokenizer(serve_bench.DEFAULT_TOKENIZER)
    entries = serve_bench.read_sharegpt(None)
    reqs = serve_bench.sample_sharegpt(entries, args.agree_prompts, tok, args.seed + 1,
                                       fixed_output_len=args.agree_tokens, max_input_len=512)
    return [r.prompt for r in reqs]


async def generate_all(url: str, texts: list[str], max_tokens: int) -> list[list[str]]:
    async with httpx.AsyncClient(timeout=1800, trust_env=False) as client:
        async def one(text):
            r = await client.post(url + "/v1/chat/completions", json={
                "model": MODEL_ID, "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens, "temperature": 0, "logprobs": True})
            r.raise_for_status()
            return [t["token"] for t in r.json()["choices"][0]["logprobs"]["content"]]
        return await asyncio.gather(*(one(t) for t in texts))


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10, trust_env=False).text
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(peng:[a-z_]+) (\S+)$", line)
        if m:
            out[m[1]] = float(m[2])
    return out


def agreement(args, tmp) -> list[str]:
    texts = prompts(args)
    outs = {}
    for mode in ["dense", "bf16", "k8v4", *args.lean_modes]:
        server, url = start(args, mode, args.agree_budget, tmp)
        with server:
            t0 = time.time()
            outs[mode] = asyncio.run(generate_all(url, texts, args.agree_tokens))
            print(f"agreement: {mode}: {len(texts)} prompts in {time.time() - t0:.0f} s", flush=True)
    lines = ["| KV mode | mean matching prefix (fraction of dense's answer) | answers identical to dense |",
             "|---|---|---|"]
    ref = outs["dense"]
    for mode, got in outs.items():
        if mode == "dense":
            continue
        prefixes, same = [], 0
        for a, b in zip(ref, got):
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            prefixes.append(n / len(a))
            same += a == b
        lengths = sum(len(a) for a in ref) / len(ref)
        lines.append(f"| {mode} | {100 * sum(prefixes) / len(prefixes):.1f}% | {same} / {len(prefixes)} |")
    lines.append(f"\n(dense answers: {lengths:.0f} tokens on average; the prefix is measured against "
                 f"dense's own length)")
    return lines


def capacity(args, tmp) -> list[str]:
    rows = []
    for mode in ["dense", *args.lean_modes[:1]]:
        server, url = start(args, mode, args.budget, tmp)
        with server:
            samples, stop = [], threading.Event()

            def poll():
                while not stop.is_set():
                    try:
                        samples.append(metrics(url).get("peng:num_requests_running", 0))
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.2)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            bench = serve_bench.make_parser().parse_args([
                "--base-url", url, "--endpoint", "/v1/completions", "--dataset-name", "sharegpt",
                "--num-prompts", str(args.num_prompts), "--seed", str(args.seed),
                "--max-concurrency", str(args.concurrency), "--ignore-eos",
                "--max-output-len", str(args.max_output_len), "--num-warmups", "1"])
            result = serve_bench.run(bench, quiet=True)
            stop.set()
            poller.join()
            m = metrics(url)
        # Time-averaged running requests over the load's middle half (ramp-up and drain cut).
        mid = samples[len(samples) // 4: 3 * len(samples) // 4] or samples
        mean = sum(mid) / max(len(mid), 1)
        rows.append((mode, result, mean, max(samples, default=0), m))
        print(f"capacity: {mode}: {result['output_throughput']:.1f} out tok/s, running mean {mean:.1f} "
              f"peak {max(samples, default=0):.0f}, preemptions {m.get('peng:num_preemptions_total', 0):.0f}, "
              f"failed {result['failed']}", flush=True)
    base = rows[0]
    lines = ["| KV mode | output tok/s | vs dense | running requests (mean) | vs dense | peak running | "
             "preemptions | KV bytes/token | compression vs fp16 | failed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, r, mean, peak, m in rows:
        lines.append(
            f"| {mode} | {r['output_throughput']:.1f} | {r['output_throughput'] / base[1]['output_throughput']:.2f}x"
            f" | {mean:.1f} | {mean / max(base[2], 1e-9):.2f}x | {peak:.0f}"
            f" | {m.get('peng:num_preemptions_total', 0):.0f}"
            f" | {m.get('peng:kv_bytes_per_token', 0):.0f} | {m.get('peng:kv_compression_ratio', 0):.2f}x"
            f" | {r['failed']} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--alphas", default="0.0:1.0,0.02:0.02,0.02:1.0",
                    help="LeanKV (alpha_prune:alpha_quant) pairs; the first also runs the capacity part")
    ap.add_argument("--agree-prompts", type=int, default=50)
    ap.add_argument("--agree-tokens", type=int, default=128)
    ap.add_argument("--agree-budget", default="512MiB", help="KV budget of the agreement runs (no memory pressure)")
    ap.add_argument("--budget", default="64MiB", help="KV budget of the capacity runs")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=200)
    ap.add_argument("--max-output-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--record", action="store_true", help="append the tables to docs/BENCHMARKS.md")
    args = ap.parse_args()
    args.peng = os.environ.get("PENG_BIN", os.path.join(ROOT, "build", "peng"))
    args.lean_modes = [f"leankv-{p.split(':')[0]}-{p.split(':')[1]}" for p in args.alphas.split(",")]

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        agree = [] if args.skip_agreement else agreement(args, tmp)
        cap = [] if args.skip_capacity else capacity(args, tmp)
    for table in (agree, cap):
        if table:
            print("\n".join(table) + "\n")
    if args.record:
        now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        cmd = shlex.join(["tests/bench/run_leankv_bench.py", *sys.argv[1:]])
        entry = [f"\n### LeanKV in peng serve — {now}\n",
                 f"- Command: `.venv/bin/python {cmd}`",
                 f"- Machine: {cpu_name()}, {os.cpu_count()} cores; model `{os.path.basename(args.model)}`; "
                 f"{args.threads} threads; LeanKV pages from the page-size rule over [768, 2048] B, window 64\n"]
        if agree:
            entry += [f"Greedy agreement with dense f16 KV: {args.agree_prompts} ShareGPT prompts (chat, "
                      f"seed {args.seed + 1}), up to {args.agree_tokens} tokens each (stopping at EOS), KV budget "
                      f"{args.agree_budget} (no preemption):\n", *agree, ""]
        if cap:
            entry += [f"Fixed KV budget {args.budget}: closed loop, {args.concurrency} concurrent clients, "
                      f"{args.num_prompts} ShareGPT prompts (seed {args.seed}), outputs capped at "
                      f"{args.max_output_len} tokens, EOS ignored; running requests = "
                      f"peng:num_requests_running polled every 0.2 s (mean over the middle half of "
                      f"the run, and peak):\n", *cap, ""]
        with open(os.path.join(ROOT, "docs", "BENCHMARKS.md"), "a") as f:
            f.write("\n".join(entry) + "\n")
        print("recorded in docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
