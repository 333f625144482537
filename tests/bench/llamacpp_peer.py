#!/usr/bin/env python3
"""llama.cpp peer for Peng's benchmarks: prompt (pp) and generation (tg) tokens/s on one GGUF.

Measures what llama.cpp's `llama-bench` measures, through llama-cpp-python (installed by
tests/bench/install_peer.sh), so that Peng's numbers can be printed beside a peer measured on
the same machine in the same run:

  pp: one llm.eval() of a fixed `--prompt-tokens` prompt into an empty KV cache.
  tg: `--gen-tokens` successive single-token evals after that prompt, one sequence, greedy
      (argmax of the last logits; the argmax is outside the timed region, as llama-bench
      times decode only). Unlike llama-bench's tg, which starts at position 0, the sequence
      continues after the prompt, as a real request does.

Each is repeated `--reps` times after one untimed warm-up; the table and the JSON line give the
mean and sample standard deviation of the per-rep tokens/s (llama-bench's avg_ts / stddev_ts).

  python tests/bench/llamacpp_peer.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --threads 2 --prompt-tokens 512 --gen-tokens 128 --reps 3 --json
"""

import argparse
import json
import os
import statistics
import sys
import time

# Tokenized and tiled to exactly --prompt-tokens ids, so every run sees the same prompt.
PARAGRAPH = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the "
    "one hundred and twelve steps aloud as his father had done before him. From the lamp "
    "room he could see the fishing boats returning across the grey water, the gulls "
    "circling the harbour wall, and the first lights of the village coming on one by one. "
    "He wound the clockwork, trimmed the wick, polished the great lens until it shone, and "
    "wrote the weather, the wind and the names of the passing ships in the log book. "
)


def build_prompt(llm, n_tokens):
    """Returns exactly n_tokens deterministic ids: BOS (if the model has one) + tiled text."""
    body = llm.tokenize(PARAGRAPH.encode("utf-8"), add_bos=False, special=False)
    ids = []
    bos = llm.token_bos()
    if bos is not None and bos >= 0:
        ids.append(bos)
    while len(ids) < n_tokens:
        ids.extend(body)
    return ids[:n_tokens]


def measure_pp(llm, prompt):
    llm.reset()  # n_tokens = 0; eval() then clears the KV cache from position 0
    start = time.perf_counter()
    llm.eval(prompt)
    return time.perf_counter() - start


def last_logits(llm):
    """The logits of the last evaluated token (eval() keeps none when logits_all=False)."""
    import llama_cpp
    import numpy as np

    pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),))


def measure_tg(llm, gen_tokens):
    """Greedy decode of gen_tokens after whatever is in the context; returns decode seconds."""
    import numpy as np

    elapsed = 0.0
    for _ in range(gen_tokens):
        next_id = int(np.argmax(last_logits(llm)))
        start = time.perf_counter()
        llm.eval([next_id])
        elapsed += time.perf_counter() - start
    return elapsed


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args()

    if not os.path.isfile(args.model):
        sys.exit(f"llamacpp_peer: no model file at {args.model}")
    if args.prompt_tokens < 1 or args.gen_tokens < 1 or args.reps < 1:
        sys.exit("llamacpp_peer: --prompt-tokens, --gen-tokens and --reps must be >= 1")
    if args.prompt_tokens + args.gen_tokens > args.n_ctx:
        sys.exit(f"llamacpp_peer: --prompt-tokens {args.prompt_tokens} + --gen-tokens "
                 f"{args.gen_tokens} exceeds --n-ctx {args.n_ctx}")
    try:
        import llama_cpp
    except ImportError:
        sys.exit("llamacpp_peer: llama_cpp is not installed; run tests/bench/install_peer.sh")

    llm = llama_cpp.Llama(
        model_path=args.model,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_ctx=args.n_ctx,
        n_batch=args.n_batch,
        logits_all=False,
        verbose=False,
    )
    prompt = build_prompt(llm, args.prompt_tokens)

    # Warm-up: page in the weights, let the CPU settle, grow the compute buffers.
    measure_pp(llm, prompt)
    measure_tg(llm, min(args.gen_tokens, 16))

    pp_rates, tg_rates = [], []
    for _ in range(args.reps):
        pp_rates.append(len(prompt) / measure_pp(llm, prompt))
        tg_rates.append(args.gen_tokens / measure_tg(llm, args.gen_tokens))
    pp_mean, pp_std = mean_std(pp_rates)
    tg_mean, tg_std = mean_std(tg_rates)

    version = getattr(llama_cpp, "__version__", "unknown")
    print(f"llama-cpp-python {version}  model {os.path.basename(args.model)}  "
          f"threads {args.threads}  reps {args.reps}")
    print(f"{'test':<8} {'tokens':>7} {'tok/s':>10} {'stddev':>9}")
    print(f"{'pp':<8} {args.prompt_tokens:>7} {pp_mean:>10.2f} {pp_std:>9.2f}")
    print(f"{'tg':<8} {args.gen_tokens:>7} {tg_mean:>10.2f} {tg_std:>9.2f}")
    if args.json:
        print(json.dumps({
            "pp_tok_s": round(pp_mean, 3),
            "pp_std": round(pp_std, 3),
            "tg_tok_s": round(tg_mean, 3),
            "tg_std": round(tg_std, 3),
            "llama_cpp_version": version,
            "model": os.path.basename(args.model),
            "threads": args.threads,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "reps": args.reps,
        }))


if __name__ == "__main__":
    main()
