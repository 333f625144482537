#include "engine/cuda/cuda_kv_cache.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "engine/cuda/cuda_status.h"
#include "kernels/cpu/kv_store.h"

namespace peng::cuda {

absl::StatusOr<std::unique_ptr<CudaKvCache>> CudaKvCache::Create(const CudaKvCacheOptions& o) {
  if (o.num_layers <= 0 || o.num_kv_heads <= 0 || o.head_dim <= 0 || o.max_tokens <= 0 ||
      o.max_seqs <= 0 || o.tokens_per_page <= 0) {
    return absl::InvalidArgumentError("CUDA KV cache: every size must be positive");
  }
  std::unique_ptr<CudaKvCache> kv(new CudaKvCache(o));
  kv->row_bytes_ = kernels::KvFormatBytes(o.format) * o.head_dim;
  kv->page_bytes_ = static_cast<int64_t>(2 * kv->row_bytes_ * o.tokens_per_page);
  const int64_t pages = int64_t{o.max_seqs} * o.num_layers * o.num_kv_heads *
                        ((o.max_tokens + o.tokens_per_page - 1) / o.tokens_per_page);
  if (pages > INT32_MAX) return absl::InvalidArgumentError("CUDA KV cache: more than 2^31 pages");
  PENG_ASSIGN_OR_RETURN(kv->memory_, DeviceBuffer::Allocate(pages * kv->page_bytes_, "KV pages"));
  kv->free_.resize(pages);
  for (int64_t i = 0; i < pages; ++i) kv->free_[i] = static_cast<int32_t>(pages - 1 - i);
  return kv;
}

absl::Status CudaKvCache::Reserve(int64_t seq, int64_t end) {
  if (end > o_.max_tokens) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sequence needs ", end, " KV tokens, the cache holds ", o_.max_tokens));
  }
  auto it = seqs_.find(seq);
  const int64_t have = it == seqs_.end() ? 0 : static_cast<int64_t>(it->second.tables[0].size());
  const int64_t want = (end + o_.tokens_per_page - 1) / o_.tokens_per_page;
  const int64_t tables = int64_t{o_.num_layers} * o_.num_kv_heads;
  const int64_t need = std::max<int64_t>(0, want - have) * tables;
  if (need > static_cast<int64_t>(free_.size())) {
    return absl::ResourceExhaustedError(absl::StrCat("CUDA KV cache: ", need, " pages needed, ",
                                                     free_.size(), " free"));
  }
  Sequence& s = seqs_[seq];
  if (s.tables.empty()) s.tables.resize(tables);
  for (auto& table : s.tables) {
    while (static_cast<int64_t>(table.size()) < want) {
      table.push_back(free_.back());
      free_.pop_back();
    }
  }
  s.reserved = std::max(s.reserved, end);
  return absl::OkStatus();
}

void CudaKvCache::Release(int64_t seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  for (const auto& table : it->second.tables) free_.insert(free_.end(), table.begin(), table.end());
  seqs_.erase(it);
}

void CudaKvCache::Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
                        const float* v) {
  auto it = seqs_.find(seq);
  PENG_CHECK(it != seqs_.end() && pos < it->second.reserved);
  const int32_t page =
      it->second.tables[static_cast<size_t>(layer) * o_.num_kv_heads + kv_head][pos / o_.tokens_per_page];
  uint8_t* k_row = memory_.data() + page * page_bytes_ + (pos % o_.tokens_per_page) * row_bytes_;
  std::vector<uint8_t> host(row_bytes_);
  kernels::StoreKvRow(k, o_.format, o_.head_dim, host.data());
  PENG_CHECK(cudaMemcpy(k_row, host.data(), row_bytes_, cudaMemcpyHostToDevice) == cudaSuccess);
  kernels::StoreKvRow(v, o_.format, o_.head_dim, host.data());
  PENG_CHECK(cudaMemcpy(k_row + o_.tokens_per_page * row_bytes_, host.data(), row_bytes_,
                        cudaMemcpyHostToDevice) == cudaSuccess);
}

void CudaKvCache::Spans(int64_t seq, int layer, int kv_head, int64_t len,
                        std::vector<kernels::KvSpan>* out) const {
  out->clear();
  auto it = seqs_.find(seq);
  PENG_CHECK(it != seqs_.end() && len <= it->second.reserved);
  const auto& table = it->second.tables[static_cast<size_t>(layer) * o_.num_kv_heads + kv_head];
  for (int64_t start = 0, p = 0; start < len; start += o_.tokens_per_page, ++p) {
    const uint8_t* k = memory_.data() + table[p] * page_bytes_;
    out->push_back({k, k + o_.tokens_per_page * row_bytes_,
                    std::min<int64_t>(o_.tokens_per_page, len - start), o_.format});
  }
}

KvPageLayout CudaKvCache::PageLayout() const {
  return {memory_.data(), page_bytes_, o_.tokens_per_page, o_.format};
}

}  // namespace peng::cuda
