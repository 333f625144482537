// JSON text walked character by character without parsing it: for the few places that look at
// a body's shape before (or instead of) a parse. Pure functions.
#pragma once

#include <string_view>

namespace peng::server {

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
