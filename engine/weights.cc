#include "engine/weights.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "base/check.h"
#include "base/huge_pages.h"
#include "base/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/interleaved.h"

namespace peng {

namespace {

// Bytes a matrix takes in memory, rounded up to keep the next one 64-byte aligned.
size_t StoredBytes(const MatrixSource& s) {
  const size_t bytes = s.interleave && kernels::CanInterleave(s.type, s.rows, s.cols)
                           ? kernels::InterleavedBytes(s.type, s.rows, s.cols)
                           : kernels::RowBytes(s.type, s.cols) * s.rows;
  return (bytes + 63) / 64 * 64;
}

}  // namespace

WeightMatrix WeightMatrix::Copy(const MatrixSource& src) { return std::move(CopyTogether({src})[0]); }

std::vector<WeightMatrix> WeightMatrix::CopyTogether(const std::vector<MatrixSource>& srcs) {
  size_t total = 0;
  for (const MatrixSource& s : srcs) total += StoredBytes(s);
  HugeBuffer buffer = AllocateHuge(std::max<size_t>(total, 64));
  PENG_CHECK(buffer != nullptr);  // the loader checked the sizes against the file; out of memory
  const std::shared_ptr<const uint8_t> storage(buffer.release(), HugeFree());
  std::vector<WeightMatrix> out(srcs.size());
  uint8_t* at = const_cast<uint8_t*>(storage.get());
  for (size_t i = 0; i < srcs.size(); ++i) {
    const MatrixSource& s = srcs[i];
    const bool interleave = s.interleave && kernels::CanInterleave(s.type, s.rows, s.cols);
    const size_t row_bytes = kernels::RowBytes(s.type, s.cols);
    if (interleave) {
      // Batched matmuls run much faster on 16-row tiles (kernels/cpu/interleaved.h).
      kernels::Interleave(s.type, s.data, s.rows, s.cols, at);
    } else {
      std::memcpy(at, s.data, row_bytes * s.rows);
    }
    out[i].storage_ = storage;
    out[i].view_ = {s.type, s.rows, s.cols, at, row_bytes, interleave};
    at += StoredBytes(s);
  }
  return out;
}

absl::Status CheckFinite(const std::string& name, const MatrixSource& m) {
  const int64_t row = kernels::FirstNonFiniteRow(m.type, m.data, m.rows, m.cols);
  if (row < 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": row ", row, " holds a non-finite ",
                                                 kernels::Traits(m.type).block_elems > 1 ? "scale" : "value",
                                                 " (inf or NaN); the file is damaged"));
}

size_t WeightMatrix::bytes() const {
  return view_.interleaved ? kernels::InterleavedBytes(view_.type, view_.rows, view_.cols)
                           : view_.rows * view_.row_bytes;
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
  // Every tensor is checked before anything is copied; then the layer's matrices share one
  // allocation, in the order the forward reads them.
  std::vector<MatrixSource> srcs(7);
  PENG_ASSIGN_OR_RETURN(srcs[0], matrix(n.wq, qd, c.d_model));
  PENG_ASSIGN_OR_RETURN(srcs[1], matrix(n.wk, kvd, c.d_model));
  PENG_ASSIGN_OR_RETURN(srcs[2], matrix(n.wv, kvd, c.d_model));
  PENG_ASSIGN_OR_RETURN(srcs[3], matrix(n.wo, c.d_model, qd));
  PENG_ASSIGN_OR_RETURN(srcs[4], matrix(n.w_gate, c.ffn_dim, c.d_model));
  PENG_ASSIGN_OR_RETURN(srcs[5], matrix(n.w_up, c.ffn_dim, c.d_model));
  PENG_ASSIGN_OR_RETURN(srcs[6], matrix(n.w_down, c.d_model, c.ffn_dim));
  std::vector<WeightMatrix> m = WeightMatrix::CopyTogether(srcs);
  l->wq = std::move(m[0]);
  l->wk = std::move(m[1]);
  l->wv = std::move(m[2]);
  l->wo = std::move(m[3]);
  l->w_gate = std::move(m[4]);
  l->w_up = std::move(m[5]);
  l->w_down = std::move(m[6]);
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
