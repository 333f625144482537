// Chat template evaluator: runs a parsed Program against one set of variables. A Renderer
// lives for exactly one render and owns all its state (scopes, output, budgets), so concurrent
// renders of the same Program never share anything mutable. Scoping follows jinja2: `for`,
// `with` and macro bodies get their own scope (a `set` inside a loop does not leak out; use
// namespace()), `if` does not. Every evaluation step, loop iteration, built string and macro
// call is charged against ChatTemplateLimits, so hostile templates end with a clear error.
// Statements run in chat_template_eval.cc, expressions in chat_template_expr_eval.cc.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/chat_template.h"
#include "server/chat_template_ast.h"
#include "server/chat_template_value.h"

namespace peng::chat_template_internal {

class Renderer {
 public:
  Renderer(const Program& program, const ChatTemplateOptions& options);
  ~Renderer();
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  // Renders the program with `variables` as its top-level names.
  absl::StatusOr<std::string> Render(DictData variables);

  // ---- services for builtins (filters, tests, methods, globals) ----
  absl::Status Charge(int64_t steps);
  // Fails when a string or list of `bytes` (lists: 16 bytes an item) would pass the limit.
  absl::Status CheckSize(size_t bytes) const;
  size_t max_value_bytes() const;
  // str(v), bounded by the value size limit.
  absl::StatusOr<std::string> Str(const Value& v) const;
  absl::StatusOr<Value> Call(const Value& callee, CallArgs args);
  absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name);
  Value GetItem(const Value& obj, const Value& key);
  // Items of a list, keys of a dict, characters of a string; undefined is empty.
  absl::StatusOr<std::vector<Value>> Iterate(const Value& v);
  // raise_exception(): an error whose message is exactly `message`.
  absl::Status Raise(std::string message);
  // Records a namespace() object; the destructor empties them all, which breaks any
  // reference cycle (`set ns.self = ns`): namespaces are the only mutable values.
  void TrackNamespace(const Value& ns) { namespaces_.push_back(ns); }
  const ChatTemplateOptions& options() const { return options_; }

 private:
  using Frame = std::unordered_map<std::string, Value>;
  enum class Flow { kNormal, kBreak, kContinue };

  absl::Status ExecBody(const Body& body, Flow* flow);
  absl::Status Exec(const Stmt& s, Flow* flow);
  absl::Status ExecFor(const Stmt& s);
  absl::Status Emit(absl::string_view text);
  // Runs `body` with output captured into *text.
  absl::Status Capture(const Body& body, std::string* text);
  absl::Status Assign(const AssignTarget& target, const Value& v, Frame* frame);
  absl::StatusOr<Value> CallMacro(const Stmt& macro, CallArgs& args, const Value* caller);

  absl::StatusOr<Value> Eval(const Expr& e);
  absl::StatusOr<Value> EvalInner(const Expr& e);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first_arg);
  absl::StatusOr<Value> EvalBinary(const std::string& op, const Value& a, const Value& b);
  absl::StatusOr<bool> EvalCompare(const std::string& op, const Value& a, const Value& b);
  absl::StatusOr<Value> EvalSlice(const Value& obj, const Value& start, const Value& stop,
                                  const Value& step);
  Value Lookup(const std::string& name) const;

  const Program& program_;
  const ChatTemplateOptions& options_;
  const ChatTemplateLimits& limits_;
  std::vector<Frame*> frames_;
  std::string* out_ = nullptr;
  int64_t steps_ = 0;
  int64_t loop_iterations_ = 0;
  int call_depth_ = 0;
  bool error_located_ = false;  // the innermost failing expression already named its position
  std::vector<Value> namespaces_;
};

}  // namespace peng::chat_template_internal
