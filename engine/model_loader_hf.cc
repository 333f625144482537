// Loads a Llama-family model from a Hugging Face folder: config.json, *.safetensors (F32, F16,
// BF16) and tokenizer.json. HF stores Q/K rows un-permuted, so these models rotate with NeoX
// RoPE (the GGUF converter permutes them for the interleaved rotation instead).
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "engine/json_file.h"
#include "engine/model.h"
#include "engine/safetensors.h"
#include "kernels/cpu/dequantize.h"
#include "nlohmann/json.hpp"

namespace peng {
namespace {

using kernels::GgmlType;
using nlohmann::json;

// Reads config[key] as a number; absent keys take `def` (NaN = required).
absl::StatusOr<double> Num(const json& cfg, const std::string& key, double def = NAN) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) {
    if (std::isnan(def)) return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " is missing"));
    return def;
  }
  if (!it->is_number()) return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be a number"));
  return it->get<double>();
}

absl::StatusOr<ModelConfig> ReadHfConfigUnchecked(const json& cfg) {
  ModelConfig c;
  if (!cfg.is_object()) return absl::InvalidArgumentError("config.json: not an object");
  c.arch = cfg.value("model_type", std::string());
  if (c.arch != "llama" && c.arch != "mistral" && c.arch != "qwen2") {
    return absl::UnimplementedError(absl::StrCat("config.json: model_type '", c.arch,
                                                 "' is not supported (llama, mistral, qwen2 are)"));
  }
  c.name = c.arch;
  auto as_int = [](double v) { return static_cast<int>(std::clamp(v, -1.0, double(1 << 30))); };
  PENG_ASSIGN_OR_RETURN(double layers, Num(cfg, "num_hidden_layers"));
  PENG_ASSIGN_OR_RETURN(double d, Num(cfg, "hidden_size"));
  PENG_ASSIGN_OR_RETURN(double ffn, Num(cfg, "intermediate_size"));
  PENG_ASSIGN_OR_RETURN(double heads, Num(cfg, "num_attention_heads"));
  PENG_ASSIGN_OR_RETURN(double kv_heads, Num(cfg, "num_key_value_heads", heads));
  PENG_ASSIGN_OR_RETURN(double vocab, Num(cfg, "vocab_size"));
  PENG_ASSIGN_OR_RETURN(double ctx, Num(cfg, "max_position_embeddings", 2048));
  PENG_ASSIGN_OR_RETURN(double eps, Num(cfg, "rms_norm_eps", 1e-6));
  PENG_ASSIGN_OR_RETURN(double theta, Num(cfg, "rope_theta", 10000));
  if (heads <= 0) return absl::InvalidArgumentError("config.json: num_attention_heads must be positive");
  PENG_ASSIGN_OR_RETURN(double head_dim, Num(cfg, "head_dim", d / heads));
  c.num_layers = as_int(layers);
  c.d_model = as_int(d);
  c.ffn_dim = as_int(ffn);
  c.num_heads = as_int(heads);
  c.num_kv_heads = as_int(kv_heads);
  c.vocab_size = as_int(vocab);
  c.context_length = as_int(ctx);
  c.head_dim = as_int(head_dim);
  c.rope_dim = c.head_dim;
  c.rms_eps = static_cast<float>(eps);
  c.rope_base = static_cast<float>(theta);
  c.rope_style = kernels::RopeStyle::kNeox;
  c.qkv_bias = c.arch == "qwen2" || cfg.value("attention_bias", false);
  c.tied_embeddings = cfg.value("tie_word_embeddings", false);
  if (c.head_dim <= 0 || c.head_dim > 512 || c.head_dim % 2) {
    return absl::InvalidArgumentError("config.json: head_dim must be even and at most 512");
  }

  // Sliding-window attention is not implemented: refuse rather than compute full attention.
  const bool window_on = cfg.value("use_sliding_window", c.arch == "mistral");
  if (window_on && cfg.contains("sliding_window") && cfg["sliding_window"].is_number() &&
      cfg["sliding_window"].get<double>() < ctx) {
    return absl::UnimplementedError(absl::StrCat(
        "config.json: sliding_window = ", cfg["sliding_window"].dump(),
        " (sliding-window attention is not supported yet)"));
  }

  float linear = 1.0f;
  const json* rs = cfg.contains("rope_scaling") && cfg["rope_scaling"].is_object() ? &cfg["rope_scaling"] : nullptr;
  std::string rope_type = rs ? rs->value("rope_type", rs->value("type", std::string("default"))) : "default";
  if (rope_type == "linear") {
    PENG_ASSIGN_OR_RETURN(double f, Num(*rs, "factor"));
    if (!(f > 0)) return absl::InvalidArgumentError("config.json: rope_scaling.factor must be positive");
    linear = static_cast<float>(f);
  } else if (rope_type != "default" && rope_type != "llama3") {
    return absl::UnimplementedError(absl::StrCat("config.json: rope_scaling type '", rope_type, "' is not supported"));
  }
  c.rope_inv_freq.resize(c.rope_dim / 2);
  kernels::RopeInvFreq(c.rope_dim, c.rope_base, linear, c.rope_inv_freq.data());
  if (rope_type == "llama3") {
    PENG_ASSIGN_OR_RETURN(double factor, Num(*rs, "factor"));
    PENG_ASSIGN_OR_RETURN(double low, Num(*rs, "low_freq_factor", 1.0));
    PENG_ASSIGN_OR_RETURN(double high, Num(*rs, "high_freq_factor", 4.0));
    PENG_ASSIGN_OR_RETURN(double orig, Num(*rs, "original_max_position_embeddings", 8192));
    if (!(factor > 0) || !(high > low) || !(orig > 0)) {
      return absl::InvalidArgumentError("config.json: invalid llama3 rope_scaling");
    }
    const double low_wavelen = orig / low, high_wavelen = orig / high;
    for (float& f : c.rope_inv_freq) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / factor);
      } else {
        const double smooth = (orig / wavelen - low) / (high - low);
        f = static_cast<float>((1 - smooth) * f / factor + smooth * f);
      }
    }
  }
  PENG_RETURN_IF_ERROR(c.Validate());
  return c;
}

// nlohmann's typed accessors (value<T>) throw on a wrong type: convert at this edge.
absl::StatusOr<ModelConfig> ReadHfConfig(const json& cfg) {
  try {
    return ReadHfConfigUnchecked(cfg);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", e.what()));
  }
}

absl::StatusOr<GgmlType> DtypeToGgml(const SafetensorsTensor& t) {
  if (t.dtype == "F32") return GgmlType::kF32;
  if (t.dtype == "F16") return GgmlType::kF16;
  if (t.dtype == "BF16") return GgmlType::kBF16;
  return absl::UnimplementedError(absl::StrCat("tensor ", t.name, " has dtype ", t.dtype,
                                               " (Peng reads F32, F16, BF16 safetensors)"));
}

absl::StatusOr<const SafetensorsTensor*> Need(const SafetensorsModel& m, const std::string& name,
                                              std::vector<int64_t> shape) {
  const SafetensorsTensor* t = m.Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("tensor ", name, " is missing"));
  if (t->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has an unexpected shape"));
  }
  return t;
}

absl::StatusOr<MatrixSource> Matrix(const SafetensorsModel& m, const std::string& name, int64_t rows,
                                    int64_t cols) {
  PENG_ASSIGN_OR_RETURN(const SafetensorsTensor* t, Need(m, name, {rows, cols}));
  PENG_ASSIGN_OR_RETURN(GgmlType type, DtypeToGgml(*t));
  const MatrixSource matrix{type, rows, cols, t->data};
  PENG_RETURN_IF_ERROR(CheckFinite(name, matrix));
  return matrix;
}

absl::StatusOr<std::vector<float>> Vector(const SafetensorsModel& m, const std::string& name, int64_t n) {
  PENG_ASSIGN_OR_RETURN(const SafetensorsTensor* t, Need(m, name, {n}));
  PENG_ASSIGN_OR_RETURN(GgmlType type, DtypeToGgml(*t));
  PENG_RETURN_IF_ERROR(CheckFinite(name, MatrixSource{type, 1, n, t->data}));
  std::vector<float> v(n);
  kernels::DequantizeRow(type, t->data, v.data(), n);
  return v;
}

class HfWeightSource : public WeightSource {
 public:
  HfWeightSource(std::shared_ptr<const SafetensorsModel> files, ModelConfig c)
      : files_(std::move(files)), c_(std::move(c)) {}

  absl::StatusOr<std::unique_ptr<LayerWeights>> LoadLayer(int i) const override {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const LayerTensorNames names{p + "input_layernorm.weight",    p + "post_attention_layernorm.weight",
                                 p + "self_attn.q_proj.weight",   p + "self_attn.k_proj.weight",
                                 p + "self_attn.v_proj.weight",   p + "self_attn.o_proj.weight",
                                 p + "mlp.gate_proj.weight",      p + "mlp.up_proj.weight",
                                 p + "mlp.down_proj.weight",      p + "self_attn.q_proj.bias",
                                 p + "self_attn.k_proj.bias",     p + "self_attn.v_proj.bias"};
    const SafetensorsModel& m = *files_;
    return LoadLayerTensors(
        c_, names,
        [&](const std::string& name, int64_t rows, int64_t cols) { return Matrix(m, name, rows, cols); },
        [&](const std::string& name, int64_t n) { return Vector(m, name, n); });
  }

 private:
  std::shared_ptr<const SafetensorsModel> files_;
  ModelConfig c_;
};

}  // namespace

absl::StatusOr<ModelConfig> LoadHfModelConfig(const std::string& dir) {
  PENG_ASSIGN_OR_RETURN(json cfg, ReadJsonFile(dir + "/config.json"));
  return ReadHfConfig(cfg);
}

absl::StatusOr<std::unique_ptr<Model>> LoadHfModel(const std::string& dir, const LoadProgress& progress) {
  PENG_ASSIGN_OR_RETURN(json cfg, ReadJsonFile(dir + "/config.json"));
  auto model = std::make_unique<Model>();
  model->path = dir;
  PENG_ASSIGN_OR_RETURN(model->config, ReadHfConfig(cfg));
  const ModelConfig& c = model->config;
  const std::string tok_cfg = dir + "/tokenizer_config.json";
  PENG_ASSIGN_OR_RETURN(model->tokenizer,
                        Tokenizer::FromHfFiles(dir + "/tokenizer.json",
                                               std::ifstream(tok_cfg).good() ? tok_cfg : ""));
  PENG_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsModel> files, SafetensorsModel::Open(dir));
  ModelWeights& w = model->weights;
  PENG_ASSIGN_OR_RETURN(MatrixSource embd, Matrix(*files, "model.embed_tokens.weight", c.vocab_size, c.d_model));
  const bool own_lm_head = !c.tied_embeddings || files->Find("lm_head.weight") != nullptr;
  embd.interleave = !own_lm_head;  // tiles only where it is also the LM head
  w.token_embd = WeightMatrix::Copy(embd);
  if (own_lm_head) {
    PENG_ASSIGN_OR_RETURN(const MatrixSource output, Matrix(*files, "lm_head.weight", c.vocab_size, c.d_model));
    w.output = WeightMatrix::Copy(output);
  }
  PENG_ASSIGN_OR_RETURN(w.output_norm, Vector(*files, "model.norm.weight", c.d_model));
  w.source = std::make_unique<HfWeightSource>(files, c);
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    PENG_RETURN_IF_ERROR(Annotate(w.ReloadLayer(i), dir));
    if (progress) progress(i + 1, c.num_layers);
  }
  return model;
}

}  // namespace peng
