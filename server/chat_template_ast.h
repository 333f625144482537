// Syntax tree of a parsed chat template. Built once by the parser, then only read (by any
// number of concurrent renders). Every node keeps the byte offset of its first token so
// runtime errors can name "line:column".
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/chat_template_value.h"

namespace peng::chat_template_internal {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // children = items
    kTuple,     // children = items
    kDict,      // children = key0, value0, key1, value1, ...
    kAttr,      // children[0].name
    kItem,      // children[0][children[1]]
    kSlice,     // children[0][children[1]:children[2]:children[3]] (null = omitted)
    kCall,      // children[0](children[1..], kwargs)
    kFilter,    // children[0] | name(children[1..], kwargs)
    kTest,      // children[0] is [not] name(children[1..])
    kUnary,     // name in {"-", "+", "not"}; children[0]
    kBinary,    // name in {+ - * / // % ** ~ and or}; children[0], children[1]
    kCompare,   // children[0] ops[0] children[1] ops[1] children[2] ... (chained)
    kCond,      // children[1] if children[0] else children[2] (null = undefined)
  };
  Kind kind;
  size_t offset = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: == != < <= > >= in notin
  bool negated = false;          // kTest: `is not`
  int depth = 1;                 // height of this subtree (bounded by the parser)
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// Left side of `for` and `set`: one name, a tuple of names, or `ns.attr`.
struct AssignTarget {
  std::vector<std::string> names;
  bool is_tuple = false;
  std::string attr;  // set: names[0].attr = ...
};

struct IfBranch {
  ExprPtr condition;  // null for else
  Body body;
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Stmt {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // branches
    kFor,          // for target in expr [if filter]: body [else: else_body]
    kSet,          // set target = expr
    kSetBlock,     // set target: body (captured text)
    kMacro,        // macro name(params): body
    kCallBlock,    // call expr (the macro call); body becomes caller()
    kFilterBlock,  // filter expr (applied to the placeholder name "\x01body"): body
    kWith,         // with assignments: body
    kBreak,
    kContinue,
  };
  Kind kind;
  size_t offset = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  AssignTarget target;
  std::vector<IfBranch> branches;
  Body body;
  Body else_body;
  std::string name;
  std::vector<MacroParam> params;
  std::vector<std::pair<AssignTarget, ExprPtr>> assignments;  // kWith
};

struct Program {
  std::string source;  // normalized, for error positions
  Body body;
};

}  // namespace peng::chat_template_internal
