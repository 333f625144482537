#include "engine/weights.h"

#include <cstdlib>
#include <cstring>

#include "base/check.h"
#include "base/status.h"

namespace peng {

void WeightMatrix::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

WeightMatrix WeightMatrix::Copy(kernels::GgmlType type, int64_t rows, int64_t cols,
                                const uint8_t* src) {
  WeightMatrix m;
  const size_t row_bytes = kernels::RowBytes(type, cols);
  const size_t total = row_bytes * rows;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, (total + 63) / 64 * 64));
  PENG_CHECK(p != nullptr);
  std::memcpy(p, src, total);
  m.storage_.reset(p);
  m.view_ = {type, rows, cols, p, row_bytes};
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

absl::Status ModelWeights::ReloadLayer(int layer) {
  if (layers[layer]) return absl::OkStatus();
  PENG_ASSIGN_OR_RETURN(layers[layer], source->LoadLayer(layer));
  return absl::OkStatus();
}

}  // namespace peng
