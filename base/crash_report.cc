#include "base/crash_report.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "absl/debugging/failure_signal_handler.h"
#include "absl/debugging/symbolize.h"

namespace peng {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
struct sigaction g_next[sizeof(kSignals) / sizeof(kSignals[0])];  // abseil's, called after ours
std::atomic<bool> g_reporting{false};

// A line built in a fixed buffer with no allocation, written with one write(2).
class Line {
 public:
  Line& operator<<(const char* s) {
    while (s != nullptr && *s != '\0' && n_ < sizeof(buf_) - 1) buf_[n_++] = *s++;
    return *this;
  }
  Line& Dec(int64_t v) {
    char tmp[24];
    int k = 0;
    const bool negative = v < 0;
    uint64_t u = negative ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
    do {
      tmp[k++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (negative) tmp[k++] = '-';
    while (k > 0 && n_ < sizeof(buf_) - 1) buf_[n_++] = tmp[--k];
    return *this;
  }
  Line& Hex(uintptr_t v) {
    *this << "0x";
    char tmp[20];
    int k = 0;
    do {
      tmp[k++] = "0123456789abcdef"[v & 15];
      v >>= 4;
    } while (v != 0);
    while (k > 0 && n_ < sizeof(buf_) - 1) buf_[n_++] = tmp[--k];
    return *this;
  }
  void Write() {
    buf_[n_++] = '\n';
    for (size_t done = 0; done < n_;) {
      const ssize_t w = ::write(STDERR_FILENO, buf_ + done, n_ - done);
      if (w <= 0) break;
      done += static_cast<size_t>(w);
    }
    n_ = 0;
  }

 private:
  char buf_[512];
  size_t n_ = 0;
};

// "module+0xoffset (symbol+0xoffset)": the module offset is what addr2line takes for a shared
// library or a position-independent executable.
void Describe(Line& line, uintptr_t pc) {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(pc), &info) == 0 || info.dli_fname == nullptr) {
    line << "?? ";
    line.Hex(pc);
    return;
  }
  line << info.dli_fname << "+";
  line.Hex(pc - reinterpret_cast<uintptr_t>(info.dli_fbase));
  // abseil's symbolizer reads the module's own symbol table, so it also names the functions a
  // shared library does not export; dladdr's nearest exported symbol is the fallback.
  char symbol[256];
  if (absl::Symbolize(reinterpret_cast<void*>(pc), symbol, sizeof(symbol))) {
    line << " (" << symbol << ")";
  } else if (info.dli_sname != nullptr) {
    line << " (" << info.dli_sname << "+";
    line.Hex(pc - reinterpret_cast<uintptr_t>(info.dli_saddr)) << ")";
  }
}

uintptr_t ProgramCounter(const void* context) {
  if (context == nullptr) return 0;
  const auto* uc = static_cast<const ucontext_t*>(context);
#if defined(__x86_64__)
  return static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return static_cast<uintptr_t>(uc->uc_mcontext.pc);
#else
  (void)uc;
  return 0;
#endif
}

void HandOn(int sig, siginfo_t* info, void* context) {
  for (size_t i = 0; i < sizeof(kSignals) / sizeof(kSignals[0]); ++i) {
    if (kSignals[i] != sig) continue;
    const struct sigaction& next = g_next[i];
    if ((next.sa_flags & SA_SIGINFO) != 0 && next.sa_sigaction != nullptr) {
      next.sa_sigaction(sig, info, context);
      return;
    }
    if (next.sa_handler != SIG_DFL && next.sa_handler != SIG_IGN && next.sa_handler != nullptr) {
      next.sa_handler(sig);
      return;
    }
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void FirstStage(int sig, siginfo_t* info, void* context) {
  if (g_reporting.exchange(true)) {  // a second fault, in this report or another thread
    HandOn(sig, info, context);
    return;
  }
  Line line;
  char name[17] = {};
  prctl(PR_GET_NAME, name, 0, 0, 0);
  line << "*** peng: fatal signal ";
  line.Dec(sig) << " (" << sigabbrev_np(sig) << ") in thread '" << name << "' (tid ";
  line.Dec(gettid()) << ")";
  if (sig == SIGSEGV || sig == SIGBUS) {
    line << ", faulting address ";
    line.Hex(reinterpret_cast<uintptr_t>(info != nullptr ? info->si_addr : nullptr));
  }
  line.Write();
  line << "*** pc ";
  Describe(line, ProgramCounter(context));
  line.Write();
  void* frames[48];
  const int n = backtrace(frames, 48);
  for (int i = 0; i < n; ++i) {
    line << "***   #";
    line.Dec(i) << " ";
    Describe(line, reinterpret_cast<uintptr_t>(frames[i]));
    line.Write();
  }
  HandOn(sig, info, context);
}

}  // namespace

void InstallCrashReport(const char* argv0) {
  absl::InitializeSymbolizer(argv0);
  absl::FailureSignalHandlerOptions options;
  absl::InstallFailureSignalHandler(options);
  // backtrace() loads libgcc_s on its first call, which allocates: do it now, not in a handler.
  void* warm[2];
  backtrace(warm, 2);
  for (size_t i = 0; i < sizeof(kSignals) / sizeof(kSignals[0]); ++i) {
    struct sigaction ours{};
    ours.sa_sigaction = FirstStage;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&ours.sa_mask);
    sigaction(kSignals[i], &ours, &g_next[i]);
  }
}

void SetThreadName(const char* name) {
  char shortened[16];
  std::strncpy(shortened, name, sizeof(shortened) - 1);
  shortened[sizeof(shortened) - 1] = '\0';
  pthread_setname_np(pthread_self(), shortened);
}

}  // namespace peng
