#include "engine/choice_grammar.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace peng {

absl::StatusOr<std::shared_ptr<const ChoiceSet>> ChoiceSet::Create(std::vector<std::string> choices) {
  if (choices.empty()) return absl::InvalidArgumentError("guided_choice needs at least one choice");
  if (choices.size() > kMaxChoices) {
    return absl::InvalidArgumentError(absl::StrCat("guided_choice takes at most ", kMaxChoices, " choices, got ", choices.size()));
  }
  for (size_t i = 0; i < choices.size(); ++i) {
    if (choices[i].empty()) return absl::InvalidArgumentError("guided_choice: a choice is empty");
    if (std::find(choices.begin(), choices.begin() + i, choices[i]) != choices.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat("guided_choice: '", choices[i], "' is given twice"));
    }
  }
  auto set = std::make_shared<ChoiceSet>();
  set->choices = std::move(choices);
  return std::shared_ptr<const ChoiceSet>(std::move(set));
}

ChoiceGrammar::ChoiceGrammar(const ChoiceSet* set)
    : set_(set), candidates_(set->choices.size() == 64 ? ~uint64_t{0} : (uint64_t{1} << set->choices.size()) - 1) {}

bool ChoiceGrammar::Advance(uint8_t c) {
  uint64_t next = 0;
  for (uint64_t m = candidates_; m != 0; m &= m - 1) {
    const int i = __builtin_ctzll(m);
    const std::string& choice = set_->choices[i];
    if (choice.size() > pos_ && static_cast<uint8_t>(choice[pos_]) == c) next |= uint64_t{1} << i;
  }
  if (next == 0) return false;
  candidates_ = next;
  ++pos_;
  return true;
}

bool ChoiceGrammar::CanStop() const {
  for (uint64_t m = candidates_; m != 0; m &= m - 1) {
    if (set_->choices[__builtin_ctzll(m)].size() == pos_) return true;
  }
  return false;
}

bool ChoiceGrammar::Complete() const {
  for (uint64_t m = candidates_; m != 0; m &= m - 1) {
    if (set_->choices[__builtin_ctzll(m)].size() > pos_) return false;
  }
  return true;
}

}  // namespace peng
