#!/usr/bin/env python3
"""Peng vs llama-cpp-python's server: serving throughput and TTFT under load, one markdown table.

For each load point — closed loop at each --concurrencies value (serve_bench --max-concurrency
C, all requests queued at once) and open loop at each --request-rates value (Poisson arrivals,
or gamma with --burstiness) — runs tests/bench/serve_bench.py against Peng and against the peer,
alternately (the order flips at every point), with the same prompts for both servers, and
prints output tokens/s and p99 TTFT per point with the Peng/peer ratios and the issue's goals.
With --record the table is appended to docs/BENCHMARKS.md with the date, machine and command.

  # both servers already running (Peng on 8000, tests/bench/serve_peer.sh on 8001):
  .venv/bin/python tests/bench/run_serve_bench.py --peng-url http://127.0.0.1:8000 \\
      --peer-url http://127.0.0.1:8001 --concurrencies 1,4,16,64 --request-rates 0.5
  # or let the driver start and stop them:
  .venv/bin/python tests/bench/run_serve_bench.py --start-peng --start-peer --record

A closed-loop point sends max(--min-prompts, min(--prompts-per-concurrency * C, --max-prompts))
prompts: enough waves that the start (every slot prefilling at once) and the drain (the last
requests alone) are a small part of the run; an open-loop point sends --rate-prompts prompts.
Every run (point and round) draws prompts of its own, its warm-ups too, so no server's prefix
cache holds a measured prompt beforehand. Requests use --ignore-eos by default, so both servers
generate exactly the sampled number of tokens and their output tokens/s are comparable. The
machines are shared and noisy: --rounds N repeats every point N times (interleaved) and reports
medians. --start-peng / --start-peer log to /tmp/peng_serve.log and /tmp/serve_peer.log.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import serve_bench  # noqa: E402
from machine_info import cpu_name  # noqa: E402


def http_ok(url, timeout=2.0):
    import httpx
    try:
        return httpx.get(url, timeout=timeout, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


class Server:
    """Starts a server command in its own process group, waits for GET ready_url, stops it."""

    def __init__(self, name, cmd, ready_url, log_path, timeout=300):
        self.name, self.cmd, self.ready_url, self.log_path, self.timeout = name, cmd, ready_url, log_path, timeout
        self.proc = None

    def __enter__(self):
        if http_ok(self.ready_url):
            sys.exit(f"run_serve_bench: something already answers {self.ready_url}; stop it or "
                     f"drop --start-{self.name}")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            if http_ok(self.ready_url):
                print(f"run_serve_bench: {self.name} ready ({shlex.join(self.cmd)})", flush=True)
                return self
            time.sleep(0.5)
        self.__exit__()
        with open(self.log_path) as f:
            tail = f.read()[-3000:]
        sys.exit(f"run_serve_bench: {self.name} did not become ready; log {self.log_path}:\n{tail}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def bench_args(args, base_url, num_prompts, concurrency=None, rate=float("inf"), result_file=None):
    argv = ["--base-url", base_url, "--endpoint", args.endpoint, "--dataset-name", args.dataset_name,
            "--num-prompts", str(num_prompts), "--seed", str(args.seed),
            "--max-input-len", str(args.max_input_len), "--max-output-len", str(args.max_output_len),
            "--random-input-len", str(args.random_input_len),
            "--random-output-len", str(args.random_output_len),
            "--request-rate", str(rate), "--burstiness", str(args.burstiness),
            "--num-warmups", str(args.num_warmups), "--metric-percentiles", "50,90,99"]
    if args.model:
        argv += ["--model", args.model]
    if args.dataset_path:
        argv += ["--dataset-path", args.dataset_path]
    if concurrency:
        argv += ["--max-concurrency", str(concurrency)]
    if args.ignore_eos:
        argv += ["--ignore-eos"]
    if result_file:
        argv += ["--result-file", result_file, "--save-detailed"]
    return serve_bench.make_parser().parse_args(argv)


def load_points(concurrencies, rates, min_prompts, prompts_per_concurrency, max_prompts, rate_prompts):
    """(kind, value, prompts) per load point: closed loop ("c", C, n) then open loop ("r", rate, n)."""
    points = [("c", c, max(min_prompts, min(prompts_per_concurrency * c, max_prompts))) for c in concurrencies]
    return points + [("r", r, rate_prompts) for r in rates]


def plan_runs(points, rounds, num_warmups):
    """Every run (point x round, rounds outermost) and its prompt slices, (warm-up start,
    measured start, measured end) into one sample: each run gets prompts of its own, warm-ups
    included, the same for both servers, so a prompt measured once never meets a prefix cache
    that already holds it (the c=1 point would otherwise pre-fill the cache for the points after
    it). Returns (runs, slices, prompts needed)."""
    runs = [(p, rnd) for rnd in range(rounds) for p in points]
    slices, total = [], 0
    for (_, _, n), _ in runs:
        slices.append((total, total + num_warmups, total + num_warmups + n))
        total += num_warmups + n
    return runs, slices, total


def fmt(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "—"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peng-url", default="http://127.0.0.1:8000")
    ap.add_argument("--peer-url", default="http://127.0.0.1:8001")
    ap.add_argument("--only", choices=["peng", "peer"], default=None, help="benchmark one server")
    ap.add_argument("--start-peng", action="store_true",
                    help="start Peng (--peng-cmd) for the run and stop it afterwards")
    ap.add_argument("--peng-cmd", default="build/peng serve --config configs/default.yaml")
    ap.add_argument("--start-peer", action="store_true",
                    help="start tests/bench/serve_peer.sh for the run and stop it afterwards")
    ap.add_argument("--concurrencies", default="1,4,16,64")
    ap.add_argument("--request-rates", default="0.5", help="open-loop points, req/s ('' = none)")
    ap.add_argument("--burstiness", type=float, default=1.0)
    ap.add_argument("--min-prompts", type=int, default=32)
    ap.add_argument("--prompts-per-concurrency", type=int, default=8)
    ap.add_argument("--max-prompts", type=int, default=128,
                    help="cap on a closed-loop point's prompts (the peer needs ~1.5 s per request)")
    ap.add_argument("--rate-prompts", type=int, default=32)
    ap.add_argument("--endpoint", default="/v1/completions",
                    choices=["/v1/completions", "/v1/chat/completions"])
    ap.add_argument("--model", default=None, help="model id (default: each server's first)")
    ap.add_argument("--dataset-name", default="sharegpt", choices=["sharegpt", "random"])
    ap.add_argument("--dataset-path", default=None)
    ap.add_argument("--max-input-len", type=int, default=512)
    ap.add_argument("--max-output-len", type=int, default=128)
    ap.add_argument("--random-input-len", type=int, default=256)
    ap.add_argument("--random-output-len", type=int, default=128)
    ap.add_argument("--tokenizer", default=serve_bench.DEFAULT_TOKENIZER)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-warmups", type=int, default=2)
    ap.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                    help="let requests stop at EOS (output lengths may then differ per server)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs per server and point; the table shows the median")
    ap.add_argument("--result-dir", default=None, help="save every run's JSON here")
    ap.add_argument("--record", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = ap.parse_args()
    # The peer, its server and the ShareGPT data are benchmark-only installs (quick when present).
    subprocess.run(["bash", os.path.join(ROOT, "tests", "bench", "install_peer.sh")], check=True)

    servers = {"peng": args.peng_url, "peer": args.peer_url}
    if args.only:
        servers = {args.only: servers[args.only]}
    concurrencies = [int(c) for c in args.concurrencies.split(",") if c.strip()]
    rates = [float(r) for r in args.request_rates.split(",") if r.strip()]
    points = load_points(concurrencies, rates, args.min_prompts, args.prompts_per_concurrency,
                         args.max_prompts, args.rate_prompts)
    if args.result_dir:
        os.makedirs(args.result_dir, exist_ok=True)

    tokenizer = serve_bench.load_tokenizer(args.tokenizer)
    runs, slices, total = plan_runs(points, args.rounds, args.num_warmups)
    template = bench_args(args, "", total)
    all_requests = serve_bench.load_requests(template, tokenizer)
    if len(all_requests) < total:
        sys.exit(f"run_serve_bench: the dataset gave {len(all_requests)} prompts, {total} needed")
    print(f"run_serve_bench: {len(all_requests)} {args.dataset_name} prompts "
          f"(mean {sum(r.prompt_len for r in all_requests) / len(all_requests):.0f} prompt tokens, "
          f"mean {sum(r.expected_output_len for r in all_requests) / len(all_requests):.0f} output "
          f"tokens), tokenizer: {tokenizer.name}", flush=True)

    started = []
    try:
        if args.start_peer and "peer" in servers:
            started.append(Server("peer", ["bash", "tests/bench/serve_peer.sh"],
                                  servers["peer"].rstrip("/") + "/v1/models", "/tmp/serve_peer.log").__enter__())
        if args.start_peng and "peng" in servers:
            started.append(Server("peng", shlex.split(args.peng_cmd),
                                  servers["peng"].rstrip("/") + "/ready", "/tmp/peng_serve.log").__enter__())
        for name, url in servers.items():
            if not http_ok(url.rstrip("/") + "/v1/models", timeout=10):
                sys.exit(f"run_serve_bench: no {name} server answers {url}/v1/models")

        results = {}  # (kind, value) -> {server: result}
        for i, ((kind, value, n), rnd) in enumerate(runs):
            w0, m0, m1 = slices[i]
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for name in order:
                label = (f"{name}-c{value}" if kind == "c" else f"{name}-r{value:g}") + (
                    f"-round{rnd}" if args.rounds > 1 else "")
                rf = os.path.join(args.result_dir, f"{label}.json") if args.result_dir else None
                a = bench_args(args, servers[name], n, concurrency=value if kind == "c" else None,
                               rate=value if kind == "r" else float("inf"), result_file=rf)
                res = serve_bench.run(a, all_requests[m0:m1], tokenizer, quiet=True,
                                      warmup_requests=all_requests[w0:m0])
                results.setdefault((kind, value), {}).setdefault(name, []).append(res)
                print(f"  {label}: {res['completed']}/{n} ok, {res['duration']:.1f} s, "
                      f"{res['output_throughput']:.1f} out tok/s, p99 TTFT {res['p99_ttft_ms']:.0f} ms, "
                      f"median TPOT {res['median_tpot_ms']:.1f} ms", flush=True)
    finally:
        for s in reversed(started):
            s.__exit__()

    def get(kind, value, name, key):
        rs = results.get((kind, value), {}).get(name)
        return None if not rs else statistics.median(r[key] for r in rs)

    lines = ["| load | prompts | Peng out tok/s | peer out tok/s | Peng / peer | Peng p99 TTFT ms "
             "| peer p99 TTFT ms | peer / Peng TTFT | failed (Peng/peer) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, value, n in points:
        label = f"concurrency {value}" if kind == "c" else f"{value:g} req/s" + (
            f" (burstiness {args.burstiness:g})" if args.burstiness != 1.0 else " (Poisson)")
        pt, lt = get(kind, value, "peng", "output_throughput"), get(kind, value, "peer", "output_throughput")
        pf, lf = get(kind, value, "peng", "p99_ttft_ms"), get(kind, value, "peer", "p99_ttft_ms")
        fails = f"{fmt(get(kind, value, 'peng', 'failed'), 'g')}/{fmt(get(kind, value, 'peer', 'failed'), 'g')}"
        lines.append(f"| {label} | {n} | {fmt(pt)} | {fmt(lt)} | {ratio(pt, lt)} | {fmt(pf, '.0f')} "
                     f"| {fmt(lf, '.0f')} | {ratio(lf, pf)} | {fails} |")
    table = "\n".join(lines)

    goals = []
    c1, c16 = get("c", 1, "peng", "output_throughput"), get("c", 16, "peng", "output_throughput")
    if c1 and c16:
        goals.append(f"Peng c=16 / c=1 output tok/s: {c16 / c1:.2f}x (goal ≥ 4x)")
    p16 = get("c", 16, "peer", "output_throughput")
    if c16 and p16:
        goals.append(f"Peng / peer at c=16: {c16 / p16:.2f}x (goal ≥ 2x)")
    for r in rates:
        pf, lf = get("r", r, "peng", "p99_ttft_ms"), get("r", r, "peer", "p99_ttft_ms")
        if pf is not None and lf is not None:
            goals.append(f"p99 TTFT at {r:g} req/s: Peng {pf:.0f} ms vs peer {lf:.0f} ms "
                         f"(goal: below the peer's — {'met' if pf < lf else 'not met'})")
    print()
    print(table)
    for g in goals:
        print(f"- {g}")

    if args.record:
        try:
            import llama_cpp
            peer_version = llama_cpp.__version__
        except ImportError:
            peer_version = "?"
        mean_in = sum(r.prompt_len for r in all_requests) / len(all_requests)
        mean_out = sum(r.expected_output_len for r in all_requests) / len(all_requests)
        now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        cmd = ".venv/bin/python tests/bench/run_serve_bench.py " + shlex.join(sys.argv[1:])
        entry = (f"\n### Serving: Peng vs llama-cpp-python server — {now}\n\n"
                 f"- Command: `{cmd.strip()}`\n"
                 f"- Machine: {cpu_name()}, {os.cpu_count()} cores; model `SmolLM2-135M-Instruct.Q4_1.gguf`; "
                 f"both servers on 2 threads, run alternately with the same prompts (each run its own, "
                 f"none seen by an earlier run)\n"
                 f"- Workload: {args.dataset_name} via {args.endpoint}, seed {args.seed}, "
                 f"prompts ≤ {args.max_input_len} tokens (mean {mean_in:.0f}), outputs ≤ "
                 f"{args.max_output_len} tokens (mean {mean_out:.0f})"
                 f"{', ignore_eos' if args.ignore_eos else ''}, greedy, {args.num_warmups} warm-up requests; "
                 f"closed loop = all requests queued, at most C in flight; median of {args.rounds} round(s)\n"
                 f"- Peer: `python -m llama_cpp.server` (llama-cpp-python {peer_version}) through "
                 f"tests/bench/serve_peer.sh: n_ctx 8192, interrupt_requests off; it serves one "
                 f"request at a time (no parallel slots)\n\n"
                 f"{table}\n\n" + "".join(f"- {g}\n" for g in goals))
        with open(os.path.join(ROOT, "docs", "BENCHMARKS.md"), "a") as f:
            f.write(entry)
        print("recorded in docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
