// KvCache: where the batched forward writes new keys/values and finds the history it attends
// to. Storage is per (sequence, layer, kv-head), handed to kernels as spans of contiguous tokens
// (pages), so the paged KV manager of memory/ implements this interface without touching the
// forward. Owned and used by one engine thread; not thread-safe for concurrent Reserve, but
// Store/Spans of distinct rows may be used from the forward's worker threads.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/attention/args.h"

namespace peng {

// Where a paged cache keeps its pages, for workers that address them through a page table
// (the CUDA worker): every span's k is base + page * page_bytes, its v k + tokens_per_page
// rows (memory/kv_manager.h's page layout). base may be a device pointer: never dereference it.
struct KvPageLayout {
  const uint8_t* base = nullptr;
  int64_t page_bytes = 0;
  int tokens_per_page = 0;
  kernels::KvFormat format = kernels::KvFormat::kF32;
};

// LeanKV caches: one (sequence, layer, kv-head)'s history as two lists, each in one format —
// high precision, then low precision — in no particular token order except that this step's
// tokens are the last num_high - high_before entries of the high list, in position order. Spans
// carry their pages' score slots (KvSpan::scores), where attention adds the probabilities of
// queries at positions >= score_from.
struct KvPartitions {
  std::vector<kernels::KvSpan> high, low;
  int64_t num_high = 0, num_low = 0;  // tokens in each list (num_high includes this step's)
  int64_t high_before = 0;            // high tokens from before this step
  int64_t score_from = 0;
};

class KvCache {
 public:
  virtual ~KvCache() = default;

  // Ensures storage for positions [0, end) of `seq` (creating the sequence if new). Fails with
  // ResourceExhausted, changing nothing, when it cannot.
  virtual absl::Status Reserve(int64_t seq, int64_t end) = 0;
  // Drops every token of `seq` and frees its storage.
  virtual void Release(int64_t seq) = 0;

  // Writes the key and value (head_dim floats each, converted to the store's format) of token
  // `pos` (pos < reserved end).
  virtual void Store(int64_t seq, int layer, int kv_head, int64_t pos, const float* k,
                     const float* v) = 0;

  // Spans covering tokens [0, len) in order (cleared first).
  virtual void Spans(int64_t seq, int layer, int kv_head, int64_t len,
                     std::vector<kernels::KvSpan>* out) const = 0;

  // The element format of every page (what the attention kernels must read); with
  // partitions, of the high list, and low_format() of the low list.
  virtual kernels::KvFormat format() const = 0;
  virtual kernels::KvFormat low_format() const { return format(); }

  // LeanKV caches return true and answer Partitions instead of Spans: the lists of (seq, layer,
  // kv_head) covering logical tokens [0, len) (len = this step's end).
  virtual bool partitioned() const { return false; }
  virtual void Partitions(int64_t seq, int layer, int kv_head, int64_t len, KvPartitions* out) const {}

  // The page layout, or base == nullptr when the pages do not live in one region in that
  // layout (then only Store/Spans reach them).
  virtual KvPageLayout PageLayout() const { return {}; }
};

}  // namespace peng
