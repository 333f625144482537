// CUDA runtime and cuBLAS return codes as absl::Status, with the failing call as context, and
// the device-presence check the worker factory runs. Every CUDA call of engine/cuda goes
// through PENG_CUDA_RETURN_IF_ERROR / PENG_CUBLAS_RETURN_IF_ERROR (or CudaStatus where the
// caller cannot return a Status). Stateless; thread-safe.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/status.h"

namespace peng::cuda {

// OK for cudaSuccess; otherwise Internal "<what>: <cudaGetErrorName>: <cudaGetErrorString>"
// (ResourceExhausted for cudaErrorMemoryAllocation).
absl::Status CudaStatus(cudaError_t err, absl::string_view what);
absl::Status CublasStatus(cublasStatus_t err, absl::string_view what);

// The number of CUDA devices, or FailedPrecondition "no CUDA device was found
// (cudaGetDeviceCount: ...)" when there is none or the driver cannot be reached.
absl::StatusOr<int> CudaDeviceCount();

}  // namespace peng::cuda

#define PENG_CUDA_RETURN_IF_ERROR(expr) PENG_RETURN_IF_ERROR(::peng::cuda::CudaStatus((expr), #expr))
#define PENG_CUBLAS_RETURN_IF_ERROR(expr) \
  PENG_RETURN_IF_ERROR(::peng::cuda::CublasStatus((expr), #expr))
