#include "base/huge_pages.h"

#include "base/cgroup.h"

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <optional>

#include "gtest/gtest.h"

namespace peng {
namespace {

bool AlignedTo(const uint8_t* p, size_t align) { return reinterpret_cast<uintptr_t>(p) % align == 0; }

TEST(HugePagesTest, SmallBuffersKeepTheAskedAlignment) {
  for (size_t align : {size_t{1}, size_t{64}, size_t{4096}}) {
    HugeBuffer b = AllocateHuge(1000, align);
    ASSERT_NE(b, nullptr);
    EXPECT_TRUE(AlignedTo(b.get(), std::max<size_t>(align, 8)));
    std::memset(b.get(), 0xab, 1000);
  }
}

TEST(HugePagesTest, LargeBuffersStartOnAHugePage) {
  // 2 MiB and a bit: one whole huge page and a 4 KiB-paged tail, every byte writable.
  const size_t bytes = kHugePageBytes + 12345;
  HugeBuffer b = AllocateHuge(bytes);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(AlignedTo(b.get(), kHugePageBytes));
  std::memset(b.get(), 0x5a, bytes);
  EXPECT_EQ(b.get()[bytes - 1], 0x5a);
}

TEST(HugePagesTest, RejectsWhatCannotBeAllocated) {
  EXPECT_EQ(AllocateHuge(0), nullptr);
  EXPECT_EQ(AllocateHuge(100, 48), nullptr);                  // not a power of two
  EXPECT_EQ(AllocateHuge(100, 2 * kHugePageBytes), nullptr);  // beyond a huge page
  EXPECT_EQ(AllocateHuge(SIZE_MAX - 10), nullptr);            // overflows the rounding
  EXPECT_EQ(AllocateHuge(size_t{1} << 60), nullptr);          // more than any machine has
}

TEST(HugePagesTest, CgroupMemoryHeadroomIsLimitMinusUsage) {
  EXPECT_EQ(CgroupMemoryHeadroom("1073741824\n", "104857600\n"), int64_t{1073741824 - 104857600});
  EXPECT_EQ(CgroupMemoryHeadroom("max\n", "104857600\n"), std::nullopt);                    // v2: no limit
  EXPECT_EQ(CgroupMemoryHeadroom("9223372036854771712\n", "4096\n"), std::nullopt);       // v1: no limit
  EXPECT_EQ(CgroupMemoryHeadroom("1048576\n", "2097152\n"), int64_t{0});                  // over the limit
  EXPECT_EQ(CgroupMemoryHeadroom("", ""), std::nullopt);
  EXPECT_EQ(CgroupMemoryHeadroom("12x\n", "1\n"), std::nullopt);
}

TEST(HugePagesTest, AvailableMemoryIsKnownOnLinux) {
#if defined(__linux__)
  const std::optional<int64_t> available = AvailableMemoryBytes();
  ASSERT_TRUE(available.has_value());
  EXPECT_GT(*available, int64_t{1} << 20);
#endif
}

}  // namespace
}  // namespace peng
