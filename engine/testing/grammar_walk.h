// Test helper for the byte grammars (engine/json_grammar.h, engine/json_schema.h): a random walk
// over units of bytes, each kept when the grammar takes it, then a greedy completion: at every
// step the first byte of `finish` the grammar takes, until the document is complete.
#pragma once

#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace peng::testing {

// A completion alphabet for JSON documents: the bytes that close strings, objects and arrays
// and separate values first, then every printable ASCII byte.
inline std::string JsonFinishBytes() {
  std::string finish = "\"}]0:,";
  for (int c = 0x20; c < 0x7f; ++c) finish.push_back(static_cast<char>(c));
  return finish;
}

// The document fed to `g`; `g.Complete()` says whether the completion got there (false: no
// byte of `finish` was taken, or max_finish bytes did not suffice).
template <class G>
std::string WalkThenFinish(G& g, std::mt19937& rng, const std::vector<std::string>& units, int max_steps,
                           std::string_view finish, int max_finish) {
  std::string doc;
  const int steps = static_cast<int>(rng() % (max_steps + 1));
  for (int i = 0; i < steps; ++i) {
    const std::string& unit = units[rng() % units.size()];
    if (g.FeedAll(unit)) doc += unit;
  }
  for (int n = 0; n < max_finish && !g.Complete(); ++n) {
    bool fed = false;
    for (const char c : finish) {
      if (g.Feed(static_cast<uint8_t>(c))) {
        doc.push_back(c);
        fed = true;
        break;
      }
    }
    if (!fed) break;
  }
  return doc;
}

}  // namespace peng::testing
