#include "engine/cpu_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace peng {

absl::Status CpuAttention::Prepare(kernels::KvFormat format) {
  if (prefill_ != nullptr && format == format_) return absl::OkStatus();
  kernels::AttentionVariant v;
  v.backend = kernels::AttentionBackend::kCpu;
  v.kv_format = format;
  v.head_dim = c_.head_dim;
  v.group = c_.gqa_group();
  v.score_mod = kernels::ScoreMod::kScale;
  v.mask_mod = kernels::MaskMod::kCausal;
  v.reduction = kernels::Reduction::kSoftmax;
  v.phase = kernels::AttentionPhase::kPrefill;
  const kernels::CpuAttentionKernel* prefill = kernels::FindCpuAttention(v);
  if (prefill == nullptr) return absl::UnimplementedError(kernels::NotBuiltMessage(v));
  v.phase = kernels::AttentionPhase::kDecode;
  const kernels::CpuAttentionKernel* decode = kernels::FindCpuAttention(v);
  if (decode == nullptr) return absl::UnimplementedError(kernels::NotBuiltMessage(v));
  prefill_ = prefill;
  decode_ = decode;
  format_ = format;
  params_.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
  return absl::OkStatus();
}

void CpuAttention::Run(ThreadPool& pool, int layer, const ForwardBatch& batch, const KvCache& kv,
                       const float* q, float* out) {
  const int kvh = c_.num_kv_heads, group = c_.gqa_group();
  const int64_t hd = c_.head_dim, row = int64_t{c_.num_heads} * hd, head_block = group * hd;
  const size_t num_chunks = batch.chunks.size();

  // Plan: spans of every (chunk, kv-head), then tasks; decode partial slots and combines.
  spans_.resize(std::max(spans_.size(), num_chunks * kvh));
  first_token_.resize(num_chunks);
  tasks_.clear();
  combines_.clear();
  split_begin_.clear();
  int64_t parts = 0, token = 0;
  for (size_t ci = 0; ci < num_chunks; ++ci) {
    const SequenceChunk& ch = batch.chunks[ci];
    const int64_t len = static_cast<int64_t>(ch.tokens.size()), end = ch.start_pos + len;
    first_token_[ci] = token;
    token += len;
    for (int h = 0; h < kvh; ++h) {
      kv.Spans(ch.seq, layer, h, end, &spans_[ci * kvh + h]);
      if (len > 1) {
        for (int64_t b = 0; b < len; b += kPrefillBlockTokens) {
          tasks_.push_back({static_cast<int32_t>(ci), h, b, std::min(len, b + kPrefillBlockTokens), -1});
        }
        continue;
      }
      const int splits = static_cast<int>((end + kDecodeSplitTokens - 1) / kDecodeSplitTokens);
      if (splits > 1) combines_.push_back({static_cast<int32_t>(ci), h, parts, splits});
      for (int s = 0; s < splits; ++s) {
        const int64_t b = end * s / splits, e = end * (s + 1) / splits;
        if (splits > 1) split_begin_.push_back(b);
        tasks_.push_back({static_cast<int32_t>(ci), h, b, e, splits > 1 ? parts++ : -1});
      }
      if (splits > 1) split_begin_.push_back(end);
    }
  }
  if (part_out_.size() < static_cast<size_t>(parts * head_block)) part_out_.resize(parts * head_block);
  if (part_lse_.size() < static_cast<size_t>(parts * group)) part_lse_.resize(parts * group);

  // Tasks differ in cost (history length), so threads take them one at a time.
  std::atomic<size_t> next{0};
  pool.Run([&](int, int) {
    for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < tasks_.size();) {
      const Task& task = tasks_[i];
      const SequenceChunk& ch = batch.chunks[task.chunk];
      const std::vector<kernels::KvSpan>& sp = spans_[task.chunk * kvh + task.kv_head];
      const int64_t t0 = first_token_[task.chunk];
      if (task.part < 0 && ch.tokens.size() > 1) {
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
        a.params = params_;
        prefill_->prefill(a);
        continue;
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
    }
  });
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

}  // namespace peng
