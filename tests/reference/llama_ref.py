"""Independent numpy reference for Llama-family GGUF models (llama, qwen2 architectures).

Reads weights with the `gguf` package (GGUFReader + gguf.quants.dequantize) and runs the
forward pass in float64 (by default) with nothing shared with Peng's C++. Used by
tests/python/ to check Peng's logits and greedy generations. Rope: linear scaling
(rope.scaling.type/factor) divides positions; a `rope_freqs.weight` tensor (Llama-3 scaling)
divides the inverse frequencies. `LlamaRef.from_hf(folder)` runs the same pass on a Hugging
Face folder (llama, mistral, qwen2; rope_scaling default, linear, llama3).

    python tests/reference/llama_ref.py MODEL.gguf --prompt "Hello" [--chat] [-n 32]

Conventions: a weight W read from GGUF has numpy shape [out, in] (the reversed GGML shape), so
a projection is x @ W.T. GGUF llama-arch files hold Q/K rows permuted by the HF->GGUF converter
so that the "normal" rope (rotating pairs (2i, 2i+1)) applies; qwen2 keeps HF order and uses
NeoX rope (pairs (i, i + n_rot/2)).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import gguf

# Architecture -> rope style. Anything else is refused rather than guessed.
ROPE_STYLE = {"llama": "normal", "qwen2": "neox"}


def _field(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


class LlamaRef:
    def __init__(self, path: str, dtype=np.float64):
        r = gguf.GGUFReader(path)
        self.reader = r
        self.arch = arch = _field(r, "general.architecture")
        if arch not in ROPE_STYLE:
            raise NotImplementedError(f"llama_ref: architecture {arch!r} not supported")
        self.rope_style = ROPE_STYLE[arch]
        g = lambda k, d=None: _field(r, f"{arch}.{k}", d)
        self.n_layer = int(g("block_count"))
        self.d_model = int(g("embedding_length"))
        self.n_head = int(g("attention.head_count"))
        self.n_kv = int(g("attention.head_count_kv", self.n_head))
        self.head_dim = int(g("attention.key_length", self.d_model // self.n_head))
        self.n_rot = int(g("rope.dimension_count", self.head_dim))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.rope_base = float(g("rope.freq_base", 10000.0))
        self.rope_scale = 1.0  # positions are divided by the linear factor
        scaling = g("rope.scaling.type")
        factor = float(g("rope.scaling.factor", g("rope.scale_linear", 1.0)) or 1.0)
        if scaling not in (None, "none", "linear"):
            raise NotImplementedError(f"llama_ref: rope scaling {scaling!r} not supported")
        if scaling == "linear" or (scaling is None and factor != 1.0):
            self.rope_scale = factor
        self.eos_id = _field(r, "tokenizer.ggml.eos_token_id")
        self.dtype = dtype
        self.w = {t.name: self._dequant(t) for t in r.tensors}
        self._finish()

    @classmethod
    def from_hf(cls, folder: str, dtype=np.float64) -> "LlamaRef":
        """The same forward pass on a Hugging Face folder (config.json + *.safetensors): HF rows
        with NeoX rope, rope_scaling computed the way transformers does (default, linear,
        llama3), independently of the GGUF converter's rope_freqs tensor."""
        import glob
        import json
        import os

        from safetensors.numpy import load_file

        with open(os.path.join(folder, "config.json")) as f:
            c = json.load(f)
        if c["model_type"] not in ("llama", "mistral", "qwen2"):
            raise NotImplementedError(f"llama_ref: model_type {c['model_type']!r} not supported")
        self = cls.__new__(cls)
        self.reader, self.arch, self.rope_style, self.dtype = None, c["model_type"], "neox", dtype
        self.n_layer, self.d_model = c["num_hidden_layers"], c["hidden_size"]
        self.n_head = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads") or self.n_head
        self.head_dim = c.get("head_dim") or self.d_model // self.n_head
        self.n_rot, self.eps = self.head_dim, c["rms_norm_eps"]
        self.rope_base, self.rope_scale = float(c.get("rope_theta", 10000.0)), 1.0
        self.eos_id = c.get("eos_token_id")
        rs = c.get("rope_scaling") or {}
        rope_type = rs.get("rope_type", rs.get("type", "default"))
        hf = {}
        for shard in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
            hf.update(load_file(shard))
        names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
                 "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
        rename = {"model.embed_tokens.weight": "token_embd.weight",
                  "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
        self.w = {}
        for name, t in hf.items():
            if name.startswith("model.layers."):
                _, _, i, rest = name.split(".", 3)
                module, kind = rest.rsplit(".", 1)
                name = f"blk.{i}.{names[module]}.{kind}"
            else:
                name = rename[name]
            self.w[name] = np.asarray(t, dtype=dtype)
        if c.get("tie_word_embeddings"):
            self.w.pop("output.weight", None)
        if rope_type == "linear":
            self.rope_scale = float(rs["factor"])
        elif rope_type == "llama3":  # transformers' _compute_llama3_parameters
            inv = self._base_inv_freq()
            factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old_ctx = rs["original_max_position_embeddings"]
            wavelen = 2 * np.pi / inv
            scaled = np.where(wavelen > old_ctx / low, inv / factor, inv)
            smooth = (old_ctx / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < old_ctx / high) & ~(wavelen > old_ctx / low)
            self.w["rope_freqs.weight"] = inv / np.where(medium, smoothed, scaled)
        elif rope_type != "default":
            raise NotImplementedError(f"llama_ref: rope_scaling {rope_type!r} not supported")
        self._finish()
        return self

    def _finish(self):
        if "output.weight" not in self.w:  # tied embeddings
            self.w["output.weight"] = self.w["token_embd.weight"]
        self.vocab = self.w["output.weight"].shape[0]

    def _dequant(self, t) -> np.ndarray:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(s) for s in reversed(t.shape))  # numpy order: [out, in]
        return np.ascontiguousarray(a.reshape(shape), dtype=self.dtype)

    # --- building blocks -------------------------------------------------------------------
    def rms_norm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _base_inv_freq(self) -> np.ndarray:
        return self.rope_base ** (-np.arange(self.n_rot // 2, dtype=np.float64) * 2.0 / self.n_rot)

    def rope(self, x, pos):
        """x: [T, H, head_dim]; pos: [T] absolute positions. A `rope_freqs.weight` tensor
        (Llama-3 scaling, as llama.cpp stores it) divides the inverse frequencies."""
        half = self.n_rot // 2
        inv = self._base_inv_freq()
        if "rope_freqs.weight" in self.w:
            inv = inv / self.w["rope_freqs.weight"]
        ang = (pos.astype(np.float64) / self.rope_scale)[:, None] * inv[None, :]  # [T, half]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        if self.rope_style == "normal":
            a, b = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
            out[..., 0:self.n_rot:2] = a * cos - b * sin
            out[..., 1:self.n_rot:2] = a * sin + b * cos
        else:
            a, b = x[..., :half], x[..., half:self.n_rot]
            out[..., :half] = a * cos - b * sin
            out[..., half:self.n_rot] = a * sin + b * cos
        return out

    def linear(self, x, name):
        y = x @ self.w[name + ".weight"].T
        bias = self.w.get(name + ".bias")
        return y if bias is None else y + bias

    def attention(self, q, k, v, start):
        """q: [T, H, hd]; k, v: [S, KV, hd] (S = start + T, cache included). Causal."""
        T, S = q.shape[0], k.shape[0]
        group = self.n_head // self.n_kv
        k = np.repeat(k, group, axis=1)  # [S, H, hd]: query head h reads kv head h // group
        v = np.repeat(v, group, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(self.head_dim)
        allowed = np.arange(S)[None, :] <= (start + np.arange(T))[:, None]  # [T, S]
        scores = np.where(allowed[None], scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        return np.einsum("hts,shd->thd", p, v)

    # --- model -----------------------------------------------------------------------------
    def new_cache(self):
        return {"pos": 0, "k": [None] * self.n_layer, "v": [None] * self.n_layer}

    def forward(self, tokens, cache=None) -> np.ndarray:
        """Logits [T, vocab] (float32) for `tokens`, continuing `cache` if given."""
        cache = cache if cache is not None else self.new_cache()
        tokens = np.asarray(tokens, dtype=np.int64)
        T, start = len(tokens), cache["pos"]
        pos = start + np.arange(T)
        x = self.w["token_embd.weight"][tokens]  # [T, d]
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self.rms_norm(x, self.w[p + "attn_norm.weight"])
            q = self.linear(h, p + "attn_q").reshape(T, self.n_head, self.head_dim)
            k = self.linear(h, p + "attn_k").reshape(T, self.n_kv, self.head_dim)
            v = self.linear(h, p + "attn_v").reshape(T, self.n_kv, self.head_dim)
            q, k = self.rope(q, pos), self.rope(k, pos)
            if cache["k"][i] is not None:
                k = np.concatenate([cache["k"][i], k])
                v = np.concatenate([cache["v"][i], v])
            cache["k"][i], cache["v"][i] = k, v
            a = self.attention(q, k, v, start).reshape(T, self.n_head * self.head_dim)
            x = x + self.linear(a, p + "attn_output")
            h = self.rms_norm(x, self.w[p + "ffn_norm.weight"])
            gate, up = self.linear(h, p + "ffn_gate"), self.linear(h, p + "ffn_up")
            x = x + self.linear(gate / (1.0 + np.exp(-gate)) * up, p + "ffn_down")
        cache["pos"] = start + T
        x = self.rms_norm(x, self.w["output_norm.weight"])
        return (x @ self.w["output.weight"].T).astype(np.float32)

    def greedy(self, tokens, n, stop_at_eos=True) -> list[int]:
        """n greedy tokens after `tokens` (fewer if EOS is generated; EOS is included)."""
        cache = self.new_cache()
        logits = self.forward(tokens, cache)
        out = []
        for _ in range(n):
            tok = int(np.argmax(logits[-1]))
            out.append(tok)
            if stop_at_eos and tok == self.eos_id:
                break
            logits = self.forward([tok], cache)
        return out


def load_tokenizer(path: str):
    """A HF `tokenizers` tokenizer built from the GGUF's gpt2 vocab, for development only:
    the tests take prompt ids from `peng tokenize` so that both sides see the same ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    r = gguf.GGUFReader(path)
    if _field(r, "tokenizer.ggml.model") != "gpt2":
        raise NotImplementedError("load_tokenizer: only gpt2 (byte-level BPE) vocabularies")
    tokens = _field(r, "tokenizer.ggml.tokens")
    types = _field(r, "tokenizer.ggml.token_type", [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in _field(r, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre = _field(r, "tokenizer.ggml.pre", "gpt2")
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("gpt2", "default"):
        tok.pre_tokenizer = byte_level
    else:
        raise NotImplementedError(f"load_tokenizer: pre-tokenizer {pre!r}")
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty in (3, 4)])
    return tok


def chat_prompt(user: str) -> str:
    return ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
            f"Hugging Face<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--ids", help="comma-separated prompt ids (instead of --prompt)")
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in the ChatML template")
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--logits-out", help="write prompt logits [T, vocab] as .npy")
    args = ap.parse_args(argv)
    model = LlamaRef(args.model)
    tok = load_tokenizer(args.model)
    if args.ids:
        ids = [int(s) for s in args.ids.split(",")]
    else:
        ids = tok.encode(chat_prompt(args.prompt) if args.chat else args.prompt).ids
    print("prompt ids:", ids)
    if args.logits_out:
        np.save(args.logits_out, model.forward(ids))
    out = model.greedy(ids, args.n)
    print("generated ids:", out)
    print("text:", repr(tok.decode(out, skip_special_tokens=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
