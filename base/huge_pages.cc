#include "base/huge_pages.h"

#include "base/cgroup.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace peng {

void HugeFree::operator()(uint8_t* p) const { std::free(p); }

HugeBuffer AllocateHuge(size_t bytes, size_t align) {
  if (bytes == 0 || align == 0 || (align & (align - 1)) != 0 || align > kHugePageBytes) return nullptr;
  constexpr size_t kPage = 4096;
  const bool huge = bytes >= kHugePageBytes;
  if (huge) align = kHugePageBytes;
  if (bytes > SIZE_MAX - kPage) return nullptr;
  // Whole 4 KiB pages, so that the advice covers the buffer and nothing of a neighbour's. Only
  // the 2 MiB-aligned stretches become huge pages; a last partial one stays in 4 KiB pages,
  // which wastes nothing (a layer of SmolLM2-135M is 2.1 MiB).
  const size_t rounded = huge ? (bytes + kPage - 1) / kPage * kPage : bytes;
  void* p = nullptr;
  if (posix_memalign(&p, std::max(align, sizeof(void*)), rounded) != 0) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Advice only: with THP off ("never") or unsupported, madvise fails and 4 KiB pages serve.
  if (huge) ::madvise(p, rounded, MADV_HUGEPAGE);
#endif
  return HugeBuffer(static_cast<uint8_t*>(p));
}

std::optional<int64_t> AvailableMemoryBytes() {
#if defined(__linux__)
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return std::nullopt;
  char line[256];
  std::optional<int64_t> kib;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    long long v = 0;
    if (std::sscanf(line, "MemAvailable: %lld kB", &v) == 1) {
      kib = v;
      break;
    }
  }
  std::fclose(f);
  const std::optional<int64_t> headroom = CgroupMemoryHeadroom();
  if (kib) return headroom ? std::min(*headroom, *kib * 1024) : *kib * 1024;
  return headroom;
#else
  return std::nullopt;
#endif
}

}  // namespace peng
