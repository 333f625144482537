// ChoiceGrammar: the output is exactly one of a few given strings (vLLM's guided_choice: label a
// text, pick an answer). Byte-at-a-time like JsonGrammar, with the candidates still matching
// as a bitmask; the choices are shared read-only (ChoiceSet) and must outlive the grammar.
// A choice that is a prefix of another may end the output or go on (CanStop without Complete).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/json_grammar.h"

namespace peng {

struct ChoiceSet {
  static constexpr size_t kMaxChoices = 64;
  std::vector<std::string> choices;
  // InvalidArgument for none, more than kMaxChoices, an empty or a repeated choice.
  static absl::StatusOr<std::shared_ptr<const ChoiceSet>> Create(std::vector<std::string> choices);
};

class ChoiceGrammar {
 public:
  explicit ChoiceGrammar(const ChoiceSet* set);

  bool Advance(uint8_t c);
  bool Feed(uint8_t c) { return FeedOrRestore(*this, std::string_view(reinterpret_cast<const char*>(&c), 1)); }
  bool FeedAll(std::string_view bytes) { return FeedOrRestore(*this, bytes); }
  // A whole choice has been written (the output may end here).
  bool CanStop() const;
  // ... and no longer choice continues it (the output must end).
  bool Complete() const;
  bool InPlainString() const { return false; }

  friend bool operator==(const ChoiceGrammar&, const ChoiceGrammar&) = default;

 private:
  const ChoiceSet* set_;
  uint64_t candidates_;
  uint32_t pos_ = 0;  // bytes matched
};

}  // namespace peng
