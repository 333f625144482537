// Process-wide log lines on stderr: "2026-11-28 10:15:02 peng http: warning: ...". One call
// writes one whole line (safe from any thread). The level (peng serve's `log.level`) drops
// lines below it; the default is info. Messages often carry client text (request ids, field
// names), so control characters are escaped (a client cannot start a line of its own) and a
// message is cut at kMaxLogMessageBytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace peng {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

inline constexpr size_t kMaxLogMessageBytes = 4096;

void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
// `component` names the part of the daemon ("http", "grpc", "engine"; empty for peng itself).
void Log(LogLevel level, std::string_view component, std::string_view message);
// The message as Log writes it: control bytes as \n, \r, \t or \xNN, at most
// kMaxLogMessageBytes of the original, then "... (N more bytes)".
std::string LogSafe(std::string_view message);

}  // namespace peng
