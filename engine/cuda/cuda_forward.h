// CudaForward: the CUDA worker — the same batched forward as the CPU worker (LlamaForward) on
// one GPU. Weights live on the device as bf16 (CudaWeights), the residual stream is float32,
// GEMMs go through cuBLASLt (bf16 in, float32 out), attention through the generated CUDA
// kernels over the KV cache's device pages (the cache must report a KvPageLayout in device
// memory: CudaKvCache, or memory/'s pool over KvPoolMemory). Owned and called by one thread;
// owns its stream, cuBLASLt handle, weight and scratch arenas. Includes no CUDA headers.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/forward_backend.h"
#include "engine/model.h"
#include "kernels/kv_format.h"

namespace peng {

struct CudaForwardOptions {
  int device = 0;                                        // CUDA device ordinal
  kernels::KvFormat kv_format = kernels::KvFormat::kF16;  // of the KV pages it will be given
  // Decode steps (one token per sequence) replay a CUDA graph captured once per step shape
  // (batch size, page-table width rounded up to a power of two): one launch per step.
  bool graphs = true;
};

class CudaForward : public ForwardBackend {
 public:
  // Fails when there is no such device, a weight type has no CUDA dequantizer, or an
  // attention variant the model needs was not built (the message names the tuple).
  static absl::StatusOr<std::unique_ptr<CudaForward>> Create(const Model& model,
                                                             const CudaForwardOptions& options);
  ~CudaForward() override;

  absl::Status Forward(const ForwardBatch& batch, KvCache& kv, ForwardOutput* out) override;
  absl::StatusOr<uint8_t*> KvPoolMemory(size_t bytes) override;

 private:
  struct Impl;
  explicit CudaForward(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace peng
