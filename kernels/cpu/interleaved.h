// Row-interleaved ("I16") weight layout for fast batched matmul with batch-invariant results.
// A [rows x cols] Q4_1 or Q8_0 matrix (rows % 16 == 0) is repacked at load into tiles of 16 rows
// x 32 columns. A tile holds the rows' fp16 scales, then 64-byte code vectors in which row r owns
// bytes 4r..4r+3, so one vector is 4 consecutive columns of 16 rows (one dword lane per row):
//   Q4_1 tile: fp16 d[16], fp16 m[16], 4 vectors; byte i of vector v, row r holds the codes of
//              columns 4v+i (low nibble) and 16+4v+i (high nibble)                 (320 bytes)
//   Q8_0 tile: fp16 d[16], 8 vectors; byte i of vector v, row r holds column 4v+i's code + 128
//              (unsigned)                                                           (544 bytes)
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
// One tile's layout, for the kernels that read it (this file's and amx.h's): the rows' fp16
// scales (kInterleavedScaleBytes; Q4_1: then as many fp16 minimums), then the code vectors.
inline constexpr size_t kInterleavedScaleBytes = 2 * kInterleaveRows;
constexpr size_t InterleavedCodesOffset(GgmlType type) {
  return (type == GgmlType::kQ4_1 ? 2 : 1) * kInterleavedScaleBytes;
}
constexpr size_t InterleavedTileBytes(GgmlType type) {  // Q4_1: 320, Q8_0: 544
  return InterleavedCodesOffset(type) + (type == GgmlType::kQ4_1 ? 4 : 8) * 4 * kInterleaveRows;
}

// Whether a matrix of this type and shape can be interleaved (on this build's CPU target).
bool CanInterleave(GgmlType type, int64_t rows, int64_t cols);
// Whether this build has the int8-activation kernel (AVX-512 VNNI).
bool HasInt8MatMul();
// Bytes of the interleaved copy (the same as the GGML layout for Q4_1, Q8_0).
size_t InterleavedBytes(GgmlType type, int64_t rows, int64_t cols);
// Repacks GGML rows into the interleaved layout.
void Interleave(GgmlType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);
// The inverse of Interleave: GGML rows back, byte for byte (the CUDA worker uploads these).
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
