#include "cli/common.h"

#include <unistd.h>

#include <cstdio>

namespace peng::cli {

absl::StatusOr<std::unique_ptr<Model>> LoadModelWithProgress(const std::string& path) {
  const bool tty = ::isatty(STDERR_FILENO);
  auto progress = [&](int done, int total) {
    if (!tty && done != total) return;
    constexpr int kWidth = 30;
    const int filled = done * kWidth / total;
    std::fprintf(stderr, "\rloading %s [%.*s%*s] %d/%d layers%s", path.c_str(), filled,
                 "##############################", kWidth - filled, "", done, total,
                 done == total ? "\n" : "");
    std::fflush(stderr);
  };
  return LoadModel(path, progress);
}

int Fail(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "peng %s: %s\n", command, std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

memory::KvManagerOptions KvOptionsOf(const ServeConfig& config) {
  memory::KvManagerOptions o;
  o.budget_bytes = static_cast<size_t>(config.engine.kv_budget_bytes);
  o.format = config.engine.kv_format;
  o.tokens_per_page = config.engine.tokens_per_page;
  o.enable_prefix_caching = config.engine.enable_prefix_caching;
  const KvConfig& kv = config.kv;
  if (kv.mode == KvConfig::Mode::kLeanKv) {
    o.leankv = true;
    o.enable_prefix_caching = false;
    o.lean.high = kv.high_format;
    o.lean.low = kv.low_format;
    o.lean.alpha_prune = kv.alpha_prune;
    o.lean.alpha_quant = kv.alpha_quant;
    o.lean.window = kv.window;
    o.lean.page_bytes_min = static_cast<size_t>(kv.page_bytes_min);
    o.lean.page_bytes_max = static_cast<size_t>(kv.page_bytes_max);
  }
  return o;
}

absl::StatusOr<bool> Int8ActivationsFlag(const Flags& f, bool def) {
  if (!f.Has("activations")) return def;
  const std::string v = f.String("activations");
  if (v == "int8") return true;
  if (v == "f32") return false;
  return absl::InvalidArgumentError(absl::StrCat("--activations must be int8 or f32, got '", v, "'"));
}

}  // namespace peng::cli
