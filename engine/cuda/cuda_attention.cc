#include "engine/cuda/cuda_attention.h"

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_status.h"
#include "kernels/attention/dispatch.h"

namespace peng::cuda {
namespace {

kernels::AttentionVariant VariantOf(kernels::AttentionPhase phase, kernels::KvFormat format,
                                    int head_dim, int group) {
  kernels::AttentionVariant v;
  v.backend = kernels::AttentionBackend::kCuda;
  v.phase = phase;
  v.kv_format = format;
  v.head_dim = head_dim;
  v.group = group;
  v.score_mod = kernels::ScoreMod::kScale;
  v.mask_mod = kernels::MaskMod::kCausal;
  v.reduction = kernels::Reduction::kSoftmax;
  return v;
}

}  // namespace

absl::StatusOr<CudaAttention> CudaAttention::Find(kernels::KvFormat format, int head_dim,
                                                  int group) {
  CudaAttention a;
  for (const auto phase : {kernels::AttentionPhase::kPrefill, kernels::AttentionPhase::kDecode}) {
    const kernels::AttentionVariant v = VariantOf(phase, format, head_dim, group);
    const kernels::CudaAttentionKernel* k = kernels::FindCudaAttention(v);
    if (k == nullptr || k->launch == nullptr) {
      return absl::NotFoundError(absl::StrCat("CUDA worker: ", kernels::NotBuiltMessage(v)));
    }
    (phase == kernels::AttentionPhase::kPrefill ? a.prefill_ : a.decode_) = k;
  }
  return a;
}

size_t CudaAttention::WorkspaceBytes(int num_seqs, int num_heads, int head_dim,
                                     int max_kv_len) const {
  return kernels::CudaAttentionWorkspaceBytes(num_seqs, num_heads, head_dim, max_kv_len);
}

absl::Status CudaAttention::Launch(const AttentionLaunch& l, bool prefill,
                                   cudaStream_t stream) const {
  kernels::CudaAttentionBatch b;
  b.num_seqs = l.num_seqs;
  b.num_kv_heads = l.num_kv_heads;
  b.q = l.q;
  b.out = l.out;
  b.q_start = l.q_start;
  b.kv_len = l.kv_len;
  b.kv.base = l.kv_base;
  b.kv.page_bytes = l.page_bytes;
  b.kv.tokens_per_page = l.tokens_per_page;
  b.kv.page_table = l.page_table;
  b.kv.max_pages = l.max_pages;
  b.params.scale = l.scale;
  b.max_q_len = l.max_q_len;
  b.max_kv_len = l.max_kv_len;
  b.workspace = l.workspace;
  b.workspace_bytes = l.workspace_bytes;
  const kernels::CudaAttentionKernel* k = prefill ? prefill_ : decode_;
  const int err = k->launch(b, stream);
  return CudaStatus(static_cast<cudaError_t>(err), absl::StrCat("attention ", k->symbol));
}

}  // namespace peng::cuda
