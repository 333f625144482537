// Structured output: a JSON Schema (OpenAI's response_format json_schema) compiled into an
// immutable graph of nodes, shared by every sequence that uses it. SchemaGrammar
// (engine/schema_grammar.h) is one sequence's position in it.
//
// The subset (anything else is an InvalidArgument naming the keyword, never ignored):
//   type (one or a list), properties, required, items, prefixItems (tuples), minItems, maxItems,
//   uniqueItems (pydantic's set and frozenset: of enum / const values in the grammar itself, of
//   anything else by UniqueItems in engine/json_constraint.h, which compares the values written
//   as JSON values; not inside the items of another such array), enum, const,
//   pattern (engine/byte_regex.h), minLength, maxLength (in characters: UTF-8 sequences and
//   escapes count one each), minimum / maximum / exclusiveMinimum / exclusiveMaximum on
//   integers (a bounded integer is held within int64, whatever its bounds) and a whole
//   multipleOf (on numbers too: the number is then written as an integer), the same bounds on
//   numbers (written without an exponent, at most 15 significant and 20 fraction digits,
//   compared as Python compares floats), anyOf / oneOf whose branches start with different
//   bytes or are objects told apart by a tag (a property every branch requires, with const / enum values
//   no two branches share: pydantic's discriminated unions) or by their first key (the keys
//   each branch can start with, in declared order, are its own: pydantic's plain unions of
//   models with different fields),
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
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/byte_regex.h"
#include "nlohmann/json.hpp"

namespace peng {

// floor(a / b) for b > 0 (C++'s division truncates toward zero): multipleOf's arithmetic, in
// 128 bits so that int64 bounds and their neighbours never overflow.
inline __int128 FloorDiv(__int128 a, __int128 b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

class JsonSchema {
 public:
  static constexpr size_t kMaxProperties = 64;  // per object; also the literals of an enum
  // `schema` as an ordered_json: objects keep their properties in declared order. The top
  // level must be an object (response_format's rule) unless `object_root` is false.
  static absl::StatusOr<std::shared_ptr<const JsonSchema>> Compile(const nlohmann::ordered_json& schema,
                                                                   bool object_root = true);

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
    std::vector<int32_t> prefix_items;    // kArray: the first items' nodes (prefixItems), then `items`
    bool unique_items = false;            // kArray: no value twice (uniqueItems)
    // The values a node has, when that is a small, known number: kLiterals: literals.size();
    // a bounded kInteger: its multiples within the bounds (up to 2^62); otherwise -1 (many). A unique
    // array takes at most this many items, so it never opens an item no value can fill.
    int64_t distinct = -1;
    int64_t min_items = 0, max_items = -1;  // kArray; -1: no bound
    std::vector<std::string> literals;    // kLiterals: serialized JSON values
    std::vector<int32_t> alternatives;    // kAnyOf
    int32_t regex = -1;                   // kPattern
    int64_t min_length = 0, max_length = -1;  // kString, kPattern: characters; -1: no bound
    bool bounded = false;                 // kInteger / kNumber with minimum / maximum
    int64_t min_value = INT64_MIN, max_value = INT64_MAX;  // kInteger: inclusive
    int64_t multiple_of = 1;              // kInteger: multipleOf (bounded when above 1)
    // kNumber: the bounds as doubles, each inclusive unless marked open (exclusive*).
    double min_real = -HUGE_VAL, max_real = HUGE_VAL;
    bool min_open = false, max_open = false;
    std::bitset<256> first;               // bytes a value of this node may start with
    // kObject standing for a union of objects told apart by a tag: its one property is the
    // tag (kLiterals, every branch's values); once the tag's value is written, the object
    // goes on as tag_branches[literal] (a branch with the tag as its first property).
    std::vector<int32_t> tag_branches;
    // kObject standing for a union of objects told apart by their first key: its properties are
    // every branch's possible first keys, and once one is written the object goes on as
    // key_branches[property] (that branch, at that property).
    struct KeyBranch {
      int32_t node;
      int32_t property;
    };
    std::vector<KeyBranch> key_branches;
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<ByteRegex>& regexes() const { return regexes_; }
  int32_t root() const { return 0; }
  // Some array's unique items are not literals (UniqueItems in engine/json_constraint.h keeps
  // them apart).
  bool unique_values() const { return unique_values_; }

 private:
  friend class SchemaCompiler;
  std::vector<Node> nodes_;
  std::vector<ByteRegex> regexes_;
  bool unique_values_ = false;
};

// Compiled schemas by their text, so that requests with one schema share one JsonSchema (and
// with it the masks of its grammar's states, engine/json_constraint.h). Thread-safe; keeps the
// `capacity` most recently used.
class SchemaCache {
 public:
  explicit SchemaCache(size_t capacity = 32) : capacity_(capacity) {}
  absl::StatusOr<std::shared_ptr<const JsonSchema>> Compile(const nlohmann::ordered_json& schema,
                                                            bool object_root = true);

 private:
  struct Entry {
    std::string text;
    std::shared_ptr<const JsonSchema> schema;
    uint64_t last_use;
  };
  const size_t capacity_;
  absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace peng
