#include "kernels/cpu/interleaved.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/fp16.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace peng::kernels {
namespace {

constexpr int kR = kInterleaveRows;
constexpr size_t kQ4_1Tile = 2 * kR * 2 + 16 * kR;  // 320
constexpr size_t kQ8_0Tile = kR * 2 + 32 * kR;      // 544

size_t TileBytes(GgmlType type) { return type == GgmlType::kQ4_1 ? kQ4_1Tile : kQ8_0Tile; }

const uint8_t* Tile(GgmlType type, const uint8_t* data, int64_t cols, int64_t group, int64_t block) {
  return data + (group * (cols / 32) + block) * TileBytes(type);
}

}  // namespace

bool CanInterleave(GgmlType type, int64_t rows, int64_t cols) {
#if defined(__AVX512F__)
  return (type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0) && rows % kR == 0 && cols % 32 == 0;
#else
  return false;
#endif
}

size_t InterleavedBytes(GgmlType type, int64_t rows, int64_t cols) {
  return static_cast<size_t>(rows / kR) * static_cast<size_t>(cols / 32) * TileBytes(type);
}

void Interleave(GgmlType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const size_t row_bytes = RowBytes(type, cols);
  const int64_t nb = cols / 32;
  for (int64_t g = 0; g < rows / kR; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* tile = dst + (g * nb + b) * TileBytes(type);
      for (int r = 0; r < kR; ++r) {
        const uint8_t* row = src + (g * kR + r) * row_bytes;
        if (type == GgmlType::kQ4_1) {
          const auto& blk = reinterpret_cast<const BlockQ4_1*>(row)[b];
          std::memcpy(tile + 2 * r, &blk.d, 2);
          std::memcpy(tile + 2 * kR + 2 * r, &blk.m, 2);
          // GGML packs columns j and j+16 of a block in byte j already.
          for (int j = 0; j < 16; ++j) tile[4 * kR + j * kR + r] = blk.qs[j];
        } else {
          const auto& blk = reinterpret_cast<const BlockQ8_0*>(row)[b];
          std::memcpy(tile + 2 * r, &blk.d, 2);
          for (int c = 0; c < 32; ++c) tile[2 * kR + c * kR + r] = static_cast<uint8_t>(blk.qs[c]);
        }
      }
    }
  }
}

void DequantizeInterleavedRow(GgmlType type, const uint8_t* data, int64_t cols, int64_t r, float* dst) {
  const int64_t g = r / kR, i = r % kR;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* tile = Tile(type, data, cols, g, b);
    uint16_t dh;
    std::memcpy(&dh, tile + 2 * i, 2);
    const float d = Fp16ToFp32(dh);
    float* out = dst + b * 32;
    if (type == GgmlType::kQ4_1) {
      uint16_t mh;
      std::memcpy(&mh, tile + 2 * kR + 2 * i, 2);
      const float m = Fp16ToFp32(mh);
      for (int j = 0; j < 16; ++j) {
        const uint8_t q = tile[4 * kR + j * kR + i];
        out[j] = d * (q & 0x0f) + m;
        out[j + 16] = d * (q >> 4) + m;
      }
    } else {
      for (int c = 0; c < 32; ++c) out[c] = d * static_cast<int8_t>(tile[2 * kR + c * kR + i]);
    }
  }
}

#if defined(__AVX512F__)
namespace {

// Accumulates kGroups row groups x kTokens tokens over all blocks. acc[g][t] holds 16 rows.
template <GgmlType T, int kGroups, int kTokens>
inline void Kernel(const uint8_t* data, int64_t cols, int64_t g0, const float* x, int64_t ldx,
                   float* y, int64_t ldy) {
  __m512 acc[kGroups][kTokens];
  for (int g = 0; g < kGroups; ++g) {
    for (int t = 0; t < kTokens; ++t) acc[g][t] = _mm512_setzero_ps();
  }
  const int64_t nb = cols / 32;
  const __m512i low4 = _mm512_set1_epi32(0x0f);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * 32;
    if constexpr (T == GgmlType::kQ4_1) {
      __m512 d[kGroups], m[kGroups];
      const uint8_t* q[kGroups];
      for (int g = 0; g < kGroups; ++g) {
        const uint8_t* tile = Tile(T, data, cols, g0 + g, b);
        d[g] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile)));
        m[g] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + 2 * kR)));
        q[g] = tile + 4 * kR;
      }
      for (int j = 0; j < 16; ++j) {
        __m512 wl[kGroups], wh[kGroups];
        for (int g = 0; g < kGroups; ++g) {
          const __m512i codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q[g] + j * kR)));
          wl[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(codes, low4)), d[g], m[g]);
          wh[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(codes, 4)), d[g], m[g]);
        }
        for (int t = 0; t < kTokens; ++t) {
          const __m512 xl = _mm512_set1_ps(xb[t * ldx + j]);
          const __m512 xh = _mm512_set1_ps(xb[t * ldx + j + 16]);
          for (int g = 0; g < kGroups; ++g) {
            acc[g][t] = _mm512_fmadd_ps(wl[g], xl, acc[g][t]);
            acc[g][t] = _mm512_fmadd_ps(wh[g], xh, acc[g][t]);
          }
        }
      }
    } else {  // Q8_0
      __m512 d[kGroups];
      const uint8_t* q[kGroups];
      for (int g = 0; g < kGroups; ++g) {
        const uint8_t* tile = Tile(T, data, cols, g0 + g, b);
        d[g] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile)));
        q[g] = tile + 2 * kR;
      }
      for (int c = 0; c < 32; ++c) {
        __m512 w[kGroups];
        for (int g = 0; g < kGroups; ++g) {
          const __m512i codes = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q[g] + c * kR)));
          w[g] = _mm512_mul_ps(_mm512_cvtepi32_ps(codes), d[g]);
        }
        for (int t = 0; t < kTokens; ++t) {
          const __m512 xv = _mm512_set1_ps(xb[t * ldx + c]);
          for (int g = 0; g < kGroups; ++g) acc[g][t] = _mm512_fmadd_ps(w[g], xv, acc[g][t]);
        }
      }
    }
  }
  for (int g = 0; g < kGroups; ++g) {
    for (int t = 0; t < kTokens; ++t) _mm512_storeu_ps(y + t * ldy + (g0 + g) * kR, acc[g][t]);
  }
}

// Decode keeps 8 row groups in flight (independent FMA chains; 4 measured 30% slower); batches
// take 2 groups x 6 tokens. Either way each (row, token) sees the same FMA sequence.
template <GgmlType T>
void Run(const uint8_t* data, int64_t cols, const float* x, int64_t ldx, int64_t n, float* y,
         int64_t ldy, int64_t g0, int64_t g1) {
  if (n == 1) {
    int64_t g = g0;
    for (; g + 8 <= g1; g += 8) Kernel<T, 8, 1>(data, cols, g, x, ldx, y, ldy);
    if (g + 4 <= g1) {
      Kernel<T, 4, 1>(data, cols, g, x, ldx, y, ldy);
      g += 4;
    }
    if (g + 2 <= g1) {
      Kernel<T, 2, 1>(data, cols, g, x, ldx, y, ldy);
      g += 2;
    }
    if (g < g1) Kernel<T, 1, 1>(data, cols, g, x, ldx, y, ldy);
    return;
  }
  constexpr int kTok = 6;
  for (int64_t t = 0; t < n; t += kTok) {
    const int64_t nt = std::min<int64_t>(kTok, n - t);
    const float* xt = x + t * ldx;
    float* yt = y + t * ldy;
    int64_t g = g0;
    for (; g + 2 <= g1; g += 2) {
      switch (nt) {
        case 6: Kernel<T, 2, 6>(data, cols, g, xt, ldx, yt, ldy); break;
        case 5: Kernel<T, 2, 5>(data, cols, g, xt, ldx, yt, ldy); break;
        case 4: Kernel<T, 2, 4>(data, cols, g, xt, ldx, yt, ldy); break;
        case 3: Kernel<T, 2, 3>(data, cols, g, xt, ldx, yt, ldy); break;
        case 2: Kernel<T, 2, 2>(data, cols, g, xt, ldx, yt, ldy); break;
        default: Kernel<T, 2, 1>(data, cols, g, xt, ldx, yt, ldy); break;
      }
    }
    for (; g < g1; ++g) {
      for (int64_t k = 0; k < nt; ++k) Kernel<T, 1, 1>(data, cols, g, xt + k * ldx, ldx, yt + k * ldy, ldy);
    }
  }
}

}  // namespace
#endif

void MatMulInterleaved(GgmlType type, const uint8_t* data, int64_t cols, const float* x,
                       int64_t ldx, int64_t num_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1) {
#if defined(__AVX512F__)
  const int64_t g0 = r0 / kR, g1 = r1 / kR;
  if (type == GgmlType::kQ4_1) {
    Run<GgmlType::kQ4_1>(data, cols, x, ldx, num_tokens, y, ldy, g0, g1);
  } else {
    Run<GgmlType::kQ8_0>(data, cols, x, ldx, num_tokens, y, ldy, g0, g1);
  }
#endif
}

}  // namespace peng::kernels
