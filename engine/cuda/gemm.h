// Gemm: the CUDA worker's matrix products through cuBLASLt. y[n x N] (row-major float32) =
// x[n x K] (row-major bf16) · W[N x K]ᵀ (row-major bf16, as the weights are stored), computed
// in float32, optionally accumulated into y (beta = 1: the residual add is fused this way).
// Heuristic results are cached per shape. Owns the cuBLASLt handle and its workspace; used by
// one thread on one stream.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"
#include "engine/cuda/device_arena.h"
#include "engine/cuda/ops.h"

namespace peng::cuda {

class Gemm {
 public:
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(cudaStream_t stream);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  absl::Status Run(const Bf16* x, int64_t n, const Bf16* w, int64_t N, int64_t K, float* y,
                   bool accumulate);

 private:
  struct Plan {
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, bool>;  // n, N, K, accumulate

  explicit Gemm(cudaStream_t stream) : stream_(stream) {}
  absl::StatusOr<const Plan*> PlanFor(int64_t n, int64_t N, int64_t K, bool accumulate);

  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;
  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatmulPreference_t pref_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, Plan> plans_;
};

}  // namespace peng::cuda
