#include "engine/forward_factory.h"

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "engine/simple_kv_cache.h"

#if PENG_WITH_CUDA
#include "engine/cuda/cuda_forward.h"
#include "engine/cuda/cuda_kv_cache.h"
#include "engine/cuda/cuda_status.h"
#endif

namespace peng {
namespace {

absl::Status CheckCuda() {
#if PENG_WITH_CUDA
  const absl::StatusOr<int> count = cuda::CudaDeviceCount();
  if (!count.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA worker requested but ", count.status().message()));
  }
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(
      "CUDA worker requested but Peng was built without CUDA (configure with -DPENG_CUDA=ON)");
#endif
}

}  // namespace

absl::Status CheckDevice(Device device) {
  return device == Device::kCpu ? absl::OkStatus() : CheckCuda();
}

const char* DeviceName(Device device) { return device == Device::kCuda ? "cuda" : "cpu"; }

absl::StatusOr<Device> ParseDevice(absl::string_view text) {
  if (text == "cpu") return Device::kCpu;
  if (text == "cuda") return Device::kCuda;
  return absl::InvalidArgumentError(absl::StrCat("unknown device \"", text, "\" (expected cpu or cuda)"));
}

bool BuiltWithCuda() { return PENG_WITH_CUDA != 0; }

absl::StatusOr<std::unique_ptr<ForwardBackend>> MakeForward(const Model& model,
                                                            const BackendOptions& options) {
  if (options.device == Device::kCpu) {
    auto forward = std::make_unique<LlamaForward>(model, options.cpu);
    // A missing attention variant fails here, at startup, naming the tuple.
    PENG_RETURN_IF_ERROR(forward->PrepareAttention(options.kv_format, options.kv_low_format.value_or(options.kv_format)));
    return std::unique_ptr<ForwardBackend>(std::move(forward));
  }
  PENG_RETURN_IF_ERROR(CheckCuda());
#if PENG_WITH_CUDA
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<CudaForward> forward,
                        CudaForward::Create(model, {.device = options.cuda_device,
                                                    .kv_format = options.kv_format}));
  return std::unique_ptr<ForwardBackend>(std::move(forward));
#else
  return absl::InternalError("unreachable");
#endif
}

absl::StatusOr<std::unique_ptr<KvCache>> MakeKvCache(const ModelConfig& c,
                                                     const BackendOptions& options,
                                                     int64_t max_tokens) {
  if (options.device == Device::kCpu) {
    return std::make_unique<SimpleKvCache>(c.num_layers, c.num_kv_heads, c.head_dim, max_tokens,
                                           /*tokens_per_page=*/64, options.kv_format);
  }
  PENG_RETURN_IF_ERROR(CheckCuda());
#if PENG_WITH_CUDA
  PENG_RETURN_IF_ERROR(cuda::CudaStatus(cudaSetDevice(options.cuda_device), "cudaSetDevice"));
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaKvCache> kv,
                        cuda::CudaKvCache::Create({.num_layers = c.num_layers,
                                                   .num_kv_heads = c.num_kv_heads,
                                                   .head_dim = c.head_dim,
                                                   .max_tokens = max_tokens,
                                                   .format = options.kv_format}));
  return std::unique_ptr<KvCache>(std::move(kv));
#else
  return absl::InternalError("unreachable");
#endif
}

}  // namespace peng
