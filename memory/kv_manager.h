// KvManager: the paged KV cache of one worker. A byte budget is cut into pages of one size; a
// page holds K and V of up to tokens_per_page tokens of ONE (sequence, layer, kv-head) in one
// format, so every (sequence, layer, kv-head) has its own page table (LeanKV's per-head tables
// extend this). Dense mode grows all tables of a sequence together, one logical block (=
// num_layers * num_kv_heads pages) at a time.
//
// Prepare, then apply: CanGrow / PagesToGrow answer without side effects; Grow applies a whole
// step's growth at once (needs -> prefix sum -> disjoint slots of the free-page ring), all or
// nothing. Prefix caching keeps full blocks addressable by the hash chain of their tokens; a
// block shared by several sequences is ref-counted, and unreferenced cached blocks are reused
// (LRU) only when free pages run out.
//
// Owned by the engine loop thread; not thread-safe. Page memory may be read and written by the
// forward's worker threads between Grow calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/kv_format.h"

namespace peng::memory {

using SeqId = int64_t;

struct KvShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

struct KvManagerOptions {
  size_t budget_bytes = 64ull << 20;
  kernels::KvFormat format = kernels::KvFormat::kF16;
  int tokens_per_page = 16;
  bool enable_prefix_caching = true;
};

struct Growth {
  SeqId seq = 0;
  int64_t new_len = 0;  // tokens the sequence must hold after this step
};

struct PrefixCacheStats {
  int64_t queries = 0;  // prompt tokens looked up
  int64_t hits = 0;     // prompt tokens found
};

class KvManager {
 public:
  KvManager(KvShape shape, KvManagerOptions options);
  ~KvManager();

  const KvShape& shape() const;
  const KvManagerOptions& options() const;
  size_t page_bytes() const;              // 2 * tokens_per_page * head_dim * format bytes
  int64_t total_pages() const;
  int64_t free_pages() const;             // includes unreferenced cached blocks' pages
  double usage() const;                   // 1 - free_pages / total_pages
  int64_t pages_per_block() const;        // num_layers * num_kv_heads
  int64_t max_tokens() const;             // tokens one sequence could hold with the whole pool
  double bytes_per_token() const;         // page bytes per token, all layers and heads

  // Pages a growth would take (0 if the sequence already holds new_len tokens).
  int64_t PagesToGrow(SeqId seq, int64_t new_len) const;
  bool CanGrow(std::span<const Growth> growths) const;
  // Applies every growth or none (ResourceExhausted, state unchanged).
  absl::Status Grow(std::span<const Growth> growths);
  // Releases the sequence's pages (full cached blocks stay in the prefix cache).
  void Free(SeqId seq);
  bool Has(SeqId seq) const;
  int64_t Length(SeqId seq) const;        // tokens the sequence holds room for

  // Prefix cache. For a new sequence: attaches the longest run of cached full blocks matching
  // the start of `prompt` (never the whole prompt: at least one token is left to compute) and
  // returns how many tokens that covers. Counts queries and hits.
  int64_t MatchPrefix(SeqId seq, std::span<const int32_t> prompt);
  // After the forward computed tokens [0, computed) of `tokens`, registers the newly full
  // blocks so later requests can share them.
  void CommitComputed(SeqId seq, std::span<const int32_t> tokens, int64_t computed);
  PrefixCacheStats prefix_cache_stats() const;

  // Worker access: the page ids of (seq, layer, kv_head) in token order, and page memory.
  std::span<const int32_t> PageTable(SeqId seq, int layer, int kv_head) const;
  uint8_t* PageData(int32_t page);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace peng::memory
