// The one dispatch layer between runtime attention tuples and the generated instances. The
// generator (kernels/gen/) emits the tables this reads (build/kernels/gen/*_table.cc); nothing
// else maps runtime values to compile-time kernel parameters. A tuple that was not built is an
// error naming it — there is no fallback to a nearby variant. Tables are immutable; all
// functions are thread-safe.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "kernels/attention/args.h"
#include "kernels/attention/variant.h"

namespace peng::kernels {

// CPU instruction sets each CPU instance is compiled for; the best one the CPU has is chosen
// at run time.
enum class CpuIsa : uint8_t { kPortable, kAvx2, kAvx512 };
const char* Name(CpuIsa isa);
CpuIsa BestCpuIsa();  // what this CPU supports

using CpuDecodeFn = void (*)(const DecodeArgs&);
using CpuCombineFn = void (*)(const CombineArgs&);
using CpuPrefillFn = void (*)(const PrefillArgs&);

struct CpuAttentionKernel {
  AttentionVariant variant;
  CpuIsa isa;
  CpuDecodeFn decode = nullptr;    // phase kDecode
  CpuCombineFn combine = nullptr;  // phase kDecode
  CpuPrefillFn prefill = nullptr;  // phase kPrefill
  const char* symbol = "";
};

// Returns cudaError_t as int; `stream` is a cudaStream_t.
using CudaAttentionFn = int (*)(const CudaAttentionBatch&, void* stream);
struct CudaAttentionKernel {
  AttentionVariant variant;
  CudaAttentionFn launch = nullptr;
  const char* symbol = "";
};

// Every instance that was built (all ISAs), in manifest order.
std::span<const CpuAttentionKernel> CpuAttentionKernels();
std::span<const CudaAttentionKernel> CudaAttentionKernels();  // empty without PENG_CUDA

// The instance of `v` (backend kCpu) for `isa`, or nullptr when it was not built.
const CpuAttentionKernel* FindCpuAttention(const AttentionVariant& v, CpuIsa isa = BestCpuIsa());
const CudaAttentionKernel* FindCudaAttention(const AttentionVariant& v);

// "attention variant not built: backend=... (rebuild with ...)" for startup errors.
std::string NotBuiltMessage(const AttentionVariant& v);

// Scratch bytes a CUDA decode launch needs for its split-KV partials (and, with_probs, the
// logits kept for the importance scores).
size_t CudaAttentionWorkspaceBytes(int num_seqs, int num_heads, int head_dim, int max_kv_len,
                                   bool with_probs = false);

}  // namespace peng::kernels
