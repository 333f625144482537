#include "engine/cuda/gemm.h"

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_status.h"

namespace peng::cuda {

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(cudaStream_t stream) {
  std::unique_ptr<Gemm> g(new Gemm(stream));
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&g->handle_));
  // Column-major view of the row-major operands: y_cmᵀ [N x n] = W_cm [K x N]ᵀ · x_cm [K x n].
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&g->desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      g->desc_, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      g->desc_, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  PENG_ASSIGN_OR_RETURN(g->workspace_, DeviceBuffer::Allocate(kWorkspaceBytes, "cuBLASLt workspace"));
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&g->pref_));
  const size_t ws = kWorkspaceBytes;
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      g->pref_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  return g;
}

Gemm::~Gemm() {
  for (auto& [key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
  }
  if (pref_) cublasLtMatmulPreferenceDestroy(pref_);
  if (desc_) cublasLtMatmulDescDestroy(desc_);
  if (handle_) cublasLtDestroy(handle_);
}

absl::StatusOr<const Gemm::Plan*> Gemm::PlanFor(int64_t n, int64_t N, int64_t K, bool accumulate) {
  const Key key{n, N, K, accumulate};
  if (auto it = plans_.find(key); it != plans_.end()) return &it->second;
  Plan plan;
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16BF, K, N, K));
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16BF, K, n, K));
  PENG_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, N, n, N));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const absl::Status s = CublasStatus(
      cublasLtMatmulAlgoGetHeuristic(handle_, desc_, plan.a, plan.b, plan.c, plan.c, pref_, 1,
                                     &result, &found),
      "cublasLtMatmulAlgoGetHeuristic");
  if (!s.ok() || found == 0) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    return absl::InternalError(absl::StrCat("cuBLASLt has no bf16 x bf16 -> f32 algorithm for n=", n,
                                            " N=", N, " K=", K, s.ok() ? "" : ": ",
                                            s.ok() ? "" : s.message()));
  }
  plan.algo = result.algo;
  return &plans_.emplace(key, plan).first->second;
}

absl::Status Gemm::Run(const Bf16* x, int64_t n, const Bf16* w, int64_t N, int64_t K, float* y,
                       bool accumulate) {
  if (n == 0) return absl::OkStatus();
  PENG_ASSIGN_OR_RETURN(const Plan* plan, PlanFor(n, N, K, accumulate));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  return CublasStatus(cublasLtMatmul(handle_, desc_, &alpha, w, plan->a, x, plan->b, &beta, y,
                                     plan->c, y, plan->c, &plan->algo, workspace_.data(),
                                     workspace_.size(), stream_),
                      absl::StrCat("cublasLtMatmul n=", n, " N=", N, " K=", K));
}

}  // namespace peng::cuda
