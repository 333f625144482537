// CpuAttention: one layer's attention for a whole batch on the CPU, through the generated
// kernels (kernels/attention/dispatch.h). Chunks of several tokens run the prefill variant in
// blocks of queries; one-token chunks run the decode variant, split along a long history
// (split-KV, merged by the log-sum-exp combine). The split count depends only on the history
// length, so a sequence's result never depends on what else is in the batch. Owned by the
// forward's thread; runs its tasks on the forward's pool.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "base/thread_pool.h"
#include "engine/forward_backend.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"
#include "kernels/attention/dispatch.h"

namespace peng {

class CpuAttention {
 public:
  // Decode histories longer than this are split into parts of this many tokens.
  static constexpr int64_t kDecodeSplitTokens = 1024;
  // Queries per prefill task.
  static constexpr int64_t kPrefillBlockTokens = 32;

  explicit CpuAttention(const ModelConfig& config) : c_(config) {}

  // Finds the kernels for this model's shape and `format` (once per format). The error names
  // the variant tuple that was not built.
  absl::Status Prepare(kernels::KvFormat format);

  // out[t] = attention of query row t ([tokens x num_heads·head_dim], batch order) over its
  // sequence's history in `kv` for `layer` (the batch's own K/V already stored).
  void Run(ThreadPool& pool, int layer, const ForwardBatch& batch, const KvCache& kv, const float* q,
           float* out);

 private:
  struct Task {
    int32_t chunk = 0;
    int32_t kv_head = 0;
    int64_t begin = 0, end = 0;  // prefill: query offsets in the chunk; decode: kv range
    int64_t part = -1;           // decode: slot of its partial (-1: prefill)
  };
  struct Combine {
    int32_t chunk = 0, kv_head = 0;
    int64_t first_part = 0;
    int num_splits = 0;
  };

  const ModelConfig& c_;
  kernels::KvFormat format_ = kernels::KvFormat::kF32;
  const kernels::CpuAttentionKernel* prefill_ = nullptr;
  const kernels::CpuAttentionKernel* decode_ = nullptr;
  kernels::AttentionParams params_;
  // Per-call scratch, grown to the largest batch.
  std::vector<std::vector<kernels::KvSpan>> spans_;  // [chunk x kv_head]
  std::vector<int64_t> first_token_;                 // batch row of each chunk's first token
  std::vector<Task> tasks_;
  std::vector<Combine> combines_;
  std::vector<int64_t> split_begin_;                 // per combine: num_splits + 1 bounds
  std::vector<float> part_out_, part_lse_;
};

}  // namespace peng
