#include "kernels/cpu/dequantize.h"

#include <cmath>
#include <cstddef>

#include "kernels/cpu/fp16.h"

namespace peng::kernels {
namespace {

void DequantQ4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = Fp16ToFp32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * ((b[i].qs[j] & 0x0f) - 8);
      y[j + kQK / 2] = d * ((b[i].qs[j] >> 4) - 8);
    }
  }
}

void DequantQ4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = Fp16ToFp32(b[i].d), m = Fp16ToFp32(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * (b[i].qs[j] & 0x0f) + m;
      y[j + kQK / 2] = d * (b[i].qs[j] >> 4) + m;
    }
  }
}

template <typename Block, bool kHasMin>
void DequantQ5(const Block* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = Fp16ToFp32(b[i].d);
    float m = 0;
    if constexpr (kHasMin) m = Fp16ToFp32(b[i].m);
    uint32_t qh;
    __builtin_memcpy(&qh, b[i].qh, 4);
    const int offset = kHasMin ? 0 : 16;
    for (int j = 0; j < kQK / 2; ++j) {
      const int hi0 = ((qh >> j) << 4) & 0x10;
      const int hi1 = (qh >> (j + 12)) & 0x10;
      y[j] = d * (((b[i].qs[j] & 0x0f) | hi0) - offset) + m;
      y[j + kQK / 2] = d * (((b[i].qs[j] >> 4) | hi1) - offset) + m;
    }
  }
}

void DequantQ8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = Fp16ToFp32(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = d * b[i].qs[j];
  }
}

void DequantQ4_K(const BlockQ4_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = Fp16ToFp32(b[i].d), dmin = Fp16ToFp32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < 4; ++j, q += 32) {
      uint8_t sc, m;
      ScaleMinK4(2 * j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      ScaleMinK4(2 * j + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void DequantQ5_K(const BlockQ5_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = Fp16ToFp32(b[i].d), dmin = Fp16ToFp32(b[i].dmin);
    const uint8_t* ql = b[i].qs;
    const uint8_t* qh = b[i].qh;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 4; ++j, ql += 32, u1 <<= 2, u2 <<= 2) {
      uint8_t sc, m;
      ScaleMinK4(2 * j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      ScaleMinK4(2 * j + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
  }
}

// Q2_K: 16 sub-blocks of 16, each with a 4-bit scale (low nibble) and min (high nibble) of d
// and dmin. Within each 128-value half, 2-bit field j of bytes 0-15 / 16-31 holds sub-blocks 2j
// and 2j+1.
void DequantQ2_K(const BlockQ2_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = Fp16ToFp32(b[i].d), dmin = Fp16ToFp32(b[i].dmin);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b[i].qs + 32 * half;
      for (int j = 0; j < 4; ++j) {
        for (int k = 0; k < 2; ++k, y += 16) {
          const uint8_t sc = b[i].scales[8 * half + 2 * j + k];
          const float dl = d * (sc & 0x0f), ml = dmin * (sc >> 4);
          for (int l = 0; l < 16; ++l) y[l] = dl * ((q[16 * k + l] >> (2 * j)) & 3) - ml;
        }
      }
    }
  }
}

// Q3_K: 16 sub-blocks of 16 with 6-bit signed scales of d (ScaleQ3_K); a value is its 2-bit
// field (laid out as Q2_K's) minus 4 unless its bit in hmask (bit 4·half + j) is set.
void DequantQ3_K(const BlockQ3_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = Fp16ToFp32(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b[i].qs + 32 * half;
      for (int j = 0; j < 4; ++j) {
        const uint8_t bit = static_cast<uint8_t>(1u << (4 * half + j));
        for (int k = 0; k < 2; ++k, y += 16) {
          const float dl = d * ScaleQ3_K(8 * half + 2 * j + k, b[i].scales);
          for (int l = 0; l < 16; ++l) {
            const int u = (q[16 * k + l] >> (2 * j)) & 3;
            y[l] = dl * (u - ((b[i].hmask[16 * k + l] & bit) ? 0 : 4));
          }
        }
      }
    }
  }
}

// 32 values of scale d: table entries of the low nibbles of qs (first 16), then the high ones.
void DequantIq4(float d, const uint8_t* qs, float* y) {
  for (int j = 0; j < 16; ++j) {
    y[j] = d * kIq4Values[qs[j] & 0x0f];
    y[j + 16] = d * kIq4Values[qs[j] >> 4];
  }
}

void DequantQ6_K(const BlockQ6_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = Fp16ToFp32(b[i].d);
    const uint8_t* ql = b[i].ql;
    const uint8_t* qh = b[i].qh;
    const int8_t* sc = b[i].scales;
    for (int n = 0; n < kQK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

}  // namespace

int64_t FirstNonFiniteRow(GgmlType type, const void* data, int64_t rows, int64_t cols) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  const auto half_at = [&](size_t at) {
    uint16_t h;
    __builtin_memcpy(&h, bytes + at, 2);
    return h;
  };
  const int64_t n = rows * cols;
  switch (type) {
    case GgmlType::kF32:
      for (int64_t i = 0; i < n; ++i) {
        float f;
        __builtin_memcpy(&f, bytes + 4 * i, 4);
        if (!std::isfinite(f)) return i / cols;
      }
      return -1;
    case GgmlType::kF16: case GgmlType::kBF16: {
      const uint16_t exponent = type == GgmlType::kF16 ? 0x7c00 : 0x7f80;  // all ones: inf or NaN
      for (int64_t i = 0; i < n; ++i) {
        if ((half_at(2 * i) & exponent) == exponent) return i / cols;
      }
      return -1;
    }
    default:
      break;
  }
  // The byte offsets of a block's fp16 scales and minimums.
  size_t fields[2] = {0, 0};
  int num_fields = 1;  // Q4_0, Q5_0, Q8_0, IQ4_NL, IQ4_XS: d first
  switch (type) {
    case GgmlType::kQ4_1: case GgmlType::kQ5_1: case GgmlType::kQ4_K: case GgmlType::kQ5_K:
      fields[1] = 2;
      num_fields = 2;
      break;
    case GgmlType::kQ2_K:
      fields[0] = offsetof(BlockQ2_K, d);
      fields[1] = offsetof(BlockQ2_K, dmin);
      num_fields = 2;
      break;
    case GgmlType::kQ3_K: fields[0] = offsetof(BlockQ3_K, d); break;
    case GgmlType::kQ6_K: fields[0] = offsetof(BlockQ6_K, d); break;
    default: break;
  }
  const GgmlTypeTraits& tr = Traits(type);
  const int64_t blocks_per_row = cols / tr.block_elems;
  for (int64_t b = 0; b < n / tr.block_elems; ++b) {
    for (int k = 0; k < num_fields; ++k) {
      if ((half_at(b * tr.block_bytes + fields[k]) & 0x7c00) == 0x7c00) return b / blocks_per_row;
    }
  }
  return -1;
}

bool DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  switch (type) {
    case GgmlType::kF32:
      __builtin_memcpy(dst, src, n * sizeof(float));
      return true;
    case GgmlType::kF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(s[i]);
      return true;
    }
    case GgmlType::kBF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(s[i]);
      return true;
    }
    case GgmlType::kQ4_0: DequantQ4_0(static_cast<const BlockQ4_0*>(src), dst, n / kQK); return true;
    case GgmlType::kQ4_1: DequantQ4_1(static_cast<const BlockQ4_1*>(src), dst, n / kQK); return true;
    case GgmlType::kQ5_0:
      DequantQ5<BlockQ5_0, false>(static_cast<const BlockQ5_0*>(src), dst, n / kQK);
      return true;
    case GgmlType::kQ5_1:
      DequantQ5<BlockQ5_1, true>(static_cast<const BlockQ5_1*>(src), dst, n / kQK);
      return true;
    case GgmlType::kQ8_0: DequantQ8_0(static_cast<const BlockQ8_0*>(src), dst, n / kQK); return true;
    case GgmlType::kIQ4_NL: {
      const auto* b = static_cast<const BlockIQ4_NL*>(src);
      for (int64_t i = 0; i < n / kQK; ++i) DequantIq4(Fp16ToFp32(b[i].d), b[i].qs, dst + i * kQK);
      return true;
    }
    case GgmlType::kIQ4_XS: {
      const auto* b = static_cast<const BlockIQ4_XS*>(src);
      for (int64_t i = 0; i < n / kQK_K; ++i) {
        for (int j = 0; j < 8; ++j) {
          DequantIq4(Fp16ToFp32(b[i].d) * ScaleIQ4_XS(j, b[i]), b[i].qs + 16 * j, dst + i * kQK_K + 32 * j);
        }
      }
      return true;
    }
    case GgmlType::kQ2_K: DequantQ2_K(static_cast<const BlockQ2_K*>(src), dst, n / kQK_K); return true;
    case GgmlType::kQ3_K: DequantQ3_K(static_cast<const BlockQ3_K*>(src), dst, n / kQK_K); return true;
    case GgmlType::kQ4_K: DequantQ4_K(static_cast<const BlockQ4_K*>(src), dst, n / kQK_K); return true;
    case GgmlType::kQ5_K: DequantQ5_K(static_cast<const BlockQ5_K*>(src), dst, n / kQK_K); return true;
    case GgmlType::kQ6_K: DequantQ6_K(static_cast<const BlockQ6_K*>(src), dst, n / kQK_K); return true;
    default:
      return false;
  }
}

}  // namespace peng::kernels
