"""The tiny random Llama fixture through Peng: GGUF and HF folder (single file and sharded)
give the same logits, and both match the numpy reference. Also checks the fixture itself:
the HF layout with NeoX rope equals the permuted GGUF with normal rope."""
import json
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from llama_ref import LlamaRef
from tiny_model import hf_to_gguf_tensors, TinyConfig, write_tiny_model

QUANT_TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
TEXT = "<|im_start|>user\nthe quick brown fox said 1234 hello<|im_end|>\n<|im_start|>assistant\n"


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def max_rel_err(a, b) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float((np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)).max())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    paths = write_tiny_model(str(root / "one"), seed=3, types=["F32"] + QUANT_TYPES)
    paths["hf_sharded"] = write_tiny_model(str(root / "sharded"), seed=3, shards=3)["hf"]
    tied = write_tiny_model(str(root / "tied"), seed=4, cfg=TinyConfig(tied=True))
    paths["tied_gguf"], paths["tied_hf"] = tied["F32"], tied["hf"]
    return paths


@pytest.fixture(scope="module")
def ids(tiny):
    return Tokenizer.from_file(f"{tiny['hf']}/tokenizer.json").encode(TEXT).ids


def peng_logits(run_peng, model, ids, tmp_path, activations="f32"):
    """Peng's logits; float32 matmul activations by default, to compare with the float64
    reference at tight tolerances (int8 activations are checked in test_reference_logits.py)."""
    out = tmp_path / "logits.npy"
    printed = last_json(run_peng("logits", "--model", model, "--ids", ",".join(map(str, ids)),
                                 "--out", out, "--activations", activations))
    assert printed["ids"] == ids
    return np.load(out)


def test_fixture_hf_layout_equals_gguf_layout(tiny, ids):
    """No Peng: numpy forward on HF weights (NeoX rope) == on GGUF weights (normal rope)."""
    ref = LlamaRef(tiny["F32"])
    want = ref.forward(ids)
    hf = load_file(f"{tiny['hf']}/model.safetensors")
    cfg = TinyConfig()
    unpermuted = dict(hf_to_gguf_tensors(cfg, hf))
    for i in range(cfg.n_layer):  # undo the converter's permutation: plain HF rows
        unpermuted[f"blk.{i}.attn_q.weight"] = hf[f"model.layers.{i}.self_attn.q_proj.weight"]
        unpermuted[f"blk.{i}.attn_k.weight"] = hf[f"model.layers.{i}.self_attn.k_proj.weight"]
    ref.w = {k: v.astype(np.float64) for k, v in unpermuted.items()}
    ref.rope_style = "neox"
    assert max_rel_err(ref.forward(ids), want) < 1e-6
    ref.rope_style = "normal"  # and the permutation matters: wrong pairing must differ
    assert max_rel_err(ref.forward(ids), want) > 1e-2


@pytest.mark.parametrize("model", ["F32", "tied_gguf"])
def test_gguf_matches_reference(model, tiny, ids, run_peng, tmp_path):
    got = peng_logits(run_peng, tiny[model], ids, tmp_path)
    want = LlamaRef(tiny[model]).forward(ids)
    assert got.shape == want.shape
    err = max_rel_err(got, want)
    print(f"{model}: max rel err vs reference {err:.3e}")
    assert err < 1e-4


@pytest.mark.parametrize("hf,gguf_model", [("hf", "F32"), ("hf_sharded", "F32"),
                                           ("tied_hf", "tied_gguf")])
def test_hf_folder_matches_gguf(hf, gguf_model, tiny, ids, run_peng, tmp_path):
    a = peng_logits(run_peng, tiny[gguf_model], ids, tmp_path)
    b = peng_logits(run_peng, tiny[hf], ids, tmp_path)
    err = max_rel_err(b, a)
    print(f"{hf} vs {gguf_model}: max rel err {err:.3e}")
    assert err < 1e-5


@pytest.mark.parametrize("qtype", QUANT_TYPES)
def test_quantized_gguf_matches_reference(qtype, tiny, ids, run_peng, tmp_path):
    got = peng_logits(run_peng, tiny[qtype], ids, tmp_path)
    err = max_rel_err(got, LlamaRef(tiny[qtype]).forward(ids))
    print(f"{qtype}: max rel err vs reference {err:.3e}")
    assert err < 1e-3


@pytest.mark.parametrize("model", ["F32", "hf"])
def test_tokenize_matches_hf_tokenizers(model, tiny, ids, run_peng):
    assert last_json(run_peng("tokenize", "--model", tiny[model], "--text", TEXT)) == ids


@pytest.mark.parametrize("model", ["F32", "hf"])
def test_greedy_matches_reference(model, tiny, ids, run_peng):
    got = last_json(run_peng("generate", "--model", tiny[model], "--prompt", TEXT,
                             "--max-tokens", 16, "--temperature", 0, "--output-ids"))
    ref = LlamaRef(tiny["F32"])
    want = ref.greedy(ids, 16)
    strip = lambda xs: xs[:-1] if xs and xs[-1] == ref.eos_id else xs
    assert strip(list(got)) == strip(want)


@pytest.mark.parametrize("damage,needle", [
    (lambda d: (d / "config.json").write_text("{not json"), "config.json"),
    (lambda d: (d / "config.json").write_text('{"model_type": ""}'), "model_type"),
    (lambda d: (d / "tokenizer.json").write_text("[]"), "tokenizer"),
])
def test_a_damaged_hf_folder_is_a_model_error_naming_the_folder(tiny, peng_bin, tmp_path, damage, needle):
    import shutil
    folder = tmp_path / "hf"
    shutil.copytree(tiny["hf"], folder)
    damage(folder)
    p = subprocess.run([str(peng_bin), "generate", "--model", str(folder), "--prompt", "hi", "--max-tokens", "1"],
                       capture_output=True, text=True, timeout=120)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])  # a bad model, not a bad argument
    assert str(folder) in last and needle in last, last


# K-quant matrices (the Q4_K_M mix of Q4_K, Q5_K and Q6_K) need widths that are multiples of
# 256. Their blocks are random (tiny_model.py: gguf-py cannot quantize to K-quants).
KQUANT_CFG = TinyConfig(d_model=256, n_head=12, n_kv=4, head_dim=64, ffn=512)


@pytest.fixture(scope="module")
def kmix(tmp_path_factory):
    return write_tiny_model(str(tmp_path_factory.mktemp("kmix")), seed=5, types=["KMIX"], cfg=KQUANT_CFG)["KMIX"]


def test_k_quant_gguf_matches_reference(kmix, ids, run_peng, tmp_path):
    # Float activations: the tiles must decode every K-quant block exactly. (The int8 kernel is
    # checked per type in kernels/cpu/matmul_test.cc; on these noise weights, with their large
    # uncentred offsets, rounding the activations moves the logits by 14-83%, against ~1% for
    # the Q4_1 and Q8_0 fixtures of the same shape.)
    got = peng_logits(run_peng, kmix, ids, tmp_path)
    err = max_rel_err(got, LlamaRef(kmix).forward(ids))
    print(f"KMIX: max rel err vs reference {err:.3e}")
    assert err < 1e-3
