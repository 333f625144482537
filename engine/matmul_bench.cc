// Prefill GEMM choice, measured: y[n x rows] = x[n x cols] · Wᵀ for a Q4_1 weight of SmolLM2's
// FFN shape, three ways: Peng's fused dequantizing kernel, dequantize + OpenBLAS sgemm, and
// dequantize + oneDNN sgemm (single thread each; the forward splits rows across threads).
// Also the int8 kernel's ceilings (BM_Int8Ceiling: the core's vpdpbusd peak, and the kernel's
// per-block op mix).
// Run: build/engine/matmul_bench  (results and the decision: engine/README.md)
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <random>
#include <vector>

#if defined(__AVX512VNNI__)
#include <immintrin.h>
#endif

#include "benchmark/benchmark.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/interleaved.h"
#include "kernels/cpu/matmul.h"

namespace peng {
namespace {

using kernels::GgmlType;

struct Problem {
  int64_t rows, cols = 576;
  std::vector<uint8_t> q;
  std::vector<float> x, y, dense;
  kernels::MatrixView w;
  explicit Problem(int64_t n, int64_t rows = 1536) : rows(rows) {
    std::mt19937 rng(1);
    const size_t row_bytes = kernels::RowBytes(GgmlType::kQ4_1, cols);
    q.resize(rows * row_bytes);
    for (auto& b : q) b = static_cast<uint8_t>(rng());
    auto* blocks = reinterpret_cast<kernels::BlockQ4_1*>(q.data());
    for (size_t i = 0; i < q.size() / sizeof(kernels::BlockQ4_1); ++i) {
      blocks[i].d = kernels::Fp32ToFp16(0.01f);
      blocks[i].m = kernels::Fp32ToFp16(-0.08f);
    }
    w = {GgmlType::kQ4_1, rows, cols, q.data(), row_bytes};
    x.resize(n * cols, 0.5f);
    y.resize(n * rows);
    dense.resize(rows * cols);
  }
};

void BM_Fused(benchmark::State& state) {
  const int64_t n = state.range(0);
  Problem p(n);
  std::vector<float> scratch(p.cols);
  for (auto _ : state) {
    kernels::MatMulRows(p.w, p.x.data(), p.cols, n, p.y.data(), p.rows, 0, p.rows, scratch.data());
    benchmark::DoNotOptimize(p.y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * p.rows * p.cols, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_Interleaved(benchmark::State& state) {
  const int64_t n = state.range(0);
  Problem p(n);
  std::vector<uint8_t> packed(kernels::InterleavedBytes(GgmlType::kQ4_1, p.rows, p.cols));
  kernels::Interleave(GgmlType::kQ4_1, p.q.data(), p.rows, p.cols, packed.data());
  kernels::MatrixView w = p.w;
  w.data = packed.data();
  w.interleaved = true;
  std::vector<float> scratch(p.cols);
  for (auto _ : state) {
    kernels::MatMulRows(w, p.x.data(), p.cols, n, p.y.data(), p.rows, 0, p.rows, scratch.data());
    benchmark::DoNotOptimize(p.y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * p.rows * p.cols, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// rows_scale > 1: that many FFN matrices stacked (96: 48 MB of Q4_1, more than the last-level
// cache), so the weights stream from memory as they do in the forward.
void BM_InterleavedInt8(benchmark::State& state, int64_t rows_scale) {
  const int64_t n = state.range(0);
  Problem p(n, 1536 * rows_scale);
  std::vector<uint8_t> packed(kernels::InterleavedBytes(GgmlType::kQ4_1, p.rows, p.cols));
  kernels::Interleave(GgmlType::kQ4_1, p.q.data(), p.rows, p.cols, packed.data());
  std::vector<int8_t> codes(n * p.cols);
  std::vector<float> scales(n * p.cols / 16);
  for (auto _ : state) {
    // The activation quantization is part of the cost (the forward does it once per input).
    kernels::QuantizeActivations(p.x.data(), p.cols, n, p.cols, codes.data(), scales.data());
    kernels::MatMulInterleavedInt8(GgmlType::kQ4_1, packed.data(), p.cols, codes.data(),
                                   scales.data(), n, p.y.data(), p.rows, 0, p.rows);
    benchmark::DoNotOptimize(p.y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * p.rows * p.cols, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// The AMX bf16 kernel (kernels/cpu/amx.h) on the same problems; the activations' conversion to
// bfloat16 is part of the cost, as the quantization is above.
void BM_InterleavedAmx(benchmark::State& state, int64_t rows_scale) {
  if (!kernels::HasAmxBf16()) return state.SkipWithError("this CPU has no AMX-BF16");
  const int64_t n = state.range(0);
  Problem p(n, 1536 * rows_scale);
  std::vector<uint8_t> packed(kernels::InterleavedBytes(GgmlType::kQ4_1, p.rows, p.cols));
  kernels::Interleave(GgmlType::kQ4_1, p.q.data(), p.rows, p.cols, packed.data());
  const int64_t padded = (n + kernels::kAmxTokenBlock - 1) / kernels::kAmxTokenBlock * kernels::kAmxTokenBlock;
  struct alignas(64) Line { uint8_t bytes[64]; };
  std::vector<Line> x_lines(padded * p.cols * 2 / 64 + 1), scratch(kernels::AmxScratchBytes(p.cols) / 64 + 1);
  auto* xb = reinterpret_cast<uint16_t*>(x_lines.data());
  for (auto _ : state) {
    kernels::ConvertToBf16(p.x.data(), p.cols, n, p.cols, xb);
    kernels::MatMulInterleavedAmx(GgmlType::kQ4_1, packed.data(), p.cols, xb, n, p.y.data(), p.rows,
                                  0, p.rows, reinterpret_cast<uint8_t*>(scratch.data()));
    benchmark::DoNotOptimize(p.y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * p.rows * p.cols, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

#if defined(__AVX512VNNI__)
// Ceilings for BM_InterleavedInt8, all in registers (no loads), counted as its GFLOP/s (2 per
// multiply-add):
//   vnni:      vpdpbusd alone, 12 independent chains: the core's int8 peak;
//   block_mix: the Q4_1 x int8 kernel's work per 32-column block of a 2-group x 6-token tile
//              (KernelInt8 in kernels/cpu/interleaved.cc): 96 vpdpbusd into 12 fresh sums, then
//              per sum a convert, a multiply (weight scale x activation scale) and two FMAs
//              (scaled dot, min x activation sum). The float work shares the multiply ports
//              with vpdpbusd, so this is the most the kernel can reach with its numerics.
// Opaque register barriers keep the compiler from folding the identical chains.
template <typename T>
inline void Opaque(T& v) { asm volatile("" : "+v"(v)); }

// GCC 12 flags _mm512_cvtepi32_ps's own _mm512_undefined_ps() operand here (a known false
// positive of -Wmaybe-uninitialized with the masked builtin).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

void BM_Int8Ceiling(benchmark::State& state, bool block_mix) {
  constexpr int kSums = 12;
  __m512i dot[kSums];
  __m512 acc[kSums];
  for (int i = 0; i < kSums; ++i) {
    dot[i] = _mm512_set1_epi32(i);
    acc[i] = _mm512_setzero_ps();
  }
  __m512i lo = _mm512_set1_epi8(3), hi = _mm512_set1_epi8(4), xl = _mm512_set1_epi8(5), xh = _mm512_set1_epi8(6);
  __m512 d = _mm512_set1_ps(0.5f), m = _mm512_set1_ps(0.25f), s0 = _mm512_set1_ps(0.1f), s1 = _mm512_set1_ps(0.2f);
  constexpr int64_t kBlocksPerIter = 1024;
  for (auto _ : state) {
    for (int64_t b = 0; b < kBlocksPerIter; ++b) {
      if (block_mix) {
        for (int i = 0; i < kSums; ++i) {
          dot[i] = _mm512_set1_epi32(i);
          Opaque(dot[i]);
        }
      }
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
#pragma GCC unroll 12
        for (int i = 0; i < kSums; ++i) {
          dot[i] = _mm512_dpbusd_epi32(dot[i], lo, xl);
          dot[i] = _mm512_dpbusd_epi32(dot[i], hi, xh);
        }
        Opaque(lo), Opaque(hi), Opaque(xl), Opaque(xh);
      }
      if (block_mix) {
#pragma GCC unroll 12
        for (int i = 0; i < kSums; ++i) {
          __m512 di = d;
          Opaque(di);
          acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i]), _mm512_mul_ps(di, s0), acc[i]);
          acc[i] = _mm512_fmadd_ps(m, s1, acc[i]);
        }
      }
    }
  }
  for (int i = 0; i < kSums; ++i) {
    benchmark::DoNotOptimize(dot[i]);
    benchmark::DoNotOptimize(acc[i]);
  }
  // 8 vpdpbusd per sum per block, 64 multiply-adds each.
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * 64 * 8 * kSums * kBlocksPerIter,
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
#pragma GCC diagnostic pop
BENCHMARK_CAPTURE(BM_Int8Ceiling, vnni, false);
BENCHMARK_CAPTURE(BM_Int8Ceiling, block_mix, true);
#endif

void BM_OpenBlas(benchmark::State& state) {
  openblas_set_num_threads(1);
  const int64_t n = state.range(0);
  Problem p(n);
  for (auto _ : state) {
    kernels::DequantizeRows(p.w, 0, p.rows, p.dense.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, p.rows, p.cols, 1.0f, p.x.data(), p.cols,
                p.dense.data(), p.cols, 0.0f, p.y.data(), p.rows);
    benchmark::DoNotOptimize(p.y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * p.rows * p.cols, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_OneDnn(benchmark::State& state) {
  const int64_t n = state.range(0);
  Problem p(n);
  for (auto _ : state) {
    kernels::DequantizeRows(p.w, 0, p.rows, p.dense.data());
    dnnl_sgemm('N', 'T', n, p.rows, p.cols, 1.0f, p.x.data(), p.cols, p.dense.data(), p.cols, 0.0f,
               p.y.data(), p.rows);
    benchmark::DoNotOptimize(p.y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * p.rows * p.cols, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

BENCHMARK(BM_Fused)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Arg(64)->Arg(512);
BENCHMARK(BM_Interleaved)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Arg(64)->Arg(512);
BENCHMARK_CAPTURE(BM_InterleavedInt8, l2, 1)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Arg(64)->Arg(512);
BENCHMARK_CAPTURE(BM_InterleavedInt8, dram, 96)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Arg(64)->Arg(160);
BENCHMARK_CAPTURE(BM_InterleavedAmx, l2, 1)->Arg(0)->Arg(1)->Arg(16)->Arg(32)->Arg(64)->Arg(128)->Arg(512);
BENCHMARK_CAPTURE(BM_InterleavedAmx, dram, 96)->Arg(16)->Arg(64)->Arg(128)->Arg(512);
BENCHMARK(BM_OpenBlas)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Arg(64)->Arg(512);
BENCHMARK(BM_OneDnn)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Arg(64)->Arg(512);

}  // namespace
}  // namespace peng

BENCHMARK_MAIN();
