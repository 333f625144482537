// Attention benchmark (a program, not a test): the generated CPU attention kernels, driven the
// way the forward drives them (engine/cpu_attention.h), on SmolLM2's shape by default.
//   paged decode: batch B of one-token queries at context N; GB/s of KV read, against this
//                 machine's memcpy bandwidth (bytes read + written) measured in the same run;
//   prefill:      one chunk of P tokens (causal) over its own keys; GFLOP/s (with --amx-prompts
//                 as a prompt, on the AMX kernel where the CPU has it: kernels/cpu/amx_attention.h).
// KV lives in pages of 16 tokens (--page-tokens=N for others) in the chosen format, scattered as a page pool hands them out;
// enough layers' worth of pages are cycled that the working set is far larger than the
// last-level cache. Prints a Markdown table.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/huge_pages.h"
#include "base/thread_pool.h"
#include "engine/cpu_attention.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"
#include "kernels/cpu/amx_attention.h"
#include "kernels/cpu/kv_store.h"

namespace peng {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Pages of `tokens_per_page` tokens per (sequence, layer, kv-head), filled with random values,
// in shuffled order as a page pool hands them out (no two pages of a history adjacent, so the
// hardware prefetchers get no run across pages), or with --contiguous each history's pages in
// order (how this benchmark laid them out before; it overstates decode by ~30%).
class BenchKv : public KvCache {
 public:
  BenchKv(int seqs, int layers, int heads, int head_dim, int64_t tokens, kernels::KvFormat format,
          int tokens_per_page, bool contiguous, bool huge_pages)
      : kTpp(tokens_per_page), layers_(layers), heads_(heads), hd_(head_dim), format_(format),
        seg_(kernels::PageSegmentsOf(format, head_dim, kTpp)),
        pages_per_table_((tokens + kTpp - 1) / kTpp) {
    const size_t pages = static_cast<size_t>(seqs) * layers * heads * pages_per_table_;
    // As the page pool allocates (base/huge_pages.h), or with --no-huge-pages in 4 KiB pages.
    const size_t bytes = (pages * seg_.page_bytes + 4095) / 4096 * 4096;
    data_ = huge_pages ? AllocateHuge(bytes, 4096) : HugeBuffer(static_cast<uint8_t*>(std::aligned_alloc(4096, bytes)));
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<float> k(head_dim), v(head_dim);
    slot_.resize(pages);
    for (size_t p = 0; p < pages; ++p) slot_[p] = p;
    if (!contiguous) std::shuffle(slot_.begin(), slot_.end(), rng);
    for (size_t p = 0; p < pages; ++p) {
      for (int t = 0; t < kTpp; ++t) {
        for (float& x : k) x = nd(rng);
        for (float& x : v) x = nd(rng);
        kernels::StoreKvToken(format, head_dim, kTpp, k.data(), v.data(), t, t, data_.get() + p * seg_.page_bytes);
      }
    }
  }
  absl::Status Reserve(int64_t, int64_t) override { return absl::OkStatus(); }
  void Release(int64_t) override {}
  void Store(int64_t, int, int, int64_t, const float*, const float*) override {}
  void Spans(int64_t seq, int layer, int kv_head, int64_t len, std::vector<kernels::KvSpan>* out) const override {
    out->clear();
    const size_t table = (static_cast<size_t>(seq) * layers_ + layer) * heads_ + kv_head;
    for (int64_t p = 0; p * kTpp < len; ++p) {
      const uint8_t* page = data_.get() + slot_[table * pages_per_table_ + p] * seg_.page_bytes;
      kernels::KvSpan span;
      span.k = page + seg_.k;
      span.key_lanes = kernels::KeyLanes(format_, kTpp);
      span.v = page + seg_.v;
      span.k_meta = page + seg_.k_meta;
      span.v_meta = page + seg_.v_meta;
      span.num_tokens = std::min<int64_t>(kTpp, len - p * kTpp);
      span.format = format_;
      out->push_back(span);
    }
  }
  kernels::KvFormat format() const override { return format_; }

 private:
  const int kTpp;  // tokens per page
  std::vector<size_t> slot_;  // page p of the tables -> where it lies
  int layers_, heads_, hd_;
  kernels::KvFormat format_;
  kernels::KvPageSegments seg_;
  int64_t pages_per_table_;
  HugeBuffer data_;
};

// memcpy of a 1 GiB buffer split across the pool; bytes read + written per second, best of 3.
double MemcpyBandwidth(ThreadPool& pool) {
  const size_t n = size_t{1} << 30;
  std::unique_ptr<char[]> a(new char[n]), b(new char[n]);
  std::memset(a.get(), 1, n);
  std::memset(b.get(), 2, n);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    pool.Run([&](int t, int nt) {
      const size_t lo = n * t / nt, hi = n * (t + 1) / nt;
      std::memcpy(b.get() + lo, a.get() + lo, hi - lo);
    });
    best = std::max(best, 2.0 * n / Since(t0));
  }
  return best;
}

int Run(int argc, char** argv) {
  int threads = 2;
  kernels::KvFormat format = kernels::KvFormat::kF16;
  bool contiguous = false, huge_pages = true, amx_prompts = false;
  int page_tokens = 16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--threads=", 0) == 0) threads = std::atoi(a.c_str() + 10);
    else if (a.rfind("--format=", 0) == 0 && kernels::ParseKvFormat(a.substr(9), &format)) continue;
    else if (a == "--contiguous") contiguous = true;
    else if (a == "--no-huge-pages") huge_pages = false;
    else if (a == "--amx-prompts") amx_prompts = true;
    else if (a.rfind("--page-tokens=", 0) == 0 && (page_tokens = std::atoi(a.c_str() + 14)) >= 1 && page_tokens <= 1024) continue;
    else {
      std::fprintf(stderr, "usage: attention_bench [--threads=N] [--format=f16|bf16|f32|k8v8|k8v4|k4v2] [--contiguous] [--no-huge-pages] [--amx-prompts] [--page-tokens=N]\n");
      return 2;
    }
  }
  ModelConfig c;  // SmolLM2-135M's attention shape
  c.num_heads = 9;
  c.num_kv_heads = 3;
  c.head_dim = 64;
  ThreadPool pool(threads);
  CpuAttention attention(c);
  attention.SetAmxPrompts(amx_prompts ? 1 : 0);
  if (absl::Status s = attention.Prepare(format); !s.ok()) {
    std::fprintf(stderr, "attention_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const double memcpy_bw = MemcpyBandwidth(pool);
  const kernels::CpuIsa isa = kernels::BestCpuIsa();
  std::printf("memcpy bandwidth (read + write, %d threads): %.1f GB/s; ISA %s; KV %s; %d-token pages %s; %s; prefill %s\n\n",
              threads, memcpy_bw / 1e9, kernels::Name(isa), kernels::KvFormatName(format), page_tokens,
              contiguous ? "contiguous per history" : "scattered",
              huge_pages ? "huge pages advised" : "4 KiB pages",
              amx_prompts && kernels::AmxAttentionSupports(format, c.head_dim) ? "on AMX" : "on the vector kernels");
  std::printf("| phase | context | batch | KV MB / pass | time / layer | GB/s or GFLOP/s | vs memcpy |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  const int64_t row = int64_t{c.num_heads} * c.head_dim;
  // Bytes of KV (metadata included) per token, all kv-heads of a layer.
  const double kv_token_bytes = kernels::KvBytesPerToken(format, c.head_dim, page_tokens) * c.num_kv_heads;
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;

  for (int64_t ctx : {256, 2048, 8192}) {
    for (int batch : {1, 16}) {
      const double layer_bytes = kv_token_bytes * ctx * batch;
      const int layers = static_cast<int>(std::clamp(std::ceil(512e6 / layer_bytes), 2.0, 64.0));
      BenchKv kv(batch, layers, c.num_kv_heads, c.head_dim, ctx, format, page_tokens, contiguous, huge_pages);
      std::vector<float> q(batch * row), out(batch * row);
      for (float& x : q) x = nd(rng);
      std::vector<int32_t> tok(batch, 0);
      ForwardBatch fb;
      for (int s = 0; s < batch; ++s) fb.chunks.push_back({.seq = s, .start_pos = ctx - 1, .tokens = {&tok[s], 1}});
      for (int l = 0; l < layers; ++l) attention.Run(pool, l, fb, kv, q.data(), out.data());  // warm-up
      double best = 1e30;
      for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = Clock::now();
        for (int l = 0; l < layers; ++l) attention.Run(pool, l, fb, kv, q.data(), out.data());
        best = std::min(best, Since(t0) / layers);
      }
      const double gbs = layer_bytes / best;
      std::printf("| decode | %lld | %d | %.0f | %.1f µs | %.1f GB/s | %.0f%% |\n", (long long)ctx, batch,
                  layer_bytes * layers / 1e6, best * 1e6, gbs / 1e9, 100 * gbs / memcpy_bw);
    }
  }
  for (int64_t p : {512, 2048, 8192}) {
    BenchKv kv(1, 2, c.num_kv_heads, c.head_dim, p, format, page_tokens, false, huge_pages);
    std::vector<float> q(p * row), out(p * row);
    for (float& x : q) x = nd(rng);
    std::vector<int32_t> toks(p, 0);
    ForwardBatch fb;
    fb.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = toks, .prompt_len = amx_prompts ? p : 0});
    attention.Run(pool, 0, fb, kv, q.data(), out.data());
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = Clock::now();
      attention.Run(pool, rep % 2, fb, kv, q.data(), out.data());
      best = std::min(best, Since(t0));
    }
    // QKᵀ and PV over the causal triangle: 4·head_dim flops per (query head, admitted key).
    const double flops = 4.0 * c.head_dim * c.num_heads * (p * (p + 1) / 2.0);
    std::printf("| prefill | %lld | 1 | %.1f | %.1f µs | %.1f GFLOP/s | |\n", (long long)p,
                kv_token_bytes * p / 1e6, best * 1e6, flops / best / 1e9);
  }
  return 0;
}

}  // namespace
}  // namespace peng

int main(int argc, char** argv) { return peng::Run(argc, argv); }
