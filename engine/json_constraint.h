// JSON mode and structured output: the constraint that keeps a sequence's output one JSON
// object (JsonGrammar) or one document of a JSON schema (SchemaGrammar) and then ends it. JsonVocabulary holds each token's bytes as the grammar reads them and is built
// once per model, shared read-only by every JSON-mode sequence; JsonConstraint is one
// sequence's grammar state with a small cache of masks by state (inside a string, or between
// the digits of a number, the state repeats token after token).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/choice_grammar.h"
#include "engine/json_grammar.h"
#include "engine/json_schema.h"
#include "engine/schema_grammar.h"
#include "engine/logits_constraint.h"

namespace peng {

class Tokenizer;

struct JsonVocabulary {
  enum class Kind : uint8_t { kText, kEndOfGeneration, kOther /* control tokens, empty pieces */ };
  std::vector<std::string> pieces;  // by token id: the bytes it stands for
  std::vector<Kind> kinds;
  // Derived by Index(): the text tokens by first byte, and per token the length of its prefix
  // of plain string text (JsonGrammar::PlainStringPrefix), which a string takes as it is.
  std::vector<std::vector<int32_t>> by_first_byte;
  std::vector<uint32_t> plain_prefix;

  static std::shared_ptr<const JsonVocabulary> From(const Tokenizer& tokenizer);
  // Fills the derived fields from pieces and kinds.
  void Index();
};

// One sequence's constraint over grammar G (JsonGrammar: any object; SchemaGrammar: a JSON
// schema's documents; ChoiceGrammar: one of a few strings). Instantiated for the three in
// json_constraint.cc.
template <class G>
class GrammarConstraint : public LogitsConstraint {
 public:
  GrammarConstraint(std::shared_ptr<const JsonVocabulary> vocab, G grammar);

  // Until the document is complete: the text tokens whose bytes keep it valid; wherever it may
  // end (G::CanStop), the end-of-generation tokens too.
  void Mask(std::span<float> logits) override;
  void Accept(int32_t id) override;

  const G& grammar() const { return grammar_; }

 private:
  struct CachedMask {
    G state;
    std::vector<uint64_t> allowed;  // bit per token id
    uint64_t last_use = 0;
  };
  static constexpr size_t kCacheSize = 8;

  const std::vector<uint64_t>& AllowedFor(const G& state);

  std::shared_ptr<const JsonVocabulary> vocab_;
  G grammar_;
  std::vector<CachedMask> cache_;
  uint64_t uses_ = 0;
};

class JsonConstraint : public GrammarConstraint<JsonGrammar> {
 public:
  explicit JsonConstraint(std::shared_ptr<const JsonVocabulary> vocab)
      : GrammarConstraint(std::move(vocab), JsonGrammar()) {}
};

// A GrammarConstraint whose grammar reads shared, immutable data (a compiled schema, a choice
// set): the constraint keeps the data alive as long as the grammar points into it.
template <class G, class Data>
class GrammarOver : public GrammarConstraint<G> {
 public:
  GrammarOver(std::shared_ptr<const JsonVocabulary> vocab, std::shared_ptr<const Data> data)
      : GrammarConstraint<G>(std::move(vocab), G(data.get())), data_(std::move(data)) {}

 private:
  std::shared_ptr<const Data> data_;
};
using SchemaConstraint = GrammarOver<SchemaGrammar, JsonSchema>;
using ChoiceConstraint = GrammarOver<ChoiceGrammar, ChoiceSet>;

}  // namespace peng
