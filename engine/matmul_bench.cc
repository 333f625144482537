// Prefill GEMM choice, measured: y[n x rows] = x[n x cols] · Wᵀ for a Q4_1 weight of SmolLM2's
// FFN shape, three ways: Peng's fused dequantizing kernel, dequantize + OpenBLAS sgemm, and
// dequantize + oneDNN sgemm (single thread each; the forward splits rows across threads).
// Run: build/engine/matmul_bench  (results and the decision: engine/README.md)
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <random>
#include <vector>

#include "benchmark/benchmark.h"
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
BENCHMARK(BM_OpenBlas)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Arg(64)->Arg(512);
BENCHMARK(BM_OneDnn)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Arg(64)->Arg(512);

}  // namespace
}  // namespace peng

BENCHMARK_MAIN();
