#include "kernels/attention/testing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "kernels/attention/reference.h"
#include "kernels/cpu/kv_store.h"

namespace peng::kernels {
namespace {

constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

bool IsDecode(const AttentionVariant& v) { return v.phase == AttentionPhase::kDecode; }

}  // namespace

ReferenceAttentionOutput ReferenceOf(const AttentionProblem& p) {
  ReferenceAttentionInput in;
  in.variant = p.variant;
  in.q = p.q.data();
  in.num_q = p.c.q_len;
  in.q_pos0 = p.q_pos0();
  in.k = p.k.data();
  in.v = p.v.data();
  in.kv_len = p.c.kv_len;
  in.params = p.params;
  return ReferenceAttention(in);
}

std::vector<double> ReferenceScores(const AttentionProblem& p, const ReferenceAttentionOutput& r, int t_begin) {
  const int G = p.variant.group;
  std::vector<double> s(p.c.kv_len, 0.0);
  for (int t = t_begin; t < p.c.q_len; ++t) {
    for (int j = 0; j < p.c.kv_len; ++j) {
      double best = 0;
      for (int g = 0; g < G; ++g) best = std::max(best, r.probs[(static_cast<int64_t>(t) * G + g) * p.c.kv_len + j]);
      s[j] += best;
    }
  }
  return s;
}

void ExpectLse(std::span<const float> got, std::span<const double> want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i])) {
      EXPECT_TRUE(std::isinf(got[i]) && got[i] < 0) << "lse[" << i << "] = " << got[i] << ", want -inf";
    } else {
      EXPECT_NEAR(got[i], want[i], kAttentionTol * std::max(1.0, std::abs(want[i]))) << "lse[" << i << "]";
    }
  }
}

namespace {

void RunCpuDecode(const CpuAttentionKernel& kern, AttentionProblem& p) {
  const int G = p.variant.group, hd = p.variant.head_dim, splits = p.c.splits;
  const int64_t kv_len = p.c.kv_len;
  std::vector<int64_t> bounds(splits + 1);
  for (int i = 0; i <= splits; ++i) bounds[i] = kv_len * i / splits;
  std::vector<float> out_parts(static_cast<size_t>(splits) * G * hd, kPoison), lse_parts(splits * G, kPoison);
  std::vector<std::vector<float>> head_probs(splits);
  std::vector<const float*> hp_ptrs(splits);
  for (int i = 0; i < splits; ++i) {
    head_probs[i].assign(G * (bounds[i + 1] - bounds[i]) + 1, kPoison);
    hp_ptrs[i] = head_probs[i].data();
    DecodeArgs a;
    a.q = p.q.data();
    a.spans = p.spans.data();
    a.num_spans = static_cast<int>(p.spans.size());
    a.kv_len = kv_len;
    a.q_pos = kv_len - 1;
    a.kv_begin = bounds[i];
    a.kv_end = bounds[i + 1];
    a.out = out_parts.data() + i * G * hd;
    a.lse = lse_parts.data() + i * G;
    a.head_probs = head_probs[i].data();
    a.params = p.params;
    kern.decode(a);
  }
  std::vector<float> out(G * hd, kPoison), lse(G, kPoison), probs(kv_len, 0.0f);
  CombineArgs c;
  c.num_splits = splits;
  c.out_parts = out_parts.data();
  c.lse_parts = lse_parts.data();
  c.out = out.data();
  c.lse = lse.data();
  c.head_probs = hp_ptrs.data();
  c.split_begin = bounds.data();
  c.probs = probs.data();
  kern.combine(c);

  const ReferenceAttentionOutput r = ReferenceOf(p);
  ExpectClose(out, r.out, kAttentionTol, "out");
  if (p.variant.reduction == Reduction::kSoftmax) ExpectLse(lse, r.lse);
  ExpectClose(probs, ReferenceScores(p, r, 0), kAttentionTol, "probs");
  for (int i = 0; i < splits; ++i) {  // the spare element past each split's probs stays untouched
    EXPECT_TRUE(std::isnan(head_probs[i].back())) << "head_probs of split " << i << " overran";
  }
}

void RunCpuPrefill(const CpuAttentionKernel& kern, AttentionProblem& p) {
  const int G = p.variant.group, hd = p.variant.head_dim, nq = p.c.q_len;
  const int probs_begin = std::max(0, nq - 3);
  std::vector<float> out(static_cast<size_t>(nq) * G * hd, kPoison), lse(nq * G, kPoison), probs(p.c.kv_len, 0.0f);
  PrefillArgs a;
  a.q = p.q.data();
  a.q_stride = G * hd;
  a.num_q = nq;
  a.q_pos0 = p.q_pos0();
  a.spans = p.spans.data();
  a.num_spans = static_cast<int>(p.spans.size());
  a.kv_len = p.c.kv_len;
  a.out = out.data();
  a.out_stride = G * hd;
  a.lse = lse.data();
  a.probs = probs.data();
  a.probs_q_begin = probs_begin;
  a.params = p.params;
  kern.prefill(a);

  const ReferenceAttentionOutput r = ReferenceOf(p);
  ExpectClose(out, r.out, kAttentionTol, "out");
  if (p.variant.reduction == Reduction::kSoftmax) ExpectLse(lse, r.lse);
  ExpectClose(probs, ReferenceScores(p, r, probs_begin), kAttentionTol, "probs");
}

}  // namespace

AttentionProblem MakeAttentionProblem(const AttentionVariant& v, const AttentionCase& c, bool key_rows) {
  AttentionProblem p;
  p.variant = v;
  p.c = c;
  std::mt19937 rng(c.seed);
  std::normal_distribution<float> nd;
  const int G = v.group, hd = v.head_dim;
  p.q.resize(static_cast<size_t>(c.q_len) * G * hd);
  for (float& x : p.q) x = nd(rng);
  std::vector<float> k(static_cast<size_t>(c.kv_len) * hd), vv(k.size());
  for (float& x : k) x = nd(rng);
  for (float& x : vv) x = nd(rng);
  // Store into pages (memory/'s layout for the format), then read back what the format holds.
  // The run-time quantized kernels (kQuantAny) get spans of different formats, which together
  // cover every bit width and group count for keys and values.
  static constexpr KvQuant kAnyFormats[] = {{8, 2, 2, 2}, {4, 4, 8, 1}, {2, 1, 4, 4}, {1, 2, 1, 4}, {8, 1, 4, 2}};
  p.k.resize(k.size());
  p.v.resize(vv.size());
  for (int start = 0, si = 0; start < c.kv_len; start += c.page, ++si) {
    const int n = std::min(c.page, c.kv_len - start);
    const KvFormat format = v.kv_format == KvFormat::kQuantAny
                                ? QuantFormat(kAnyFormats[si % std::size(kAnyFormats)])
                                : v.kv_format;
    const KvPageSegments seg = PageSegmentsOf(format, hd, c.page);
    std::vector<uint8_t>& page = p.pages.emplace_back(seg.page_bytes);
    const int lanes = key_rows ? 0 : KeyLanes(format, c.page);
    for (int t = 0; t < n; ++t) {
      const int j = start + t;
      if (IsQuantized(format)) {
        StoreKvToken(format, hd, c.page, &k[j * hd], &vv[j * hd], j, t, page.data());
        LoadKvToken(format, hd, c.page, page.data(), t, &p.k[j * hd], &p.v[j * hd]);
      } else {
        StoreKeyLanes(&k[j * hd], format, hd, lanes, t, page.data() + seg.k);
        StoreKvRow(&vv[j * hd], format, hd, page.data() + seg.v + t * seg.v_row);
        LoadKeyLanes(page.data() + seg.k, format, hd, lanes, t, &p.k[j * hd]);
        LoadKvRow(page.data() + seg.v + t * seg.v_row, format, hd, &p.v[j * hd]);
      }
    }
    KvSpan span;
    span.key_lanes = lanes;
    span.k = page.data() + seg.k;
    span.v = page.data() + seg.v;
    span.num_tokens = n;
    span.format = format;
    if (IsQuantized(format)) {
      span.k_meta = page.data() + seg.k_meta;
      span.v_meta = page.data() + seg.v_meta;
    }
    p.spans.push_back(span);
  }
  p.params.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  p.params.softcap = 1.5f;  // small enough that tanh bends most logits
  std::uniform_real_distribution<float> slope(0.01f, 0.5f);
  for (int g = 0; g < G; ++g) p.alibi_slopes.push_back(slope(rng));
  p.params.alibi_slopes = p.alibi_slopes.data();
  p.params.window = c.window;
  p.params.subset_words = (c.kv_len + 63) / 64;
  p.head_subset.resize(G * p.params.subset_words);
  for (uint64_t& w : p.head_subset) w = (static_cast<uint64_t>(rng()) << 32 | rng()) & (static_cast<uint64_t>(rng()) << 32 | rng());
  if (G > 1) std::fill_n(p.head_subset.begin(), p.params.subset_words, 0);  // head 0 admits nothing
  p.params.head_subset = p.head_subset.data();
  return p;
}

void ExpectClose(std::span<const float> got, std::span<const double> want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1.0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 5; ++i) {
    if (!(std::abs(got[i] - want[i]) <= tol * scale)) {  // NaN fails
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", reference " << want[i] << " (tolerance "
                    << tol * scale << ")";
      ++failures;
    }
  }
}

void RunCpuAttentionCases(const AttentionVariant& v, std::span<const AttentionCase> cases) {
  int isas_run = 0;
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (static_cast<int>(isa) > static_cast<int>(BestCpuIsa())) continue;
    const CpuAttentionKernel* kern = FindCpuAttention(v, isa);
    if (kern == nullptr) {
      // Non-x86 builds compile the portable instances only.
      if (isa == CpuIsa::kPortable) ADD_FAILURE() << NotBuiltMessage(v);
      continue;
    }
    ++isas_run;
    for (const AttentionCase& c : cases) {
      // Dense keys both ways: key-lane blocks (the CPU stores) and token rows.
      for (const bool key_rows : {false, true}) {
        if (key_rows && IsQuantized(v.kv_format)) continue;
        SCOPED_TRACE(std::string(kern->symbol) + " kv_len=" + std::to_string(c.kv_len) + " q_len=" +
                     std::to_string(c.q_len) + " page=" + std::to_string(c.page) + " splits=" +
                     std::to_string(c.splits) + " seed=" + std::to_string(c.seed) +
                     (key_rows ? " key rows" : " key lanes"));
        AttentionProblem p = MakeAttentionProblem(v, c, key_rows);
        if (IsDecode(v)) RunCpuDecode(*kern, p);
        else RunCpuPrefill(*kern, p);
      }
    }
  }
  EXPECT_GT(isas_run, 0);
}

}  // namespace peng::kernels
