// SimpleKvCache: a KvCache with fixed-size float32 pages allocated from the heap on demand, one
// page list per (sequence, layer, kv-head); keys in key-lane blocks (kernels/kv_format.h).
// Unbounded except by `max_tokens` per sequence. Used by `peng generate`, `peng logits` and
// tests; the serving path uses memory/'s page pool.
#pragma once

#include <memory>
#include <unordered_map>

#include "engine/kv_cache.h"

namespace peng {

class SimpleKvCache : public KvCache {
 public:
  SimpleKvCache(int num_layers, int num_kv_heads, int head_dim, int64_t max_tokens,
                int tokens_per_page = 64);

  absl::Status Reserve(int64_t seq, int64_t end) override;
  void Release(int64_t seq) override;
  void Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
             const float* v) override;
  void Spans(int64_t seq, int layer, int kv_head, int64_t len,
             std::vector<kernels::KvSpan>* out) const override;
  kernels::KvFormat format() const override { return kernels::KvFormat::kF32; }

 private:
  struct Page {
    std::unique_ptr<float[]> k, v;
  };
  struct Sequence {
    int64_t reserved = 0;
    std::vector<std::vector<Page>> tables;  // [layer * num_kv_heads + kv_head] -> pages
  };
  Page& PageOf(int64_t seq, int layer, int kv_head, int64_t pos);
  int KeyLanes() const { return kernels::KeyLanes(kernels::KvFormat::kF32, tokens_per_page_); }

  int num_layers_, num_kv_heads_, head_dim_;
  int64_t max_tokens_;
  int tokens_per_page_;
  std::unordered_map<int64_t, Sequence> seqs_;
};

}  // namespace peng
