#include "engine/cuda/cuda_weights.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_status.h"
#include "kernels/cpu/interleaved.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cuda/dequantize.h"

namespace peng::cuda {
namespace {

// Rows dequantized per step at load (bounds the staging buffers).
constexpr int64_t kStagingElems = int64_t{16} << 20;

// The matrix as rows the CUDA dequantizers read, and their type: as stored; or undone from the
// CPU worker's 16-row interleaved tiles (kernels/cpu/interleaved.h), byte for byte where the
// tiles keep the GGML bytes (Q4_1, Q8_0) and as float32 rows where they hold decoded blocks
// (exact: every weight is d·u + m in float). A token embedding is tiled only when it is also
// the LM head (engine/weights.h), so only a tied one of such a type takes float32 here.
struct HostRows {
  const uint8_t* data;
  kernels::GgmlType type;
  size_t row_bytes;
};

HostRows GgmlRows(const kernels::MatrixView& w, std::vector<uint8_t>& host) {
  if (!w.interleaved) return {w.data, w.type, w.row_bytes};
  if (kernels::CanDeinterleave(w.type)) {
    host.resize(w.rows * w.row_bytes);
    kernels::Deinterleave(w.type, w.data, w.rows, w.cols, host.data());
    return {host.data(), w.type, w.row_bytes};
  }
  host.resize(w.rows * w.cols * sizeof(float));
  kernels::DequantizeRows(w, 0, w.rows, reinterpret_cast<float*>(host.data()));
  return {host.data(), kernels::GgmlType::kF32, w.cols * sizeof(float)};
}

struct Staging {
  DeviceBuffer raw, f32;
};

// Uploads w's stored blocks chunk by chunk, dequantizes them to float32 and casts to bf16 at dst.
absl::Status UploadMatrix(const kernels::MatrixView& w, const char* name, Bf16* dst,
                          Staging& staging, cudaStream_t stream) {
  std::vector<uint8_t> host;
  const HostRows rows = GgmlRows(w, host);
  const int64_t chunk_rows = std::max<int64_t>(1, kStagingElems / w.cols);
  for (int64_t r0 = 0; r0 < w.rows; r0 += chunk_rows) {
    const int64_t r1 = std::min(w.rows, r0 + chunk_rows);
    const size_t bytes = (r1 - r0) * rows.row_bytes;
    PENG_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(staging.raw.data(), rows.data + r0 * rows.row_bytes, bytes, cudaMemcpyHostToDevice, stream),
        absl::StrCat("upload ", name)));
    const int64_t elems = (r1 - r0) * w.cols;
    auto* f32 = reinterpret_cast<float*>(staging.f32.data());
    if (!kernels::cuda::DequantizeToF32(rows.type, staging.raw.data(), f32, elems, stream)) {
      return absl::UnimplementedError(absl::StrCat(name, ": no CUDA dequantizer for GGML type ",
                                                   kernels::Traits(rows.type).name));
    }
    PENG_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), absl::StrCat("dequantize ", name)));
    PENG_RETURN_IF_ERROR(CudaStatus(CastToBf16(f32, elems, dst + r0 * w.cols, stream),
                                    absl::StrCat("cast ", name, " to bf16")));
  }
  return absl::OkStatus();
}

absl::StatusOr<const float*> UploadVector(DeviceArena& arena, const std::vector<float>& v,
                                          const char* name, cudaStream_t stream) {
  PENG_ASSIGN_OR_RETURN(float* p, arena.Take<float>(v.size()));
  PENG_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
      absl::StrCat("upload ", name)));
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaWeights>> CudaWeights::Upload(const Model& model,
                                                                 cudaStream_t stream) {
  const ModelConfig& c = model.config;
  const ModelWeights& mw = model.weights;
  const int64_t d = c.d_model, qd = int64_t{c.num_heads} * c.head_dim;
  const int64_t kvd = int64_t{c.num_kv_heads} * c.head_dim, ffn = c.ffn_dim;
  const int64_t qkv_rows = qd + 2 * kvd;
  for (int l = 0; l < c.num_layers; ++l) {
    if (!mw.layers[l]) {
      return absl::FailedPreconditionError(absl::StrCat("layer ", l, " is not loaded; the CUDA worker "
                                                        "uploads every layer at start"));
    }
  }
  const kernels::MatrixView& embd = mw.token_embd.view();
  const kernels::MatrixView& head = mw.lm_head();

  // Sizes first, so the arena is one exact allocation.
  auto f = [](int64_t n) { return DeviceArena::Round(n * sizeof(float)); };
  auto h = [](int64_t n) { return DeviceArena::Round(n * sizeof(Bf16)); };
  std::vector<uint8_t> embd_host;
  const HostRows embd_rows = GgmlRows(embd, embd_host);
  size_t total = DeviceArena::Round(embd.rows * embd_rows.row_bytes) + h(head.rows * head.cols) + f(d) +
                 f(std::max(1, c.rope_dim / 2));
  const size_t per_layer = 2 * f(d) + (c.qkv_bias ? f(qkv_rows) : 0) + h(qkv_rows * d) + h(d * qd) +
                           h(2 * ffn * d) + h(d * ffn);
  total += per_layer * c.num_layers;

  auto w = std::make_unique<CudaWeights>();
  PENG_RETURN_IF_ERROR(w->arena.Reserve(total, "weights"));
  Staging staging;
  PENG_ASSIGN_OR_RETURN(staging.raw, DeviceBuffer::Allocate(kStagingElems * sizeof(float) + 4096,
                                                            "weight staging"));
  PENG_ASSIGN_OR_RETURN(staging.f32, DeviceBuffer::Allocate(kStagingElems * sizeof(float),
                                                            "weight staging"));

  // Token embedding: stored blocks, in GGML row layout.
  {
    PENG_ASSIGN_OR_RETURN(uint8_t* p, w->arena.TakeBytes(embd.rows * embd_rows.row_bytes));
    PENG_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(p, embd_rows.data, embd.rows * embd_rows.row_bytes,
                                                    cudaMemcpyHostToDevice, stream),
                                    "upload token_embd"));
    // The upload reads `embd_host` until it returns (pageable source), so it may be freed.
    w->token_embd = p;
    w->embd_type = embd_rows.type;
    w->embd_row_bytes = embd_rows.row_bytes;
  }
  {
    PENG_ASSIGN_OR_RETURN(Bf16* p, w->arena.Take<Bf16>(head.rows * head.cols));
    PENG_RETURN_IF_ERROR(UploadMatrix(head, "lm_head", p, staging, stream));
    w->lm_head = p;
  }
  PENG_ASSIGN_OR_RETURN(w->output_norm, UploadVector(w->arena, mw.output_norm, "output_norm", stream));
  std::vector<float> inv_freq = c.rope_inv_freq;
  if (inv_freq.empty()) inv_freq.push_back(0.0f);
  PENG_ASSIGN_OR_RETURN(w->rope_inv_freq, UploadVector(w->arena, inv_freq, "rope_inv_freq", stream));

  w->layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = *mw.layers[l];
    CudaLayerWeights& dl = w->layers[l];
    PENG_ASSIGN_OR_RETURN(dl.attn_norm, UploadVector(w->arena, lw.attn_norm, "attn_norm", stream));
    PENG_ASSIGN_OR_RETURN(dl.ffn_norm, UploadVector(w->arena, lw.ffn_norm, "ffn_norm", stream));
    if (c.qkv_bias) {
      std::vector<float> bias;
      bias.reserve(qkv_rows);
      bias.insert(bias.end(), lw.bq.begin(), lw.bq.end());
      bias.insert(bias.end(), lw.bk.begin(), lw.bk.end());
      bias.insert(bias.end(), lw.bv.begin(), lw.bv.end());
      PENG_ASSIGN_OR_RETURN(dl.qkv_bias, UploadVector(w->arena, bias, "qkv bias", stream));
    }
    PENG_ASSIGN_OR_RETURN(Bf16* qkv, w->arena.Take<Bf16>(qkv_rows * d));
    PENG_RETURN_IF_ERROR(UploadMatrix(lw.wq.view(), "wq", qkv, staging, stream));
    PENG_RETURN_IF_ERROR(UploadMatrix(lw.wk.view(), "wk", qkv + qd * d, staging, stream));
    PENG_RETURN_IF_ERROR(UploadMatrix(lw.wv.view(), "wv", qkv + (qd + kvd) * d, staging, stream));
    PENG_ASSIGN_OR_RETURN(Bf16* wo, w->arena.Take<Bf16>(d * qd));
    PENG_RETURN_IF_ERROR(UploadMatrix(lw.wo.view(), "wo", wo, staging, stream));
    PENG_ASSIGN_OR_RETURN(Bf16* gu, w->arena.Take<Bf16>(2 * ffn * d));
    PENG_RETURN_IF_ERROR(UploadMatrix(lw.w_gate.view(), "w_gate", gu, staging, stream));
    PENG_RETURN_IF_ERROR(UploadMatrix(lw.w_up.view(), "w_up", gu + ffn * d, staging, stream));
    PENG_ASSIGN_OR_RETURN(Bf16* down, w->arena.Take<Bf16>(d * ffn));
    PENG_RETURN_IF_ERROR(UploadMatrix(lw.w_down.view(), "w_down", down, staging, stream));
    dl.qkv = qkv;
    dl.wo = wo;
    dl.gate_up = gu;
    dl.down = down;
  }
  // The staging buffers are freed on return: finish the work that reads them first.
  PENG_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "weight upload"));
  return w;
}

}  // namespace peng::cuda
