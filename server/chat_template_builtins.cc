#include "server/chat_template_builtins.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "server/chat_template_eval.h"
#include "server/chat_template_pystr.h"

namespace peng::chat_template_internal {
namespace {

absl::Status Error(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

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

}  // namespace peng::chat_template_internal
