// Crash reports: what a daemon's log should say when the process dies on a fatal signal.
//
// InstallCrashReport installs abseil's failure signal handler (the faulting thread's stack,
// symbolized against the executable) and in front of it a first stage of our own that writes,
// with async-signal-safe calls only where it can:
//   - the signal, the faulting address and the thread's name;
//   - the program counter as module + offset (dladdr): a crash inside a shared library (libc,
//     the CUDA driver, gRPC) gets a name that `addr2line -e <module> <offset>` resolves later,
//     where abseil's frame-pointer walk stops at the first library frame without one;
//   - a backtrace by the DWARF unwinder (glibc's backtrace), each frame as module + offset.
// Then it hands the signal to abseil's handler, which prints its own report and re-raises.
#pragma once

namespace peng {

void InstallCrashReport(const char* argv0);

// Names the calling thread for crash reports, `top` and `perf` (Linux keeps 15 characters).
void SetThreadName(const char* name);

}  // namespace peng
