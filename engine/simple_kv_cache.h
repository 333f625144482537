// SimpleKvCache: a KvCache with fixed-size pages of a dense format (f32, f16, bf16) allocated
// from the heap on demand, one page list per (sequence, layer, kv-head); keys in key-lane blocks
// (kernels/kv_format.h).
// Unbounded except by `max_tokens` per sequence. Used by `peng generate`, `peng logits` and
// tests; the serving path uses memory/'s page pool.
#pragma once

#include <memory>
#include <unordered_map>

#include "engine/kv_cache.h"

namespace peng {

class SimpleKvCache : public KvCache {
 public:
  // `format` must be dense (f32, f16 or bf16).
  SimpleKvCache(int num_layers, int num_kv_heads, int head_dim, int64_t max_tokens,
                int tokens_per_page = 64, kernels::KvFormat format = kernels::KvFormat::kF32);

  absl::Status Reserve(int64_t seq, int64_t end) override;
  void Release(int64_t seq) override;
  void Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
             const float* v) override;
  void Spans(int64_t seq, int layer, int kv_head, int64_t len,
             std::vector<kernels::KvSpan>* out) const override;
  kernels::KvFormat format() const override { return format_; }

 private:
  struct Page {
    std::unique_ptr<uint8_t[]> k, v;
  };
  struct Sequence {
    int64_t reserved = 0;
    std::vector<std::vector<Page>> tables;  // [layer * num_kv_heads + kv_head] -> pages
  };
  Page& PageOf(int64_t seq, int layer, int kv_head, int64_t pos);
  int KeyLanes() const { return kernels::KeyLanes(format_, tokens_per_page_); }

  int num_layers_, num_kv_heads_, head_dim_;
  int64_t max_tokens_;
  int tokens_per_page_;
  kernels::KvFormat format_;
  size_t row_bytes_;  // one token's key or value
  std::unordered_map<int64_t, Sequence> seqs_;
};

}  // namespace peng
