#!/usr/bin/env python3
"""Writes a GGUF in another of llama.cpp's quantization mixes (Q4_K_M, Q5_K_M, Q3_K_M, IQ4_XS, Q4_0, ...)
with llama.cpp's own quantizer (llama-cpp-python, installed by tests/bench/install_peer.sh), so
that Peng's kernels for those types can be benchmarked beside the peer on the same file.

  .venv/bin/python tests/bench/make_quant_mix.py --mix Q4_K_M [--source models/...Q4_1.gguf] \\
      [--out /tmp/smollm2-Q4_K_M.gguf]

The default source is the default model, already 4-bit: its weights are quantized a second
time (llama.cpp's allow_requantize), so the file is for speed, not for quality. SmolLM2's
576-wide matrices are not multiples of 256, so llama.cpp stores most of them in its fallback
types (Q5_0 for Q4_K_M) and only the 1,536-wide ones as K-quants.
"""

import argparse
import os
import sys

MIXES = {"F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7, "Q2_K": 10, "Q3_K_S": 11,
         "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17,
         "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mix", required=True, choices=sorted(MIXES))
    ap.add_argument("--source", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", help="default: /tmp/<source stem>-<mix>.gguf")
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        sys.exit("make_quant_mix: llama-cpp-python is missing; run tests/bench/install_peer.sh")
    out = args.out or os.path.join("/tmp", f"{os.path.splitext(os.path.basename(args.source))[0]}-{args.mix}.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = MIXES[args.mix]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(args.source.encode(), out.encode(), params)
    if rc != 0:
        sys.exit(f"make_quant_mix: llama_model_quantize returned {rc}")
    import gguf
    from collections import Counter
    types = Counter(t.tensor_type.name for t in gguf.GGUFReader(out).tensors if len(t.shape) == 2)
    print(f"{out}: {args.mix}, matrices " + ", ".join(f"{n} {t}" for t, n in types.most_common()))


if __name__ == "__main__":
    main()
