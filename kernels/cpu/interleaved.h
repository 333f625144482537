// Row-interleaved ("I16") weight layout for fast batched matmul with batch-invariant results.
// A [rows x cols] matrix (rows % 16 == 0) of a 32-granular GGML type is repacked at load into
// tiles of 16 rows x 32 columns. A tile holds the rows' scales (and minimums), then 64-byte code
// vectors in which row r owns bytes 4r..4r+3, so one vector is 4 consecutive columns of 16 rows
// (one dword lane per row). Every weight is d·u + m with u the unsigned code of its tile format:
//   kQ4_1  (Q4_1):  fp16 d[16], fp16 m[16], 4 vectors; byte i of vector v, row r holds the
//                   codes of columns 4v+i (low nibble) and 16+4v+i (high nibble)    (320 bytes)
//   kQ8_0  (Q8_0):  fp16 d[16], 8 vectors; byte i of vector v, row r holds column 4v+i's code
//                   + 128 (unsigned); m = -128 d                                    (544 bytes)
//   kQ4_0  (Q4_0):  fp16 d[16], codes as kQ4_1's; m = -8 d                          (288 bytes)
//   kQ5_0  (Q5_0):  fp16 d[16], the low 4 bits of the codes as kQ4_1's, then a 64-byte
//                   plane of fifth bits: byte i of row r's lane holds, at bit v, column
//                   4v+i's and, at bit 4+v, column 16+4v+i's; m = -16 d                (352 bytes)
//   kQ5_1  (Q5_1):  fp16 d[16], fp16 m[16], codes as kQ5_0's                           (384 bytes)
//   kQ4F32 (Q4_K):  float d[16], float m[16], codes as kQ4_1's                         (384 bytes)
//   kQ5F32 (Q5_K):  float d[16], float m[16], codes as kQ5_0's                         (448 bytes)
//   kIQ4   (IQ4_NL, IQ4_XS): float d[16], int32 k[16], then 4-bit indices laid out as
//                   kQ4_1's codes; a weight is d s with s = kIq4Values[index] (signed), and
//                   k = 128 Σ s, which the int8 kernel subtracts from its dots of x + 128 and s
//                                                                                     (384 bytes)
//   kQ6    (Q3_K, Q6_K, whose scales cover 16 columns): fp16 d[16] (the super-block's),
//                   int8 sc[16] for columns 0-15 and sc[16] for 16-31, int16 Σs[16] and
//                   Σs[16] for the two halves, the low 4 bits of u = s + 32 as kQ4_1's codes,
//                   then planes of bit 4 and of bit 5, each laid out as kQ5_0's; a weight is
//                   (d·sc) s with s = u - 32                                           (512 bytes)
// Q4_1 and Q8_0 keep their bytes (Deinterleave restores them). The others are decoded exactly:
// Q4_0 is d(u - 8), Q5_0 d(u - 16), Q5_1 d u + m (their fp16 scales kept), a Q4_K / Q5_K
// 32-column sub-block (d·sc) u - dmin·mn and a Q3_K / Q6_K 16-column one (d·sc) s: scales of up to 18
// significant bits, which float holds and fp16 does not.
// Tiles are stored row group by row group, blocks in column order. The kernels keep 16 rows per
// accumulator and broadcast activations (outer product: no horizontal sums), and every batch
// size runs the same arithmetic in the same order for a given (row, token).
//
// Two kernels read the layout:
// - float activations: codes are widened to float and FMA'd (the reference-exact path);
// - int8 activations (AVX-512 VNNI): the activations are quantized per 32-column block
//   (QuantizeActivations: symmetric, scale amax/127) and each block is one exact integer dot
//   (vpdpbusd), scaled into a float accumulator. 3.2-4x the float kernel's rate in
//   matmul_bench; the rounding of activations to 8 bits is the price (engine/README.md).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_types.h"

namespace peng::kernels {

inline constexpr int kInterleaveRows = 16;

// How a tile stores its weights (above).
enum class TileFormat { kQ4_1, kQ8_0, kQ4_0, kQ5_0, kQ5_1, kQ4F32, kQ5F32, kQ6, kIQ4 };
// The tile format of a type CanInterleave accepts.
TileFormat TileFormatOf(GgmlType type);
// Four-bit codes, two per byte (the five- and six-bit formats add planes of the higher bits),
// or one code per byte (kQ8_0).
constexpr bool NibbleCodes(TileFormat f) { return f != TileFormat::kQ8_0; }
constexpr bool FifthBits(TileFormat f) {
  return f == TileFormat::kQ5_0 || f == TileFormat::kQ5_1 || f == TileFormat::kQ5F32;
}
// Float32 scales (kQ4F32, kQ5F32, kIQ4), or fp16 (the file's own; kQ6: times int8 sub-scales).
constexpr bool FloatScales(TileFormat f) {
  return f == TileFormat::kQ4F32 || f == TileFormat::kQ5F32 || f == TileFormat::kIQ4;
}
// Whether the tile stores minimums; the others' is ImpliedMin(f) · d (kQ6, kIQ4: none).
constexpr bool StoredMins(TileFormat f) {
  return f == TileFormat::kQ4_1 || f == TileFormat::kQ5_1 || f == TileFormat::kQ4F32 || f == TileFormat::kQ5F32;
}
constexpr float ImpliedMin(TileFormat f) {
  return f == TileFormat::kQ8_0 ? -128.0f : f == TileFormat::kQ4_0 ? -8.0f : f == TileFormat::kQ5_0 ? -16.0f : 0.0f;
}
// One tile's layout, for the kernels that read it (this file's and amx.h's): the rows' scales,
// then (where stored) as many minimums, then the code vectors, then (five-bit codes) the plane.
constexpr size_t InterleavedScaleBytes(TileFormat f) { return (FloatScales(f) ? 4 : 2) * kInterleaveRows; }
constexpr size_t InterleavedCodesOffset(TileFormat f) {
  return (f == TileFormat::kQ6 ? 4 : StoredMins(f) || f == TileFormat::kIQ4 ? 2 : 1) * InterleavedScaleBytes(f);
}
// kQ6: where the sub-scales and the sums are.
inline constexpr size_t kQ6SubScales = 2 * kInterleaveRows, kQ6Sums = 4 * kInterleaveRows;
// kQ4_1 320, kQ8_0 544, kQ4_0 288, kQ5_0 352, kQ5_1 384, kQ4F32 384, kQ5F32 448, kQ6 512, kIQ4 384.
constexpr size_t InterleavedTileBytes(TileFormat f) {
  return InterleavedCodesOffset(f) + (NibbleCodes(f) ? 4 : 8) * 4 * kInterleaveRows +
         (FifthBits(f) ? 4 : f == TileFormat::kQ6 ? 8 : 0) * kInterleaveRows;
}

// Whether a matrix of this type and shape can be interleaved (on this build's CPU target).
bool CanInterleave(GgmlType type, int64_t rows, int64_t cols);
// Whether this build has the int8-activation kernel (AVX-512 VNNI).
bool HasInt8MatMul();
// Bytes of the interleaved copy (the same as the GGML layout for Q4_1, Q8_0).
size_t InterleavedBytes(GgmlType type, int64_t rows, int64_t cols);
// Repacks GGML rows into the interleaved layout.
void Interleave(GgmlType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);
// Whether Deinterleave can restore the GGML rows (Q4_1, Q8_0: their tiles keep the bytes).
bool CanDeinterleave(GgmlType type);
// The inverse of Interleave for those types: GGML rows back, byte for byte.
void Deinterleave(GgmlType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);
// Dequantizes row r of an interleaved matrix into cols floats.
void DequantizeInterleavedRow(GgmlType type, const uint8_t* data, int64_t cols, int64_t r, float* dst);
// y[t*ldy + r] = sum_c W[r][c] x[t*ldx + c] for rows [r0, r1) (multiples of 16) and all tokens.
void MatMulInterleaved(GgmlType type, const uint8_t* data, int64_t cols, const float* x,
                       int64_t ldx, int64_t num_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1);

// Quantizes activations for MatMulInterleavedInt8 (cols % 32 == 0): per token t and 32-column
// block b, codes[t*cols + 32b + j] = round(x / s) with s = max|x| / 127, and
// scales[(t*(cols/32) + b)*2] = s, scales[... + 1] = s * (sum of the block's codes).
void QuantizeActivations(const float* x, int64_t ldx, int64_t num_tokens, int64_t cols,
                         int8_t* codes, float* scales);
// As MatMulInterleaved, with activations from QuantizeActivations (requires HasInt8MatMul()).
// Rows [r1, next_end) are the caller's next work, if next_end > r1: batches fetch their first
// tiles while finishing [r0, r1), as they do within [r0, r1).
void MatMulInterleavedInt8(GgmlType type, const uint8_t* data, int64_t cols, const int8_t* codes,
                           const float* scales, int64_t num_tokens, float* y, int64_t ldy,
                           int64_t r0, int64_t r1, int64_t next_end = 0);

}  // namespace peng::kernels
