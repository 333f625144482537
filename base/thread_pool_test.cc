#include "base/thread_pool.h"

#include <sched.h>

#include <array>
#include <atomic>
#include <set>
#include <thread>
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

TEST(ThreadPoolTest, RunSharedDoesEveryItemOnceWithDistinctThreads) {
  ThreadPool pool(3);
  constexpr int kItems = 257;
  for (int round = 0; round < 2000; ++round) {
    std::vector<int> hits(kItems, 0);  // plain ints: an item done twice or raced shows up
    std::atomic<int> next{0};
    std::array<std::atomic<int>, 3> entered{};
    pool.RunShared([&](int t) {
      ASSERT_GE(t, 0);
      ASSERT_LT(t, 3);
      EXPECT_EQ(entered[t].fetch_add(1), 0) << "thread " << t << " joined twice at once";
      for (int i; (i = next.fetch_add(1)) < kItems;) ++hits[i];
      entered[t].fetch_sub(1);
    });
    for (int i = 0; i < kItems; ++i) ASSERT_EQ(hits[i], 1) << "round " << round << " item " << i;
    // Interleave the other kind of job: every thread must still take part in it.
    std::atomic<int> calls{0};
    pool.Run([&](int, int) { calls.fetch_add(1); });
    ASSERT_EQ(calls.load(), 3);
  }
}

TEST(ThreadPoolTest, RunSharedJobsBackToBackLoseNoWork) {
  // Two back-to-back shared jobs, each long enough for the workers to arrive: the caller alone
  // may do all of one job's work (a worker joining late finds nothing), and a worker that joined
  // holds the caller until it leaves. Either way every item is done once.
  ThreadPool pool(2);
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> next{0}, done{0};
    pool.RunShared([&](int t) {
      if (t != 0) std::this_thread::yield();
      while (next.fetch_add(1) < 64) done.fetch_add(1);
    });
    ASSERT_EQ(done.load(), 64);
  }
}

TEST(ThreadPoolTest, CgroupQuotaRoundsUpToWholeCpus) {
  EXPECT_EQ(ThreadPool::QuotaCpus("200000 100000\n"), 2);
  EXPECT_EQ(ThreadPool::QuotaCpus("150000 100000"), 2);
  EXPECT_EQ(ThreadPool::QuotaCpus("50000 100000"), 1);
  EXPECT_EQ(ThreadPool::QuotaCpus("max 100000"), 0);  // no limit
  EXPECT_EQ(ThreadPool::QuotaCpus(""), 0);
  EXPECT_EQ(ThreadPool::QuotaCpus("lots 100000"), 0);
  EXPECT_EQ(ThreadPool::QuotaCpus("100000"), 0);
  EXPECT_EQ(ThreadPool::QuotaCpus(int64_t{-1}, int64_t{100000}), 0);  // cgroup v1: no limit
  EXPECT_EQ(ThreadPool::QuotaCpus(int64_t{300000}, int64_t{100000}), 3);
  EXPECT_EQ(ThreadPool::QuotaCpus(int64_t{100000}, int64_t{0}), 0);
  const int usable = ThreadPool::UsableCpuCount();
  EXPECT_GE(usable, 1);
  if (ThreadPool::AllowedCpuCount() > 0) {
    EXPECT_LE(usable, ThreadPool::AllowedCpuCount());
  }
}

// The allowed CPUs of the calling thread.
std::set<int> Affinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  std::set<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.insert(c);
  }
  return cpus;
}

TEST(ThreadPoolTest, PinnedThreadsEachRunOnTheirOwnCpu) {
  const std::set<int> allowed = Affinity();
  if (allowed.size() < 2) GTEST_SKIP() << "one CPU: nothing to pin apart";
  std::vector<std::set<int>> seen(2);
  std::thread caller([&] {  // pinning changes the calling thread's affinity: not the test's
    ThreadPool pool(2, Pinning::kAlways);
    ASSERT_EQ(pool.cpus().size(), 2u);
    EXPECT_NE(pool.cpus()[0], pool.cpus()[1]);
    for (int cpu : pool.cpus()) EXPECT_TRUE(allowed.count(cpu)) << cpu;
    for (int i = 0; i < 100; ++i) pool.Run([&](int t, int) { seen[t] = Affinity(); });
    for (int t = 0; t < 2; ++t) EXPECT_EQ(seen[t], std::set<int>{pool.cpus()[t]}) << "thread " << t;
  });
  caller.join();
}

TEST(ThreadPoolTest, NoPinningWhenThereAreMoreThreadsThanCpus) {
  const size_t allowed = Affinity().size();
  std::thread caller([&] {
    ThreadPool pool(static_cast<int>(allowed) + 1, Pinning::kAlways);
    EXPECT_TRUE(pool.cpus().empty());
    std::atomic<int> calls{0};
    pool.Run([&](int, int) { calls.fetch_add(1); });
    EXPECT_EQ(calls.load(), static_cast<int>(allowed) + 1);
    EXPECT_EQ(Affinity().size(), allowed);  // the caller was left as it was
  });
  caller.join();
  ThreadPool unpinned(2);
  EXPECT_TRUE(unpinned.cpus().empty());
}

TEST(ThreadPoolTest, AutoPinsOnlyAPoolThatCoversEveryAllowedCpu) {
  const size_t allowed = Affinity().size();
  std::thread caller([&] {
    ThreadPool all(static_cast<int>(allowed), Pinning::kAuto);
    EXPECT_EQ(all.cpus().size(), allowed);
    if (allowed >= 2) {
      ThreadPool fewer(static_cast<int>(allowed) - 1, Pinning::kAuto);
      EXPECT_TRUE(fewer.cpus().empty());
    }
  });
  caller.join();
}

}  // namespace
}  // namespace peng
