// Tile reading shared by the kernels of interleaved tiles (interleaved.cc, amx.cc).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/interleaved.h"
#include "kernels/ggml_types.h"

namespace peng::kernels::tile_codes {

// Calls run.template operator()<F>() with the tile format f as a compile-time constant.
template <typename Run>
void WithTileFormat(TileFormat f, const Run& run) {
  switch (f) {
    case TileFormat::kQ4_1: return run.template operator()<TileFormat::kQ4_1>();
    case TileFormat::kQ8_0: return run.template operator()<TileFormat::kQ8_0>();
    case TileFormat::kQ4_0: return run.template operator()<TileFormat::kQ4_0>();
    case TileFormat::kQ5_0: return run.template operator()<TileFormat::kQ5_0>();
    case TileFormat::kQ5_1: return run.template operator()<TileFormat::kQ5_1>();
    case TileFormat::kQ4F32: return run.template operator()<TileFormat::kQ4F32>();
    case TileFormat::kQ5F32: return run.template operator()<TileFormat::kQ5F32>();
    case TileFormat::kQ6: return run.template operator()<TileFormat::kQ6>();
    case TileFormat::kIQ4: return run.template operator()<TileFormat::kIQ4>();
  }
}

}  // namespace peng::kernels::tile_codes

#if defined(__AVX512F__)
#include <immintrin.h>

namespace peng::kernels::tile_codes {

// The 16 rows' scales d and minimums m of a tile (kQ6: the scales of columns 0-15 in d and of
// 16-31 in m, each d·sc exactly; kIQ4: m unused).
template <TileFormat F>
inline void LoadScales(const uint8_t* tile, __m512* d, __m512* m) {
  constexpr size_t kScales = InterleavedScaleBytes(F);
  if constexpr (FloatScales(F)) {
    *d = _mm512_loadu_ps(tile);
    *m = _mm512_loadu_ps(tile + kScales);
    return;
  }
  *d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile)));
  if constexpr (F == TileFormat::kQ6) {
    const auto sub_scale = [&](size_t at) {
      return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + at))));
    };
    *m = _mm512_mul_ps(*d, sub_scale(kQ6SubScales + kInterleaveRows));
    *d = _mm512_mul_ps(*d, sub_scale(kQ6SubScales));
  } else if constexpr (StoredMins(F)) {
    *m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + kScales)));
  } else {
    *m = _mm512_mul_ps(*d, _mm512_set1_ps(ImpliedMin(F)));  // exact: a power of two
  }
}

// The high nibble of every byte, as a byte. GFNI does it in one operation (the affine map whose
// matrix moves bits 4-7 to 0-3 and clears 4-7) instead of a shift and a mask: matmul_bench
// l2/16 372-378 -> 378-420 GOP/s (docs/BENCHMARKS.md, "c=16 / c=1, ninth session").
inline __m512i HighNibbles(__m512i c) {
#if defined(__GFNI__)
  return _mm512_gf2p8affine_epi64_epi8(c, _mm512_set1_epi64(0x1020408000000000LL), 0);
#else
  return _mm512_and_si512(_mm512_srli_epi16(c, 4), _mm512_set1_epi8(0x0f));
#endif
}

// IQ4 indices (the low 4 bits of each byte) to their signed table values, one byte each.
inline __m512i Iq4Values(__m512i index) {
  return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values))),
                             index);
}

// Bit s of every byte, moved to bit `to` (the others cleared). GFNI: the affine map whose
// matrix row for output bit `to` (byte 7 - to of the quadword) selects input bit s.
inline __m512i BitTo(__m512i p, int s, int to) {
#if defined(__GFNI__)
  return _mm512_gf2p8affine_epi64_epi8(p, _mm512_set1_epi64(static_cast<long long>(1ull << (8 * (7 - to) + s))), 0);
#else
  const __m512i moved = s <= to ? _mm512_slli_epi32(p, to - s) : _mm512_srli_epi32(p, s - to);
  return _mm512_and_si512(moved, _mm512_set1_epi8(static_cast<char>(1 << to)));
#endif
}
inline __m512i BitToFour(__m512i p, int s) { return BitTo(p, s, 4); }

// Five-bit codes of vector v (0-3) of a kQ5F32 tile: `c` its nibble vector, `plane` the tile's
// fifth bits (byte i of a row's lane: bit v for column 4v+i, bit 4+v for column 16+4v+i). Sets
// the codes of columns 4v+i (`lo`) and 16+4v+i (`hi`), one byte each.
inline void FiveBitCodes(__m512i c, __m512i plane, int v, __m512i* lo, __m512i* hi) {
  *lo = _mm512_ternarylogic_epi32(c, _mm512_set1_epi8(0x0f), BitToFour(plane, v), 0xea);  // (a & b) | c
  *hi = _mm512_or_si512(HighNibbles(c), BitToFour(plane, 4 + v));
}

// Six-bit codes u of vector v (0-3) of a kQ6 tile: the nibbles `c`, bit 4 from `plane4` and
// bit 5 from `plane5` (each laid out as FiveBitCodes' plane). Sets the codes of columns 4v+i
// (`lo`) and 16+4v+i (`hi`).
inline void SixBitCodes(__m512i c, __m512i plane4, __m512i plane5, int v, __m512i* lo, __m512i* hi) {
  *lo = _mm512_ternarylogic_epi32(_mm512_and_si512(c, _mm512_set1_epi8(0x0f)), BitToFour(plane4, v),
                                  BitTo(plane5, v, 5), 0xfe);  // a | b | c
  *hi = _mm512_ternarylogic_epi32(HighNibbles(c), BitToFour(plane4, 4 + v), BitTo(plane5, 4 + v, 5), 0xfe);
}

}  // namespace peng::kernels::tile_codes

#endif  // __AVX512F__
