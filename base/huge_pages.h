// Large, long-lived buffers (the KV page pool, a layer's weights) that kernels stream through
// every step. Where Linux allows it (transparent huge pages in "madvise" or "always" mode) the
// buffer is 2 MiB aligned and advised MADV_HUGEPAGE, so one TLB entry covers 2 MiB instead of
// 4 KiB: the decode attention reads KV pages scattered over the whole pool, and under a
// hypervisor every TLB miss is a two-level page walk. Elsewhere, or for small sizes, it is an
// ordinary 64-byte-aligned allocation. Either way the memory is freed with HugeFree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

namespace peng {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

struct HugeFree {
  void operator()(uint8_t* p) const;
};
using HugeBuffer = std::unique_ptr<uint8_t, HugeFree>;

// `bytes` (> 0) of uninitialized memory aligned to at least `align` (a power of two, at most
// kHugePageBytes); nullptr when out of memory. Sizes of at least kHugePageBytes are 2 MiB
// aligned and advised as huge pages (the whole 2 MiB stretches of them); smaller ones are not
// (rounding them up would waste more than it saves).
HugeBuffer AllocateHuge(size_t bytes, size_t align = 64);

// Memory the system can give this process without swapping (Linux: MemAvailable in
// /proc/meminfo, and no more than its cgroup's memory limit leaves: a container's limit is
// what the OOM killer enforces, whatever the node has free); nullopt where unknown.
std::optional<int64_t> AvailableMemoryBytes();

}  // namespace peng
