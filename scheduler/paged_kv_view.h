// PagedKvView: the engine's KvCache interface over the KvManager's pages, so the forward pass
// reads and writes the page pool directly. Page layout: kernels/kv_format.h (dense: keys then
// values; quantized: codes and per-token metadata segments), in the pool's format.
// Reserve() does not allocate — the scheduler grew every sequence before the step — it only
// checks. Used on the engine thread; Store/Spans of distinct rows from the forward's threads.
#pragma once

#include "engine/kv_cache.h"
#include "memory/kv_manager.h"

namespace peng {

class PagedKvView : public KvCache {
 public:
  explicit PagedKvView(memory::KvManager* kv);

  absl::Status Reserve(int64_t seq, int64_t end) override;
  void Release(int64_t seq) override;
  void Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
             const float* v) override;
  void Spans(int64_t seq, int layer, int kv_head, int64_t len,
             std::vector<kernels::KvSpan>* out) const override;
  KvPageLayout PageLayout() const override;
  kernels::KvFormat format() const override {
    return lean_ != nullptr ? lean_->options().high : kv_->options().format;
  }
  kernels::KvFormat low_format() const override {
    return lean_ != nullptr ? lean_->options().low : kv_->options().format;
  }
  bool partitioned() const override { return lean_ != nullptr; }
  void Partitions(int64_t seq, int layer, int kv_head, int64_t len, KvPartitions* out) const override;

 private:
  // Appends spans over `tokens` tokens of `pages` (page k = page_of(k)) to out.
  template <class PageOf>
  void AppendSpans(PageOf page_of, int64_t tokens, int tokens_per_page, kernels::KvFormat format,
                   const kernels::KvPageSegments& seg, std::vector<kernels::KvSpan>* out) const;

  memory::KvManager* kv_;
  const memory::LeanKv* lean_;        // LeanKV mode, else null
  int tokens_per_page_;
  kernels::KvPageSegments segments_;  // where keys, values and their metadata sit in a page
  kernels::KvPageSegments low_segments_;  // LeanKV: of low-precision pages (segments_: high)
};

}  // namespace peng
