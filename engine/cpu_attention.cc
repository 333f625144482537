#include "engine/cpu_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "kernels/cpu/amx_attention.h"

namespace peng {

absl::StatusOr<CpuAttention::Kernels> CpuAttention::Find(const ModelConfig& c, kernels::KvFormat format) {
  kernels::AttentionVariant v;
  v.backend = kernels::AttentionBackend::kCpu;
  v.kv_format = format;
  v.head_dim = c.head_dim;
  v.group = c.gqa_group();
  v.score_mod = kernels::ScoreMod::kScale;
  v.mask_mod = kernels::MaskMod::kCausal;
  v.reduction = kernels::Reduction::kSoftmax;
  Kernels k;
  k.format = format;
  v.phase = kernels::AttentionPhase::kPrefill;
  // Quantized formats without kernels of their own use the ones that read bits and groups from
  // each span at run time.
  if (kernels::IsQuantized(format) && kernels::FindCpuAttention(v) == nullptr) {
    v.kv_format = kernels::KvFormat::kQuantAny;
  }
  k.prefill = kernels::FindCpuAttention(v);
  if (k.prefill == nullptr) return absl::UnimplementedError(kernels::NotBuiltMessage(v));
  v.phase = kernels::AttentionPhase::kDecode;
  k.decode = kernels::FindCpuAttention(v);
  if (k.decode == nullptr) return absl::UnimplementedError(kernels::NotBuiltMessage(v));
  return k;
}

absl::Status CpuAttention::Prepare(kernels::KvFormat format, kernels::KvFormat low) {
  if (prefill_ != nullptr && format == high_.format && low == low_.format) return absl::OkStatus();
  PENG_ASSIGN_OR_RETURN(const Kernels high_kernels, Find(c_, format));
  PENG_ASSIGN_OR_RETURN(const Kernels low_kernels, Find(c_, low));
  high_ = high_kernels;
  low_ = low_kernels;
  prefill_ = high_.prefill;
  decode_ = high_.decode;
  amx_serves_high_ = kernels::AmxAttentionSupports(format, c_.head_dim);
  amx_serves_ = format == low && amx_serves_high_;
  params_.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
  return absl::OkStatus();
}

int64_t CpuAttention::AmxTokens(const SequenceChunk& ch) const {
  if (!amx_serves_ || amx_min_prompt_ <= 0 || ch.prompt_len < amx_min_prompt_) return 0;
  return std::clamp<int64_t>(ch.prompt_len - ch.start_pos, 0, static_cast<int64_t>(ch.tokens.size()));
}

int64_t CpuAttention::AmxTokens(const SequenceChunk& ch, const KvPartitions& p) const {
  const int64_t len = static_cast<int64_t>(ch.tokens.size());
  if (!amx_serves_high_ || amx_min_prompt_ <= 0 || ch.prompt_len < amx_min_prompt_ || p.num_low > 0 ||
      p.high_before != ch.start_pos || p.num_high != ch.start_pos + len) {
    return 0;
  }
  const int64_t prompt = std::clamp<int64_t>(ch.prompt_len - ch.start_pos, 0, len);
  return std::min(prompt, std::max<int64_t>(0, p.score_from - ch.start_pos));
}

void CpuAttention::PlanAmx(int32_t chunk, int h, int64_t history, int64_t rows, AmxBudget* budget) {
  // The converted histories of a group share one buffer of at most amx_history_budget_ bytes
  // (or one history, if larger); the groups run one after another.
  const size_t bytes = (kernels::AmxHistoryBytes(history, c_.head_dim) + 63) / 64 * 64;
  if (budget->group > 0 && budget->group + bytes > amx_history_budget_) {
    amx_groups_.push_back({conversions_.size(), amx_tasks_.size()});
    budget->group = 0;
  }
  const size_t slot = static_cast<size_t>(chunk) * c_.num_kv_heads + h;
  amx_len_[slot] = history;
  amx_offset_[slot] = budget->group;
  budget->group += bytes;
  budget->largest = std::max(budget->largest, budget->group);
  for (int64_t b = 0; b < history; b += kAmxConvertTokens) {
    conversions_.push_back({chunk, h, b, std::min(history, b + kAmxConvertTokens)});
  }
  for (int64_t r = 0; r < rows; r += kAmxRowsPerTask) {
    amx_tasks_.push_back({chunk, h, r, std::min(rows, r + kAmxRowsPerTask), -1, false, Task::Kind::kAmx});
  }
}

void CpuAttention::Run(ThreadPool& pool, int layer, const ForwardBatch& batch, const KvCache& kv,
                       const float* q, float* out) {
  if (kv.partitioned()) return RunPartitioned(pool, layer, batch, kv, q, out);
  const int kvh = c_.num_kv_heads, group = c_.gqa_group();
  const int64_t row = row_, head_block = head_block_;
  const size_t num_chunks = batch.chunks.size();
  using Kind = Task::Kind;

  // Plan: tasks, decode partial slots and combines, and the spans of every (chunk, kv-head)
  // that several tasks read. A decode task that is alone on its (chunk, kv-head) gathers its
  // spans itself, in parallel, instead of here while the other threads wait.
  spans_.resize(std::max(spans_.size(), num_chunks * kvh));
  amx_len_.assign(num_chunks * kvh, 0);
  amx_offset_.resize(num_chunks * kvh);
  first_token_.resize(num_chunks);
  tasks_.clear();
  combines_.clear();
  conversions_.clear();
  amx_tasks_.clear();
  amx_groups_.clear();
  split_begin_.clear();
  int64_t parts = 0, token = 0;
  AmxBudget amx_budget;
  for (size_t ci = 0; ci < num_chunks; ++ci) {
    const SequenceChunk& ch = batch.chunks[ci];
    const int64_t len = static_cast<int64_t>(ch.tokens.size()), end = ch.start_pos + len;
    const int64_t amx = AmxTokens(ch);
    first_token_[ci] = token;
    token += len;
    for (int h = 0; h < kvh; ++h) {
      const int splits = len > 1 || amx > 0 ? 0 : static_cast<int>((end + kDecodeSplitTokens - 1) / kDecodeSplitTokens);
      if (splits == 1) {
        tasks_.push_back({static_cast<int32_t>(ci), h, 0, end, -1, /*own_spans=*/true});
        continue;
      }
      kv.Spans(ch.seq, layer, h, end, &spans_[ci * kvh + h]);
      if (amx > 0) PlanAmx(static_cast<int32_t>(ci), h, ch.start_pos + amx, amx * group, &amx_budget);
      if (len > 1 || amx > 0) {
        // The prefill kernel gives a token alone what decode gives it, so generated tokens
        // after a prompt's AMX ones (a resumed sequence) may take it in any count.
        for (int64_t b = amx; b < len; b += kPrefillBlockTokens) {
          tasks_.push_back({static_cast<int32_t>(ci), h, b, std::min(len, b + kPrefillBlockTokens), -1, false,
                            Kind::kPrefill});
        }
        continue;
      }
      combines_.push_back({static_cast<int32_t>(ci), h, parts, splits});
      // Splits at fixed positions (multiples of kDecodeSplitTokens, so every tile starts a
      // key-lane block): the prefill kernel walks a long history in the same blocks and merges
      // them the same way, so a token's result does not depend on whether it came alone.
      const auto bound = [&](int s) { return s == splits ? end : s * kDecodeSplitTokens; };
      for (int s = 0; s < splits; ++s) {
        const int64_t b = bound(s), e = bound(s + 1);
        split_begin_.push_back(b);
        tasks_.push_back({static_cast<int32_t>(ci), h, b, e, parts++});
      }
      split_begin_.push_back(end);
    }
  }
  if (part_out_.size() < static_cast<size_t>(parts * head_block)) part_out_.resize(parts * head_block);
  if (part_lse_.size() < static_cast<size_t>(parts * group)) part_lse_.resize(parts * group);

  const auto run_task = [&](const Task& task) {
    const SequenceChunk& ch = batch.chunks[task.chunk];
    const size_t slot = task.chunk * kvh + task.kv_head;
    std::vector<kernels::KvSpan>& sp = spans_[slot];
    if (task.own_spans) kv.Spans(ch.seq, layer, task.kv_head, task.end, &sp);
    const int64_t t0 = first_token_[task.chunk];
    if (task.kind == Kind::kPrefill) {
      kernels::PrefillArgs a;
      a.q = q + (t0 + task.begin) * row + task.kv_head * head_block;
      a.q_stride = row;
      a.num_q = task.end - task.begin;
      a.q_pos0 = ch.start_pos + task.begin;
      a.spans = sp.data();
      a.num_spans = static_cast<int>(sp.size());
      a.kv_len = a.q_pos0 + a.num_q;
      a.out = out + (t0 + task.begin) * row + task.kv_head * head_block;
      a.out_stride = row;
      a.split_tokens = kDecodeSplitTokens;
      a.params = params_;
      prefill_->prefill(a);
      return;
    }
    kernels::DecodeArgs a;
    a.q = q + t0 * row + task.kv_head * head_block;
    a.spans = sp.data();
    a.num_spans = static_cast<int>(sp.size());
    a.kv_len = ch.start_pos + 1;
    a.q_pos = ch.start_pos;
    a.kv_begin = task.begin;
    a.kv_end = task.end;
    if (task.part < 0) {
      a.out = out + t0 * row + task.kv_head * head_block;
    } else {
      a.out = part_out_.data() + task.part * head_block;
      a.lse = part_lse_.data() + task.part * group;
    }
    a.params = params_;
    decode_->decode(a);
  };
  RunAmxGroups(pool, batch, q, out, amx_budget, tasks_.size(), [&](size_t i) { run_task(tasks_[i]); });
  if (combines_.empty()) return;
  // Merge the split decodes (cheap: one pass over G·head_dim floats per split).
  size_t bounds = 0;
  for (const Combine& cb : combines_) {
    kernels::CombineArgs a;
    a.num_splits = cb.num_splits;
    a.out_parts = part_out_.data() + cb.first_part * head_block;
    a.lse_parts = part_lse_.data() + cb.first_part * group;
    a.out = out + first_token_[cb.chunk] * row + cb.kv_head * head_block;
    a.split_begin = split_begin_.data() + bounds;
    bounds += cb.num_splits + 1;
    decode_->combine(a);
  }
}

void CpuAttention::RunAmxGroups(ThreadPool& pool, const ForwardBatch& batch, const float* q, float* out,
                                const AmxBudget& budget, size_t others, const std::function<void(size_t)>& run_other) {
  // Per group of AMX histories: their conversions, then their query tasks; the other tasks
  // (decodes, prefills on the generated kernels) go with the last group's. Tasks differ in
  // cost (history length), so threads take them one at a time.
  amx_groups_.push_back({conversions_.size(), amx_tasks_.size()});
  if (amx_history_.size() * sizeof(Line) < budget.largest) amx_history_.resize(budget.largest / sizeof(Line));
  const int kvh = c_.num_kv_heads;
  size_t conv_begin = 0, amx_begin = 0;
  for (size_t g = 0; g < amx_groups_.size(); ++g) {
    const auto [conv_end, amx_end] = amx_groups_[g];
    std::atomic<size_t> next{conv_begin};
    if (conv_end > conv_begin) {
      pool.RunShared([&](int) {
        for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < conv_end;) {
          const Conversion& cv = conversions_[i];
          const size_t slot = cv.chunk * kvh + cv.kv_head;
          const std::vector<kernels::KvSpan>& sp = spans_[slot];
          kernels::AmxConvertHistory(sp.data(), static_cast<int>(sp.size()), high_.format, c_.head_dim,
                                     amx_len_[slot], cv.begin, cv.end, amx_history_[0].bytes + amx_offset_[slot]);
        }
      });
    }
    const size_t amx = amx_end - amx_begin, total = amx + (g + 1 == amx_groups_.size() ? others : 0);
    next = 0;
    pool.RunShared([&](int) {
      for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < total;) {
        if (i < amx) {
          RunAmxTask(amx_tasks_[amx_begin + i], batch, q, out);
        } else {
          run_other(i - amx);
        }
      }
    });
    conv_begin = conv_end;
    amx_begin = amx_end;
  }
}

void CpuAttention::RunAmxTask(const Task& task, const ForwardBatch& batch, const float* q, float* out) {
  const size_t slot = task.chunk * c_.num_kv_heads + task.kv_head;
  const int64_t t0 = first_token_[task.chunk];
  kernels::AmxPrefillArgs a;
  a.q = q + t0 * row_ + task.kv_head * head_block_;
  a.q_stride = row_;
  a.q_pos0 = batch.chunks[task.chunk].start_pos;
  a.group = c_.gqa_group();
  a.head_dim = c_.head_dim;
  a.row_begin = task.begin;
  a.row_end = task.end;
  a.history = amx_history_[0].bytes + amx_offset_[slot];
  a.kv_len = amx_len_[slot];
  a.out = out + t0 * row_ + task.kv_head * head_block_;
  a.out_stride = row_;
  a.scale = params_.scale;
  kernels::AmxPrefillAttention(a);
}

namespace {

// Adds probs[0, n) into the score slots of the spans covering those tokens, in order.
// `concurrent`: other threads may add to the same slots.
void AddScores(const std::vector<kernels::KvSpan>& spans, const float* probs, bool concurrent) {
  for (const kernels::KvSpan& sp : spans) {
    for (int64_t t = 0; t < sp.num_tokens; ++t) {
      if (concurrent) {
        std::atomic_ref<float>(sp.scores[t]).fetch_add(probs[t], std::memory_order_relaxed);
      } else {
        sp.scores[t] += probs[t];
      }
    }
    probs += sp.num_tokens;
  }
}

}  // namespace

void CpuAttention::PartitionedPrefill(const ForwardBatch& batch, size_t ci, int h, int64_t begin,
                                      int64_t end, const float* q, float* out) const {
  const int group = c_.gqa_group();
  const int64_t hd = c_.head_dim, row = row_, head_block = head_block_;
  const SequenceChunk& ch = batch.chunks[ci];
  const KvPartitions& p = partitions_[ci * c_.num_kv_heads + h];
  const int64_t nq = end - begin;
  thread_local std::vector<float> lse_high, lse_low, out_low, lse_total, scratch, probs;

  // One partition: the high list sees the older tokens and this chunk causally (the chunk is
  // its tail, in order); the low list holds only older tokens, all visible.
  const auto run = [&](bool low, int64_t first, float* o, int64_t o_stride, float* lse, const float* probs_lse,
                       float* probs_out, int64_t probs_q_begin) {
    kernels::PrefillArgs a;
    a.q = q + (first_token_[ci] + begin + first) * row + h * head_block;
    a.q_stride = row;
    a.num_q = nq - first;
    const std::vector<kernels::KvSpan>& spans = low ? p.low : p.high;
    a.spans = spans.data();
    a.num_spans = static_cast<int>(spans.size());
    a.kv_len = low ? p.num_low : p.num_high;
    a.q_pos0 = low ? p.num_low : p.high_before + begin + first;
    a.out = o;
    a.out_stride = o_stride;
    a.lse = lse;
    a.probs = probs_out;
    a.probs_q_begin = probs_q_begin;
    a.probs_lse = probs_lse;
    a.params = params_;
    (low ? low_ : high_).prefill->prefill(a);
  };
  // Queries [first, nq) add their probabilities to the scores.
  const int64_t first = std::clamp<int64_t>(p.score_from - (ch.start_pos + begin), 0, nq);
  const bool scores = first < nq;
  if (scores) probs.assign(p.num_high + p.num_low, 0.0f);
  float* final_out = out + (first_token_[ci] + begin) * row + h * head_block;
  if (p.num_low == 0) {
    // The high list is the whole history: one pass, its own lse normalises the probabilities.
    run(false, 0, final_out, row, nullptr, nullptr, scores ? probs.data() : nullptr, first);
  } else {
    lse_high.resize(nq * group);
    lse_low.resize(nq * group);
    out_low.resize(nq * head_block);
    run(false, 0, final_out, row, lse_high.data(), nullptr, nullptr, 0);
    run(true, 0, out_low.data(), head_block, lse_low.data(), nullptr, nullptr, 0);
    lse_total.resize(nq * group);
    for (int64_t t = 0; t < nq; ++t) {
      for (int g = 0; g < group; ++g) {
        const int64_t r = t * group + g;
        const float m = std::max(lse_high[r], lse_low[r]);
        if (m == -std::numeric_limits<float>::infinity()) {
          lse_total[r] = m;
          continue;
        }
        const float wh = std::exp(lse_high[r] - m), wl = std::exp(lse_low[r] - m), inv = 1.0f / (wh + wl);
        float* o = final_out + t * row + g * hd;
        const float* ol = out_low.data() + t * head_block + g * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] = (o[d] * wh + ol[d] * wl) * inv;
        lse_total[r] = m + std::log(wh + wl);
      }
    }
    if (scores) {  // rerun the queries that count, normalised by the merged lse
      scratch.resize(nq * head_block);
      const float* norm = lse_total.data() + first * group;
      run(false, first, scratch.data(), head_block, nullptr, norm, probs.data(), 0);
      run(true, first, scratch.data(), head_block, nullptr, norm, probs.data() + p.num_high, 0);
    }
  }
  if (!scores) return;
  AddScores(p.high, probs.data(), /*concurrent=*/true);
  AddScores(p.low, probs.data() + p.num_high, /*concurrent=*/true);
}

void CpuAttention::RunPartitioned(ThreadPool& pool, int layer, const ForwardBatch& batch,
                                  const KvCache& kv, const float* q, float* out) {
  const int kvh = c_.num_kv_heads, group = c_.gqa_group();
  const int64_t row = row_, head_block = head_block_;
  const size_t num_chunks = batch.chunks.size();

  // Plan: lists of every (chunk, kv-head); prefill tasks by query blocks; decode tasks by
  // parts (each list split every kDecodeSplitTokens), merged per (chunk, kv-head).
  partitions_.resize(std::max(partitions_.size(), num_chunks * kvh));
  spans_.resize(std::max(spans_.size(), num_chunks * kvh));
  amx_len_.assign(num_chunks * kvh, 0);
  amx_offset_.resize(num_chunks * kvh);
  first_token_.resize(num_chunks);
  tasks_.clear();
  lean_parts_.clear();
  lean_combines_.clear();
  conversions_.clear();
  amx_tasks_.clear();
  amx_groups_.clear();
  AmxBudget amx_budget;
  int64_t token = 0, probs_size = 0, head_probs_size = 0;
  for (size_t ci = 0; ci < num_chunks; ++ci) {
    const SequenceChunk& ch = batch.chunks[ci];
    const int64_t len = static_cast<int64_t>(ch.tokens.size()), end = ch.start_pos + len;
    first_token_[ci] = token;
    token += len;
    for (int h = 0; h < kvh; ++h) {
      KvPartitions& p = partitions_[ci * kvh + h];
      kv.Partitions(ch.seq, layer, h, end, &p);
      if (len > 1) {
        // A prompt before its compression: the high list is the whole history in order, so
        // its leading tokens take the AMX path as an unpartitioned prompt's do.
        const int64_t amx = AmxTokens(ch, p);
        if (amx > 0) {
          spans_[ci * kvh + h] = p.high;
          PlanAmx(static_cast<int32_t>(ci), h, ch.start_pos + amx, amx * group, &amx_budget);
        }
        for (int64_t b = amx; b < len; b += kPrefillBlockTokens) {
          tasks_.push_back({static_cast<int32_t>(ci), h, b, std::min(len, b + kPrefillBlockTokens), -1, false,
                            Task::Kind::kPrefill});
        }
        continue;
      }
      LeanCombine cb{static_cast<int32_t>(ci), h, static_cast<int64_t>(lean_parts_.size()), 0,
                     ch.start_pos >= p.score_from, probs_size};
      probs_size += p.num_high + p.num_low;
      for (const bool low : {false, true}) {
        const int64_t n = low ? p.num_low : p.num_high;
        const int splits = static_cast<int>((n + kDecodeSplitTokens - 1) / kDecodeSplitTokens);
        for (int sp = 0; sp < splits; ++sp) {
          const int64_t b = n * sp / splits, e = n * (sp + 1) / splits;
          tasks_.push_back({static_cast<int32_t>(ci), h, b, e, static_cast<int64_t>(lean_parts_.size())});
          lean_parts_.push_back({static_cast<int32_t>(lean_combines_.size()), low, b, e, head_probs_size});
          head_probs_size += group * (e - b);
          ++cb.num_parts;
        }
      }
      lean_combines_.push_back(cb);
    }
  }
  const int64_t parts = static_cast<int64_t>(lean_parts_.size());
  if (part_out_.size() < static_cast<size_t>(parts * head_block)) part_out_.resize(parts * head_block);
  if (part_lse_.size() < static_cast<size_t>(parts * group)) part_lse_.resize(parts * group);
  if (head_probs_.size() < static_cast<size_t>(head_probs_size)) head_probs_.resize(head_probs_size);
  probs_.assign(probs_size, 0.0f);

  RunAmxGroups(pool, batch, q, out, amx_budget, tasks_.size(), [&](size_t i) {
    const Task& task = tasks_[i];
    if (task.part < 0) {
      PartitionedPrefill(batch, task.chunk, task.kv_head, task.begin, task.end, q, out);
      return;
    }
    const LeanPart& part = lean_parts_[task.part];
    const KvPartitions& p = partitions_[task.chunk * kvh + task.kv_head];
    const std::vector<kernels::KvSpan>& spans = part.low ? p.low : p.high;
    kernels::DecodeArgs a;
    a.q = q + first_token_[task.chunk] * row + task.kv_head * head_block;
    a.spans = spans.data();
    a.num_spans = static_cast<int>(spans.size());
    a.kv_len = part.low ? p.num_low : p.num_high;
    a.q_pos = a.kv_len - 1;  // every token of a list is visible to the step's one query
    a.kv_begin = part.begin;
    a.kv_end = part.end;
    a.out = part_out_.data() + task.part * head_block;
    a.lse = part_lse_.data() + task.part * group;
    if (lean_combines_[part.combine].scores) a.head_probs = head_probs_.data() + part.probs_offset;
    a.params = params_;
    (part.low ? low_ : high_).decode->decode(a);
  });
  if (lean_combines_.empty()) return;
  // Merge the parts of every decode (chunk, kv-head) and add the probabilities to the scores.
  std::atomic<size_t> next{0};
  pool.RunShared([&](int) {
    std::vector<const float*> head_probs;
    std::vector<int64_t> split_begin;
    for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < lean_combines_.size();) {
      const LeanCombine& cb = lean_combines_[i];
      const KvPartitions& p = partitions_[cb.chunk * kvh + cb.kv_head];
      head_probs.clear();
      split_begin.clear();
      for (int k = 0; k < cb.num_parts; ++k) {
        const LeanPart& part = lean_parts_[cb.first_part + k];
        head_probs.push_back(head_probs_.data() + part.probs_offset);
        split_begin.push_back(part.begin + (part.low ? p.num_high : 0));
      }
      split_begin.push_back(p.num_high + p.num_low);
      kernels::CombineArgs a;
      a.num_splits = cb.num_parts;
      a.out_parts = part_out_.data() + cb.first_part * head_block;
      a.lse_parts = part_lse_.data() + cb.first_part * group;
      a.out = out + first_token_[cb.chunk] * row + cb.kv_head * head_block;
      if (cb.scores) {
        a.head_probs = head_probs.data();
        a.split_begin = split_begin.data();
        a.probs = probs_.data() + cb.probs_offset;
      }
      high_.decode->combine(a);
      if (!cb.scores) continue;
      AddScores(p.high, a.probs, /*concurrent=*/false);
      AddScores(p.low, a.probs + p.num_high, /*concurrent=*/false);
    }
  });
}

}  // namespace peng
