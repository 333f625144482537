"""Model variants end to end: for each tiny_model.VARIANTS entry (llama with and without q/k/v
biases, qwen2 with NeoX rope and biases, mistral, linear rope scaling (with the GGUF key
spellings llama.cpp reads) and Llama-3 rope scaling, GQA groups 1, 2 and 4), Peng on the GGUF, Peng on the HF folder and the numpy reference (on the GGUF and,
through LlamaRef.from_hf, on the HF folder) agree within 1e-5 relative error at every one of
200 positions. The fixture checks alongside show that each feature changes the logits, so a
loader that ignored it would fail.
"""
import json
from dataclasses import replace

import numpy as np
import pytest

from llama_ref import LlamaRef
from tiny_model import llama3_rope_factors, VARIANTS, write_tiny_model

REL_TOL = 1e-5
# 200 positions: well past original_max_position_embeddings (64) of the llama3 variant and
# long enough for linear scaling to move the low frequencies. Ids cover the whole vocab.
IDS = [int(i) for i in np.random.default_rng(7).integers(0, 300, 200)]


def rel_err(a, b) -> np.ndarray:
    """Relative L2 error of a against b at each position."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    return {name: write_tiny_model(str(root / name), seed=11, cfg=cfg)
            for name, cfg in VARIANTS.items()}


@pytest.fixture(scope="module")
def logits(models, run_peng, tmp_path_factory):
    """logits(variant, source) for source in peng_gguf, peng_hf, ref_gguf, ref_hf; cached."""
    out_dir, cache = tmp_path_factory.mktemp("logits"), {}

    def get(variant: str, source: str) -> np.ndarray:
        key = (variant, source)
        if key not in cache:
            paths = models[variant]
            model = paths["F32"] if source.endswith("gguf") else paths["hf"]
            if source.startswith("ref"):
                ref = LlamaRef(model) if source == "ref_gguf" else LlamaRef.from_hf(model)
                cache[key] = ref.forward(IDS)
            else:
                out = out_dir / f"{variant}-{source}.npy"
                stdout = run_peng("logits", "--model", model, "--ids", ",".join(map(str, IDS)),
                                  "--out", out)
                assert json.loads(stdout.strip().splitlines()[-1])["ids"] == IDS
                cache[key] = np.load(out)
            assert cache[key].shape == (len(IDS), 300)
        return cache[key]
    return get


@pytest.mark.parametrize("got,want", [("peng_gguf", "ref_gguf"), ("peng_hf", "ref_hf"),
                                      ("peng_hf", "peng_gguf"), ("ref_hf", "ref_gguf")])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_agrees(variant, got, want, logits):
    err = rel_err(logits(variant, got), logits(variant, want))
    print(f"{variant}: {got} vs {want}: max rel err {err.max():.2e} at position {err.argmax()}")
    assert err.max() < REL_TOL


def test_variants_cover_gqa_groups():
    groups = {cfg.n_head // cfg.n_kv for cfg in VARIANTS.values()}
    assert {1, 2, 4} <= groups
    assert any(cfg.head_dim * cfg.n_head != cfg.d_model for cfg in VARIANTS.values())


@pytest.mark.parametrize("variant", ["rope-linear", "rope-llama3"])
def test_rope_scaling_changes_logits(variant, models, logits):
    """Without its scaling the reference differs from Peng: the positions are long enough."""
    ref = LlamaRef(models[variant]["F32"])
    ref.rope_scale = 1.0
    ref.w.pop("rope_freqs.weight", None)
    assert rel_err(ref.forward(IDS), logits(variant, "peng_gguf")).max() > 1e-2


@pytest.mark.parametrize("variant", ["llama-bias", "qwen2"])
def test_biases_change_logits(variant, models, logits):
    ref = LlamaRef(models[variant]["F32"])
    biases = [k for k in ref.w if k.endswith(".bias")]
    assert len(biases) == 3 * 2  # q, k, v in both layers
    for k in biases:
        ref.w[k] = np.zeros_like(ref.w[k])
    assert rel_err(ref.forward(IDS), logits(variant, "peng_gguf")).max() > 1e-2


def test_llama3_rope_freqs_span_all_three_bands():
    """The fixture's rope_freqs (llama.cpp converter) has unscaled, smoothed and fully scaled
    frequencies, so each branch of Peng's HF llama3 formula is exercised."""
    cfg = VARIANTS["rope-llama3"]
    f = llama3_rope_factors(cfg)
    factor = cfg.rope_scaling["factor"]
    assert np.sum(f == 1) >= 1 and np.sum(f == factor) >= 1
    assert np.sum((f > 1) & (f < factor)) >= 2
    # Halving the original context moves frequencies between bands: the tensor follows config.
    shorter = replace(cfg, rope_scaling={**cfg.rope_scaling, "original_max_position_embeddings": 32})
    assert not np.allclose(llama3_rope_factors(shorter), f)
