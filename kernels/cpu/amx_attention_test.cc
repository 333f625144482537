#include "kernels/cpu/amx_attention.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/testing.h"

namespace peng::kernels {
namespace {

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using History = std::unique_ptr<uint8_t, AlignedFree>;

History Convert(const AttentionProblem& p, int64_t kv_len, int64_t piece) {
  const size_t bytes = AmxHistoryBytes(kv_len, p.variant.head_dim);
  History h(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
  std::memset(h.get(), 0xff, bytes);  // NaN-ish bytes: every byte read must have been written
  for (int64_t b = 0; b < kv_len; b += piece) {
    AmxConvertHistory(p.spans.data(), static_cast<int>(p.spans.size()), p.variant.kv_format, p.variant.head_dim,
                      kv_len, b, std::min(kv_len, b + piece), h.get());
  }
  return h;
}

// Rows [row_begin, row_end) of the problem's queries, in calls of `rows_per_call` rows.
std::vector<float> RunRows(const AttentionProblem& p, const uint8_t* history, int64_t kv_len, int64_t row_begin,
                       int64_t row_end, int64_t rows_per_call) {
  const int G = p.variant.group, hd = p.variant.head_dim;
  std::vector<float> out(static_cast<size_t>(p.c.q_len) * G * hd, std::nanf(""));
  for (int64_t r = row_begin; r < row_end; r += rows_per_call) {
    AmxPrefillArgs a;
    a.q = p.q.data();
    a.q_stride = int64_t{G} * hd;
    a.q_pos0 = p.q_pos0();
    a.group = G;
    a.head_dim = hd;
    a.row_begin = r;
    a.row_end = std::min(row_end, r + rows_per_call);
    a.history = history;
    a.kv_len = kv_len;
    a.out = out.data();
    a.out_stride = int64_t{G} * hd;
    a.scale = p.params.scale;
    AmxPrefillAttention(a);
  }
  return out;
}

AttentionVariant Variant(KvFormat format, int head_dim, int group) {
  AttentionVariant v;
  v.phase = AttentionPhase::kPrefill;
  v.kv_format = format;
  v.head_dim = head_dim;
  v.group = group;
  return v;
}

// Against the float64 reference: bfloat16 queries, keys, values and probabilities.
TEST(AmxAttentionTest, MatchesTheReference) {
  if (!AmxAttentionSupports(KvFormat::kF16, 64)) GTEST_SKIP() << "no AMX-BF16 on this CPU";
  struct Case {
    KvFormat format;
    int head_dim, group, kv_len, q_len, page;
    bool key_rows;
    double tol = 5e-3;  // bfloat16 rounds at 2^-9 ≈ 2e-3 relative
  };
  const Case cases[] = {
      {KvFormat::kF16, 64, 3, 100, 100, 16, false}, {KvFormat::kF16, 64, 3, 300, 37, 16, false},
      {KvFormat::kF16, 64, 1, 70, 70, 5, false},    {KvFormat::kBF16, 64, 4, 129, 64, 16, false},
      {KvFormat::kF32, 128, 2, 200, 50, 32, false}, {KvFormat::kF16, 128, 4, 96, 96, 16, true},
      {KvFormat::kF16, 64, 3, 1, 1, 16, false},     {KvFormat::kK8V8, 64, 3, 150, 150, 16, false},
      {KvFormat::kK4V2, 128, 2, 90, 40, 16, false},
      // Spans of every bit width, 1-bit keys among them: their groups' values are large, so
      // are the scores, and a bfloat16 q·k errs in proportion (about 1% here).
      {KvFormat::kQuantAny, 64, 3, 200, 70, 16, false, 2e-2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "format " << static_cast<int>(c.format) << " hd " << c.head_dim << " group "
                                    << c.group << " kv " << c.kv_len << " q " << c.q_len << " page " << c.page
                                    << (c.key_rows ? " key rows" : ""));
    const AttentionProblem p = MakeAttentionProblem(Variant(c.format, c.head_dim, c.group),
                                                    {.kv_len = c.kv_len, .q_len = c.q_len, .page = c.page}, c.key_rows);
    const History h = Convert(p, c.kv_len, c.kv_len);
    const std::vector<float> got = RunRows(p, h.get(), c.kv_len, 0, int64_t{c.q_len} * c.group, 16);
    const ReferenceAttentionOutput want = ReferenceOf(p);
    ExpectClose(got, want.out, c.tol, "out");
  }
}

void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) {
    ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0) << "element " << i << ": " << got[i] << " vs " << want[i];
  }
}

// A row's result depends on nothing but its query, position and history: not on the rows that
// share its tile, the calls the rows were split into, the pieces the history was converted in,
// or a history that ends right after the row (its prompt chunked there).
TEST(AmxAttentionTest, ARowIsBitwiseTheSameHoweverItIsBatchedOrChunked) {
  if (!AmxAttentionSupports(KvFormat::kF16, 64)) GTEST_SKIP() << "no AMX-BF16 on this CPU";
  for (const int page : {16, 3}) {
    const int G = 3, hd = 64, kv_len = 150, q_len = 150;
    const AttentionProblem p =
        MakeAttentionProblem(Variant(KvFormat::kF16, hd, G), {.kv_len = kv_len, .q_len = q_len, .page = page, .seed = 7});
    const History whole = Convert(p, kv_len, kv_len);
    const int64_t rows = int64_t{q_len} * G;
    const std::vector<float> all = RunRows(p, whole.get(), kv_len, 0, rows, 16);
    const History pieces = Convert(p, kv_len, 64);
    ExpectSameBits(RunRows(p, pieces.get(), kv_len, 0, rows, 7), all, 0, all.size());
    ExpectSameBits(RunRows(p, whole.get(), kv_len, 5, rows, 16), all, 5 * hd, all.size());
    for (const int t : {0, 1, 31, 32, 33, 100, 149}) {
      // The prompt chunked after token t: its history ends there.
      const History shorter = Convert(p, t + 1, 32);
      const std::vector<float> alone = RunRows(p, shorter.get(), t + 1, int64_t{t} * G, int64_t{t + 1} * G, 1);
      ExpectSameBits(alone, all, int64_t{t} * G * hd, int64_t{t + 1} * G * hd);
    }
  }
}

}  // namespace
}  // namespace peng::kernels
