#include "engine/weights.h"

#include <cstdlib>
#include <cstring>

#include "base/check.h"
#include "base/status.h"
#include "kernels/cpu/interleaved.h"

namespace peng {

void WeightMatrix::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

WeightMatrix WeightMatrix::Copy(kernels::GgmlType type, int64_t rows, int64_t cols,
                                const uint8_t* src) {
  WeightMatrix m;
  const size_t row_bytes = kernels::RowBytes(type, cols);
  const bool interleave = kernels::CanInterleave(type, rows, cols);
  const size_t total = interleave ? kernels::InterleavedBytes(type, rows, cols) : row_bytes * rows;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, (total + 63) / 64 * 64));
  PENG_CHECK(p != nullptr);
  if (interleave) {
    // Batched matmuls run much faster on 16-row tiles (kernels/cpu/interleaved.h).
    kernels::Interleave(type, src, rows, cols, p);
  } else {
    std::memcpy(p, src, total);
  }
  m.storage_.reset(p);
  m.view_ = {type, rows, cols, p, row_bytes, interleave};
  return m;
}

size_t LayerWeights::bytes() const {
  size_t n = wq.bytes() + wk.bytes() + wv.bytes() + wo.bytes() + w_gate.bytes() + w_up.bytes() +
             w_down.bytes();
  n += sizeof(float) * (attn_norm.size() + ffn_norm.size() + bq.size() + bk.size() + bv.size());
  return n;
}

size_t ModelWeights::bytes() const {
  size_t n = token_embd.bytes() + output.bytes() + output_norm.size() * sizeof(float);
  for (const auto& l : layers) n += l ? l->bytes() : 0;
  return n;
}

absl::StatusOr<std::unique_ptr<LayerWeights>> LoadLayerTensors(const ModelConfig& c,
                                                                const LayerTensorNames& n,
                                                                const MatrixLoader& matrix,
                                                                const VectorLoader& vector) {
  auto l = std::make_unique<LayerWeights>();
  const int64_t qd = int64_t{c.num_heads} * c.head_dim, kvd = int64_t{c.num_kv_heads} * c.head_dim;
  PENG_ASSIGN_OR_RETURN(l->attn_norm, vector(n.attn_norm, c.d_model));
  PENG_ASSIGN_OR_RETURN(l->ffn_norm, vector(n.ffn_norm, c.d_model));
  PENG_ASSIGN_OR_RETURN(l->wq, matrix(n.wq, qd, c.d_model));
  PENG_ASSIGN_OR_RETURN(l->wk, matrix(n.wk, kvd, c.d_model));
  PENG_ASSIGN_OR_RETURN(l->wv, matrix(n.wv, kvd, c.d_model));
  PENG_ASSIGN_OR_RETURN(l->wo, matrix(n.wo, c.d_model, qd));
  PENG_ASSIGN_OR_RETURN(l->w_gate, matrix(n.w_gate, c.ffn_dim, c.d_model));
  PENG_ASSIGN_OR_RETURN(l->w_up, matrix(n.w_up, c.ffn_dim, c.d_model));
  PENG_ASSIGN_OR_RETURN(l->w_down, matrix(n.w_down, c.d_model, c.ffn_dim));
  if (c.qkv_bias) {
    PENG_ASSIGN_OR_RETURN(l->bq, vector(n.bq, qd));
    PENG_ASSIGN_OR_RETURN(l->bk, vector(n.bk, kvd));
    PENG_ASSIGN_OR_RETURN(l->bv, vector(n.bv, kvd));
  }
  return l;
}

absl::Status ModelWeights::ReloadLayer(int layer) {
  if (layers[layer]) return absl::OkStatus();
  PENG_ASSIGN_OR_RETURN(layers[layer], source->LoadLayer(layer));
  return absl::OkStatus();
}

}  // namespace peng
