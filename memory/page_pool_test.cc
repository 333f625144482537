#include "memory/page_pool.h"

#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peng::memory {
namespace {

std::unique_ptr<PagePool> MakePool(int64_t pages, size_t page_bytes = 64) {
  auto pool = PagePool::Create(page_bytes, pages);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return std::move(pool).value();
}

TEST(PagePoolTest, CreateRejectsBadSizes) {
  EXPECT_EQ(PagePool::Create(0, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PagePool::Create(64, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PagePool::Create(64, int64_t{1} << 32).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PagePoolTest, ExternalMemoryHoldsThePagesAndIsNotOwned) {
  alignas(PagePool::kExternalAlignment) static uint8_t region[8 * 256];
  {
    auto pool = PagePool::Create(256, 8, region);
    ASSERT_TRUE(pool.ok()) << pool.status();
    EXPECT_EQ((*pool)->Data(0), region);
    EXPECT_EQ((*pool)->Data(5), region + 5 * 256);
  }  // destroying the pool must not free `region` (ASan / the allocator would complain)
  EXPECT_EQ(PagePool::Create(256, 8, region + 16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PagePoolTest, BatchGivesDisjointPagesInPrefixSumOrder) {
  auto pool = MakePool(10);
  const std::vector<int64_t> needs = {3, 0, 2, 4};
  auto batch = pool->Allocate(needs);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_THAT(batch->ends, ::testing::ElementsAre(3, 3, 5, 9));
  std::set<int32_t> seen;
  for (size_t i = 0; i < needs.size(); ++i) {
    ASSERT_EQ(batch->Of(i).size(), static_cast<size_t>(needs[i]));
    for (const int32_t p : batch->Of(i)) {
      EXPECT_TRUE(seen.insert(p).second) << "page " << p << " given twice";
      EXPECT_FALSE(pool->IsFree(p));
    }
  }
  EXPECT_EQ(seen.size(), 9u);
  EXPECT_EQ(pool->free_pages(), 1);
}

TEST(PagePoolTest, ExhaustionIsAllOrNothing) {
  auto pool = MakePool(8);
  ASSERT_TRUE(pool->Allocate(std::vector<int64_t>{5}).ok());
  const std::vector<int64_t> too_many = {1, 1, 2};  // 4 > 3 free
  auto failed = pool->Allocate(too_many);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->free_pages(), 3);
  // The same three free pages are still there, in the same order.
  auto rest = pool->Allocate(std::vector<int64_t>{3});
  ASSERT_TRUE(rest.ok());
  EXPECT_THAT(rest->pages, ::testing::ElementsAre(5, 6, 7));
  EXPECT_EQ(pool->free_pages(), 0);
  EXPECT_EQ(pool->Allocate(std::vector<int64_t>{1}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(pool->Allocate(std::vector<int64_t>{0, 0}).ok());  // nothing needed: fine
}

TEST(PagePoolTest, NegativeNeedIsInvalid) {
  auto pool = MakePool(4);
  EXPECT_EQ(pool->Allocate(std::vector<int64_t>{1, -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->free_pages(), 4);
}

TEST(PagePoolTest, ReleaseReturnsPagesForReuse) {
  auto pool = MakePool(4);
  auto a = pool->Allocate(std::vector<int64_t>{4});
  ASSERT_TRUE(a.ok());
  const std::vector<int32_t> back = {a->pages[2], a->pages[0]};
  pool->Release(back);
  EXPECT_EQ(pool->free_pages(), 2);
  auto b = pool->Allocate(std::vector<int64_t>{2});
  ASSERT_TRUE(b.ok());
  EXPECT_THAT(b->pages, ::testing::ElementsAre(back[0], back[1]));  // FIFO through the ring
}

TEST(PagePoolTest, ReleaseOfSeveralGroupsInOneBatch) {
  auto pool = MakePool(6);
  auto a = pool->Allocate(std::vector<int64_t>{2, 3});
  ASSERT_TRUE(a.ok());
  const std::vector<std::span<const int32_t>> groups = {a->Of(1), a->Of(0)};
  pool->Release(groups);
  EXPECT_EQ(pool->free_pages(), 6);
  for (int32_t p = 0; p < 6; ++p) EXPECT_TRUE(pool->IsFree(p));
}

TEST(PagePoolTest, RingWrapsAroundOverManyCycles) {
  auto pool = MakePool(7);
  std::vector<int32_t> held;
  // Odd sizes against a ring of 7 make the cursors cross the end in every position.
  for (int cycle = 0; cycle < 1000; ++cycle) {
    const int64_t n = 1 + cycle % 5;
    auto batch = pool->Allocate(std::vector<int64_t>{n});
    ASSERT_TRUE(batch.ok()) << "cycle " << cycle;
    held.insert(held.end(), batch->pages.begin(), batch->pages.end());
    std::set<int32_t> unique(held.begin(), held.end());
    ASSERT_EQ(unique.size(), held.size()) << "cycle " << cycle;
    pool->Release(held);
    held.clear();
    ASSERT_EQ(pool->free_pages(), 7);
  }
}

TEST(PagePoolTest, PageMemoryIsAlignedAndDisjoint) {
  auto pool = MakePool(5, 96);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(pool->Data(0)) % PagePool::kAlignment, 0u);
  for (int32_t p = 0; p < 5; ++p) {
    EXPECT_EQ(pool->Data(p) - pool->Data(0), p * 96);
    for (int i = 0; i < 96; ++i) pool->Data(p)[i] = static_cast<uint8_t>(p);
  }
  for (int32_t p = 0; p < 5; ++p) {
    for (int i = 0; i < 96; ++i) ASSERT_EQ(pool->Data(p)[i], p);
  }
}

// Random batched allocations and releases against a model of who owns which page.
TEST(PagePoolTest, RandomStressAgainstModel) {
  constexpr int64_t kPages = 53;
  auto pool = MakePool(kPages);
  std::mt19937 rng(1234);
  std::vector<std::vector<int32_t>> owners(8);  // requester -> pages held
  int64_t held = 0;
  for (int step = 0; step < 5000; ++step) {
    if (rng() % 2 == 0) {
      std::vector<int64_t> needs(owners.size());
      int64_t sum = 0;
      for (auto& n : needs) sum += (n = rng() % 4);
      auto batch = pool->Allocate(needs);
      if (sum > kPages - held) {
        ASSERT_EQ(batch.status().code(), absl::StatusCode::kResourceExhausted);
      } else {
        ASSERT_TRUE(batch.ok());
        for (size_t i = 0; i < owners.size(); ++i) {
          owners[i].insert(owners[i].end(), batch->Of(i).begin(), batch->Of(i).end());
        }
        held += sum;
      }
    } else {
      std::vector<std::vector<int32_t>> released(owners.size());
      std::vector<std::span<const int32_t>> groups;
      for (size_t i = 0; i < owners.size(); ++i) {
        const size_t n = owners[i].empty() ? 0 : rng() % (owners[i].size() + 1);
        released[i].assign(owners[i].end() - n, owners[i].end());
        owners[i].resize(owners[i].size() - n);
        held -= n;
        groups.emplace_back(released[i]);
      }
      pool->Release(groups);
    }
    ASSERT_EQ(pool->free_pages(), kPages - held);
    std::vector<int> owned(kPages, 0);
    for (const auto& pages : owners) {
      for (const int32_t p : pages) ++owned[p];
    }
    for (int32_t p = 0; p < kPages; ++p) {
      ASSERT_LE(owned[p], 1) << "page " << p << " owned twice at step " << step;
      ASSERT_EQ(pool->IsFree(p), owned[p] == 0) << "page " << p << " at step " << step;
    }
  }
}

TEST(PagePoolDeathTest, DoubleReleaseIsCaught) {
  auto pool = MakePool(2);
  auto a = pool->Allocate(std::vector<int64_t>{1});
  ASSERT_TRUE(a.ok());
  pool->Release(a->pages);
  EXPECT_DEATH(pool->Release(a->pages), "invariant violated");
}

}  // namespace
}  // namespace peng::memory
