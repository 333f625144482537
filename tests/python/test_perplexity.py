"""`peng perplexity` against an independent computation: on tiny random models (tiny_model.py),
the perplexity Peng prints with a float32 dense KV cache equals the one computed from the
float64 numpy reference forward (llama_ref.py) over the same windows, within 1e-4 relative.
Token ids come from `peng tokenize` (checked against Hugging Face tokenizers elsewhere), so both
sides score the same tokens. Also: BOS handling for a BOS-adding tokenizer, KV bytes per token
including page slack, chunk-size invariance, the exact last line, and one-line errors (exit 2).
"""
import json
import math
import re
import subprocess

import numpy as np
import pytest

from llama_ref import LlamaRef
from tiny_model import TinyConfig, write_tiny_model

REL_TOL = 1e-4
LAST_LINE = re.compile(r"^perplexity=(\d+\.\d{4}) kv_bytes_per_token=(\d+\.\d) "
                       r"compression_vs_fp16=(\d+\.\d{3})$")
# English-like text long enough for 4 windows of 60 tokens with the tiny byte-level vocabulary.
TEXT = ("The quick brown fox jumps over the lazy dog. She said that the weather is nice, and "
        "then they went on the road to the house by the sea. In the evening the dog and the "
        "fox are there again; 12 + 30 = 42, print('hello world'). The end of the day came "
        "slowly, and the lights of the village went out one by one.\n") * 2


def run(peng_bin, *args):
    return subprocess.run([str(peng_bin), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppl-models")
    return {"plain": write_tiny_model(str(root / "plain"), seed=3)["F32"],
            "bos": write_tiny_model(str(root / "bos"), seed=5, cfg=TinyConfig(add_bos=True))["F32"]}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ppl-text") / "text.txt"
    path.write_text(TEXT)
    return path


def text_ids(peng_bin, model) -> list[int]:
    p = run(peng_bin, "tokenize", "--model", model, "--text", TEXT, "--no-bos", "--no-special")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def reference_perplexity(model, windows) -> float:
    ref = LlamaRef(model)
    nll, count = 0.0, 0
    for w in windows:
        logits = ref.forward(w).astype(np.float64)
        m = logits.max(axis=-1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1)))
        nll += float(np.sum(lse[:-1] - logits[np.arange(len(w) - 1), w[1:]]))
        count += len(w) - 1
    return math.exp(nll / count)


def peng_perplexity(peng_bin, model, text_file, *args):
    p = run(peng_bin, "perplexity", "--model", model, "--text", text_file, *args)
    assert p.returncode == 0, p.stderr
    m = LAST_LINE.match(p.stdout.strip().splitlines()[-1])
    assert m, f"last line has the wrong format: {p.stdout!r}"
    return float(m[1]), float(m[2]), float(m[3]), p.stderr


@pytest.mark.parametrize("chunk", ["5", "16"])
def test_matches_reference_without_bos(peng_bin, models, text_file, chunk):
    ids = text_ids(peng_bin, models["plain"])
    ctx, max_windows = 60, 3
    assert len(ids) >= (max_windows + 1) * ctx, "the text must be longer than the windows used"
    windows = [ids[i * ctx:(i + 1) * ctx] for i in range(max_windows)]
    want = reference_perplexity(models["plain"], windows)
    got, kv_bytes, compression, stderr = peng_perplexity(
        peng_bin, models["plain"], text_file, "--ctx", ctx, "--max-windows", max_windows,
        "--kv-mode", "dense", "--kv-format", "f32", "--chunk", chunk)
    print(f"chunk {chunk}: peng {got} reference {want:.6f}")
    assert abs(got - want) / want < REL_TOL
    assert "window 3/3" in stderr
    # 60 tokens fill 4 pages of 16 per (layer, kv-head): 2 layers x 2 heads x 4 pages x
    # (2 x 16 tokens x 16 dims x 4 bytes), over 60 tokens; fp16 needs 2 x 16 x 2 x 2 x 2 bytes.
    assert kv_bytes == pytest.approx(2 * 2 * 4 * 2048 / 60, abs=0.05)
    assert compression == pytest.approx(256 / (2 * 2 * 4 * 2048 / 60), abs=1e-3)


def test_bos_starts_every_window(peng_bin, models, text_file):
    ids = text_ids(peng_bin, models["bos"])
    ctx = 48
    n = len(ids) // (ctx - 1)  # every whole window: BOS (id 1) + 47 text tokens
    windows = [[1] + ids[i * (ctx - 1):(i + 1) * (ctx - 1)] for i in range(n)]
    want = reference_perplexity(models["bos"], windows)
    got, _, _, stderr = peng_perplexity(peng_bin, models["bos"], text_file, "--ctx", ctx,
                                        "--kv-format", "f32")
    assert f"window {n}/{n}" in stderr
    assert abs(got - want) / want < REL_TOL


def test_f16_cache_is_close_and_half_the_bytes(peng_bin, models, text_file):
    args = ["--ctx", 64, "--max-windows", 2]
    f32, f32_bytes, _, _ = peng_perplexity(peng_bin, models["plain"], text_file, *args,
                                           "--kv-format", "f32")
    f16, f16_bytes, f16_compression, _ = peng_perplexity(peng_bin, models["plain"], text_file,
                                                         *args)  # f16 is the dense default
    assert abs(f16 - f32) / f32 < 1e-2
    assert f16_bytes == pytest.approx(f32_bytes / 2, abs=0.05)
    assert f16_compression == pytest.approx(1.0, abs=1e-3)  # 64 tokens fill their pages


@pytest.mark.parametrize("args,message", [
    (["--text", "/nonexistent/text.txt", "--ctx", 32], "no such file"),
    (["--ctx", 32, "--kv-mode", "sparse"], "--kv-mode"),
    (["--ctx", 32, "--kv-mode", "quantized", "--kv-format", "q3"], "--kv-format"),
    (["--ctx", 32, "--kv-mode", "dense", "--kv-format", "k8v4"], "does not suit"),
    (["--ctx", 1], "--ctx"),
    (["--ctx", 512], "exceeds the model's context"),
    (["--ctx", 32, "--bogus", 1], "unknown flag"),
    ([], "--ctx"),
])
def test_bad_input_is_a_one_line_error(peng_bin, models, text_file, args, message):
    if "--text" not in args:
        args = ["--text", text_file, *args]
    p = run(peng_bin, "perplexity", "--model", models["plain"], *args)
    assert p.returncode == 2, p.stderr
    error = p.stderr.strip().splitlines()[-1]  # after the model's loading bar, if it got there
    assert error.startswith("peng perplexity: ") and message in error
    assert p.stdout == ""


def test_empty_and_short_texts_are_errors(peng_bin, models, tmp_path):
    empty, short = tmp_path / "empty.txt", tmp_path / "short.txt"
    empty.write_text("")
    short.write_text("the end.")
    for path, message in ((empty, "empty"), (short, "fewer than one window")):
        p = run(peng_bin, "perplexity", "--model", models["plain"], "--text", path, "--ctx", 32)
        assert p.returncode == 2, p.stderr
        assert message in p.stderr


def test_config_sets_tokens_per_page(peng_bin, models, text_file, tmp_path):
    """56 tokens: 4 pages of 16 (8 slots of slack) by default, 7 full pages of 8 with the config."""
    config = tmp_path / "peng.yaml"
    config.write_text("engine:\n  tokens_per_page: 8\n  threads: 1\n")
    args = ["--ctx", 56, "--max-windows", 1, "--kv-format", "f32"]
    ppl16, bytes16, _, _ = peng_perplexity(peng_bin, models["plain"], text_file, *args)
    ppl8, bytes8, _, _ = peng_perplexity(peng_bin, models["plain"], text_file, *args,
                                         "--config", config)
    assert bytes16 == pytest.approx(2 * 2 * 4 * (2 * 16 * 16 * 4) / 56, abs=0.05)
    assert bytes8 == pytest.approx(2 * 2 * 7 * (2 * 8 * 16 * 4) / 56, abs=0.05)
    assert ppl8 == pytest.approx(ppl16, rel=1e-5)


def test_quantized_cache_counts_its_metadata(peng_bin, models, text_file):
    """k8v4 pages of 16 tokens, head_dim 16: K codes 16 B + V codes 8 B + fp16 (scale, zero) for
    1 K group and 2 V groups 12 B + score 4 B + position 4 B = 44 B per token and head."""
    args = ["--ctx", 64, "--max-windows", 2]
    f32, _, _, _ = peng_perplexity(peng_bin, models["plain"], text_file, *args, "--kv-format", "f32")
    k8v4, kv_bytes, compression, _ = peng_perplexity(peng_bin, models["plain"], text_file, *args,
                                                     "--kv-mode", "quantized")  # k8v4 default
    assert kv_bytes == pytest.approx(2 * 2 * 44, abs=0.05)
    assert compression == pytest.approx(256 / 176, abs=1e-3)
    assert k8v4 != f32 and abs(k8v4 - f32) / f32 < 2e-2
