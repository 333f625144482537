#include "kernels/cpu/interleaved.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/interleaved_codes.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace peng::kernels {
namespace {

constexpr int kR = kInterleaveRows;

constexpr size_t TileBytes(TileFormat f) { return InterleavedTileBytes(f); }

const uint8_t* Tile(TileFormat f, const uint8_t* data, int64_t cols, int64_t group, int64_t block) {
  return data + (group * (cols / 32) + block) * TileBytes(f);
}

// Codes of a tile: vector v (64 bytes) holds 4 bytes per row, row r at bytes 4r..4r+3.
const uint8_t* Codes(TileFormat f, const uint8_t* tile) { return tile + InterleavedCodesOffset(f); }

// Where code byte j of row r sits among a tile's codes: byte 4v+i goes to byte i of row r's
// lane in vector v. (Nibbles: j < 16, the byte of columns j and j+16; bytes: j < 32, column j.)
constexpr size_t CodeAt(int r, int j) { return (j / 4) * 4 * kR + 4 * r + j % 4; }
// Q8_0 codes are stored offset by 128 (unsigned) so that the int8 kernel multiplies u8 x s8.
constexpr uint8_t kQ8Offset = 0x80;
// Five- and six-bit formats: the planes of bit 4 (and bit 5) follow the 4 nibble vectors.
constexpr size_t kHighBitsOffset = 4 * 4 * kR;

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return Fp16ToFp32(h);
}

float Float(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

// One 32-column block of a GGML row, decoded: weight j is d·u[j] + m, exactly as DequantizeRow
// computes it (every d·u is exact in float).
struct DecodedBlock {
  float d, m;
  uint8_t u[32];
};

// The fifth bits of Q5_0 / Q5_1 (bit j of qh is column j's).
void AddFifthBits(const uint8_t qh_bytes[4], uint8_t* u) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 32; ++j) u[j] |= ((qh >> j) & 1) << 4;
}

void Nibbles(const uint8_t* qs, uint8_t* u) {  // qs[j]: column j (low nibble), j + 16 (high)
  for (int j = 0; j < 16; ++j) {
    u[j] = qs[j] & 0x0f;
    u[j + 16] = qs[j] >> 4;
  }
}

DecodedBlock DecodeBlock(GgmlType type, const uint8_t* row, int64_t b) {
  DecodedBlock o;
  switch (type) {
    case GgmlType::kQ4_0: {
      const auto& blk = reinterpret_cast<const BlockQ4_0*>(row)[b];
      o.d = Fp16ToFp32(blk.d);
      o.m = -8 * o.d;
      Nibbles(blk.qs, o.u);
      break;
    }
    case GgmlType::kQ5_0: case GgmlType::kQ5_1: {
      const bool one = type == GgmlType::kQ5_1;
      const uint8_t* p = row + b * (one ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0));
      const uint8_t* qh = p + (one ? offsetof(BlockQ5_1, qh) : offsetof(BlockQ5_0, qh));
      o.d = Half(p);
      o.m = one ? Half(p + 2) : -16 * o.d;
      Nibbles(qh + 4, o.u);
      AddFifthBits(qh, o.u);
      break;
    }
    case GgmlType::kQ4_K: case GgmlType::kQ5_K: {
      // Sub-block j of a super-block: the low (j even) or high nibbles of bytes 32(j/2)..+31,
      // scale d·sc_j, minimum dmin·mn_j subtracted; Q5_K's fifth bit is bit j of qh[l].
      const bool five = type == GgmlType::kQ5_K;
      const int64_t j = b % 8;
      const uint8_t* p = row + b / 8 * (five ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K));
      const uint8_t* qs = p + (five ? offsetof(BlockQ5_K, qs) : offsetof(BlockQ4_K, qs)) + 32 * (j / 2);
      uint8_t sc, mn;
      ScaleMinK4(static_cast<int>(j), p + offsetof(BlockQ4_K, scales), &sc, &mn);
      o.d = Half(p) * sc;
      o.m = -(Half(p + 2) * mn);
      for (int l = 0; l < 32; ++l) {
        o.u[l] = j % 2 == 0 ? qs[l] & 0x0f : qs[l] >> 4;
        if (five) o.u[l] |= ((p[offsetof(BlockQ5_K, qh) + l] >> j) & 1) << 4;
      }
      break;
    }
    default:
      std::abort();  // invariant: CanInterleave accepted the type
  }
  return o;
}

// The fp16 scale d of a Q6_K / Q3_K super-block and the int8 scale of its 16-column sub-block
// `sub`: weights are (d·sc) s.
void SuperBlockScales(GgmlType type, const uint8_t* block, int sub, uint16_t* d, int8_t* sc) {
  if (type == GgmlType::kQ6_K) {
    const auto* b = reinterpret_cast<const BlockQ6_K*>(block);
    *d = b->d;
    *sc = b->scales[sub];
  } else {
    const auto* b = reinterpret_cast<const BlockQ3_K*>(block);
    *d = b->d;
    *sc = static_cast<int8_t>(ScaleQ3_K(sub, b->scales));
  }
}

// The scale of 32-column block j of an IQ4_NL / IQ4_XS block (IQ4_NL: j = 0): weights are d·s.
float Iq4Scale(GgmlType type, const uint8_t* block, int j) {
  if (type == GgmlType::kIQ4_NL) return Fp16ToFp32(reinterpret_cast<const BlockIQ4_NL*>(block)->d);
  const auto* b = reinterpret_cast<const BlockIQ4_XS*>(block);
  return Fp16ToFp32(b->d) * ScaleIQ4_XS(j, *b);
}

// Byte i of row r's lane in a plane holds, at bit v, bit `bit` of column 4v+i's code and, at
// bit 4+v, that of column 16+4v+i's (the layout of the five- and six-bit formats' planes).
void WritePlane(const uint8_t* u, int bit, uint8_t* lane) {
  for (int i = 0; i < 4; ++i) {
    lane[i] = 0;
    for (int v = 0; v < 4; ++v) {
      lane[i] |= static_cast<uint8_t>(((u[4 * v + i] >> bit) & 1) << v | ((u[16 + 4 * v + i] >> bit) & 1) << (4 + v));
    }
  }
}

// Row r's low 4 bits of codes u[0..31] into a tile's nibble vectors (byte j: column j low,
// column j+16 high).
void WriteNibbles(const uint8_t* u, int r, uint8_t* codes) {
  for (int j = 0; j < 16; ++j) codes[CodeAt(r, j)] = static_cast<uint8_t>((u[j] & 0x0f) | (u[j + 16] & 0x0f) << 4);
}

// Column c's code in row i of a nibble tile, with `planes` planes of higher bits (0-2).
int NibbleCode(const uint8_t* codes, int i, int c, int planes) {
  const int j = c % 16, v = j / 4, bit = c < 16 ? v : 4 + v;
  const uint8_t q = codes[CodeAt(i, j)];
  int u = c < 16 ? q & 0x0f : q >> 4;
  for (int p = 0; p < planes; ++p) u |= ((codes[kHighBitsOffset + p * 4 * kR + 4 * i + j % 4] >> bit) & 1) << (4 + p);
  return u;
}

}  // namespace

TileFormat TileFormatOf(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_1: return TileFormat::kQ4_1;
    case GgmlType::kQ8_0: return TileFormat::kQ8_0;
    case GgmlType::kQ4_0: return TileFormat::kQ4_0;
    case GgmlType::kQ5_0: return TileFormat::kQ5_0;
    case GgmlType::kQ5_1: return TileFormat::kQ5_1;
    case GgmlType::kQ4_K: return TileFormat::kQ4F32;
    case GgmlType::kQ3_K: case GgmlType::kQ6_K: return TileFormat::kQ6;
    case GgmlType::kIQ4_NL: case GgmlType::kIQ4_XS: return TileFormat::kIQ4;
    default: return TileFormat::kQ5F32;  // Q5_K
  }
}

bool CanInterleave(GgmlType type, int64_t rows, int64_t cols) {
#if defined(__AVX512F__)
  switch (type) {
    case GgmlType::kQ4_0: case GgmlType::kQ4_1: case GgmlType::kQ5_0: case GgmlType::kQ5_1:
    case GgmlType::kQ8_0: case GgmlType::kQ3_K: case GgmlType::kQ4_K: case GgmlType::kQ5_K: case GgmlType::kQ6_K:
    case GgmlType::kIQ4_NL: case GgmlType::kIQ4_XS:
      return rows % kR == 0 && cols % 32 == 0 && RowBytes(type, cols) > 0;
    default:
      return false;
  }
#else
  return false;
#endif
}

bool CanDeinterleave(GgmlType type) { return type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0; }

bool HasInt8MatMul() {
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
  return true;
#else
  return false;
#endif
}

size_t InterleavedBytes(GgmlType type, int64_t rows, int64_t cols) {
  return static_cast<size_t>(rows / kR) * static_cast<size_t>(cols / 32) * TileBytes(TileFormatOf(type));
}

void Interleave(GgmlType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const TileFormat f = TileFormatOf(type);
  const size_t row_bytes = RowBytes(type, cols);
  const size_t scale_bytes = InterleavedScaleBytes(f);
  const int64_t nb = cols / 32;
  std::vector<float> sub16(f == TileFormat::kQ6 ? kR * kQK_K : 0);
  for (int64_t g = 0; g < rows / kR; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* tile = dst + (g * nb + b) * TileBytes(f);
      uint8_t* codes = tile + InterleavedCodesOffset(f);
      for (int r = 0; r < kR; ++r) {
        const uint8_t* row = src + (g * kR + r) * row_bytes;
        if (type == GgmlType::kQ4_1) {
          const auto& blk = reinterpret_cast<const BlockQ4_1*>(row)[b];
          std::memcpy(tile + 2 * r, &blk.d, 2);
          std::memcpy(tile + scale_bytes + 2 * r, &blk.m, 2);
          for (int j = 0; j < 16; ++j) codes[CodeAt(r, j)] = blk.qs[j];
        } else if (type == GgmlType::kQ8_0) {
          const auto& blk = reinterpret_cast<const BlockQ8_0*>(row)[b];
          std::memcpy(tile + 2 * r, &blk.d, 2);
          for (int c = 0; c < 32; ++c) codes[CodeAt(r, c)] = static_cast<uint8_t>(blk.qs[c]) ^ kQ8Offset;
        } else if (f == TileFormat::kIQ4) {
          // The file's indices as they are (IQ4_XS: sub-block b % 8 of the super-block).
          const bool xs = type == GgmlType::kIQ4_XS;
          const uint8_t* block = row + (xs ? b / 8 * sizeof(BlockIQ4_XS) : b * sizeof(BlockIQ4_NL));
          const uint8_t* qs = xs ? block + offsetof(BlockIQ4_XS, qs) + 16 * (b % 8) : block + offsetof(BlockIQ4_NL, qs);
          const float d = Iq4Scale(type, block, xs ? static_cast<int>(b % 8) : 0);
          int32_t k = 0;
          for (int j = 0; j < 16; ++j) {
            codes[CodeAt(r, j)] = qs[j];
            k += 128 * (kIq4Values[qs[j] & 0x0f] + kIq4Values[qs[j] >> 4]);
          }
          std::memcpy(tile + 4 * r, &d, 4);
          std::memcpy(tile + scale_bytes + 4 * r, &k, 4);
        } else if (f == TileFormat::kQ6) {
          // Codes from the dequantized weights: w = (d·sc) s exactly, so s = w / (d·sc).
          const GgmlTypeTraits& tr = Traits(type);
          const uint8_t* sb = row + b / 8 * tr.block_bytes;
          float* w = sub16.data() + r * kQK_K;  // the row's super-block, decoded at its first 32 columns
          if (b % 8 == 0) DequantizeRow(type, sb, w, kQK_K);
          uint8_t u[32];
          for (int h = 0; h < 2; ++h) {
            const int sub = static_cast<int>(b % 8) * 2 + h;
            uint16_t d16;
            int8_t sc;
            SuperBlockScales(type, sb, sub, &d16, &sc);
            const float d = Fp16ToFp32(d16) * sc;
            int16_t sum = 0;
            for (int c = 0; c < 16; ++c) {
              const int code = d != 0 && std::isfinite(d) ? static_cast<int>(std::lrint(w[16 * sub + c] / d)) : 0;
              u[16 * h + c] = static_cast<uint8_t>(code + 32);
              sum = static_cast<int16_t>(sum + code);
            }
            std::memcpy(tile + 2 * r, &d16, 2);
            tile[kQ6SubScales + kR * h + r] = static_cast<uint8_t>(sc);
            std::memcpy(tile + kQ6Sums + 2 * kR * h + 2 * r, &sum, 2);
          }
          WriteNibbles(u, r, codes);
          WritePlane(u, 4, codes + kHighBitsOffset + 4 * r);
          WritePlane(u, 5, codes + kHighBitsOffset + 4 * kR + 4 * r);
        } else {
          const DecodedBlock blk = DecodeBlock(type, row, b);
          if (FloatScales(f)) {
            std::memcpy(tile + 4 * r, &blk.d, 4);
            std::memcpy(tile + scale_bytes + 4 * r, &blk.m, 4);
          } else {  // the file's fp16 scales, back from float exactly
            const uint16_t d = Fp32ToFp16(blk.d), m = Fp32ToFp16(blk.m);
            std::memcpy(tile + 2 * r, &d, 2);
            if (StoredMins(f)) std::memcpy(tile + scale_bytes + 2 * r, &m, 2);
          }
          WriteNibbles(blk.u, r, codes);
          if (FifthBits(f)) WritePlane(blk.u, 4, codes + kHighBitsOffset + 4 * r);
        }
      }
    }
  }
}

void Deinterleave(GgmlType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  if (!CanDeinterleave(type)) std::abort();  // invariant: callers check CanDeinterleave
  const TileFormat f = TileFormatOf(type);
  const size_t row_bytes = RowBytes(type, cols);
  const int64_t nb = cols / 32;
  for (int64_t g = 0; g < rows / kR; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* tile = Tile(f, src, cols, g, b);
      const uint8_t* codes = Codes(f, tile);
      for (int r = 0; r < kR; ++r) {
        uint8_t* row = dst + (g * kR + r) * row_bytes;
        if (type == GgmlType::kQ4_1) {
          auto& blk = reinterpret_cast<BlockQ4_1*>(row)[b];
          std::memcpy(&blk.d, tile + 2 * r, 2);
          std::memcpy(&blk.m, tile + InterleavedScaleBytes(f) + 2 * r, 2);
          for (int j = 0; j < 16; ++j) blk.qs[j] = codes[CodeAt(r, j)];
        } else {
          auto& blk = reinterpret_cast<BlockQ8_0*>(row)[b];
          std::memcpy(&blk.d, tile + 2 * r, 2);
          for (int c = 0; c < 32; ++c) blk.qs[c] = static_cast<int8_t>(codes[CodeAt(r, c)] ^ kQ8Offset);
        }
      }
    }
  }
}

void DequantizeInterleavedRow(GgmlType type, const uint8_t* data, int64_t cols, int64_t r, float* dst) {
  const TileFormat f = TileFormatOf(type);
  const int64_t g = r / kR;
  const int i = static_cast<int>(r % kR);
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* tile = Tile(f, data, cols, g, b);
    const uint8_t* codes = Codes(f, tile);
    const size_t scale_bytes = InterleavedScaleBytes(f);
    float* out = dst + b * 32;
    if (f == TileFormat::kQ8_0) {
      const float d = Half(tile + 2 * i);
      for (int c = 0; c < 32; ++c) out[c] = d * (static_cast<int>(codes[CodeAt(i, c)]) - kQ8Offset);
      continue;
    }
    if (f == TileFormat::kIQ4) {
      const float d = Float(tile + 4 * i);
      for (int c = 0; c < 32; ++c) out[c] = d * kIq4Values[NibbleCode(codes, i, c, 0)];
      continue;
    }
    if (f == TileFormat::kQ6) {
      for (int c = 0; c < 32; ++c) {
        out[c] = Half(tile + 2 * i) * static_cast<int8_t>(tile[kQ6SubScales + kR * (c / 16) + i]) *
                 (NibbleCode(codes, i, c, 2) - 32);
      }
      continue;
    }
    const float d = FloatScales(f) ? Float(tile + 4 * i) : Half(tile + 2 * i);
    const float m = FloatScales(f) ? Float(tile + scale_bytes + 4 * i)
                    : StoredMins(f) ? Half(tile + scale_bytes + 2 * i)
                                    : ImpliedMin(f) * d;
    for (int c = 0; c < 32; ++c) out[c] = d * NibbleCode(codes, i, c, FifthBits(f) ? 1 : 0) + m;
  }
}

void QuantizeActivations(const float* x, int64_t ldx, int64_t num_tokens, int64_t cols,
                         int8_t* codes, float* scales) {
  const int64_t nb = cols / 32;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* xt = x + t * ldx;
    int8_t* qt = codes + t * cols;
    float* st = scales + t * nb * 2;
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = xt + b * 32;
      float amax = 0;
#if defined(__AVX512F__)
      const __m512 lo = _mm512_loadu_ps(xb), hi = _mm512_loadu_ps(xb + 16);
      amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
      const float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
      const __m512 idv = _mm512_set1_ps(id);
      const __m512i qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, idv));  // round to nearest even
      const __m512i qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, idv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qt + b * 32), _mm512_cvtsepi32_epi8(qlo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qt + b * 32 + 16), _mm512_cvtsepi32_epi8(qhi));
      const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
#else
      for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(xb[c]));
      const float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
      int sum = 0;
      for (int c = 0; c < 32; ++c) {
        const int q = static_cast<int>(std::nearbyint(xb[c] * id));
        qt[b * 32 + c] = static_cast<int8_t>(q);
        sum += q;
      }
#endif
      st[2 * b] = d;
      st[2 * b + 1] = d * static_cast<float>(sum);
    }
  }
}

#if defined(__AVX512F__)
namespace {

using tile_codes::LoadScales;

// Float activations: accumulates kGroups row groups x kTokens tokens over all blocks;
// acc[g][t] holds 16 rows. Weights are w = d u + m with u the unsigned code.
template <TileFormat T, int kGroups, int kTokens>
inline void KernelF32(const uint8_t* data, int64_t cols, int64_t g0, const float* x, int64_t ldx,
                      float* y, int64_t ldy) {
  __m512 acc[kGroups][kTokens];
  for (int g = 0; g < kGroups; ++g) {
    for (int t = 0; t < kTokens; ++t) acc[g][t] = _mm512_setzero_ps();
  }
  const int64_t nb = cols / 32;
  const __m512i low4 = _mm512_set1_epi32(0x0f), low8 = _mm512_set1_epi32(0xff);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * 32;
    __m512 d[kGroups], m[kGroups];
    const uint8_t* q[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      const uint8_t* tile = Tile(T, data, cols, g0 + g, b);
      LoadScales<T>(tile, &d[g], &m[g]);
      q[g] = Codes(T, tile);
    }
    constexpr int kVectors = NibbleCodes(T) ? 4 : 8;
    for (int v = 0; v < kVectors; ++v) {
      __m512i codes[kGroups];
      for (int g = 0; g < kGroups; ++g) codes[g] = _mm512_loadu_si512(q[g] + v * 4 * kR);
      for (int i = 0; i < 4; ++i) {
        if constexpr (NibbleCodes(T)) {  // columns 4v+i (low nibble) and 16+4v+i (high)
          __m512 wl[kGroups], wh[kGroups];
          for (int g = 0; g < kGroups; ++g) {
            const __m512i c = _mm512_srli_epi32(codes[g], 8 * i);
            __m512i ul = _mm512_and_si512(c, low4), uh = _mm512_and_si512(_mm512_srli_epi32(c, 4), low4);
            if constexpr (T == TileFormat::kIQ4) {  // d s, s the indexed table value
              const __m512i table = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values)));
              wl[g] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_permutexvar_epi32(ul, table)), d[g]);
              wh[g] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_permutexvar_epi32(uh, table)), d[g]);
              continue;
            }
            // The higher bits: byte i of each plane, bits v and 4+v.
            const auto high_bits = [&](int plane, int to) {
              const __m512i bits = _mm512_loadu_si512(q[g] + kHighBitsOffset + plane * 4 * kR);
              const __m512i one = _mm512_set1_epi32(1);
              ul = _mm512_or_si512(ul, _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(bits, 8 * i + v), one), to));
              uh = _mm512_or_si512(uh, _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(bits, 8 * i + 4 + v), one), to));
            };
            if constexpr (FifthBits(T)) high_bits(0, 4);
            if constexpr (T == TileFormat::kQ6) {  // (d·sc) (u - 32), d·sc of the column's half (d, m here)
              high_bits(0, 4);
              high_bits(1, 5);
              const __m512i offset = _mm512_set1_epi32(32);
              wl[g] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(ul, offset)), d[g]);
              wh[g] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(uh, offset)), m[g]);
              continue;
            }
            wl[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ul), d[g], m[g]);
            wh[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(uh), d[g], m[g]);
          }
          for (int t = 0; t < kTokens; ++t) {
            const __m512 xl = _mm512_set1_ps(xb[t * ldx + 4 * v + i]);
            const __m512 xh = _mm512_set1_ps(xb[t * ldx + 16 + 4 * v + i]);
            for (int g = 0; g < kGroups; ++g) {
              acc[g][t] = _mm512_fmadd_ps(wl[g], xl, acc[g][t]);
              acc[g][t] = _mm512_fmadd_ps(wh[g], xh, acc[g][t]);
            }
          }
        } else {  // column 4v+i
          __m512 w[kGroups];
          for (int g = 0; g < kGroups; ++g) {
            const __m512i c = _mm512_and_si512(_mm512_srli_epi32(codes[g], 8 * i), low8);
            w[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), d[g], m[g]);
          }
          for (int t = 0; t < kTokens; ++t) {
            const __m512 xv = _mm512_set1_ps(xb[t * ldx + 4 * v + i]);
            for (int g = 0; g < kGroups; ++g) acc[g][t] = _mm512_fmadd_ps(w[g], xv, acc[g][t]);
          }
        }
      }
    }
  }
  for (int g = 0; g < kGroups; ++g) {
    for (int t = 0; t < kTokens; ++t) _mm512_storeu_ps(y + t * ldy + (g0 + g) * kR, acc[g][t]);
  }
}

#if defined(__AVX512VNNI__)
// Int8 activations: per block, exact integer dots (vpdpbusd: 4 u8 codes x 4 s8 activations per
// row lane), then acc += (d dx) * dot + m * (dx * sum of codes), in the same order for every
// batch size.
// kPrefetch (batches): `prefetch` is the tiles of the kGroups row groups that come next; this
// call fetches their blocks [pf_lo, pf_hi) (empty when none come next) into the cache, spread
// evenly over its own blocks, so streaming weights overlaps the arithmetic without a burst of
// requests that would stall it. Decode (one token) streams through the hardware prefetchers
// and compiles without it.
template <TileFormat T, int kGroups, int kTokens, bool kPrefetch>
inline void KernelInt8(const uint8_t* data, int64_t cols, int64_t g0, const int8_t* xq,
                       const float* xs, float* y, int64_t ldy, const uint8_t* prefetch,
                       int64_t pf_lo, int64_t pf_hi) {
  __m512 acc[kGroups][kTokens];
  for (int g = 0; g < kGroups; ++g) {
    for (int t = 0; t < kTokens; ++t) acc[g][t] = _mm512_setzero_ps();
  }
  const int64_t nb = cols / 32;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  // Prefetch pacing without divisions: after block b, floor((b + 1)·(pf_hi − pf_lo) / nb) of
  // the range have been requested.
  int64_t pf_next = pf_lo, pf_credit = 0;
  for (int64_t b = 0; b < nb; ++b) {
    __m512i dot[kGroups][kTokens];
    for (int g = 0; g < kGroups; ++g) {
      for (int t = 0; t < kTokens; ++t) dot[g][t] = _mm512_setzero_si512();
    }
    const uint8_t* q[kGroups];
    for (int g = 0; g < kGroups; ++g) q[g] = Codes(T, Tile(T, data, cols, g0 + g, b));
    if constexpr (kPrefetch) {
      for (pf_credit += pf_hi - pf_lo; pf_credit >= nb; pf_credit -= nb, ++pf_next) {
        for (int g = 0; g < kGroups; ++g) {  // block pf_next of each next group
          const uint8_t* next = prefetch + (g * nb + pf_next) * TileBytes(T);
          for (size_t line = 0; line < TileBytes(T); line += 64) {
            _mm_prefetch(reinterpret_cast<const char*>(next + line), _MM_HINT_T0);
          }
        }
      }
    }
    const int8_t* xb = xq + b * 32;
    if constexpr (T == TileFormat::kIQ4) {
      // Table values of the indices, signed: the dots are of x + 128 (x ^ 0x80) and s, less k.
      for (int v = 0; v < 4; ++v) {
        __m512i lo[kGroups], hi[kGroups];
        for (int g = 0; g < kGroups; ++g) {
          const __m512i c = _mm512_loadu_si512(q[g] + v * 4 * kR);
          lo[g] = tile_codes::Iq4Values(_mm512_and_si512(c, low4));
          hi[g] = tile_codes::Iq4Values(tile_codes::HighNibbles(c));
        }
        for (int t = 0; t < kTokens; ++t) {
          uint32_t al, ah;
          std::memcpy(&al, xb + t * cols + 4 * v, 4);
          std::memcpy(&ah, xb + t * cols + 16 + 4 * v, 4);
          const __m512i xl = _mm512_set1_epi32(static_cast<int32_t>(al ^ 0x80808080u));
          const __m512i xh = _mm512_set1_epi32(static_cast<int32_t>(ah ^ 0x80808080u));
          for (int g = 0; g < kGroups; ++g) {
            dot[g][t] = _mm512_dpbusd_epi32(dot[g][t], xl, lo[g]);
            dot[g][t] = _mm512_dpbusd_epi32(dot[g][t], xh, hi[g]);
          }
        }
      }
      for (int g = 0; g < kGroups; ++g) {
        const uint8_t* tile = Tile(T, data, cols, g0 + g, b);
        const __m512 d = _mm512_loadu_ps(tile);
        const __m512i k = _mm512_loadu_si512(tile + InterleavedScaleBytes(T));
        for (int t = 0; t < kTokens; ++t) {
          const __m512 ddx = _mm512_mul_ps(d, _mm512_set1_ps(xs[(t * nb + b) * 2]));
          acc[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(dot[g][t], k)), ddx, acc[g][t]);
        }
      }
      continue;
    }
    if constexpr (T == TileFormat::kQ6) {
      // Signed codes s = u - 32, a scale per half: the activations become the unsigned
      // operand, x + 128 (x ^ 0x80), and each half's dot loses k = 128 Σs, exactly, in integers.
      for (int h = 0; h < 2; ++h) {
        for (int g = 0; g < kGroups; ++g) {
          for (int t = 0; t < kTokens; ++t) dot[g][t] = _mm512_setzero_si512();
        }
        for (int v = 0; v < 4; ++v) {
          __m512i sv[kGroups];
          for (int g = 0; g < kGroups; ++g) {
            __m512i lo, hi;
            tile_codes::SixBitCodes(_mm512_loadu_si512(q[g] + v * 4 * kR), _mm512_loadu_si512(q[g] + kHighBitsOffset),
                                    _mm512_loadu_si512(q[g] + kHighBitsOffset + 4 * kR), v, &lo, &hi);
            sv[g] = _mm512_sub_epi8(h == 0 ? lo : hi, _mm512_set1_epi8(32));
          }
          for (int t = 0; t < kTokens; ++t) {
            uint32_t a;
            std::memcpy(&a, xb + t * cols + 16 * h + 4 * v, 4);
            const __m512i xv = _mm512_set1_epi32(static_cast<int32_t>(a ^ 0x80808080u));
            for (int g = 0; g < kGroups; ++g) dot[g][t] = _mm512_dpbusd_epi32(dot[g][t], xv, sv[g]);
          }
        }
        for (int g = 0; g < kGroups; ++g) {
          const uint8_t* tile = Tile(T, data, cols, g0 + g, b);
          __m512 d0, d1;
          LoadScales<T>(tile, &d0, &d1);
          const __m512i k = _mm512_slli_epi32(
              _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + kQ6Sums + 2 * kR * h))), 7);
          for (int t = 0; t < kTokens; ++t) {
            const __m512 ddx = _mm512_mul_ps(h == 0 ? d0 : d1, _mm512_set1_ps(xs[(t * nb + b) * 2]));
            acc[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(dot[g][t], k)), ddx, acc[g][t]);
          }
        }
      }
      continue;
    }
    if constexpr (NibbleCodes(T)) {
      __m512i plane[kGroups];
      if constexpr (FifthBits(T)) {
        for (int g = 0; g < kGroups; ++g) plane[g] = _mm512_loadu_si512(q[g] + kHighBitsOffset);
      }
      for (int v = 0; v < 4; ++v) {
        __m512i lo[kGroups], hi[kGroups];
        for (int g = 0; g < kGroups; ++g) {
          const __m512i c = _mm512_loadu_si512(q[g] + v * 4 * kR);
          if constexpr (FifthBits(T)) {
            tile_codes::FiveBitCodes(c, plane[g], v, &lo[g], &hi[g]);
          } else {
            lo[g] = _mm512_and_si512(c, low4);
            hi[g] = tile_codes::HighNibbles(c);
          }
        }
        for (int t = 0; t < kTokens; ++t) {
          int32_t al, ah;
          std::memcpy(&al, xb + t * cols + 4 * v, 4);
          std::memcpy(&ah, xb + t * cols + 16 + 4 * v, 4);
          const __m512i xl = _mm512_set1_epi32(al), xh = _mm512_set1_epi32(ah);
          for (int g = 0; g < kGroups; ++g) {
            dot[g][t] = _mm512_dpbusd_epi32(dot[g][t], lo[g], xl);
            dot[g][t] = _mm512_dpbusd_epi32(dot[g][t], hi[g], xh);
          }
        }
      }
    } else {
      for (int v = 0; v < 8; ++v) {
        __m512i c[kGroups];
        for (int g = 0; g < kGroups; ++g) c[g] = _mm512_loadu_si512(q[g] + v * 4 * kR);
        for (int t = 0; t < kTokens; ++t) {
          int32_t a;
          std::memcpy(&a, xb + t * cols + 4 * v, 4);
          const __m512i xv = _mm512_set1_epi32(a);
          for (int g = 0; g < kGroups; ++g) dot[g][t] = _mm512_dpbusd_epi32(dot[g][t], c[g], xv);
        }
      }
    }
    for (int g = 0; g < kGroups; ++g) {
      __m512 d, m;
      LoadScales<T>(Tile(T, data, cols, g0 + g, b), &d, &m);
      for (int t = 0; t < kTokens; ++t) {
        const float* s = xs + (t * nb + b) * 2;
        const __m512 ddx = _mm512_mul_ps(d, _mm512_set1_ps(s[0]));
        acc[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[g][t]), ddx, acc[g][t]);
        acc[g][t] = _mm512_fmadd_ps(m, _mm512_set1_ps(s[1]), acc[g][t]);
      }
    }
  }
  for (int g = 0; g < kGroups; ++g) {
    for (int t = 0; t < kTokens; ++t) _mm512_storeu_ps(y + t * ldy + (g0 + g) * kR, acc[g][t]);
  }
}
#endif  // __AVX512VNNI__

// Runs 2 groups x nt tokens (1 <= nt <= N) through the kernel instance for exactly nt.
template <int N, typename K>
inline void TwoGroups(int64_t nt, int64_t g, int64_t t, const K& kernel) {
  if constexpr (N > 1) {
    if (nt < N) return TwoGroups<N - 1>(nt, g, t, kernel);
  }
  kernel.template operator()<2, N>(g, t);
}

// Tiles the row groups [g0, g1) and n tokens over a kernel: `kernel.template operator()<G, N>
// (g, t0)` runs G groups x N tokens. Decode keeps 8 row groups in flight (independent chains;
// 4 measured 30% slower with the float kernel); batches take 2 groups x kTok tokens. Either way each (row, token)
// sees the same arithmetic.
template <int kTok, typename K>
void Tiles(int64_t n, int64_t g0, int64_t g1, const K& kernel) {
  if (n == 1) {
    int64_t g = g0;
    for (; g + 8 <= g1; g += 8) kernel.template operator()<8, 1>(g, 0);
    if (g + 4 <= g1) {
      kernel.template operator()<4, 1>(g, 0);
      g += 4;
    }
    if (g + 2 <= g1) {
      kernel.template operator()<2, 1>(g, 0);
      g += 2;
    }
    if (g < g1) kernel.template operator()<1, 1>(g, 0);
    return;
  }
  // Row groups outermost: a pair's tiles (~11 KB for 576 Q4_1 columns) stay in L1 while every
  // token tile passes over them, so each weight byte comes from memory once per call.
  int64_t g = g0;
  for (; g + 2 <= g1; g += 2) {
    for (int64_t t = 0; t < n; t += kTok) TwoGroups<kTok>(std::min<int64_t>(kTok, n - t), g, t, kernel);
  }
  for (; g < g1; ++g) {
    for (int64_t t = 0; t < n; ++t) kernel.template operator()<1, 1>(g, t);
  }
}

}  // namespace
#endif  // __AVX512F__

void MatMulInterleaved(GgmlType type, const uint8_t* data, int64_t cols, const float* x,
                       int64_t ldx, int64_t num_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1) {
#if defined(__AVX512F__)
  auto run = [&]<TileFormat T>() {
    Tiles<6>(num_tokens, r0 / kR, r1 / kR, [&]<int G, int N>(int64_t g, int64_t t) {
      KernelF32<T, G, N>(data, cols, g, x + t * ldx, ldx, y + t * ldy, ldy);
    });
  };
  tile_codes::WithTileFormat(TileFormatOf(type), run);
#endif
}

void MatMulInterleavedInt8(GgmlType type, const uint8_t* data, int64_t cols, const int8_t* codes,
                           const float* scales, int64_t num_tokens, float* y, int64_t ldy,
                           int64_t r0, int64_t r1, int64_t next_end) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
  const int64_t nb = cols / 32, g1 = r1 / kR, fetch_end = std::max(g1, next_end / kR);
  constexpr int kTok = 6;
  const int64_t token_tiles = (num_tokens + kTok - 1) / kTok;
  auto run = [&]<TileFormat T>() {
    Tiles<kTok>(num_tokens, r0 / kR, g1, [&]<int G, int N>(int64_t g, int64_t t) {
      // Batches: the token tiles over these G groups fetch the next G groups' tiles, a share of
      // the blocks each, in the order the next groups will read them. All in the first token
      // tile measured 3-6% slower at 32-64 tokens with the weights streaming from memory
      // (matmul_bench dram/32, dram/64).
      const int8_t* xq = codes + t * cols;
      const float* xs = scales + t * nb * 2;
      float* yt = y + t * ldy;
      if (num_tokens == 1) return KernelInt8<T, G, N, false>(data, cols, g, xq, xs, yt, ldy, nullptr, 0, 0);
      const int64_t k = t / kTok;
      const bool ahead = g + 2 * G <= fetch_end;  // the next G groups are this thread's too
      KernelInt8<T, G, N, true>(data, cols, g, xq, xs, yt, ldy, ahead ? Tile(T, data, cols, g + G, 0) : nullptr,
                                ahead ? nb * k / token_tiles : 0, ahead ? nb * (k + 1) / token_tiles : 0);
    });
  };
  tile_codes::WithTileFormat(TileFormatOf(type), run);
#endif
}

}  // namespace peng::kernels
