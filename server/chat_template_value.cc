#include "server/chat_template_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace peng::chat_template_internal {

const Value* DictData::Find(absl::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void DictData::Set(std::string key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

Value Value::Undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.data_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.data_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.data_ = i;
  return v;
}

Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.data_ = f;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.data_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::List(std::vector<Value> items, bool is_tuple) {
  Value v;
  v.kind_ = Kind::kList;
  auto data = std::make_shared<ListData>();
  data->items = std::move(items);
  data->is_tuple = is_tuple;
  v.data_ = ListPtr(std::move(data));
  return v;
}

Value Value::Dict(DictData dict) {
  Value v;
  v.kind_ = Kind::kDict;
  v.data_ = std::make_shared<DictData>(std::move(dict));
  return v;
}

Value Value::Function(std::string name, NativeFunction fn) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.data_ = std::make_shared<const Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}

double Value::number_value() const {
  if (is_float()) return std::get<double>(data_);
  return static_cast<double>(int_value());
}

std::string Value::undefined_hint() const {
  if (kind_ == Kind::kUndefined && std::holds_alternative<StrPtr>(data_)) {
    return *std::get<StrPtr>(data_);
  }
  return "";
}

const void* Value::identity() const {
  switch (kind_) {
    case Kind::kList: return std::get<ListPtr>(data_).get();
    case Kind::kString: return std::get<StrPtr>(data_).get();
    case Kind::kDict: return std::get<DictPtr>(data_).get();
    case Kind::kCallable: return std::get<CallablePtr>(data_).get();
    default: return nullptr;
  }
}

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return false;
    case Value::Kind::kBool: return v.bool_value();
    case Value::Kind::kInt: return v.int_value() != 0;
    case Value::Kind::kFloat: return v.number_value() != 0.0;
    case Value::Kind::kString: return !v.str().empty();
    case Value::Kind::kList: return !v.items().empty();
    case Value::Kind::kDict: return !v.dict().entries.empty();
    case Value::Kind::kCallable: return true;
  }
  return false;
}

std::string FormatFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's repr layout: fixed for 1e-4 <= |d| < 1e16.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (!sci.empty() && sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits += c;
  }
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp >= 0) {
      std::string int_part = digits.substr(0, std::min<size_t>(digits.size(), exp + 1));
      int_part.append(exp + 1 - int_part.size(), '0');
      std::string frac = digits.size() > static_cast<size_t>(exp + 1) ? digits.substr(exp + 1) : "0";
      out = int_part + "." + frac;
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
    return sign + out;
  }
  std::string out = digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return sign + out + ebuf;
}

namespace {

std::string ReprString(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == quote) {
          out += '\\';
          out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += quote;
  return out;
}

}  // namespace

namespace {

// Appends str(v) (repr for nested items) to *out, stopping once *out passes `limit` so
// hostile self-sharing structures cannot blow up.
void AppendStr(const Value& v, bool nested, size_t limit, std::string* out) {
  if (out->size() > limit) return;
  switch (v.kind()) {
    case Value::Kind::kUndefined: *out += nested ? "Undefined" : ""; return;
    case Value::Kind::kString: *out += nested ? ReprString(v.str()) : v.str(); return;
    case Value::Kind::kNone: *out += "None"; return;
    case Value::Kind::kBool: *out += v.bool_value() ? "True" : "False"; return;
    case Value::Kind::kInt: absl::StrAppend(out, v.int_value()); return;
    case Value::Kind::kFloat: *out += FormatFloat(v.number_value()); return;
    case Value::Kind::kList: {
      const bool tuple = v.list().is_tuple;
      *out += tuple ? "(" : "[";
      const auto& items = v.items();
      for (size_t i = 0; i < items.size() && out->size() <= limit; ++i) {
        if (i > 0) *out += ", ";
        AppendStr(items[i], true, limit, out);
      }
      if (tuple && items.size() == 1) *out += ",";
      *out += tuple ? ")" : "]";
      return;
    }
    case Value::Kind::kDict: {
      if (v.dict().is_namespace) {
        *out += "<Namespace>";
        return;
      }
      *out += "{";
      bool first = true;
      for (const auto& [k, item] : v.dict().entries) {
        if (out->size() > limit) break;
        if (!first) *out += ", ";
        first = false;
        *out += ReprString(k) + ": ";
        AppendStr(item, true, limit, out);
      }
      *out += "}";
      return;
    }
    case Value::Kind::kCallable: absl::StrAppend(out, "<function ", v.callable().name, ">"); return;
  }
}

}  // namespace

std::string ToStr(const Value& v, size_t limit) {
  if (v.is_string()) return v.str();
  std::string out;
  AppendStr(v, false, limit, &out);
  return out;
}

std::string Repr(const Value& v, size_t limit) {
  std::string out;
  AppendStr(v, true, limit, &out);
  return out;
}

std::string TypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return "Undefined";
    case Value::Kind::kNone: return "NoneType";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kString: return "str";
    case Value::Kind::kList: return v.list().is_tuple ? "tuple" : "list";
    case Value::Kind::kDict: return v.dict().is_namespace ? "Namespace" : "dict";
    case Value::Kind::kCallable: return "function";
  }
  return "object";
}

bool Equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.number_value() == b.number_value();
    return a.int_value() == b.int_value();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return true;
    case Value::Kind::kString: return a.str() == b.str();
    case Value::Kind::kList: {
      if (a.identity() == b.identity()) return true;
      const auto& x = a.items();
      const auto& y = b.items();
      if (a.list().is_tuple != b.list().is_tuple || x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!Equals(x[i], y[i])) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      if (a.identity() == b.identity()) return true;
      if (a.dict().is_namespace || b.dict().is_namespace) return false;
      const auto& x = a.dict().entries;
      if (x.size() != b.dict().entries.size()) return false;
      for (const auto& [k, v] : x) {
        const Value* other = b.dict().Find(k);
        if (other == nullptr || !Equals(v, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kCallable: return a.identity() == b.identity();
    default: return false;
  }
}

absl::StatusOr<int> Compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      const double x = a.number_value(), y = b.number_value();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    const int64_t x = a.int_value(), y = b.int_value();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.str().compare(b.str());  // UTF-8 byte order == code point order
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list() && a.list().is_tuple == b.list().is_tuple) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (Equals(x[i], y[i])) continue;
      return Compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  return absl::InvalidArgumentError(absl::StrCat("'<' not supported between instances of '",
                                                 TypeName(a), "' and '", TypeName(b), "'"));
}

namespace {

void JsonString(const std::string& s, std::string* out) {
  *out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          *out += buf;
        } else {
          *out += static_cast<char>(c);
        }
    }
  }
  *out += '"';
}

absl::Status JsonValue(const Value& v, int indent, bool sort_keys, int depth, size_t limit,
                       std::string* out) {
  if (depth > 256) return absl::InvalidArgumentError("tojson: value nested too deeply");
  if (out->size() > limit) {
    return absl::InvalidArgumentError(absl::StrCat("tojson: result passes ", limit, " bytes"));
  }
  auto newline = [&](int d) {
    if (indent < 0) return;
    *out += '\n';
    out->append(static_cast<size_t>(indent) * d, ' ');
  };
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (v.kind()) {
    case Value::Kind::kNone: *out += "null"; return absl::OkStatus();
    case Value::Kind::kBool: *out += v.bool_value() ? "true" : "false"; return absl::OkStatus();
    case Value::Kind::kInt: absl::StrAppend(out, v.int_value()); return absl::OkStatus();
    case Value::Kind::kFloat: {
      const double d = v.number_value();
      if (std::isnan(d)) *out += "NaN";
      else if (std::isinf(d)) *out += d > 0 ? "Infinity" : "-Infinity";
      else *out += FormatFloat(d);
      return absl::OkStatus();
    }
    case Value::Kind::kString: JsonString(v.str(), out); return absl::OkStatus();
    case Value::Kind::kList: {
      const auto& items = v.items();
      if (items.empty()) {
        *out += "[]";
        return absl::OkStatus();
      }
      *out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) *out += item_sep;
        newline(depth + 1);
        absl::Status s = JsonValue(items[i], indent, sort_keys, depth + 1, limit, out);
        if (!s.ok()) return s;
      }
      newline(depth);
      *out += ']';
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      if (v.dict().is_namespace) break;
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : v.dict().entries) entries.push_back(&e);
      if (sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      if (entries.empty()) {
        *out += "{}";
        return absl::OkStatus();
      }
      *out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) *out += item_sep;
        newline(depth + 1);
        JsonString(entries[i]->first, out);
        *out += ": ";
        absl::Status s = JsonValue(entries[i]->second, indent, sort_keys, depth + 1, limit, out);
        if (!s.ok()) return s;
      }
      newline(depth);
      *out += '}';
      return absl::OkStatus();
    }
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("Object of type ", TypeName(v), " is not JSON serializable"));
}

}  // namespace

absl::StatusOr<std::string> ToJson(const Value& v, int indent, bool sort_keys, size_t limit) {
  std::string out;
  absl::Status s = JsonValue(v, indent, sort_keys, 0, limit, &out);
  if (s.ok() && out.size() > limit) {
    s = absl::InvalidArgumentError(absl::StrCat("tojson: result passes ", limit, " bytes"));
  }
  if (!s.ok()) return s;
  return out;
}

Value FromJson(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::None();
    case nlohmann::json::value_t::boolean: return Value::Bool(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return Value::Int(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::Float(static_cast<double>(u));
      return Value::Int(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float: return Value::Float(j.get<double>());
    case nlohmann::json::value_t::string: return Value::String(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(FromJson(e));
      return Value::List(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      DictData d;
      for (auto it = j.begin(); it != j.end(); ++it) {
        d.entries.emplace_back(it.key(), FromJson(it.value()));
      }
      return Value::Dict(std::move(d));
    }
    default: return Value::None();  // binary / discarded: not produced by request parsing
  }
}

size_t CodePointCount(absl::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::vector<size_t> CodePointOffsets(absl::string_view s) {
  std::vector<size_t> offsets;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) offsets.push_back(i);
  }
  offsets.push_back(s.size());
  return offsets;
}

bool IsAscii(absl::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

}  // namespace peng::chat_template_internal
