"""Peng `dump-tensor` vs gguf.quants.dequantize for every tensor type Peng reads.

A fixture GGUF holds random raw blocks of each type (tests/fixtures/tiny_model.py); Peng must
give the same float32 values (to float32 rounding) and numpy's shape (reversed GGML shape).
"""
import gguf
import numpy as np
import pytest

from tiny_model import DEQUANT_TYPES, write_dequant_gguf

TENSORS = [f"dq.{t}" for t in DEQUANT_TYPES] + ["dq.F32_3d"]
SMOLLM2_TENSORS = ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight",
                   "blk.0.attn_norm.weight"]


@pytest.fixture(scope="module")
def dequant_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("dequant") / "dequant.gguf"
    write_dequant_gguf(str(path), seed=1)
    return path


def expected(path, name) -> np.ndarray:
    t = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == name)
    shape = tuple(int(s) for s in reversed(t.shape))
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)


def check_dump(run_peng, model, name, tmp_path):
    out = tmp_path / "t.npy"
    run_peng("dump-tensor", "--model", model, "--tensor", name, "--out", out)
    got, want = np.load(out), expected(model, name)
    assert got.dtype == np.float32, got.dtype
    assert got.shape == want.shape, f"{name}: shape {got.shape} vs {want.shape}"
    assert np.all(np.isfinite(got)), f"{name}: non-finite values"
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * scale, err_msg=name)


@pytest.mark.parametrize("name", TENSORS)
def test_dequantize_matches_gguf_py(name, dequant_gguf, run_peng, tmp_path):
    check_dump(run_peng, dequant_gguf, name, tmp_path)


@pytest.mark.parametrize("name", SMOLLM2_TENSORS)
def test_dequantize_smollm2_tensor(name, smollm2_path, run_peng, tmp_path):
    check_dump(run_peng, smollm2_path, name, tmp_path)


def test_unknown_tensor_is_an_error(dequant_gguf, peng_bin, tmp_path):
    import subprocess
    p = subprocess.run([str(peng_bin), "dump-tensor", "--model", str(dequant_gguf), "--tensor",
                        "no.such.tensor", "--out", str(tmp_path / "x.npy")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "no.such.tensor" in p.stderr
