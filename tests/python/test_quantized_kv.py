"""Quantized KV (kv.mode quantized, engine.kv_format k8v8 | k8v4 | k4v2: LeanKV's tiers, one tier, no pruning)
end to end in `peng serve`: the startup report shows the smaller pages and more KV tokens for
the same budget, and greedy SmolLM2 completions stay close to the f16 cache's."""

import re

import httpx
import pytest

from conftest import start_peng_server, stop_peng_server

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Water boils at"]


def serve_and_complete(peng_bin, smollm2_path, tmp_path, kv_format):
    mode = "dense" if kv_format in ("f32", "f16", "bf16") else "quantized"
    server = start_peng_server(peng_bin, smollm2_path, tmp_path,
                               # float32 matmul activations: the comparison isolates the KV format
                               f"engine: {{kv_format: {kv_format}, kv_budget: 64MiB, activations: f32}}\n"
                               f"kv: {{mode: {mode}}}\n")
    try:
        outs = []
        for p in PROMPTS:
            r = httpx.post(server.http_url + "/v1/completions",
                           json={"prompt": p, "max_tokens": 24, "temperature": 0, "logprobs": 1},
                           timeout=60)
            assert r.status_code == 200, r.text
            outs.append(r.json()["choices"][0]["logprobs"]["tokens"])
    finally:
        stop_peng_server(server)
    log = (tmp_path / "peng-serve.log").read_text()
    # The startup report names what the matmuls run on (f32 here, as configured).
    assert "worker: cpu; matmul activations f32" in log, log
    m = re.search(r"KV (\w+), (\d+) bytes per token, .* = (\d+) KV tokens", log)
    assert m, log
    assert m.group(1) == kv_format
    return outs, int(m.group(2)), int(m.group(3))


@pytest.fixture(scope="module")
def f16(peng_bin, smollm2_path, tmp_path_factory):
    return serve_and_complete(peng_bin, smollm2_path, tmp_path_factory.mktemp("f16"), "f16")


@pytest.mark.parametrize("kv_format,min_ratio,min_agree", [("k8v8", 1.7, 16), ("k8v4", 2.1, 0), ("k4v2", 3.0, 0)])
def test_quantized_kv_serves_more_tokens_and_stays_close(peng_bin, smollm2_path, tmp_path, f16,
                                                         kv_format, min_ratio, min_agree):
    ref, f16_bytes, f16_tokens = f16
    outs, q_bytes, q_tokens = serve_and_complete(peng_bin, smollm2_path, tmp_path, kv_format)
    assert f16_bytes / q_bytes >= min_ratio, (f16_bytes, q_bytes)
    assert q_tokens / f16_tokens >= min_ratio * 0.95, (f16_tokens, q_tokens)
    # Accuracy proper is measured by perplexity (peng perplexity, docs/BENCHMARKS.md): at 4 bits
    # and below a near-tie can flip the very first greedy token of a 135M model, so only K8V8 is
    # held to token agreement here.
    for a, b in zip(ref, outs):
        agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        assert agree >= min_agree, (kv_format, a, b)
