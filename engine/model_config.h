// ModelConfig: the hyper-parameters of a Llama-family model (llama, mistral, qwen2, SmolLM2),
// read from GGUF metadata or a Hugging Face config.json and validated once at load.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cpu/ops.h"

namespace peng {

struct ModelConfig {
  std::string arch;        // "llama", "mistral", "qwen2"
  std::string name;        // human-readable, for logs
  int num_layers = 0;
  int d_model = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int ffn_dim = 0;
  int vocab_size = 0;
  int context_length = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;
  int rope_dim = 0;                       // rotated dims per head (<= head_dim)
  kernels::RopeStyle rope_style = kernels::RopeStyle::kInterleaved;
  std::vector<float> rope_inv_freq;       // rope_dim / 2 entries, scaling already applied
  bool qkv_bias = false;
  bool tied_embeddings = false;

  int gqa_group() const { return num_heads / num_kv_heads; }
  // Checks the invariants every kernel relies on; errors name the offending field.
  absl::Status Validate() const;
};

}  // namespace peng
