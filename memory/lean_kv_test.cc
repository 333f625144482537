// LeanKV tables through KvManager: the page-size rule, prefill compression, the four cases of
// the decode rule, token data surviving moves and demotion, and page accounting under a
// randomized workload.
#include "memory/lean_kv.h"

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "base/thread_pool.h"
#include "kernels/cpu/kv_store.h"
#include "memory/kv_manager.h"

namespace peng::memory {
namespace {

constexpr int kHeadDim = 64;

// Key/value rows that identify their token: key = pos + d / 64, value = -pos - d / 64.
void RowsOf(int64_t pos, std::vector<float>* k, std::vector<float>* v) {
  k->resize(kHeadDim);
  v->resize(kHeadDim);
  for (int d = 0; d < kHeadDim; ++d) {
    (*k)[d] = static_cast<float>(pos) + d / 64.0f;
    (*v)[d] = -(*k)[d];
  }
}

class LeanKvTest : public ::testing::Test {
 protected:
  void Make(int layers, int heads, size_t budget, LeanKvOptions lean = {}) {
    shape_ = {layers, heads, kHeadDim};
    KvManagerOptions o;
    o.leankv = true;
    o.lean = lean;
    o.budget_bytes = budget;
    auto kv = KvManager::Create(shape_, o);
    ASSERT_TRUE(kv.ok()) << kv.status();
    kv_ = std::move(kv).value();
    lean_ = kv_->lean();
  }
  int Tables() const { return shape_.num_layers * shape_.num_kv_heads; }
  // The step the scheduler runs: grow, store the new tokens, set their scores, commit.
  void Step(SeqId seq, int64_t new_len, const std::function<float(int table, int64_t pos)>& score_of) {
    const Growth g{seq, new_len};
    ASSERT_TRUE(kv_->Grow({&g, 1}).ok());
    const int64_t from = lean_->Processed(seq);
    std::vector<float> k, v;
    const LeanPages p = Pages();
    for (int t = 0; t < Tables(); ++t) {
      for (int64_t pos = from; pos < new_len; ++pos) {
        RowsOf(pos, &k, &v);
        const LeanKv::StoreSlot at = lean_->SlotForStore(seq, t, pos);
        kernels::StoreKvToken(lean_->options().high, kHeadDim, p.high, k.data(), v.data(), pos, at.slot,
                              kv_->PageData(at.page));
      }
      // Scores: what attention would have added, scaled by the queries that saw the token.
      ForEachToken(seq, t, /*include_step=*/true, [&](bool, int64_t, float* score, int32_t pos) {
        const int64_t queries = new_len - std::max<int64_t>(pos, lean_->ScoreFrom(seq));
        *score = score_of(t, pos) * static_cast<float>(std::max<int64_t>(queries, 0));
      });
    }
    std::vector<int32_t> tokens(new_len, 7);
    kv_->CommitComputed(seq, tokens, new_len);
  }
  struct LeanPages {
    int high, low;
  };
  LeanPages Pages() const { return {lean_->pages().high_tokens, lean_->pages().low_tokens}; }
  // Calls fn(low, index, score slot, position) for every token of a table.
  template <class Fn>
  void ForEachToken(SeqId seq, int table, bool include_step, Fn fn) {
    const LeanHeadLists l = lean_->Lists(seq, table);
    const LeanPages p = Pages();
    const int64_t step = include_step ? lean_->Length(seq) - lean_->Processed(seq) : 0;
    for (const bool low : {false, true}) {
      const kernels::KvPageSegments seg = kernels::PageSegmentsOf(
          low ? lean_->options().low : lean_->options().high, kHeadDim, low ? p.low : p.high);
      const int64_t n = low ? l.num_low : l.num_high + step;
      const int per_page = low ? p.low : p.high;
      for (int64_t i = 0; i < n; ++i) {
        uint8_t* page = kv_->PageData(low ? l.LowPage(i / per_page) : l.HighPage(i / per_page));
        const int slot = static_cast<int>(i % per_page);
        float* score = reinterpret_cast<float*>(page + seg.scores) + slot;
        const int32_t pos = reinterpret_cast<const int32_t*>(page + seg.positions)[slot];
        fn(low, i, score, pos);
      }
    }
  }
  // Position -> tier (0 high, 1 low) of a table; checks each token's data against its position.
  std::map<int32_t, int> Tiers(SeqId seq, int table) {
    std::map<int32_t, int> tiers;
    const LeanHeadLists l = lean_->Lists(seq, table);
    const LeanPages p = Pages();
    std::vector<float> k(kHeadDim), v(kHeadDim), want_k, want_v;
    ForEachToken(seq, table, false, [&](bool low, int64_t i, float*, int32_t pos) {
      EXPECT_TRUE(tiers.emplace(pos, low ? 1 : 0).second) << "position " << pos << " twice";
      const int per_page = low ? p.low : p.high;
      kernels::LoadKvToken(low ? lean_->options().low : lean_->options().high, kHeadDim, per_page,
                           kv_->PageData(low ? l.LowPage(i / per_page) : l.HighPage(i / per_page)),
                           static_cast<int>(i % per_page), k.data(), v.data());
      RowsOf(pos, &want_k, &want_v);
      // 4-bit keys over a range of 1 in 2 groups: error <= 1/30; 2-bit values: <= 1/12.
      for (int d = 0; d < kHeadDim; ++d) {
        ASSERT_NEAR(k[d], want_k[d], low ? 0.04 : 0.01) << "pos " << pos;
        ASSERT_NEAR(v[d], want_v[d], low ? 0.1 : 0.04) << "pos " << pos;
      }
    });
    return tiers;
  }
  int64_t HeldPages(SeqId seq) const {
    int64_t pages = 0;
    for (int t = 0; t < Tables(); ++t) {
      const LeanHeadLists l = lean_->Lists(seq, t);
      pages += l.high_pages + l.low_pages;
    }
    return pages;
  }

  static LeanKvOptions WorkloadOptions() {
    LeanKvOptions o;
    o.alpha_prune = 0.3;
    o.alpha_quant = 0.9;
    o.window = 6;
    o.page_bytes_max = 1024;  // small pages: many of them, low lists that wrap the slot array
    return o;
  }
  void RandomWorkload(const std::function<void(int round, const std::map<SeqId, int64_t>& live)>& check);

  KvShape shape_;
  std::unique_ptr<KvManager> kv_;
  const LeanKv* lean_ = nullptr;
};

TEST(LeanKvPageSize, RuleTakesTheSmallestSizeWithTheLeastWorstLeftover) {
  const auto choice = ChoosePageSize(kHeadDim, kernels::KvFormat::kK8V4, kernels::KvFormat::kK4V2, 768, 2048);
  ASSERT_TRUE(choice.ok()) << choice.status();
  const auto leftover = [](size_t bytes, int* nh, int* nl) {
    *nh = *nl = 0;
    while (kernels::PageSegmentsOf(kernels::KvFormat::kK8V4, kHeadDim, *nh + 1).page_bytes <= bytes) ++*nh;
    while (kernels::PageSegmentsOf(kernels::KvFormat::kK4V2, kHeadDim, *nl + 1).page_bytes <= bytes) ++*nl;
    return std::max(bytes - kernels::PageSegmentsOf(kernels::KvFormat::kK8V4, kHeadDim, *nh).page_bytes,
                    bytes - kernels::PageSegmentsOf(kernels::KvFormat::kK4V2, kHeadDim, *nl).page_bytes);
  };
  int nh, nl;
  const size_t best = leftover(choice->page_bytes, &nh, &nl);
  EXPECT_EQ(nh, choice->high_tokens);
  EXPECT_EQ(nl, choice->low_tokens);
  for (size_t b = 768; b <= 2048; b += 32) {
    if (b < choice->page_bytes) {
      EXPECT_GT(leftover(b, &nh, &nl), best) << b;
    } else if (b > choice->page_bytes) {
      EXPECT_GE(leftover(b, &nh, &nl), best) << b;
    }
  }
  EXPECT_FALSE(ChoosePageSize(kHeadDim, kernels::KvFormat::kK8V4, kernels::KvFormat::kK4V2, 32, 64).ok());
}

TEST(LeanKvOptionsTest, RejectsBadOptions) {
  LeanKvOptions o;
  EXPECT_TRUE(ValidateLeanKv(o).ok());
  o.alpha_prune = 0.5;
  o.alpha_quant = 0.1;
  EXPECT_FALSE(ValidateLeanKv(o).ok());
  o = {};
  o.high = kernels::KvFormat::kF16;
  EXPECT_FALSE(ValidateLeanKv(o).ok());
  o = {};
  o.window = 0;
  EXPECT_FALSE(ValidateLeanKv(o).ok());
}

TEST_F(LeanKvTest, PrefillCompressionPrunesDemotesAndProtectsTheWindow) {
  LeanKvOptions o;
  o.alpha_prune = 0.5;
  o.alpha_quant = 1.0;
  o.window = 8;
  Make(1, 2, 1 << 20, o);
  const std::vector<int32_t> prompt(40, 1);
  kv_->MatchPrefix(1, prompt);
  // 40 tokens: uniform = 1/40. Table 0: multiples of 3 get 0.1/40 (pruned), of 3 plus 1 get
  // 0.8/40 (demoted), the rest 4/40 (kept). Table 1: all 4/40 (kept).
  Step(1, 40, [](int table, int64_t pos) {
    if (table == 1) return 4.0f / 40;
    return pos % 3 == 0 ? 0.1f / 40 : pos % 3 == 1 ? 0.8f / 40 : 4.0f / 40;
  });
  const std::map<int32_t, int> t0 = Tiers(1, 0);
  for (int32_t pos = 0; pos < 40; ++pos) {
    if (pos >= 32) {
      EXPECT_EQ(t0.at(pos), 0) << "window: " << pos;
    } else if (pos % 3 == 0) {
      EXPECT_FALSE(t0.contains(pos)) << pos;
    } else {
      EXPECT_EQ(t0.at(pos), pos % 3 == 1 ? 1 : 0) << pos;
    }
  }
  EXPECT_EQ(Tiers(1, 1).size(), 40u);
  const LeanKvStats st = lean_->stats();
  EXPECT_EQ(st.tokens_pruned, 11);   // 0, 3, ..., 30
  EXPECT_EQ(st.tokens_demoted, 11);  // 1, 4, ..., 31
  EXPECT_EQ(st.high_tokens + st.low_tokens, 40 + 40 - 11);
  EXPECT_EQ(kv_->free_pages() + HeldPages(1), kv_->total_pages());
  kv_->Free(1);
  EXPECT_EQ(kv_->free_pages(), kv_->total_pages());
  // Table 0 kept 29 of 40 (sparsity 0.275), table 1 all (0).
  EXPECT_EQ(kv_->TakeFinishedSparsity(), (std::vector<float>{0.275f, 0.0f}));
  EXPECT_TRUE(kv_->TakeFinishedSparsity().empty());
  EXPECT_EQ(lean_->stats().finished_tables, 2);
}

TEST_F(LeanKvTest, DecodeRuleCases) {
  LeanKvOptions o;
  o.alpha_prune = 0.5;
  o.alpha_quant = 1.0;
  o.window = 4;
  o.decide_every = 1;  // one decision per step, checked after each
  Make(1, 1, 1 << 20, o);
  const std::vector<int32_t> prompt(8, 1);
  kv_->MatchPrefix(1, prompt);
  std::map<int64_t, float> score;  // per position, the mean probability it receives
  for (int64_t p = 0; p < 8; ++p) score[p] = 1.0f;  // all important: nothing compressed
  auto fn = [&](int, int64_t pos) { return score.contains(pos) ? score[pos] : 1.0f; };
  Step(1, 8, fn);
  EXPECT_EQ(Tiers(1, 0).size(), 8u);
  // Case 4: everything important -> append.
  Step(1, 9, fn);
  EXPECT_EQ(Tiers(1, 0).size(), 9u);
  // Case 3 into a new low slot: token 2 falls below quant_thr (1/9) but not prune_thr.
  score[2] = 0.8f / 9;
  Step(1, 10, fn);
  EXPECT_EQ(Tiers(1, 0).at(2), 1);
  EXPECT_EQ(Tiers(1, 0).size(), 10u);
  // Case 2: token 3 falls below prune_thr and below the low candidate (token 2) -> evicted.
  score[3] = 0.01f;
  Step(1, 11, fn);
  EXPECT_FALSE(Tiers(1, 0).contains(3));
  EXPECT_EQ(Tiers(1, 0).size(), 10u);
  // Case 3 over R: token 2 (low) drops below prune_thr, token 4 (high) below quant_thr but
  // above token 2 -> 4 is demoted into 2's slot, 2 is gone.
  score[2] = 0.001f;
  score[4] = 0.05f;
  Step(1, 12, fn);
  const std::map<int32_t, int> tiers = Tiers(1, 0);
  EXPECT_FALSE(tiers.contains(2));
  EXPECT_EQ(tiers.at(4), 1);
  EXPECT_EQ(tiers.size(), 10u);
  EXPECT_EQ(lean_->stats().tokens_pruned, 2);
  EXPECT_EQ(lean_->stats().tokens_demoted, 2);
}

// A randomized workload: sequences start, step and end at random, with random scores. `check`
// runs after every round with the live sequences and their lengths.
void LeanKvTest::RandomWorkload(const std::function<void(int round, const std::map<SeqId, int64_t>& live)>& check) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 2.0f);
  std::map<SeqId, int64_t> live;  // seq -> length
  std::map<std::pair<SeqId, int64_t>, float> scores;
  auto fn = [&](SeqId seq) {
    return [&, seq](int table, int64_t pos) {
      auto [it, fresh] = scores.try_emplace({seq * 16 + table, pos}, 0.0f);
      if (fresh) it->second = u(rng) * u(rng) / static_cast<float>(pos + 1);
      return it->second;
    };
  };
  for (int round = 0; round < 300; ++round) {
    const SeqId seq = rng() % 5;
    if (!live.contains(seq)) {
      const int64_t prompt_len = 1 + rng() % 60;
      kv_->MatchPrefix(seq, std::vector<int32_t>(prompt_len, 3));
      live[seq] = 0;
      if (rng() % 2) {
        Step(seq, prompt_len, fn(seq));
        live[seq] = prompt_len;
      }
    } else if (rng() % 10 == 0) {
      kv_->Free(seq);
      live.erase(seq);
      continue;
    } else {
      const int64_t next = live[seq] == 0 ? lean_->PromptLength(seq) : live[seq] + 1 + rng() % 3;
      if (!kv_->CanGrow(std::vector<Growth>{{seq, next}})) {
        kv_->Free(seq);
        live.erase(seq);
        continue;
      }
      Step(seq, next, fn(seq));
      live[seq] = next;
    }
    check(round, live);
  }
}

TEST_F(LeanKvTest, RandomWorkloadKeepsPagesAndDataConsistent) {
  const LeanKvOptions o = WorkloadOptions();
  Make(2, 2, 4 << 20, o);
  RandomWorkload([&](int round, const std::map<SeqId, int64_t>& live) {
    int64_t held = 0;
    for (const auto& [s, len] : live) {
      held += HeldPages(s);
      for (int t = 0; t < Tables(); ++t) {
        const std::map<int32_t, int> tiers = Tiers(s, t);
        // The window is always kept at high precision.
        for (int64_t p = std::max<int64_t>(0, len - o.window); p < len; ++p) {
          ASSERT_TRUE(tiers.contains(static_cast<int32_t>(p)) && tiers.at(static_cast<int32_t>(p)) == 0)
              << "seq " << s << " table " << t << " pos " << p;
        }
        // Pages match the token counts exactly (no leaked or missing pages).
        const LeanHeadLists l = lean_->Lists(s, t);
        EXPECT_EQ(l.high_pages, (l.num_high + Pages().high - 1) / Pages().high);
        EXPECT_EQ(l.low_pages, (l.num_low + Pages().low - 1) / Pages().low);
      }
    }
    ASSERT_EQ(kv_->free_pages() + held, kv_->total_pages()) << "round " << round;
  });
  EXPECT_GT(lean_->stats().tokens_pruned, 0);
  EXPECT_GT(lean_->stats().tokens_demoted, 0);
}

// Commit's per-table work on a pool of threads (as the engine loop runs it) decides, moves and
// writes exactly what it does on one thread: the same lists after every round, the same bytes
// in every page, the same counts.
TEST_F(LeanKvTest, CompressionOnSeveralThreadsIsExactlyTheSerialOne) {
  const LeanKvOptions o = WorkloadOptions();
  std::vector<std::vector<int64_t>> lists[2];
  std::vector<uint8_t> memory[2];
  LeanKvStats stats[2];
  ThreadPool pool(2);
  for (int run = 0; run < 2; ++run) {
    Make(2, 2, 4 << 20, o);
    if (run == 1) {
      kv_->SetParallelFor([&pool](int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
        pool.ParallelFor(n, 1, fn);
      });
    }
    RandomWorkload([&](int, const std::map<SeqId, int64_t>& live) {
      std::vector<int64_t> round;
      for (const auto& [s, len] : live) {
        for (int t = 0; t < Tables(); ++t) {
          const LeanHeadLists l = lean_->Lists(s, t);
          round.insert(round.end(), {s, t, l.num_high, l.num_low, l.high_pages, l.low_pages});
          round.insert(round.end(), l.slots.begin(), l.slots.end());
        }
      }
      lists[run].push_back(std::move(round));
    });
    for (int32_t page = 0; page < kv_->total_pages(); ++page) {
      const uint8_t* d = kv_->PageData(page);
      memory[run].insert(memory[run].end(), d, d + lean_->pages().page_bytes);
    }
    stats[run] = lean_->stats();
  }
  ASSERT_EQ(lists[0].size(), lists[1].size());
  for (size_t r = 0; r < lists[0].size(); ++r) ASSERT_EQ(lists[0][r], lists[1][r]) << "round " << r;
  EXPECT_TRUE(memory[0] == memory[1]);
  EXPECT_EQ(stats[0].tokens_pruned, stats[1].tokens_pruned);
  EXPECT_EQ(stats[0].tokens_demoted, stats[1].tokens_demoted);
  EXPECT_GT(stats[1].tokens_demoted, 0);
}

}  // namespace
}  // namespace peng::memory
