// The CUDA worker's elementwise and row kernels (ops.cu): embedding gather, RMSNorm, the
// fused q/k/v epilogue (bias, RoPE, KV page store), SwiGLU and casts. Host-callable launchers
// over device pointers; each enqueues on `stream` and returns the launch's cudaError_t. bf16
// values are passed as their bit patterns (uint16_t) so that host code needs no CUDA types.
// Stateless; any thread.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/ops.h"
#include "kernels/kv_format.h"

namespace peng::cuda {

using Bf16 = uint16_t;

// dst row t = table row ids[t] (row_bytes raw bytes each; GGML blocks stay packed).
cudaError_t GatherRows(const uint8_t* table, size_t row_bytes, const int32_t* ids, int64_t n,
                       uint8_t* dst, cudaStream_t stream);

// y[r] = bf16(x[row_r] * rsqrt(mean(x[row_r]²) + eps) * w), row_r = rows ? rows[r] : r, for
// r < n; x rows are d floats apart, y rows d values apart.
cudaError_t RmsNormToBf16(const float* x, const int32_t* rows, const float* w, float eps, int d,
                          int64_t n, Bf16* y, cudaStream_t stream);

// Where the q/k/v epilogue puts keys and values: memory/kv_manager.h's page layout. Token t
// (of sequence seq[t], at position pos[t]) and kv-head h go to page
// page_table[(seq[t] * num_kv_heads + h) * max_pages + pos[t] / tokens_per_page].
struct KvStoreTarget {
  uint8_t* base = nullptr;
  int64_t page_bytes = 0;
  int tokens_per_page = 0;
  const int32_t* page_table = nullptr;
  int max_pages = 0;
  kernels::KvFormat format = kernels::KvFormat::kF16;
};

struct QkvShape {
  int num_heads = 0, num_kv_heads = 0, head_dim = 0, rope_dim = 0;
  kernels::RopeStyle rope_style = kernels::RopeStyle::kInterleaved;
};

// For every token t: takes its row of qkv ([q | k | v], (num_heads + 2·num_kv_heads)·head_dim
// floats), adds `bias` (same width; may be null), rotates q and k by pos[t] (inv_freq:
// rope_dim / 2 entries), writes q to q_out [n x num_heads·head_dim] and k, v into their pages.
cudaError_t QkvEpilogue(const float* qkv, const float* bias, const float* inv_freq,
                        const int32_t* pos, const int32_t* seq, int64_t n, const QkvShape& shape,
                        const KvStoreTarget& kv, float* q_out, cudaStream_t stream);

// out[t][i] = bf16(silu(gu[t][i]) · gu[t][ffn + i]) for t < n, i < ffn.
cudaError_t SwiGluToBf16(const float* gu, int64_t n, int ffn, Bf16* out, cudaStream_t stream);

// dst[i] = bf16(src[i]) (round to nearest even), i < n.
cudaError_t CastToBf16(const float* src, int64_t n, Bf16* dst, cudaStream_t stream);

}  // namespace peng::cuda
