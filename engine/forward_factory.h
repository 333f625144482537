// The worker factory: picks the ForwardBackend for a device (the CPU worker, LlamaForward, or
// the CUDA worker, CudaForward from engine/cuda/) and a matching KvCache for single-sequence
// users (`peng generate`, tests). A CUDA request fails with a clear message when Peng was built
// without CUDA or no GPU is present; there is no fallback to the CPU. Stateless; thread-safe.
#pragma once

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/forward.h"
#include "engine/forward_backend.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "kernels/kv_format.h"

namespace peng {

enum class Device { kCpu, kCuda };
const char* DeviceName(Device device);                       // "cpu", "cuda"
absl::StatusOr<Device> ParseDevice(absl::string_view text);  // "cpu" | "cuda"
bool BuiltWithCuda();

struct BackendOptions {
  Device device = Device::kCpu;
  ForwardOptions cpu;                                     // the CPU worker's pool and matmuls
  int cuda_device = 0;                                    // CUDA device ordinal
  kernels::KvFormat kv_format = kernels::KvFormat::kF16;  // of the KV pages the worker reads
  std::optional<kernels::KvFormat> kv_low_format;  // LeanKV's low list (none: kv_format)
};

// OK when the worker of `device` can start here (always for the CPU); for CUDA the reason it
// cannot: built without CUDA, or no device. Cheap: run it before loading weights.
absl::Status CheckDevice(Device device);

absl::StatusOr<std::unique_ptr<ForwardBackend>> MakeForward(const Model& model,
                                                            const BackendOptions& options);

// A KvCache for one sequence of up to max_tokens tokens where `options.device`'s worker reads
// it: host pages (SimpleKvCache) for the CPU, device pages for CUDA, both in options.kv_format
// (dense formats).
absl::StatusOr<std::unique_ptr<KvCache>> MakeKvCache(const ModelConfig& config,
                                                     const BackendOptions& options,
                                                     int64_t max_tokens);

}  // namespace peng
