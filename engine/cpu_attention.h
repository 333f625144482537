// CpuAttention: one layer's attention for a whole batch on the CPU, through the generated
// kernels (kernels/attention/dispatch.h). Chunks of several tokens run the prefill variant in
// blocks of queries; one-token chunks run the decode variant, split along a long history
// (split-KV, merged by the log-sum-exp combine). The split count depends only on the history
// length, so a sequence's result never depends on what else is in the batch. With
// SetAmxPrompts, the prompt tokens of long prompts run on AMX tiles instead
// (kernels/cpu/amx_attention.h), chosen per sequence as the AMX matmuls are (LeanKV: while the
// prompt is uncompressed, up to its scored queries). Owned by the
// forward's thread; runs its tasks on the forward's pool.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "base/thread_pool.h"
#include "engine/forward_backend.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"
#include "kernels/attention/dispatch.h"

namespace peng {

class CpuAttention {
 public:
  // Histories longer than this are attended in blocks of this many tokens from position 0 and
  // merged by log-sum-exp: a decode runs the blocks as parallel tasks, a prefill chunk one
  // after another, with the same arithmetic, so a token's output is bitwise the same either way.
  static constexpr int64_t kDecodeSplitTokens = 1024;
  // Queries per prefill task.
  static constexpr int64_t kPrefillBlockTokens = 32;

  explicit CpuAttention(const ModelConfig& config)
      : c_(config),
        row_(int64_t{config.num_heads} * config.head_dim),
        head_block_(int64_t{config.gqa_group()} * config.head_dim) {}

  // Finds the kernels for this model's shape and the KV formats (`low`: of LeanKV's low list;
  // the same as `format` otherwise). The error names the variant tuple that was not built.
  absl::Status Prepare(kernels::KvFormat format, kernels::KvFormat low);
  absl::Status Prepare(kernels::KvFormat format) { return Prepare(format, format); }

  // The prompt tokens (positions below SequenceChunk::prompt_len) of prompts of at least
  // min_prompt tokens take the AMX kernel, where it serves the KV format and head size (0:
  // never). The same rule as the forward's AMX matmuls, so a token takes the same kernels every
  // time it is computed. A partitioned (LeanKV) cache: see AmxTokens below.
  // history_budget: kAmxHistoryBudget, smaller in tests.
  void SetAmxPrompts(int64_t min_prompt, size_t history_budget = kAmxHistoryBudget) {
    amx_min_prompt_ = min_prompt;
    amx_history_budget_ = history_budget;
  }
  // Tokens per history conversion task of the AMX path (a multiple of kernels::kAmxKeyBlock).
  static constexpr int64_t kAmxConvertTokens = 1024;
  // Query rows (token, group head) per AMX task: four tiles of 16.
  static constexpr int64_t kAmxRowsPerTask = 64;
  // The converted histories of one step are held at most this many bytes at a time (a single
  // larger history alone): many long prompts in one step (a prefix-cache hit leaves each its
  // last token) run in groups instead of growing the buffer past it.
  static constexpr size_t kAmxHistoryBudget = size_t{64} << 20;

  // out[t] = attention of query row t ([tokens x num_heads·head_dim], batch order) over its
  // sequence's history in `kv` for `layer` (the batch's own K/V already stored). With a
  // partitioned (LeanKV) cache: RunPartitioned.
  void Run(ThreadPool& pool, int layer, const ForwardBatch& batch, const KvCache& kv, const float* q,
           float* out);

 private:
  struct Kernels {
    kernels::KvFormat format = kernels::KvFormat::kF32;
    const kernels::CpuAttentionKernel* prefill = nullptr;
    const kernels::CpuAttentionKernel* decode = nullptr;
  };
  static absl::StatusOr<Kernels> Find(const ModelConfig& c, kernels::KvFormat format);

  // LeanKV: every (sequence, kv-head) history is a high and a low list, each attended in its
  // own format and merged by log-sum-exp; the merged probabilities of queries at or after the
  // lists' score_from are added into the tokens' score slots.
  void RunPartitioned(ThreadPool& pool, int layer, const ForwardBatch& batch, const KvCache& kv,
                      const float* q, float* out);
  // One prefill task of RunPartitioned: queries [begin, end) of chunk `ci`, kv-head h.
  void PartitionedPrefill(const ForwardBatch& batch, size_t ci, int h, int64_t begin, int64_t end,
                          const float* q, float* out) const;

  // Leading tokens of chunk `ch` that take the AMX kernel (0 when none do).
  int64_t AmxTokens(const SequenceChunk& ch) const;
  // LeanKV: the same, but only while the whole history is the high list, in order (a prompt
  // before its compression: nothing demoted or pruned), and only up to the first query whose
  // probabilities count for the importance scores (those take the generated kernels, which give
  // them).
  int64_t AmxTokens(const SequenceChunk& ch, const KvPartitions& p) const;

  struct Task {
    enum class Kind : uint8_t { kPrefill, kDecode, kAmx };
    int32_t chunk = 0;
    int32_t kv_head = 0;
    // prefill: query offsets in the chunk; decode: kv range; kAmx: query rows (token · group +
    // group head) of the chunk
    int64_t begin = 0, end = 0;
    int64_t part = -1;           // decode: slot of its partial (-1: its result goes straight out)
    bool own_spans = false;      // the only task of its (chunk, kv-head): it gathers the spans
    Kind kind = Kind::kDecode;
  };
  // Bytes of converted histories: in the group being planned, and the largest group's.
  struct AmxBudget {
    size_t group = 0, largest = 0;
  };
  // Plans the AMX path of (chunk, kv-head h), whose spans are in spans_: its history [0,
  // history) converted in pieces, then query rows [0, rows) in tasks, in the current group of
  // histories or a new one.
  void PlanAmx(int32_t chunk, int h, int64_t history, int64_t rows, AmxBudget* budget);
  // Runs the planned AMX groups (histories of at most budget.largest bytes at a time), each
  // its conversions and then its query tasks; the caller's `others` tasks (run_other(i),
  // i < others) join the last group's.
  void RunAmxGroups(ThreadPool& pool, const ForwardBatch& batch, const float* q, float* out,
                    const AmxBudget& budget, size_t others, const std::function<void(size_t)>& run_other);
  // One AMX query task: rows [task.begin, task.end) of (chunk, kv-head).
  void RunAmxTask(const Task& task, const ForwardBatch& batch, const float* q, float* out);
  // Converts history positions [begin, end) of (chunk, kv-head) for the AMX kernel.
  struct Conversion {
    int32_t chunk = 0, kv_head = 0;
    int64_t begin = 0, end = 0;
  };
  struct Combine {
    int32_t chunk = 0, kv_head = 0;
    int64_t first_part = 0;
    int num_splits = 0;
  };

  const ModelConfig& c_;
  const int64_t row_;         // floats per token row of q / out (num_heads · head_dim)
  const int64_t head_block_;  // floats of one kv-head's query heads in a row (group · head_dim)
  Kernels high_, low_;  // high_ serves unpartitioned caches too
  const kernels::CpuAttentionKernel* prefill_ = nullptr;  // = high_'s
  const kernels::CpuAttentionKernel* decode_ = nullptr;
  kernels::AttentionParams params_;
  int64_t amx_min_prompt_ = 0;
  size_t amx_history_budget_ = kAmxHistoryBudget;
  bool amx_serves_ = false;       // the AMX kernel serves this format (unpartitioned) and head size
  bool amx_serves_high_ = false;  // ... LeanKV's high format
  // The AMX path's plan: conversions, and per (chunk, kv-head) its converted history.
  std::vector<Conversion> conversions_;
  std::vector<Task> amx_tasks_;
  // Per group: the ends of its conversions and AMX tasks (both in order of (chunk, kv-head)).
  struct AmxGroup {
    size_t conversions_end = 0, tasks_end = 0;
  };
  std::vector<AmxGroup> amx_groups_;
  std::vector<int64_t> amx_len_;      // [chunk x kv_head]: history length converted (0: none)
  std::vector<size_t> amx_offset_;    // [chunk x kv_head]: where it lies in amx_history_
  struct alignas(64) Line {
    uint8_t bytes[64];
  };
  std::vector<Line> amx_history_;
  // RunPartitioned's plan.
  std::vector<KvPartitions> partitions_;             // [chunk x kv_head]
  struct LeanPart {
    int32_t combine = 0;     // index into lean_combines_
    bool low = false;
    int64_t begin = 0, end = 0;
    int64_t probs_offset = 0;  // into head_probs_
  };
  struct LeanCombine {
    int32_t chunk = 0, kv_head = 0;
    int64_t first_part = 0;
    int num_parts = 0;
    bool scores = false;       // add the probabilities into the score slots
    int64_t probs_offset = 0;  // into probs_, num_high + num_low floats
  };
  std::vector<LeanPart> lean_parts_;
  std::vector<LeanCombine> lean_combines_;
  std::vector<float> head_probs_, probs_;
  // Per-call scratch, grown to the largest batch.
  std::vector<std::vector<kernels::KvSpan>> spans_;  // [chunk x kv_head]
  std::vector<int64_t> first_token_;                 // batch row of each chunk's first token
  std::vector<Task> tasks_;
  std::vector<Combine> combines_;
  std::vector<int64_t> split_begin_;                 // per combine: num_splits + 1 bounds
  std::vector<float> part_out_, part_lse_;
};

}  // namespace peng
