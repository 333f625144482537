// Renderer, part 2: expression evaluation: name lookup, literals, operators with Python's
// semantics (overflow-checked integers, floor division, chained comparisons), calls, filters,
// tests, attribute/item/slice access and iteration. Every step is charged against the limits.
#include "server/chat_template_eval.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "server/chat_template_builtins.h"
#include "server/chat_template_lexer.h"

namespace peng::chat_template_internal {
namespace {

absl::Status TypeError(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

absl::Status UndefinedError(const Value& v) {
  std::string hint = v.undefined_hint();
  return absl::InvalidArgumentError(hint.empty() ? "undefined value" : hint);
}

std::string OperandError(absl::string_view op, const Value& a, const Value& b) {
  return absl::StrCat("unsupported operand type(s) for ", op, ": '", TypeName(a), "' and '",
                      TypeName(b), "'");
}

}  // namespace

Value Renderer::Lookup(const std::string& name) const {
  for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
    auto found = (*it)->find(name);
    if (found != (*it)->end()) return found->second;
  }
  Value global = GlobalFunction(name);
  if (!global.is_undefined()) return global;
  return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
}

absl::StatusOr<Value> Renderer::Eval(const Expr& e) {
  absl::StatusOr<Value> v = EvalInner(e);
  if (!v.ok() && !error_located_) {
    error_located_ = true;
    return absl::Status(v.status().code(), absl::StrCat(LineColumn(program_.source, e.offset),
                                                        ": ", v.status().message()));
  }
  return v;
}

absl::StatusOr<CallArgs> Renderer::EvalArgs(const Expr& e, size_t first_arg) {
  CallArgs args;
  for (size_t i = first_arg; i < e.children.size(); ++i) {
    PENG_ASSIGN_OR_RETURN(Value v, Eval(*e.children[i]));
    args.positional.push_back(std::move(v));
  }
  for (const auto& [key, expr] : e.kwargs) {
    PENG_ASSIGN_OR_RETURN(Value v, Eval(*expr));
    args.keyword.emplace_back(key, std::move(v));
  }
  return args;
}

absl::StatusOr<Value> Renderer::Call(const Value& callee, CallArgs args) {
  if (callee.is_undefined()) return UndefinedError(callee);
  if (!callee.is_callable()) {
    return TypeError(absl::StrCat("'", TypeName(callee), "' object is not callable"));
  }
  return callee.callable().fn(*this, args);
}

absl::StatusOr<Value> Renderer::EvalInner(const Expr& e) {
  PENG_RETURN_IF_ERROR(Charge(1));
  switch (e.kind) {
    case Expr::Kind::kLiteral: return e.literal;
    case Expr::Kind::kName: return Lookup(e.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.children.size());
      for (const ExprPtr& c : e.children) {
        PENG_ASSIGN_OR_RETURN(Value v, Eval(*c));
        items.push_back(std::move(v));
      }
      return Value::List(std::move(items), e.kind == Expr::Kind::kTuple);
    }
    case Expr::Kind::kDict: {
      DictData d;
      for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
        PENG_ASSIGN_OR_RETURN(Value k, Eval(*e.children[i]));
        PENG_ASSIGN_OR_RETURN(Value v, Eval(*e.children[i + 1]));
        if (!k.is_string()) {
          return TypeError(absl::StrCat("dict keys must be strings in chat templates, got '",
                                        TypeName(k), "'"));
        }
        d.Set(k.str(), std::move(v));
      }
      return Value::Dict(std::move(d));
    }
    case Expr::Kind::kAttr: {
      PENG_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0]));
      return GetAttr(obj, e.name);
    }
    case Expr::Kind::kItem: {
      PENG_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0]));
      PENG_ASSIGN_OR_RETURN(Value key, Eval(*e.children[1]));
      return GetItem(obj, key);
    }
    case Expr::Kind::kSlice: {
      PENG_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0]));
      Value parts[3];
      for (int i = 0; i < 3; ++i) {
        if (e.children[i + 1] == nullptr) continue;
        PENG_ASSIGN_OR_RETURN(parts[i], Eval(*e.children[i + 1]));
      }
      return EvalSlice(obj, parts[0], parts[1], parts[2]);
    }
    case Expr::Kind::kCall: {
      PENG_ASSIGN_OR_RETURN(Value callee, Eval(*e.children[0]));
      PENG_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
      return Call(callee, std::move(args));
    }
    case Expr::Kind::kFilter: {
      PENG_ASSIGN_OR_RETURN(Value input, Eval(*e.children[0]));
      PENG_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
      return ApplyFilter(*this, e.name, input, args);
    }
    case Expr::Kind::kTest: {
      PENG_ASSIGN_OR_RETURN(Value input, Eval(*e.children[0]));
      PENG_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1));
      PENG_ASSIGN_OR_RETURN(bool result, ApplyTest(*this, e.name, input, args));
      return Value::Bool(result != e.negated);
    }
    case Expr::Kind::kUnary: {
      PENG_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0]));
      if (e.name == "not") return Value::Bool(!Truthy(v));
      if (v.is_undefined()) return UndefinedError(v);
      if (v.is_float()) return Value::Float(e.name == "-" ? -v.number_value() : v.number_value());
      if (v.is_integral()) {
        if (e.name == "+") return Value::Int(v.int_value());
        if (v.int_value() == INT64_MIN) return TypeError("integer overflow");
        return Value::Int(-v.int_value());
      }
      return TypeError(absl::StrCat("bad operand type for unary ", e.name, ": '", TypeName(v), "'"));
    }
    case Expr::Kind::kBinary: {
      PENG_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0]));
      if (e.name == "and") {
        if (!Truthy(a)) return a;
        return Eval(*e.children[1]);
      }
      if (e.name == "or") {
        if (Truthy(a)) return a;
        return Eval(*e.children[1]);
      }
      PENG_ASSIGN_OR_RETURN(Value b, Eval(*e.children[1]));
      return EvalBinary(e.name, a, b);
    }
    case Expr::Kind::kCompare: {
      PENG_ASSIGN_OR_RETURN(Value left, Eval(*e.children[0]));
      for (size_t i = 0; i < e.ops.size(); ++i) {
        PENG_ASSIGN_OR_RETURN(Value right, Eval(*e.children[i + 1]));
        PENG_ASSIGN_OR_RETURN(bool ok, EvalCompare(e.ops[i], left, right));
        if (!ok) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case Expr::Kind::kCond: {
      PENG_ASSIGN_OR_RETURN(Value c, Eval(*e.children[0]));
      if (Truthy(c)) return Eval(*e.children[1]);
      if (e.children[2] == nullptr) return Value::Undefined("the inline if had no else");
      return Eval(*e.children[2]);
    }
  }
  return absl::InternalError("unknown expression kind");
}

absl::StatusOr<Value> Renderer::EvalBinary(const std::string& op, const Value& a,
                                           const Value& b) {
  if (op == "~") {
    PENG_ASSIGN_OR_RETURN(std::string x, Str(a));
    PENG_ASSIGN_OR_RETURN(std::string y, Str(b));
    PENG_RETURN_IF_ERROR(CheckSize(x.size() + y.size()));
    PENG_RETURN_IF_ERROR(Charge(static_cast<int64_t>((x.size() + y.size()) / 64)));
    return Value::String(x + y);
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  const bool numbers = a.is_number() && b.is_number();
  const bool floats = numbers && (a.is_float() || b.is_float());
  if (op == "+") {
    if (floats) return Value::Float(a.number_value() + b.number_value());
    if (numbers) {
      int64_t r;
      if (__builtin_add_overflow(a.int_value(), b.int_value(), &r)) return TypeError("integer overflow");
      return Value::Int(r);
    }
    if (a.is_string() && b.is_string()) {
      PENG_RETURN_IF_ERROR(CheckSize(a.str().size() + b.str().size()));
      PENG_RETURN_IF_ERROR(Charge(static_cast<int64_t>((a.str().size() + b.str().size()) / 64)));
      return Value::String(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.list().is_tuple == b.list().is_tuple) {
      PENG_RETURN_IF_ERROR(CheckSize(16 * (a.items().size() + b.items().size())));
      std::vector<Value> items = a.items();
      items.insert(items.end(), b.items().begin(), b.items().end());
      return Value::List(std::move(items), a.list().is_tuple);
    }
    if (a.is_string() || a.is_list()) {
      return TypeError(absl::StrCat("can only concatenate ", TypeName(a), " (not \"",
                                    TypeName(b), "\") to ", TypeName(a)));
    }
    return TypeError(OperandError("+", a, b));
  }
  if (op == "-") {
    if (floats) return Value::Float(a.number_value() - b.number_value());
    if (numbers) {
      int64_t r;
      if (__builtin_sub_overflow(a.int_value(), b.int_value(), &r)) return TypeError("integer overflow");
      return Value::Int(r);
    }
    return TypeError(OperandError("-", a, b));
  }
  if (op == "*") {
    if (floats) return Value::Float(a.number_value() * b.number_value());
    if (numbers) {
      int64_t r;
      if (__builtin_mul_overflow(a.int_value(), b.int_value(), &r)) return TypeError("integer overflow");
      return Value::Int(r);
    }
    const Value* seq = a.is_integral() ? &b : &a;
    const Value* count = a.is_integral() ? &a : &b;
    if (count->is_integral() && (seq->is_string() || seq->is_list())) {
      const int64_t n = std::max<int64_t>(0, count->int_value());
      const size_t unit = seq->is_string() ? seq->str().size() : 16 * seq->items().size();
      if (n > 0 && unit > 0) {
        if (static_cast<uint64_t>(n) > max_value_bytes() / unit + 1) return CheckSize(SIZE_MAX);
        PENG_RETURN_IF_ERROR(CheckSize(unit * n));
        PENG_RETURN_IF_ERROR(Charge(static_cast<int64_t>(unit * n / 64)));
      }
      if (seq->is_string()) {
        std::string out;
        out.reserve(seq->str().size() * n);
        for (int64_t i = 0; i < n; ++i) out += seq->str();
        return Value::String(std::move(out));
      }
      std::vector<Value> items;
      for (int64_t i = 0; i < n; ++i) {
        items.insert(items.end(), seq->items().begin(), seq->items().end());
      }
      return Value::List(std::move(items), seq->list().is_tuple);
    }
    return TypeError(OperandError("*", a, b));
  }
  if (op == "/" || op == "//" || op == "%") {
    if (!numbers) {
      if (op == "%" && a.is_string()) {
        return TypeError("printf-style string formatting (%) is not supported");
      }
      return TypeError(OperandError(op, a, b));
    }
    if (b.number_value() == 0) {
      return TypeError(op == "%" ? "integer modulo by zero" : "division by zero");
    }
    if (op == "/") return Value::Float(a.number_value() / b.number_value());
    if (!floats) {
      const int64_t x = a.int_value(), y = b.int_value();
      if (x == INT64_MIN && y == -1) return TypeError("integer overflow");
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        --q;
        r += y;
      }
      return Value::Int(op == "//" ? q : r);
    }
    const double x = a.number_value(), y = b.number_value();
    if (op == "//") return Value::Float(std::floor(x / y));
    double r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return Value::Float(r);
  }
  if (op == "**") {
    if (!numbers) return TypeError(OperandError("**", a, b));
    if (!floats && b.int_value() >= 0) {
      int64_t base = a.int_value(), exp = b.int_value(), result = 1;
      while (exp > 0) {
        if (exp & 1) {
          if (__builtin_mul_overflow(result, base, &result)) return TypeError("integer overflow");
        }
        exp >>= 1;
        if (exp > 0 && __builtin_mul_overflow(base, base, &base)) return TypeError("integer overflow");
      }
      return Value::Int(result);
    }
    return Value::Float(std::pow(a.number_value(), b.number_value()));
  }
  return absl::InternalError(absl::StrCat("unknown operator ", op));
}

absl::StatusOr<bool> Renderer::EvalCompare(const std::string& op, const Value& a,
                                           const Value& b) {
  if (op == "==") return Equals(a, b);
  if (op == "!=") return !Equals(a, b);
  if (op == "in" || op == "notin") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string()) {
        return TypeError(absl::StrCat("'in <string>' requires string as left operand, not ",
                                      TypeName(a)));
      }
      found = b.str().find(a.str()) != std::string::npos;
    } else if (b.is_list()) {
      PENG_RETURN_IF_ERROR(Charge(static_cast<int64_t>(b.items().size())));
      for (const Value& item : b.items()) {
        if (Equals(a, item)) {
          found = true;
          break;
        }
      }
    } else if (b.is_dict()) {
      found = a.is_string() && b.dict().Find(a.str()) != nullptr;
    } else if (!b.is_undefined()) {
      return TypeError(absl::StrCat("argument of type '", TypeName(b), "' is not iterable"));
    }
    return found == (op == "in");
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  absl::StatusOr<int> c = Compare(a, b);
  if (!c.ok()) {
    return TypeError(absl::StrCat("'", op, "' not supported between instances of '",
                                  TypeName(a), "' and '", TypeName(b), "'"));
  }
  if (op == "<") return *c < 0;
  if (op == "<=") return *c <= 0;
  if (op == ">") return *c > 0;
  return *c >= 0;
}

absl::StatusOr<Value> Renderer::GetAttr(const Value& obj, const std::string& name) {
  if (obj.is_dict()) {
    if (!obj.dict().is_namespace) {
      Value method = BoundMethod(obj, name);
      if (!method.is_undefined()) return method;
    }
    if (const Value* v = obj.dict().Find(name)) return *v;
    return Value::Undefined(absl::StrCat("'", obj.dict().is_namespace ? "Namespace" : "dict",
                                         " object' has no attribute '", name, "'"));
  }
  if (obj.is_undefined()) return obj;  // chains like a.b.c stay undefined
  if (obj.is_string()) {
    Value method = BoundMethod(obj, name);
    if (!method.is_undefined()) return method;
  }
  return Value::Undefined(
      absl::StrCat("'", TypeName(obj), " object' has no attribute '", name, "'"));
}

Value Renderer::GetItem(const Value& obj, const Value& key) {
  if (obj.is_dict()) {
    if (key.is_string()) {
      if (const Value* v = obj.dict().Find(key.str())) return *v;
      Value method = BoundMethod(obj, key.str());
      if (!method.is_undefined()) return method;
    }
    return Value::Undefined(absl::StrCat("'dict object' has no attribute ", Repr(key)));
  }
  if (obj.is_undefined()) return obj;
  if ((obj.is_list() || obj.is_string()) && key.is_integral()) {
    int64_t i = key.int_value();
    if (obj.is_list()) {
      const int64_t n = static_cast<int64_t>(obj.items().size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return obj.items()[i];
    } else {
      const std::string& s = obj.str();
      if (IsAscii(s)) {
        const int64_t n = static_cast<int64_t>(s.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return Value::String(s.substr(i, 1));
      } else {
        std::vector<size_t> offsets = CodePointOffsets(s);
        const int64_t n = static_cast<int64_t>(offsets.size()) - 1;
        if (i < 0) i += n;
        if (i >= 0 && i < n) return Value::String(s.substr(offsets[i], offsets[i + 1] - offsets[i]));
      }
    }
    return Value::Undefined(absl::StrCat(TypeName(obj), " index out of range"));
  }
  if (key.is_string()) {
    absl::StatusOr<Value> attr = GetAttr(obj, key.str());
    if (attr.ok()) return *attr;
  }
  return Value::Undefined(absl::StrCat("'", TypeName(obj), " object' has no item ", Repr(key)));
}

absl::StatusOr<Value> Renderer::EvalSlice(const Value& obj, const Value& start_v,
                                          const Value& stop_v, const Value& step_v) {
  auto index = [](const Value& v, const char* what) -> absl::StatusOr<std::optional<int64_t>> {
    if (v.is_undefined() || v.is_none()) return std::optional<int64_t>();
    if (!v.is_integral()) {
      return TypeError(absl::StrCat("slice ", what, " must be an integer or none, not '",
                                    TypeName(v), "'"));
    }
    return std::optional<int64_t>(v.int_value());
  };
  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> start, index(start_v, "start"));
  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> stop, index(stop_v, "stop"));
  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> step_opt, index(step_v, "step"));
  const int64_t step = step_opt.value_or(1);
  if (step == 0) return TypeError("slice step cannot be zero");
  if (obj.is_undefined()) return obj;
  if (!obj.is_list() && !obj.is_string()) {
    return TypeError(absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
  }
  std::vector<size_t> offsets;
  int64_t n;
  if (obj.is_list()) {
    n = static_cast<int64_t>(obj.items().size());
  } else if (IsAscii(obj.str())) {
    n = static_cast<int64_t>(obj.str().size());
  } else {
    offsets = CodePointOffsets(obj.str());
    n = static_cast<int64_t>(offsets.size()) - 1;
  }
  // Python's slice.indices().
  const int64_t lower = step > 0 ? 0 : -1;
  const int64_t upper = step > 0 ? n : n - 1;
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += n;
    return std::clamp(x, lower, upper);
  };
  const int64_t b = clamp(start, step > 0 ? lower : upper);
  const int64_t e = clamp(stop, step > 0 ? upper : lower);
  std::vector<int64_t> picks;
  for (int64_t i = b; step > 0 ? i < e : i > e; i += step) picks.push_back(i);
  PENG_RETURN_IF_ERROR(Charge(static_cast<int64_t>(picks.size())));
  if (obj.is_list()) {
    std::vector<Value> items;
    items.reserve(picks.size());
    for (int64_t i : picks) items.push_back(obj.items()[i]);
    return Value::List(std::move(items), obj.list().is_tuple);
  }
  const std::string& s = obj.str();
  if (offsets.empty() && step == 1) return Value::String(s.substr(b, std::max<int64_t>(0, e - b)));
  std::string out;
  for (int64_t i : picks) {
    if (offsets.empty()) {
      out += s[i];
    } else {
      out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
    }
  }
  return Value::String(std::move(out));
}

absl::StatusOr<std::vector<Value>> Renderer::Iterate(const Value& v) {
  std::vector<Value> items;
  switch (v.kind()) {
    case Value::Kind::kUndefined: return items;
    case Value::Kind::kList: items = v.items(); break;
    case Value::Kind::kDict:
      for (const auto& [k, unused] : v.dict().entries) items.push_back(Value::String(k));
      break;
    case Value::Kind::kString: {
      std::vector<size_t> offsets = CodePointOffsets(v.str());
      for (size_t i = 0; i + 1 < offsets.size(); ++i) {
        items.push_back(Value::String(v.str().substr(offsets[i], offsets[i + 1] - offsets[i])));
      }
      break;
    }
    default:
      return TypeError(absl::StrCat("'", TypeName(v), "' object is not iterable"));
  }
  PENG_RETURN_IF_ERROR(Charge(static_cast<int64_t>(items.size())));
  return items;
}

}  // namespace peng::chat_template_internal
