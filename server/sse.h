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

// `payload` is JSON text. U+0085, U+2028 and U+2029 inside its strings are written as \u
// escapes: SSE lines end only at CR or LF, but clients that split lines with Python's
// str.splitlines (httpx's iter_lines, which the soak test reads with) also split at these, and
// a model writes them now and then.
inline std::string SseEvent(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 8);
  out.append("data: ");
  for (size_t i = 0; i < payload.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(payload[i]);
    if (c == 0xC2 && i + 1 < payload.size() && static_cast<unsigned char>(payload[i + 1]) == 0x85) {
      out.append("\\u0085");
      ++i;
    } else if (c == 0xE2 && i + 2 < payload.size() && static_cast<unsigned char>(payload[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(payload[i + 2]) == 0xA8 || static_cast<unsigned char>(payload[i + 2]) == 0xA9)) {
      out.append(static_cast<unsigned char>(payload[i + 2]) == 0xA8 ? "\\u2028" : "\\u2029");
      i += 2;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.append("\n\n");
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
