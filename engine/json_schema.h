// Structured output: a JSON Schema (OpenAI's response_format json_schema) compiled into a
// byte-at-a-time recognizer of the documents it allows. JsonSchema::Compile turns the schema
// into an immutable graph of nodes, shared by every sequence that uses it; SchemaGrammar is
// one sequence's position in it, with JsonGrammar's interface (Feed, Complete,
// InPlainString), so GrammarConstraint masks tokens with either.
//
// The subset (anything else is an InvalidArgument naming the keyword, never ignored):
//   type (one or a list), properties, required, items, minItems, maxItems, enum, const,
//   pattern (engine/byte_regex.h), minLength, maxLength (in characters: UTF-8 sequences and
//   escapes count one each), minimum / maximum / exclusiveMinimum / exclusiveMaximum on
//   integers (within int64), anyOf / oneOf whose branches start with different bytes,
//   allOf of one schema, $ref to "#/$defs/..." or "#/definitions/..." (recursion allowed),
//   format (date, date-time, time, uuid, email, ipv4, uri become patterns; others constrain
//   nothing), and the annotations (title, description, default, examples, ...). The top level is an
//   object. Objects hold their declared properties in declared order: the required ones, and
//   the optional ones where the model writes them (no other keys, which every schema allows).
//   An object with no properties and an additionalProperties schema (or true) is a map: any
//   keys, each value of that schema.
#pragma once

#include <bitset>
#include <climits>
#include <cstring>
#include <type_traits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/byte_regex.h"
#include "engine/json_grammar.h"
#include "nlohmann/json.hpp"

namespace peng {

class JsonSchema {
 public:
  static constexpr size_t kMaxProperties = 64;  // per object; also the literals of an enum
  // `schema` as an ordered_json: objects keep their properties in declared order.
  static absl::StatusOr<std::shared_ptr<const JsonSchema>> Compile(const nlohmann::ordered_json& schema);

  struct Property {
    std::string key;  // serialized, quotes included: the bytes the output holds
    int32_t node = -1;
    bool required = false;
  };
  struct Node {
    // kMap: an object of any keys whose values share one schema (additionalProperties with
    // no properties: pydantic's dict[str, X]); its value node is `items`.
    // kPattern: a string whose bytes match regexes()[regex] (pattern, or a known format).
    enum class Kind : uint8_t { kAny, kObject, kMap, kArray, kString, kPattern, kNumber, kInteger, kLiterals, kAnyOf };
    Kind kind = Kind::kAny;
    std::vector<Property> properties;     // kObject
    int32_t items = -1;                   // kArray: the items' node; kMap: the values' node
    int64_t min_items = 0, max_items = -1;  // kArray; -1: no bound
    std::vector<std::string> literals;    // kLiterals: serialized JSON values
    std::vector<int32_t> alternatives;    // kAnyOf
    int32_t regex = -1;                   // kPattern
    int64_t min_length = 0, max_length = -1;  // kString, kPattern: characters; -1: no bound
    bool bounded = false;                 // kInteger with minimum / maximum (inclusive here)
    int64_t min_value = INT64_MIN, max_value = INT64_MAX;
    std::bitset<256> first;               // bytes a value of this node may start with
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<ByteRegex>& regexes() const { return regexes_; }
  int32_t root() const { return 0; }

 private:
  friend class SchemaCompiler;
  std::vector<Node> nodes_;
  std::vector<ByteRegex> regexes_;
};

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

  friend bool operator==(const SchemaGrammar& a, const SchemaGrammar& b);

 private:
  // One open value. Objects: phase, the next property index and (keys) the candidates still
  // matching; arrays: phase and item count; literals: candidates and bytes matched; strings,
  // numbers and free-form values: an embedded JsonGrammar.
  struct Frame {
    int32_t node = 0;
    uint8_t phase = 0;
    uint16_t pos = 0;       // object: next property; array: items so far; key/literal: bytes matched
    uint16_t prop = 0;      // object: the property whose value is open
    uint64_t candidates = 0;
    JsonGrammar sub{true};
  };

  static_assert(std::is_trivially_copyable_v<JsonGrammar>);
  enum Result { kTaken, kRefused, kEnded };  // kEnded: the frame closed without taking the byte
  Result FeedFrame(uint8_t c);
  Result StartValue(int32_t node, uint8_t c);
  bool Push(int32_t node);
  bool BoundedDigit(const JsonSchema::Node& n, Frame& f, uint8_t c);
  // Closes the top value: done at the top, else the parent moves past it.
  void PopValue();
  const JsonSchema::Node& NodeOf(const Frame& f) const { return schema_->nodes()[f.node]; }

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
