#include "kernels/attention/dispatch.h"

namespace peng::kernels {
namespace gen {
// Emitted by kernels/gen/generate.py (build/kernels/gen/{cpu,cuda}_table.cc).
extern const CpuAttentionKernel kCpuAttentionTable[];
extern const size_t kCpuAttentionTableSize;
extern const CudaAttentionKernel kCudaAttentionTable[];
extern const size_t kCudaAttentionTableSize;
}  // namespace gen

const char* Name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kPortable: return "portable";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
  }
  return "?";
}

CpuIsa BestCpuIsa() {
#if defined(__x86_64__) && !defined(PENG_GEN_PORTABLE_ONLY)
  static const CpuIsa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
      return CpuIsa::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      return CpuIsa::kAvx2;
    }
    return CpuIsa::kPortable;
  }();
  return best;
#else
  return CpuIsa::kPortable;
#endif
}

std::span<const CpuAttentionKernel> CpuAttentionKernels() {
  return {gen::kCpuAttentionTable, gen::kCpuAttentionTableSize};
}

std::span<const CudaAttentionKernel> CudaAttentionKernels() {
  return {gen::kCudaAttentionTable, gen::kCudaAttentionTableSize};
}

const CpuAttentionKernel* FindCpuAttention(const AttentionVariant& v, CpuIsa isa) {
  if (v.backend != AttentionBackend::kCpu) return nullptr;
  for (const CpuAttentionKernel& k : CpuAttentionKernels()) {
    if (k.isa == isa && k.variant == v) return &k;
  }
  return nullptr;
}

const CudaAttentionKernel* FindCudaAttention(const AttentionVariant& v) {
  if (v.backend != AttentionBackend::kCuda) return nullptr;
  for (const CudaAttentionKernel& k : CudaAttentionKernels()) {
    if (k.variant == v) return &k;
  }
  return nullptr;
}

std::string NotBuiltMessage(const AttentionVariant& v) {
  return "attention variant not built: " + ToString(v) +
         " (add it to kernels/gen/spec.yaml or configure with -DPENG_ATTENTION_VARIANTS=all)";
}

size_t CudaAttentionWorkspaceBytes(int num_seqs, int num_heads, int head_dim, int max_kv_len, bool with_probs) {
  const size_t parts = static_cast<size_t>(num_seqs) * num_heads * CudaDecodeSplits(max_kv_len);
  return parts * (head_dim + 1) * sizeof(float) +
         (with_probs ? static_cast<size_t>(num_seqs) * num_heads * max_kv_len * sizeof(float) : 0);
}

}  // namespace peng::kernels
