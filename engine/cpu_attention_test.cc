// CpuAttention. LeanKV's partitioned attention (over a KvCache with high and low lists) against
// the float64 reference over the union of both lists: outputs, and the importance scores added
// into the pages' score slots (max over the GQA group of each token's merged probability,
// summed over the queries at or after score_from), in prefill chunks and decodes, with lists
// long enough to split. Then bitwise consistency: a token alone and inside a chunk, every page
// size, and the AMX prompt path in any batch.
#include "engine/cpu_attention.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/reference.h"
#include "engine/simple_kv_cache.h"
#include "kernels/cpu/amx_attention.h"
#include "kernels/cpu/kv_store.h"

namespace peng {
namespace {

using kernels::KvFormat;

constexpr int kHeadDim = 64, kGroup = 3;

// n standard normal floats from seed.
std::vector<float> Normals(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& e : x) e = dist(rng);
  return x;
}

// One list of tokens of one format in pages of `per_page` tokens, with float copies of what
// the pages hold (the dequantized rows) for the reference.
struct List {
  KvFormat format;
  int per_page;
  kernels::KvPageSegments seg;
  std::vector<std::vector<uint8_t>> pages;
  std::vector<float> k, v;  // dequantized rows
  int64_t size() const { return static_cast<int64_t>(k.size() / kHeadDim); }

  List(KvFormat f, int tokens, int per_page_, std::mt19937& rng) : format(f), per_page(per_page_) {
    seg = kernels::PageSegmentsOf(f, kHeadDim, per_page);
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::vector<float> rk(kHeadDim), rv(kHeadDim), dk(kHeadDim), dv(kHeadDim);
    for (int t = 0; t < tokens; ++t) {
      if (t % per_page == 0) pages.emplace_back(seg.page_bytes, 0);
      for (int d = 0; d < kHeadDim; ++d) {
        rk[d] = n(rng);
        rv[d] = n(rng);
      }
      kernels::StoreKvToken(f, kHeadDim, per_page, rk.data(), rv.data(), t, t % per_page, pages.back().data());
      kernels::LoadKvToken(f, kHeadDim, per_page, pages.back().data(), t % per_page, dk.data(), dv.data());
      k.insert(k.end(), dk.begin(), dk.end());
      v.insert(v.end(), dv.begin(), dv.end());
    }
  }
  std::vector<kernels::KvSpan> Spans() {
    std::vector<kernels::KvSpan> spans;
    for (size_t p = 0; p < pages.size(); ++p) {
      uint8_t* page = pages[p].data();
      kernels::KvSpan s;
      s.k = page + seg.k;
      s.v = page + seg.v;
      s.k_meta = page + seg.k_meta;
      s.v_meta = page + seg.v_meta;
      s.scores = reinterpret_cast<float*>(page + seg.scores);
      s.format = format;
      s.key_lanes = kernels::KeyLanes(format, per_page);
      s.num_tokens = std::min<int64_t>(per_page, size() - static_cast<int64_t>(p) * per_page);
      spans.push_back(s);
    }
    return spans;
  }
  float Score(int64_t t) const {
    return reinterpret_cast<const float*>(pages[t / per_page].data() + seg.scores)[t % per_page];
  }
};

// One sequence, one kv-head: the high list (older tokens, then this step's `step` tokens) and
// the low list.
class ListsCache : public KvCache {
 public:
  ListsCache(List* high, List* low, int64_t step, int64_t score_from)
      : high_(high), low_(low), step_(step), score_from_(score_from) {}
  absl::Status Reserve(int64_t, int64_t) override { return absl::OkStatus(); }
  void Release(int64_t) override {}
  void Store(int64_t, int, int, int64_t, const float*, const float*) override {}
  void Spans(int64_t, int, int, int64_t, std::vector<kernels::KvSpan>*) const override {}
  KvFormat format() const override { return high_->format; }
  KvFormat low_format() const override { return low_->format; }
  bool partitioned() const override { return true; }
  void Partitions(int64_t, int, int, int64_t, KvPartitions* out) const override {
    out->high = high_->Spans();
    out->low = low_->Spans();
    out->num_high = high_->size();
    out->num_low = low_->size();
    out->high_before = high_->size() - step_;
    out->score_from = score_from_;
  }

 private:
  List *high_, *low_;
  int64_t step_, score_from_;
};

// Runs one chunk of `step` queries (logical positions start_pos..) over the lists and checks
// outputs and scores against the reference over [older high..., low..., step's tokens].
void Check(int64_t high_before, int64_t num_low, int64_t step, int64_t start_pos, int64_t score_from,
           uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "high_before " << high_before << " low " << num_low << " step " << step);
  std::mt19937 rng(seed);
  List high(KvFormat::kK8V4, static_cast<int>(high_before + step), 16, rng);
  List low(KvFormat::kK4V2, static_cast<int>(num_low), 23, rng);
  ModelConfig c;
  c.num_heads = kGroup;
  c.num_kv_heads = 1;
  c.head_dim = kHeadDim;
  CpuAttention attention(c);
  ASSERT_TRUE(attention.Prepare(KvFormat::kK8V4, KvFormat::kK4V2).ok());
  ListsCache cache(&high, &low, step, score_from);
  std::vector<int32_t> tokens(step, 1);
  ForwardBatch batch;
  batch.chunks.push_back({.seq = 0, .start_pos = start_pos, .tokens = tokens});
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> q(step * kGroup * kHeadDim), out(q.size(), NAN);
  for (float& x : q) x = n(rng);
  ThreadPool pool(2);
  attention.Run(pool, 0, batch, cache, q.data(), out.data());

  // Reference over the union, ordered so the causal mask is right: older tokens (high, low)
  // all before the step's tokens.
  std::vector<float> k, v;
  const auto append = [&](const List& l, int64_t from, int64_t to) {
    k.insert(k.end(), l.k.begin() + from * kHeadDim, l.k.begin() + to * kHeadDim);
    v.insert(v.end(), l.v.begin() + from * kHeadDim, l.v.begin() + to * kHeadDim);
  };
  append(high, 0, high_before);
  append(low, 0, num_low);
  append(high, high_before, high_before + step);
  kernels::ReferenceAttentionInput in;
  in.variant.head_dim = kHeadDim;
  in.variant.group = kGroup;
  in.variant.score_mod = kernels::ScoreMod::kScale;
  in.variant.mask_mod = kernels::MaskMod::kCausal;
  in.variant.reduction = kernels::Reduction::kSoftmax;
  in.q = q.data();
  in.num_q = step;
  in.q_pos0 = high_before + num_low;
  in.k = k.data();
  in.v = v.data();
  in.kv_len = high_before + num_low + step;
  in.params.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  const kernels::ReferenceAttentionOutput ref = kernels::ReferenceAttention(in);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref.out[i], 2e-4) << "out " << i;

  // Scores: union index u -> (list, index).
  const int64_t len = in.kv_len;
  for (int64_t u = 0; u < len; ++u) {
    double want = 0;
    for (int64_t t = 0; t < step; ++t) {
      if (start_pos + t < score_from) continue;
      double best = 0;
      for (int g = 0; g < kGroup; ++g) best = std::max(best, ref.probs[(t * kGroup + g) * len + u]);
      want += best;
    }
    const float got = u < high_before ? high.Score(u)
                      : u < high_before + num_low ? low.Score(u - high_before)
                                                  : high.Score(u - num_low);
    ASSERT_NEAR(got, want, 1e-4 + 1e-3 * want) << "token " << u;
  }
}

TEST(PartitionedAttention, PrefillChunkMatchesReference) {
  Check(/*high_before=*/50, /*num_low=*/40, /*step=*/20, /*start_pos=*/200, /*score_from=*/0, 1);
  // Only the chunk's last queries count (prefill: the last score_queries of the prompt).
  Check(50, 40, 40, 200, 225, 2);
  // No low list yet (one pass); more than one query block; all or only the last queries count.
  Check(30, 0, 70, 30, 0, 3);
  Check(30, 0, 70, 30, 75, 7);
}

TEST(PartitionedAttention, DecodeMatchesReferenceAcrossSplits) {
  Check(/*high_before=*/99, /*num_low=*/70, /*step=*/1, /*start_pos=*/500, /*score_from=*/0, 4);
  // Both lists longer than one decode split.
  Check(1500, 1100, 1, 4000, 0, 5);
  // Before score_from: nothing is added.
  Check(60, 10, 1, 100, 200, 6);
}

// A token's attention must not depend on how its prompt was chunked: the last token of a prompt
// comes alone (a 1-token chunk: the decode kernel, whose history is split every
// kDecodeSplitTokens) when the prefix cache holds the rest, or inside a chunk (the prefill
// kernel) otherwise. Chunks across and past the split bounds, dense f16 pages, SmolLM2's shape.
TEST(CpuAttentionTest, TokensGetBitwiseTheSameOutputAloneAndInsideAPrefillChunk) {
  ModelConfig c;
  c.num_heads = 9;
  c.num_kv_heads = 3;
  c.head_dim = kHeadDim;
  const int64_t split = CpuAttention::kDecodeSplitTokens, len = 2 * split + 300;
  CpuAttention attention(c);
  ASSERT_TRUE(attention.Prepare(KvFormat::kF16).ok());
  SimpleKvCache kv(1, c.num_kv_heads, kHeadDim, len, 16, KvFormat::kF16);
  ASSERT_TRUE(kv.Reserve(0, len).ok());
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> k(kHeadDim), v(kHeadDim);
  for (int64_t pos = 0; pos < len; ++pos) {
    for (int h = 0; h < c.num_kv_heads; ++h) {
      for (int d = 0; d < kHeadDim; ++d) {
        k[d] = n(rng);
        v[d] = n(rng);
      }
      kv.Store(0, 0, h, pos, k.data(), v.data());
    }
  }
  const int64_t row = c.num_heads * kHeadDim;
  ThreadPool pool(2);
  for (auto [start, count] : {std::pair<int64_t, int64_t>{split - 40, 80}, {2 * split - 7, 20}, {len - 45, 45}}) {
    SCOPED_TRACE(testing::Message() << "chunk at " << start << ", " << count << " tokens");
    std::vector<float> q(count * row), chunk_out(q.size(), NAN), alone(row, NAN);
    for (float& x : q) x = n(rng);
    std::vector<int32_t> tokens(count, 1);
    ForwardBatch batch;
    batch.chunks.push_back({.seq = 0, .start_pos = start, .tokens = tokens});
    attention.Run(pool, 0, batch, kv, q.data(), chunk_out.data());
    for (int64_t t = 0; t < count; ++t) {
      ForwardBatch one;
      one.chunks.push_back({.seq = 0, .start_pos = start + t, .tokens = {tokens.data(), 1}});
      attention.Run(pool, 0, one, kv, q.data() + t * row, alone.data());
      ASSERT_EQ(std::memcmp(alone.data(), chunk_out.data() + t * row, row * sizeof(float)), 0)
          << "position " << start + t;
    }
  }
}

// One sequence, one kv-head, one list of pages (not partitioned).
class ListCache : public KvCache {
 public:
  explicit ListCache(List* list) : list_(list) {}
  absl::Status Reserve(int64_t, int64_t) override { return absl::OkStatus(); }
  void Release(int64_t) override {}
  void Store(int64_t, int, int, int64_t, const float*, const float*) override {}
  void Spans(int64_t, int, int, int64_t len, std::vector<kernels::KvSpan>* out) const override {
    *out = list_->Spans();
    out->resize((len + list_->per_page - 1) / list_->per_page);
    if (!out->empty()) out->back().num_tokens = len - (static_cast<int64_t>(out->size()) - 1) * list_->per_page;
  }
  KvFormat format() const override { return list_->format; }

 private:
  List* list_;
};

// Tiles are fixed by position, not by page: every page size gives bitwise the same outputs as
// 16-token pages, dense and quantized, in prefill chunks and in decodes past the split bound.
TEST(CpuAttentionTest, EveryPageSizeGivesBitwiseTheSameOutput) {
  ModelConfig c;
  c.num_heads = kGroup;
  c.num_kv_heads = 1;
  c.head_dim = kHeadDim;
  const int64_t len = CpuAttention::kDecodeSplitTokens + 150;
  const int64_t row = c.num_heads * kHeadDim;
  const std::vector<float> q = Normals(len * row, 5);
  std::vector<int32_t> tokens(len, 1);
  ThreadPool pool(2);
  for (KvFormat format : {KvFormat::kF16, KvFormat::kF32, KvFormat::kBF16, KvFormat::kK8V8, KvFormat::kK4V2}) {
    CpuAttention attention(c);
    ASSERT_TRUE(attention.Prepare(format).ok());
    // Prefill [0, 200) and [200, len) in two chunks, then decodes at a few positions.
    auto outputs = [&](int per_page) {
      std::mt19937 rng(9);  // the same keys and values whatever the page size
      List list(format, static_cast<int>(len), per_page, rng);
      ListCache kv(&list);
      std::vector<float> out((len + 3) * row, NAN);
      for (auto [start, count] : {std::pair<int64_t, int64_t>{0, 200}, {200, len - 200}}) {
        ForwardBatch batch;
        batch.chunks.push_back({.seq = 0, .start_pos = start, .tokens = {tokens.data() + start, size_t(count)}});
        attention.Run(pool, 0, batch, kv, q.data() + start * row, out.data() + start * row);
      }
      int i = 0;
      for (int64_t pos : {int64_t{37}, int64_t{1023}, len - 1}) {
        ForwardBatch one;
        one.chunks.push_back({.seq = 0, .start_pos = pos, .tokens = {tokens.data(), 1}});
        attention.Run(pool, 0, one, kv, q.data() + pos * row, out.data() + (len + i++) * row);
      }
      return out;
    };
    const std::vector<float> want = outputs(16);
    for (int per_page : {1, 2, 4, 8, 32, 64, 128}) {  // engine.tokens_per_page: powers of two
      SCOPED_TRACE(testing::Message() << kernels::KvFormatName(format) << ", " << per_page << "-token pages");
      const std::vector<float> got = outputs(per_page);
      for (size_t i = 0; i < want.size(); i += row) {
        ASSERT_EQ(std::memcmp(want.data() + i, got.data() + i, row * sizeof(float)), 0)
            << (i / row < size_t(len) ? "prefill position " : "decode ") << i / row;
      }
    }
  }
}


// The AMX prompt path (where the CPU has AMX-BF16): a prompt token's output does not depend on
// what else is in the step, nor on how the step's converted histories were grouped to bound
// their memory (CpuAttention::kAmxHistoryBudget), nor on its chunk (a last token alone).
TEST(CpuAttentionTest, AmxPromptTokensAreBitwiseTheSameInAnyBatchOrGrouping) {
  if (!kernels::AmxAttentionSupports(KvFormat::kF16, kHeadDim)) GTEST_SKIP() << "no AMX-BF16 on this CPU";
  ModelConfig c;
  c.num_heads = 9;
  c.num_kv_heads = 3;
  c.head_dim = kHeadDim;
  const int64_t row = c.num_heads * kHeadDim, max_len = 1200;
  SimpleKvCache kv(1, c.num_kv_heads, kHeadDim, max_len, 16, KvFormat::kF16);
  std::mt19937 rng(13);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> k(kHeadDim), v(kHeadDim);
  // Sequence s: prompt_len[s] tokens of prompt, then generated ones up to stored[s].
  const int64_t prompt_len[] = {1100, 150, 90, 400, 50};
  const int64_t stored[] = {1100, 150, 90, 410, 121};
  for (int s = 0; s < 5; ++s) {
    ASSERT_TRUE(kv.Reserve(s, stored[s]).ok());
    for (int64_t pos = 0; pos < stored[s]; ++pos) {
      for (int h = 0; h < c.num_kv_heads; ++h) {
        for (int d = 0; d < kHeadDim; ++d) k[d] = n(rng), v[d] = n(rng);
        kv.Store(s, 0, h, pos, k.data(), v.data());
      }
    }
  }
  // A step: a prompt chunk; a prompt's last token alone; a whole short prompt; a resumed
  // sequence's chunk (prompt tokens, then generated ones); a decode of a prompt under 64.
  struct Chunk {
    int seq;
    int64_t start, count;
  };
  const Chunk chunks[] = {{0, 700, 400}, {1, 149, 1}, {2, 0, 90}, {3, 380, 30}, {4, 120, 1}};
  std::vector<float> q;
  for (const Chunk& ch : chunks) {
    for (int64_t i = 0; i < ch.count * row; ++i) q.push_back(n(rng));
  }
  std::vector<int32_t> tokens(400, 1);
  ThreadPool pool(2);
  const auto run = [&](CpuAttention& attention, std::initializer_list<int> which) {
    ForwardBatch batch;
    std::vector<float> qs, out;
    for (int i : which) {
      const Chunk& ch = chunks[i];
      batch.chunks.push_back({.seq = ch.seq, .start_pos = ch.start, .tokens = {tokens.data(), size_t(ch.count)},
                              .prompt_len = prompt_len[ch.seq]});
      int64_t first = 0;
      for (int j = 0; j < i; ++j) first += chunks[j].count;
      qs.insert(qs.end(), q.begin() + first * row, q.begin() + (first + ch.count) * row);
    }
    out.assign(qs.size(), NAN);
    attention.Run(pool, 0, batch, kv, qs.data(), out.data());
    return out;
  };
  CpuAttention grouped(c), one_group(c), vector_only(c);
  for (CpuAttention* a : {&grouped, &one_group, &vector_only}) ASSERT_TRUE(a->Prepare(KvFormat::kF16).ok());
  grouped.SetAmxPrompts(64, /*history_budget=*/1);  // every (chunk, kv-head) its own group
  one_group.SetAmxPrompts(64);
  const std::vector<float> all = run(one_group, {0, 1, 2, 3, 4});
  const std::vector<float> all_grouped = run(grouped, {0, 1, 2, 3, 4});
  ASSERT_EQ(std::memcmp(all.data(), all_grouped.data(), all.size() * sizeof(float)), 0);
  // Each chunk alone.
  int64_t first = 0;
  for (int i = 0; i < 5; ++i) {
    const std::vector<float> alone = run(one_group, {i});
    EXPECT_EQ(std::memcmp(alone.data(), all.data() + first * row, alone.size() * sizeof(float)), 0) << "chunk " << i;
    first += chunks[i].count;
  }
  // The AMX kernel did run: the vector kernels give other bits for the prompt tokens (and the
  // same for the decode of the short prompt and the resumed sequence's generated tokens).
  const std::vector<float> plain = run(vector_only, {0, 1, 2, 3, 4});
  EXPECT_NE(std::memcmp(plain.data(), all.data(), 400 * row * sizeof(float)), 0);
  const int64_t generated = 400 + 1 + 90 + 20;  // chunk 3's tokens at positions 400..409
  EXPECT_EQ(std::memcmp(plain.data() + generated * row, all.data() + generated * row, 11 * row * sizeof(float)), 0);
}

// LeanKV: a prompt chunk before the prompt's compression (no low list, nothing pruned) sends
// its tokens before score_from to the AMX path, bitwise as an unpartitioned cache over the same
// pages does; the queries whose probabilities count for the scores stay on the generated
// kernels, bitwise as without AMX, and add the same scores. With a low list, nothing takes AMX.
TEST(PartitionedAttention, PromptBeforeCompressionTakesTheAmxPathUpToTheScoredQueries) {
  if (!kernels::AmxAttentionSupports(KvFormat::kK8V4, kHeadDim)) GTEST_SKIP() << "no AMX-BF16 on this CPU";
  ModelConfig c;
  c.num_heads = kGroup;
  c.num_kv_heads = 1;
  c.head_dim = kHeadDim;
  const int64_t before = 300, step = 200, score_from = before + 150, row = kGroup * kHeadDim;
  const std::vector<float> q = Normals(step * row, 21);
  std::vector<int32_t> tokens(step, 1);
  ThreadPool pool(2);
  // The same pages every run (scores start at zero): a list built from the same seed.
  const auto run = [&](bool partitioned, int64_t amx_min_prompt, int64_t num_low, std::vector<float>* scores) {
    std::mt19937 rng(8);
    List high(KvFormat::kK8V4, static_cast<int>(before + step), 16, rng);
    List low(KvFormat::kK4V2, static_cast<int>(num_low), 16, rng);
    CpuAttention attention(c);
    EXPECT_TRUE((partitioned ? attention.Prepare(KvFormat::kK8V4, KvFormat::kK4V2) : attention.Prepare(KvFormat::kK8V4)).ok());
    attention.SetAmxPrompts(amx_min_prompt);
    ForwardBatch batch;
    batch.chunks.push_back({.seq = 0, .start_pos = before + num_low, .tokens = tokens, .prompt_len = before + num_low + step});
    std::vector<float> out(q.size(), NAN);
    ListsCache lists(&high, &low, step, score_from + num_low);
    ListCache one(&high);
    if (partitioned) {
      attention.Run(pool, 0, batch, lists, q.data(), out.data());
    } else {
      attention.Run(pool, 0, batch, one, q.data(), out.data());
    }
    if (scores != nullptr) {
      scores->clear();
      for (int64_t t = 0; t < high.size(); ++t) scores->push_back(high.Score(t));
    }
    return out;
  };
  std::vector<float> scores_amx, scores_vector;
  const std::vector<float> lean_amx = run(true, 64, 0, &scores_amx);
  const std::vector<float> lean_vector = run(true, 0, 0, &scores_vector);
  const std::vector<float> unpartitioned_amx = run(false, 64, 0, nullptr);
  const size_t amx_floats = (score_from - before) * row;
  EXPECT_EQ(std::memcmp(lean_amx.data(), unpartitioned_amx.data(), amx_floats * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(lean_amx.data(), lean_vector.data(), amx_floats * sizeof(float)), 0);  // AMX did run
  EXPECT_EQ(std::memcmp(lean_amx.data() + amx_floats, lean_vector.data() + amx_floats,
                        (lean_amx.size() - amx_floats) * sizeof(float)), 0);
  // The scored queries' tasks add their probabilities concurrently, in blocks cut from another
  // first query: the same sums up to the order of the float additions.
  ASSERT_EQ(scores_amx.size(), scores_vector.size());
  for (size_t i = 0; i < scores_amx.size(); ++i) ASSERT_NEAR(scores_amx[i], scores_vector[i], 1e-5f * scores_vector[i]) << i;
  float most = 0;
  for (float x : scores_amx) most = std::max(most, x);
  EXPECT_GT(most, 0.0f);  // the scored queries did add their probabilities
  // Close to the float path too (bfloat16 operands).
  for (size_t i = 0; i < amx_floats; ++i) ASSERT_NEAR(lean_amx[i], lean_vector[i], 3e-2) << i;
  // A low list (after a compression): every query on the generated kernels.
  const std::vector<float> with_low_amx = run(true, 64, 40, nullptr);
  const std::vector<float> with_low_vector = run(true, 0, 40, nullptr);
  EXPECT_EQ(std::memcmp(with_low_amx.data(), with_low_vector.data(), with_low_amx.size() * sizeof(float)), 0);
}

}  // namespace
}  // namespace peng
