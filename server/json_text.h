// Small helpers for reading requests and naming responses: a JSON object's present field, JSON
// text walked character by character without parsing it, and random ids. Pure functions (the
// ids use a per-thread generator).
#pragma once

#include <random>
#include <string>
#include <string_view>

namespace peng::server {

// A present, non-null field of `body` (an nlohmann json or ordered_json object); JSON null
// counts as absent, as in the OpenAI SDK.
template <class J>
const J* Field(const J& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

// `prefix` and `length` characters drawn from `alphabet` ("resp_…", "call_…", "msg_…").
inline std::string RandomId(std::string_view prefix, int length,
                            std::string_view alphabet = "0123456789abcdef") {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id(prefix);
  for (int i = 0; i < length; ++i) id.push_back(alphabet[rng() % alphabet.size()]);
  return id;
}

// Calls f(c, structural) for each character of `text`; `structural` is false inside strings
// (their quotes included), true elsewhere. Not a validator: any text walks.
template <class F>
void WalkJsonText(std::string_view text, F&& f) {
  bool in_string = false, escaped = false;
  for (const char c : text) {
    const bool structural = !in_string && c != '"';
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    }
    f(c, structural);
  }
}

}  // namespace peng::server
