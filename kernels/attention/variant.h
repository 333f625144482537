// AttentionVariant: the compile-time tuple that names one generated attention kernel
// (AttentionEngine-style: score_mod + mask_mod + row reduction over one KV page format, for one
// head_dim, GQA group and phase). The generator (kernels/gen/) emits one instance per tuple; the
// dispatcher (dispatch.h) maps a runtime tuple to the instance or to an error naming it.
// Plain values; thread-compatible.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/kv_format.h"

namespace peng::kernels {

enum class AttentionBackend : uint8_t { kCpu, kCuda };
// kPrefill: a chunk of consecutive queries of one sequence over its paged history (varlen).
// kDecode: one query per sequence, split-KV partials merged by a log-sum-exp combine.
enum class AttentionPhase : uint8_t { kPrefill, kDecode };
// Elementwise change of the logit q·k: none, ×scale, softcap c·tanh(scale·s/c), ALiBi
// scale·s + slope_h·(kv_pos − q_pos).
enum class ScoreMod : uint8_t { kNone, kScale, kSoftcap, kAlibi };
// Which (q_pos, kv_pos) pairs take part: kv ≤ q (causal); q − window < kv ≤ q (sliding window);
// every kv of the history (full); a per-query-head bitmap of kv positions (head subset).
enum class MaskMod : uint8_t { kCausal, kSlidingWindow, kFull, kHeadSubset };
// Online row reduction: softmax (running max / sum / rescale, lse kept) or sigmoid (identity
// reduction: out = Σ σ(s)·v, no normalisation).
enum class Reduction : uint8_t { kSoftmax, kSigmoid };

struct AttentionVariant {
  AttentionBackend backend = AttentionBackend::kCpu;
  AttentionPhase phase = AttentionPhase::kDecode;
  KvFormat kv_format = KvFormat::kF16;
  int head_dim = 64;
  int group = 1;  // query heads per kv-head
  ScoreMod score_mod = ScoreMod::kScale;
  MaskMod mask_mod = MaskMod::kCausal;
  Reduction reduction = Reduction::kSoftmax;

  // Spelled out: nvcc compiles this header as C++17 (no defaulted comparisons).
  friend bool operator==(const AttentionVariant& a, const AttentionVariant& b) {
    return a.backend == b.backend && a.phase == b.phase && a.kv_format == b.kv_format &&
           a.head_dim == b.head_dim && a.group == b.group && a.score_mod == b.score_mod &&
           a.mask_mod == b.mask_mod && a.reduction == b.reduction;
  }
};

const char* Name(AttentionBackend b);
const char* Name(AttentionPhase p);
const char* Name(ScoreMod m);
const char* Name(MaskMod m);
const char* Name(Reduction r);

// "backend=cpu phase=decode kv_format=f16 head_dim=64 group=3 score_mod=scale mask_mod=causal
// reduction=softmax": the tuple as the manifest and error messages spell it.
std::string ToString(const AttentionVariant& v);

}  // namespace peng::kernels
