// Python methods of str and dict values (bound to their object) and the global functions
// chat templates call: range, namespace, dict, raise_exception, strftime_now.
#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/status.h"
#include "server/chat_template_builtins.h"
#include "server/chat_template_eval.h"
#include "server/chat_template_pystr.h"

namespace peng::chat_template_internal {
namespace {

absl::Status Error(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

}  // namespace

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
    return Value::Function("namespace", [](Renderer& r, CallArgs& args) -> absl::StatusOr<Value> {
      PENG_ASSIGN_OR_RETURN(Value ns, MakeDict(args, true, "namespace"));
      r.TrackNamespace(ns);
      return ns;
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
