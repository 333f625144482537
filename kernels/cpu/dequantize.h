// Row dequantization of every GGML type Peng computes with, into float32. Pure functions over
// raw bytes; the caller guarantees `src` holds RowBytes(type, n) bytes and n is a multiple of
// the block size.
#pragma once

#include <cstdint>

#include "kernels/ggml_types.h"

namespace peng::kernels {

// Writes n floats to dst. Returns false for a type Peng does not support (nothing written).
bool DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

}  // namespace peng::kernels
