// Row dequantization of every GGML type Peng computes with, into float32. Pure functions over
// raw bytes; the caller guarantees `src` holds RowBytes(type, n) bytes and n is a multiple of
// the block size.
#pragma once

#include <cstdint>

#include "kernels/ggml_types.h"

namespace peng::kernels {

// Writes n floats to dst. Returns false for a type Peng does not support (nothing written).
bool DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

// The first row of a [rows x cols] tensor of a supported type that holds a non-finite value, or
// -1. Quantized types are checked by their fp16 scales and minimums, which bound every weight
// (finite scales times codes of at most 8 bits are finite); float types value by value.
int64_t FirstNonFiniteRow(GgmlType type, const void* data, int64_t rows, int64_t cols);

// Scale j (0-15) of a Q3_K super-block, offset removed: 6 bits, the low 4 in byte j (j < 8) or
// the high nibble of byte j - 8, the high 2 in byte 8 + j % 4 at bit 2 (j / 4); minus 32.
inline int ScaleQ3_K(int j, const uint8_t* q) {
  const int low = j < 8 ? q[j] & 0x0f : q[j - 8] >> 4;
  const int high = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | high << 4) - 32;
}

// The 6-bit scale of 32-value sub-block j of an IQ4_XS super-block, offset removed: the low 4
// bits in nibble j % 2 of scales_l[j / 2], the high 2 at bit 2j of scales_h; minus 32.
inline int ScaleIQ4_XS(int j, const BlockIQ4_XS& b) {
  return (((b.scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | (((b.scales_h >> (2 * j)) & 3) << 4)) - 32;
}

// 6-bit scale and min j of a Q4_K / Q5_K super-block (12 packed bytes hold 8 of each).
inline void ScaleMinK4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace peng::kernels
