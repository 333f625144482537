// RegexGrammar: the whole output matches a regular expression (vLLM's guided_regex: a date, a
// phone number, an answer in a fixed shape). One sequence's position in a shared, immutable
// ByteRegex compiled with ByteRegex::Use::kWholeText, which must outlive the grammar. The
// regex's dead ends are pruned, so every prefix the grammar takes can still finish a match.
#pragma once

#include <cstdint>
#include <string_view>

#include "engine/byte_regex.h"
#include "engine/json_grammar.h"

namespace peng {

class RegexGrammar {
 public:
  explicit RegexGrammar(const ByteRegex* regex) : regex_(regex), state_(regex->start()) {}

  bool Advance(uint8_t c) {
    const uint16_t next = regex_->Next(state_, c);
    if (next == ByteRegex::kDead) return false;
    state_ = next;
    return true;
  }
  bool Feed(uint8_t c) { return Advance(c); }  // a refused byte leaves the state as it was
  bool FeedAll(std::string_view bytes) { return FeedOrRestore(*this, bytes); }
  // The output matches as it stands (it may end here).
  bool CanStop() const { return regex_->Accepting(state_); }
  // ... and nothing can follow (it must end).
  bool Complete() const { return regex_->Final(state_); }
  bool InPlainString() const { return false; }

  friend bool operator==(const RegexGrammar&, const RegexGrammar&) = default;

 private:
  const ByteRegex* regex_;
  uint16_t state_;
};

}  // namespace peng
