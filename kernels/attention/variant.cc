#include "kernels/attention/variant.h"

namespace peng::kernels {

const char* Name(AttentionBackend b) { return b == AttentionBackend::kCpu ? "cpu" : "cuda"; }
const char* Name(AttentionPhase p) { return p == AttentionPhase::kPrefill ? "prefill" : "decode"; }

const char* Name(ScoreMod m) {
  switch (m) {
    case ScoreMod::kNone: return "none";
    case ScoreMod::kScale: return "scale";
    case ScoreMod::kSoftcap: return "softcap";
    case ScoreMod::kAlibi: return "alibi";
  }
  return "?";
}

const char* Name(MaskMod m) {
  switch (m) {
    case MaskMod::kCausal: return "causal";
    case MaskMod::kSlidingWindow: return "sliding_window";
    case MaskMod::kFull: return "full";
    case MaskMod::kHeadSubset: return "head_subset";
  }
  return "?";
}

const char* Name(Reduction r) { return r == Reduction::kSoftmax ? "softmax" : "sigmoid"; }

std::string ToString(const AttentionVariant& v) {
  return std::string("backend=") + Name(v.backend) + " phase=" + Name(v.phase) +
         " kv_format=" + KvFormatName(v.kv_format) + " head_dim=" + std::to_string(v.head_dim) +
         " group=" + std::to_string(v.group) + " score_mod=" + Name(v.score_mod) +
         " mask_mod=" + Name(v.mask_mod) + " reduction=" + Name(v.reduction);
}

}  // namespace peng::kernels
