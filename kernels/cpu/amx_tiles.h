// Tile plumbing shared by the AMX kernels (amx.cc: prompt matmuls; amx_attention.cc: prompt
// attention). Internal to kernels/cpu; callers go through amx.h and amx_attention.h, which
// check HasAmxBf16() first.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && defined(__AVX512F__)
#define PENG_AMX 1
#include <immintrin.h>

#include <cstdint>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")

namespace peng::kernels::amx {

// Every kernel configures all eight tiles as 16 rows of 64 bytes: a float accumulator of 16 x 16,
// or a bfloat16 operand of 16 x 32 (a B operand holds pairs: row k has columns 2k and 2k + 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline TileConfig FullTiles() {
  TileConfig c;
  for (int i = 0; i < 8; ++i) {
    c.colsb[i] = 64;
    c.rows[i] = 16;
  }
  return c;
}

// GCC 12's _tile_loadconfig declares a read of 8 bytes, so the shapes could be dropped as dead
// stores; the asm takes the whole configuration as its operand.
inline void LoadConfig(const TileConfig& c) { asm volatile("ldtilecfg %0" : : "m"(c)); }
inline void ReleaseTiles() { asm volatile("tilerelease" ::: "memory"); }
// The tile intrinsics are asm statements that do not tell the compiler which memory they touch.
inline void MemoryBarrier() { asm volatile("" ::: "memory"); }

// Two float vectors (columns k and k + 1 of 16 rows) → one B-tile row: dword lane r holds
// (bf16 of even[r]) in its low half and (bf16 of odd[r]) in its high half, rounded to nearest
// even.
inline __m512i PackPair(__m512 even, __m512 odd) {
  const __m512i halves = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(odd, even));
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                              23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, halves);
}

}  // namespace peng::kernels::amx

#pragma GCC pop_options

#endif
