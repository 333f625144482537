#include "memory/kv_manager.h"

#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peng::memory {
namespace {

using ::testing::ElementsAre;

// 2 layers x 2 kv-heads = 4 pages per block; 4 tokens per page; f32 with head_dim 4 gives
// pages of 2 * 4 * 4 * 4 = 128 bytes.
constexpr KvShape kShape = {.num_layers = 2, .num_kv_heads = 2, .head_dim = 4};
constexpr int kTpp = 4;
constexpr size_t kPageBytes = 128;
constexpr int64_t kPpb = 4;

KvManagerOptions Options(int64_t blocks, bool prefix_caching = true) {
  KvManagerOptions o;
  o.budget_bytes = blocks * kPpb * kPageBytes;
  o.format = kernels::KvFormat::kF32;
  o.tokens_per_page = kTpp;
  o.enable_prefix_caching = prefix_caching;
  return o;
}

std::vector<int32_t> Iota(int n, int32_t first = 100) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

// Grows `seq` to `len` tokens alone.
absl::Status GrowTo(KvManager& kv, SeqId seq, int64_t len) {
  const Growth g{seq, len};
  return kv.Grow({&g, 1});
}

// Admits a prompt as the scheduler does: match, grow to the prompt, "compute" it, commit.
int64_t Admit(KvManager& kv, SeqId seq, const std::vector<int32_t>& prompt, int64_t prompt_path = 0) {
  const int64_t cached = kv.MatchPrefix(seq, prompt, prompt_path);
  EXPECT_TRUE(GrowTo(kv, seq, prompt.size()).ok());
  kv.CommitComputed(seq, prompt, prompt.size(), prompt_path);
  return cached;
}

std::set<int32_t> AllPages(const KvManager& kv, SeqId seq) {
  std::set<int32_t> pages;
  for (int l = 0; l < kShape.num_layers; ++l) {
    for (int h = 0; h < kShape.num_kv_heads; ++h) {
      for (const int32_t p : kv.PageTable(seq, l, h)) pages.insert(p);
    }
  }
  return pages;
}

TEST(KvManagerTest, SizesFollowShapeAndFormat) {
  KvManager kv(kShape, Options(10));
  EXPECT_EQ(kv.page_bytes(), kPageBytes);
  EXPECT_EQ(kv.total_pages(), 40);
  EXPECT_EQ(kv.free_pages(), 40);
  EXPECT_EQ(kv.pages_per_block(), kPpb);
  EXPECT_EQ(kv.max_tokens(), 10 * kTpp);
  EXPECT_DOUBLE_EQ(kv.bytes_per_token(), 128.0 * 4 / 4);
  EXPECT_DOUBLE_EQ(kv.usage(), 0.0);

  KvManagerOptions f16 = Options(10);
  f16.format = kernels::KvFormat::kF16;
  KvManager half(kShape, f16);
  EXPECT_EQ(half.page_bytes(), 64u);
  EXPECT_EQ(half.total_pages(), 80);  // same budget, half the page size
}

TEST(KvManagerTest, CreateRejectsBadConfig) {
  EXPECT_TRUE(KvManager::Create(kShape, Options(1)).ok());
  KvShape no_heads = kShape;
  no_heads.num_kv_heads = 0;
  EXPECT_EQ(KvManager::Create(no_heads, Options(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  KvManagerOptions zero_tpp = Options(1);
  zero_tpp.tokens_per_page = 0;
  EXPECT_EQ(KvManager::Create(kShape, zero_tpp).status().code(),
            absl::StatusCode::kInvalidArgument);
  KvManagerOptions tiny = Options(1);
  tiny.budget_bytes = kPpb * kPageBytes - 1;  // less than one block
  const auto status = KvManager::Create(kShape, tiny).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("fewer than one block"));
}

TEST(KvManagerTest, CapacityQuestionsHaveNoSideEffects) {
  KvManager kv(kShape, Options(4));
  EXPECT_EQ(kv.PagesToGrow(1, 0), 0);
  EXPECT_EQ(kv.PagesToGrow(1, 1), kPpb);
  EXPECT_EQ(kv.PagesToGrow(1, kTpp), kPpb);
  EXPECT_EQ(kv.PagesToGrow(1, kTpp + 1), 2 * kPpb);
  const std::vector<Growth> fits = {{1, 8}, {2, 8}};
  const std::vector<Growth> too_big = {{1, 8}, {2, 9}};
  EXPECT_TRUE(kv.CanGrow(fits));
  EXPECT_FALSE(kv.CanGrow(too_big));
  EXPECT_FALSE(kv.Has(1));
  EXPECT_EQ(kv.free_pages(), 16);

  ASSERT_TRUE(GrowTo(kv, 1, 5).ok());
  EXPECT_EQ(kv.Length(1), 2 * kTpp);  // room, in whole blocks
  EXPECT_EQ(kv.PagesToGrow(1, 8), 0);
  EXPECT_EQ(kv.PagesToGrow(1, 9), kPpb);
  EXPECT_EQ(kv.PagesToGrow(1, 3), 0);  // shrinking takes nothing
  EXPECT_EQ(kv.free_pages(), 8);
}

TEST(KvManagerTest, GrowIsAllOrNothing) {
  KvManager kv(kShape, Options(4));
  ASSERT_TRUE(GrowTo(kv, 1, 4).ok());
  const auto table_before = std::vector<int32_t>(kv.PageTable(1, 1, 1).begin(),
                                                 kv.PageTable(1, 1, 1).end());
  const std::vector<Growth> step = {{1, 8}, {2, 12}};  // 1 + 3 blocks > 3 free
  const absl::Status s = kv.Grow(step);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("needs 16 pages, 12 free"));
  EXPECT_EQ(kv.free_pages(), 12);
  EXPECT_EQ(kv.Length(1), 4);
  EXPECT_FALSE(kv.Has(2));
  EXPECT_THAT(kv.PageTable(1, 1, 1), ::testing::ElementsAreArray(table_before));

  const std::vector<Growth> ok_step = {{1, 8}, {2, 8}};
  EXPECT_TRUE(kv.Grow(ok_step).ok());
  EXPECT_EQ(kv.free_pages(), 0);
  EXPECT_DOUBLE_EQ(kv.usage(), 1.0);
}

TEST(KvManagerTest, GrowRejectsBadSteps) {
  KvManager kv(kShape, Options(4));
  const std::vector<Growth> twice = {{1, 4}, {1, 8}};
  EXPECT_EQ(kv.Grow(twice).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GrowTo(kv, 1, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(kv.Has(1));
  EXPECT_EQ(kv.free_pages(), 16);
}

TEST(KvManagerTest, PageTablesAreDisjointAndGrowTogether) {
  KvManager kv(kShape, Options(8));
  const std::vector<Growth> step = {{1, 9}, {2, 4}, {3, 0}};
  ASSERT_TRUE(kv.Grow(step).ok());
  EXPECT_TRUE(kv.Has(3));
  EXPECT_EQ(kv.Length(3), 0);
  std::set<int32_t> seen;
  for (const SeqId seq : {1, 2, 3}) {
    for (int l = 0; l < 2; ++l) {
      for (int h = 0; h < 2; ++h) {
        const auto table = kv.PageTable(seq, l, h);
        EXPECT_EQ(static_cast<int64_t>(table.size()) * kTpp, kv.Length(seq));
        for (const int32_t p : table) EXPECT_TRUE(seen.insert(p).second) << p;
      }
    }
  }
  EXPECT_EQ(seen.size(), 4u * kPpb);
  EXPECT_TRUE(kv.PageTable(99, 0, 0).empty());

  // Growing again appends and keeps the existing entries.
  const auto before = std::vector<int32_t>(kv.PageTable(2, 0, 1).begin(),
                                           kv.PageTable(2, 0, 1).end());
  ASSERT_TRUE(GrowTo(kv, 2, 5).ok());
  const auto after = kv.PageTable(2, 0, 1);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0], before[0]);
  EXPECT_FALSE(seen.count(after[1]));
}

TEST(KvManagerTest, PageLayoutKeysThenValues) {
  KvManager kv(kShape, Options(2));
  ASSERT_TRUE(GrowTo(kv, 1, 6).ok());
  // Token 5 of layer 1, head 0: page table entry 1, row 1 of the K and V halves.
  const int32_t page = kv.PageTable(1, 1, 0)[5 / kTpp];
  float* k = reinterpret_cast<float*>(kv.PageData(page)) + (5 % kTpp) * kShape.head_dim;
  float* v = reinterpret_cast<float*>(kv.PageData(page)) + (kTpp + 5 % kTpp) * kShape.head_dim;
  EXPECT_EQ(reinterpret_cast<uint8_t*>(v) - kv.PageData(page),
            static_cast<ptrdiff_t>((kTpp + 1) * kShape.head_dim * sizeof(float)));
  EXPECT_LT(reinterpret_cast<uint8_t*>(v + kShape.head_dim) - kv.PageData(page),
            static_cast<ptrdiff_t>(kv.page_bytes() + 1));
  k[0] = 1.5f;
  v[3] = -2.5f;
  const KvManager& ro = kv;
  EXPECT_EQ(reinterpret_cast<const float*>(ro.PageData(page))[(5 % kTpp) * 4], 1.5f);
}

TEST(KvManagerTest, FreeReturnsPagesAndUsageFollows) {
  KvManager kv(kShape, Options(4, /*prefix_caching=*/false));
  ASSERT_TRUE(GrowTo(kv, 1, 8).ok());
  ASSERT_TRUE(GrowTo(kv, 2, 4).ok());
  EXPECT_EQ(kv.free_pages(), 4);
  EXPECT_DOUBLE_EQ(kv.usage(), 0.75);
  kv.Free(1);
  EXPECT_FALSE(kv.Has(1));
  EXPECT_EQ(kv.Length(1), 0);
  EXPECT_EQ(kv.free_pages(), 12);
  EXPECT_DOUBLE_EQ(kv.usage(), 0.25);
  kv.Free(1);  // unknown: nothing happens
  kv.Free(2);
  EXPECT_DOUBLE_EQ(kv.usage(), 0.0);
  ASSERT_TRUE(GrowTo(kv, 3, 16).ok());  // the whole pool again
  EXPECT_EQ(AllPages(kv, 3).size(), 16u);
}

// Blocks computed on the prompt path (other kernels) are kept apart from blocks computed the
// other way: a block matches only a lookup that would compute the same positions on that path.
TEST(KvManagerTest, PrefixCacheKeepsPromptPathBlocksApart) {
  KvManager kv(kShape, Options(16));
  const std::vector<int32_t> tokens = Iota(13);  // full blocks [0,4) [4,8) [8,12)
  // Computed with its first 6 positions on the prompt path (a prompt of 6, then 7 generated).
  EXPECT_EQ(Admit(kv, 1, tokens, /*prompt_path=*/6), 0);
  EXPECT_EQ(kv.MatchPrefix(2, tokens, 6), 12);  // the same split: every block
  EXPECT_EQ(kv.MatchPrefix(3, tokens, 0), 0);   // all on the other path: block 0 differs
  EXPECT_EQ(kv.MatchPrefix(4, tokens, 13), 4);  // all prompt: block 1 had 2 of 4 on the path
  EXPECT_EQ(kv.MatchPrefix(5, tokens, 5), 4);   // block 1 with 1 of 4 on the path
  EXPECT_EQ(kv.PagesToAdmit(tokens, 13, 6), 4);   // the last partial block, 1 page per table x 4
  EXPECT_EQ(kv.PagesToAdmit(tokens, 13, 0), 16);  // nothing shared
}

TEST(KvManagerTest, PrefixCacheHitMissAndPartial) {
  KvManager kv(kShape, Options(16));
  const std::vector<int32_t> prompt = Iota(10);  // blocks [0,4) [4,8) full, [8,10) partial
  EXPECT_EQ(Admit(kv, 1, prompt), 0);             // cold: miss
  EXPECT_EQ(kv.ReadOnlyTokens(1), 8);

  // Same prompt: both full blocks; the partial block is never cached.
  EXPECT_EQ(kv.MatchPrefix(2, prompt), 8);
  EXPECT_EQ(kv.Length(2), 8);
  EXPECT_EQ(kv.ReadOnlyTokens(2), 8);
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) {
      EXPECT_THAT(kv.PageTable(2, l, h),
                  ElementsAre(kv.PageTable(1, l, h)[0], kv.PageTable(1, l, h)[1]));
    }
  }
  // Diverging inside the second block: only the first block matches.
  std::vector<int32_t> partial = prompt;
  partial[6] = 7;
  EXPECT_EQ(kv.MatchPrefix(3, partial), 4);
  // Diverging in the first token: nothing.
  std::vector<int32_t> other = prompt;
  other[0] = 1;
  EXPECT_EQ(kv.MatchPrefix(4, other), 0);
  // An exact multiple of the block size leaves its last block to compute.
  EXPECT_EQ(kv.MatchPrefix(5, Iota(8)), 4);
  // Shorter than a block: nothing to match.
  EXPECT_EQ(kv.MatchPrefix(6, Iota(3)), 0);

  // Lookups count only when the caller says they took effect (the scheduler, on admission).
  EXPECT_EQ(kv.prefix_cache_stats().queries, 0);
  kv.CountPrefixLookup(10, 8);
  kv.CountPrefixLookup(8, 4);
  const PrefixCacheStats stats = kv.prefix_cache_stats();
  EXPECT_EQ(stats.queries, 18);
  EXPECT_EQ(stats.hits, 12);
}

TEST(KvManagerTest, PrefixCachingOffNeverMatches) {
  KvManager kv(kShape, Options(16, /*prefix_caching=*/false));
  Admit(kv, 1, Iota(10));
  EXPECT_EQ(kv.ReadOnlyTokens(1), 8);
  EXPECT_EQ(kv.MatchPrefix(2, Iota(10)), 0);
  kv.CountPrefixLookup(10, 0);
  EXPECT_EQ(kv.prefix_cache_stats().queries, 0);
  kv.Free(1);
  EXPECT_EQ(kv.free_pages(), kv.total_pages());
  EXPECT_EQ(kv.evictable_pages(), 0);
}

TEST(KvManagerTest, CachedKvIsTheComputedKv) {
  KvManager kv(kShape, Options(8));
  const std::vector<int32_t> prompt = Iota(9);
  kv.MatchPrefix(1, prompt);
  ASSERT_TRUE(GrowTo(kv, 1, prompt.size()).ok());
  // The "forward" writes each token's id into its K row of every head.
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) {
      for (int t = 0; t < 9; ++t) {
        float* k = reinterpret_cast<float*>(kv.PageData(kv.PageTable(1, l, h)[t / kTpp]));
        k[(t % kTpp) * kShape.head_dim] = static_cast<float>(prompt[t] * 10 + l * 2 + h);
      }
    }
  }
  kv.CommitComputed(1, prompt, prompt.size());
  kv.Free(1);  // blocks stay cached
  ASSERT_EQ(kv.MatchPrefix(2, prompt), 8);
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) {
      for (int t = 0; t < 8; ++t) {
        const float* k =
            reinterpret_cast<const float*>(kv.PageData(kv.PageTable(2, l, h)[t / kTpp]));
        EXPECT_EQ(k[(t % kTpp) * kShape.head_dim], prompt[t] * 10 + l * 2 + h);
      }
    }
  }
}

TEST(KvManagerTest, SharedBlocksAreRefCounted) {
  KvManager kv(kShape, Options(8));
  const std::vector<int32_t> prompt = Iota(9);
  Admit(kv, 1, prompt);                       // 3 blocks, 2 cached
  EXPECT_EQ(kv.free_pages(), 5 * kPpb);
  EXPECT_EQ(Admit(kv, 2, prompt), 8);         // shares 2, adds 1
  EXPECT_EQ(kv.free_pages(), 4 * kPpb);
  kv.Free(1);                                 // its private 3rd block is freed; shared stay
  EXPECT_EQ(kv.free_pages(), 5 * kPpb);
  EXPECT_EQ(kv.evictable_pages(), 0);         // still referenced by 2
  // 2's pages survive a growth that wants every free page.
  ASSERT_TRUE(GrowTo(kv, 3, 5 * kTpp).ok());
  EXPECT_EQ(kv.free_pages(), 0);
  EXPECT_EQ(kv.MatchPrefix(4, prompt), 8);    // still cached and intact
  kv.Free(4);
  kv.Free(2);
  EXPECT_EQ(kv.evictable_pages(), 2 * kPpb);  // unreferenced now: free but cached
  EXPECT_EQ(kv.free_pages(), 3 * kPpb);
  EXPECT_DOUBLE_EQ(kv.usage(), 1.0 - 12.0 / 32.0);
}

TEST(KvManagerTest, EvictsLeastRecentlyUsedUnreferencedBlocksOnly) {
  KvManager kv(kShape, Options(8));
  const std::vector<int32_t> a = Iota(9, 100), b = Iota(9, 200), c = Iota(9, 300);
  Admit(kv, 1, a);
  Admit(kv, 2, b);
  kv.Free(1);  // a's 2 full blocks cached, unreferenced (older)
  kv.Free(2);  // b's (newer)
  Admit(kv, 3, c);  // referenced, 3 blocks; the ring keeps 1 free block
  EXPECT_EQ(kv.free_pages(), 5 * kPpb);
  EXPECT_EQ(kv.evictable_pages(), 4 * kPpb);
  EXPECT_EQ(kv.PagesToAdmit(a, 9), 3 * kPpb);  // a's blocks revive: still count
  EXPECT_EQ(kv.PagesToAdmit(Iota(9, 900), 9), 3 * kPpb);

  // One new block: the ring has 1 free block, so nothing is evicted yet.
  ASSERT_TRUE(GrowTo(kv, 4, 4).ok());
  EXPECT_EQ(kv.evictable_pages(), 4 * kPpb);
  // Two more: evicts a's blocks (least recent), tail first; b stays.
  ASSERT_TRUE(GrowTo(kv, 4, 12).ok());
  EXPECT_EQ(kv.evictable_pages(), 2 * kPpb);
  EXPECT_EQ(kv.PagesToAdmit(b, 9), 3 * kPpb);  // 2 revived + 1 fresh
  {
    EXPECT_EQ(kv.MatchPrefix(5, a), 0);
    EXPECT_EQ(kv.MatchPrefix(6, b), 8);
    kv.Free(5);
    kv.Free(6);
  }
  // Referenced blocks are never evicted: c (3 blocks) is live, so asking for more than
  // free + evictable fails and changes nothing.
  EXPECT_EQ(kv.free_pages(), 2 * kPpb);
  EXPECT_EQ(GrowTo(kv, 4, 24).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(kv.evictable_pages(), 2 * kPpb);
  EXPECT_EQ(kv.MatchPrefix(7, c), 8);
}

TEST(KvManagerTest, RevivedBlocksLeaveTheEvictableList) {
  KvManager kv(kShape, Options(3));
  const std::vector<int32_t> a = Iota(9);
  Admit(kv, 1, a);
  kv.Free(1);
  EXPECT_EQ(kv.evictable_pages(), 2 * kPpb);
  EXPECT_EQ(kv.MatchPrefix(2, a), 8);  // revived
  EXPECT_EQ(kv.evictable_pages(), 0);
  EXPECT_EQ(kv.free_pages(), 1 * kPpb);
  EXPECT_EQ(GrowTo(kv, 3, 8).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(kv.Length(2), 8);
}

uint64_t ConstantHash(uint64_t, std::span<const int32_t>) { return 42; }
uint64_t TokensOnlyHash(uint64_t, std::span<const int32_t> tokens) {
  return DefaultBlockHash(0, tokens);  // ignores the parent: the chain must still be checked
}

TEST(KvManagerTest, HashCollisionsNeverReturnOtherData) {
  KvManagerOptions o = Options(16);
  o.block_hash = ConstantHash;
  KvManager kv(kShape, o);
  const std::vector<int32_t> a = Iota(13, 100);
  Admit(kv, 1, a);  // first block registered; the second collides with it and is not
  EXPECT_EQ(kv.MatchPrefix(2, Iota(13, 500)), 0);  // same hash, other tokens: miss
  EXPECT_EQ(kv.MatchPrefix(3, a), 4);               // the true owner still hits
}

TEST(KvManagerTest, HashCollisionAcrossParentsIsCaught) {
  KvManagerOptions o = Options(16);
  o.block_hash = TokensOnlyHash;
  KvManager kv(kShape, o);
  const std::vector<int32_t> x = Iota(4, 100), y = Iota(4, 200), z = Iota(4, 300);
  auto cat = [](std::initializer_list<std::vector<int32_t>> parts) {
    std::vector<int32_t> v;
    for (const auto& p : parts) v.insert(v.end(), p.begin(), p.end());
    v.push_back(7);
    return v;
  };
  Admit(kv, 1, cat({x, y}));  // caches x, then y after x
  Admit(kv, 2, cat({z}));     // caches z
  // z then y: y's hash is cached, but after x, not after z.
  EXPECT_EQ(kv.MatchPrefix(3, cat({z, y})), 4);
  EXPECT_EQ(kv.MatchPrefix(4, cat({x, y})), 8);
}

TEST(KvManagerTest, DuplicateComputationsKeepTheChain) {
  KvManager kv(kShape, Options(16));
  const std::vector<int32_t> p = Iota(13);
  // Two sequences compute the same prompt side by side (neither matched the other).
  kv.MatchPrefix(1, p);
  kv.MatchPrefix(2, p);
  const std::vector<Growth> step = {{1, 13}, {2, 13}};
  ASSERT_TRUE(kv.Grow(step).ok());
  kv.CommitComputed(1, p, 6);   // first block of 1
  kv.CommitComputed(2, p, 13);  // 2 duplicates block 0, registers blocks 1 and 2 after it
  kv.CommitComputed(1, p, 13);
  EXPECT_EQ(kv.MatchPrefix(3, Iota(14)), 12);
  kv.Free(1);
  kv.Free(2);
  kv.Free(3);
  // 1's block 0 and 2's blocks 1, 2 are cached; the duplicates went back to the ring.
  EXPECT_EQ(kv.evictable_pages(), 3 * kPpb);
  EXPECT_EQ(kv.free_pages(), kv.total_pages());
}

// Random admissions, growth, commits and frees against a model: no page is held by two
// sequences unless it is the same shared block, page counts add up, and every matched token's
// KV is the one computed for that token.
TEST(KvManagerTest, RandomStressAgainstModel) {
  KvManager kv(kShape, Options(24));
  std::mt19937 rng(7);
  struct Live {
    std::vector<int32_t> tokens;
    int64_t computed = 0;
  };
  std::map<SeqId, Live> live;
  SeqId next_id = 0;
  auto write_kv = [&](SeqId seq, const Live& s, int64_t from, int64_t to) {
    for (int l = 0; l < 2; ++l) {
      for (int h = 0; h < 2; ++h) {
        const auto table = kv.PageTable(seq, l, h);
        for (int64_t t = from; t < to; ++t) {
          float* k = reinterpret_cast<float*>(kv.PageData(table[t / kTpp]));
          // Token id and its whole prefix identity (position) in the row.
          k[(t % kTpp) * 4 + 0] = static_cast<float>(s.tokens[t]);
          k[(t % kTpp) * 4 + 1] = static_cast<float>(t);
          k[(t % kTpp) * 4 + 2] = static_cast<float>(l * 2 + h);
        }
      }
    }
  };
  int64_t hits = 0, evictions = 0, rejected = 0;
  for (int step = 0; step < 3000; ++step) {
    const int op = rng() % 4;
    if (op == 0 || live.empty()) {
      // Admit: prompts from a few shared stems so that prefixes repeat.
      Live s;
      const int stem = rng() % 3;
      const int len = 1 + rng() % 14;
      for (int i = 0; i < len; ++i) {
        s.tokens.push_back(i < 8 ? stem * 1000 + i : static_cast<int32_t>(rng() % 4));
      }
      const SeqId id = next_id++;
      const int64_t need = kv.PagesToAdmit(s.tokens, len);
      const int64_t free_before = kv.free_pages();
      const int64_t cached = kv.MatchPrefix(id, s.tokens);
      ASSERT_EQ(cached % kTpp, 0);
      ASSERT_LT(cached, len);
      hits += cached;
      // The matched KV is this prompt's KV.
      for (int l = 0; l < 2; ++l) {
        for (int h = 0; h < 2; ++h) {
          for (int64_t t = 0; t < cached; ++t) {
            const float* k = reinterpret_cast<const float*>(
                kv.PageData(kv.PageTable(id, l, h)[t / kTpp]));
            ASSERT_EQ(k[(t % kTpp) * 4 + 0], s.tokens[t]) << "step " << step;
            ASSERT_EQ(k[(t % kTpp) * 4 + 1], t);
            ASSERT_EQ(k[(t % kTpp) * 4 + 2], l * 2 + h);
          }
        }
      }
      // PagesToAdmit (asked before the match) = revived cached pages + what Grow takes after.
      ASSERT_EQ(free_before - need, kv.free_pages() - kv.PagesToGrow(id, len)) << step;
      const Growth g{id, len};
      ASSERT_EQ(kv.CanGrow({&g, 1}), kv.PagesToGrow(id, len) <= kv.free_pages());
      const int64_t evictable = kv.evictable_pages();
      const absl::Status grown = kv.Grow({&g, 1});
      if (kv.evictable_pages() < evictable) ++evictions;
      if (!grown.ok()) {
        ++rejected;
        kv.Free(id);  // undo the admission
        continue;
      }
      s.computed = cached;
      live[id] = s;
    } else if (op == 1) {
      // Compute some tokens of a sequence and commit them.
      auto it = std::next(live.begin(), rng() % live.size());
      Live& s = it->second;
      if (s.computed < static_cast<int64_t>(s.tokens.size())) {
        ASSERT_GE(s.computed, kv.ReadOnlyTokens(it->first));
        const int64_t to = s.computed + 1 + rng() % (s.tokens.size() - s.computed);
        write_kv(it->first, s, s.computed, to);
        kv.CommitComputed(it->first, s.tokens, to);
        s.computed = to;
      }
    } else if (op == 2) {
      // Decode: append one token and grow.
      auto it = std::next(live.begin(), rng() % live.size());
      Live& s = it->second;
      if (s.computed == static_cast<int64_t>(s.tokens.size())) {
        s.tokens.push_back(static_cast<int32_t>(rng() % 4));
        const int64_t evictable = kv.evictable_pages();
        if (!GrowTo(kv, it->first, s.tokens.size()).ok()) s.tokens.pop_back();
        if (kv.evictable_pages() < evictable) ++evictions;
      }
    } else {
      auto it = std::next(live.begin(), rng() % live.size());
      kv.Free(it->first);
      live.erase(it);
    }
    // Invariants.
    std::map<int32_t, std::pair<SeqId, int64_t>> owner;  // page -> (a seq, block index)
    std::set<int32_t> distinct;
    for (const auto& [id, s] : live) {
      ASSERT_GE(kv.Length(id), static_cast<int64_t>(s.tokens.size()));
      for (int l = 0; l < 2; ++l) {
        for (int h = 0; h < 2; ++h) {
          const auto table = kv.PageTable(id, l, h);
          for (size_t b = 0; b < table.size(); ++b) {
            distinct.insert(table[b]);
            const auto [pos, inserted] = owner.try_emplace(table[b], id, b);
            if (!inserted) {
              // A page in two sequences: the same read-only block of a shared prefix.
              ASSERT_EQ(pos->second.second, static_cast<int64_t>(b)) << "step " << step;
              ASSERT_LT(static_cast<int64_t>(b) * kTpp, kv.ReadOnlyTokens(id));
              ASSERT_LT(static_cast<int64_t>(b) * kTpp, kv.ReadOnlyTokens(pos->second.first));
            }
          }
        }
      }
    }
    ASSERT_EQ(static_cast<int64_t>(distinct.size()) + kv.free_pages(), kv.total_pages())
        << "step " << step;
  }
  // The run covered sharing, eviction and a full pool.
  EXPECT_GT(hits, 0);
  EXPECT_GT(evictions, 0);
  EXPECT_GT(rejected, 0);
  for (const auto& [id, s] : live) kv.Free(id);
  EXPECT_EQ(kv.free_pages(), kv.total_pages());
}

TEST(KvManagerDeathTest, MatchPrefixOnAGrownSequenceIsABug) {
  KvManager kv(kShape, Options(4));
  ASSERT_TRUE(GrowTo(kv, 1, 4).ok());
  EXPECT_DEATH(kv.MatchPrefix(1, Iota(9)), "invariant violated");
}

}  // namespace
}  // namespace peng::memory
