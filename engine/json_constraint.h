// Constrained output (JSON mode, JSON schemas, choices): the LogitsConstraint that keeps a
// sequence's output inside a byte grammar and then ends it. JsonVocabulary holds each token's
// bytes as the grammars read them, built once per model and shared read-only. A
// GrammarConstraint is one sequence's grammar state; its masks come from a small cache of its
// own, then from the SharedMasks of every sequence using that kind of grammar, then are
// computed (inside a string, or between the digits of a number, the state repeats token after
// token).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "engine/choice_grammar.h"
#include "engine/json_grammar.h"
#include "engine/json_schema.h"
#include "engine/logits_constraint.h"
#include "engine/regex_grammar.h"
#include "engine/schema_grammar.h"

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

// Masks by grammar state, shared by every sequence of a model that uses grammar G: requests
// that start alike (`{`, the first key, ...) and requests with one schema meet the same states.
// Guarded by a mutex (sequences sample on the worker's threads); entries keep `owner` (the
// schema or choice set a state points into) alive, so a state's address never outlives it.
template <class G>
class SharedMasks {
 public:
  using Mask = std::shared_ptr<const std::vector<uint64_t>>;
  explicit SharedMasks(size_t capacity = 256) : capacity_(capacity) {}

  Mask Find(const G& state);
  void Insert(const G& state, Mask mask, std::shared_ptr<const void> owner);
  int64_t inserted() const;  // masks computed and shared (tests, benchmarks)

 private:
  struct Entry {
    G state;
    Mask mask;
    std::shared_ptr<const void> owner;
    uint64_t last_use;
  };
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t inserted_ ABSL_GUARDED_BY(mu_) = 0;
};

// One sequence's constraint over grammar G (JsonGrammar: any object; SchemaGrammar: a JSON
// schema's documents; ChoiceGrammar: one of a few strings; RegexGrammar: a text matching a
// regex; ToolCallBlockGrammar). Masks come from a small cache of its own, then from `shared`
// (may be null), then are computed. Instantiated for those five in json_constraint.cc.
template <class G>
class GrammarConstraint : public LogitsConstraint {
 public:
  GrammarConstraint(std::shared_ptr<const JsonVocabulary> vocab, G grammar,
                    std::shared_ptr<SharedMasks<G>> shared = nullptr, std::shared_ptr<const void> owner = nullptr);

  // Until the document is complete: the text tokens whose bytes keep it valid; wherever it may
  // end (G::CanStop), the end-of-generation tokens too.
  void Mask(std::span<float> logits) override;
  void Accept(int32_t id) override;

  const G& grammar() const { return grammar_; }

 private:
  using MaskPtr = typename SharedMasks<G>::Mask;
  struct CachedMask {
    G state;
    MaskPtr allowed;  // bit per token id
    uint64_t last_use = 0;
  };
  static constexpr size_t kCacheSize = 8;

  const std::vector<uint64_t>& AllowedFor(const G& state);

  std::shared_ptr<const JsonVocabulary> vocab_;
  G grammar_;
  std::shared_ptr<SharedMasks<G>> shared_;
  std::shared_ptr<const void> owner_;
  std::vector<CachedMask> cache_;
  uint64_t uses_ = 0;
};

class JsonConstraint : public GrammarConstraint<JsonGrammar> {
 public:
  explicit JsonConstraint(std::shared_ptr<const JsonVocabulary> vocab,
                          std::shared_ptr<SharedMasks<JsonGrammar>> shared = nullptr)
      : GrammarConstraint(std::move(vocab), JsonGrammar(), std::move(shared)) {}
};

// A GrammarConstraint whose grammar reads shared, immutable data (a compiled schema, a choice
// set): the constraint (and any shared mask of its states) keeps the data alive.
template <class G, class Data>
class GrammarOver : public GrammarConstraint<G> {
 public:
  GrammarOver(std::shared_ptr<const JsonVocabulary> vocab, std::shared_ptr<const Data> data,
              std::shared_ptr<SharedMasks<G>> shared = nullptr)
      : GrammarConstraint<G>(std::move(vocab), G(data.get()), std::move(shared), data) {}
};
using SchemaConstraint = GrammarOver<SchemaGrammar, JsonSchema>;
using ChoiceConstraint = GrammarOver<ChoiceGrammar, ChoiceSet>;
using RegexConstraint = GrammarOver<RegexGrammar, ByteRegex>;

}  // namespace peng
