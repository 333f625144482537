#include "kernels/cpu/amx.h"

#include <cstdlib>
#include <cstring>

#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/interleaved.h"
#include "kernels/cpu/interleaved_codes.h"

#if PENG_AMX
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace peng::kernels {

size_t AmxScratchBytes(int64_t cols) { return static_cast<size_t>(cols) * 128 + 16 * 16 * sizeof(float); }

#if PENG_AMX
namespace {

// The interleaved layout (interleaved.h): a 16-row x 32-column tile holds the rows' scales and
// minimums, then code vectors of 64 bytes in which row r owns bytes 4r..4r+3.
constexpr int64_t kR = kInterleaveRows;
constexpr size_t kBTileBytes = 1024;  // 16 rows of 32 bfloat16: 32 columns of 16 weight rows

bool AskForTiles() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amx_bf16 = (edx >> 22) & 1, amx_tile = (edx >> 24) & 1;
  if (!amx_bf16 || !amx_tile || !__builtin_cpu_supports("avx512bw")) return false;
  if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) || !((eax >> 5) & 1)) return false;  // AVX512_BF16
  // Linux hands out the 8 KB tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM for
  // XFEATURE_XTILEDATA); without the grant the first tile instruction faults.
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")

namespace {

using amx::LoadConfig;
using amx::MemoryBarrier;
using amx::PackPair;
using amx::ReleaseTiles;

// The code field at bits [p, p + kBits) of each lane as the float code·2^p: OR-ed under the
// exponent of 2^23 it makes the float 2^23 + code·2^p exactly (for p + kBits <= 23), and
// subtracting 2^23 is exact. A mask and a subtraction, where extracting the field first would
// take a shift, which 512-bit vectors can run on one port only (alone, a tile's dequantization
// went from 40.7 to 34.6 ns; inside the kernel, overlapped with the tile unit, no change).
template <int kBits>
inline __m512 CodeTimesPow2(__m512i q, int p) {
  const __m512i bits = _mm512_ternarylogic_epi32(q, _mm512_set1_epi32(((1 << kBits) - 1) << p),
                                                 _mm512_set1_epi32(0x4b000000), 0xea);  // (a & b) | c
  return _mm512_sub_ps(_mm512_castsi512_ps(bits), _mm512_set1_ps(8388608.0f));
}

// Byte codes u of columns 4v..4v+3 (byte i of a row's lane: column 4v+i) as weights
// fma(u, d, m) in rows 2v and 2v+1 of a B tile.
inline void StoreByteCodes(__m512i q, __m512 d, __m512 m, int v, __m512i* dst) {
  const __m512 d8 = _mm512_mul_ps(d, _mm512_set1_ps(1.0f / 256));  // for the byte at bit 8
  const auto weight = [&](__m512i x, int k) { return _mm512_fmadd_ps(CodeTimesPow2<8>(x, 8 * k), k == 0 ? d : d8, m); };
  const __m512i q16 = _mm512_srli_epi32(q, 16);  // bytes 2-3 to 0-1
  _mm512_store_si512(dst + 2 * v, PackPair(weight(q, 0), weight(q, 1)));
  _mm512_store_si512(dst + 2 * v + 1, PackPair(weight(q16, 0), weight(q16, 1)));
}

// Dequantizes one interleaved tile (16 rows x 32 columns) into a B tile: row kk holds columns
// 2kk and 2kk+1. Weights are fma(u, d, m) with u the unsigned code (Q8_0: m = -128 d), computed
// as fma(u·2^p, d·2^-p, m): the power-of-two factors are exact, so the result is the same.
// kIQ4's signed table values s are taken as u = s ^ 0x80 = s + 128, with m = -128 d.
template <TileFormat F>
inline void DequantizeTile(const uint8_t* tile, __m512i* dst) {
  __m512 d, m;  // kQ6: the two halves' scales
  tile_codes::LoadScales<F>(tile, &d, &m);
  const uint8_t* codes = tile + InterleavedCodesOffset(F);
  if constexpr (F == TileFormat::kIQ4) {  // table values of the indices
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512 mq = _mm512_mul_ps(d, _mm512_set1_ps(-128.0f));
    for (int v = 0; v < 4; ++v) {
      const __m512i c = _mm512_loadu_si512(codes + 64 * v);
      StoreByteCodes(_mm512_xor_si512(tile_codes::Iq4Values(_mm512_and_si512(c, _mm512_set1_epi8(0x0f))), flip), d,
                     mq, v, dst);
      StoreByteCodes(_mm512_xor_si512(tile_codes::Iq4Values(tile_codes::HighNibbles(c)), flip), d, mq, v + 4, dst);
    }
  } else if constexpr (F == TileFormat::kQ6) {  // six-bit u, w = (d·sc) (u - 32): d·sc of columns 0-15 in d, 16-31 in m
    const __m512i plane4 = _mm512_loadu_si512(codes + 4 * 64), plane5 = _mm512_loadu_si512(codes + 5 * 64);
    const __m512 m0 = _mm512_mul_ps(d, _mm512_set1_ps(-32.0f)), m1 = _mm512_mul_ps(m, _mm512_set1_ps(-32.0f));
    for (int v = 0; v < 4; ++v) {
      __m512i lo, hi;
      tile_codes::SixBitCodes(_mm512_loadu_si512(codes + 64 * v), plane4, plane5, v, &lo, &hi);
      StoreByteCodes(lo, d, m0, v, dst);
      StoreByteCodes(hi, m, m1, v + 4, dst);
    }
  } else if constexpr (FifthBits(F)) {  // five-bit codes, a byte per column
    const __m512i plane = _mm512_loadu_si512(codes + 4 * 64);
    for (int v = 0; v < 4; ++v) {
      __m512i lo, hi;
      tile_codes::FiveBitCodes(_mm512_loadu_si512(codes + 64 * v), plane, v, &lo, &hi);
      StoreByteCodes(lo, d, m, v, dst);
      StoreByteCodes(hi, d, m, v + 4, dst);
    }
  } else if constexpr (NibbleCodes(F)) {
    __m512 scale[5];  // d·2^-p for the nibble at bit p = 0, 4, ..., 16
    for (int k = 0; k < 5; ++k) scale[k] = _mm512_mul_ps(d, _mm512_set1_ps(1.0f / static_cast<float>(1 << (4 * k))));
    const auto weight = [&](__m512i q, int k) { return _mm512_fmadd_ps(CodeTimesPow2<4>(q, 4 * k), scale[k], m); };
    for (int v = 0; v < 4; ++v) {
      const __m512i q = _mm512_loadu_si512(codes + 64 * v);
      const __m512i q12 = _mm512_srli_epi32(q, 12);  // bits 20-31 to 8-19, under the exponent
      // Byte i's low nibble is column 4v+i, its high nibble column 16+4v+i.
      const __m512 c0 = weight(q, 0), c1 = weight(q, 2), c2 = weight(q, 4), c3 = weight(q12, 3);
      const __m512 h0 = weight(q, 1), h1 = weight(q, 3), h2 = weight(q12, 2), h3 = weight(q12, 4);
      _mm512_store_si512(dst + 2 * v, PackPair(c0, c1));
      _mm512_store_si512(dst + 2 * v + 1, PackPair(c2, c3));
      _mm512_store_si512(dst + 8 + 2 * v, PackPair(h0, h1));
      _mm512_store_si512(dst + 8 + 2 * v + 1, PackPair(h2, h3));
    }
  } else {
    for (int v = 0; v < 8; ++v) StoreByteCodes(_mm512_loadu_si512(codes + 64 * v), d, m, v, dst);
  }
}

// Stores accumulator `tmm` (tokens [t, t+16) x 16 rows from column c) into y, or its first
// n - t rows through `tail` when the block runs past the last token. (A macro: the tile
// intrinsics take the tile number as a literal.)
#define PENG_STORE_C(tmm, t, c)                                                              \
  do {                                                                                       \
    if ((t) + 16 <= n) {                                                                     \
      _tile_stored(tmm, y + (t) * ldy + (c), ldy * sizeof(float));                           \
    } else if ((t) < n) {                                                                    \
      _tile_stored(tmm, tail, 16 * sizeof(float));                                           \
      MemoryBarrier();                                                                       \
      for (int64_t i = 0; i < n - (t); ++i) std::memcpy(y + ((t) + i) * ldy + (c), tail + 16 * i, 64); \
    }                                                                                        \
  } while (0)

// One panel of kGroups x 16 rows (column c0 of y; B tiles in `panel`, block by block) against
// every token, 32 tokens at a time. Meanwhile the vector unit dequantizes the next panel's
// tiles (`next_tiles` of them, through `dequantize_next(i)`), spread evenly over the tile
// operations: the two units overlap, and the next panel's tiles are in the cache, not in the
// store buffer, when its tile loads read them.
template <int kGroups, typename DequantizeNext>
void PanelTimesTokens(const uint8_t* panel, int64_t blocks, const uint16_t* x, int64_t cols,
                      int64_t n, float* y, int64_t ldy, int64_t c0, float* tail, int64_t next_tiles,
                      const DequantizeNext& dequantize_next) {
  const size_t x_stride = cols * sizeof(uint16_t);
  const int64_t steps = (n + kAmxTokenBlock - 1) / kAmxTokenBlock * blocks;
  int64_t step = 0, dequantized = 0;
  for (int64_t t = 0; t < n; t += kAmxTokenBlock) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint16_t* xa = x + t * cols;
    const uint16_t* xb = xa + 16 * cols;
    const uint8_t* b = panel;
    const bool second = t + 16 < n;  // tokens [t + 16, t + 32) hold any of the call's
    for (int64_t k = 0; k < blocks; ++k, b += kGroups * kBTileBytes) {
      _tile_loadd(4, xa + 32 * k, x_stride);
      _tile_loadd(6, b, 64);
      _tile_dpbf16ps(0, 4, 6);
      if constexpr (kGroups == 2) {
        _tile_loadd(7, b + kBTileBytes, 64);
        _tile_dpbf16ps(1, 4, 7);
      }
      if (second) {
        _tile_loadd(5, xb + 32 * k, x_stride);
        _tile_dpbf16ps(2, 5, 6);
        if constexpr (kGroups == 2) _tile_dpbf16ps(3, 5, 7);
      }
      for (++step; dequantized * steps < step * next_tiles; ++dequantized) dequantize_next(dequantized);
    }
    PENG_STORE_C(0, t, c0);
    PENG_STORE_C(2, t + 16, c0);
    if constexpr (kGroups == 2) {
      PENG_STORE_C(1, t, c0 + 16);
      PENG_STORE_C(3, t + 16, c0 + 16);
    }
  }
}
#undef PENG_STORE_C

template <TileFormat T>
void MatMulAmx(const uint8_t* data, int64_t cols, const uint16_t* x, int64_t n, float* y,
               int64_t ldy, int64_t r0, int64_t r1, uint8_t* scratch) {
  static const amx::TileConfig kConfig = amx::FullTiles();
  if (n == 0) return;
  const int64_t blocks = cols / 32;
  constexpr size_t tile_bytes = InterleavedTileBytes(T);
  // Two panel buffers: the tile unit reads one while the vector unit fills the other.
  uint8_t* panels[2] = {scratch, scratch + static_cast<size_t>(cols) * 64};
  float* tail = reinterpret_cast<float*>(scratch + static_cast<size_t>(cols) * 128);
  const auto groups_at = [&](int64_t r) { return r + 2 * kR <= r1 ? 2 : 1; };
  // Tile i of the panel at row r: block i / groups, group i % groups (the order the loop reads).
  const auto dequantize = [&](int64_t r, uint8_t* panel, int64_t i) {
    const int groups = groups_at(r);
    const uint8_t* tile = data + ((r / kR + i % groups) * blocks + i / groups) * tile_bytes;
    DequantizeTile<T>(tile, reinterpret_cast<__m512i*>(panel + i * kBTileBytes));
  };
  LoadConfig(kConfig);
  for (int64_t i = 0; i < groups_at(r0) * blocks; ++i) dequantize(r0, panels[0], i);
  for (int64_t r = r0, p = 0; r < r1; r += 2 * kR, p ^= 1) {
    MemoryBarrier();
    const int64_t next = r + 2 * kR;
    const int64_t next_tiles = next < r1 ? groups_at(next) * blocks : 0;
    const auto dequantize_next = [&](int64_t i) { dequantize(next, panels[p ^ 1], i); };
    if (groups_at(r) == 2) {
      PanelTimesTokens<2>(panels[p], blocks, x, cols, n, y, ldy, r, tail, next_tiles, dequantize_next);
    } else {
      PanelTimesTokens<1>(panels[p], blocks, x, cols, n, y, ldy, r, tail, next_tiles, dequantize_next);
    }
  }
  ReleaseTiles();
}

}  // namespace

void ConvertToBf16(const float* x, int64_t ldx, int64_t n, int64_t cols, uint16_t* dst) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * ldx;
    uint16_t* out = dst + t * cols;
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(xt + c));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), reinterpret_cast<const __m256i&>(h));
    }
    for (; c < cols; ++c) out[c] = Fp32ToBf16(xt[c]);
  }
}

#pragma GCC pop_options

bool HasAmxBf16() {
  static const bool kHas = AskForTiles();
  return kHas;
}


void MatMulInterleavedAmx(GgmlType type, const uint8_t* data, int64_t cols, const uint16_t* x,
                          int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1, uint8_t* scratch) {
  tile_codes::WithTileFormat(TileFormatOf(type), [&]<TileFormat F>() {
    MatMulAmx<F>(data, cols, x, n, y, ldy, r0, r1, scratch);
  });
}

#else  // no AMX in this build

bool HasAmxBf16() { return false; }
void ConvertToBf16(const float* x, int64_t ldx, int64_t n, int64_t cols, uint16_t* dst) {
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t c = 0; c < cols; ++c) dst[t * cols + c] = Fp32ToBf16(x[t * ldx + c]);
  }
}
void MatMulInterleavedAmx(GgmlType, const uint8_t*, int64_t, const uint16_t*, int64_t, float*, int64_t,
                          int64_t, int64_t, uint8_t*) {
  std::abort();  // invariant: callers check HasAmxBf16()
}

#endif

}  // namespace peng::kernels
