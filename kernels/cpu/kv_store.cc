#include "kernels/cpu/kv_store.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/cpu/fp16.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace peng::kernels {

void StoreKvRow(const float* src, KvFormat format, int64_t n, void* dst) {
  switch (format) {
    case KvFormat::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case KvFormat::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      int64_t i = 0;
#if defined(__AVX512F__)
      for (; i + 16 <= n; i += 16) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      }
#endif
      for (; i < n; ++i) d[i] = Fp32ToFp16(src[i]);
      return;
    }
    default:
      std::abort();  // invariant: dense formats only (quantized tokens go through StoreKvToken)
    case KvFormat::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = Fp32ToBf16(src[i]);
      return;
    }
  }
}

void LoadKvRow(const void* src, KvFormat format, int64_t n, float* dst) {
  const auto* h = static_cast<const uint16_t*>(src);
  switch (format) {
    case KvFormat::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case KvFormat::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(h[i]);
      return;
    case KvFormat::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(h[i]);
      return;
    default:
      std::abort();  // invariant: dense formats only (quantized tokens go through LoadKvToken)
  }
}

#if defined(__AVX512F__)
namespace {

// 16 codes of `bits` bits (1, 2, 4 or 8; lane j in [0, 2^bits)) packed as QuantizeKvRow lays
// them out: code j at bit j·bits of the 2·bits bytes at `dst`.
inline void StorePacked(__m512i c, int bits, uint8_t* dst) {
  if (bits == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(c));
    return;
  }
  if (bits == 1) {
    const uint16_t m = _mm512_test_epi32_mask(c, c);
    std::memcpy(dst, &m, 2);
    return;
  }
  const __m128i b = _mm512_cvtepi32_epi8(c);  // one code per byte
  // Pairs of bytes to one: c0 + 16·c1 (4 bits), c0 + 4·c1 (2 bits), each < 256.
  const __m128i pairs = _mm_maddubs_epi16(b, _mm_set1_epi16(bits == 4 ? 0x1001 : 0x0401));
  if (bits == 4) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(pairs, pairs));
    return;
  }
  const __m128i quads = _mm_madd_epi16(pairs, _mm_set1_epi32(0x00100001));  // p0 + 16·p1
  const __m128i words = _mm_packus_epi32(quads, quads);  // each < 256
  const uint32_t w = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_packus_epi16(words, words)));
  std::memcpy(dst, &w, 4);
}

// The inverse: 16 codes of `bits` bits from the 2·bits bytes at `src`, one per lane.
inline __m512i LoadPacked(const uint8_t* src, int bits) {
  if (bits == 8) return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  uint64_t w = 0;
  std::memcpy(&w, src, 2 * bits);
  const __m512i all = _mm512_set1_epi64(static_cast<long long>(w));
  const int b = bits;
  const __m512i first = _mm512_setr_epi64(0, b, 2 * b, 3 * b, 4 * b, 5 * b, 6 * b, 7 * b);  // lanes 0-7
  const __m256i lo = _mm512_cvtepi64_epi32(_mm512_srlv_epi64(all, first));
  const __m256i hi = _mm512_cvtepi64_epi32(_mm512_srlv_epi64(all, _mm512_add_epi64(first, _mm512_set1_epi64(8 * b))));
  return _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi32((1 << bits) - 1));
}

}  // namespace
#endif

void QuantizeKvRow(const float* src, int n, int bits, int groups, uint16_t* codes, uint16_t* meta) {
  const int per_group = n / groups, range = (1 << bits) - 1;
  std::fill_n(codes, (n * bits + 15) / 16, 0);
  for (int g = 0; g < groups; ++g) {
    const float* x = src + g * per_group;
    float lo = x[0], hi = x[0];
    int i = 1;
#if defined(__AVX512F__)
    // Every stored token of a quantized page comes through here (3-4.5% of serving at c=16
    // with quantized KV when it was scalar). Min and max are exact in any order, and the
    // codes round to nearest even as lrint does (the default rounding mode): the same codes
    // as the scalar loops. NaN inputs aside, where min and max pick operands differently.
    if (per_group % 16 == 0) {
      __m512 vlo = _mm512_loadu_ps(x), vhi = vlo;
      for (i = 16; i < per_group; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        vlo = _mm512_min_ps(v, vlo);
        vhi = _mm512_max_ps(v, vhi);
      }
      lo = _mm512_reduce_min_ps(vlo);
      hi = _mm512_reduce_max_ps(vhi);
    }
#endif
    for (; i < per_group; ++i) {
      lo = std::min(lo, x[i]);
      hi = std::max(hi, x[i]);
    }
    const uint16_t scale_h = Fp32ToFp16((hi - lo) / range), zero_h = Fp32ToFp16(lo);
    meta[2 * g] = scale_h;
    meta[2 * g + 1] = zero_h;
    const float scale = Fp16ToFp32(scale_h), zero = Fp16ToFp32(zero_h);
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    int32_t q[16];
    for (int i0 = 0; i0 < per_group; i0 += 16) {
      const int m = std::min(16, per_group - i0);
#if defined(__AVX512F__)
      if (m == 16) {
        const __m512 y = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i0), _mm512_set1_ps(zero)), _mm512_set1_ps(inv));
        const __m512i c = _mm512_cvtps_epi32(y);  // INT_MIN when out of range: clamps to 0
        _mm512_storeu_si512(q, _mm512_min_epi32(_mm512_max_epi32(c, _mm512_setzero_si512()), _mm512_set1_epi32(range)));
      } else
#endif
      {
        for (int j = 0; j < m; ++j) {
          const float y = (x[i0 + j] - zero) * inv;
          // Out of int range (or NaN): 0, as the vector conversion gives.
          q[j] = y >= -2147483648.0f && y < 2147483648.0f ? std::clamp(static_cast<int>(std::lrint(y)), 0, range) : 0;
        }
      }
#if defined(__AVX512F__)
      if (m == 16 && per_group % 16 == 0) {  // 16 codes that start on a 16-bit word: at once
        const __m512i c = _mm512_loadu_si512(q);
        StorePacked(c, bits, reinterpret_cast<uint8_t*>(codes) + (g * per_group + i0) * bits / 8);
        continue;
      }
#endif
      for (int j = 0; j < m; ++j) {
        const int idx = g * per_group + i0 + j;
        codes[idx * bits / 16] |= static_cast<uint16_t>(q[j] << (idx * bits % 16));
      }
    }
  }
}

void DequantizeKvRow(const uint16_t* codes, const uint16_t* meta, int n, int bits, int groups, float* dst) {
  const int per_group = n / groups, mask = (1 << bits) - 1;
  for (int g = 0; g < groups; ++g) {
    const float scale = Fp16ToFp32(meta[2 * g]), zero = Fp16ToFp32(meta[2 * g + 1]);
    int i = 0;
#if defined(__AVX512F__)
    // LeanKV's demotions read high-precision tokens back through here (with the requantization,
    // ~5% of the engine thread at c=16 when both were scalar).
    if (per_group % 16 == 0) {
      for (; i < per_group; i += 16) {
        const int base = g * per_group + i;  // a multiple of 16: its codes start on a word
        const __m512i c = LoadPacked(reinterpret_cast<const uint8_t*>(codes) + base * bits / 8, bits);
        _mm512_storeu_ps(dst + base, _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), _mm512_set1_ps(scale), _mm512_set1_ps(zero)));
      }
    }
#endif
    for (; i < per_group; ++i) {
      const int idx = g * per_group + i;
      const int code = (codes[idx * bits / 16] >> (idx * bits % 16)) & mask;
      dst[idx] = std::fma(static_cast<float>(code), scale, zero);
    }
  }
}

namespace {

// Element d of `row` (n elements of type T) to first[d * stride].
template <typename T>
void Scatter(const uint8_t* row, int n, size_t stride, uint8_t* first) {
  for (int d = 0; d < n; ++d) std::memcpy(first + d * stride * sizeof(T), row + d * sizeof(T), sizeof(T));
}

}  // namespace

void StoreKeyLanes(const float* k, KvFormat format, int head_dim, int lanes, int slot, uint8_t* keys) {
  const size_t bytes = KvFormatBytes(format);
  uint8_t* first = keys + KeyElement(lanes, head_dim, slot, 0) * bytes;
  if (lanes == 0) return StoreKvRow(k, format, head_dim, first);
  // Convert the row, then scatter it: element d sits `lanes` elements after element d - 1.
  alignas(64) uint8_t row[256 * 4];  // head_dim up to 256 without a heap allocation
  std::unique_ptr<uint8_t[]> heap;
  uint8_t* tmp = head_dim * bytes <= sizeof(row) ? row : (heap = std::make_unique<uint8_t[]>(head_dim * bytes)).get();
  StoreKvRow(k, format, head_dim, tmp);
  if (bytes == 2) Scatter<uint16_t>(tmp, head_dim, lanes, first);
  else Scatter<uint32_t>(tmp, head_dim, lanes, first);
}

void LoadKeyLanes(const uint8_t* keys, KvFormat format, int head_dim, int lanes, int slot, float* k) {
  const size_t bytes = KvFormatBytes(format);
  for (int d = 0; d < head_dim; ++d) LoadKvRow(keys + KeyElement(lanes, head_dim, slot, d) * bytes, format, 1, k + d);
}

void StoreKvToken(KvFormat format, int head_dim, int tokens_per_page, const float* k, const float* v,
                  int64_t position, int slot, uint8_t* page) {
  const KvPageSegments s = PageSegmentsOf(format, head_dim, tokens_per_page);
  if (!IsQuantized(format)) {
    StoreKeyLanes(k, format, head_dim, KeyLanes(format, tokens_per_page), slot, page + s.k);
    StoreKvRow(v, format, head_dim, page + s.v + slot * s.v_row);
    return;
  }
  const KvQuant q = QuantOf(format);
  QuantizeKvRow(k, head_dim, q.k_bits, q.k_groups, reinterpret_cast<uint16_t*>(page + s.k + slot * s.k_row),
                reinterpret_cast<uint16_t*>(page + s.k_meta + slot * s.k_meta_row));
  QuantizeKvRow(v, head_dim, q.v_bits, q.v_groups, reinterpret_cast<uint16_t*>(page + s.v + slot * s.v_row),
                reinterpret_cast<uint16_t*>(page + s.v_meta + slot * s.v_meta_row));
  const float score = 0.0f;
  const int32_t pos = static_cast<int32_t>(position);
  std::memcpy(page + s.scores + 4 * slot, &score, 4);
  std::memcpy(page + s.positions + 4 * slot, &pos, 4);
}

void LoadKvToken(KvFormat format, int head_dim, int tokens_per_page, const uint8_t* page, int slot,
                 float* k, float* v) {
  const KvPageSegments s = PageSegmentsOf(format, head_dim, tokens_per_page);
  if (!IsQuantized(format)) {
    LoadKeyLanes(page + s.k, format, head_dim, KeyLanes(format, tokens_per_page), slot, k);
    LoadKvRow(page + s.v + slot * s.v_row, format, head_dim, v);
    return;
  }
  const KvQuant q = QuantOf(format);
  DequantizeKvRow(reinterpret_cast<const uint16_t*>(page + s.k + slot * s.k_row),
                  reinterpret_cast<const uint16_t*>(page + s.k_meta + slot * s.k_meta_row), head_dim, q.k_bits,
                  q.k_groups, k);
  DequantizeKvRow(reinterpret_cast<const uint16_t*>(page + s.v + slot * s.v_row),
                  reinterpret_cast<const uint16_t*>(page + s.v_meta + slot * s.v_meta_row), head_dim, q.v_bits,
                  q.v_groups, v);
}

}  // namespace peng::kernels
