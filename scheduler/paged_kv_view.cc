#include "scheduler/paged_kv_view.h"

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "kernels/cpu/kv_store.h"

namespace peng {

PagedKvView::PagedKvView(memory::KvManager* kv)
    : kv_(kv),
      lean_(kv->lean()),
      tokens_per_page_(lean_ != nullptr ? lean_->pages().high_tokens : kv->options().tokens_per_page),
      segments_(kernels::PageSegmentsOf(format(), kv->shape().head_dim, tokens_per_page_)),
      low_segments_(lean_ != nullptr ? kernels::PageSegmentsOf(lean_->options().low, kv->shape().head_dim,
                                                               lean_->pages().low_tokens)
                                     : segments_) {}

absl::Status PagedKvView::Reserve(int64_t seq, int64_t end) {
  if (!kv_->Has(seq) || kv_->Length(seq) < end) {
    return absl::InternalError(absl::StrCat("sequence ", seq, " was not given KV room for ", end, " tokens"));
  }
  return absl::OkStatus();
}

void PagedKvView::Release(int64_t seq) { kv_->Free(seq); }

void PagedKvView::Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
                        const float* v) {
  const int head_dim = kv_->shape().head_dim;
  if (lean_ != nullptr) {  // this step's tokens go to the tail of the high list
    const memory::LeanKv::StoreSlot at =
        lean_->SlotForStore(seq, layer * kv_->shape().num_kv_heads + kv_head, pos);
    kernels::StoreKvToken(format(), head_dim, tokens_per_page_, k, v, pos, at.slot, kv_->PageData(at.page));
    return;
  }
  const std::span<const int32_t> table = kv_->PageTable(seq, layer, kv_head);
  const size_t p = static_cast<size_t>(pos / tokens_per_page_);
  PENG_CHECK(p < table.size());
  kernels::StoreKvToken(format(), head_dim, tokens_per_page_, k, v, pos,
                        static_cast<int>(pos % tokens_per_page_), kv_->PageData(table[p]));
}

template <class PageOf>
void PagedKvView::AppendSpans(PageOf page_of, int64_t tokens, int tokens_per_page,
                              kernels::KvFormat format, const kernels::KvPageSegments& seg,
                              std::vector<kernels::KvSpan>* out) const {
  for (int64_t start = 0, p = 0; start < tokens; start += tokens_per_page, ++p) {
    uint8_t* page = const_cast<memory::KvManager*>(kv_)->PageData(page_of(p));
    kernels::KvSpan span;
    span.k = page + seg.k;
    span.v = page + seg.v;
    span.num_tokens = std::min<int64_t>(tokens_per_page, tokens - start);
    span.format = format;
    span.key_lanes = kernels::KeyLanes(format, tokens_per_page);
    if (kernels::IsQuantized(format)) {
      span.k_meta = page + seg.k_meta;
      span.v_meta = page + seg.v_meta;
      span.scores = reinterpret_cast<float*>(page + seg.scores);
    }
    out->push_back(span);
  }
}

void PagedKvView::Spans(int64_t seq, int layer, int kv_head, int64_t len,
                        std::vector<kernels::KvSpan>* out) const {
  PENG_CHECK(lean_ == nullptr);  // LeanKV histories are read through Partitions
  out->clear();
  const std::span<const int32_t> table = kv_->PageTable(seq, layer, kv_head);
  PENG_CHECK((len + tokens_per_page_ - 1) / tokens_per_page_ <= static_cast<int64_t>(table.size()));
  AppendSpans([&](int64_t p) { return table[p]; }, len, tokens_per_page_, format(), segments_, out);
}

void PagedKvView::Partitions(int64_t seq, int layer, int kv_head, int64_t len,
                             KvPartitions* out) const {
  PENG_CHECK(lean_ != nullptr);
  const memory::LeanHeadLists lists = lean_->Lists(seq, layer * kv_->shape().num_kv_heads + kv_head);
  const int64_t processed = lean_->Processed(seq);
  PENG_CHECK(len >= processed && len <= lean_->Length(seq));
  out->high.clear();
  out->low.clear();
  out->high_before = lists.num_high;
  out->num_high = lists.num_high + (len - processed);
  out->num_low = lists.num_low;
  out->score_from = lean_->ScoreFrom(seq);
  AppendSpans([&](int64_t p) { return lists.HighPage(p); }, out->num_high, tokens_per_page_, format(),
              segments_, &out->high);
  AppendSpans([&](int64_t p) { return lists.LowPage(p); }, out->num_low, lean_->pages().low_tokens,
              low_format(), low_segments_, &out->low);
}

KvPageLayout PagedKvView::PageLayout() const {
  if (lean_ != nullptr) return {};  // two layouts in one pool: only Store/Partitions reach them
  return {kv_->PageData(0), static_cast<int64_t>(kv_->page_bytes()), tokens_per_page_, format()};
}

}  // namespace peng
