// Server-sent events over HTTP/1.1 chunked transfer encoding, as OpenAI streams them:
// each event is `data: <json>\n\n`, the stream ends with `data: [DONE]\n\n`. SseEvent frames one
// payload; HttpChunk wraps bytes as one chunk of a chunked body; the last chunk is kLastChunk.
// Pure functions over strings.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace peng::server {

inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

inline std::string SseEvent(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 8);
  out.append("data: ").append(payload).append("\n\n");
  return out;
}

// `<hex size>\r\n<data>\r\n`; empty data would end the body, so callers never pass it.
inline std::string HttpChunk(std::string_view data) {
  char size[24];
  int n = std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  std::string out;
  out.reserve(data.size() + n + 2);
  out.append(size, n).append(data).append("\r\n");
  return out;
}

}  // namespace peng::server
