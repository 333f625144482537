// PagePool: one aligned allocation of total_pages pages of page_bytes each, and a ring of the
// free page ids. Allocation takes ids at the start cursor, release puts them back at the end
// cursor. Both are batched per step: every requester states a count, an inclusive prefix sum of
// the counts gives each requester a disjoint run of ring slots, then all requesters apply (here
// one after another; the GPU version runs the same algorithm with one thread per requester).
// Invariant: every page id is either in the ring exactly once or owned by exactly one holder.
// Page memory is the pool's own (aligned host allocation) or external (e.g. device memory from
// the CUDA worker, which then must outlive the pool); the pool itself never reads or writes page
// memory, it only hands out addresses. Owned by the KvManager (engine loop thread); not
// thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "base/huge_pages.h"

namespace peng::memory {

// The result of one batched allocation: requester i owns pages[ends[i] - need_i, ends[i]).
struct PageBatch {
  std::vector<int64_t> ends;    // inclusive prefix sum of the needs
  std::vector<int32_t> pages;   // all allocated ids, requester after requester

  std::span<const int32_t> Of(size_t requester) const {
    const int64_t begin = requester == 0 ? 0 : ends[requester - 1];
    return std::span<const int32_t>(pages).subspan(begin, ends[requester] - begin);
  }
};

class PagePool {
 public:
  // Own page memory starts at least this aligned (2 MiB with huge pages once it reaches 2 MiB:
  // base/huge_pages.h); pages follow densely.
  static constexpr size_t kAlignment = 4096;
  static constexpr size_t kExternalAlignment = 256;  // what external memory must be aligned to

  // Creates the ring with all pages free. Fails if the sizes are invalid or do not fit. With
  // `external_memory` (not owned; at least page_bytes * total_pages bytes, aligned to
  // kExternalAlignment) the pages live there instead of in an allocation of the pool's own.
  static absl::StatusOr<std::unique_ptr<PagePool>> Create(size_t page_bytes, int64_t total_pages,
                                                          uint8_t* external_memory = nullptr);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  size_t page_bytes() const { return page_bytes_; }
  int64_t total_pages() const { return total_pages_; }
  int64_t free_pages() const { return end_ - start_; }

  // Allocates needs[i] pages for every requester i, or nothing (ResourceExhausted, ring
  // unchanged) when the sum exceeds free_pages(). Negative needs are InvalidArgument.
  absl::StatusOr<PageBatch> Allocate(std::span<const int64_t> needs);
  // Returns every group's pages to the ring (the groups are released in one batch). Releasing
  // a page that is already free is a bug (checked).
  void Release(std::span<const std::span<const int32_t>> groups);
  void Release(std::span<const int32_t> pages) { Release({&pages, 1}); }

  uint8_t* Data(int32_t page);
  const uint8_t* Data(int32_t page) const;
  bool IsFree(int32_t page) const { return is_free_[page] != 0; }

 private:
  PagePool(size_t page_bytes, int64_t total_pages, uint8_t* memory, HugeBuffer owned);

  const size_t page_bytes_;
  const int64_t total_pages_;
  const HugeBuffer owned_;            // the page memory when the pool allocated it
  uint8_t* const memory_;             // owned_.get(), or external memory
  std::vector<int32_t> ring_;         // free ids live in slots [start_, end_) mod total_pages
  int64_t start_ = 0;                 // allocate cursor (monotonic; slot = cursor % total)
  int64_t end_ = 0;                   // release cursor
  std::vector<uint8_t> is_free_;      // per page: 1 while its id is in the ring (double-free check)
};

}  // namespace peng::memory
