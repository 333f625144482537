// Loads a Llama-family model from GGUF: metadata -> ModelConfig, tensors -> per-layer weights.
#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "kernels/cpu/dequantize.h"

namespace peng {
namespace {

using kernels::GgmlType;

absl::Status CheckShape(const GgufTensor& t, std::vector<int64_t> want) {
  if (t.shape != want) {
    auto fmt = [](const std::vector<int64_t>& s) {
      std::string out = "[";
      for (size_t i = 0; i < s.size(); ++i) absl::StrAppend(&out, i ? ", " : "", s[i]);
      return out + "]";
    };
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " has shape ", fmt(t.shape),
                                                   ", expected ", fmt(want)));
  }
  return absl::OkStatus();
}

absl::StatusOr<const GgufTensor*> Need(const GgufFile& f, const std::string& name) {
  const GgufTensor* t = f.FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("tensor ", name, " is missing"));
  if (!kernels::Traits(t->type).supported) {
    return absl::UnimplementedError(absl::StrCat("tensor ", name, " has type ",
                                                 kernels::Traits(t->type).name,
                                                 ", which Peng does not support"));
  }
  return t;
}

// A matrix stored as GGML [cols, rows].
absl::StatusOr<MatrixSource> LoadMatrix(const GgufFile& f, const std::string& name, int64_t rows,
                                        int64_t cols) {
  PENG_ASSIGN_OR_RETURN(const GgufTensor* t, Need(f, name));
  PENG_RETURN_IF_ERROR(CheckShape(*t, {cols, rows}));
  const MatrixSource m{t->type, rows, cols, t->data};
  PENG_RETURN_IF_ERROR(CheckFinite(name, m));
  return m;
}

absl::StatusOr<std::vector<float>> LoadVector(const GgufFile& f, const std::string& name,
                                              int64_t n) {
  PENG_ASSIGN_OR_RETURN(const GgufTensor* t, Need(f, name));
  PENG_RETURN_IF_ERROR(CheckShape(*t, {n}));
  std::vector<float> v(n);
  kernels::DequantizeRow(t->type, t->data, v.data(), n);
  for (float x : v) {
    if (!std::isfinite(x)) return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has non-finite values"));
  }
  return v;
}

class GgufWeightSource : public WeightSource {
 public:
  GgufWeightSource(std::shared_ptr<const GgufFile> file, ModelConfig config)
      : file_(std::move(file)), c_(std::move(config)) {}

  absl::StatusOr<std::unique_ptr<LayerWeights>> LoadLayer(int i) const override {
    const std::string p = absl::StrCat("blk.", i, ".");
    const LayerTensorNames names{p + "attn_norm.weight", p + "ffn_norm.weight",
                                 p + "attn_q.weight",    p + "attn_k.weight",
                                 p + "attn_v.weight",    p + "attn_output.weight",
                                 p + "ffn_gate.weight",  p + "ffn_up.weight",
                                 p + "ffn_down.weight",  p + "attn_q.bias",
                                 p + "attn_k.bias",      p + "attn_v.bias"};
    const GgufFile& f = *file_;
    return LoadLayerTensors(
        c_, names,
        [&](const std::string& name, int64_t rows, int64_t cols) { return LoadMatrix(f, name, rows, cols); },
        [&](const std::string& name, int64_t n) { return LoadVector(f, name, n); });
  }

 private:
  std::shared_ptr<const GgufFile> file_;
  ModelConfig c_;
};

absl::StatusOr<ModelConfig> ReadConfig(const GgufFile& f) {
  ModelConfig c;
  PENG_ASSIGN_OR_RETURN(c.arch, f.GetString("general.architecture"));
  if (c.arch != "llama" && c.arch != "mistral" && c.arch != "qwen2") {
    return absl::UnimplementedError(absl::StrCat(
        "model architecture '", absl::CHexEscape(c.arch), "' is not supported (llama, mistral, qwen2 are)"));
  }
  const std::string a = c.arch + ".";
  PENG_ASSIGN_OR_RETURN(c.name, f.GetStringOr("general.name", c.arch));
  PENG_ASSIGN_OR_RETURN(int64_t layers, f.GetInt(a + "block_count"));
  PENG_ASSIGN_OR_RETURN(int64_t d, f.GetInt(a + "embedding_length"));
  PENG_ASSIGN_OR_RETURN(int64_t ffn, f.GetInt(a + "feed_forward_length"));
  PENG_ASSIGN_OR_RETURN(int64_t heads, f.GetInt(a + "attention.head_count"));
  PENG_ASSIGN_OR_RETURN(int64_t kv_heads, f.GetIntOr(a + "attention.head_count_kv", heads));
  PENG_ASSIGN_OR_RETURN(int64_t ctx, f.GetIntOr(a + "context_length", 2048));
  PENG_ASSIGN_OR_RETURN(double eps, f.GetFloatOr(a + "attention.layer_norm_rms_epsilon", 1e-5));
  PENG_ASSIGN_OR_RETURN(double base, f.GetFloatOr(a + "rope.freq_base", 10000.0));
  if (heads <= 0 || heads > 1024 || d <= 0 || d > 65536) {
    return absl::InvalidArgumentError("model config: head_count / embedding_length out of range");
  }
  PENG_ASSIGN_OR_RETURN(int64_t head_dim, f.GetIntOr(a + "attention.key_length", d / heads));
  PENG_ASSIGN_OR_RETURN(int64_t rope_dim, f.GetIntOr(a + "rope.dimension_count", head_dim));
  const GgufTensor* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) return absl::NotFoundError("tensor token_embd.weight is missing");
  if (embd->shape.size() != 2) return absl::InvalidArgumentError("token_embd.weight must be 2-D");
  PENG_ASSIGN_OR_RETURN(int64_t vocab, f.GetIntOr(a + "vocab_size", embd->shape[1]));
  auto narrow = [](int64_t v) { return static_cast<int>(std::clamp<int64_t>(v, -1, 1 << 30)); };
  c.num_layers = narrow(layers);
  c.d_model = narrow(d);
  c.ffn_dim = narrow(ffn);
  c.num_heads = narrow(heads);
  c.num_kv_heads = narrow(kv_heads);
  c.head_dim = narrow(head_dim);
  c.rope_dim = narrow(rope_dim);
  c.vocab_size = narrow(vocab);
  c.context_length = narrow(ctx);
  c.rms_eps = static_cast<float>(eps);
  c.rope_base = static_cast<float>(base);
  c.rope_style = c.arch == "qwen2" ? kernels::RopeStyle::kNeox : kernels::RopeStyle::kInterleaved;
  c.qkv_bias = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  c.tied_embeddings = f.FindTensor("output.weight") == nullptr;

  // As llama.cpp reads it: the type defaults to linear, the factor falls back to the older
  // `rope.scale_linear` key, and a factor of 0 (or none) means unscaled.
  PENG_ASSIGN_OR_RETURN(std::string scaling, f.GetStringOr(a + "rope.scaling.type", "linear"));
  PENG_ASSIGN_OR_RETURN(double legacy, f.GetFloatOr(a + "rope.scale_linear", 0.0));
  PENG_ASSIGN_OR_RETURN(double factor, f.GetFloatOr(a + "rope.scaling.factor", legacy));
  if (factor == 0) factor = 1;
  float linear = 1.0f;
  if (scaling == "linear") {
    if (!(factor > 0)) return absl::InvalidArgumentError("rope.scaling.factor must be positive");
    linear = static_cast<float>(factor);
  } else if (scaling == "none") {
    if (factor != 1) {
      return absl::InvalidArgumentError("rope.scaling.type is none but rope.scaling.factor is not 1");
    }
  } else {
    return absl::UnimplementedError(
        absl::StrCat("rope scaling type '", absl::CHexEscape(scaling), "' is not supported"));
  }
  if (c.rope_dim > 0 && c.rope_dim <= 512 && c.rope_dim % 2 == 0) {
    c.rope_inv_freq.resize(c.rope_dim / 2);
    kernels::RopeInvFreq(c.rope_dim, c.rope_base, linear, c.rope_inv_freq.data());
    // Llama-3 style per-frequency factors are stored as a tensor.
    if (f.FindTensor("rope_freqs.weight") != nullptr) {
      PENG_ASSIGN_OR_RETURN(std::vector<float> factors, LoadVector(f, "rope_freqs.weight", c.rope_dim / 2));
      for (int i = 0; i < c.rope_dim / 2; ++i) c.rope_inv_freq[i] /= factors[i];
    }
  }
  // A tensor of a layer past block_count: the metadata and the tensors disagree (a file edited
  // or assembled wrong). Loading only block_count layers would serve a different model quietly.
  for (const GgufTensor& t : f.tensors()) {
    if (!absl::StartsWith(t.name, "blk.")) continue;
    const size_t dot = t.name.find('.', 4);
    int64_t layer = 0;
    if (dot != std::string::npos && absl::SimpleAtoi(t.name.substr(4, dot - 4), &layer) && layer >= c.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", absl::CHexEscape(t.name), " belongs to layer ", layer,
                                                     " but ", a, "block_count is ", c.num_layers));
    }
  }
  PENG_RETURN_IF_ERROR(c.Validate());
  return c;
}

// Fills `model` from a parsed file: config, tokenizer, embeddings, then every layer.
absl::Status LoadFromFile(std::shared_ptr<const GgufFile> file, const LoadProgress& progress, Model* model) {
  PENG_ASSIGN_OR_RETURN(model->config, ReadConfig(*file));
  const ModelConfig& c = model->config;
  PENG_ASSIGN_OR_RETURN(model->tokenizer, Tokenizer::FromGguf(*file));
  if (model->tokenizer->vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", model->tokenizer->vocab_size(),
                                                   " tokens but the model only ", c.vocab_size));
  }
  ModelWeights& w = model->weights;
  PENG_ASSIGN_OR_RETURN(MatrixSource embd, LoadMatrix(*file, "token_embd.weight", c.vocab_size, c.d_model));
  embd.interleave = c.tied_embeddings;  // tiles only where it is also the LM head
  w.token_embd = WeightMatrix::Copy(embd);
  if (!c.tied_embeddings) {
    PENG_ASSIGN_OR_RETURN(const MatrixSource output, LoadMatrix(*file, "output.weight", c.vocab_size, c.d_model));
    w.output = WeightMatrix::Copy(output);
  }
  PENG_ASSIGN_OR_RETURN(w.output_norm, LoadVector(*file, "output_norm.weight", c.d_model));
  w.source = std::make_unique<GgufWeightSource>(file, c);
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    PENG_RETURN_IF_ERROR(w.ReloadLayer(i));
    if (progress) progress(i + 1, c.num_layers);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> LoadGgufModelConfig(const std::string& path) {
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  absl::StatusOr<ModelConfig> config = ReadConfig(*file);
  if (!config.ok()) return InModelFile(config.status(), path);
  return config;
}

absl::StatusOr<std::unique_ptr<Model>> LoadGgufModel(const std::string& path,
                                                     const LoadProgress& progress) {
  PENG_ASSIGN_OR_RETURN(std::shared_ptr<const GgufFile> file, GgufFile::Open(path));
  auto model = std::make_unique<Model>();
  model->path = path;
  PENG_RETURN_IF_ERROR(InModelFile(LoadFromFile(std::move(file), progress, model.get()), path));
  return model;
}

}  // namespace peng
