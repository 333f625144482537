// LeanKV (REFERENCE.md §1): the compressed KV of one worker. Every token of every (sequence,
// layer, kv-head) is in one of three states: high precision (default K8V4), low precision
// (default K4V2) or pruned. All pages have ONE size, chosen at startup by the page-size rule,
// and hold tokens of one (sequence, layer, kv-head) in one tier's layout (kernels/kv_format.h:
// codes, meta, one float importance score and one int32 position per token).
//
// Per table (= (sequence, layer, kv-head)) one array of page ids: high-precision pages from the
// left, low-precision pages from the right; growing the array moves the low pages to the new
// right end with symmetric swaps (three reversals), so a parallel version never overwrites an
// entry it has not read. The high list is the table's high tokens in page order (token i in
// page High(i / tokens_per_page_high), slot i % ...), the low list likewise from the right.
//
// A step: Grow makes room for the step's tokens at the tail of every high list (all or
// nothing; it also checks one page of headroom per table for the compression that follows);
// the worker writes the new tokens there (SlotForStore) and adds attention probabilities into the
// pages' score slots; Commit then compresses every table of the sequence:
//   - when the prompt completes: prefill compression — every token outside the protected
//     window with mean score < prune_thr is pruned, < quant_thr is demoted to low precision;
//   - after the prompt: the four-case decode rule once per new token (least important high
//     candidate L, low candidate R; evict L, demote L over R or into a new low slot, or keep),
//     applied every decide_every tokens to the tokens since the last time.
// Mean score = accumulated probability / queries that added to it; thresholds are alpha times
// 1 / (tokens the head keeps); the newest `window` tokens are never pruned or demoted.
// Commit stages demoted tokens, compacts the high list by swap-remove (sources always lie past
// the new end, so moves never overwrite unread tokens), then releases and allocates pages for
// all tables of the sequence in one batch each (prefix sums over the PagePool ring).
//
// Owned by the KvManager (engine loop thread); not thread-safe. The worker reads and writes
// page memory between Grow and Commit. Commit's per-table work (decisions, staging, moves, the
// demoted tokens' requantization) may run on the worker's threads (SetParallelFor): tables are
// independent, and the page release and allocation between those parts stay serial.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/kv_format.h"

namespace peng::memory {

class PagePool;
using SeqId = int64_t;
struct Growth;
struct KvShape;

struct LeanKvOptions {
  kernels::KvFormat high = kernels::KvFormat::kK8V4;
  kernels::KvFormat low = kernels::KvFormat::kK4V2;
  double alpha_prune = 0.0;   // prune_thr = alpha_prune / tokens kept (0: mixed precision only)
  double alpha_quant = 1.0;   // quant_thr = alpha_quant / tokens kept; >= alpha_prune
  int window = 64;            // the newest tokens, never pruned or demoted
  int score_queries = 64;     // prefill importance: the last this-many prompt queries
  // After the prompt the decode rule runs once per new token, but in batches: every this-many
  // tokens of a sequence, with that many decisions (the new tokens wait at high precision;
  // Grow reserves their pages anyway). Amortizes the per-table scan over the history.
  int decide_every = 8;
  // Page-size rule search range (bytes, multiples of 32 are scanned).
  size_t page_bytes_min = 768;
  size_t page_bytes_max = 2048;
};

// The page-size rule: among sizes in [min, max] in 32-byte steps, the smallest one with the
// least worst-case leftover (bytes a page of that size cannot use) across the two tiers.
struct PageSizeChoice {
  size_t page_bytes = 0;
  int high_tokens = 0;  // tokens per page in the high tier's layout
  int low_tokens = 0;
};
absl::StatusOr<PageSizeChoice> ChoosePageSize(int head_dim, kernels::KvFormat high,
                                              kernels::KvFormat low, size_t min_bytes,
                                              size_t max_bytes);

// Checks the options (tiers quantized, alphas in range, window, search range).
absl::Status ValidateLeanKv(const LeanKvOptions& o);

struct LeanKvStats {
  int64_t tokens_pruned = 0;   // since start
  int64_t tokens_demoted = 0;  // since start
  int64_t high_tokens = 0;     // held now, all tables
  int64_t low_tokens = 0;
  int64_t logical_tokens = 0;  // processed tokens of live sequences x tables
  int64_t pages = 0;           // pages held by live sequences
  int64_t finished_tables = 0;  // tables of freed sequences
  double sparsity_sum = 0;       // over those: fraction of their processed tokens pruned

  double mean_sparsity() const { return finished_tables > 0 ? sparsity_sum / finished_tables : 0.0; }
};

// One table's lists, for the worker.
struct LeanHeadLists {
  std::span<const int32_t> slots;  // high pages at [0, high_pages), low at the right end
  int32_t high_pages = 0, low_pages = 0;
  int64_t num_high = 0;            // committed high tokens (this step's tokens follow them)
  int64_t num_low = 0;
  int32_t HighPage(int64_t k) const { return slots[k]; }
  int32_t LowPage(int64_t k) const { return slots[slots.size() - 1 - k]; }
};

// Runs fn(begin, end) over pieces covering [0, n), possibly on several threads at once, and
// returns when all are done (the worker's ThreadPool::ParallelFor).
using ParallelForFn = std::function<void(int64_t n, const std::function<void(int64_t, int64_t)>& fn)>;

class LeanKv {
 public:
  LeanKv(int num_tables, int head_dim, LeanKvOptions options, PageSizeChoice pages,
         PagePool* pool);

  const LeanKvOptions& options() const { return o_; }
  const PageSizeChoice& pages() const { return pages_; }
  int num_tables() const { return num_tables_; }

  // Pages the growth to new_len tokens takes from the pool, plus one page of headroom per
  // table for the compression of that step (0 when nothing grows).
  int64_t PagesToGrow(SeqId seq, int64_t new_len) const;
  int64_t PagesToAdmit(int64_t new_len) const;  // PagesToGrow of a new sequence
  // Tokens one sequence could hold with `total_pages` pages, all at high precision.
  int64_t MaxTokens(int64_t total_pages) const;
  // All or nothing (ResourceExhausted); creates unknown sequences. Callers validated lengths.
  absl::Status Grow(std::span<const Growth> growths);
  void Free(SeqId seq);
  bool Has(SeqId seq) const { return seqs_.contains(seq); }
  int64_t Length(SeqId seq) const;      // logical tokens with room (processed + this step)
  int64_t Processed(SeqId seq) const;   // logical tokens committed
  int64_t PromptLength(SeqId seq) const;
  // Declares the prompt (its end triggers prefill compression); creates the sequence.
  void SetPrompt(SeqId seq, int64_t prompt_len);
  // The forward computed logical tokens [Processed, computed): compress (see above).
  void Commit(SeqId seq, int64_t computed);
  // Where Commit's per-table work runs: nullptr (the default) = on the calling thread.
  void SetParallelFor(ParallelForFn parallel_for) { parallel_for_ = std::move(parallel_for); }

  // Worker access.
  LeanHeadLists Lists(SeqId seq, int table) const;
  // Where logical position `pos` of this step (pos >= Processed(seq)) is written: its page and
  // slot at the tail of the table's high list.
  struct StoreSlot {
    int32_t page = 0;
    int slot = 0;
  };
  StoreSlot SlotForStore(SeqId seq, int table, int64_t pos) const;
  // Queries at positions >= this add their attention probabilities to the scores.
  int64_t ScoreFrom(SeqId seq) const;

  LeanKvStats stats() const;
  // The sparsity (fraction of processed tokens pruned) of every table freed since the last
  // call, for the per-head sparsity histogram.
  std::vector<float> TakeFinishedSparsity() { return std::exchange(finished_sparsity_, {}); }

 private:
  struct Table {
    std::vector<int32_t> slots;
    int32_t high_pages = 0, low_pages = 0;
    int64_t num_high = 0, num_low = 0;
    int32_t Low(int64_t k) const { return slots[slots.size() - 1 - k]; }
  };
  struct Sequence {
    std::vector<Table> tables;
    int64_t processed = 0, reserved = 0, prompt_len = 0;
    int64_t decided = 0;  // logical tokens the decode rule has seen (<= processed)
  };
  // A token of the working set during Commit: its mean score, position, and where its data is
  // now (high index >= 0; for low-list entries: low index, or -1 - high index when demoted).
  struct Tok {
    float mean = 0;
    int32_t pos = 0;
    int64_t src = 0;
  };

  Sequence& Touch(SeqId seq);
  int64_t HighPagesFor(int64_t tokens) const;
  int64_t LowPagesFor(int64_t tokens) const;
  // High pages a table still needs to take `add` more tokens.
  int64_t HighPagesNeeded(const Table& t, int64_t add) const;
  // Makes room for `pages` ids in the table's array (moving the low pages to the new end).
  static void EnsureSlots(Table& t, int64_t pages);
  // Tokens one table's decisions pruned and demoted.
  struct Decisions {
    int64_t pruned = 0, demoted = 0;
  };
  // Decides the table's new lists, counting into `counts`. Reads page memory only.
  void Decide(const Sequence& s, const Table& t, int64_t computed, std::vector<Tok>* hi,
              std::vector<Tok>* lo, Decisions* counts) const;
  float MeanScore(float acc, int32_t pos, const Sequence& s, int64_t computed) const;

  const int num_tables_;
  const int head_dim_;
  const LeanKvOptions o_;
  const PageSizeChoice pages_;
  const kernels::KvPageSegments high_seg_, low_seg_;
  PagePool* const pool_;
  absl::flat_hash_map<SeqId, Sequence> seqs_;
  int64_t pruned_ = 0, demoted_ = 0;
  ParallelForFn parallel_for_;
  std::vector<float> finished_sparsity_;
  int64_t finished_tables_ = 0;
  double sparsity_sum_ = 0;
};

}  // namespace peng::memory
