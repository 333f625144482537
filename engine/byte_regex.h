// ByteRegex: a regular expression compiled to a DFA over bytes, for the strings of a JSON
// schema's `pattern` and `format` (engine/json_schema.h), and for a whole output (vLLM's
// guided_regex, engine/regex_grammar.h). Compile() parses the ECMA-262 subset
// schemas use — literals, escapes (\d \w \s and escaped punctuation), `.`, classes with ranges
// and negation, groups ((...) and (?:...)), alternation, the quantifiers ? * + {m} {m,} {m,n}
// (counts up to 64; lazy ones too, which match the same texts), and ^ / $ at the ends — and
// builds the DFA by subset construction.
// JSON Schema patterns are unanchored: without ^ (or $) any prefix (suffix) may surround the
// match. Immutable once built; the DFA's state is a uint16_t.
//
// What a string may hold is narrower than the regex: the DFA never takes '"', '\\' or a
// control byte (the output writes the string's bytes as they are, without escapes), and a
// UTF-8 character is matched byte by byte (so `.` takes one byte of it). For a whole output
// (Use::kWholeText) the match is always anchored at both ends and any byte may be taken.
//
// States from which no accepting state can be reached are pruned: every transition that
// Next() does not answer with kDead leads to a state from which the match can still finish.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace peng {

class ByteRegex {
 public:
  static constexpr uint16_t kDead = 0xFFFF;
  static constexpr size_t kMaxStates = 4096;

  enum class Use : uint8_t {
    kJsonPattern,  // a JSON string's `pattern`: a search, over the bytes a string holds unescaped
    kWholeText,    // a whole output: a full match over any bytes
  };
  static absl::StatusOr<ByteRegex> Compile(std::string_view pattern, Use use = Use::kJsonPattern);

  uint16_t start() const { return 0; }
  uint16_t Next(uint16_t state, uint8_t c) const { return next_[static_cast<size_t>(state) * 256 + c]; }
  bool Accepting(uint16_t state) const { return accepting_[state]; }
  // No byte continues a match from `state` (it is accepting: the match must end there).
  bool Final(uint16_t state) const { return final_[state]; }
  // Whether the whole of `s` matches (for tests).
  bool Matches(std::string_view s) const;

 private:
  void Prune();  // transitions into states that cannot reach acceptance become kDead; fills final_

  std::vector<uint16_t> next_;  // states x 256
  std::vector<bool> accepting_;
  std::vector<bool> final_;
};

}  // namespace peng
