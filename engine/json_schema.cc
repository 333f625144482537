#include "engine/json_schema.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"

namespace peng {
namespace {

using Json = nlohmann::ordered_json;
using Node = JsonSchema::Node;
using Kind = JsonSchema::Node::Kind;

// Keywords that only describe: a document is valid whatever they say. additionalProperties is
// here because the output holds declared properties only, which it can never forbid.
const absl::flat_hash_set<std::string>& Annotations() {
  static const auto* kSet = new absl::flat_hash_set<std::string>{
      "title", "description", "default", "examples", "format", "$schema", "$id", "$comment",
      "deprecated", "readOnly", "writeOnly", "additionalProperties", "strict", "$defs", "definitions",
      "discriminator" /* OpenAPI's hint: the tag is found from the branches themselves */};
  return *kSet;
}
const absl::flat_hash_set<std::string>& Enforced() {
  static const auto* kSet = new absl::flat_hash_set<std::string>{
      "type", "properties", "required", "items", "prefixItems", "minItems", "maxItems", "uniqueItems", "enum", "const",
      "anyOf", "oneOf", "allOf", "$ref", "pattern", "minLength", "maxLength", "minimum", "maximum",
      "exclusiveMinimum", "exclusiveMaximum", "multipleOf"};
  return *kSet;
}

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("json_schema", path, ": ", what));
}

}  // namespace

// Schema JSON → nodes. $refs are resolved against the root (recursion through a placeholder
// node that is filled once its target is compiled); first-byte sets are a fixpoint at the end.
class SchemaCompiler {
 public:
  explicit SchemaCompiler(const Json& root) : root_(root) {}

  absl::StatusOr<int32_t> Compile(const Json& s, const std::string& path) {
    if (++depth_ > 64) return Bad(path, "nested deeper than 64 schemas");
    auto result = CompileInner(s, path);
    --depth_;
    return result;
  }

  absl::Status Finish(std::vector<Node>* out, std::vector<ByteRegex>* regexes) {
    *regexes = std::move(regexes_);
    // First bytes: a fixpoint (references may form cycles).
    for (bool changed = true; changed;) {
      changed = false;
      for (Node& n : nodes_) {
        std::bitset<256> f = n.first;
        if (n.kind == Kind::kAnyOf) {
          for (int32_t a : n.alternatives) f |= nodes_[a].first;
        }
        if (f != n.first) {
          n.first = f;
          changed = true;
        }
      }
    }
    for (Node& n : nodes_) {
      if (n.kind == Kind::kLiterals) n.distinct = static_cast<int64_t>(n.literals.size());
      if (n.kind == Kind::kInteger && n.bounded) {  // the multiples within the bounds
        const __int128 count =
            FloorDiv(n.max_value, n.multiple_of) - FloorDiv(static_cast<__int128>(n.min_value) - 1, n.multiple_of);
        n.distinct = count <= (__int128{1} << 62) ? static_cast<int64_t>(count) : -1;
      }
    }
    // Unique items other than literals are told apart outside the grammar, one array at a
    // time: none of them may hold another (items are known now: $refs are filled).
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (UniqueValues(nodes_[i]) && ReachesUniqueValues(nodes_[i].items)) {
        return Bad(paths_[i], "uniqueItems inside the items of another uniqueItems array is supported only "
                              "for enum or const items");
      }
    }
    const size_t compiled = nodes_.size();  // TagUnion adds nodes (none of them an anyOf)
    for (size_t i = 0; i < compiled; ++i) {
      if (nodes_[i].kind == Kind::kAnyOf) TagUnion(static_cast<int32_t>(i));
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      const Node& n = nodes_[i];
      if (n.kind != Kind::kAnyOf) continue;
      for (size_t a = 0; a < n.alternatives.size(); ++a) {
        for (size_t b = a + 1; b < n.alternatives.size(); ++b) {
          const std::bitset<256> both = nodes_[n.alternatives[a]].first & nodes_[n.alternatives[b]].first;
          if (both.any()) {
            int c = 0;
            while (!both[c]) ++c;
            return Bad(paths_[i], absl::StrCat("anyOf/oneOf alternatives that can start with the same byte ('",
                                               std::string(1, static_cast<char>(c)),
                                               "') are not supported: JSON mode chooses a branch by its first byte, "
                                               "or objects by a tag (a property every branch requires, with const or enum "
                                               "values no two branches share) or by their first key"));
          }
        }
      }
    }
    *out = std::move(nodes_);
    return absl::OkStatus();
  }

 private:
  bool UniqueValues(const Node& n) const { return n.unique_items && nodes_[n.items].kind != Kind::kLiterals; }

  // Whether an array of unique non-literal items lies within the values of node `from`.
  bool ReachesUniqueValues(int32_t from) const {
    std::vector<bool> seen(nodes_.size());
    std::vector<int32_t> todo{from};
    while (!todo.empty()) {
      const int32_t i = todo.back();
      todo.pop_back();
      if (i < 0 || seen[i]) continue;
      seen[i] = true;
      const Node& n = nodes_[i];
      if (UniqueValues(n)) return true;
      for (const JsonSchema::Property& p : n.properties) todo.push_back(p.node);
      for (const JsonSchema::Node::KeyBranch& b : n.key_branches) todo.push_back(b.node);
      todo.insert(todo.end(), n.prefix_items.begin(), n.prefix_items.end());
      todo.insert(todo.end(), n.alternatives.begin(), n.alternatives.end());
      todo.insert(todo.end(), n.tag_branches.begin(), n.tag_branches.end());
      todo.push_back(n.items);
    }
    return false;
  }

  // The object alternatives of anyOf node `u`, when two or more, become one kObject node with
  // tag_branches, if a tag tells them apart: the first property (in the first object's order)
  // that every object requires, whose values are literals and no two objects share one.
  // Otherwise the alternatives stay as they are (and Finish reports the overlap).
  void TagUnion(int32_t u) {
    std::vector<int32_t> objects, others;
    for (const int32_t a : nodes_[u].alternatives) (nodes_[a].kind == Kind::kObject ? objects : others).push_back(a);
    if (objects.size() < 2) return;
    const auto tag_of = [&](int32_t object, const std::string& key) -> int {  // property index, or -1
      const std::vector<JsonSchema::Property>& props = nodes_[object].properties;
      for (size_t p = 0; p < props.size(); ++p) {
        if (props[p].key == key) {
          return props[p].required && nodes_[props[p].node].kind == Kind::kLiterals ? static_cast<int>(p) : -1;
        }
      }
      return -1;
    };
    for (const JsonSchema::Property& candidate : nodes_[objects[0]].properties) {
      const std::string key = candidate.key;
      Node tag;  // every object's tag values, and for each the object it selects
      std::vector<int32_t> branch_of_value;
      absl::flat_hash_set<std::string> seen;
      bool ok = true;
      for (const int32_t o : objects) {
        const int p = tag_of(o, key);
        if (p < 0) {
          ok = false;
          break;
        }
        for (const std::string& value : nodes_[nodes_[o].properties[p].node].literals) {
          ok = ok && seen.insert(value).second;
          tag.literals.push_back(value);
          branch_of_value.push_back(o);
        }
      }
      if (!ok || tag.literals.size() > JsonSchema::kMaxProperties) continue;
      tag = Literals(std::move(tag.literals));
      const int32_t tag_node = Add(std::move(tag), paths_[u]);
      Node merged;
      merged.kind = Kind::kObject;
      merged.first.set('{');
      merged.properties.push_back({key, tag_node, true});
      absl::flat_hash_map<int32_t, int32_t> reordered;  // object -> its copy with the tag first
      for (const int32_t o : objects) {
        Node copy = nodes_[o];
        const int p = tag_of(o, key);
        std::rotate(copy.properties.begin(), copy.properties.begin() + p, copy.properties.begin() + p + 1);
        reordered[o] = Add(std::move(copy), paths_[o]);
      }
      for (const int32_t o : branch_of_value) merged.tag_branches.push_back(reordered[o]);
      others.push_back(Add(std::move(merged), paths_[u]));
      nodes_[u].alternatives = std::move(others);
      return;
    }
    KeyUnion(u, objects, std::move(others));
  }

  // Without a tag: the objects' possible first keys (each one's optional properties up to and
  // including its first required one), when no key is shared, become the properties of one
  // object whose first key picks the branch.
  void KeyUnion(int32_t u, const std::vector<int32_t>& objects, std::vector<int32_t> others) {
    Node merged;
    merged.kind = Kind::kObject;
    merged.first.set('{');
    absl::flat_hash_set<std::string> keys;
    bool may_be_empty = false;
    for (const int32_t o : objects) {
      const std::vector<JsonSchema::Property>& props = nodes_[o].properties;
      size_t p = 0;
      for (; p < props.size(); ++p) {
        if (!keys.insert(props[p].key).second) return;  // a key two branches can start with
        merged.properties.push_back({props[p].key, props[p].node, false});
        merged.key_branches.push_back({o, static_cast<int32_t>(p)});
        if (props[p].required) break;
      }
      may_be_empty = may_be_empty || p == props.size();
    }
    if (merged.properties.empty() || merged.properties.size() > JsonSchema::kMaxProperties) return;
    // `{}` only when some branch allows it: a required last key makes every key a candidate
    // and the object unable to close before one.
    merged.properties.back().required = !may_be_empty;
    others.push_back(Add(std::move(merged), paths_[u]));
    nodes_[u].alternatives = std::move(others);
  }

  int32_t Add(Node n, const std::string& path) {
    nodes_.push_back(std::move(n));
    paths_.push_back(path);
    return static_cast<int32_t>(nodes_.size() - 1);
  }

  static Node Literals(std::vector<std::string> values) {
    Node n;
    n.kind = Kind::kLiterals;
    n.literals = std::move(values);
    for (const std::string& v : n.literals) n.first.set(static_cast<uint8_t>(v[0]));
    return n;
  }

  static Node Primitive(Kind kind) {
    Node n;
    n.kind = kind;
    if (kind == Kind::kString) n.first.set('"');
    if (kind == Kind::kNumber || kind == Kind::kInteger || kind == Kind::kAny) {
      n.first.set('-');
      for (char c = '0'; c <= '9'; ++c) n.first.set(c);
    }
    if (kind == Kind::kAny) {
      for (char c : std::string_view("{[\"tfn")) n.first.set(static_cast<uint8_t>(c));
    }
    return n;
  }

  absl::StatusOr<int32_t> CompileInner(const Json& s, const std::string& path) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) return Bad(path, "the schema false allows no value");
      return Add(Primitive(Kind::kAny), path);
    }
    if (!s.is_object()) return Bad(path, "a schema must be an object or a boolean");
    for (const auto& [key, value] : s.items()) {
      if (!Annotations().contains(key) && !Enforced().contains(key)) {
        return Bad(path, absl::StrCat("the keyword '", key, "' is not supported (supported: ",
                                      absl::StrJoin(std::vector<std::string>(Enforced().begin(), Enforced().end()), ", "),
                                      ", and annotations)"));
      }
    }
    if (const auto it = s.find("$ref"); it != s.end()) return Reference(*it, path + ".$ref");
    if (const auto it = s.find("allOf"); it != s.end()) {
      if (!it->is_array() || it->size() != 1) return Bad(path + ".allOf", "only allOf with one schema is supported");
      return Compile((*it)[0], path + ".allOf[0]");
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (const auto it = s.find(key); it != s.end()) {
        if (!it->is_array() || it->empty()) return Bad(path + "." + key, "must be a non-empty array of schemas");
        if (it->size() == 1) return Compile((*it)[0], absl::StrCat(path, ".", key, "[0]"));
        Node n;
        n.kind = Kind::kAnyOf;
        for (size_t i = 0; i < it->size(); ++i) {
          PENG_ASSIGN_OR_RETURN(const int32_t a, Compile((*it)[i], absl::StrCat(path, ".", key, "[", i, "]")));
          n.alternatives.push_back(a);
        }
        return Add(std::move(n), path);
      }
    }
    if (const auto it = s.find("const"); it != s.end()) return Add(Literals({it->dump()}), path);
    if (const auto it = s.find("enum"); it != s.end()) {
      if (!it->is_array() || it->empty()) return Bad(path + ".enum", "must be a non-empty array");
      if (it->size() > JsonSchema::kMaxProperties) {
        return Bad(path + ".enum", absl::StrCat("at most ", JsonSchema::kMaxProperties, " values are supported"));
      }
      std::vector<std::string> values;
      for (const Json& v : *it) values.push_back(v.dump());
      return Add(Literals(std::move(values)), path);
    }
    std::vector<std::string> types;
    if (const auto it = s.find("type"); it != s.end()) {
      if (it->is_string()) {
        types.push_back(it->get<std::string>());
      } else if (it->is_array() && !it->empty() && std::all_of(it->begin(), it->end(), [](const Json& t) { return t.is_string(); })) {
        for (const Json& t : *it) types.push_back(t.get<std::string>());
      } else {
        return Bad(path + ".type", "must be a type name or a non-empty array of them");
      }
    } else if (s.contains("properties") || s.contains("required")) {
      types.push_back("object");
    } else if (s.contains("items") || s.contains("prefixItems") || s.contains("minItems") || s.contains("maxItems")) {
      types.push_back("array");
    } else if (s.contains("pattern") || s.contains("minLength") || s.contains("maxLength")) {
      types.push_back("string");  // these constrain strings alone: a string is a valid choice
    } else if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") ||
               s.contains("exclusiveMaximum")) {
      types.push_back("integer");  // likewise numbers: an integer within the bounds
    } else {
      return Add(Primitive(Kind::kAny), path);
    }
    if (types.size() == 1) return Typed(s, types[0], path);
    Node n;
    n.kind = Kind::kAnyOf;
    for (const std::string& t : types) {
      PENG_ASSIGN_OR_RETURN(const int32_t a, Typed(s, t, path));
      n.alternatives.push_back(a);
    }
    return Add(std::move(n), path);
  }

  absl::StatusOr<int32_t> Typed(const Json& s, const std::string& type, const std::string& path) {
    if (type == "string") return String(s, path);
    if (type == "number") return Number(s, path);
    if (type == "integer") return Integer(s, path);
    if (type == "boolean") return Add(Literals({"true", "false"}), path);
    if (type == "null") return Add(Literals({"null"}), path);
    if (type == "array") return Array(s, path);
    if (type == "object") return Object(s, path);
    return Bad(path + ".type", absl::StrCat("unknown type '", type, "'"));
  }

  // Formats as patterns: strings that pydantic and the like accept for them. Dates are real
  // calendar dates of years 1000-9999, except February 29 (leap years are left out rather
  // than get February 29 of other years); times have hours 00-23, minutes and seconds 00-59,
  // up to 6 fraction digits; durations have up to 6 digits per part.
  static const char* FormatPattern(const std::string& format) {
    static const auto* kFormats = new absl::flat_hash_map<std::string, const char*>{
        {"date", R"(^[1-9]\d{3}-((0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)$)"},
        {"date-time", R"(^[1-9]\d{3}-((0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?$)"},
        {"time", R"(^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?$)"},
        {"uuid", R"(^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$)"},
        {"email", R"(^[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$)"},
        {"uri", R"(^https?://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:\d{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?(\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]*)?$)"},
        {"ipv4", R"(^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$)"},
        // ISO 8601 durations (pydantic's timedelta): P, then years, months, weeks and days
        // and/or T and hours, minutes and seconds, at least one of each part that is there.
        {"duration",
         R"(^-?P((\d{1,6}Y(\d{1,6}M)?(\d{1,6}W)?(\d{1,6}D)?|\d{1,6}M(\d{1,6}W)?(\d{1,6}D)?|\d{1,6}W(\d{1,6}D)?|\d{1,6}D))"
         R"((T(\d{1,6}H(\d{1,6}M)?(\d{1,6}(\.\d{1,6})?S)?|\d{1,6}M(\d{1,6}(\.\d{1,6})?S)?|\d{1,6}(\.\d{1,6})?S))?|)"
         R"(T(\d{1,6}H(\d{1,6}M)?(\d{1,6}(\.\d{1,6})?S)?|\d{1,6}M(\d{1,6}(\.\d{1,6})?S)?|\d{1,6}(\.\d{1,6})?S))$)"},
    };
    const auto it = kFormats->find(format);
    return it == kFormats->end() ? nullptr : it->second;
  }

  absl::StatusOr<int32_t> String(const Json& s, const std::string& path) {
    const char* pattern = nullptr;
    std::string owned;
    if (const auto it = s.find("pattern"); it != s.end()) {
      if (!it->is_string()) return Bad(path + ".pattern", "must be a string");
      owned = it->get<std::string>();
      pattern = owned.c_str();
    } else if (const auto f = s.find("format"); f != s.end() && f->is_string()) {
      pattern = FormatPattern(f->get<std::string>());
    }
    Node n = Primitive(Kind::kString);
    for (const char* key : {"minLength", "maxLength"}) {
      if (const auto it = s.find(key); it != s.end()) {
        if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 65535) {
          return Bad(absl::StrCat(path, ".", key), "must be an integer in [0, 65535]");
        }
        (key[1] == 'i' ? n.min_length : n.max_length) = it->get<int64_t>();
      }
    }
    if (n.max_length >= 0 && n.min_length > n.max_length) return Bad(path, "minLength exceeds maxLength");
    if (pattern != nullptr) {
      absl::StatusOr<ByteRegex> re = ByteRegex::Compile(pattern);
      if (!re.ok()) return Bad(path + ".pattern", re.status().message());
      n.kind = Kind::kPattern;
      n.regex = static_cast<int32_t>(regexes_.size());
      regexes_.push_back(*std::move(re));
    }
    return Add(std::move(n), path);
  }

  // Integer bounds, inclusive, from minimum / maximum and their exclusive forms (numbers, or
  // draft 4's booleans beside minimum / maximum), and a whole multipleOf. A bounded integer
  // lies within int64: a bound beyond it holds the output there instead (every such output
  // meets the bound).
  absl::StatusOr<int32_t> Integer(const Json& s, const std::string& path) {
    Node n = Primitive(Kind::kInteger);
    constexpr double kLimit = 9.2e18;  // inside int64 either way
    const auto bound = [&](const char* key, bool upper, bool exclusive) -> absl::Status {
      const auto it = s.find(key);
      if (it == s.end() || it->is_boolean()) return absl::OkStatus();
      if (!it->is_number()) return Bad(absl::StrCat(path, ".", key), "must be a number");
      const double v = it->get<double>();
      if (std::isnan(v)) return Bad(absl::StrCat(path, ".", key), "must be a number");
      if (upper ? v <= -kLimit : v >= kLimit) {
        return Bad(absl::StrCat(path, ".", key), "leaves no 64-bit integer within the bounds");
      }
      n.bounded = true;
      if (upper ? v >= kLimit : v <= -kLimit) return absl::OkStatus();  // int64's own limit is tighter
      const auto ex = s.find(upper ? "exclusiveMaximum" : "exclusiveMinimum");
      const bool draft4_exclusive = !exclusive && ex != s.end() && ex->is_boolean() && ex->get<bool>();
      int64_t b;
      if (upper) {
        b = static_cast<int64_t>(std::floor(v));
        if ((exclusive || draft4_exclusive) && static_cast<double>(b) == v) --b;
        n.max_value = std::min(n.max_value, b);
      } else {
        b = static_cast<int64_t>(std::ceil(v));
        if ((exclusive || draft4_exclusive) && static_cast<double>(b) == v) ++b;
        n.min_value = std::max(n.min_value, b);
      }
      return absl::OkStatus();
    };
    PENG_RETURN_IF_ERROR(bound("minimum", false, false));
    PENG_RETURN_IF_ERROR(bound("maximum", true, false));
    PENG_RETURN_IF_ERROR(bound("exclusiveMinimum", false, true));
    PENG_RETURN_IF_ERROR(bound("exclusiveMaximum", true, true));
    if (const auto it = s.find("multipleOf"); it != s.end()) {
      const double k = it->is_number() ? it->get<double>() : 0;
      if (!(k > 0) || k != std::floor(k) || k >= kLimit) {
        return Bad(path + ".multipleOf", "on integers, must be a whole number above 0 (within 64-bit integers)");
      }
      n.multiple_of = static_cast<int64_t>(k);
      if (n.multiple_of > 1) n.bounded = true;  // the bounded reader tracks the value
    }
    if (n.min_value > n.max_value) return Bad(path, "no integer lies within its bounds");
    if (FloorDiv(n.max_value, n.multiple_of) * n.multiple_of < n.min_value) {
      return Bad(path, absl::StrCat("no multiple of ", n.multiple_of, " lies within its bounds"));
    }
    if (n.bounded) {
      n.first.reset();
      if (n.min_value < 0) n.first.set('-');
      for (char c = '0'; c <= '9'; ++c) n.first.set(c);
    }
    return Add(std::move(n), path);
  }

  // Number bounds from minimum / maximum and their exclusive forms (numbers, or draft 4's
  // booleans beside minimum / maximum); the tightest of each side wins.
  absl::StatusOr<int32_t> Number(const Json& s, const std::string& path) {
    if (const auto it = s.find("multipleOf"); it != s.end()) {
      // A whole multipleOf: the number is an integer multiple of it, written as an integer.
      const double k = it->is_number() ? it->get<double>() : 0;
      if (!(k > 0) || k != std::floor(k)) {
        return Bad(path + ".multipleOf", "on numbers, only a whole multipleOf is supported (the output is then "
                                         "an integer)");
      }
      return Integer(s, path);
    }
    Node n = Primitive(Kind::kNumber);
    struct Bound {
      const char* key;
      bool upper, exclusive;
    };
    for (const auto& [key, upper, exclusive_key] : {Bound{"minimum", false, false}, Bound{"maximum", true, false},
                                                    Bound{"exclusiveMinimum", false, true},
                                                    Bound{"exclusiveMaximum", true, true}}) {
      const auto it = s.find(key);
      if (it == s.end() || it->is_boolean()) continue;
      if (!it->is_number()) return Bad(absl::StrCat(path, ".", key), "must be a number");
      const double v = it->get<double>();
      if (!std::isfinite(v)) return Bad(absl::StrCat(path, ".", key), "must be finite");
      const auto draft4 = s.find(upper ? "exclusiveMaximum" : "exclusiveMinimum");
      const bool open = exclusive_key || (draft4 != s.end() && draft4->is_boolean() && draft4->get<bool>());
      if (upper && (v < n.max_real || (v == n.max_real && open))) {
        n.max_real = v;
        n.max_open = open;
      } else if (!upper && (v > n.min_real || (v == n.min_real && open))) {
        n.min_real = v;
        n.min_open = open;
      }
      n.bounded = true;
    }
    if (n.min_real > n.max_real || (n.min_real == n.max_real && (n.min_open || n.max_open))) {
      return Bad(path, "no number lies within its bounds");
    }
    return Add(std::move(n), path);
  }

  absl::StatusOr<int32_t> Array(const Json& s, const std::string& path) {
    Node n;
    n.kind = Kind::kArray;
    n.first.set('[');
    for (const char* key : {"minItems", "maxItems"}) {
      if (const auto it = s.find(key); it != s.end()) {
        if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 1'000'000) {
          return Bad(absl::StrCat(path, ".", key), "must be an integer in [0, 1000000]");
        }
        (key[1] == 'i' ? n.min_items : n.max_items) = it->get<int64_t>();
      }
    }
    if (const auto it = s.find("prefixItems"); it != s.end()) {
      if (!it->is_array()) return Bad(path + ".prefixItems", "must be an array of schemas");
      for (size_t i = 0; i < it->size(); ++i) {
        PENG_ASSIGN_OR_RETURN(const int32_t item, Compile((*it)[i], absl::StrCat(path, ".prefixItems[", i, "]")));
        n.prefix_items.push_back(item);
      }
    }
    const auto items = s.find("items");
    if (items != s.end() && items->is_boolean() && !items->get<bool>()) {  // nothing after prefixItems
      const int64_t count = static_cast<int64_t>(n.prefix_items.size());
      n.max_items = n.max_items < 0 ? count : std::min(n.max_items, count);
      n.items = Add(Primitive(Kind::kAny), path + ".items");  // never reached
    } else if (items != s.end()) {
      PENG_ASSIGN_OR_RETURN(n.items, Compile(*items, path + ".items"));
    } else {
      n.items = Add(Primitive(Kind::kAny), path + ".items");
    }
    if (n.max_items >= 0 && n.min_items > n.max_items) return Bad(path, "minItems exceeds maxItems");
    if (const auto it = s.find("uniqueItems"); it != s.end()) {
      if (!it->is_boolean()) return Bad(path + ".uniqueItems", "must be a boolean");
      n.unique_items = it->get<bool>();
      if (n.unique_items && !n.prefix_items.empty()) return Bad(path + ".uniqueItems", "is not supported with prefixItems");
    }
    return Add(std::move(n), path);
  }

  absl::StatusOr<int32_t> Object(const Json& s, const std::string& path) {
    Node n;
    n.kind = Kind::kObject;
    n.first.set('{');
    const auto extra = s.find("additionalProperties");
    const auto props = s.find("properties");
    const bool no_properties = (props == s.end() || (props->is_object() && props->empty())) && !s.contains("required");
    if (no_properties && extra != s.end() && (extra->is_object() || (extra->is_boolean() && extra->get<bool>()))) {
      n.kind = Kind::kMap;
      PENG_ASSIGN_OR_RETURN(n.items, Compile(*extra, path + ".additionalProperties"));
      return Add(std::move(n), path);
    }
    absl::flat_hash_set<std::string> required;
    if (const auto it = s.find("required"); it != s.end()) {
      if (!it->is_array()) return Bad(path + ".required", "must be an array of property names");
      for (const Json& r : *it) {
        if (!r.is_string()) return Bad(path + ".required", "must be an array of property names");
        required.insert(r.get<std::string>());
      }
    }
    std::vector<std::string> names;  // declared order (ordered_json)
    if (const auto it = s.find("properties"); it != s.end()) {
      if (!it->is_object()) return Bad(path + ".properties", "must be an object");
      for (auto p = it->begin(); p != it->end(); ++p) names.push_back(p.key());
    }
    for (const std::string& r : required) {
      if (std::find(names.begin(), names.end(), r) == names.end()) names.push_back(r);  // any value
    }
    if (names.size() > JsonSchema::kMaxProperties) {
      return Bad(path + ".properties", absl::StrCat("at most ", JsonSchema::kMaxProperties, " properties are supported"));
    }
    for (const std::string& name : names) {
      JsonSchema::Property p;
      p.key = Json(name).dump();
      p.required = required.contains(name);
      const auto props = s.find("properties");
      if (props != s.end() && props->contains(name)) {
        PENG_ASSIGN_OR_RETURN(p.node, Compile((*props)[name], absl::StrCat(path, ".properties.", name)));
      } else {
        p.node = Add(Primitive(Kind::kAny), path);
      }
      n.properties.push_back(std::move(p));
    }
    return Add(std::move(n), path);
  }

  absl::StatusOr<int32_t> Reference(const Json& ref, const std::string& path) {
    if (!ref.is_string()) return Bad(path, "must be a string");
    const std::string r = ref.get<std::string>();
    if (const auto it = refs_.find(r); it != refs_.end()) return it->second;
    const Json* target = nullptr;
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string_view p(prefix);
      if (r.rfind(p, 0) == 0) {
        const std::string section(p.substr(2, p.size() - 3)), name = r.substr(p.size());
        const auto defs = root_.find(section);
        if (defs != root_.end() && defs->is_object() && defs->contains(name)) target = &(*defs)[name];
      }
    }
    if (target == nullptr) {
      return Bad(path, absl::StrCat("'", r, "' is not a schema under #/$defs or #/definitions of this schema"));
    }
    const int32_t placeholder = Add(Node{}, path);
    refs_[r] = placeholder;
    PENG_ASSIGN_OR_RETURN(const int32_t compiled, Compile(*target, path));
    if (compiled == placeholder) return Bad(path, absl::StrCat("'", r, "' refers to nothing but itself"));
    nodes_[placeholder] = nodes_[compiled];
    return placeholder;
  }

  const Json& root_;
  std::vector<Node> nodes_;
  std::vector<ByteRegex> regexes_;
  std::vector<std::string> paths_;
  absl::flat_hash_map<std::string, int32_t> refs_;
  int depth_ = 0;
};

absl::StatusOr<std::shared_ptr<const JsonSchema>> JsonSchema::Compile(const Json& schema, bool object_root) {
  SchemaCompiler compiler(schema);
  PENG_ASSIGN_OR_RETURN(const int32_t root, compiler.Compile(schema, ""));
  auto out = std::make_shared<JsonSchema>();
  PENG_RETURN_IF_ERROR(compiler.Finish(&out->nodes_, &out->regexes_));
  if (object_root && out->nodes_[root].kind != Node::Kind::kObject) {
    return Bad("", "the top level must be an object schema (type \"object\")");
  }
  if (root != 0) std::swap(out->nodes_[0], out->nodes_[root]);  // root() is node 0
  if (root != 0) {
    // Renumber references to the two swapped nodes.
    const auto fix = [&](int32_t& i) { i = i == 0 ? root : i == root ? 0 : i; };
    for (Node& n : out->nodes_) {
      for (Property& p : n.properties) fix(p.node);
      if (n.items >= 0) fix(n.items);
      for (int32_t& p : n.prefix_items) fix(p);
      for (int32_t& a : n.alternatives) fix(a);
      for (int32_t& b : n.tag_branches) fix(b);
      for (JsonSchema::Node::KeyBranch& b : n.key_branches) fix(b.node);
    }
  }
  for (const Node& n : out->nodes_) {
    out->unique_values_ |= n.unique_items && out->nodes_[n.items].kind != Node::Kind::kLiterals;
  }
  return std::shared_ptr<const JsonSchema>(std::move(out));
}

absl::StatusOr<std::shared_ptr<const JsonSchema>> SchemaCache::Compile(const Json& schema, bool object_root) {
  std::string text = absl::StrCat(object_root ? "o" : "a", schema.dump());
  {
    absl::MutexLock lock(&mu_);
    for (Entry& e : entries_) {
      if (e.text == text) {
        e.last_use = ++clock_;
        return e.schema;
      }
    }
  }
  PENG_ASSIGN_OR_RETURN(std::shared_ptr<const JsonSchema> compiled, JsonSchema::Compile(schema, object_root));
  absl::MutexLock lock(&mu_);
  Entry entry{std::move(text), compiled, ++clock_};
  if (entries_.size() < capacity_) {
    entries_.push_back(std::move(entry));
  } else {
    *std::min_element(entries_.begin(), entries_.end(),
                      [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; }) = std::move(entry);
  }
  return compiled;
}

}  // namespace peng
