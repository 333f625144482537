// CudaAttention: the CUDA worker's handle on the generated attention kernels
// (kernels/attention/dispatch.h) for one model and KV format — the prefill (varlen, paged)
// and decode (paged, split-KV) instances of {kv_format, head_dim, group = heads / kv heads,
// scale, causal, softmax}. Both are looked up once at start: a variant that was not built is
// an error naming it. This header keeps the kernels' layout structs out of the worker's other
// files. Immutable; thread-safe.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/kv_format.h"

namespace peng::kernels {
struct CudaAttentionKernel;  // kernels/attention/dispatch.h
}  // namespace peng::kernels

namespace peng::cuda {

// One batched launch (kernels/attention/args.h's CudaAttentionBatch, spelled out). All
// pointers are device pointers; max_q_len / max_kv_len are host values for the grid.
struct AttentionLaunch {
  int num_seqs = 0;
  int num_kv_heads = 0;
  const float* q = nullptr;   // [tokens x num_heads·head_dim]
  float* out = nullptr;       // same shape
  const int32_t* q_start = nullptr;  // [num_seqs + 1]
  const int32_t* kv_len = nullptr;   // [num_seqs]
  const uint8_t* kv_base = nullptr;
  int64_t page_bytes = 0;
  int tokens_per_page = 0;
  const int32_t* page_table = nullptr;  // [num_seqs·num_kv_heads x max_pages]
  int max_pages = 0;
  float scale = 1.0f;
  int max_q_len = 0;
  int max_kv_len = 0;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

class CudaAttention {
 public:
  static absl::StatusOr<CudaAttention> Find(kernels::KvFormat format, int head_dim, int group);

  // Scratch the decode instance needs for this batch.
  size_t WorkspaceBytes(int num_seqs, int num_heads, int head_dim, int max_kv_len) const;
  // prefill: some sequence has more than one query token; else every sequence has exactly one.
  absl::Status Launch(const AttentionLaunch& launch, bool prefill, cudaStream_t stream) const;

 private:
  const kernels::CudaAttentionKernel* prefill_ = nullptr;
  const kernels::CudaAttentionKernel* decode_ = nullptr;
};

}  // namespace peng::cuda
