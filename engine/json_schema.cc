#include "engine/json_schema.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

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
      "deprecated", "readOnly", "writeOnly", "additionalProperties", "strict", "$defs", "definitions"};
  return *kSet;
}
const absl::flat_hash_set<std::string>& Enforced() {
  static const auto* kSet = new absl::flat_hash_set<std::string>{
      "type", "properties", "required", "items", "minItems", "maxItems", "enum", "const",
      "anyOf", "oneOf", "allOf", "$ref", "pattern", "minLength", "maxLength", "minimum", "maximum",
      "exclusiveMinimum", "exclusiveMaximum"};
  return *kSet;
}

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("json_schema", path, ": ", what));
}

bool IsWhitespace(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool HasLength(const Node& n) { return n.min_length > 0 || n.max_length >= 0; }

// Counts byte c of a string's text against the node's maxLength: a byte that starts a character
// (not a UTF-8 continuation byte) takes one more, refused past the bound.
bool CountCharacter(const Node& n, uint8_t c, uint16_t* count) {
  if ((c & 0xC0) == 0x80) return true;
  if (n.max_length >= 0 && *count >= n.max_length) return false;
  ++*count;
  return true;
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
                                               "') are not supported: JSON mode chooses a branch by its first byte"));
          }
        }
      }
    }
    *out = std::move(nodes_);
    return absl::OkStatus();
  }

 private:
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
    } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
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
    if (type == "number") {
      for (const char* key : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
        if (s.contains(key)) return Bad(absl::StrCat(path, ".", key), "bounds are supported on integers only");
      }
      return Add(Primitive(Kind::kNumber), path);
    }
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
  // up to 6 fraction digits.
  static const char* FormatPattern(const std::string& format) {
    static const auto* kFormats = new absl::flat_hash_map<std::string, const char*>{
        {"date", R"(^[1-9]\d{3}-((0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)$)"},
        {"date-time", R"(^[1-9]\d{3}-((0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?$)"},
        {"time", R"(^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?$)"},
        {"uuid", R"(^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$)"},
        {"email", R"(^[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$)"},
        {"uri", R"(^https?://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:\d{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?(\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]*)?$)"},
                {"ipv4", R"(^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$)"},
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
  // draft 4's booleans beside minimum / maximum).
  absl::StatusOr<int32_t> Integer(const Json& s, const std::string& path) {
    Node n = Primitive(Kind::kInteger);
    constexpr double kLimit = 9.2e18;  // inside int64 either way
    const auto bound = [&](const char* key, bool upper, bool exclusive) -> absl::Status {
      const auto it = s.find(key);
      if (it == s.end() || it->is_boolean()) return absl::OkStatus();
      if (!it->is_number()) return Bad(absl::StrCat(path, ".", key), "must be a number");
      const double v = it->get<double>();
      if (!(v > -kLimit && v < kLimit)) return Bad(absl::StrCat(path, ".", key), "must lie within 64-bit integers");
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
      n.bounded = true;
      return absl::OkStatus();
    };
    PENG_RETURN_IF_ERROR(bound("minimum", false, false));
    PENG_RETURN_IF_ERROR(bound("maximum", true, false));
    PENG_RETURN_IF_ERROR(bound("exclusiveMinimum", false, true));
    PENG_RETURN_IF_ERROR(bound("exclusiveMaximum", true, true));
    if (n.min_value > n.max_value) return Bad(path, "no integer lies within its bounds");
    if (n.bounded) {
      n.first.reset();
      if (n.min_value < 0) n.first.set('-');
      for (char c = '0'; c <= '9'; ++c) n.first.set(c);
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
    if (n.max_items >= 0 && n.min_items > n.max_items) return Bad(path, "minItems exceeds maxItems");
    if (const auto it = s.find("items"); it != s.end()) {
      PENG_ASSIGN_OR_RETURN(n.items, Compile(*it, path + ".items"));
    } else {
      n.items = Add(Primitive(Kind::kAny), path + ".items");
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

absl::StatusOr<std::shared_ptr<const JsonSchema>> JsonSchema::Compile(const Json& schema) {
  SchemaCompiler compiler(schema);
  PENG_ASSIGN_OR_RETURN(const int32_t root, compiler.Compile(schema, ""));
  auto out = std::make_shared<JsonSchema>();
  PENG_RETURN_IF_ERROR(compiler.Finish(&out->nodes_, &out->regexes_));
  if (out->nodes_[root].kind != Node::Kind::kObject) {
    return Bad("", "the top level must be an object schema (type \"object\")");
  }
  if (root != 0) std::swap(out->nodes_[0], out->nodes_[root]);  // root() is node 0
  if (root != 0) {
    // Renumber references to the two swapped nodes.
    const auto fix = [&](int32_t& i) { i = i == 0 ? root : i == root ? 0 : i; };
    for (Node& n : out->nodes_) {
      for (Property& p : n.properties) fix(p.node);
      if (n.items >= 0) fix(n.items);
      for (int32_t& a : n.alternatives) fix(a);
    }
  }
  return std::shared_ptr<const JsonSchema>(std::move(out));
}

// --- SchemaGrammar --------------------------------------------------------------------------

namespace {

// Object and array phases (Frame::phase).
enum : uint8_t {
  kObjOpen,        // after '{': a key or '}'
  kObjKey,         // inside a key: candidates still matching, pos bytes matched
  kObjColon,       // after a key
  kObjValueStart,  // after ':'
  kObjValue,       // the value is open (a frame above)
  kObjAfter,       // after a value: ',' or '}'
  kObjNext,        // after ',': a key
  kArrOpen,        // after '[': a value or ']'
  kArrValue,
  kArrAfter,
  kArrNext,
  kMapOpen,        // after '{': a key or '}'
  kMapKey,         // inside a key (the embedded grammar reads it)
  kMapColon,
  kMapValueStart,
  kMapValue,
  kMapAfter,
  kMapNext,
};

}  // namespace

SchemaGrammar::SchemaGrammar(const JsonSchema* schema) : schema_(schema) {
  static_assert(sizeof(Frame) <= 40 && alignof(Frame) <= 8 && std::is_trivially_copyable_v<Frame>,
                "storage_ holds kMaxDepth frames of at most 40 bytes, copied as bytes");
}

SchemaGrammar& SchemaGrammar::operator=(const SchemaGrammar& other) {
  schema_ = other.schema_;
  depth_ = other.depth_;
  whitespace_ = other.whitespace_;
  done_ = other.done_;
  std::memcpy(storage_, other.storage_, other.depth_ * sizeof(Frame));
  return *this;
}

bool operator==(const SchemaGrammar& a, const SchemaGrammar& b) {
  if (a.schema_ != b.schema_ || a.depth_ != b.depth_ || a.whitespace_ != b.whitespace_ || a.done_ != b.done_) {
    return false;
  }
  for (int i = 0; i < a.depth_; ++i) {
    const SchemaGrammar::Frame &x = a.frames()[i], &y = b.frames()[i];
    if (x.node != y.node || x.phase != y.phase || x.pos != y.pos || x.prop != y.prop ||
        x.candidates != y.candidates || !(x.sub == y.sub)) {
      return false;
    }
  }
  return true;
}

bool SchemaGrammar::InPlainString() const {
  if (depth_ == 0) return false;
  const Frame& f = frames()[depth_ - 1];
  const Kind k = NodeOf(f).kind;
  const bool counted = k == Kind::kString && HasLength(NodeOf(f));  // each byte moves the count
  return ((k == Kind::kString && !counted) || k == Kind::kAny || (k == Kind::kMap && f.phase == kMapKey)) &&
         f.sub.InPlainString();
}

bool SchemaGrammar::Advance(uint8_t c) {
  if (!IsWhitespace(c)) whitespace_ = 0;
  for (;;) {
    const Result r = FeedFrame(c);
    if (r == kTaken) return true;
    if (r == kRefused) return false;
    PopValue();  // kEnded: the top frame closed without the byte; its parent reads it
  }
}

void SchemaGrammar::PopValue() {
  --depth_;
  if (depth_ == 0) {
    done_ = true;
    return;
  }
  Frame& parent = frames()[depth_ - 1];
  if (parent.phase == kObjValue) parent.phase = kObjAfter;
  if (parent.phase == kMapValue) parent.phase = kMapAfter;
  if (parent.phase == kArrValue) {
    parent.phase = kArrAfter;
    ++parent.pos;
  }
}

bool SchemaGrammar::Push(int32_t node) {
  if (depth_ == kMaxDepth) return false;
  Frame* f = new (&frames()[depth_++]) Frame{};
  f->node = node;
  return true;
}

namespace {

// Whether some integer written as `negative` sign, the digits of `magnitude` (`digits` of
// them, 0 when only the sign is there) and maybe more digits lies in [lo, hi]. A leading zero
// takes no more digits (JSON).
bool IntegerReachable(bool negative, uint64_t magnitude, int digits, int64_t lo, int64_t hi) {
  const auto meets = [&](uint64_t a, uint64_t b) {  // magnitudes [a, b] with the sign
    if (a > static_cast<uint64_t>(INT64_MAX) + (negative ? 1 : 0)) return false;
    b = std::min<uint64_t>(b, static_cast<uint64_t>(INT64_MAX) + (negative ? 1 : 0));
    // The values: [a, b] or [-b, -a].
    if (!negative) return static_cast<int64_t>(a) <= hi && static_cast<int64_t>(b) >= lo;
    const int64_t top = a == 0 ? 0 : -static_cast<int64_t>(a - 1) - 1;
    const int64_t bottom = -static_cast<int64_t>(b - 1) - 1;
    return bottom <= hi && top >= lo;
  };
  if (digits == 0) return meets(0, UINT64_MAX);
  if (magnitude == 0) return meets(0, 0);
  uint64_t span = 1;  // magnitude followed by k more digits: [m·10^k, m·10^k + 10^k - 1]
  for (uint64_t m = magnitude; m <= static_cast<uint64_t>(INT64_MAX) + 1; m *= 10, span *= 10) {
    if (meets(m, m + span - 1)) return true;
    if (m > UINT64_MAX / 10) break;
  }
  return false;
}

}  // namespace

// One byte of a bounded integer: phase = negative, candidates = magnitude, pos = digits.
bool SchemaGrammar::BoundedDigit(const JsonSchema::Node& n, Frame& f, uint8_t c) {
  if (c == '-') {
    if (f.pos != 0 || f.phase != 0) return false;
    f.phase = 1;
    return IntegerReachable(true, 0, 0, n.min_value, n.max_value);
  }
  if (f.pos == 1 && f.candidates == 0) return false;  // after a leading zero
  if (f.candidates > (UINT64_MAX - 9) / 10) return false;
  const uint64_t m = f.candidates * 10 + (c - '0');
  if (!IntegerReachable(f.phase != 0, m, f.pos + 1, n.min_value, n.max_value)) return false;
  f.candidates = m;
  ++f.pos;
  return true;
}

SchemaGrammar::Result SchemaGrammar::StartValue(int32_t node, uint8_t c) {
  const auto& nodes = schema_->nodes();
  while (nodes[node].kind == Kind::kAnyOf) {  // branches start with different bytes (Compile)
    int32_t next = -1;
    for (const int32_t a : nodes[node].alternatives) {
      if (nodes[a].first[c]) next = a;
    }
    if (next < 0) return kRefused;
    node = next;
  }
  const Node& n = nodes[node];
  if (!n.first[c] || !Push(node)) return kRefused;
  Frame& f = frames()[depth_ - 1];
  switch (n.kind) {
    case Kind::kObject:
      f.phase = kObjOpen;
      return kTaken;
    case Kind::kArray:
      f.phase = kArrOpen;
      return kTaken;
    case Kind::kMap:
      f.phase = kMapOpen;
      return kTaken;
    case Kind::kPattern:
      f.pos = schema_->regexes()[n.regex].start();
      return kTaken;
    case Kind::kInteger:
      if (n.bounded) {
        f.phase = 0;  // see BoundedDigit
        return BoundedDigit(n, f, c) ? kTaken : kRefused;
      }
      f.sub.Feed(c);
      return kTaken;
    case Kind::kLiterals:
      for (size_t i = 0; i < n.literals.size(); ++i) {
        if (static_cast<uint8_t>(n.literals[i][0]) == c) f.candidates |= uint64_t{1} << i;
      }
      f.pos = 1;
      return kTaken;
    default:
      f.sub.Feed(c);  // a first byte of this kind: always taken
      return kTaken;
  }
}

SchemaGrammar::Result SchemaGrammar::FeedFrame(uint8_t c) {
  const auto take_whitespace = [&] {
    if (whitespace_ == JsonGrammar::kMaxWhitespace) return kRefused;
    ++whitespace_;
    return kTaken;
  };
  if (depth_ == 0) {
    if (IsWhitespace(c)) return take_whitespace();
    if (done_) return kRefused;
    return StartValue(schema_->root(), c);
  }
  Frame& f = frames()[depth_ - 1];
  const Node& n = NodeOf(f);
  // Closes the top frame after it took its last byte (a container's bracket, a string's quote).
  const auto close = [&] {
    PopValue();
    return kTaken;
  };
  switch (n.kind) {
    case Kind::kObject: {
      // Keys from property f.pos on, skipping optional ones only.
      const auto key_candidates = [&] {
        uint64_t m = 0;
        for (size_t i = f.pos; i < n.properties.size(); ++i) {
          m |= uint64_t{1} << i;
          if (n.properties[i].required) break;
        }
        return m;
      };
      const auto may_close = [&] {
        for (size_t i = f.pos; i < n.properties.size(); ++i) {
          if (n.properties[i].required) return false;
        }
        return true;
      };
      switch (f.phase) {
        case kObjOpen:
        case kObjNext:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == '}' && f.phase == kObjOpen) return may_close() ? close() : kRefused;
          if (c != '"' || key_candidates() == 0) return kRefused;
          f.candidates = key_candidates();
          f.phase = kObjKey;
          f.prop = 1;  // key bytes matched (the opening quote)
          return kTaken;
        case kObjKey: {
          uint64_t next = 0;
          for (uint64_t m = f.candidates; m != 0; m &= m - 1) {
            const int i = __builtin_ctzll(m);
            const std::string& key = n.properties[i].key;
            if (key.size() > f.prop && static_cast<uint8_t>(key[f.prop]) == c) next |= uint64_t{1} << i;
          }
          if (next == 0) return kRefused;
          f.candidates = next;
          ++f.prop;
          for (uint64_t m = next; m != 0; m &= m - 1) {
            const int i = __builtin_ctzll(m);
            if (n.properties[i].key.size() == f.prop) {  // the closing quote: this key
              f.pos = static_cast<uint16_t>(i + 1);
              f.prop = static_cast<uint16_t>(i);
              f.phase = kObjColon;
            }
          }
          return kTaken;
        }
        case kObjColon:
          if (IsWhitespace(c)) return take_whitespace();
          if (c != ':') return kRefused;
          f.phase = kObjValueStart;
          return kTaken;
        case kObjValueStart: {
          if (IsWhitespace(c)) return take_whitespace();
          const int32_t child = n.properties[f.prop].node;
          f.phase = kObjValue;
          return StartValue(child, c);
        }
        case kObjAfter:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == '}') return may_close() ? close() : kRefused;
          if (c != ',' || key_candidates() == 0) return kRefused;
          f.phase = kObjNext;
          return kTaken;
        default:
          return kRefused;  // kObjValue: the value's frame is above
      }
    }
    case Kind::kPattern: {  // pos: the DFA state; prop: characters; candidates: UTF-8 bytes due
      const ByteRegex& re = schema_->regexes()[n.regex];
      const bool in_character = f.candidates > 0;
      if (!in_character && c == '"') return re.Accepting(f.pos) && f.prop >= n.min_length ? close() : kRefused;
      const int more = in_character ? ((c & 0xC0) == 0x80 ? 0 : -1) : JsonGrammar::Utf8Continuations(c);
      const uint16_t next = re.Next(f.pos, c);
      if (more < 0 || next == ByteRegex::kDead) return kRefused;
      if (!in_character && !CountCharacter(n, c, &f.prop)) return kRefused;
      f.candidates = in_character ? f.candidates - 1 : static_cast<uint64_t>(more);
      f.pos = next;
      return kTaken;
    }
    case Kind::kMap:
      switch (f.phase) {
        case kMapOpen:
        case kMapNext:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == '}' && f.phase == kMapOpen) return close();
          if (c != '"') return kRefused;
          f.sub = JsonGrammar(true);
          f.sub.Advance(c);
          f.phase = kMapKey;
          return kTaken;
        case kMapKey:
          if (!f.sub.Feed(c)) return kRefused;
          if (f.sub.Complete()) f.phase = kMapColon;
          return kTaken;
        case kMapColon:
          if (IsWhitespace(c)) return take_whitespace();
          if (c != ':') return kRefused;
          f.phase = kMapValueStart;
          return kTaken;
        case kMapValueStart:
          if (IsWhitespace(c)) return take_whitespace();
          f.phase = kMapValue;
          return StartValue(n.items, c);
        case kMapAfter:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == '}') return close();
          if (c != ',') return kRefused;
          f.phase = kMapNext;
          return kTaken;
        default:
          return kRefused;  // kMapValue: the value's frame is above
      }
    case Kind::kArray: {
      const bool may_close = f.pos >= n.min_items;
      const bool may_add = n.max_items < 0 || f.pos < n.max_items;
      const auto start_item = [&] {
        f.phase = kArrValue;
        return StartValue(n.items, c);
      };
      switch (f.phase) {
        case kArrOpen:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == ']') return may_close ? close() : kRefused;
          if (!may_add) return kRefused;
          return start_item();
        case kArrAfter:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == ']') return may_close ? close() : kRefused;
          if (c != ',' || !may_add) return kRefused;
          f.phase = kArrNext;
          return kTaken;
        case kArrNext:
          if (IsWhitespace(c)) return take_whitespace();
          return start_item();
        default:
          return kRefused;
      }
    }
    case Kind::kLiterals: {
      uint64_t next = 0;
      bool complete = false;
      for (uint64_t m = f.candidates; m != 0; m &= m - 1) {
        const int i = __builtin_ctzll(m);
        const std::string& lit = n.literals[i];
        if (lit.size() > f.pos && static_cast<uint8_t>(lit[f.pos]) == c) next |= uint64_t{1} << i;
        if (lit.size() == f.pos) complete = true;
      }
      if (next != 0) {
        f.candidates = next;
        ++f.pos;
        return kTaken;
      }
      return complete ? kEnded : kRefused;
    }
    case Kind::kInteger:
      if (n.bounded) {
        if (c >= '0' && c <= '9') return BoundedDigit(n, f, c) ? kTaken : kRefused;
        if (c == '.' || c == 'e' || c == 'E' || f.pos == 0) return kRefused;
        const int64_t v = f.phase ? -static_cast<int64_t>(f.candidates) : static_cast<int64_t>(f.candidates);
        return v >= n.min_value && v <= n.max_value ? kEnded : kRefused;
      }
      [[fallthrough]];
    default: {  // a string, a number or a free-form value, in the embedded grammar
      if (f.sub.Complete()) return kEnded;
      if (n.kind == Kind::kString && HasLength(n) && f.sub.InPlainString()) {
        // Outside escapes: a quote ends the string, a lead byte or a backslash starts a
        // character (an escape's other bytes and UTF-8 continuation bytes do not).
        if (c == '"' && f.prop < n.min_length) return kRefused;
        if (c != '"' && !CountCharacter(n, c, &f.prop)) return kRefused;
      }
      const bool integer_refuses = n.kind == Kind::kInteger && (c == '.' || c == 'e' || c == 'E');
      if (!integer_refuses && f.sub.Feed(c)) {
        // A closed string or container ends the value now; a number waits for the next byte.
        if (f.sub.Complete() && !IsWhitespace(c)) return close();
        return kTaken;
      }
      return f.sub.CanEnd() ? kEnded : kRefused;
    }
  }
}

}  // namespace peng
