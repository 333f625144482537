// ThreadPool: a fixed set of worker threads for data-parallel loops inside one forward pass.
// Owned by one caller (a worker's engine thread); Run() is not re-entrant and must be called
// from one thread at a time. Workers spin briefly between jobs (a forward pass issues a few
// hundred tiny jobs per token) and then block, so an idle pool costs no CPU.
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

  int num_threads() const { return num_threads_; }
  // The CPU of each thread when pinned; empty when not.
  const std::vector<int>& cpus() const { return cpus_; }

  // Calls fn(thread_index, num_threads) once on every thread and returns when all are done.
  void Run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into contiguous chunks (multiples of `grain`) and calls fn(begin, end).
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);
  void PinCaller();

  int num_threads_;
  std::vector<int> cpus_;
  std::thread::id pinned_caller_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace peng
