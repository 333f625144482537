// CUDA dequantization of GGML blocks to float32 on the device (the first CUDA piece; the CUDA
// backend issue builds its quantized GEMV/GEMM on these block decoders). Host-callable launcher;
// pointers are device pointers, work is enqueued on `stream`.
#pragma once

#include <cstdint>

#include "kernels/ggml_types.h"

typedef struct CUstream_st* cudaStream_t;

namespace peng::kernels::cuda {

// Returns false (and enqueues nothing) when the type has no CUDA decoder.
bool DequantizeToF32(GgmlType type, const void* src, float* dst, int64_t n, cudaStream_t stream);

}  // namespace peng::kernels::cuda
