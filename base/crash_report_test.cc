#include "base/crash_report.h"

#include <csignal>
#include <cstdint>
#include <cstring>

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

// A fault inside a shared library (libc's memset through a pointer the compiler cannot see
// through): the report names the library, where abseil's frame-pointer walk gives up.
void* (*volatile g_memset)(void*, int, size_t) = std::memset;

void CrashInsideLibc() {
  InstallCrashReport("base_test");
  g_memset(reinterpret_cast<void*>(g_bad_address), 0, 4096);
}

TEST(CrashReportDeathTest, AFaultInsideASharedLibraryNamesTheLibrary) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(CrashInsideLibc(), testing::KilledBySignal(SIGSEGV),
              "\\*\\*\\* pc [^ ]*libc\\.so[^ ]*\\+0x[0-9a-f]+");
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
