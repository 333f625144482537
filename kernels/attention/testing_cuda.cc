// The CUDA half of the attention test harness: two sequences x two kv-heads per launch, pages
// in one device pool in reversed order (so the page table is really used), outputs poisoned.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/testing.h"

namespace peng::kernels {
namespace {

#define PENG_CUDA_ASSERT(expr)                                                               \
  do {                                                                                       \
    const cudaError_t err_ = (expr);                                                         \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_);               \
  } while (0)

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  ~DeviceBuffer() { cudaFree(ptr); }
};

constexpr int kSeqs = 2, kKvHeads = 2;

void RunCudaCase(const CudaAttentionKernel& kern, const AttentionVariant& v, const AttentionCase& c) {
  const int G = v.group, hd = v.head_dim, H = kKvHeads * G;
  const bool decode = v.phase == AttentionPhase::kDecode;
  // problems[s * kKvHeads + h]; sequence 1 is shorter.
  std::vector<AttentionProblem> probs;
  for (int s = 0; s < kSeqs; ++s) {
    AttentionCase cs = c;
    if (s == 1) {
      cs.kv_len = std::max(1, c.kv_len / 2 + 1);
      cs.q_len = decode ? 1 : std::min(c.q_len, cs.kv_len);
    }
    for (int h = 0; h < kKvHeads; ++h) {
      cs.seed = c.seed * 7 + s * kKvHeads + h;
      probs.push_back(MakeAttentionProblem(v, cs, /*key_rows=*/true));  // the CUDA pages' layout
    }
  }
  // ALiBi slopes belong to heads: every sequence uses kv-head h's slopes of sequence 0.
  std::vector<float> slopes(H);
  for (int h = 0; h < kKvHeads; ++h) {
    for (int g = 0; g < G; ++g) slopes[h * G + g] = probs[h].alibi_slopes[g];
    for (int s = 1; s < kSeqs; ++s) {
      probs[s * kKvHeads + h].alibi_slopes = probs[h].alibi_slopes;
      probs[s * kKvHeads + h].params.alibi_slopes = probs[s * kKvHeads + h].alibi_slopes.data();
    }
  }
  const int words = (c.kv_len + 63) / 64;
  std::vector<uint64_t> subset(static_cast<size_t>(kSeqs) * H * words, 0);
  std::vector<int32_t> q_start(kSeqs + 1, 0), kv_len(kSeqs);
  int max_pages = 0, max_q = 0, max_kv = 0, total_pages = 0;
  for (int s = 0; s < kSeqs; ++s) {
    const AttentionProblem& p0 = probs[s * kKvHeads];
    q_start[s + 1] = q_start[s] + p0.c.q_len;
    kv_len[s] = p0.c.kv_len;
    max_q = std::max(max_q, p0.c.q_len);
    max_kv = std::max(max_kv, p0.c.kv_len);
    max_pages = std::max(max_pages, static_cast<int>(p0.pages.size()));
    for (int h = 0; h < kKvHeads; ++h) {
      const AttentionProblem& p = probs[s * kKvHeads + h];
      total_pages += static_cast<int>(p.pages.size());
      for (int g = 0; g < G; ++g) {
        for (int w = 0; w < p.params.subset_words; ++w) {
          subset[(static_cast<size_t>(s) * H + h * G + g) * words + w] = p.head_subset[g * p.params.subset_words + w];
        }
      }
    }
  }
  const int tokens = q_start[kSeqs];
  const size_t page_bytes = probs[0].pages[0].size();
  std::vector<uint8_t> pool(page_bytes * total_pages);
  std::vector<int32_t> table(static_cast<size_t>(kSeqs) * kKvHeads * max_pages, -1);
  int next = total_pages;  // pages go into the pool from the end: page ids are not in order
  for (int sh = 0; sh < kSeqs * kKvHeads; ++sh) {
    for (size_t i = 0; i < probs[sh].pages.size(); ++i) {
      const int id = --next;
      std::memcpy(pool.data() + id * page_bytes, probs[sh].pages[i].data(), page_bytes);
      table[sh * max_pages + i] = id;
    }
  }
  std::vector<float> q(static_cast<size_t>(tokens) * H * hd);
  for (int s = 0; s < kSeqs; ++s) {
    for (int h = 0; h < kKvHeads; ++h) {
      const AttentionProblem& p = probs[s * kKvHeads + h];
      for (int t = 0; t < p.c.q_len; ++t) {
        std::copy_n(&p.q[t * G * hd], G * hd, &q[(static_cast<size_t>(q_start[s] + t) * H + h * G) * hd]);
      }
    }
  }

  DeviceBuffer<uint8_t> d_pool, d_ws;
  DeviceBuffer<int32_t> d_table, d_qs, d_kv;
  DeviceBuffer<float> d_q, d_out, d_lse, d_probs, d_slopes;
  DeviceBuffer<uint64_t> d_subset;
  PENG_CUDA_ASSERT(cudaMalloc(&d_pool.ptr, pool.size()));
  PENG_CUDA_ASSERT(cudaMemcpy(d_pool.ptr, pool.data(), pool.size(), cudaMemcpyHostToDevice));
  PENG_CUDA_ASSERT(cudaMalloc(&d_table.ptr, table.size() * 4));
  PENG_CUDA_ASSERT(cudaMemcpy(d_table.ptr, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  PENG_CUDA_ASSERT(cudaMalloc(&d_qs.ptr, q_start.size() * 4));
  PENG_CUDA_ASSERT(cudaMemcpy(d_qs.ptr, q_start.data(), q_start.size() * 4, cudaMemcpyHostToDevice));
  PENG_CUDA_ASSERT(cudaMalloc(&d_kv.ptr, kv_len.size() * 4));
  PENG_CUDA_ASSERT(cudaMemcpy(d_kv.ptr, kv_len.data(), kv_len.size() * 4, cudaMemcpyHostToDevice));
  PENG_CUDA_ASSERT(cudaMalloc(&d_q.ptr, q.size() * 4));
  PENG_CUDA_ASSERT(cudaMemcpy(d_q.ptr, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
  PENG_CUDA_ASSERT(cudaMalloc(&d_out.ptr, q.size() * 4));
  PENG_CUDA_ASSERT(cudaMemset(d_out.ptr, 0xff, q.size() * 4));  // NaN poison
  PENG_CUDA_ASSERT(cudaMalloc(&d_lse.ptr, static_cast<size_t>(tokens) * H * 4));
  PENG_CUDA_ASSERT(cudaMemset(d_lse.ptr, 0xff, static_cast<size_t>(tokens) * H * 4));
  PENG_CUDA_ASSERT(cudaMalloc(&d_slopes.ptr, slopes.size() * 4));
  PENG_CUDA_ASSERT(cudaMemcpy(d_slopes.ptr, slopes.data(), slopes.size() * 4, cudaMemcpyHostToDevice));
  PENG_CUDA_ASSERT(cudaMalloc(&d_subset.ptr, subset.size() * 8));
  PENG_CUDA_ASSERT(cudaMemcpy(d_subset.ptr, subset.data(), subset.size() * 8, cudaMemcpyHostToDevice));
  const size_t probs_n = static_cast<size_t>(kSeqs) * kKvHeads * max_kv;
  if (decode) {
    PENG_CUDA_ASSERT(cudaMalloc(&d_probs.ptr, probs_n * 4));
    PENG_CUDA_ASSERT(cudaMemset(d_probs.ptr, 0, probs_n * 4));
  }
  const size_t ws = CudaAttentionWorkspaceBytes(kSeqs, H, hd, max_kv, decode);
  PENG_CUDA_ASSERT(cudaMalloc(&d_ws.ptr, ws));

  CudaAttentionBatch b;
  b.num_seqs = kSeqs;
  b.num_kv_heads = kKvHeads;
  b.q = d_q.ptr;
  b.out = d_out.ptr;
  b.q_start = d_qs.ptr;
  b.kv_len = d_kv.ptr;
  b.kv = {d_pool.ptr, static_cast<int64_t>(page_bytes), c.page, d_table.ptr, max_pages};
  b.params = probs[0].params;
  b.params.alibi_slopes = d_slopes.ptr;
  b.params.head_subset = d_subset.ptr;
  b.params.subset_words = words;
  b.lse = d_lse.ptr;
  b.probs = d_probs.ptr;
  b.max_q_len = max_q;
  b.max_kv_len = max_kv;
  b.workspace = d_ws.ptr;
  b.workspace_bytes = ws;
  PENG_CUDA_ASSERT(static_cast<cudaError_t>(kern.launch(b, nullptr)));
  PENG_CUDA_ASSERT(cudaDeviceSynchronize());

  std::vector<float> out(q.size()), lse(static_cast<size_t>(tokens) * H), got_probs(decode ? probs_n : 0);
  PENG_CUDA_ASSERT(cudaMemcpy(out.data(), d_out.ptr, out.size() * 4, cudaMemcpyDeviceToHost));
  PENG_CUDA_ASSERT(cudaMemcpy(lse.data(), d_lse.ptr, lse.size() * 4, cudaMemcpyDeviceToHost));
  if (decode) PENG_CUDA_ASSERT(cudaMemcpy(got_probs.data(), d_probs.ptr, probs_n * 4, cudaMemcpyDeviceToHost));

  for (int s = 0; s < kSeqs; ++s) {
    for (int h = 0; h < kKvHeads; ++h) {
      const AttentionProblem& p = probs[s * kKvHeads + h];
      SCOPED_TRACE("sequence " + std::to_string(s) + " kv-head " + std::to_string(h));
      const ReferenceAttentionOutput r = ReferenceOf(p);
      std::vector<float> o, l;
      for (int t = 0; t < p.c.q_len; ++t) {
        const size_t row = static_cast<size_t>(q_start[s] + t) * H + h * G;
        o.insert(o.end(), &out[row * hd], &out[(row + G) * hd]);
        l.insert(l.end(), &lse[row], &lse[row + G]);
      }
      ExpectClose(o, r.out, kAttentionTol, "out");
      if (v.reduction == Reduction::kSoftmax) ExpectLse(l, r.lse);
      if (decode) {
        const float* pr = &got_probs[static_cast<size_t>(s * kKvHeads + h) * max_kv];
        ExpectClose(std::vector<float>(pr, pr + p.c.kv_len), ReferenceScores(p, r, 0), kAttentionTol, "probs");
      }
    }
  }
}

}  // namespace

void RunCudaAttentionCases(const AttentionVariant& v, std::span<const AttentionCase> cases) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device: run scripts/device-check.sh on a GPU machine";
  }
  const CudaAttentionKernel* kern = FindCudaAttention(v);
  ASSERT_NE(kern, nullptr) << NotBuiltMessage(v);
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(std::string(kern->symbol) + " kv_len=" + std::to_string(c.kv_len) + " q_len=" +
                 std::to_string(c.q_len) + " page=" + std::to_string(c.page) + " seed=" + std::to_string(c.seed));
    RunCudaCase(*kern, v, c);
  }
}

}  // namespace peng::kernels
