// Benchmark program (not a test): the generated CUDA attention through the worker's dispatch
// (CudaAttention) on paged f16 KV. Paged decode in GB/s of KV read against this GPU's measured
// device-to-device copy bandwidth; causal prefill in TFLOP/s. Prints a table, and with --json
// one JSON object per case (scripts/device_attention_peer.py adds PyTorch SDPA on the same
// shapes and prints the combined table for docs/BENCHMARKS.md).
//   build/engine/cuda/cuda_attention_bench [--json FILE] [--head-dim 64 --kv-heads 3 --group 3]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/cuda/cuda_attention.h"
#include "engine/cuda/cuda_status.h"
#include "engine/cuda/device_arena.h"
#include "kernels/cpu/fp16.h"

namespace peng::cuda {
namespace {

// Default: SmolLM2's attention (the variant configs/gpu.yaml builds); other shapes need their
// variants built (PENG_ATTENTION_VARIANTS=all).
struct Shape {
  int head_dim = 64, kv_heads = 3, group = 3;
};

constexpr int kTokensPerPage = 16;

// Milliseconds per call of fn (after warm-up), timed with events on `stream`.
template <typename Fn>
absl::StatusOr<double> TimeMs(cudaStream_t stream, int reps, Fn fn) {
  for (int i = 0; i < 3; ++i) PENG_RETURN_IF_ERROR(fn());
  cudaEvent_t a, b;
  PENG_CUDA_RETURN_IF_ERROR(cudaEventCreate(&a));
  PENG_CUDA_RETURN_IF_ERROR(cudaEventCreate(&b));
  PENG_CUDA_RETURN_IF_ERROR(cudaEventRecord(a, stream));
  for (int i = 0; i < reps; ++i) PENG_RETURN_IF_ERROR(fn());
  PENG_CUDA_RETURN_IF_ERROR(cudaEventRecord(b, stream));
  PENG_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(b));
  float ms = 0;
  PENG_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / reps;
}

// Read + write bytes per second of one large device-to-device copy.
absl::StatusOr<double> CopyBandwidth(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  PENG_ASSIGN_OR_RETURN(DeviceBuffer src, DeviceBuffer::Allocate(bytes, "copy source"));
  PENG_ASSIGN_OR_RETURN(DeviceBuffer dst, DeviceBuffer::Allocate(bytes, "copy destination"));
  PENG_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(src.data(), 1, bytes, stream));
  PENG_ASSIGN_OR_RETURN(const double ms, TimeMs(stream, 10, [&] {
    return CudaStatus(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream),
                      "cudaMemcpyAsync");
  }));
  return 2.0 * bytes / (ms * 1e-3);
}

struct Case {
  const char* phase;
  int batch;
  int kv_len;
  int q_len;
  double ms = 0;
};

// num_seqs sequences, each q_len queries over a kv_len history in shuffled pages.
absl::Status Run(const CudaAttention& attn, const Shape& s, Case& c, cudaStream_t stream) {
  const int pages_per_seq = (c.kv_len + kTokensPerPage - 1) / kTokensPerPage;
  const int64_t page_bytes = int64_t{2} * kTokensPerPage * s.head_dim * 2;
  const int64_t num_pages = int64_t{c.batch} * s.kv_heads * pages_per_seq;
  PENG_ASSIGN_OR_RETURN(DeviceBuffer pages, DeviceBuffer::Allocate(num_pages * page_bytes, "KV pages"));
  {  // Random f16 in [-1, 1): a 16 MiB pattern repeated over the pool.
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<uint16_t> pattern(8 << 20);
    for (auto& h : pattern) h = kernels::Fp32ToFp16(u(rng));
    const size_t chunk = pattern.size() * 2, total = num_pages * page_bytes;
    for (size_t off = 0; off < total; off += chunk) {
      PENG_CUDA_RETURN_IF_ERROR(cudaMemcpy(pages.data() + off, pattern.data(), std::min(chunk, total - off),
                                           cudaMemcpyHostToDevice));
    }
  }
  std::vector<int32_t> table(num_pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(11));
  const int tokens = c.batch * c.q_len;
  const int num_heads = s.kv_heads * s.group;
  std::vector<int32_t> meta;
  for (int i = 0; i <= c.batch; ++i) meta.push_back(i * c.q_len);  // q_start
  for (int i = 0; i < c.batch; ++i) meta.push_back(c.kv_len);      // kv_len
  meta.insert(meta.end(), table.begin(), table.end());
  PENG_ASSIGN_OR_RETURN(DeviceBuffer d_meta, DeviceBuffer::Allocate(meta.size() * 4, "metadata"));
  PENG_CUDA_RETURN_IF_ERROR(cudaMemcpy(d_meta.data(), meta.data(), meta.size() * 4, cudaMemcpyHostToDevice));
  const size_t q_bytes = size_t{4} * tokens * num_heads * s.head_dim;
  PENG_ASSIGN_OR_RETURN(DeviceBuffer q, DeviceBuffer::Allocate(q_bytes, "q"));
  PENG_ASSIGN_OR_RETURN(DeviceBuffer out, DeviceBuffer::Allocate(q_bytes, "out"));
  {
    std::vector<float> hq(q_bytes / 4);
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& x : hq) x = u(rng);
    PENG_CUDA_RETURN_IF_ERROR(cudaMemcpy(q.data(), hq.data(), q_bytes, cudaMemcpyHostToDevice));
  }
  const size_t ws_bytes = attn.WorkspaceBytes(c.batch, num_heads, s.head_dim, c.kv_len);
  PENG_ASSIGN_OR_RETURN(DeviceBuffer ws, DeviceBuffer::Allocate(std::max<size_t>(ws_bytes, 256), "workspace"));

  AttentionLaunch l;
  l.num_seqs = c.batch;
  l.num_kv_heads = s.kv_heads;
  l.q = reinterpret_cast<const float*>(q.data());
  l.out = reinterpret_cast<float*>(out.data());
  l.q_start = reinterpret_cast<const int32_t*>(d_meta.data());
  l.kv_len = l.q_start + c.batch + 1;
  l.page_table = l.kv_len + c.batch;
  l.kv_base = pages.data();
  l.page_bytes = page_bytes;
  l.tokens_per_page = kTokensPerPage;
  l.max_pages = pages_per_seq;
  l.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  l.max_q_len = c.q_len;
  l.max_kv_len = c.kv_len;
  l.workspace = ws.data();
  l.workspace_bytes = ws_bytes;
  const bool prefill = c.q_len > 1;
  PENG_ASSIGN_OR_RETURN(c.ms, TimeMs(stream, 20, [&] { return attn.Launch(l, prefill, stream); }));
  return CudaStatus(cudaStreamSynchronize(stream), "attention");
}

absl::Status Main(int argc, char** argv) {
  Shape s;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--json") json_path = argv[i + 1];
    else if (k == "--head-dim") s.head_dim = std::atoi(argv[i + 1]);
    else if (k == "--kv-heads") s.kv_heads = std::atoi(argv[i + 1]);
    else if (k == "--group") s.group = std::atoi(argv[i + 1]);
    else return absl::InvalidArgumentError("unknown flag " + k);
  }
  PENG_ASSIGN_OR_RETURN(const int devices, CudaDeviceCount());
  (void)devices;
  cudaDeviceProp prop{};
  PENG_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));
  PENG_ASSIGN_OR_RETURN(const CudaAttention attn,
                        CudaAttention::Find(kernels::KvFormat::kF16, s.head_dim, s.group));
  cudaStream_t stream;
  PENG_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  PENG_ASSIGN_OR_RETURN(const double copy_bw, CopyBandwidth(stream));

  std::vector<Case> cases;
  for (int batch : {1, 16, 64}) {
    for (int ctx : {512, 2048, 8192}) cases.push_back({"decode", batch, ctx, 1});
  }
  for (int len : {512, 2048, 4096}) cases.push_back({"prefill", 1, len, len});

  FILE* json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "w");
  std::printf("GPU: %s; device-to-device copy %.0f GB/s (read + write)\n", prop.name, copy_bw / 1e9);
  std::printf("| phase | batch | kv_len | q_len | time (us) | KV GB/s | %% of copy | TFLOP/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  const int num_heads = s.kv_heads * s.group;
  for (Case& c : cases) {
    PENG_RETURN_IF_ERROR(Annotate(Run(attn, s, c, stream), c.phase));
    const double kv_bytes = 2.0 * c.batch * s.kv_heads * double(c.kv_len) * s.head_dim * 2;
    // Causal: query t sees kv_len - q_len + t + 1 keys; 4 flops per (q, k, dim) (QK and PV).
    double pairs = 0;
    for (int t = 0; t < c.q_len; ++t) pairs += c.kv_len - c.q_len + t + 1;
    const double flops = 4.0 * c.batch * num_heads * s.head_dim * pairs;
    const double sec = c.ms * 1e-3;
    std::printf("| %s | %d | %d | %d | %.1f | %.0f | %.0f%% | %.2f |\n", c.phase, c.batch, c.kv_len,
                c.q_len, c.ms * 1e3, kv_bytes / sec / 1e9, 100.0 * kv_bytes / sec / copy_bw,
                flops / sec / 1e12);
    if (json) {
      std::fprintf(json,
                   "{\"gpu\": \"%s\", \"phase\": \"%s\", \"batch\": %d, \"kv_len\": %d, \"q_len\": %d, "
                   "\"head_dim\": %d, \"kv_heads\": %d, \"group\": %d, \"ms\": %.6f, \"kv_gbps\": %.3f, "
                   "\"copy_gbps\": %.3f, \"tflops\": %.4f}\n",
                   prop.name, c.phase, c.batch, c.kv_len, c.q_len, s.head_dim, s.kv_heads, s.group, c.ms,
                   kv_bytes / sec / 1e9, copy_bw / 1e9, flops / sec / 1e12);
    }
  }
  if (json) std::fclose(json);
  return absl::OkStatus();
}

}  // namespace
}  // namespace peng::cuda

int main(int argc, char** argv) {
  const absl::Status s = peng::cuda::Main(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "cuda_attention_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
