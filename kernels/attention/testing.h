// Test harness for generated attention variants (used by the generated tests in
// build/kernels/gen/attention_*_test.cc and by the attention benchmark). A case is one random
// problem — queries, keys and values drawn fresh from its seed, stored in pages of the
// variant's KV format — checked against the float64 reference with the outputs poisoned (NaN)
// before every run, so an element the kernel fails to write fails the test.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/attention/args.h"
#include "kernels/attention/dispatch.h"
#include "kernels/attention/reference.h"
#include "kernels/attention/variant.h"

namespace peng::kernels {

struct AttentionCase {
  int kv_len = 1;
  int q_len = 1;       // decode cases have 1
  int page = 16;       // tokens per page (span)
  int splits = 1;      // decode: number of split-KV partials
  int window = 0;      // sliding window
  uint32_t seed = 1;
};

// One (sequence, kv-head) problem. K/V live in `pages` in memory/'s page layout (keys, then
// V rows); k/v hold the same values as floats (after rounding to the format).
struct AttentionProblem {
  AttentionVariant variant;
  AttentionCase c;
  std::vector<float> q;                        // [q_len x group x head_dim]
  std::vector<float> k, v;                     // [kv_len x head_dim]
  std::vector<std::vector<uint8_t>> pages;
  std::vector<KvSpan> spans;
  std::vector<float> alibi_slopes;             // [group]
  std::vector<uint64_t> head_subset;           // [group x words]
  AttentionParams params;
  int64_t q_pos0() const { return c.kv_len - c.q_len; }
};
// Dense keys are stored in key-lane blocks (what the CPU stores write) unless key_rows is set
// (token rows: the CUDA worker's pages; the CPU kernels read both).
AttentionProblem MakeAttentionProblem(const AttentionVariant& v, const AttentionCase& c, bool key_rows = false);

// Runs every case on every ISA this CPU supports (all of them must have been built).
void RunCpuAttentionCases(const AttentionVariant& v, std::span<const AttentionCase> cases);
// Runs every case on the GPU (two sequences and two kv-heads per launch); skips without one.
void RunCudaAttentionCases(const AttentionVariant& v, std::span<const AttentionCase> cases);

// The float64 reference of a problem, and its importance scores: Σ over query rows
// t ≥ t_begin of the max over the group of each token's probability.
ReferenceAttentionOutput ReferenceOf(const AttentionProblem& p);
std::vector<double> ReferenceScores(const AttentionProblem& p, const ReferenceAttentionOutput& r, int t_begin);

// Tolerance of the generated kernels against the reference, relative to max(1, max|ref|).
inline constexpr double kAttentionTol = 2e-4;

// gtest expectations: |got − want| ≤ tol·max(1, max|want|) elementwise (NaN fails).
void ExpectClose(std::span<const float> got, std::span<const double> want, double tol, const char* what);
// lse rows: −inf where the reference has −inf, else within kAttentionTol.
void ExpectLse(std::span<const float> got, std::span<const double> want);

}  // namespace peng::kernels
