// `peng perplexity`: perplexity of a model over a text file, with a KV cache policy in effect
// while the text is processed (LeanKV's evaluation, issue 5). The text is cut into consecutive
// windows of --ctx tokens; each window is fed through the CPU worker in chunks of --chunk
// tokens over memory/'s paged cache (KvManager seen through PagedKvView), so whatever the KV
// mode does to the cache acts on what later tokens of the window attend to. One sequence at a
// time, freed after each window. The last stdout line is
//   perplexity=<x> kv_bytes_per_token=<y> compression_vs_fp16=<z>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "cli/common.h"
#include "cli/flags.h"
#include "engine/forward.h"
#include "kernels/kv_format.h"
#include "memory/kv_manager.h"
#include "scheduler/paged_kv_view.h"
#include "server/config.h"

namespace peng::cli {
namespace {

using Clock = std::chrono::steady_clock;

enum class KvMode { kDense, kQuantized, kLeanKv };

struct PerplexityOptions {
  std::string model, text;
  int64_t ctx = 0, max_windows = 0, chunk = 16, threads = 2;
  int tokens_per_page = 16;
  bool int8_activations = true;
  bool amx_prompts = true;  // ForwardOptions::amx_prompts (the windows are prompts)
  bool amx_attention = true;  // ForwardOptions::amx_attention
  KvMode mode = KvMode::kDense;
  kernels::KvFormat format = kernels::KvFormat::kF16;
  memory::LeanKvOptions lean;  // kv-mode leankv: the config's kv section, then the flags
};

absl::StatusOr<KvMode> ParseMode(const std::string& s) {
  if (s == "dense") return KvMode::kDense;
  if (s == "quantized") return KvMode::kQuantized;
  if (s == "leankv") return KvMode::kLeanKv;
  return absl::InvalidArgumentError(absl::StrCat("--kv-mode must be dense, quantized or leankv, got '", s, "'"));
}

// The KV format of a mode: --kv-format, else the config's engine.kv_format when it suits the
// mode, else the mode's default (dense: f16, quantized: k8v4).
absl::StatusOr<kernels::KvFormat> FormatFor(KvMode mode, const Flags& f, const ServeConfig* config) {
  const bool quantized = mode != KvMode::kDense;
  kernels::KvFormat format = quantized ? kernels::KvFormat::kK8V4 : kernels::KvFormat::kF16;
  if (config != nullptr && kernels::IsQuantized(config->engine.kv_format) == quantized) {
    format = config->engine.kv_format;
  }
  if (f.Has("kv-format")) {
    const std::string name = f.String("kv-format");
    if (!kernels::ParseKvFormat(name, &format)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kv-format must be ", kernels::kKvFormatSyntax, ", got '", name, "'"));
    }
    if (kernels::IsQuantized(format) != quantized) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kv-format ", name, " does not suit --kv-mode ",
          quantized ? "quantized (use k8v8, k8v4 or k4v2)" : "dense (use f32, f16 or bf16)"));
    }
  }
  return format;
}

absl::StatusOr<PerplexityOptions> ParseOptions(int argc, char** argv) {
  Flags f({"model", "text", "ctx", "max-windows", "kv-mode", "kv-format", "chunk", "threads", "config",
           "alpha-prune", "alpha-quant", "window", "activations"},
          {"no-amx", "no-amx-attention"});
  PENG_RETURN_IF_ERROR(f.Parse(argc, argv));
  PerplexityOptions o;
  PENG_ASSIGN_OR_RETURN(o.mode, ParseMode(f.String("kv-mode", "dense")));
  std::optional<ServeConfig> config;
  if (f.Has("config")) {
    PENG_ASSIGN_OR_RETURN(config, LoadConfigFile(f.String("config")));
    o.threads = config->engine.ComputeThreads();
    o.tokens_per_page = config->engine.tokens_per_page;
    o.int8_activations = config->engine.activations == EngineConfig::Activations::kInt8;
    o.amx_prompts = config->engine.amx_prompts;
    o.amx_attention = config->engine.amx_attention;
    ServeConfig lean_config = *config;  // the kv section's tiers and thresholds
    lean_config.kv.mode = KvConfig::Mode::kLeanKv;
    o.lean = KvOptionsOf(lean_config).lean;
  }
  if (f.Has("alpha-prune")) {
    PENG_ASSIGN_OR_RETURN(o.lean.alpha_prune, f.Double("alpha-prune", 0, 0, 1000));
  }
  if (f.Has("alpha-quant")) {
    PENG_ASSIGN_OR_RETURN(o.lean.alpha_quant, f.Double("alpha-quant", 0, 0, 1000));
  }
  if (f.Has("window")) {
    PENG_ASSIGN_OR_RETURN(const int64_t window, f.Int("window", 64, 1, 1 << 20));
    o.lean.window = static_cast<int>(window);
  }
  if (o.mode == KvMode::kLeanKv) PENG_RETURN_IF_ERROR(memory::ValidateLeanKv(o.lean));
  o.model = f.String("model", config ? config->model.path : kDefaultModel);
  if (!f.Has("text")) return absl::InvalidArgumentError("--text FILE is required");
  o.text = f.String("text");
  if (!f.Has("ctx")) return absl::InvalidArgumentError("--ctx N (tokens per window) is required");
  PENG_ASSIGN_OR_RETURN(o.ctx, f.Int("ctx", 0, 2, int64_t{1} << 24));
  PENG_ASSIGN_OR_RETURN(o.max_windows, f.Int("max-windows", int64_t{1} << 40, 1, int64_t{1} << 40));
  PENG_ASSIGN_OR_RETURN(o.chunk, f.Int("chunk", 16, 1, int64_t{1} << 24));
  PENG_ASSIGN_OR_RETURN(o.threads, f.Int("threads", o.threads, 1, 256));
  PENG_ASSIGN_OR_RETURN(o.int8_activations, Int8ActivationsFlag(f, o.int8_activations));
  if (f.Has("no-amx")) o.amx_prompts = false;
  if (f.Has("no-amx-attention")) o.amx_attention = false;
  PENG_ASSIGN_OR_RETURN(o.format, FormatFor(o.mode, f, config ? &*config : nullptr));
  if (!std::filesystem::exists(o.model)) {
    // A missing model exits 1, as in the other commands (main.cc's usage text).
    return absl::NotFoundError(absl::StrCat("--model ", o.model, ": no such file or directory"));
  }
  if (!std::filesystem::is_regular_file(o.text)) {
    return absl::InvalidArgumentError(absl::StrCat("--text ", o.text, ": no such file"));
  }
  return o;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read"));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Consecutive non-overlapping windows of `ctx` tokens; with a BOS-adding tokenizer each window
// is BOS followed by ctx - 1 text tokens. Only whole windows, at most `max_windows`.
std::vector<std::vector<int32_t>> CutWindows(const std::vector<int32_t>& text, int32_t bos,
                                             int64_t ctx, int64_t max_windows) {
  const int64_t step = bos >= 0 ? ctx - 1 : ctx;
  std::vector<std::vector<int32_t>> windows;
  for (int64_t start = 0; start + step <= static_cast<int64_t>(text.size()) &&
                          static_cast<int64_t>(windows.size()) < max_windows;
       start += step) {
    std::vector<int32_t>& w = windows.emplace_back();
    if (bos >= 0) w.push_back(bos);
    w.insert(w.end(), text.begin() + start, text.begin() + start + step);
  }
  return windows;
}

// -log softmax(logits)[target], in double.
double TokenNll(std::span<const float> logits, int32_t target) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  return std::log(sum) + max - static_cast<double>(logits[target]);
}

struct WindowResult {
  double nll = 0;          // summed over the predicted tokens
  int64_t predicted = 0;   // tokens whose probability was scored (window length - 1)
  double kv_bytes = 0;     // bytes of the pages the cache held at the end of the window
};

// Feeds one window through the worker in chunks, growing the sequence's KV before each chunk
// as the engine loop does, and scores every position but the last.
absl::StatusOr<WindowResult> RunWindow(std::span<const int32_t> window, int64_t chunk,
                                       LlamaForward& forward, memory::KvManager& kv,
                                       PagedKvView& view) {
  constexpr memory::SeqId kSeq = 0;
  WindowResult r;
  ForwardOutput out;
  const int64_t n = static_cast<int64_t>(window.size());
  // The first chunk is the "prompt" (prefill compression at its end); every later token is
  // compressed by LeanKV's decode rule as it arrives, as in generation.
  if (kv.lean() != nullptr) kv.MatchPrefix(kSeq, window.subspan(0, std::min(chunk, n)));
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t len = std::min(chunk, n - start);
    const memory::Growth growth{kSeq, start + len};
    PENG_RETURN_IF_ERROR(kv.Grow({&growth, 1}));
    ForwardBatch batch;
    batch.chunks.push_back({.seq = kSeq, .start_pos = start,
                            .tokens = window.subspan(start, len),
                            .logits = SequenceChunk::Logits::kAll,
                            .prompt_len = n});
    PENG_RETURN_IF_ERROR(forward.Forward(batch, view, &out));
    kv.CommitComputed(kSeq, window, start + len);
    if (out.rows() != len) {
      return absl::InternalError(absl::StrCat("forward returned ", out.rows(), " logits rows for ", len, " tokens"));
    }
    for (int64_t i = 0; i < len && start + i + 1 < n; ++i) {
      r.nll += TokenNll(out.row(i), window[start + i + 1]);
      ++r.predicted;
    }
  }
  // The only sequence holds every page not free (prefix caching is off).
  r.kv_bytes = static_cast<double>(kv.total_pages() - kv.free_pages()) * static_cast<double>(kv.page_bytes());
  kv.Free(kSeq);
  return r;
}

// A pool that holds one window: one f32 page (the largest format) per (layer, kv-head) for
// every tokens_per_page tokens, plus a block of slack.
absl::StatusOr<std::unique_ptr<memory::KvManager>> MakeKv(const ModelConfig& c,
                                                          const PerplexityOptions& o) {
  const memory::KvShape shape{c.num_layers, c.num_kv_heads, c.head_dim};
  memory::KvManagerOptions kv_options;
  kv_options.format = o.format;
  kv_options.tokens_per_page = o.tokens_per_page;
  kv_options.enable_prefix_caching = false;
  const int64_t blocks = (o.ctx + o.tokens_per_page - 1) / o.tokens_per_page + 1;
  kv_options.budget_bytes = static_cast<size_t>(blocks) * c.num_layers * c.num_kv_heads * 2 *
                            o.tokens_per_page * c.head_dim * sizeof(float);
  if (o.mode == KvMode::kLeanKv) {  // every token at high precision, plus the step headroom
    kv_options.leankv = true;
    kv_options.lean = o.lean;
    PENG_ASSIGN_OR_RETURN(const memory::PageSizeChoice pages,
                          memory::ChoosePageSize(c.head_dim, o.lean.high, o.lean.low, o.lean.page_bytes_min,
                                                 o.lean.page_bytes_max));
    kv_options.budget_bytes = static_cast<size_t>((o.ctx + pages.high_tokens - 1) / pages.high_tokens + 2) *
                              c.num_layers * c.num_kv_heads * pages.page_bytes;
  }
  PENG_RETURN_IF_ERROR(memory::KvManager::Validate(shape, kv_options));
  if (memory::KvManager::CapacityTokens(shape, kv_options) < o.ctx) {
    return absl::InternalError(absl::StrCat("a KV pool of ", kv_options.budget_bytes,
                                            " bytes does not hold ", o.ctx, " tokens"));
  }
  return memory::KvManager::Create(shape, kv_options);
}

absl::Status RunPerplexity(int argc, char** argv) {
  PENG_ASSIGN_OR_RETURN(const PerplexityOptions o, ParseOptions(argc, argv));
  PENG_ASSIGN_OR_RETURN(const std::string text, ReadFile(o.text));
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(o.text, ": the text is empty"));
  PENG_ASSIGN_OR_RETURN(auto model, LoadModelWithProgress(o.model));
  const ModelConfig& c = model->config;
  if (o.ctx > c.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("--ctx ", o.ctx, " exceeds the model's context of ",
                                                   c.context_length, " tokens"));
  }
  const Tokenizer& tok = *model->tokenizer;
  // The text is data: control-token markup in it is plain text.
  const std::vector<int32_t> ids = tok.Encode(text, /*add_bos=*/false, /*parse_special=*/false);
  const int32_t bos = tok.add_bos_default() ? tok.bos_id() : -1;
  const std::vector<std::vector<int32_t>> windows = CutWindows(ids, bos, o.ctx, o.max_windows);
  if (windows.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(o.text, ": ", ids.size(), " tokens, fewer than one window of --ctx ",
                                                   o.ctx, bos >= 0 ? " (BOS + ctx - 1 text tokens)" : ""));
  }

  PENG_ASSIGN_OR_RETURN(std::unique_ptr<memory::KvManager> kv, MakeKv(c, o));
  PagedKvView view(kv.get());
  LlamaForward forward(*model, ForwardOptions{.num_threads = static_cast<int>(o.threads),
                                              .int8_activations = o.int8_activations,
                                              .amx_prompts = o.amx_prompts,
                                              .amx_attention = o.amx_attention});
  PENG_RETURN_IF_ERROR(forward.PrepareAttention(view.format(), view.low_format()));
  std::string kv_desc = absl::StrCat(kernels::KvFormatName(o.format), ", ", o.tokens_per_page, " tokens/page");
  if (const memory::LeanKv* lean = kv->lean(); lean != nullptr) {
    kv_desc = absl::StrCat("leankv high ", kernels::KvFormatName(o.lean.high), " / low ",
                           kernels::KvFormatName(o.lean.low), ", alpha_prune ", o.lean.alpha_prune,
                           ", alpha_quant ", o.lean.alpha_quant, ", window ", o.lean.window, "; pages of ",
                           lean->pages().page_bytes, " B (", lean->pages().high_tokens, " high / ",
                           lean->pages().low_tokens, " low tokens)");
  }
  std::fprintf(stderr, "perplexity: %zu text tokens, %zu windows of %lld (%s), chunks of %lld, KV %s\n",
               ids.size(), windows.size(), static_cast<long long>(o.ctx), bos >= 0 ? "BOS first" : "no BOS",
               static_cast<long long>(o.chunk), kv_desc.c_str());

  double nll = 0, bytes_per_token_sum = 0;
  int64_t predicted = 0;
  const auto t0 = Clock::now();
  for (size_t w = 0; w < windows.size(); ++w) {
    PENG_ASSIGN_OR_RETURN(const WindowResult r, RunWindow(windows[w], o.chunk, forward, *kv, view));
    nll += r.nll;
    predicted += r.predicted;
    bytes_per_token_sum += r.kv_bytes / static_cast<double>(windows[w].size());
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "window %zu/%zu: ppl %.4f, running ppl %.4f, %.0f tok/s\n", w + 1, windows.size(),
                 std::exp(r.nll / r.predicted), std::exp(nll / predicted),
                 static_cast<double>(predicted + w + 1) / s);
  }
  if (const memory::LeanKv* lean = kv->lean(); lean != nullptr) {
    const memory::LeanKvStats st = lean->stats();
    std::fprintf(stderr, "leankv: %lld tokens pruned, %lld demoted (all windows, all layers and kv-heads); "
                 "mean per-head sparsity %.3f\n",
                 static_cast<long long>(st.tokens_pruned), static_cast<long long>(st.tokens_demoted),
                 st.mean_sparsity());
  }
  const double kv_bytes_per_token = bytes_per_token_sum / static_cast<double>(windows.size());
  const double fp16_bytes_per_token = 2.0 * c.head_dim * 2.0 * c.num_layers * c.num_kv_heads;
  std::printf("perplexity=%.4f kv_bytes_per_token=%.1f compression_vs_fp16=%.3f\n",
              std::exp(nll / static_cast<double>(predicted)), kv_bytes_per_token,
              fp16_bytes_per_token / kv_bytes_per_token);
  return absl::OkStatus();
}

}  // namespace

int RunPerplexityCommand(int argc, char** argv) {
  absl::Status s = RunPerplexity(argc, argv);
  return s.ok() ? 0 : Fail("perplexity", s);
}

}  // namespace peng::cli
