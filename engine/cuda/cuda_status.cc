#include "engine/cuda/cuda_status.h"

#include "absl/strings/str_cat.h"

namespace peng::cuda {

absl::Status CudaStatus(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::Status CublasStatus(cublasStatus_t err, absl::string_view what) {
  if (err == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": cuBLAS status ", static_cast<int>(err), " (",
                                           cublasLtGetStatusName(err), ": ",
                                           cublasLtGetStatusString(err), ")");
  if (err == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrCat("no CUDA device was found (cudaGetDeviceCount: ",
                                                      cudaGetErrorName(err), ": ",
                                                      cudaGetErrorString(err), ")"));
  }
  if (count == 0) {
    return absl::FailedPreconditionError("no CUDA device was found (cudaGetDeviceCount: 0 devices)");
  }
  return count;
}

}  // namespace peng::cuda
