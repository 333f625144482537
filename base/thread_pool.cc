#include "base/thread_pool.h"

#include "base/cgroup.h"
#include "base/crash_report.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#define PENG_CPU_RELAX() _mm_pause()
#else
#define PENG_CPU_RELAX() ((void)0)
#endif

namespace peng {
namespace {
// Spin briefly (jobs arrive microseconds apart during a forward pass), then yield the core, then
// sleep on a futex. Yielding keeps an oversubscribed machine (a build running beside us) from
// stalling every barrier for a whole scheduler time slice.
constexpr int kSpinIterations = 4096;
constexpr int kYieldIterations = 64;

template <typename T, typename Pred>
void AwaitChange(std::atomic<T>& a, Pred done) {
  for (int i = 0; i < kSpinIterations; ++i) {
    if (done(a.load(std::memory_order_acquire))) return;
    PENG_CPU_RELAX();
  }
  for (int i = 0; i < kYieldIterations; ++i) {
    if (done(a.load(std::memory_order_acquire))) return;
    std::this_thread::yield();
  }
  while (true) {
    const T v = a.load(std::memory_order_acquire);
    if (done(v)) return;
    a.wait(v, std::memory_order_acquire);
  }
}
// The CPUs this process may run on, ascending (empty where that cannot be read).
std::vector<int> AllowedCpus() {
  std::vector<int> cpus;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
#endif
  return cpus;
}

void PinCurrentThread(int cpu) {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  // Best effort: a refusal (a cgroup that changed under us) leaves the thread unpinned.
  (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
#else
  (void)cpu;
#endif
}

// Next slot of the allowed set to hand out; pools take consecutive slots, wrapping around.
std::atomic<uint64_t> next_cpu_slot{0};

// The pinning rule of Pins, given the allowed CPU count.
bool PinsWith(size_t allowed, int num_threads, Pinning pinning) {
  const size_t n = static_cast<size_t>(std::max(1, num_threads));
  return pinning == Pinning::kAlways ? allowed >= n : pinning == Pinning::kAuto && allowed == n;
}
}  // namespace

int ThreadPool::AllowedCpuCount() { return static_cast<int>(AllowedCpus().size()); }

int ThreadPool::QuotaCpus(int64_t quota_us, int64_t period_us) {
  if (quota_us <= 0 || period_us <= 0) return 0;
  return static_cast<int>(std::min<int64_t>((quota_us + period_us - 1) / period_us, 1 << 20));
}

int ThreadPool::QuotaCpus(const std::string& cpu_max) {
  std::istringstream in(cpu_max);
  std::string quota;
  int64_t period = 0;
  if (!(in >> quota >> period) || quota == "max") return 0;
  int64_t q = 0;
  const auto [end, ec] = std::from_chars(quota.data(), quota.data() + quota.size(), q);
  return ec == std::errc() && end == quota.data() + quota.size() ? QuotaCpus(q, period) : 0;
}

int ThreadPool::UsableCpuCount() {
  int cpus = std::max(1, AllowedCpuCount());
  // This process's cgroups (base/cgroup.h): v2's cpu.max, else v1's cpu.cfs_quota_us and
  // cpu.cfs_period_us under the cpu controller's mount; the namespace root's files are the
  // fallback.
  int quota = QuotaCpus(ReadSmallFile(CgroupV2Dir() + "/cpu.max"));
  if (quota == 0) quota = QuotaCpus(ReadSmallFile("/sys/fs/cgroup/cpu.max"));
  const auto v1_quota = [&](const std::string& dir) {
    const std::string q = ReadSmallFile(dir + "/cpu.cfs_quota_us"), per = ReadSmallFile(dir + "/cpu.cfs_period_us");
    return q.empty() || per.empty() ? 0 : QuotaCpus(std::atoll(q.c_str()), std::atoll(per.c_str()));
  };
  for (const std::string mount : {"cpu", "cpu,cpuacct"}) {
    if (quota == 0) quota = v1_quota(CgroupV1Dir(mount, "cpu"));
    if (quota == 0) quota = v1_quota("/sys/fs/cgroup/" + mount);
  }
  if (quota > 0) cpus = std::min(cpus, quota);
  return cpus;
}

bool ThreadPool::Pins(int num_threads, Pinning pinning) {
  return PinsWith(AllowedCpus().size(), num_threads, pinning);
}

ThreadPool::ThreadPool(int num_threads, Pinning pinning) : num_threads_(std::max(1, num_threads)) {
  const std::vector<int> allowed = pinning == Pinning::kNone ? std::vector<int>{} : AllowedCpus();
  if (!allowed.empty() && PinsWith(allowed.size(), num_threads_, pinning)) {
    const uint64_t first = next_cpu_slot.fetch_add(num_threads_);
    for (int i = 0; i < num_threads_; ++i) cpus_.push_back(allowed[(first + i) % allowed.size()]);
  }
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

void ThreadPool::PinCaller() {
  // The calling thread is thread 0; it may change between calls (not at the same time).
  if (cpus_.empty() || pinned_caller_ == std::this_thread::get_id()) return;
  PinCurrentThread(cpus_[0]);
  pinned_caller_ = std::this_thread::get_id();
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(2);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  SetThreadName("peng-worker");
  if (!cpus_.empty()) PinCurrentThread(cpus_[index]);
  uint32_t seen = 0;
  while (true) {
    AwaitChange(generation_, [seen](uint32_t g) { return g != seen; });
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    if ((seen & kSharedJob) == 0) {
      // A Run() job waits for every thread, so it is still the current one.
      (*job_)(index, num_threads_);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
      continue;
    }
    // A RunShared() job: join through its gate if the caller has not shut it yet. Once inside,
    // the job cannot end under us, so the job read after joining is the one joined — possibly a
    // newer one than `seen` if this thread was descheduled meanwhile.
    uint32_t g = gate_.load(std::memory_order_relaxed);
    while ((g & kGateOpen) != 0) {
      if (!gate_.compare_exchange_weak(g, g + 1, std::memory_order_acquire, std::memory_order_relaxed)) continue;
      seen = generation_.load(std::memory_order_acquire);
      (*shared_job_)(index);
      // The last one out of a shut gate wakes the caller.
      if (gate_.fetch_sub(1, std::memory_order_acq_rel) == 1) gate_.notify_one();
      break;
    }
  }
}

void ThreadPool::Publish(bool shared) {
  // The next generation whose low bit is the job's kind (odd: RunShared), then wake the workers.
  const bool was_shared = (generation_.load(std::memory_order_relaxed) & kSharedJob) != 0;
  generation_.fetch_add(was_shared == shared ? 2 : 1, std::memory_order_acq_rel);
  generation_.notify_all();
}

void ThreadPool::Run(const std::function<void(int, int)>& fn) {
  PinCaller();
  if (num_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  Publish(/*shared=*/false);
  fn(0, num_threads_);
  AwaitChange(pending_, [](int p) { return p == 0; });
}

void ThreadPool::RunShared(const std::function<void(int)>& fn) {
  PinCaller();
  if (num_threads_ == 1) {
    fn(0);
    return;
  }
  shared_job_ = &fn;
  gate_.store(kGateOpen, std::memory_order_release);
  Publish(/*shared=*/true);
  fn(0);
  // Shut the gate; wait for the workers inside (their work is part of the result).
  if ((gate_.fetch_and(~kGateOpen, std::memory_order_acq_rel) & ~kGateOpen) != 0) {
    AwaitChange(gate_, [](uint32_t g) { return g == 0; });
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t chunks = (n + grain - 1) / grain;
  if (num_threads_ == 1 || chunks == 1) {
    fn(0, n);
    return;
  }
  // A few pieces per thread: a descheduled thread's share is taken over in small steps.
  const int64_t per_piece = (chunks + 4 * num_threads_ - 1) / (4 * num_threads_);
  const int64_t pieces = (chunks + per_piece - 1) / per_piece;
  std::atomic<int64_t> next{0};
  RunShared([&](int) {
    for (int64_t p; (p = next.fetch_add(1, std::memory_order_relaxed)) < pieces;) {
      fn(p * per_piece * grain, std::min(n, (p + 1) * per_piece * grain));
    }
  });
}

}  // namespace peng
