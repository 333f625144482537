#include "server/chat_template_builtins.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/status.h"
#include "server/chat_template_eval.h"

namespace peng::chat_template_internal {
namespace {

absl::Status Error(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

// Binds positional then keyword arguments to `names` (Python signature order). Missing ones
// stay undefined, so callers apply their defaults with `is_undefined()`.
absl::StatusOr<std::vector<Value>> Bind(absl::string_view fn, CallArgs& args,
                                        std::initializer_list<absl::string_view> names) {
  if (args.positional.size() > names.size()) {
    return Error(absl::StrCat(fn, "() takes at most ", names.size(), " argument(s) (",
                              args.positional.size(), " given)"));
  }
  std::vector<Value> out(names.size());
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = std::move(args.positional[i]);
  for (auto& [key, value] : args.keyword) {
    size_t i = 0;
    for (absl::string_view n : names) {
      if (n == key) break;
      ++i;
    }
    if (i == names.size()) {
      return Error(absl::StrCat(fn, "() got an unexpected keyword argument '", key, "'"));
    }
    out[i] = std::move(value);
  }
  return out;
}

bool IsPySpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
         (c >= 0x1c && c <= 0x1f);
}

std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  auto strip_char = [&](char c) {
    if (chars.is_string()) return chars.str().find(c) != std::string::npos;
    return IsPySpace(c);
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && strip_char(s[b])) ++b;
  }
  if (right) {
    while (e > b && strip_char(s[e - 1])) --e;
  }
  return s.substr(b, e - b);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string Capitalize(const std::string& s) {
  std::string out = Lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

// Python str.title(): a letter after a letter is lowered, any other letter raised.
std::string PyTitle(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isalpha(u)) {
      c = static_cast<char>(prev_cased ? std::tolower(u) : std::toupper(u));
      prev_cased = true;
    } else {
      prev_cased = false;
    }
  }
  return out;
}

// jinja2's title filter: words start after spaces, '-', '(', '{', '[' or '<'.
std::string JinjaTitle(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    const bool sep = IsPySpace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) {
      out += c;
      word_start = true;
    } else {
      out += static_cast<char>(word_start ? std::toupper(u) : std::tolower(u));
      word_start = false;
    }
  }
  return out;
}

absl::StatusOr<Value> Replace(Renderer& r, const std::string& s, const std::string& old,
                              const std::string& with, int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  int64_t done = 0;
  if (old.empty()) {  // Python inserts `with` around every character
    std::vector<size_t> offsets = CodePointOffsets(s);
    for (size_t i = 0; i + 1 < offsets.size(); ++i) {
      if (done < count) {
        out += with;
        ++done;
      }
      out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
      PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
    }
    if (done < count) out += with;
  } else {
    size_t pos = 0;
    while (done < count) {
      const size_t hit = s.find(old, pos);
      if (hit == std::string::npos) break;
      out.append(s, pos, hit - pos);
      out += with;
      pos = hit + old.size();
      ++done;
      PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
    }
    out.append(s, pos, std::string::npos);
  }
  PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
  PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(out.size() / 64)));
  return Value::String(std::move(out));
}

// Python str.split / rsplit.
Value Split(const std::string& s, const Value& sep, int64_t maxsplit) {
  std::vector<Value> parts;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (!sep.is_string()) {
    size_t i = 0;
    int64_t splits = 0;
    while (true) {
      while (i < s.size() && IsPySpace(s[i])) ++i;
      if (i >= s.size()) break;
      if (splits >= maxsplit) {  // Python keeps the rest as is, trailing spaces included
        parts.push_back(Value::String(s.substr(i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !IsPySpace(s[j])) ++j;
      parts.push_back(Value::String(s.substr(i, j - i)));
      ++splits;
      i = j;
    }
    return Value::List(std::move(parts));
  }
  const std::string& d = sep.str();
  size_t pos = 0;
  int64_t splits = 0;
  while (splits < maxsplit) {
    const size_t hit = s.find(d, pos);
    if (hit == std::string::npos) break;
    parts.push_back(Value::String(s.substr(pos, hit - pos)));
    pos = hit + d.size();
    ++splits;
  }
  parts.push_back(Value::String(s.substr(pos)));
  return Value::List(std::move(parts));
}

int64_t IntOr(const Value& v, int64_t dflt) { return v.is_integral() ? v.int_value() : dflt; }
bool BoolOr(const Value& v, bool dflt) { return v.is_undefined() ? dflt : Truthy(v); }

absl::StatusOr<std::string> StrArg(Renderer& r, const Value& v, absl::string_view fn) {
  if (v.is_undefined()) return Error(absl::StrCat(fn, "() is missing a required argument"));
  return r.Str(v);
}

// `a.b.0` as jinja2's make_attrgetter: each part through getitem, digits as indexes.
Value AttrPath(Renderer& r, const Value& item, const std::string& path) {
  Value v = item;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c));
    });
    v = digits ? r.GetItem(v, Value::Int(std::strtoll(std::string(part).c_str(), nullptr, 10)))
               : r.GetItem(v, Value::String(std::string(part)));
  }
  return v;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

absl::StatusOr<Value> ToInt(Renderer& r, const Value& v, const Value& dflt_v, int base) {
  const Value dflt = dflt_v.is_undefined() ? Value::Int(0) : dflt_v;
  if (v.is_integral()) return Value::Int(v.int_value());
  if (v.is_float()) {
    const double d = v.number_value();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return dflt;
    return Value::Int(static_cast<int64_t>(d));
  }
  if (!v.is_string()) return dflt;
  std::string s = Strip(v.str(), Value(), true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return dflt;
  errno = 0;
  char* end = nullptr;
  const long long i = std::strtoll(s.c_str(), &end, base);
  if (errno == 0 && end == s.c_str() + s.size()) return Value::Int(i);
  errno = 0;
  const double d = std::strtod(s.c_str(), &end);
  if (errno == 0 && end == s.c_str() + s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18) {
    return Value::Int(static_cast<int64_t>(d));
  }
  return dflt;
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return 0;
    case Value::Kind::kString: return static_cast<int64_t>(CodePointCount(v.str()));
    case Value::Kind::kList: return static_cast<int64_t>(v.items().size());
    case Value::Kind::kDict: return static_cast<int64_t>(v.dict().entries.size());
    default: return Error(absl::StrCat("object of type '", TypeName(v), "' has no len()"));
  }
}

// select / reject / selectattr / rejectattr. `test_args` starts with the test name, if any.
absl::StatusOr<Value> SelectOrReject(Renderer& r, const Value& input, CallArgs& args,
                                     bool by_attr, bool keep_matches, absl::string_view fn) {
  std::string attr;
  size_t next = 0;
  if (by_attr) {
    if (args.positional.empty() || !args.positional[0].is_string()) {
      return Error(absl::StrCat(fn, "() needs an attribute name"));
    }
    attr = args.positional[0].str();
    next = 1;
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > next) {
    if (!args.positional[next].is_string()) return Error(absl::StrCat(fn, "(): test name must be a string"));
    test = args.positional[next].str();
    test_args.positional.assign(args.positional.begin() + next + 1, args.positional.end());
  }
  test_args.keyword = args.keyword;
  PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(input));
  std::vector<Value> out;
  for (Value& item : items) {
    const Value v = by_attr ? AttrPath(r, item, attr) : item;
    bool match;
    if (test.empty()) {
      match = Truthy(v);
    } else {
      CallArgs a = test_args;
      PENG_ASSIGN_OR_RETURN(match, ApplyTest(r, test, v, a));
    }
    if (match == keep_matches) out.push_back(std::move(item));
  }
  return Value::List(std::move(out));
}

// Sort key for sort/unique/min/max/dictsort: lowered strings unless case-sensitive.
Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::String(Lower(v.str()));
  return v;
}

absl::StatusOr<Value> SortValues(std::vector<Value> items, bool reverse, bool case_sensitive,
                                 const std::function<Value(const Value&)>& key) {
  absl::Status error;
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) keyed.emplace_back(SortKey(key(item), case_sensitive), std::move(item));
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    absl::StatusOr<int> c = Compare(a.first, b.first);
    if (!c.ok()) {
      error = c.status();
      return false;
    }
    return reverse ? *c > 0 : *c < 0;
  });
  PENG_RETURN_IF_ERROR(error);
  std::vector<Value> out;
  for (auto& [k, v] : keyed) out.push_back(std::move(v));
  return Value::List(std::move(out));
}

}  // namespace

absl::StatusOr<Value> ApplyFilter(Renderer& r, absl::string_view name, const Value& in,
                                  CallArgs& args) {
  PENG_RETURN_IF_ERROR(r.Charge(1));
  if (name == "trim") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"chars"}));
    PENG_ASSIGN_OR_RETURN(std::string s, r.Str(in));
    return Value::String(Strip(s, a[0], true, true));
  }
  if (name == "length" || name == "count") {
    PENG_ASSIGN_OR_RETURN(int64_t n, Length(in));
    return Value::Int(n);
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    PENG_ASSIGN_OR_RETURN(std::string s, r.Str(in));
    if (name == "upper") return Value::String(Upper(std::move(s)));
    if (name == "lower") return Value::String(Lower(std::move(s)));
    if (name == "title") return Value::String(JinjaTitle(s));
    return Value::String(Capitalize(s));
  }
  if (name == "default" || name == "d") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"default_value", "boolean"}));
    if (in.is_undefined() || (BoolOr(a[1], false) && !Truthy(in))) {
      return a[0].is_undefined() ? Value::String("") : a[0];
    }
    return in;
  }
  if (name == "join") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"d", "attribute"}));
    PENG_ASSIGN_OR_RETURN(std::string sep, a[0].is_undefined() ? std::string() : r.Str(a[0]));
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += sep;
      const Value v = a[1].is_undefined() ? items[i] : AttrPath(r, items[i], ToStr(a[1]));
      PENG_ASSIGN_OR_RETURN(std::string s, r.Str(v));
      out += s;
      PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
    }
    PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(out.size() / 64)));
    return Value::String(std::move(out));
  }
  if (name == "first" || name == "last") {
    if (in.is_list()) {
      if (in.items().empty()) return Value::Undefined("No " + std::string(name) + " item, sequence was empty.");
      return name == "first" ? in.items().front() : in.items().back();
    }
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    if (items.empty()) return Value::Undefined("No " + std::string(name) + " item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "tojson") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"indent", "sort_keys", "ensure_ascii", "separators"}));
    int indent = -1;
    if (a[0].is_integral()) {
      indent = static_cast<int>(std::clamp<int64_t>(a[0].int_value(), 0, 64));
    } else if (!a[0].is_undefined() && !a[0].is_none()) {
      return Error("tojson(): indent must be an integer");
    }
    if (Truthy(a[2])) return Error("tojson(): ensure_ascii=True is not supported");
    if (!a[3].is_undefined() && !a[3].is_none()) return Error("tojson(): separators is not supported");
    PENG_ASSIGN_OR_RETURN(std::string json, ToJson(in, indent, BoolOr(a[1], false), r.max_value_bytes()));
    PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(json.size() / 64)));
    return Value::String(std::move(json));
  }
  if (name == "string") {
    PENG_ASSIGN_OR_RETURN(std::string s, r.Str(in));
    return Value::String(std::move(s));
  }
  if (name == "int") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"default", "base"}));
    return ToInt(r, in, a[0], static_cast<int>(IntOr(a[1], 10)));
  }
  if (name == "float") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"default"}));
    if (in.is_number()) return Value::Float(in.number_value());
    if (in.is_string()) {
      const std::string s = Strip(in.str(), Value(), true, true);
      char* end = nullptr;
      const double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size()) return Value::Float(d);
    }
    return a[0].is_undefined() ? Value::Float(0.0) : a[0];
  }
  if (name == "abs") {
    if (in.is_float()) return Value::Float(std::fabs(in.number_value()));
    if (in.is_integral()) {
      if (in.int_value() == INT64_MIN) return Error("integer overflow");
      return Value::Int(std::llabs(in.int_value()));
    }
    return Error(absl::StrCat("bad operand type for abs(): '", TypeName(in), "'"));
  }
  if (name == "round") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"precision", "method"}));
    if (!in.is_number()) return Error(absl::StrCat("round(): '", TypeName(in), "' is not a number"));
    const double scale = std::pow(10.0, static_cast<double>(IntOr(a[0], 0)));
    const std::string method = a[1].is_string() ? a[1].str() : "common";
    const double x = in.number_value() * scale;
    double y;
    if (method == "common") y = std::nearbyint(x);
    else if (method == "ceil") y = std::ceil(x);
    else if (method == "floor") y = std::floor(x);
    else return Error("round(): method must be 'common', 'ceil' or 'floor'");
    return Value::Float(y / scale);
  }
  if (name == "list") {
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    return Value::List(std::move(items));
  }
  if (name == "items") {
    if (in.is_undefined()) return Value::List({});
    if (!in.is_dict()) return Error(absl::StrCat("items(): can only get item pairs from a mapping, not '", TypeName(in), "'"));
    std::vector<Value> pairs;
    for (const auto& [k, v] : in.dict().entries) {
      pairs.push_back(Value::List({Value::String(k), v}, /*is_tuple=*/true));
    }
    return Value::List(std::move(pairs));
  }
  if (name == "dictsort") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"case_sensitive", "by", "reverse"}));
    if (!in.is_dict()) return Error("dictsort(): needs a mapping");
    const bool by_value = a[1].is_string() && a[1].str() == "value";
    std::vector<Value> pairs;
    for (const auto& [k, v] : in.dict().entries) {
      pairs.push_back(Value::List({Value::String(k), v}, true));
    }
    return SortValues(std::move(pairs), BoolOr(a[2], false), BoolOr(a[0], false),
                      [by_value](const Value& p) { return p.items()[by_value ? 1 : 0]; });
  }
  if (name == "replace") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"old", "new", "count"}));
    PENG_ASSIGN_OR_RETURN(std::string s, r.Str(in));
    PENG_ASSIGN_OR_RETURN(std::string old, StrArg(r, a[0], name));
    PENG_ASSIGN_OR_RETURN(std::string with, StrArg(r, a[1], name));
    return Replace(r, s, old, with, IntOr(a[2], -1));
  }
  if (name == "selectattr" || name == "rejectattr") {
    return SelectOrReject(r, in, args, true, name == "selectattr", name);
  }
  if (name == "select" || name == "reject") {
    return SelectOrReject(r, in, args, false, name == "select", name);
  }
  if (name == "map") {
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    std::vector<Value> out;
    const Value* attribute = nullptr;
    const Value* dflt = nullptr;
    for (const auto& [k, v] : args.keyword) {
      if (k == "attribute") attribute = &v;
      if (k == "default") dflt = &v;
    }
    if (attribute != nullptr) {
      const std::string path = ToStr(*attribute);
      for (const Value& item : items) {
        Value v = AttrPath(r, item, path);
        out.push_back(v.is_undefined() && dflt != nullptr ? *dflt : v);
      }
      return Value::List(std::move(out));
    }
    if (args.positional.empty() || !args.positional[0].is_string()) {
      return Error("map() needs a filter name or attribute=");
    }
    const std::string filter = args.positional[0].str();
    CallArgs rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    rest.keyword = args.keyword;
    for (const Value& item : items) {
      CallArgs a = rest;
      PENG_ASSIGN_OR_RETURN(Value v, ApplyFilter(r, filter, item, a));
      out.push_back(std::move(v));
    }
    return Value::List(std::move(out));
  }
  if (name == "attr") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"name"}));
    PENG_ASSIGN_OR_RETURN(std::string attr, StrArg(r, a[0], name));
    return r.GetAttr(in, attr);
  }
  if (name == "safe") return in;
  if (name == "escape" || name == "e" || name == "forceescape") {
    PENG_ASSIGN_OR_RETURN(std::string s, r.Str(in));
    std::string out = HtmlEscape(s);
    PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
    return Value::String(std::move(out));
  }
  if (name == "unique") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"case_sensitive", "attribute"}));
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    std::vector<Value> out, seen;
    for (Value& item : items) {
      const Value key = SortKey(a[1].is_undefined() ? item : AttrPath(r, item, ToStr(a[1])),
                                BoolOr(a[0], false));
      PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(seen.size())));
      if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return Equals(s, key); })) {
        continue;
      }
      seen.push_back(key);
      out.push_back(std::move(item));
    }
    return Value::List(std::move(out));
  }
  if (name == "sort") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"reverse", "case_sensitive", "attribute"}));
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(items.size()) * 16));
    const std::string attr = a[2].is_undefined() ? "" : ToStr(a[2]);
    return SortValues(std::move(items), BoolOr(a[0], false), BoolOr(a[1], false),
                      [&](const Value& v) { return attr.empty() ? v : AttrPath(r, v, attr); });
  }
  if (name == "reverse") {
    if (in.is_string()) {
      std::vector<size_t> offsets = CodePointOffsets(in.str());
      std::string out;
      for (size_t i = offsets.size() - 1; i > 0; --i) {
        out.append(in.str(), offsets[i - 1], offsets[i] - offsets[i - 1]);
      }
      return Value::String(std::move(out));
    }
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  if (name == "sum") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"attribute", "start"}));
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    Value total = a[1].is_undefined() ? Value::Int(0) : a[1];
    for (const Value& item : items) {
      const Value v = a[0].is_undefined() ? item : AttrPath(r, item, ToStr(a[0]));
      if (!v.is_number() || !total.is_number()) return Error("sum(): items must be numbers");
      if (total.is_float() || v.is_float()) {
        total = Value::Float(total.number_value() + v.number_value());
      } else {
        int64_t s;
        if (__builtin_add_overflow(total.int_value(), v.int_value(), &s)) return Error("integer overflow");
        total = Value::Int(s);
      }
    }
    return total;
  }
  if (name == "min" || name == "max") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"case_sensitive", "attribute"}));
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(in));
    if (items.empty()) return Value::Undefined(absl::StrCat("No ", name, " item, sequence was empty."));
    const std::string attr = a[1].is_undefined() ? "" : ToStr(a[1]);
    PENG_ASSIGN_OR_RETURN(Value sorted, SortValues(std::move(items), name == "max",
                                                   BoolOr(a[0], false), [&](const Value& v) {
                                                     return attr.empty() ? v : AttrPath(r, v, attr);
                                                   }));
    return sorted.items().front();
  }
  if (name == "indent") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"width", "first", "blank"}));
    PENG_ASSIGN_OR_RETURN(std::string s, r.Str(in));
    std::string pad = a[0].is_string() ? a[0].str()
                                       : std::string(std::clamp<int64_t>(IntOr(a[0], 4), 0, 64), ' ');
    std::vector<std::string> lines = absl::StrSplit(s, '\n');
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += '\n';
      const bool indent_line = i == 0 ? BoolOr(a[1], false) : (!lines[i].empty() || BoolOr(a[2], false));
      if (indent_line) out += pad;
      out += lines[i];
      PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
    }
    return Value::String(std::move(out));
  }
  return Error(absl::StrCat("unknown filter '", name, "'"));
}

absl::StatusOr<bool> ApplyTest(Renderer& r, absl::string_view name, const Value& v,
                               CallArgs& args) {
  PENG_RETURN_IF_ERROR(r.Charge(1));
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.bool_value();
  if (name == "false") return v.is_bool() && !v.bool_value();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence") return v.is_string() || v.is_list() || v.is_dict();
  if (name == "callable") return v.is_callable();
  if (name == "escaped") return false;
  if (name == "lower") return v.is_string() && Lower(v.str()) == v.str();
  if (name == "upper") return v.is_string() && Upper(v.str()) == v.str();
  if (name == "odd" || name == "even") {
    if (!v.is_integral()) return Error(absl::StrCat("test '", name, "' needs an integer"));
    const bool odd = (v.int_value() % 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"other"}));
  const Value& other = a[0];
  if (name == "divisibleby") {
    if (!v.is_integral() || !other.is_integral() || other.int_value() == 0) {
      return Error("divisibleby needs integers and a non-zero divisor");
    }
    return v.int_value() % other.int_value() == 0;
  }
  if (name == "sameas") {
    if (v.identity() != nullptr) return v.identity() == other.identity();
    return v.kind() == other.kind() && Equals(v, other);
  }
  if (name == "eq" || name == "equalto" || name == "==") return Equals(v, other);
  if (name == "ne" || name == "!=") return !Equals(v, other);
  if (name == "in") {
    if (other.is_string()) return v.is_string() && other.str().find(v.str()) != std::string::npos;
    if (other.is_dict()) return v.is_string() && other.dict().Find(v.str()) != nullptr;
    if (other.is_list()) {
      return std::any_of(other.items().begin(), other.items().end(),
                         [&](const Value& x) { return Equals(v, x); });
    }
    return Error(absl::StrCat("argument of type '", TypeName(other), "' is not iterable"));
  }
  int want;
  if (name == "lt" || name == "lessthan" || name == "<") want = 0;
  else if (name == "le" || name == "<=") want = 1;
  else if (name == "gt" || name == "greaterthan" || name == ">") want = 2;
  else if (name == "ge" || name == ">=") want = 3;
  else return Error(absl::StrCat("unknown test '", name, "'"));
  PENG_ASSIGN_OR_RETURN(int c, Compare(v, other));
  switch (want) {
    case 0: return c < 0;
    case 1: return c <= 0;
    case 2: return c > 0;
    default: return c >= 0;
  }
}

namespace {

absl::StatusOr<Value> StrMethod(Renderer& r, absl::string_view name, const Value& self,
                                CallArgs& args) {
  const std::string& s = self.str();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"chars"}));
    return Value::String(Strip(s, a[0], name != "rstrip", name != "lstrip"));
  }
  if (name == "startswith" || name == "endswith") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"prefix"}));
    std::vector<Value> options = a[0].is_list() ? a[0].items() : std::vector<Value>{a[0]};
    for (const Value& o : options) {
      if (!o.is_string()) return Error(absl::StrCat(name, "() argument must be str or a tuple of str"));
      const std::string& p = o.str();
      const bool hit = p.size() <= s.size() &&
                       (name == "startswith" ? s.compare(0, p.size(), p) == 0
                                             : s.compare(s.size() - p.size(), p.size(), p) == 0);
      if (hit) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  if (name == "split") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"sep", "maxsplit"}));
    if (a[0].is_string() && a[0].str().empty()) return Error("split(): empty separator");
    PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(s.size() / 16)));
    return Split(s, a[0], IntOr(a[1], -1));
  }
  const bool no_args = name == "upper" || name == "lower" || name == "title" ||
                       name == "capitalize" || name == "splitlines" || name.substr(0, 2) == "is";
  if (no_args && (!args.positional.empty() || !args.keyword.empty())) {
    return Error(absl::StrCat("str.", name, "() takes no arguments (",
                              args.positional.size() + args.keyword.size(), " given)"));
  }
  if (name == "upper") return Value::String(Upper(s));
  if (name == "lower") return Value::String(Lower(s));
  if (name == "title") return Value::String(PyTitle(s));
  if (name == "capitalize") return Value::String(Capitalize(s));
  if (name == "replace") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"old", "new", "count"}));
    if (!a[0].is_string() || !a[1].is_string()) return Error("replace() arguments must be str");
    return Replace(r, s, a[0].str(), a[1].str(), IntOr(a[2], -1));
  }
  if (name == "find" || name == "rfind" || name == "count") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"sub"}));
    if (!a[0].is_string()) return Error(absl::StrCat(name, "() argument must be str"));
    const std::string& sub = a[0].str();
    if (name == "count") {
      if (sub.empty()) return Value::Int(static_cast<int64_t>(CodePointCount(s)) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value::Int(n);
    }
    const size_t p = name == "find" ? s.find(sub) : s.rfind(sub);
    if (p == std::string::npos) return Value::Int(-1);
    return Value::Int(static_cast<int64_t>(CodePointCount(absl::string_view(s).substr(0, p))));
  }
  if (name == "join") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"iterable"}));
    PENG_ASSIGN_OR_RETURN(std::vector<Value> items, r.Iterate(a[0]));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) return Error("join(): sequence items must be str");
      if (i > 0) out += s;
      out += items[i].str();
      PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
    }
    return Value::String(std::move(out));
  }
  if (name == "splitlines") {
    std::vector<Value> lines;
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n' || s[i] == '\r') {
        lines.push_back(Value::String(s.substr(start, i - start)));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        start = i + 1;
      }
    }
    if (start < s.size()) lines.push_back(Value::String(s.substr(start)));
    return Value::List(std::move(lines));
  }
  auto all_of = [&](int (*pred)(int)) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
      return pred(static_cast<unsigned char>(c)) != 0;
    });
  };
  if (name == "isdigit") return Value::Bool(all_of(&isdigit));
  if (name == "isalpha") return Value::Bool(all_of(&isalpha));
  if (name == "isalnum") return Value::Bool(all_of(&isalnum));
  if (name == "isspace") return Value::Bool(all_of(&isspace));
  if (name == "islower") return Value::Bool(Lower(s) == s && Upper(s) != s);
  if (name == "isupper") return Value::Bool(Upper(s) == s && Lower(s) != s);
  return Error(absl::StrCat("'str object' has no attribute '", name, "'"));
}

absl::StatusOr<Value> DictMethod(Renderer& r, absl::string_view name, const Value& self,
                                 CallArgs& args) {
  const DictData& d = self.dict();
  if (name == "get") {
    PENG_ASSIGN_OR_RETURN(auto a, Bind(name, args, {"key", "default"}));
    if (a[0].is_string()) {
      if (const Value* v = d.Find(a[0].str())) return *v;
    }
    return a[1].is_undefined() ? Value::None() : a[1];
  }
  if (!args.positional.empty() || !args.keyword.empty()) {
    return Error(absl::StrCat(name, "() takes no arguments"));
  }
  std::vector<Value> out;
  for (const auto& [k, v] : d.entries) {
    if (name == "items") out.push_back(Value::List({Value::String(k), v}, /*is_tuple=*/true));
    if (name == "keys") out.push_back(Value::String(k));
    if (name == "values") out.push_back(v);
  }
  PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(out.size())));
  return Value::List(std::move(out));
}

constexpr absl::string_view kStrMethods[] = {
    "strip", "lstrip", "rstrip", "startswith", "endswith", "split", "upper", "lower",
    "title", "capitalize", "replace", "find", "rfind", "count", "join", "splitlines",
    "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper"};
constexpr absl::string_view kDictMethods[] = {"get", "items", "keys", "values"};

}  // namespace

Value BoundMethod(const Value& self, absl::string_view name) {
  if (self.is_string()) {
    for (absl::string_view m : kStrMethods) {
      if (m == name) {
        return Value::Function(std::string(m), [self, m](Renderer& r, CallArgs& args) {
          return StrMethod(r, m, self, args);
        });
      }
    }
  } else if (self.is_dict() && !self.dict().is_namespace) {
    for (absl::string_view m : kDictMethods) {
      if (m == name) {
        return Value::Function(std::string(m), [self, m](Renderer& r, CallArgs& args) {
          return DictMethod(r, m, self, args);
        });
      }
    }
  }
  return Value();
}

namespace {

absl::StatusOr<Value> Range(Renderer& r, CallArgs& args) {
  if (!args.keyword.empty()) return Error("range() takes no keyword arguments");
  const auto& p = args.positional;
  if (p.empty() || p.size() > 3) return Error("range() expects 1 to 3 integer arguments");
  for (const Value& v : p) {
    if (!v.is_integral()) return Error(absl::StrCat("'", TypeName(v), "' object cannot be interpreted as an integer"));
  }
  const int64_t start = p.size() == 1 ? 0 : p[0].int_value();
  const int64_t stop = p.size() == 1 ? p[0].int_value() : p[1].int_value();
  const int64_t step = p.size() == 3 ? p[2].int_value() : 1;
  if (step == 0) return Error("range() arg 3 must not be zero");
  // jinja2's sandbox refuses ranges over MAX_RANGE items.
  constexpr int64_t kMaxRange = 100000;
  const long double count = step > 0 ? (static_cast<long double>(stop) - start) / step
                                     : (static_cast<long double>(start) - stop) / -step;
  if (count > kMaxRange) {
    return Error("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  }
  std::vector<Value> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::Int(i));
  PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(out.size())));
  return Value::List(std::move(out));
}

absl::StatusOr<Value> MakeDict(CallArgs& args, bool is_namespace, absl::string_view fn) {
  DictData d;
  d.is_namespace = is_namespace;
  if (args.positional.size() > 1) return Error(absl::StrCat(fn, "() takes at most one positional argument"));
  if (args.positional.size() == 1) {
    if (!args.positional[0].is_dict()) return Error(absl::StrCat(fn, "() argument must be a mapping"));
    for (const auto& [k, v] : args.positional[0].dict().entries) d.Set(k, v);
  }
  for (auto& [k, v] : args.keyword) d.Set(k, std::move(v));
  return Value::Dict(std::move(d));
}

}  // namespace

Value GlobalFunction(absl::string_view name) {
  if (name == "range") return Value::Function("range", Range);
  if (name == "namespace") {
    return Value::Function("namespace", [](Renderer&, CallArgs& args) {
      return MakeDict(args, true, "namespace");
    });
  }
  if (name == "dict") {
    return Value::Function("dict", [](Renderer&, CallArgs& args) {
      return MakeDict(args, false, "dict");
    });
  }
  if (name == "raise_exception") {
    return Value::Function("raise_exception", [](Renderer& r, CallArgs& args) -> absl::StatusOr<Value> {
      std::string msg = args.positional.empty() ? "" : ToStr(args.positional[0], r.max_value_bytes());
      return r.Raise(std::move(msg));
    });
  }
  if (name == "strftime_now") {
    return Value::Function("strftime_now", [](Renderer& r, CallArgs& args) -> absl::StatusOr<Value> {
      if (args.positional.size() != 1 || !args.positional[0].is_string()) {
        return Error("strftime_now() takes one format string");
      }
      const ChatTemplateOptions& o = r.options();
      return Value::String(absl::FormatTime(args.positional[0].str(), o.now(), o.time_zone));
    });
  }
  return Value();
}

}  // namespace peng::chat_template_internal
