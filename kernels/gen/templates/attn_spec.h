// The compile-time tuple of one generated attention variant, shared by the CPU and CUDA
// templates (kernels/gen/generate.py instantiates AttnSpec<...> in each backend's namespace;
// both derive from this). Plain constexpr data, usable from host and device code.
#pragma once

#include "kernels/attention/variant.h"

namespace peng::kernels::gen {

template <AttentionPhase kPhase_, KvFormat kFormat_, int kHeadDim_, int kGroup_, ScoreMod kScore_,
          MaskMod kMask_, Reduction kReduction_>
struct AttnTuple {
  static constexpr AttentionPhase kPhase = kPhase_;
  static constexpr KvFormat kFormat = kFormat_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kGroup = kGroup_;
  static constexpr ScoreMod kScore = kScore_;
  static constexpr MaskMod kMask = kMask_;
  static constexpr Reduction kReduction = kReduction_;
  static_assert(kHeadDim % 8 == 0 && kHeadDim <= 256, "head_dim must be a multiple of 8, at most 256");
  static_assert(kGroup >= 1 && kGroup <= 16, "GQA group must be 1..16");
};

}  // namespace peng::kernels::gen
