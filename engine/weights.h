// Model weights, owned per layer so that a layer can be dropped and reloaded at run time
// (KunServe parameter dropping). Matrices keep their stored GGML type; small vectors (norms,
// biases) are float32. A ModelWeights is owned by one worker; a WeightSource knows how to
// (re)load any layer from the model file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <functional>

#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "kernels/cpu/matmul.h"

namespace peng {

// A matrix [rows x cols] as a model file stores it (GGML type; `data` points into the file's
// map and is read only while loading).
struct MatrixSource {
  kernels::GgmlType type;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
  // Whether a batched-matmul type may be stored as tiles; false keeps the file's rows (an
  // untied token embedding, only ever read a row at a time).
  bool interleave = true;
};

// A weight matrix [rows x cols] in a stored GGML type, in memory of its own or shared with the
// other matrices copied with it (64-byte aligned, huge pages where it spans them:
// base/huge_pages.h). Batched-matmul types are stored as 16-row tiles (kernels/cpu/interleaved.h).
// An error naming the tensor when a matrix or vector holds a non-finite value (a corrupt file).
absl::Status CheckFinite(const std::string& name, const MatrixSource& m);

class WeightMatrix {
 public:
  WeightMatrix() = default;
  static WeightMatrix Copy(const MatrixSource& src);
  // The matrices in one allocation, in order (a layer's: they are dropped and reloaded
  // together, and the kernels stream them one after another).
  static std::vector<WeightMatrix> CopyTogether(const std::vector<MatrixSource>& srcs);
  const kernels::MatrixView& view() const { return view_; }
  size_t bytes() const;  // in memory (interleaved tiles may take more than the GGML blocks)
  bool empty() const { return view_.data == nullptr; }

 private:
  std::shared_ptr<const uint8_t> storage_;  // the allocation holding view_.data
  kernels::MatrixView view_;
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  std::vector<float> bq, bk, bv;  // empty unless the model has qkv bias
  WeightMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
  size_t bytes() const;
};

// The file names of one layer's tensors in a model format (biases only used with qkv_bias).
struct LayerTensorNames {
  std::string attn_norm, ffn_norm, wq, wk, wv, wo, w_gate, w_up, w_down, bq, bk, bv;
};
using MatrixLoader =
    std::function<absl::StatusOr<MatrixSource>(const std::string& name, int64_t rows, int64_t cols)>;
using VectorLoader =
    std::function<absl::StatusOr<std::vector<float>>(const std::string& name, int64_t n)>;

// Loads one layer with the shapes `config` implies, through a format's accessors (which check
// each tensor's shape and type and name it in errors).
absl::StatusOr<std::unique_ptr<LayerWeights>> LoadLayerTensors(const ModelConfig& config,
                                                                const LayerTensorNames& names,
                                                                const MatrixLoader& matrix,
                                                                const VectorLoader& vector);

// Reads weights from a model file on demand.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual absl::StatusOr<std::unique_ptr<LayerWeights>> LoadLayer(int layer) const = 0;
};

struct ModelWeights {
  WeightMatrix token_embd;           // [vocab x d_model]
  WeightMatrix output;               // [vocab x d_model]; empty when tied to token_embd
  std::vector<float> output_norm;
  std::vector<std::unique_ptr<LayerWeights>> layers;  // null = dropped
  std::unique_ptr<WeightSource> source;

  const kernels::MatrixView& lm_head() const { return output.empty() ? token_embd.view() : output.view(); }
  size_t bytes() const;
  // Frees a layer's memory; Reload brings it back from the source.
  void DropLayer(int layer) { layers[layer].reset(); }
  absl::Status ReloadLayer(int layer);
};

}  // namespace peng
