#include "engine/simple_kv_cache.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "kernels/cpu/kv_store.h"

namespace peng {

SimpleKvCache::SimpleKvCache(int num_layers, int num_kv_heads, int head_dim, int64_t max_tokens,
                             int tokens_per_page, kernels::KvFormat format)
    : num_layers_(num_layers),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      max_tokens_(max_tokens),
      tokens_per_page_(tokens_per_page),
      format_(format),
      row_bytes_(kernels::KvFormatBytes(format) * head_dim) {
  PENG_CHECK(!kernels::IsQuantized(format));  // callers pass dense formats only
}

absl::Status SimpleKvCache::Reserve(int64_t seq, int64_t end) {
  if (end > max_tokens_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sequence needs ", end, " KV tokens, the cache holds ", max_tokens_));
  }
  Sequence& s = seqs_[seq];
  if (s.tables.empty()) s.tables.resize(static_cast<size_t>(num_layers_) * num_kv_heads_);
  const int64_t pages = (end + tokens_per_page_ - 1) / tokens_per_page_;
  const size_t page_bytes = static_cast<size_t>(tokens_per_page_) * row_bytes_;
  for (auto& table : s.tables) {
    while (static_cast<int64_t>(table.size()) < pages) {
      table.push_back({std::make_unique<uint8_t[]>(page_bytes), std::make_unique<uint8_t[]>(page_bytes)});
    }
  }
  s.reserved = std::max(s.reserved, end);
  return absl::OkStatus();
}

void SimpleKvCache::Release(int64_t seq) { seqs_.erase(seq); }

SimpleKvCache::Page& SimpleKvCache::PageOf(int64_t seq, int layer, int kv_head, int64_t pos) {
  auto it = seqs_.find(seq);
  PENG_CHECK(it != seqs_.end() && pos < it->second.reserved);
  return it->second.tables[static_cast<size_t>(layer) * num_kv_heads_ + kv_head][pos / tokens_per_page_];
}

void SimpleKvCache::Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
                          const float* v) {
  Page& page = PageOf(seq, layer, kv_head, pos);
  const int slot = static_cast<int>(pos % tokens_per_page_);
  kernels::StoreKeyLanes(k, format_, head_dim_, KeyLanes(), slot, page.k.get());
  kernels::StoreKvRow(v, format_, head_dim_, page.v.get() + slot * row_bytes_);
}

void SimpleKvCache::Spans(int64_t seq, int layer, int kv_head, int64_t len,
                          std::vector<kernels::KvSpan>* out) const {
  out->clear();
  auto it = seqs_.find(seq);
  PENG_CHECK(it != seqs_.end() && len <= it->second.reserved);
  const auto& table = it->second.tables[static_cast<size_t>(layer) * num_kv_heads_ + kv_head];
  for (int64_t start = 0, p = 0; start < len; start += tokens_per_page_, ++p) {
    out->push_back({.k = table[p].k.get(), .v = table[p].v.get(),
                    .num_tokens = std::min<int64_t>(tokens_per_page_, len - start),
                    .format = format_,
                    .key_lanes = KeyLanes()});
  }
}

}  // namespace peng
