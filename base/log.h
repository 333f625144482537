// Process-wide log lines on stderr: "2026-11-28 10:15:02 peng http: warning: ...". One call
// writes one whole line (safe from any thread). The level (peng serve's `log.level`) drops
// lines below it; the default is info.
#pragma once

#include <string_view>

namespace peng {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
// `component` names the part of the daemon ("http", "grpc", "engine"; empty for peng itself).
void Log(LogLevel level, std::string_view component, std::string_view message);

}  // namespace peng
