#include "base/crash_report.h"

#include <csignal>
#include <cstdint>

#include "gtest/gtest.h"

namespace peng {
namespace {

volatile uintptr_t g_bad_address = 0x40;  // volatile: the compiler cannot see the fault coming

[[gnu::noinline]] void WriteThrough(volatile int* p) { *p = 1; }

void CrashInNamedThread() {
  InstallCrashReport("base_test");
  SetThreadName("crash-test-thread-with-a-long-name");
  WriteThrough(reinterpret_cast<volatile int*>(g_bad_address));
}

TEST(CrashReportDeathTest, NamesTheSignalThreadAddressAndFramesByModule) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // The first stage's lines, then abseil's report: both before the process dies of the signal.
  EXPECT_EXIT(CrashInNamedThread(), testing::KilledBySignal(SIGSEGV),
              "fatal signal 11 \\(SEGV\\) in thread 'crash-test-thre' \\(tid [0-9]+\\), faulting "
              "address 0x40\n\\*\\*\\* pc [^\n]*base_test\\+0x[0-9a-f]+[^\n]*\n(.|\n)*"
              "\\*\\*\\* SIGSEGV received");
}

TEST(CrashReportDeathTest, AnAbortIsReportedToo) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        InstallCrashReport("base_test");
        std::abort();
      },
      testing::KilledBySignal(SIGABRT), "fatal signal 6 \\(ABRT\\) in thread");
}

}  // namespace
}  // namespace peng
