// Causal attention of one query vector over a key/value history split into spans (pages).
// The KV store hands out spans of contiguous tokens of one (sequence, layer, kv-head); a span
// stores keys and values as [tokens x head_dim] rows in one KvFormat. This is the hand-written
// CPU kernel that the generated kernels (kernels issue) replace behind the same call.
#pragma once

#include <cstdint>

#include "kernels/kv_format.h"

namespace peng::kernels {

struct KvSpan {
  const void* k = nullptr;  // [num_tokens x head_dim] in `format`
  const void* v = nullptr;  // [num_tokens x head_dim] in `format`
  int64_t num_tokens = 0;
  KvFormat format = KvFormat::kF32;
};

// out = softmax(scale * q·K[0:kv_len]ᵀ) · V[0:kv_len], reading the first kv_len tokens of the
// spans in order. `scores` has room for kv_len floats.
void AttendOne(const float* q, const KvSpan* spans, int num_spans, int64_t kv_len, int head_dim,
               float scale, float* out, float* scores);

// Converts n floats into `format` at dst (for KV stores writing new tokens).
void StoreKvRow(const float* src, KvFormat format, int64_t n, void* dst);

}  // namespace peng::kernels
