// CudaKvCache: a KvCache whose pages live in one cudaMalloc'd region in memory/'s page layout
// (K rows then V rows per page of one (sequence, layer, kv-head); engine/kv_cache.h's
// KvPageLayout), for `peng generate --device cuda` and tests. Reserve takes pages from a free
// list; the serving path uses memory/'s KvManager over CudaForward::KvPoolMemory instead.
// Spans hold device pointers. Owned by one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda/device_arena.h"
#include "engine/kv_cache.h"

namespace peng::cuda {

struct CudaKvCacheOptions {
  int num_layers = 0, num_kv_heads = 0, head_dim = 0;
  int64_t max_tokens = 0;  // per sequence
  int max_seqs = 1;        // sequences held at once (the region is sized for all of them)
  int tokens_per_page = 16;
  kernels::KvFormat format = kernels::KvFormat::kF16;
};

class CudaKvCache : public KvCache {
 public:
  static absl::StatusOr<std::unique_ptr<CudaKvCache>> Create(const CudaKvCacheOptions& options);

  absl::Status Reserve(int64_t seq, int64_t end) override;
  void Release(int64_t seq) override;
  // Converts on the host and copies (synchronously): for tests; CudaForward writes on device.
  void Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
             const float* v) override;
  void Spans(int64_t seq, int layer, int kv_head, int64_t len,
             std::vector<kernels::KvSpan>* out) const override;
  kernels::KvFormat format() const override { return o_.format; }
  KvPageLayout PageLayout() const override;

 private:
  struct Sequence {
    int64_t reserved = 0;
    std::vector<std::vector<int32_t>> tables;  // [layer * num_kv_heads + kv_head] -> page ids
  };
  explicit CudaKvCache(const CudaKvCacheOptions& o) : o_(o) {}

  CudaKvCacheOptions o_;
  int64_t page_bytes_ = 0;
  size_t row_bytes_ = 0;
  DeviceBuffer memory_;
  std::vector<int32_t> free_;  // free page ids
  std::unordered_map<int64_t, Sequence> seqs_;
};

}  // namespace peng::cuda
