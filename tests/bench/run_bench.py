#!/usr/bin/env python3
"""Peng vs llama.cpp on one GGUF: pp (prompt tokens/s) and tg (generation tokens/s).

Runs `build/peng bench --json` and tests/bench/llamacpp_peer.py (llama-cpp-python built from
source by tests/bench/install_peer.sh) alternately, several rounds, so that both see the same
machine state; prints a table of means and Peng/llama.cpp ratios and, with --record, appends it
to docs/BENCHMARKS.md with the command, date and machine.

  .venv/bin/python tests/bench/run_bench.py [--model PATH] [--threads 2] [--rounds 3] [--record]
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import cpu_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = ap.parse_args()

    subprocess.run(["bash", "tests/bench/install_peer.sh"], check=True, cwd=ROOT)
    common = ["--model", args.model, "--threads", str(args.threads), "--prompt-tokens",
              str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens), "--reps", "1"]
    peng_bin = os.environ.get("PENG_BIN", os.path.join(ROOT, "build", "peng"))
    peng, peer = [], []
    for _ in range(args.rounds):
        peng.append(run_json([peng_bin, "bench", *common, "--json", "--no-bandwidth"]))
        peer.append(run_json([sys.executable, "tests/bench/llamacpp_peer.py", *common, "--json"]))
    bw = run_json([peng_bin, "bench", *common, "--json"])  # last round also measures bandwidth

    def stat(rows, key):
        vals = [r[key] for r in rows]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    lines = []
    lines.append(f"| test | Peng tok/s | llama.cpp tok/s | Peng / llama.cpp |")
    lines.append("|---|---|---|---|")
    for test, key in ((f"pp{args.prompt_tokens}", "pp_tok_s"), (f"tg{args.gen_tokens}", "tg_tok_s")):
        pm, ps = stat(peng, key)
        lm, ls = stat(peer, key)
        lines.append(f"| {test} | {pm:.1f} ± {ps:.1f} | {lm:.1f} ± {ls:.1f} | {pm / lm:.2f}x |")
    tg_peng = stat(peng, "tg_tok_s")[0]
    bw_line = (f"Read bandwidth ({args.threads} threads, 1 GiB sum): {bw['read_bandwidth_gb_s']:.1f} GB/s; "
               f"decode reads {bw['decode_bytes_per_token'] / 1e6:.1f} MB/token (all weights + KV), so "
               f"Peng's tg reaches {bw['decode_bytes_per_token'] * tg_peng / 1e9:.1f} GB/s = "
               f"{100 * bw['decode_bytes_per_token'] * tg_peng / 1e9 / bw['read_bandwidth_gb_s']:.0f}% of it.")
    table = "\n".join(lines)
    print(table)
    print(bw_line)

    if args.record:
        version = peer[0].get("llama_cpp_version", "?")
        now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        entry = (f"\n### pp/tg vs llama.cpp — {now}\n\n"
                 f"- Command: `.venv/bin/python tests/bench/run_bench.py --threads {args.threads} "
                 f"--rounds {args.rounds} --record`\n"
                 f"- Machine: {cpu_name()}, {os.cpu_count()} cores; model `{os.path.basename(args.model)}`; "
                 f"{args.threads} threads; {args.rounds} alternating rounds (mean ± stddev)\n"
                 f"- Peer: llama.cpp through llama-cpp-python {version}, built from source (GGML_NATIVE)\n\n"
                 f"{table}\n\n{bw_line}\n")
        with open(os.path.join(ROOT, "docs", "BENCHMARKS.md"), "a") as f:
            f.write(entry)
        print("recorded in docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
