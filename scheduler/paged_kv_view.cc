#include "scheduler/paged_kv_view.h"

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "kernels/cpu/kv_store.h"

namespace peng {

PagedKvView::PagedKvView(memory::KvManager* kv)
    : kv_(kv),
      tokens_per_page_(kv->options().tokens_per_page),
      segments_(kernels::PageSegmentsOf(kv->options().format, kv->shape().head_dim, tokens_per_page_)) {}

absl::Status PagedKvView::Reserve(int64_t seq, int64_t end) {
  if (!kv_->Has(seq) || kv_->Length(seq) < end) {
    return absl::InternalError(absl::StrCat("sequence ", seq, " was not given KV room for ", end, " tokens"));
  }
  return absl::OkStatus();
}

void PagedKvView::Release(int64_t seq) { kv_->Free(seq); }

void PagedKvView::Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
                        const float* v) {
  const std::span<const int32_t> table = kv_->PageTable(seq, layer, kv_head);
  const size_t p = static_cast<size_t>(pos / tokens_per_page_);
  PENG_CHECK(p < table.size());
  kernels::StoreKvToken(kv_->options().format, kv_->shape().head_dim, tokens_per_page_, k, v, pos,
                        static_cast<int>(pos % tokens_per_page_), kv_->PageData(table[p]));
}

void PagedKvView::Spans(int64_t seq, int layer, int kv_head, int64_t len,
                        std::vector<kernels::KvSpan>* out) const {
  out->clear();
  const std::span<const int32_t> table = kv_->PageTable(seq, layer, kv_head);
  for (int64_t start = 0, p = 0; start < len; start += tokens_per_page_, ++p) {
    PENG_CHECK(static_cast<size_t>(p) < table.size());
    const uint8_t* page = kv_->PageData(table[p]);
    kernels::KvSpan span;
    span.k = page + segments_.k;
    span.v = page + segments_.v;
    span.num_tokens = std::min<int64_t>(tokens_per_page_, len - start);
    span.format = kv_->options().format;
    if (kernels::IsQuantized(span.format)) {
      span.k_meta = page + segments_.k_meta;
      span.v_meta = page + segments_.v_meta;
    }
    out->push_back(span);
  }
}

KvPageLayout PagedKvView::PageLayout() const {
  return {kv_->PageData(0), static_cast<int64_t>(kv_->page_bytes()), tokens_per_page_,
          kv_->options().format};
}

}  // namespace peng
