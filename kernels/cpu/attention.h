// Causal attention of one query vector over a key/value history split into spans (pages).
// The KV store hands out spans of contiguous tokens of one (sequence, layer, kv-head); a span
// stores keys and values as [tokens x head_dim] float32. This is the hand-written CPU kernel
// that the generated kernels (kernels issue) replace behind the same call.
#pragma once

#include <cstdint>

namespace peng::kernels {

struct KvSpan {
  const float* k = nullptr;  // [num_tokens x head_dim]
  const float* v = nullptr;  // [num_tokens x head_dim]
  int64_t num_tokens = 0;
};

// out = softmax(scale * q·K[0:kv_len]ᵀ) · V[0:kv_len], reading the first kv_len tokens of the
// spans in order. `scores` has room for kv_len floats.
void AttendOne(const float* q, const KvSpan* spans, int num_spans, int64_t kv_len, int head_dim,
               float scale, float* out, float* scores);

}  // namespace peng::kernels
