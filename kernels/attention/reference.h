// Naive float64 attention, the independent reference every generated variant is tested
// against (kernels/attention/testing.h) and benchmarks check their outputs with. One
// (sequence, kv-head) at a time: rows are (query token t, group head g); keys and values are
// plain float rows (already rounded to the KV format by the caller). Slow on purpose: a
// straight transcription of the definition, no tiling, no online reduction.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/attention/args.h"
#include "kernels/attention/variant.h"

namespace peng::kernels {

struct ReferenceAttentionInput {
  AttentionVariant variant;     // head_dim, group, score_mod, mask_mod, reduction are used
  const float* q = nullptr;     // [num_q x group x head_dim]
  int64_t num_q = 0;
  int64_t q_pos0 = 0;           // query t sits at q_pos0 + t
  const float* k = nullptr;     // [kv_len x head_dim]
  const float* v = nullptr;     // [kv_len x head_dim]
  int64_t kv_len = 0;
  AttentionParams params;
};

struct ReferenceAttentionOutput {
  std::vector<double> out;    // [num_q x group x head_dim]
  std::vector<double> lse;    // [num_q x group]; −inf for a row that admits nothing (softmax)
  std::vector<double> probs;  // [num_q x group x kv_len]: softmax probability or σ(s); 0 masked
};

ReferenceAttentionOutput ReferenceAttention(const ReferenceAttentionInput& in);

}  // namespace peng::kernels
