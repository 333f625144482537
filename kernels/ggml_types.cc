#include "kernels/ggml_types.h"

namespace peng::kernels {

const GgmlTypeTraits* FindGgmlType(uint32_t id) {
  static const GgmlTypeTraits kF32{"F32", 1, 4, true};
  static const GgmlTypeTraits kF16{"F16", 1, 2, true};
  static const GgmlTypeTraits kBF16{"BF16", 1, 2, true};
  static const GgmlTypeTraits kQ4_0{"Q4_0", kQK, sizeof(BlockQ4_0), true};
  static const GgmlTypeTraits kQ4_1{"Q4_1", kQK, sizeof(BlockQ4_1), true};
  static const GgmlTypeTraits kQ5_0{"Q5_0", kQK, sizeof(BlockQ5_0), true};
  static const GgmlTypeTraits kQ5_1{"Q5_1", kQK, sizeof(BlockQ5_1), true};
  static const GgmlTypeTraits kQ8_0{"Q8_0", kQK, sizeof(BlockQ8_0), true};
  static const GgmlTypeTraits kQ8_1{"Q8_1", kQK, 36, false};
  static const GgmlTypeTraits kQ2_K{"Q2_K", kQK_K, sizeof(BlockQ2_K), true};
  static const GgmlTypeTraits kQ3_K{"Q3_K", kQK_K, sizeof(BlockQ3_K), true};
  static const GgmlTypeTraits kQ4_K{"Q4_K", kQK_K, sizeof(BlockQ4_K), true};
  static const GgmlTypeTraits kQ5_K{"Q5_K", kQK_K, sizeof(BlockQ5_K), true};
  static const GgmlTypeTraits kQ6_K{"Q6_K", kQK_K, sizeof(BlockQ6_K), true};
  static const GgmlTypeTraits kQ8_K{"Q8_K", kQK_K, 292, false};
  static const GgmlTypeTraits kIQ4_NL{"IQ4_NL", kQK, sizeof(BlockIQ4_NL), true};
  static const GgmlTypeTraits kIQ4_XS{"IQ4_XS", kQK_K, sizeof(BlockIQ4_XS), true};
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::kF32: return &kF32;
    case GgmlType::kF16: return &kF16;
    case GgmlType::kBF16: return &kBF16;
    case GgmlType::kQ4_0: return &kQ4_0;
    case GgmlType::kQ4_1: return &kQ4_1;
    case GgmlType::kQ5_0: return &kQ5_0;
    case GgmlType::kQ5_1: return &kQ5_1;
    case GgmlType::kQ8_0: return &kQ8_0;
    case GgmlType::kQ8_1: return &kQ8_1;
    case GgmlType::kQ2_K: return &kQ2_K;
    case GgmlType::kQ3_K: return &kQ3_K;
    case GgmlType::kQ4_K: return &kQ4_K;
    case GgmlType::kQ5_K: return &kQ5_K;
    case GgmlType::kQ6_K: return &kQ6_K;
    case GgmlType::kQ8_K: return &kQ8_K;
    case GgmlType::kIQ4_NL: return &kIQ4_NL;
    case GgmlType::kIQ4_XS: return &kIQ4_XS;
  }
  return nullptr;
}

size_t RowBytes(GgmlType t, int64_t n) {
  const GgmlTypeTraits& tr = Traits(t);
  if (n < 0 || n % tr.block_elems != 0) return 0;
  return static_cast<size_t>(n / tr.block_elems) * tr.block_bytes;
}

}  // namespace peng::kernels
