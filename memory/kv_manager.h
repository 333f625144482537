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
//
// Page layout (the worker writes and reads it; kernels/kv_format.h): a page of one (sequence,
// layer, kv-head) is page_bytes() = 2 * tokens_per_page * head_dim * KvFormatBytes(format)
// bytes: first the keys, a row-major [tokens_per_page x head_dim] array, then the values, the
// same shape. Token t of a sequence lives in page PageTable(seq, layer, head)[t /
// tokens_per_page], row t % tokens_per_page of the K and V halves:
//   K row: PageData(page) + (t % tokens_per_page) * head_dim * bytes
//   V row: PageData(page) + (tokens_per_page + t % tokens_per_page) * head_dim * bytes
// Pages are not zeroed; rows past the tokens computed so far hold garbage. Page p starts at
// PageData(0) + p * page_bytes(), and PageData(0) is aligned to PagePool::kAlignment (4096), or
// to kExternalAlignment (256) with options.page_memory.
//
// Sharing rule: the first ReadOnlyTokens(seq) tokens of a sequence lie in full blocks that are
// (or may become) shared through the prefix cache; the worker never writes them. Appends always
// go to blocks that Grow allocated for this sequence alone (checked in CommitComputed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/kv_format.h"
#include "memory/lean_kv.h"
#include "memory/prefix_cache.h"

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
  // Block hash of the prefix cache; nullptr = DefaultBlockHash. Tests inject colliding hashes.
  BlockHashFn block_hash = nullptr;
  // Where the pages live: nullptr = a host allocation of the pool's own; otherwise external
  // memory of at least budget_bytes (aligned to PagePool::kExternalAlignment, not owned, must
  // outlive the manager), e.g. the CUDA worker's device memory (ForwardBackend::KvPoolMemory).
  // The manager never touches page memory; PageData() then returns addresses in that memory.
  uint8_t* page_memory = nullptr;
  // kv.mode leankv: two quantized tiers with importance-based pruning (memory/lean_kv.h) in
  // pages of one size from the page-size rule. `format` and tokens_per_page are then unused and
  // prefix caching is off (compressed KV depends on the whole request: see README.md).
  bool leankv = false;
  LeanKvOptions lean;
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
  // Checks shape and options (positive sizes, budget holds at least one logical block, page
  // count fits int32) and allocates the pool. Use this for configuration input.
  static absl::StatusOr<std::unique_ptr<KvManager>> Create(KvShape shape,
                                                           KvManagerOptions options);
  static absl::Status Validate(const KvShape& shape, const KvManagerOptions& options);
  // Tokens one sequence could hold with the whole pool of a manager with these options (what
  // max_tokens() will report), without allocating it. Options must be valid.
  static int64_t CapacityTokens(const KvShape& shape, const KvManagerOptions& options);
  // Precondition: Validate(shape, options) is OK (checked; a failure aborts).
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
  int64_t evictable_pages() const;        // pages of unreferenced cached blocks (in free_pages)

  // Pages a growth would take (0 if the sequence already holds new_len tokens). An unknown
  // sequence counts as empty.
  int64_t PagesToGrow(SeqId seq, int64_t new_len) const;
  // Whether Grow(growths) would succeed with `reserve_pages` still free afterwards: the summed
  // pages plus the reserve fit free_pages().
  bool CanGrow(std::span<const Growth> growths, int64_t reserve_pages = 0) const;
  // Applies every growth or none (ResourceExhausted, state unchanged). Unknown sequences are
  // created. Evicts least recently used unreferenced cached blocks when the free ring runs
  // short. Shrinking is a no-op. A negative length or a sequence named twice is
  // InvalidArgument.
  absl::Status Grow(std::span<const Growth> growths);
  // Releases the sequence's pages (full cached blocks stay in the prefix cache).
  void Free(SeqId seq);
  bool Has(SeqId seq) const;
  int64_t Length(SeqId seq) const;        // tokens the sequence holds room for (0 if unknown)
  // Leading tokens of the sequence in full, computed blocks (matched or committed): read-only.
  int64_t ReadOnlyTokens(SeqId seq) const;

  // Prefix cache. For a new sequence: attaches the longest run of cached full blocks matching
  // the start of `prompt` (never the whole prompt: at least one token is left to compute) and
  // returns how many tokens that covers. The sequence must be unknown or hold no blocks
  // (checked); it exists afterwards with Length = the returned count. With prefix caching off
  // it returns 0. To undo an admission, call Free.
  // `prompt_path`: the sequence's first positions computed on the prompt path (other kernels
  // than generated tokens take: SchedulerOptions::prompt_path_min_tokens), 0 when none. Blocks
  // are cached and matched with how many of their positions that covers, so KV computed one
  // way never stands in for KV a cold run would compute the other way. Pass the same value to
  // PagesToAdmit and CommitComputed.
  int64_t MatchPrefix(SeqId seq, std::span<const int32_t> prompt, int64_t prompt_path = 0);
  // Counts one lookup that took effect (the sequence was admitted with MatchPrefix's result):
  // `prompt_tokens` queried, `hit_tokens` found. Nothing with prefix caching off. A lookup the
  // scheduler undoes (no room this step) is not counted, or a request waiting for room would
  // count its prompt once per step.
  void CountPrefixLookup(int64_t prompt_tokens, int64_t hit_tokens);
  // Side-effect-free admission question: the pages that MatchPrefix(prompt) followed by
  // Grow(new_len) would take from free_pages() (new blocks plus matched cached blocks that
  // are unreferenced now and so stop counting as free).
  int64_t PagesToAdmit(std::span<const int32_t> prompt, int64_t new_len, int64_t prompt_path = 0) const;
  // After the forward computed tokens [0, computed) of `tokens`, registers the newly full
  // blocks so later requests can share them. `tokens` are the sequence's tokens (prompt then
  // generated), at least `computed` of them; computed <= Length(seq) (checked). Calls with a
  // smaller `computed` than before do nothing. With prefix caching off it only advances
  // ReadOnlyTokens.
  void CommitComputed(SeqId seq, std::span<const int32_t> tokens, int64_t computed, int64_t prompt_path = 0);
  PrefixCacheStats prefix_cache_stats() const;

  // Worker access: the page ids of (seq, layer, kv_head) in token order (empty for an unknown
  // sequence; the span stays valid until that sequence grows or is freed), and page memory.
  std::span<const int32_t> PageTable(SeqId seq, int layer, int kv_head) const;
  uint8_t* PageData(int32_t page);
  const uint8_t* PageData(int32_t page) const;

  // LeanKV mode only (nullptr otherwise): the compressed tables. PageTable is then empty; the
  // worker reads the high and low lists from here.
  const LeanKv* lean() const;
  // LeanKV: LeanKv::TakeFinishedSparsity (empty in other modes).
  std::vector<float> TakeFinishedSparsity();
  // LeanKV: where the compression's per-table work runs (LeanKv::SetParallelFor; the engine
  // loop passes the worker's threads). No effect in other modes.
  void SetParallelFor(ParallelForFn parallel_for);

 private:
  struct Impl;
  explicit KvManager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace peng::memory
