"""LeanKV (kv.mode: leankv) end to end.

`peng serve` with SmolLM2: the startup log reports the page-size rule's choice; the official
`openai` client gets complete, concurrent, streamed completions; the KV metrics (bytes per token,
compression ratio, tokens pruned and demoted, per-head sparsity histogram) move and pass
`promtool check metrics`; KV usage returns to 0. `peng perplexity --kv-mode leankv` on a tiny
model: with both alphas 0 nothing is compressed and it equals the one-tier K8V4 cache exactly;
with large alphas it prunes and holds fewer bytes. Bad LeanKV settings are clear errors.
"""
import concurrent.futures
import re
import shutil
import subprocess

import httpx
import openai
import pytest

from conftest import start_peng_server, stop_peng_server
from test_perplexity import LAST_LINE, models, run, text_file  # noqa: F401 (fixtures)

LEANKV_YAML = ("kv: {mode: leankv, alpha_prune: 0.5, alpha_quant: 1.0, window: 16}\n"
               "engine: {kv_budget: 32MiB}\n")


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.fixture(scope="module")
def leankv_server(peng_bin, smollm2_path, tmp_path_factory):
    server = start_peng_server(peng_bin, smollm2_path, tmp_path_factory.mktemp("leankv"), LEANKV_YAML)
    yield server
    assert stop_peng_server(server) == 0


def test_startup_log_reports_the_page_size_rule(leankv_server):
    m = re.search(r"KV leankv \(high k8v4, low k4v2, .*page-size rule over \[768, 2048\] B chose (\d+) B: "
                  r"(\d+) high / (\d+) low tokens per page\)", leankv_server.log())
    assert m, leankv_server.log()
    page, high, low = map(int, m.groups())
    assert 768 <= page <= 2048 and 0 < high < low
    # Before any request: the layout's bytes per token (k8v4 before pruning), not 0.
    text = httpx.get(leankv_server.http_url + "/metrics", timeout=10).text
    assert metric(text, "peng:kv_bytes_per_token") == 10440
    assert metric(text, "peng:kv_compression_ratio") == pytest.approx(23040 / 10440)


def test_concurrent_streams_complete_and_metrics_move(leankv_server):
    client = openai.OpenAI(base_url=leankv_server.http_url + "/v1", api_key="x", timeout=300)
    prompts = [f"Write a long story about a {animal} who learns to code." for animal in
               ("cat", "dog", "fox", "owl", "bee", "yak", "elk", "eel")]

    def stream(prompt):
        chunks = client.chat.completions.create(
            model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": prompt}],
            max_tokens=160, temperature=0, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True})
        text, usage = "", None
        for c in chunks:
            if c.choices:
                text += c.choices[0].delta.content or ""
            if c.usage:
                usage = c.usage
        return text, usage

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(stream, prompts))
    for text, usage in results:
        assert usage.completion_tokens == 160
        assert text.strip()

    text = httpx.get(leankv_server.http_url + "/metrics", timeout=10).text
    assert metric(text, "peng:kv_tokens_pruned_total") > 0
    assert metric(text, "peng:kv_tokens_demoted_total") > 0
    assert metric(text, "peng:kv_head_sparsity_count") == 8 * 30 * 3  # every (request, layer, head)
    assert 0 < metric(text, "peng:kv_head_sparsity_sum") < 8 * 30 * 3
    # K8V4 alone is 2.2x smaller than fp16; pruning and K4V2 only add to that.
    assert metric(text, "peng:kv_compression_ratio") > 2.2
    assert metric(text, "peng:kv_bytes_per_token") < 23040 / 2.2
    assert metric(text, "peng:kv_cache_usage_perc") == 0
    tool = shutil.which("promtool")
    if tool:
        p = subprocess.run([tool, "check", "metrics"], input=text.replace("peng:", "peng_"),
                           capture_output=True, text=True, timeout=60)
        # 1 = unparsable; 3 = lint notes, of which the KV metrics must have none.
        assert p.returncode in (0, 3), p.stdout + p.stderr
        assert "peng_kv" not in p.stdout + p.stderr


def perplexity(peng_bin, model, text_file, *args):
    p = run(peng_bin, "perplexity", "--model", model, "--text", text_file, "--ctx", 96,
            "--max-windows", 2, "--chunk", 4, *args)
    assert p.returncode == 0, p.stderr
    m = LAST_LINE.match(p.stdout.strip().splitlines()[-1])
    assert m, p.stdout
    return float(m[1]), float(m[2]), p.stderr


def test_perplexity_without_compression_equals_one_k8v4_tier(peng_bin, models, text_file):
    k8v4, _, _ = perplexity(peng_bin, models["plain"], text_file, "--kv-mode", "quantized",
                            "--kv-format", "k8v4")
    lean, _, stderr = perplexity(peng_bin, models["plain"], text_file, "--kv-mode", "leankv",
                                 "--alpha-prune", 0, "--alpha-quant", 0)
    assert lean == k8v4
    assert "leankv: 0 tokens pruned, 0 demoted" in stderr


def test_perplexity_compression_prunes_and_saves_bytes(peng_bin, models, text_file, tmp_path):
    # The tiny model's head_dim of 16 needs small pages, or page slack hides the savings.
    config = tmp_path / "lean.yaml"  # the thresholds can come from the serve config's kv section
    config.write_text("kv: {mode: leankv, alpha_prune: 1.0, alpha_quant: 2.0, window: 8,\n"
                      "     page_bytes_min: 64, page_bytes_max: 256}\n"
                      "engine: {threads: 1}\n")
    _, none_bytes, _ = perplexity(peng_bin, models["plain"], text_file, "--kv-mode", "leankv",
                                  "--config", config, "--alpha-prune", 0, "--alpha-quant", 0)
    ppl, lean_bytes, stderr = perplexity(peng_bin, models["plain"], text_file, "--kv-mode", "leankv",
                                         "--config", config)
    m = re.search(r"leankv: (\d+) tokens pruned, (\d+) demoted", stderr)
    assert m and int(m[1]) > 0 and int(m[2]) > 0, stderr
    assert lean_bytes < none_bytes
    assert ppl > 1


def test_tiers_take_any_bits_and_groups(peng_bin, models, text_file, smollm2_path, tmp_path):
    """Bits and groups per tier: formats without kernels of their own (read through the
    run-time quantized kernels) serve and compress; 8 bits in 2 groups stays within 1% of K8V8's
    perplexity (the tiny model's weights are random, so fewer bits need not cost perplexity)."""
    k8v8, b88, _ = perplexity(peng_bin, models["plain"], text_file, "--kv-mode", "quantized", "--kv-format", "k8v8")
    k8g2, _, _ = perplexity(peng_bin, models["plain"], text_file, "--kv-mode", "quantized", "--kv-format", "k8g2v8g2")
    k2v1, b21, _ = perplexity(peng_bin, models["plain"], text_file, "--kv-mode", "quantized", "--kv-format", "k2g1v1g1")
    assert k8g2 != k8v8 and abs(k8g2 - k8v8) / k8v8 < 0.01
    assert k2v1 != k8v8 and b21 < b88 / 2
    config = tmp_path / "lean.yaml"
    config.write_text("kv: {mode: leankv, high_format: k8g2v4g4, low_format: k2g2v1, alpha_prune: 0.5,\n"
                      "     alpha_quant: 2.0, window: 8, page_bytes_min: 64, page_bytes_max: 256}\n")
    ppl, _, stderr = perplexity(peng_bin, models["plain"], text_file, "--kv-mode", "leankv", "--config", config)
    assert "leankv high k8g2v4g4 / low k2g2v1" in stderr, stderr
    m = re.search(r"leankv: (\d+) tokens pruned, (\d+) demoted", stderr)
    assert m and int(m[2]) > 0, stderr
    assert ppl > 1

    server = start_peng_server(peng_bin, smollm2_path, tmp_path,
                               "kv: {mode: leankv, high_format: k8g2v4g4, low_format: k4g4v1, window: 16}\n"
                               "engine: {kv_budget: 32MiB}\n")
    try:
        assert "KV leankv (high k8g2v4g4, low k4g4v1" in server.log()
        r = httpx.post(server.http_url + "/v1/completions",
                       json={"prompt": "The history of the printing press", "max_tokens": 96,
                             "temperature": 0, "ignore_eos": True}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 96
        metrics = httpx.get(server.http_url + "/metrics", timeout=10).text
        assert metric(metrics, "peng:kv_tokens_demoted_total") > 0
    finally:
        assert stop_peng_server(server) == 0


@pytest.mark.parametrize("yaml,message", [
    ("kv: {mode: leankv, high_format: f16}\n", "kv.high_format: must be quantized"),
    ("kv: {mode: leankv, high_format: k8g3v4}\n", "kv.high_format: expected f32, f16, bf16, or k<bits>"),
    ("kv: {mode: leankv, low_format: k3v2}\n", "got \"k3v2\""),
    ("kv: {mode: leankv, alpha_prune: 0.5, alpha_quant: 0.1}\n", "kv.alpha_quant: must be in [kv.alpha_prune"),
    ("kv: {mode: leankv, page_bytes_max: 100}\n", "kv.page_bytes_max"),
    ("kv: {mode: sparse}\n", "kv.mode"),
    ("engine: {kv_format: k8v4}\n", "set kv.mode: quantized"),
    ("kv: {mode: quantized}\n", "kv.mode quantized needs a quantized format"),
])
def test_bad_leankv_config_is_a_clear_error(peng_bin, smollm2_path, tmp_path, yaml, message):
    with pytest.raises(RuntimeError) as e:
        start_peng_server(peng_bin, smollm2_path, tmp_path, yaml)
    assert message in str(e.value)
