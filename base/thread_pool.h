// ThreadPool: a fixed set of worker threads for data-parallel loops inside one forward pass.
// Owned by one caller (a worker's engine thread); Run() and RunShared() are not re-entrant and
// must be called from one thread at a time. Workers spin briefly between jobs (a forward pass
// issues a few hundred tiny jobs per token) and then block, so an idle pool costs no CPU.
//
// Two kinds of job. Run() gives every thread a fixed share and waits for all of them. RunShared()
// lets the threads take work from a shared counter and waits only for the threads that took
// some: a worker the OS has descheduled (the HTTP threads, a benchmark client or another process
// on its CPU) does not join, and the others do its share. Serving at concurrency 16 on 2 cores,
// each compute thread sat runnable but descheduled for 6-9% of the time; under Run() the other
// thread could only wait at the barrier meanwhile. With a busy loop on one CPU, RunShared
// served c=16 16-19% faster (docs/BENCHMARKS.md).
//
// Pinning (optional): each thread of the pool, the calling thread included, runs on a CPU of
// its own from the process's allowed set. A forward pass meets at a barrier every few tens of
// microseconds; unpinned, the kernel's wake-up placement often puts both of a 2-thread pool's
// threads on one CPU while the other idles (seen serving at concurrency 16 on 2 cores: each
// compute thread runnable but waiting 23-26% of the time, the machine 20% idle). kAuto pins
// only when the pool has exactly as many threads as the process may use CPUs (a cpuset or
// taskset sized for it, or a whole machine): with more CPUs visible than threads — a container
// under a CPU quota sees every CPU of its node — pinning to the first ones would pile several
// processes onto the same CPUs, so placement stays with the kernel.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace peng {

enum class Pinning { kNone, kAuto, kAlways };

class ThreadPool {
 public:
  // `num_threads` includes the calling thread; 1 means everything runs inline. When pinned,
  // thread i runs only on CPU cpus()[i] (taken in turn from the allowed set, process-wide, so
  // several pools spread out); never when the set has fewer CPUs than the pool threads.
  explicit ThreadPool(int num_threads, Pinning pinning = Pinning::kNone);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Whether a pool of `num_threads` with `pinning` is pinned, and how many CPUs this process
  // may run on (0 where that cannot be read).
  static bool Pins(int num_threads, Pinning pinning);
  static int AllowedCpuCount();
  // The CPUs this process can keep busy: those it may run on, capped by its cgroup's CPU quota
  // (a container limited to 2 CPUs on a 64-CPU node sees 64 but gets the time of 2); at least 1.
  static int UsableCpuCount();
  // CPUs granted by a cgroup quota, rounded up: cgroup v2 `cpu.max` text ("150000 100000" → 2)
  // or v1 quota and period in µs; 0 when there is no limit ("max", a quota of -1) or bad input.
  static int QuotaCpus(const std::string& cpu_max);
  static int QuotaCpus(int64_t quota_us, int64_t period_us);

  int num_threads() const { return num_threads_; }
  // The CPU of each thread when pinned; empty when not.
  const std::vector<int>& cpus() const { return cpus_; }

  // Calls fn(thread_index, num_threads) once on every thread and returns when all are done.
  void Run(const std::function<void(int, int)>& fn);

  // Calls fn(thread_index) on the calling thread and on each worker that arrives while the
  // caller's call is still running; returns when every call has returned. fn must take its work
  // from shared state (an atomic counter) until none is left: which threads run, and how much
  // each does, is up to timing. Indices are distinct, so per-thread scratch stays private.
  void RunShared(const std::function<void(int)>& fn);

  // Splits [0, n) into contiguous pieces (multiples of `grain`, a few per thread) and calls
  // fn(begin, end) once per piece, the threads taking pieces in turn (RunShared).
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);
  // Starts the next job (its fn already stored) of the given kind.
  void Publish(bool shared);
  void PinCaller();

  int num_threads_;
  std::vector<int> cpus_;
  std::thread::id pinned_caller_;
  std::vector<std::thread> workers_;
  // Job generation; its low bit says which kind the current job is (1: RunShared).
  static constexpr uint32_t kSharedJob = 1;
  const std::function<void(int, int)>* job_ = nullptr;
  const std::function<void(int)>* shared_job_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};
  // A RunShared job's gate: kGateOpen while the caller runs its share, plus the number of workers
  // inside. A worker joins only while it is open; the caller returns once it is shut and empty.
  static constexpr uint32_t kGateOpen = 1u << 31;
  std::atomic<uint32_t> gate_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace peng
