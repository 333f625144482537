#include "base/thread_pool.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"

namespace peng {
namespace {

TEST(ThreadPoolTest, ParallelForCoversEveryIndexOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 7, 64, 1000}) {
    std::vector<std::atomic<int>> hits(n);
    pool.ParallelFor(n, 4, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPoolTest, RunCallsEveryThreadManyTimes) {
  ThreadPool pool(2);
  std::atomic<int> calls{0};
  for (int i = 0; i < 10000; ++i) pool.Run([&](int, int nt) { calls.fetch_add(1); });
  EXPECT_EQ(calls.load(), 20000);
}

}  // namespace
}  // namespace peng
