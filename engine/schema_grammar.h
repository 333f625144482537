// SchemaGrammar: one sequence's position in a compiled JSON schema (engine/json_schema.h): a
// stack of open values over its nodes, read byte by byte, with JsonGrammar's interface (Feed,
// Advance, Complete, CanStop, InPlainString), so GrammarConstraint masks tokens with either.
// Strings, numbers and free-form values are read by an embedded JsonGrammar. The schema must
// outlive the grammar. A plain value; copies move only the live frames.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "engine/json_grammar.h"
#include "engine/json_schema.h"

namespace peng {

class SchemaGrammar {
 public:
  static constexpr int kMaxDepth = 24;

  explicit SchemaGrammar(const JsonSchema* schema);
  SchemaGrammar(const SchemaGrammar& other) { *this = other; }
  SchemaGrammar& operator=(const SchemaGrammar& other);

  bool Feed(uint8_t c) { return FeedOrRestore(*this, std::string_view(reinterpret_cast<const char*>(&c), 1)); }
  bool FeedAll(std::string_view bytes) { return FeedOrRestore(*this, bytes); }
  // Feed without the undo: on false the state is unspecified (for copies that are dropped).
  bool Advance(uint8_t c);
  bool Complete() const { return done_; }
  bool CanStop() const { return done_; }
  bool InPlainString() const;

  // uniqueItems over values other than literals is kept outside the grammar, by UniqueItems
  // (engine/json_constraint.h), from these. The depth of the innermost open array whose items
  // must differ and are not literals (the array is the value at that depth), or 0.
  int UniqueArrayDepth() const;
  int depth() const { return depth_; }
  // The node of the open value at depth d, 1 <= d <= depth().
  const JsonSchema::Node& NodeAt(int d) const { return NodeOf(frames()[d - 1]); }
  const JsonSchema& schema() const { return *schema_; }
  // The JSON document this grammar reads (GrammarConstraint asks every grammar that has one).
  const SchemaGrammar* document() const { return this; }

  friend bool operator==(const SchemaGrammar& a, const SchemaGrammar& b);

 private:
  // One open value; what the fields hold depends on the node's kind:
  //   object: phase, pos = next property, prop = key bytes matched then the open property,
  //           candidates = keys still matching;
  //   map: phase, sub = the key being read;  array: phase, pos = items so far;
  //   literals: candidates still matching, pos = bytes matched;
  //   pattern: pos = DFA state, prop = characters, candidates = UTF-8 bytes still due;
  //   bounded integer: phase = negative, candidates = magnitude, pos = digits;
  //   bounded number: phase = negative | point << 1, candidates = mantissa, pos = digits,
  //           prop = digits after the point;
  //   string, number, free-form value: sub (an embedded JsonGrammar), prop = characters.
  struct Frame {
    int32_t node = 0;
    uint8_t phase = 0;
    uint16_t pos = 0;
    uint16_t prop = 0;
    uint64_t candidates = 0;
    JsonGrammar sub{true};
  };

  static_assert(std::is_trivially_copyable_v<JsonGrammar>);
  enum Result { kTaken, kRefused, kEnded };  // kEnded: the frame closed without taking the byte
  Result FeedFrame(uint8_t c);
  Result StartValue(int32_t node, uint8_t c);
  bool Push(int32_t node);
  bool BoundedDigit(const JsonSchema::Node& n, Frame& f, uint8_t c);
  bool BoundedNumberByte(const JsonSchema::Node& n, Frame& f, uint8_t c);
  static bool BoundedNumberEnds(const JsonSchema::Node& n, const Frame& f);
  // Closes the top value: done at the top, else the parent moves past it.
  void PopValue();
  const JsonSchema::Node& NodeOf(const Frame& f) const { return schema_->nodes()[f.node]; }
  // An array whose unique items are literals: the grammar itself keeps them apart.
  bool UniqueLiterals(const JsonSchema::Node& array) const {
    return array.unique_items && schema_->nodes()[array.items].kind == JsonSchema::Node::Kind::kLiterals;
  }

  Frame* frames() { return reinterpret_cast<Frame*>(storage_); }
  const Frame* frames() const { return reinterpret_cast<const Frame*>(storage_); }

  const JsonSchema* schema_;
  // Frames [0, depth_) are live (placed by Push); a copy moves those alone. Frame is trivially
  // copyable, so the bytes are the objects. (An array of Frames would construct all
  // kMaxDepth on every copy: masks copy the state once per candidate token.)
  alignas(8) unsigned char storage_[kMaxDepth * 40];
  uint8_t depth_ = 0;
  uint8_t whitespace_ = 0;
  bool done_ = false;
};

}  // namespace peng
