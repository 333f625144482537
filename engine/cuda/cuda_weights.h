// CudaWeights: a model's weights in device memory, laid out for the CUDA worker. Matrices of
// every GGML type are uploaded in their stored blocks, dequantized on the device
// (kernels/cuda/dequantize.h) and kept as bf16 for cuBLASLt; q/k/v are concatenated into one
// [q | k | v] matrix and gate/up into one [gate | up] matrix so each takes one GEMM. The token
// embedding stays in its stored type (rows are dequantized per batch). Norms, biases and RoPE
// frequencies are float32. One arena owns everything; immutable after Upload.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda/device_arena.h"
#include "engine/cuda/ops.h"
#include "engine/model.h"

namespace peng::cuda {

struct CudaLayerWeights {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* qkv_bias = nullptr;  // [qd + 2·kvd] or null
  const Bf16* qkv = nullptr;        // [(qd + 2·kvd) x d_model]
  const Bf16* wo = nullptr;         // [d_model x qd]
  const Bf16* gate_up = nullptr;    // [2·ffn x d_model]
  const Bf16* down = nullptr;       // [d_model x ffn]
};

struct CudaWeights {
  DeviceArena arena;
  kernels::GgmlType embd_type = kernels::GgmlType::kF32;
  size_t embd_row_bytes = 0;
  const uint8_t* token_embd = nullptr;  // [vocab rows] in embd_type's GGML blocks
  const Bf16* lm_head = nullptr;        // [vocab x d_model]
  const float* output_norm = nullptr;
  const float* rope_inv_freq = nullptr;  // [rope_dim / 2]
  std::vector<CudaLayerWeights> layers;

  // Uploads every layer (all must be loaded: FailedPrecondition naming the first that is not).
  static absl::StatusOr<std::unique_ptr<CudaWeights>> Upload(const Model& model,
                                                             cudaStream_t stream);
};

}  // namespace peng::cuda
