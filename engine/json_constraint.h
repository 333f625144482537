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
#include "nlohmann/json.hpp"
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
  // Per token, the kinds of byte it holds (kQuote | ...): which tokens can end a JSON value.
  enum ByteClass : uint8_t { kQuote = 1, kCloseBrace = 2, kCloseBracket = 4, kComma = 8, kSpace = 16, kDigit = 32 };
  std::vector<uint8_t> classes;

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

// uniqueItems over values other than literals (pydantic's set[str], frozenset[int], ...), for
// the grammars that read a JSON schema (G::document()). A grammar state is a plain value of a
// fixed size and cannot hold the items written so far, so this part of the constraint does:
// it reads the open array's items from the kept tokens and, after the grammar's mask, bans the
// tokens that would finish an item equal (as a JSON value) to an earlier one. For an integer it
// also bans a prefix that no unused value completes, and for a string at its maxLength, an
// object or an array a token after which it can only close as an earlier item. An item can still come to a point where its only
// completions repeat earlier items (an object whose last property is a number that can only
// end, a pattern that few strings match); then the repeat is allowed rather than a dead end
// (nothing is banned when everything would be).
class UniqueItems {
 public:
  // Moves past byte `c`, which took the document to `after`. False: `c` finished an item equal
  // to an earlier one. `keep` false: an item `c` finishes is checked but not kept (the last
  // byte of a token tried in Ban; copying the items for it would cost more than the check).
  bool Step(uint8_t c, const SchemaGrammar& after, bool keep = true);
  // Sets to -inf the logits of the tokens in `allowed` (a bit per token id, the grammar's mask
  // for `state`) that would repeat an item of the open array.
  void Ban(const SchemaGrammar& state, const JsonVocabulary& vocab, const std::vector<uint64_t>& allowed,
           std::span<float> logits) const;
  bool active() const { return array_ > 0; }

 private:
  // In `state` (after this tracker's bytes): an open item that every value it can still become
  // repeats: an integer (a "0", or a bounded integer's last values), a string at its maxLength,
  // or an object or array that can only close now.
  bool Stuck(const SchemaGrammar& state) const;

  int array_ = 0;         // the depth of the open array (SchemaGrammar::UniqueArrayDepth), 0 = none
  bool in_item_ = false;  // an item of it is open
  std::string item_;      // ... and these are its bytes so far
  // Its finished items; shared between copies (Ban simulates tokens on copies), replaced
  // rather than changed.
  std::shared_ptr<const std::vector<nlohmann::json>> seen_;
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
  static constexpr bool kReadsSchema = requires(const G& g) { g.document(); };

  std::shared_ptr<const JsonVocabulary> vocab_;
  G grammar_;
  UniqueItems unique_;  // grammars that read a JSON schema
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
