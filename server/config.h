// ServeConfig: the typed configuration of `peng serve`, loaded from YAML (configs/*.yaml, keys
// documented in configs/README.md), overridden by command-line flags and validated before
// anything starts. Loading reports EVERY problem at once, each with its key path (and line or
// flag where known): type errors, unknown keys (with "did you mean"), out-of-range values.
// Plain data: built once in main, then passed by const reference; no globals.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/thread_pool.h"
#include "kernels/kv_format.h"
#include "server/config_text.h"

namespace peng {

struct ServedModelConfig {
  std::string path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";  // GGUF file or HF directory
  std::string name;           // served model id; empty = derived from path (ServedModelName)
  std::string chat_template;  // Jinja override; empty = the model's own template
  int max_model_len = 0;      // context limit in tokens; 0 = the model's context length
};

struct ServerConfig {
  std::string host = "127.0.0.1";
  int http_port = 8000;
  int grpc_port = 50051;              // 0 = no gRPC frontend
  std::vector<std::string> api_keys;  // empty = no authentication
  bool metrics_auth = false;          // whether /metrics, /health, /live, /ready need a key
  // Browser origins (e.g. "https://chat.example.com") whose pages may call the HTTP API (CORS);
  // "*" = any. Empty (the default) = none: a web page cannot drive a local server.
  std::vector<std::string> cors_allowed_origins;
  double drain_timeout_s = 30;        // on SIGTERM: finish running requests for this long
  int64_t max_request_bytes = 1 << 20;
  int max_connections = 1024;  // open HTTP connections at most; more get a 503 and are closed
  // The Responses API's stored responses (previous_response_id, GET /v1/responses/{id}): the
  // newest this many, within this many bytes, in memory. 0 = none kept.
  int stored_responses = 1024;
  int64_t stored_response_bytes = 64 << 20;
};

struct EngineConfig {
  enum class Device { kCpu, kCuda };
  Device device = Device::kCpu;  // where the worker runs: cpu | cuda (engine/forward_factory.h)
  int cuda_device = 0;           // CUDA device ordinal when device is cuda
  // Compute threads; 0 = one per CPU this process can keep busy (ThreadPool::UsableCpuCount:
  // its CPU affinity, capped by its cgroup's CPU quota).
  int threads = 0;
  int ComputeThreads() const { return threads > 0 ? threads : ThreadPool::UsableCpuCount(); }
  // Each compute thread on a CPU of its own (base/thread_pool.h): auto (when the threads cover
  // every CPU the process may use) | true | false.
  Pinning pin_threads = Pinning::kAuto;
  // YAML key `kv_budget`, e.g. 1GiB: ~46,000 f16 tokens of SmolLM2, 16 sequences of ~2,900.
  int64_t kv_budget_bytes = int64_t{1} << 30;
  kernels::KvFormat kv_format = kernels::KvFormat::kF16;
  int tokens_per_page = 16;
  bool enable_prefix_caching = true;
  // CPU matmul activations (engine/forward.h): int8 (VNNI kernel, fast) | f32 (reference-exact).
  enum class Activations { kInt8, kF32 };
  Activations activations = Activations::kInt8;
  // With int8 activations on a CPU with AMX-BF16: prompts of 64 tokens or more run their
  // matmuls on AMX tiles with bfloat16 activations (ForwardOptions::amx_prompts).
  bool amx_prompts = true;
  // With amx_prompts: those prompt tokens' attention on AMX tiles too (bfloat16 queries, keys,
  // values and probabilities; ForwardOptions::amx_attention; LeanKV: CpuAttention::AmxTokens).
  bool amx_attention = true;
};

// How KV is kept (memory/README.md, REFERENCE.md §1): dense (engine.kv_format f32/f16/bf16),
// quantized (one tier, engine.kv_format k8v8/k8v4/k4v2, no pruning) or leankv (high and low
// tiers with importance-based pruning and demotion; CPU worker only).
struct KvConfig {
  enum class Mode { kDense, kQuantized, kLeanKv };
  Mode mode = Mode::kDense;
  kernels::KvFormat high_format = kernels::KvFormat::kK8V4;
  kernels::KvFormat low_format = kernels::KvFormat::kK4V2;
  // Defaults: the best setting measured on SmolLM2 within 1% perplexity (docs/BENCHMARKS.md):
  // mixed precision only. Larger models tolerate pruning (REFERENCE.md §1's published pairs).
  double alpha_prune = 0.0;   // prune below alpha_prune / tokens kept (0 = precision only)
  double alpha_quant = 1.0;   // demote below alpha_quant / tokens kept (>= alpha_prune)
  int window = 64;            // newest tokens never pruned or demoted
  int64_t page_bytes_min = 768;   // page-size rule search range
  int64_t page_bytes_max = 2048;
};

struct SchedulerConfig {
  int max_num_seqs = 64;                // running requests
  int max_num_batched_tokens = 512;     // tokens per step
  int max_long_prefills = 1;            // long prefills in one step
  int long_prefill_threshold = 256;     // prompt tokens above which a prefill is "long"
  int max_waiting_requests = 256;       // bounded queue: reject beyond this...
  int64_t max_waiting_tokens = 262144;  // ...or beyond this many queued prompt tokens
  int overload_status = 429;            // 429 or 503 when rejecting
  int retry_after_s = 1;                // Retry-After header on rejection
};

struct LogConfig {
  enum class Level { kDebug, kInfo, kWarning, kError };
  Level level = Level::kInfo;
};

struct ServeConfig {
  ServedModelConfig model;
  ServerConfig server;
  EngineConfig engine;
  KvConfig kv;
  SchedulerConfig scheduler;
  LogConfig log;
};

// Parses YAML text over the defaults, then applies `flags` (see ApplyFlags) and validates.
// `source` names the text in messages (usually the file path). An empty document = defaults;
// a second document (after `---`) is an error. A flag replaces the file's value, so a bad value
// in the file under a key a flag sets is not reported. On error: InvalidArgument listing every
// problem, one per line.
absl::StatusOr<ServeConfig> ParseConfig(absl::string_view yaml, absl::string_view source = "<config>",
                                        const std::map<std::string, std::string>& flags = {});
// Reads `path` and calls ParseConfig. A missing, unreadable or directory path is an
// InvalidArgument too: every problem with a config file is the caller's to fix (peng exits 2).
absl::StatusOr<ServeConfig> LoadConfigFile(const std::string& path,
                                           const std::map<std::string, std::string>& flags = {});

// Overrides fields from command-line flags, then validates the result. Keys are flag names with
// or without the leading "--" ("http-port" or "--http-port"); values are parsed exactly as the
// YAML scalars are (so --kv-budget 2GiB works). Unknown names are errors: route only
// ConfigFlagNames() here. --api-key sets the key list to that one key. The switches (boolean
// keys, and pin_threads) take their YAML values; an empty value means true.
absl::Status ApplyFlags(ServeConfig& config, const std::map<std::string, std::string>& flags);
// The flag names ApplyFlags accepts (without "--"), each with the key path it sets.
const std::map<std::string, std::string>& ConfigFlagNames();
// For a command line: whether config flag `name` (without "--"), written without "=", takes the
// next argument `next` (nullptr at the end) as its value. A valued flag always does. A switch
// (--metrics-auth, --enable-prefix-caching, --pin-threads) does only when `next` is one of its
// values (true or false in any case; also auto for --pin-threads); otherwise it stands alone and
// means true, so `--metrics-auth --http-port 8210` sets both. Unknown names: false.
bool ConfigFlagTakesArgument(absl::string_view name, const char* next);

// Range and consistency checks over the whole config; every violation in one status.
absl::Status ValidateConfig(const ServeConfig& config);

// The effective config as YAML (for --print-config); ParseConfig(ToYaml(c)) reproduces c.
// redact_api_keys prints a non-empty key list as the string "<redacted: N keys>": loading that
// back is an error naming server.api_keys, never a made-up key or a server without keys.
std::string ToYaml(const ServeConfig& config, bool redact_api_keys = false);

// model.name, or when empty the model path's base name without ".gguf" and a trailing
// quantisation tag: models/SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct.
std::string ServedModelName(const ServedModelConfig& model);

// ParseByteSize and FormatByteSize: server/config_text.h.

const char* LogLevelName(LogConfig::Level level);
const char* DeviceName(EngineConfig::Device device);  // "cpu" | "cuda"
const char* PinThreadsName(Pinning pinning);           // "auto" | "true" | "false"

}  // namespace peng
