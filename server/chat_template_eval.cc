// Renderer, part 1: per-render state, budgets and statement execution (text, output, if,
// for, set, macro, call, filter and with blocks, break/continue). Expression evaluation, calls
// and attribute/item/slice access live in chat_template_expr_eval.cc.
#include "server/chat_template_eval.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "server/chat_template_lexer.h"

namespace peng::chat_template_internal {
namespace {

constexpr char kFilterBodyName[] = "\x01body";

absl::Status TypeError(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

}  // namespace

Renderer::Renderer(const Program& program, const ChatTemplateOptions& options)
    : program_(program), options_(options), limits_(options.limits) {}

Renderer::~Renderer() {
  for (Value& ns : namespaces_) ns.mutable_dict().entries.clear();
}

absl::StatusOr<std::string> Renderer::Render(DictData variables) {
  Frame root;
  for (auto& [k, v] : variables.entries) root[k] = std::move(v);
  frames_ = {&root};
  std::string output;
  out_ = &output;
  Flow flow = Flow::kNormal;
  PENG_RETURN_IF_ERROR(ExecBody(program_.body, &flow));
  return output;
}

// ---------------------------------------------------------------- limits

absl::Status Renderer::Charge(int64_t steps) {
  steps_ += steps;
  if (steps_ > limits_.max_steps) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template exceeded its budget of ", limits_.max_steps,
                     " evaluation steps"));
  }
  return absl::OkStatus();
}

size_t Renderer::max_value_bytes() const { return static_cast<size_t>(limits_.max_output_bytes); }

absl::Status Renderer::CheckSize(size_t bytes) const {
  if (bytes > max_value_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template built a value larger than the limit of ", max_value_bytes(), " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Renderer::Str(const Value& v) const {
  std::string s = ToStr(v, max_value_bytes());
  PENG_RETURN_IF_ERROR(CheckSize(s.size()));
  return s;
}

absl::Status Renderer::Emit(absl::string_view text) {
  if (out_->size() + text.size() > static_cast<size_t>(limits_.max_output_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template output exceeds the limit of ", limits_.max_output_bytes, " bytes"));
  }
  out_->append(text.data(), text.size());
  return absl::OkStatus();
}

absl::Status Renderer::Raise(std::string message) {
  error_located_ = true;  // reported verbatim, as Hugging Face does
  return absl::InvalidArgumentError(message);
}

// ---------------------------------------------------------------- statements

absl::Status Renderer::ExecBody(const Body& body, Flow* flow) {
  for (const StmtPtr& s : body) {
    absl::Status st = Exec(*s, flow);
    if (!st.ok()) {
      if (error_located_) return st;
      error_located_ = true;
      return absl::Status(st.code(), absl::StrCat(LineColumn(program_.source, s->offset), ": ",
                                                   st.message()));
    }
    if (*flow != Flow::kNormal) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Renderer::Capture(const Body& body, std::string* text) {
  std::string* saved = out_;
  out_ = text;
  Flow flow = Flow::kNormal;
  absl::Status s = ExecBody(body, &flow);
  out_ = saved;
  return s;
}

absl::Status Renderer::Assign(const AssignTarget& target, const Value& v, Frame* frame) {
  if (!target.is_tuple) {
    (*frame)[target.names[0]] = v;
    return absl::OkStatus();
  }
  PENG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  if (items.size() != target.names.size()) {
    return TypeError(absl::StrCat(
        items.size() > target.names.size() ? "too many" : "not enough",
        " values to unpack (expected ", target.names.size(), ", got ", items.size(), ")"));
  }
  for (size_t i = 0; i < items.size(); ++i) (*frame)[target.names[i]] = items[i];
  return absl::OkStatus();
}

absl::Status Renderer::Exec(const Stmt& s, Flow* flow) {
  PENG_RETURN_IF_ERROR(Charge(1));
  switch (s.kind) {
    case Stmt::Kind::kText: return Emit(s.text);
    case Stmt::Kind::kOutput: {
      PENG_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
      if (v.is_string()) return Emit(v.str());
      PENG_ASSIGN_OR_RETURN(std::string text, Str(v));
      return Emit(text);
    }
    case Stmt::Kind::kIf: {
      for (const IfBranch& b : s.branches) {
        if (b.condition != nullptr) {
          PENG_ASSIGN_OR_RETURN(Value c, Eval(*b.condition));
          if (!Truthy(c)) continue;
        }
        return ExecBody(b.body, flow);
      }
      return absl::OkStatus();
    }
    case Stmt::Kind::kFor: return ExecFor(s);
    case Stmt::Kind::kSet: {
      PENG_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
      if (!s.target.attr.empty()) {
        Value ns = Lookup(s.target.names[0]);
        if (!ns.is_dict() || !ns.dict().is_namespace) {
          error_located_ = true;
          return absl::InvalidArgumentError(
              absl::StrCat(LineColumn(program_.source, s.offset), ": cannot assign attribute '",
                           s.target.attr, "' on '", s.target.names[0],
                           "', which is not a namespace()"));
        }
        ns.mutable_dict().Set(s.target.attr, std::move(v));
        return absl::OkStatus();
      }
      return Assign(s.target, v, frames_.back());
    }
    case Stmt::Kind::kSetBlock: {
      std::string text;
      PENG_RETURN_IF_ERROR(Capture(s.body, &text));
      Value v = Value::String(std::move(text));
      if (s.filter != nullptr) {
        Frame frame{{kFilterBodyName, v}};
        frames_.push_back(&frame);
        absl::StatusOr<Value> filtered = Eval(*s.filter);
        frames_.pop_back();
        PENG_RETURN_IF_ERROR(filtered.status());
        v = *std::move(filtered);
      }
      return Assign(s.target, v, frames_.back());
    }
    case Stmt::Kind::kMacro: {
      const Stmt* macro = &s;
      (*frames_.back())[s.name] =
          Value::Function(s.name, [macro](Renderer& r, CallArgs& args) {
            return r.CallMacro(*macro, args, nullptr);
          });
      return absl::OkStatus();
    }
    case Stmt::Kind::kCallBlock: {
      const Expr& call = *s.expr;
      PENG_ASSIGN_OR_RETURN(Value callee, Eval(*call.children[0]));
      PENG_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(call, 1));
      // caller() renders this block's body in the scopes of the call site.
      const Stmt* block = &s;
      std::vector<Frame*> site = frames_;
      Value caller = Value::Function("caller", [block, site](Renderer& r, CallArgs& cargs)
                                                   -> absl::StatusOr<Value> {
        Frame frame;
        for (size_t i = 0; i < block->params.size(); ++i) {
          frame[block->params[i].name] =
              i < cargs.positional.size() ? cargs.positional[i] : Value();
        }
        std::vector<Frame*> saved = std::move(r.frames_);
        r.frames_ = site;
        r.frames_.push_back(&frame);
        std::string text;
        absl::Status st = r.Capture(block->body, &text);
        r.frames_ = std::move(saved);
        PENG_RETURN_IF_ERROR(st);
        return Value::String(std::move(text));
      });
      CallArgs with_caller = std::move(args);
      with_caller.keyword.emplace_back("caller", caller);
      PENG_ASSIGN_OR_RETURN(Value result, Call(callee, std::move(with_caller)));
      PENG_ASSIGN_OR_RETURN(std::string text, Str(result));
      return Emit(text);
    }
    case Stmt::Kind::kFilterBlock: {
      std::string text;
      PENG_RETURN_IF_ERROR(Capture(s.body, &text));
      Frame frame{{kFilterBodyName, Value::String(std::move(text))}};
      frames_.push_back(&frame);
      absl::StatusOr<Value> filtered = Eval(*s.filter);
      frames_.pop_back();
      PENG_RETURN_IF_ERROR(filtered.status());
      PENG_ASSIGN_OR_RETURN(std::string out, Str(*filtered));
      return Emit(out);
    }
    case Stmt::Kind::kWith: {
      Frame frame;
      for (const auto& [target, expr] : s.assignments) {
        PENG_ASSIGN_OR_RETURN(Value v, Eval(*expr));
        PENG_RETURN_IF_ERROR(Assign(target, v, &frame));
      }
      frames_.push_back(&frame);
      absl::Status st = ExecBody(s.body, flow);
      frames_.pop_back();
      return st;
    }
    case Stmt::Kind::kBreak: *flow = Flow::kBreak; return absl::OkStatus();
    case Stmt::Kind::kContinue: *flow = Flow::kContinue; return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Renderer::ExecFor(const Stmt& s) {
  PENG_ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr));
  PENG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable));
  Frame frame;
  frames_.push_back(&frame);
  absl::Status st = [&]() -> absl::Status {
    if (s.filter != nullptr) {
      std::vector<Value> kept;
      for (Value& item : items) {
        PENG_RETURN_IF_ERROR(Assign(s.target, item, &frame));
        PENG_ASSIGN_OR_RETURN(Value keep, Eval(*s.filter));
        if (Truthy(keep)) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      if (++loop_iterations_ > limits_.max_loop_iterations) {
        return absl::InvalidArgumentError(absl::StrCat(
            "chat template exceeded the limit of ", limits_.max_loop_iterations,
            " loop iterations"));
      }
      PENG_RETURN_IF_ERROR(Assign(s.target, items[i], &frame));
      DictData loop;
      loop.entries = {
          {"index", Value::Int(i + 1)},
          {"index0", Value::Int(i)},
          {"revindex", Value::Int(n - i)},
          {"revindex0", Value::Int(n - i - 1)},
          {"first", Value::Bool(i == 0)},
          {"last", Value::Bool(i == n - 1)},
          {"length", Value::Int(n)},
          {"depth", Value::Int(1)},
          {"depth0", Value::Int(0)},
          {"previtem", i > 0 ? items[i - 1] : Value::Undefined("there is no previous item")},
          {"nextitem", i + 1 < n ? items[i + 1] : Value::Undefined("there is no next item")},
          {"cycle", Value::Function("cycle", [i](Renderer&, CallArgs& args)
                                                 -> absl::StatusOr<Value> {
             if (args.positional.empty()) {
               return absl::InvalidArgumentError("no items for cycling given");
             }
             return args.positional[i % args.positional.size()];
           })},
      };
      frame["loop"] = Value::Dict(std::move(loop));
      Flow flow = Flow::kNormal;
      PENG_RETURN_IF_ERROR(ExecBody(s.body, &flow));
      if (flow == Flow::kBreak) break;
    }
    if (n == 0) {
      Flow flow = Flow::kNormal;
      frame.erase("loop");
      return ExecBody(s.else_body, &flow);
    }
    return absl::OkStatus();
  }();
  frames_.pop_back();
  return st;
}

absl::StatusOr<Value> Renderer::CallMacro(const Stmt& macro, CallArgs& args,
                                          const Value* caller) {
  if (call_depth_ >= limits_.max_call_depth) {
    return absl::InvalidArgumentError(absl::StrCat("macro '", macro.name, "' recursed deeper than ",
                                                   limits_.max_call_depth, " calls"));
  }
  if (args.positional.size() > macro.params.size()) {
    return TypeError(absl::StrCat("macro '", macro.name, "' takes not more than ",
                                  macro.params.size(), " argument(s)"));
  }
  Frame frame;
  std::vector<Frame*> saved = std::move(frames_);
  frames_ = {saved.front(), &frame};
  absl::Status st = [&]() -> absl::Status {
    for (size_t i = 0; i < args.positional.size(); ++i) {
      frame[macro.params[i].name] = std::move(args.positional[i]);
    }
    for (auto& [key, value] : args.keyword) {
      if (key == "caller") {
        frame["caller"] = std::move(value);
        continue;
      }
      bool known = false;
      for (const MacroParam& p : macro.params) known = known || p.name == key;
      if (!known) {
        return TypeError(absl::StrCat("macro '", macro.name, "' takes no keyword argument '",
                                      key, "'"));
      }
      frame[key] = std::move(value);
    }
    for (const MacroParam& p : macro.params) {
      if (frame.count(p.name)) continue;
      if (p.default_value != nullptr) {
        PENG_ASSIGN_OR_RETURN(frame[p.name], Eval(*p.default_value));
      } else {
        frame[p.name] = Value::Undefined(absl::StrCat("parameter '", p.name, "' was not provided"));
      }
    }
    if (caller != nullptr) frame["caller"] = *caller;
    return absl::OkStatus();
  }();
  std::string text;
  if (st.ok()) {
    ++call_depth_;
    st = Capture(macro.body, &text);
    --call_depth_;
  }
  frames_ = std::move(saved);
  PENG_RETURN_IF_ERROR(st);
  return Value::String(std::move(text));
}

}  // namespace peng::chat_template_internal
