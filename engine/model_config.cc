#include "engine/model_config.h"

#include "absl/strings/str_cat.h"

namespace peng {

absl::Status ModelConfig::Validate() const {
  auto bad = [&](absl::string_view field, int64_t value, absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config: ", field, " = ", value, " ", why));
  };
  if (num_layers <= 0 || num_layers > 1024) return bad("num_layers", num_layers, "out of range");
  if (d_model <= 0 || d_model > 65536) return bad("d_model", d_model, "out of range");
  if (num_heads <= 0 || num_heads > 1024) return bad("num_heads", num_heads, "out of range");
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0) {
    return bad("num_kv_heads", num_kv_heads, "must divide num_heads");
  }
  if (head_dim <= 0 || head_dim > 512 || head_dim % 2 != 0) {
    return bad("head_dim", head_dim, "must be even and at most 512");
  }
  if (rope_dim <= 0 || rope_dim > head_dim || rope_dim % 2 != 0) {
    return bad("rope_dim", rope_dim, "must be even and at most head_dim");
  }
  if (static_cast<int>(rope_inv_freq.size()) != rope_dim / 2) {
    return bad("rope_inv_freq size", rope_inv_freq.size(), "must be rope_dim / 2");
  }
  if (ffn_dim <= 0 || ffn_dim > (1 << 20)) return bad("ffn_dim", ffn_dim, "out of range");
  if (vocab_size <= 0 || vocab_size > (1 << 24)) return bad("vocab_size", vocab_size, "out of range");
  if (context_length <= 0) return bad("context_length", context_length, "must be positive");
  if (!(rms_eps > 0 && rms_eps < 1)) return absl::InvalidArgumentError("model config: bad rms_eps");
  if (!(rope_base > 1)) return absl::InvalidArgumentError("model config: bad rope_base");
  return absl::OkStatus();
}

}  // namespace peng
