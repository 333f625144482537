#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on the shapes cuda_attention_bench measured, in the same
run on the same GPU, and the combined table (markdown) for docs/BENCHMARKS.md.

    python3 scripts/device_attention_peer.py BENCH.jsonl

Decode rows: Peng's paged decode GB/s of KV read against the device-to-device copy bandwidth
(and SDPA's GB/s over contiguous K/V for reference). Prefill rows: causal TFLOP/s of both
(FLOPs counted the same way: 4 * heads * head_dim per admitted (query, key) pair).
"""
import json
import sys

import torch
import torch.nn.functional as F


def sdpa_ms(batch, q_len, kv_len, heads, kv_heads, head_dim, reps=20):
    dev = torch.device("cuda")
    q = torch.randn(batch, heads, q_len, head_dim, device=dev, dtype=torch.float16)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, device=dev, dtype=torch.float16)
    v = torch.randn_like(k)
    group = heads // kv_heads
    try:
        F.scaled_dot_product_attention(q, k, v, is_causal=q_len > 1, enable_gqa=True)
        run = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=q_len > 1, enable_gqa=True)
    except TypeError:  # torch < 2.5: no enable_gqa; expand K/V (not timed)
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        run = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=q_len > 1)
    # Note: with q_len == kv_len, is_causal matches Peng's mask (query t sees keys <= t).
    for _ in range(3):
        run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        run()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    if not rows:
        sys.exit("no benchmark rows in " + sys.argv[1])
    r0 = rows[0]
    print(f"GPU: {r0['gpu']} (torch {torch.__version__}, {torch.cuda.get_device_name(0)}); "
          f"head_dim {r0['head_dim']}, {r0['kv_heads']} kv heads, group {r0['group']}, f16 KV; "
          f"device-to-device copy {r0['copy_gbps']:.0f} GB/s\n")
    print("| phase | batch | kv_len | q_len | Peng us | Peng KV GB/s | % of copy | Peng TFLOP/s "
          "| SDPA us | SDPA TFLOP/s | Peng / SDPA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        heads = r["kv_heads"] * r["group"]
        ms = sdpa_ms(r["batch"], r["q_len"], r["kv_len"], heads, r["kv_heads"], r["head_dim"])
        sdpa_tflops = r["tflops"] * r["ms"] / ms
        print(f"| {r['phase']} | {r['batch']} | {r['kv_len']} | {r['q_len']} | {r['ms'] * 1e3:.1f} | "
              f"{r['kv_gbps']:.0f} | {100 * r['kv_gbps'] / r['copy_gbps']:.0f}% | {r['tflops']:.2f} | "
              f"{ms * 1e3:.1f} | {sdpa_tflops:.2f} | {ms / r['ms']:.2f}x |")


if __name__ == "__main__":
    main()
