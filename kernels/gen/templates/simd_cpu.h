// The small SIMD vocabulary the CPU attention template is written in, one implementation per
// ISA. Every generated CPU instance is compiled three times (CMake: kernels/gen/CMakeLists.txt)
// with PENG_GEN_ISA = 1 (portable C++), 2 (AVX2 + FMA + F16C) or 3 (AVX-512 F/BW/DQ/VL), and
// the matching -march; the dispatcher picks the best one the CPU has at run time.
//
// Vec: kW floats. Ops: Zero, Set1, Load, Store, Add, Sub, Mul, Max, Fma(a, b, c) = a·b + c,
// Exp (relative error < 2e-7 on [-87, 88], 0 below), ReduceAdd, ReduceMax, AnyGreater(v, x)
// (some lane > x), ReduceAddEach(v, out) (out[j] = the sum of v[j]'s lanes, for kW vectors);
// LoadF16 / LoadBf16 load kW f16/bf16 values as floats. AVX-512 also has masked LoadN,
// LoadF16N, LoadBf16N and StoreN over the first n < kW lanes.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/kv_format.h"

#if PENG_GEN_ISA >= 2
#include <immintrin.h>
#endif

#if PENG_GEN_ISA == 3
#define PENG_GEN_ISA_NS isa_avx512
#elif PENG_GEN_ISA == 2
#define PENG_GEN_ISA_NS isa_avx2
#elif PENG_GEN_ISA == 1
#define PENG_GEN_ISA_NS isa_portable
#else
#error "PENG_GEN_ISA must be 1 (portable), 2 (avx2) or 3 (avx512)"
#endif

namespace peng::kernels::gen::PENG_GEN_ISA_NS {

using kernels::Bf16ToFp32;
using kernels::Fp16ToFp32;

// Cody–Waite range reduction + degree-6 polynomial, shared by the vector paths through the
// integer exponent trick; the portable path calls std::exp.
inline constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;

#if PENG_GEN_ISA >= 2
// The bytes of 16 kBits-bit codes packed little-endian at p (code i0 first, i0 a multiple of
// 16), spread so that byte j holds code j (still to be shifted by CodeShift(j) and masked).
template <int kBits>
inline __m128i CodeBytes16(const uint8_t* p, int i0) {
  const uint8_t* src = p + i0 * kBits / 8;  // 16 codes = 2·kBits bytes
  if constexpr (kBits == 8) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  __m128i bytes;
  if constexpr (kBits == 4) {
    bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
  } else if constexpr (kBits == 2) {
    int word;
    std::memcpy(&word, src, 4);
    bytes = _mm_cvtsi32_si128(word);
  } else {  // 1 bit: 2 bytes (reading 4 could run past the page)
    uint16_t half;
    std::memcpy(&half, src, 2);
    bytes = _mm_cvtsi32_si128(half);
  }
  constexpr int kPerByte = 8 / kBits;
  alignas(16) static constexpr uint8_t kIdx[16] = {
      0 / kPerByte, 1 / kPerByte, 2 / kPerByte, 3 / kPerByte, 4 / kPerByte, 5 / kPerByte,
      6 / kPerByte, 7 / kPerByte, 8 / kPerByte, 9 / kPerByte, 10 / kPerByte, 11 / kPerByte,
      12 / kPerByte, 13 / kPerByte, 14 / kPerByte, 15 / kPerByte};
  return _mm_shuffle_epi8(bytes, _mm_load_si128(reinterpret_cast<const __m128i*>(kIdx)));
}
// The right shift that brings code j to bit 0 of its spread byte.
template <int kBits>
constexpr int CodeShift(int j) { return j % (8 / kBits) * kBits; }
#endif

#if PENG_GEN_ISA == 3
struct Simd {
  using Vec = __m512;
  static constexpr int kW = 16;
  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Set1(float x) { return _mm512_set1_ps(x); }
  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static float ReduceAdd(Vec v) { return _mm512_reduce_add_ps(v); }
  static float ReduceMax(Vec v) { return _mm512_reduce_max_ps(v); }
  // Sixteen horizontal sums at once: pairs of vectors folded into each other in four rounds
  // (45 shuffles and adds, against ~7 per separate sum); lane j of the result is v[j]'s sum.
  static void ReduceAddEach(const Vec* v, float* out) {
    Vec w[8], x[4], y[2];
    for (int i = 0; i < 8; ++i) {  // per 128-bit quarter: [a0+a2, b0+b2, a1+a3, b1+b3]
      w[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    }
    for (int i = 0; i < 4; ++i) {  // per quarter: the quarter's sums of 4 vectors
      x[i] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * i], w[2 * i + 1], 0x44),
                           _mm512_shuffle_ps(w[2 * i], w[2 * i + 1], 0xee));
    }
    for (int i = 0; i < 2; ++i) {  // quarters added in pairs
      y[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0x88),
                           _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0xdd));
    }
    Store(out, _mm512_add_ps(_mm512_shuffle_f32x4(y[0], y[1], 0x88), _mm512_shuffle_f32x4(y[0], y[1], 0xdd)));
  }
  static bool AnyGreater(Vec v, float x) { return _mm512_cmp_ps_mask(v, Set1(x), _CMP_GT_OQ) != 0; }
  static Vec Exp(Vec x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, Set1(-87.3365478515625f), _CMP_GE_OQ);
    x = _mm512_max_ps(_mm512_min_ps(x, Set1(88.3762626647949f)), Set1(-87.3365478515625f));
    const Vec n = _mm512_roundscale_ps(_mm512_mul_ps(x, Set1(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    Vec r = _mm512_fnmadd_ps(n, Set1(kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, Set1(kLn2Lo), r);
    Vec p = Set1(1.9875691500e-4f);
    p = Fma(p, r, Set1(1.3981999507e-3f));
    p = Fma(p, r, Set1(8.3334519073e-3f));
    p = Fma(p, r, Set1(4.1665795894e-2f));
    p = Fma(p, r, Set1(1.6666665459e-1f));
    p = Fma(p, r, Set1(5.0000001201e-1f));
    p = Fma(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, Set1(1.0f)));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
  }
  // d[0:16] = code(i0 + j)·scale + zero for the kBits-bit codes packed little-endian at p
  // (i0 a multiple of 16): gather each lane's byte with a shuffle, shift, mask.
  template <int kBits>
  static void DequantCodes16(const uint8_t* p, int i0, float scale, float zero, float* d) {
    __m512i lanes = _mm512_cvtepu8_epi32(CodeBytes16<kBits>(p, i0));
    if constexpr (kBits < 8) {
      const __m512i shifts = _mm512_setr_epi32(
          CodeShift<kBits>(0), CodeShift<kBits>(1), CodeShift<kBits>(2), CodeShift<kBits>(3), CodeShift<kBits>(4),
          CodeShift<kBits>(5), CodeShift<kBits>(6), CodeShift<kBits>(7), CodeShift<kBits>(8), CodeShift<kBits>(9),
          CodeShift<kBits>(10), CodeShift<kBits>(11), CodeShift<kBits>(12), CodeShift<kBits>(13),
          CodeShift<kBits>(14), CodeShift<kBits>(15));
      lanes = _mm512_and_si512(_mm512_srlv_epi32(lanes, shifts), _mm512_set1_epi32((1 << kBits) - 1));
    }
    Store(d, Fma(_mm512_cvtepi32_ps(lanes), Set1(scale), Set1(zero)));
  }
  static Vec LoadF16(const uint16_t* s) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
  }
  static Vec LoadBf16(const uint16_t* s) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
  }
  // The first n < kW lanes only (masked: nothing past them is read or written).
  static __mmask16 FirstLanes(int n) { return static_cast<__mmask16>((1u << n) - 1); }
  static Vec LoadN(const float* p, int n) { return _mm512_maskz_loadu_ps(FirstLanes(n), p); }
  static Vec LoadF16N(const uint16_t* s, int n) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(FirstLanes(n), s)); }
  static Vec LoadBf16N(const uint16_t* s, int n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(FirstLanes(n), s)), 16));
  }
  static void StoreN(float* p, Vec v, int n) { _mm512_mask_storeu_ps(p, FirstLanes(n), v); }
};
#elif PENG_GEN_ISA == 2
struct Simd {
  using Vec = __m256;
  static constexpr int kW = 8;
  static Vec Zero() { return _mm256_setzero_ps(); }
  static Vec Set1(float x) { return _mm256_set1_ps(x); }
  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static float ReduceAdd(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static bool AnyGreater(Vec v, float x) {
    return _mm256_movemask_ps(_mm256_cmp_ps(v, Set1(x), _CMP_GT_OQ)) != 0;
  }
  // Eight horizontal sums at once (the AVX-512 fold, one round shorter).
  static void ReduceAddEach(const Vec* v, float* out) {
    Vec w[4], x[2];
    for (int i = 0; i < 4; ++i) {
      w[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    }
    for (int i = 0; i < 2; ++i) {
      x[i] = _mm256_add_ps(_mm256_shuffle_ps(w[2 * i], w[2 * i + 1], 0x44),
                           _mm256_shuffle_ps(w[2 * i], w[2 * i + 1], 0xee));
    }
    Store(out, _mm256_add_ps(_mm256_permute2f128_ps(x[0], x[1], 0x20), _mm256_permute2f128_ps(x[0], x[1], 0x31)));
  }
  static float ReduceMax(Vec v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static Vec Exp(Vec x) {
    const Vec live = _mm256_cmp_ps(x, Set1(-87.3365478515625f), _CMP_GE_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, Set1(88.3762626647949f)), Set1(-87.3365478515625f));
    const Vec n = _mm256_round_ps(_mm256_mul_ps(x, Set1(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    Vec r = _mm256_fnmadd_ps(n, Set1(kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, Set1(kLn2Lo), r);
    Vec p = Set1(1.9875691500e-4f);
    p = Fma(p, r, Set1(1.3981999507e-3f));
    p = Fma(p, r, Set1(8.3334519073e-3f));
    p = Fma(p, r, Set1(4.1665795894e-2f));
    p = Fma(p, r, Set1(1.6666665459e-1f));
    p = Fma(p, r, Set1(5.0000001201e-1f));
    p = Fma(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, Set1(1.0f)));
    // 2^n: n in [-127, 128) after the clamp; build the exponent in two halves so that n = 128
    // (x near 88.7) and n = -126.. stay finite/normal where the result is.
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i half = _mm256_srai_epi32(ni, 1);
    const Vec a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    const Vec b = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
    return _mm256_and_ps(live, _mm256_mul_ps(_mm256_mul_ps(p, a), b));
  }
  // d[0:16] = code(i0 + j)·scale + zero for the kBits-bit codes packed little-endian at p (i0 a
  // multiple of 16), as two vectors of 8.
  template <int kBits>
  static void DequantCodes16(const uint8_t* p, int i0, float scale, float zero, float* d) {
    const __m128i spread = CodeBytes16<kBits>(p, i0);
    for (int half = 0; half < 2; ++half) {
      __m256i lanes = _mm256_cvtepu8_epi32(half == 0 ? spread : _mm_srli_si128(spread, 8));
      if constexpr (kBits < 8) {  // the shifts repeat every 8 codes
        const __m256i shifts = _mm256_setr_epi32(CodeShift<kBits>(0), CodeShift<kBits>(1), CodeShift<kBits>(2),
                                                 CodeShift<kBits>(3), CodeShift<kBits>(4), CodeShift<kBits>(5),
                                                 CodeShift<kBits>(6), CodeShift<kBits>(7));
        lanes = _mm256_and_si256(_mm256_srlv_epi32(lanes, shifts), _mm256_set1_epi32((1 << kBits) - 1));
      }
      Store(d + 8 * half, Fma(_mm256_cvtepi32_ps(lanes), Set1(scale), Set1(zero)));
    }
  }
  static Vec LoadF16(const uint16_t* s) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s))); }
  static Vec LoadBf16(const uint16_t* s) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
  }
};
#else
// Plain C++ over 8-float arrays; the compiler vectorises what the baseline ISA allows.
struct Simd {
  struct Vec {
    float x[8];
  };
  static constexpr int kW = 8;
  static Vec Zero() { return Set1(0.0f); }
  static Vec Set1(float s) {
    Vec v{};
    for (float& e : v.x) e = s;
    return v;
  }
  static Vec Load(const float* p) {
    Vec v{};
    std::memcpy(v.x, p, sizeof(v.x));
    return v;
  }
  static void Store(float* p, Vec v) { std::memcpy(p, v.x, sizeof(v.x)); }
  template <typename F>
  static Vec Map2(Vec a, Vec b, F f) {
    for (int i = 0; i < kW; ++i) a.x[i] = f(a.x[i], b.x[i]);
    return a;
  }
  static Vec Add(Vec a, Vec b) { return Map2(a, b, [](float u, float w) { return u + w; }); }
  static Vec Sub(Vec a, Vec b) { return Map2(a, b, [](float u, float w) { return u - w; }); }
  static Vec Mul(Vec a, Vec b) { return Map2(a, b, [](float u, float w) { return u * w; }); }
  static Vec Max(Vec a, Vec b) { return Map2(a, b, [](float u, float w) { return u > w ? u : w; }); }
  static Vec Fma(Vec a, Vec b, Vec c) {
    for (int i = 0; i < kW; ++i) c.x[i] += a.x[i] * b.x[i];
    return c;
  }
  static float ReduceAdd(Vec v) {
    float s = 0;
    for (float e : v.x) s += e;
    return s;
  }
  static bool AnyGreater(Vec v, float x) {
    for (float e : v.x) {
      if (e > x) return true;
    }
    return false;
  }
  static void ReduceAddEach(const Vec* v, float* out) {
    for (int j = 0; j < kW; ++j) out[j] = ReduceAdd(v[j]);
  }
  static float ReduceMax(Vec v) {
    float m = v.x[0];
    for (float e : v.x) m = e > m ? e : m;
    return m;
  }
  static Vec Exp(Vec v) {
    for (float& e : v.x) e = std::exp(e);
    return v;
  }
  // d[0:16] = code(i0 + j)·scale + zero for the kBits-bit codes packed little-endian at p.
  template <int kBits>
  static void DequantCodes16(const uint8_t* p, int i0, float scale, float zero, float* d) {
    for (int j = 0; j < 16; ++j) {
      const int i = i0 + j;
      d[j] = static_cast<float>((p[i * kBits / 8] >> (i * kBits % 8)) & ((1 << kBits) - 1)) * scale + zero;
    }
  }
  static Vec LoadF16(const uint16_t* s) {
    Vec v{};
    for (int i = 0; i < kW; ++i) v.x[i] = Fp16ToFp32(s[i]);
    return v;
  }
  static Vec LoadBf16(const uint16_t* s) {
    Vec v{};
    for (int i = 0; i < kW; ++i) v.x[i] = Bf16ToFp32(s[i]);
    return v;
  }
};
#endif

}  // namespace peng::kernels::gen::PENG_GEN_ISA_NS
