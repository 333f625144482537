// The value type of the chat template interpreter: Python/Jinja semantics (undefined, none,
// bool, int, float, str, list/tuple, dict, callable) over shared immutable payloads, so copies
// are cheap. Only namespace() dicts are mutated after creation (by `set ns.attr`). Dict keys
// are strings and keep insertion order, like Python dicts. Not thread-safe: one render owns
// the values it creates; the parsed program only holds immutable literals.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace peng::chat_template_internal {

class Value;
class Renderer;

struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;  // only changes how the value prints: (1, 2) vs [1, 2]
};

struct DictData {
  std::vector<std::pair<std::string, Value>> entries;
  bool is_namespace = false;  // namespace() objects accept `set ns.attr = ...`

  const Value* Find(absl::string_view key) const;
  void Set(std::string key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Globals, bound methods and macros. `args` may be consumed.
using NativeFunction = std::function<absl::StatusOr<Value>(Renderer&, CallArgs& args)>;
struct Callable {
  std::string name;
  NativeFunction fn;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

  Value() = default;  // undefined, no hint
  static Value Undefined(std::string hint);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  static Value List(std::vector<Value> items, bool is_tuple = false);
  static Value Dict(DictData dict);
  static Value Function(std::string name, NativeFunction fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  // bool, int or float (Python's numbers.Number includes bool).
  bool is_number() const { return is_bool() || is_int() || is_float(); }
  // bool or int (usable as an index or count).
  bool is_integral() const { return is_bool() || is_int(); }

  bool bool_value() const { return std::get<bool>(data_); }
  int64_t int_value() const { return is_bool() ? bool_value() : std::get<int64_t>(data_); }
  double number_value() const;  // any number as double
  const std::string& str() const { return *std::get<StrPtr>(data_); }
  const ListData& list() const { return *std::get<ListPtr>(data_); }
  const std::vector<Value>& items() const { return list().items; }
  const DictData& dict() const { return *std::get<DictPtr>(data_); }
  DictData& mutable_dict() const { return *std::get<DictPtr>(data_); }
  const Callable& callable() const { return *std::get<CallablePtr>(data_); }
  // Why it is undefined ("'x' is undefined"); empty for a plain missing value.
  std::string undefined_hint() const;
  // Identity of a list/dict/callable payload (for `is sameas`).
  const void* identity() const;

 private:
  using StrPtr = std::shared_ptr<const std::string>;
  using ListPtr = std::shared_ptr<const ListData>;
  using DictPtr = std::shared_ptr<DictData>;
  using CallablePtr = std::shared_ptr<const Callable>;

  Kind kind_ = Kind::kUndefined;
  std::variant<std::monostate, bool, int64_t, double, StrPtr, ListPtr, DictPtr, CallablePtr>
      data_;
};

// Python truthiness (undefined is false).
bool Truthy(const Value& v);
// Python str(): what {{ v }} prints. Undefined prints as "".
// Containers stop printing once the text passes `limit` (the caller then rejects it).
std::string ToStr(const Value& v, size_t limit = SIZE_MAX);
// Python repr(), used for items inside printed lists and dicts.
std::string Repr(const Value& v, size_t limit = SIZE_MAX);
// Python float repr ("1.0", "1e-05", "inf").
std::string FormatFloat(double d);
// Python type name for messages ("str", "int", "list", "dict", "NoneType", ...).
std::string TypeName(const Value& v);

// Python == (1 == 1.0 == True; lists and dicts compare deeply; undefined == undefined).
bool Equals(const Value& a, const Value& b);
// Python <, as -1/0/1; TypeError for unorderable pairs.
absl::StatusOr<int> Compare(const Value& a, const Value& b);

// json.dumps(v, ensure_ascii=False, indent=indent (<0: none), sort_keys=sort_keys).
// Fails once the text passes `limit` bytes.
absl::StatusOr<std::string> ToJson(const Value& v, int indent, bool sort_keys,
                                   size_t limit = SIZE_MAX);
Value FromJson(const nlohmann::json& j);

// Strings are UTF-8; Python indexes them by code point.
size_t CodePointCount(absl::string_view s);
// Byte offsets of each code point, plus s.size() at the end.
std::vector<size_t> CodePointOffsets(absl::string_view s);
bool IsAscii(absl::string_view s);

}  // namespace peng::chat_template_internal
