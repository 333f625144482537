// Model: a loaded Llama-family model — config, per-layer weights and tokenizer — from a GGUF
// file or a Hugging Face folder (config.json + *.safetensors + tokenizer.json). Immutable after
// load except for layer drop/reload, which its owning worker performs between steps.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "engine/tokenizer.h"
#include "engine/weights.h"

namespace peng {

struct Model {
  std::string path;
  ModelConfig config;
  ModelWeights weights;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Called as layers load: (layers done, layers total).
using LoadProgress = std::function<void(int, int)>;

// `path` is a .gguf file or a Hugging Face model folder.
absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path,
                                                 const LoadProgress& progress = nullptr);

// Only the tokenizer of a model (fast: no weights), e.g. for frontends that start before the
// model finishes loading.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

// Only the hyper-parameters (fast: metadata / config.json, no weights).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// A model file's (or folder's) problems — impossible hyper-parameters, a tokenizer or tensor
// that does not fit — as DataLoss naming `path`: InvalidArgument would read as the caller's bad
// argument (peng exits 2 for those, 1 for a bad model). Other codes keep theirs.
absl::Status InModelFile(const absl::Status& s, const std::string& path);

// Format-specific loaders (model_loader_gguf.cc, model_loader_hf.cc).
absl::StatusOr<ModelConfig> LoadGgufModelConfig(const std::string& path);
absl::StatusOr<ModelConfig> LoadHfModelConfig(const std::string& dir);
absl::StatusOr<std::unique_ptr<Model>> LoadGgufModel(const std::string& path,
                                                     const LoadProgress& progress);
absl::StatusOr<std::unique_ptr<Model>> LoadHfModel(const std::string& dir,
                                                   const LoadProgress& progress);

}  // namespace peng
