// `peng bench`: prompt-processing (pp) and generation (tg) tokens/s on one sequence, measured
// like llama-bench (tests/bench/llamacpp_peer.py measures llama.cpp the same way), plus this
// machine's memory bandwidth and the fraction of it that decode reaches.
// `--batch B` instead measures what a serving step does: B sequences of --prompt-tokens each
// decode --gen-tokens tokens together, one token each per forward, over the serving path's
// paged f16 KV (memory/'s KvManager); it reports aggregate decode tok/s and ms per step.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <span>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/status.h"
#include "base/thread_pool.h"
#include "cli/common.h"
#include "cli/flags.h"
#include "engine/forward.h"
#include "engine/simple_kv_cache.h"
#include "kernels/kv_format.h"
#include "memory/kv_manager.h"
#include "scheduler/paged_kv_view.h"

namespace peng::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Stat {
  double mean = 0, stddev = 0;
};

Stat MeanStd(const std::vector<double>& v) {
  Stat s;
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.stddev = std::sqrt(ss / (v.size() - 1));
  }
  return s;
}

// Read bandwidth (bytes/s) of `threads` threads summing a buffer far larger than the caches.
double ReadBandwidth(int threads) {
  const size_t n = size_t{256} << 20;  // 1 GiB of floats
  std::unique_ptr<float[]> buf(new float[n]);
  ThreadPool pool(threads);
  pool.ParallelFor(static_cast<int64_t>(n), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) buf[i] = 1.0f;
  });
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<float> sums(threads);
    const auto t0 = Clock::now();
    pool.Run([&](int t, int nt) {
      const size_t b = n * t / nt, e = n * (t + 1) / nt;
      float acc[16] = {};
      for (size_t i = b; i + 16 <= e; i += 16) {
        for (int j = 0; j < 16; ++j) acc[j] += buf[i + j];
      }
      sums[t] = std::accumulate(acc, acc + 16, 0.0f);
    });
    const double s = Since(t0);
    if (sums[0] < 0) std::printf("impossible\n");  // keeps the loads alive
    best = std::max(best, n * sizeof(float) / s);
  }
  return best;
}

// Batched decode: `batch` sequences prefilled with `prompt` (each its own forward), then
// `gen` steps that each decode one token of every sequence. Returns decode tok/s per rep.
absl::StatusOr<std::vector<double>> BatchedDecode(const Model& model, LlamaForward& forward,
                                                  std::span<const int32_t> prompt, int64_t gen,
                                                  int64_t batch, int64_t reps) {
  const ModelConfig& c = model.config;
  const memory::KvShape shape{c.num_layers, c.num_kv_heads, c.head_dim};
  memory::KvManagerOptions kv_options;  // the serving default: f16 pages of 16 tokens
  kv_options.enable_prefix_caching = false;
  const int64_t tpp = kv_options.tokens_per_page;
  const int64_t pages_per_seq = (static_cast<int64_t>(prompt.size()) + gen + tpp - 1) / tpp;
  kv_options.budget_bytes = static_cast<size_t>(batch * pages_per_seq) * shape.num_layers * shape.num_kv_heads *
                            kernels::PageSegmentsOf(kv_options.format, c.head_dim, tpp).page_bytes;
  PENG_RETURN_IF_ERROR(memory::KvManager::Validate(shape, kv_options));
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<memory::KvManager> kv, memory::KvManager::Create(shape, kv_options));
  PagedKvView view(kv.get());
  const int64_t np = static_cast<int64_t>(prompt.size());
  std::vector<double> tok_s;
  ForwardOutput out;
  for (int64_t rep = -1; rep < reps; ++rep) {  // rep -1 is the warm-up
    std::vector<int32_t> next(batch);
    for (int64_t s = 0; s < batch; ++s) {
      const memory::Growth growth{s, np};
      PENG_RETURN_IF_ERROR(kv->Grow({&growth, 1}));
      ForwardBatch pre;
      pre.chunks.push_back({.seq = s, .start_pos = 0, .tokens = prompt, .prompt_len = np});
      PENG_RETURN_IF_ERROR(forward.Forward(pre, view, &out));
      const auto row = out.row(0);
      next[s] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    }
    double secs = 0;
    std::vector<memory::Growth> growths(batch);
    for (int64_t i = 0; i < gen; ++i) {
      ForwardBatch step;
      for (int64_t s = 0; s < batch; ++s) {
        growths[s] = {s, np + i + 1};
        step.chunks.push_back({.seq = s, .start_pos = np + i, .tokens = {&next[s], 1}});
      }
      PENG_RETURN_IF_ERROR(kv->Grow(growths));
      const auto t0 = Clock::now();
      PENG_RETURN_IF_ERROR(forward.Forward(step, view, &out));
      secs += Since(t0);
      for (int64_t s = 0; s < batch; ++s) {
        const auto row = out.row(s);
        next[s] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      }
    }
    for (int64_t s = 0; s < batch; ++s) kv->Free(s);
    if (rep >= 0) tok_s.push_back(batch * gen / secs);
  }
  return tok_s;
}

absl::Status RunBench(int argc, char** argv) {
  Flags f({"model", "prompt-tokens", "gen-tokens", "threads", "reps", "activations", "batch"},
          {"json", "no-bandwidth", "pin-threads", "no-amx", "no-amx-attention"});
  PENG_RETURN_IF_ERROR(f.Parse(argc, argv));
  PENG_ASSIGN_OR_RETURN(int64_t pp_tokens, f.Int("prompt-tokens", 512, 1, 1 << 20));
  PENG_ASSIGN_OR_RETURN(int64_t tg_tokens, f.Int("gen-tokens", 128, 1, 1 << 20));
  PENG_ASSIGN_OR_RETURN(int64_t threads, f.Int("threads", 2, 1, 256));
  PENG_ASSIGN_OR_RETURN(int64_t reps, f.Int("reps", 3, 1, 100));
  PENG_ASSIGN_OR_RETURN(int64_t batch, f.Int("batch", 0, 0, 1024));
  PENG_ASSIGN_OR_RETURN(const bool int8, Int8ActivationsFlag(f));
  PENG_ASSIGN_OR_RETURN(auto model, LoadModel(f.String("model", kDefaultModel)));
  const ModelConfig& c = model->config;
  if (pp_tokens + tg_tokens > c.context_length) {
    return absl::InvalidArgumentError("prompt-tokens + gen-tokens exceed the model's context");
  }
  // Deterministic prompt: token ids cycling through the vocabulary's ordinary range.
  std::vector<int32_t> prompt(pp_tokens);
  for (int64_t i = 0; i < pp_tokens; ++i) prompt[i] = static_cast<int32_t>(1000 + (i * 7919) % (c.vocab_size - 1000));

  LlamaForward forward(*model, ForwardOptions{.num_threads = static_cast<int>(threads),
                                              .int8_activations = int8,
                                              .amx_prompts = !f.Has("no-amx"),
                                              .amx_attention = !f.Has("no-amx-attention"),
                                              .pinning = f.Has("pin-threads") ? Pinning::kAlways : Pinning::kNone});
  if (batch > 0) {
    PENG_ASSIGN_OR_RETURN(const std::vector<double> tok_s,
                          BatchedDecode(*model, forward, prompt, tg_tokens, batch, reps));
    const Stat s = MeanStd(tok_s);
    if (f.Has("json")) {
      std::printf("{\"batch\": %lld, \"tg_tok_s\": %.2f, \"tg_std\": %.2f, \"step_ms\": %.3f}\n",
                  (long long)batch, s.mean, s.stddev, 1e3 * batch / s.mean);
    } else {
      std::printf("| model | threads | test | batch | tok/s | ms / step |\n|---|---|---|---|---|---|\n");
      std::printf("| %s | %lld | tg%lld @ ctx %lld | %lld | %.1f ± %.1f | %.2f |\n", c.name.c_str(),
                  (long long)threads, (long long)tg_tokens, (long long)pp_tokens, (long long)batch, s.mean,
                  s.stddev, 1e3 * batch / s.mean);
    }
    return absl::OkStatus();
  }
  std::vector<double> pp, tg;
  for (int64_t rep = -1; rep < reps; ++rep) {  // rep -1 is the warm-up
    SimpleKvCache kv(c.num_layers, c.num_kv_heads, c.head_dim, pp_tokens + tg_tokens);
    ForwardBatch batch;
    batch.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = prompt, .prompt_len = pp_tokens});
    ForwardOutput out;
    auto t0 = Clock::now();
    PENG_RETURN_IF_ERROR(forward.Forward(batch, kv, &out));
    const double pp_s = Since(t0);
    double tg_s = 0;
    for (int64_t i = 0; i < tg_tokens; ++i) {
      const auto row = out.row(0);
      const int32_t next = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      ForwardBatch step;
      step.chunks.push_back({.seq = 0, .start_pos = pp_tokens + i, .tokens = {&next, 1}});
      t0 = Clock::now();
      PENG_RETURN_IF_ERROR(forward.Forward(step, kv, &out));
      tg_s += Since(t0);
    }
    if (rep >= 0) {
      pp.push_back(pp_tokens / pp_s);
      tg.push_back(tg_tokens / tg_s);
    }
  }
  const Stat pps = MeanStd(pp), tgs = MeanStd(tg);
  // Bytes one decode step reads: every weight once plus the KV of the sequence (mid-generation).
  const double kv_bytes = 2.0 * c.num_layers * c.num_kv_heads * c.head_dim * sizeof(float) * (pp_tokens + tg_tokens / 2);
  const double step_bytes = static_cast<double>(model->weights.bytes()) + kv_bytes;
  const double bw = f.Has("no-bandwidth") ? 0 : ReadBandwidth(static_cast<int>(threads));
  const double frac = bw > 0 ? step_bytes * tgs.mean / bw : 0;
  if (f.Has("json")) {
    std::printf("%s\n", absl::StrFormat(
        "{\"pp_tok_s\": %.2f, \"pp_std\": %.2f, \"tg_tok_s\": %.2f, \"tg_std\": %.2f, "
        "\"read_bandwidth_gb_s\": %.2f, \"decode_bytes_per_token\": %.0f, \"decode_bandwidth_fraction\": %.3f}",
        pps.mean, pps.stddev, tgs.mean, tgs.stddev, bw / 1e9, step_bytes, frac).c_str());
  } else {
    std::printf("| model | threads | test | tok/s |\n|---|---|---|---|\n");
    std::printf("| %s | %lld | pp%lld | %.1f ± %.1f |\n", c.name.c_str(), (long long)threads, (long long)pp_tokens, pps.mean, pps.stddev);
    std::printf("| %s | %lld | tg%lld | %.1f ± %.1f |\n", c.name.c_str(), (long long)threads, (long long)tg_tokens, tgs.mean, tgs.stddev);
    if (bw > 0) {
      std::printf("read bandwidth %.1f GB/s; decode reads %.1f MB/token = %.1f GB/s (%.0f%% of it)\n",
                  bw / 1e9, step_bytes / 1e6, step_bytes * tgs.mean / 1e9, 100 * frac);
    }
  }
  return absl::OkStatus();
}

}  // namespace

int RunBenchCommand(int argc, char** argv) {
  absl::Status s = RunBench(argc, argv);
  return s.ok() ? 0 : Fail("bench", s);
}

}  // namespace peng::cli
