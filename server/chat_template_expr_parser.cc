// Expression half of the chat template parser: tuples, conditional expressions, boolean,
// comparison and arithmetic operators with jinja2's precedence, literals, calls, subscripts,
// slices, attribute access, filters and tests. Every node is sealed with its tree depth.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "server/chat_template_lexer.h"
#include "server/chat_template_parser_internal.h"

namespace peng::chat_template_internal {

ExprPtr MakeExpr(Expr::Kind kind, size_t offset) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->offset = offset;
  return e;
}

bool Parser::AtTupleEnd() const {
  const Token& t = Cur();
  return t.kind == TokenKind::kVarEnd || t.kind == TokenKind::kBlockEnd ||
         t.kind == TokenKind::kEnd || IsOp(")") || IsOp("]") || IsOp("}") || IsName("if") ||
         IsName("recursive");
}

absl::StatusOr<ExprPtr> Parser::ParseTuple(bool with_condexpr) {
  const size_t offset = Cur().offset;
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty() && AtTupleEnd()) break;
    ExprPtr item;
    if (with_condexpr) {
      PENG_ASSIGN_OR_RETURN(item, ParseExpression());
    } else {
      PENG_ASSIGN_OR_RETURN(item, ParseOr());
    }
    items.push_back(std::move(item));
    if (!IsOp(",")) break;
    is_tuple = true;
    Advance();
  }
  if (!is_tuple) return std::move(items[0]);
  auto t = MakeExpr(Expr::Kind::kTuple, offset);
  t->children = std::move(items);
  return Seal(std::move(t));
}

absl::StatusOr<ExprPtr> Parser::ParseExpression() {
  DepthGuard guard(this);
  PENG_RETURN_IF_ERROR(CheckDepth());
  PENG_ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
  while (IsName("if")) {
    const size_t offset = Cur().offset;
    Advance();
    auto cond = MakeExpr(Expr::Kind::kCond, offset);
    PENG_ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
    cond->children.push_back(std::move(test));
    cond->children.push_back(std::move(expr));
    if (IsName("else")) {
      Advance();
      PENG_ASSIGN_OR_RETURN(ExprPtr otherwise, ParseExpression());
      cond->children.push_back(std::move(otherwise));
    } else {
      cond->children.push_back(nullptr);
    }
    PENG_ASSIGN_OR_RETURN(expr, Seal(std::move(cond)));
  }
  return expr;
}

absl::StatusOr<ExprPtr> Parser::Binary(absl::string_view op, size_t offset, ExprPtr left,
                                       ExprPtr right) {
  auto e = MakeExpr(Expr::Kind::kBinary, offset);
  e->name = std::string(op);
  e->children.push_back(std::move(left));
  e->children.push_back(std::move(right));
  return Seal(std::move(e));
}

// Records the tree depth; left-deep chains (a + a + ...) are built by loops, not recursion,
// so this is what keeps evaluation and destruction from exhausting the stack.
absl::StatusOr<ExprPtr> Parser::Seal(ExprPtr e) {
  int depth = 0;
  for (const auto& c : e->children) {
    if (c) depth = std::max(depth, c->depth);
  }
  for (const auto& kv : e->kwargs) depth = std::max(depth, kv.second->depth);
  e->depth = depth + 1;
  if (e->depth > 2 * max_nesting_) {
    return Error(e->offset, absl::StrCat("expression nested deeper than ", 2 * max_nesting_));
  }
  return e;
}

absl::StatusOr<ExprPtr> Parser::ParseOr() {
  PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
  while (IsName("or")) {
    const size_t offset = Cur().offset;
    Advance();
    PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
    PENG_ASSIGN_OR_RETURN(left, Binary("or", offset, std::move(left), std::move(right)));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseAnd() {
  PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
  while (IsName("and")) {
    const size_t offset = Cur().offset;
    Advance();
    PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
    PENG_ASSIGN_OR_RETURN(left, Binary("and", offset, std::move(left), std::move(right)));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseNot() {
  if (IsName("not")) {
    DepthGuard guard(this);
    PENG_RETURN_IF_ERROR(CheckDepth());
    auto e = MakeExpr(Expr::Kind::kUnary, Cur().offset);
    e->name = "not";
    Advance();
    PENG_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
    e->children.push_back(std::move(operand));
    return Seal(std::move(e));
  }
  return ParseCompare();
}

absl::StatusOr<ExprPtr> Parser::ParseCompare() {
  const size_t offset = Cur().offset;
  PENG_ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
  ExprPtr cmp;
  while (true) {
    std::string op;
    const Token& t = Cur();
    if (t.kind == TokenKind::kOperator &&
        (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" ||
         t.text == ">" || t.text == ">=")) {
      op = t.text;
      Advance();
    } else if (IsName("in")) {
      op = "in";
      Advance();
    } else if (IsName("not") && IsName("in", &Peek())) {
      op = "notin";
      Advance();
      Advance();
    } else {
      break;
    }
    if (!cmp) {
      cmp = MakeExpr(Expr::Kind::kCompare, offset);
      cmp->children.push_back(std::move(first));
    }
    PENG_ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
    cmp->ops.push_back(std::move(op));
    cmp->children.push_back(std::move(operand));
  }
  if (!cmp) return first;
  return Seal(std::move(cmp));
}

absl::StatusOr<ExprPtr> Parser::ParseMath1() {
  PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
  while (IsOp("+") || IsOp("-")) {
    const std::string op = Cur().text;
    const size_t offset = Cur().offset;
    Advance();
    PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
    PENG_ASSIGN_OR_RETURN(left, Binary(op, offset, std::move(left), std::move(right)));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseConcat() {
  PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
  while (IsOp("~")) {
    const size_t offset = Cur().offset;
    Advance();
    PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
    PENG_ASSIGN_OR_RETURN(left, Binary("~", offset, std::move(left), std::move(right)));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseMath2() {
  PENG_ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
  while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
    const std::string op = Cur().text;
    const size_t offset = Cur().offset;
    Advance();
    PENG_ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
    PENG_ASSIGN_OR_RETURN(left, Binary(op, offset, std::move(left), std::move(right)));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParsePow() {
  PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
  while (IsOp("**")) {
    const size_t offset = Cur().offset;
    Advance();
    PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
    PENG_ASSIGN_OR_RETURN(left, Binary("**", offset, std::move(left), std::move(right)));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseUnary(bool with_filter) {
  DepthGuard guard(this);
  PENG_RETURN_IF_ERROR(CheckDepth());
  ExprPtr node;
  if (IsOp("-") || IsOp("+")) {
    node = MakeExpr(Expr::Kind::kUnary, Cur().offset);
    node->name = Cur().text;
    Advance();
    PENG_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
    node->children.push_back(std::move(operand));
    PENG_ASSIGN_OR_RETURN(node, Seal(std::move(node)));
  } else {
    PENG_ASSIGN_OR_RETURN(node, ParsePrimary());
    PENG_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
  }
  if (with_filter) return ParseFilterExpr(std::move(node));
  return node;
}

absl::StatusOr<ExprPtr> Parser::ParsePrimary() {
  const Token& t = Cur();
  const size_t offset = t.offset;
  switch (t.kind) {
    case TokenKind::kName: {
      auto e = MakeExpr(Expr::Kind::kLiteral, offset);
      if (t.text == "true" || t.text == "True") {
        e->literal = Value::Bool(true);
      } else if (t.text == "false" || t.text == "False") {
        e->literal = Value::Bool(false);
      } else if (t.text == "none" || t.text == "None") {
        e->literal = Value::None();
      } else {
        e->kind = Expr::Kind::kName;
        e->name = t.text;
      }
      Advance();
      return e;
    }
    case TokenKind::kString: {
      std::string value;
      while (Cur().kind == TokenKind::kString) {  // adjacent literals concatenate
        value += Cur().text;
        Advance();
      }
      auto e = MakeExpr(Expr::Kind::kLiteral, offset);
      e->literal = Value::String(std::move(value));
      return e;
    }
    case TokenKind::kInt:
    case TokenKind::kFloat: {
      auto e = MakeExpr(Expr::Kind::kLiteral, offset);
      e->literal = t.kind == TokenKind::kInt ? Value::Int(t.int_value)
                                             : Value::Float(t.float_value);
      Advance();
      return e;
    }
    case TokenKind::kOperator: {
      if (t.text == "(") {
        Advance();
        if (IsOp(")")) {
          Advance();
          return MakeExpr(Expr::Kind::kTuple, offset);
        }
        PENG_ASSIGN_OR_RETURN(ExprPtr inner, ParseTuple(true));
        PENG_RETURN_IF_ERROR(ExpectOp(")"));
        return inner;
      }
      if (t.text == "[") {
        Advance();
        auto e = MakeExpr(Expr::Kind::kList, offset);
        while (!IsOp("]")) {
          if (!e->children.empty()) PENG_RETURN_IF_ERROR(ExpectOp(","));
          if (IsOp("]")) break;
          PENG_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
          e->children.push_back(std::move(item));
        }
        Advance();
        return Seal(std::move(e));
      }
      if (t.text == "{") {
        Advance();
        auto e = MakeExpr(Expr::Kind::kDict, offset);
        while (!IsOp("}")) {
          if (!e->children.empty()) PENG_RETURN_IF_ERROR(ExpectOp(","));
          if (IsOp("}")) break;
          PENG_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
          PENG_RETURN_IF_ERROR(ExpectOp(":"));
          PENG_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
          e->children.push_back(std::move(key));
          e->children.push_back(std::move(value));
        }
        Advance();
        return Seal(std::move(e));
      }
      break;
    }
    default: break;
  }
  return Unexpected("an expression");
}

absl::Status Parser::ParseCallArgs(Expr* call) {
  PENG_RETURN_IF_ERROR(ExpectOp("("));
  bool first = true;
  while (!IsOp(")")) {
    if (!first) PENG_RETURN_IF_ERROR(ExpectOp(","));
    first = false;
    if (IsOp(")")) break;
    if (IsOp("*") || IsOp("**")) return Error(Cur().offset, "*args and **kwargs are not supported");
    if (Cur().kind == TokenKind::kName && IsOp("=", &Peek())) {
      std::string key = Cur().text;
      Advance();
      Advance();
      PENG_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
      call->kwargs.emplace_back(std::move(key), std::move(value));
    } else {
      if (!call->kwargs.empty()) {
        return Error(Cur().offset, "positional argument follows keyword argument");
      }
      PENG_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
      call->children.push_back(std::move(value));
    }
  }
  Advance();
  return absl::OkStatus();
}

absl::StatusOr<ExprPtr> Parser::ParseCall(ExprPtr callee) {
  auto call = MakeExpr(Expr::Kind::kCall, Cur().offset);
  call->children.push_back(std::move(callee));
  PENG_RETURN_IF_ERROR(ParseCallArgs(call.get()));
  return Seal(std::move(call));
}

absl::StatusOr<ExprPtr> Parser::ParseSubscript(ExprPtr obj) {
  const size_t offset = Cur().offset;
  Advance();  // [
  ExprPtr parts[3];
  int colons = 0;
  while (!IsOp("]")) {
    if (IsOp(":")) {
      if (++colons > 2) return Unexpected("']'");
      Advance();
      continue;
    }
    if (parts[colons]) return Unexpected("':' or ']'");
    PENG_ASSIGN_OR_RETURN(parts[colons], ParseExpression());
  }
  Advance();
  if (colons == 0) {
    if (!parts[0]) return Error(offset, "empty subscript");
    auto e = MakeExpr(Expr::Kind::kItem, offset);
    e->children.push_back(std::move(obj));
    e->children.push_back(std::move(parts[0]));
    return Seal(std::move(e));
  }
  auto e = MakeExpr(Expr::Kind::kSlice, offset);
  e->children.push_back(std::move(obj));
  for (auto& p : parts) e->children.push_back(std::move(p));
  return Seal(std::move(e));
}

absl::StatusOr<ExprPtr> Parser::ParsePostfix(ExprPtr node) {
  while (true) {
    if (IsOp(".")) {
      const size_t offset = Cur().offset;
      Advance();
      if (Cur().kind == TokenKind::kName) {
        auto e = MakeExpr(Expr::Kind::kAttr, offset);
        e->name = Cur().text;
        e->children.push_back(std::move(node));
        PENG_ASSIGN_OR_RETURN(node, Seal(std::move(e)));
      } else if (Cur().kind == TokenKind::kInt) {
        auto e = MakeExpr(Expr::Kind::kItem, offset);
        e->children.push_back(std::move(node));
        auto index = MakeExpr(Expr::Kind::kLiteral, Cur().offset);
        index->literal = Value::Int(Cur().int_value);
        e->children.push_back(std::move(index));
        PENG_ASSIGN_OR_RETURN(node, Seal(std::move(e)));
      } else {
        return Unexpected("an attribute name");
      }
      Advance();
    } else if (IsOp("[")) {
      PENG_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
    } else if (IsOp("(")) {
      PENG_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
    } else {
      return node;
    }
  }
}

// `| name(args)` repeated; the first `|` is optional for {% filter %} heads.
absl::StatusOr<ExprPtr> Parser::ParseFilterChain(ExprPtr node, bool first_pipe_required) {
  bool first = true;
  while (IsOp("|") || (first && !first_pipe_required && Cur().kind == TokenKind::kName)) {
    if (IsOp("|")) Advance();
    first = false;
    PENG_ASSIGN_OR_RETURN(node, ParseOneFilter(std::move(node)));
  }
  return node;
}

absl::StatusOr<ExprPtr> Parser::ParseOneFilter(ExprPtr node) {
  auto f = MakeExpr(Expr::Kind::kFilter, Cur().offset);
  PENG_ASSIGN_OR_RETURN(f->name, ExpectName());
  f->children.push_back(std::move(node));
  if (IsOp("(")) PENG_RETURN_IF_ERROR(ParseCallArgs(f.get()));
  return Seal(std::move(f));
}

absl::StatusOr<ExprPtr> Parser::ParseFilterExpr(ExprPtr node) {
  while (true) {
    if (IsOp("|")) {
      Advance();
      PENG_ASSIGN_OR_RETURN(node, ParseOneFilter(std::move(node)));
    } else if (IsName("is")) {
      auto test = MakeExpr(Expr::Kind::kTest, Cur().offset);
      Advance();
      if (IsName("not")) {
        test->negated = true;
        Advance();
      }
      PENG_ASSIGN_OR_RETURN(test->name, ExpectName());
      test->children.push_back(std::move(node));
      const Token& t = Cur();
      if (IsOp("(")) {
        PENG_RETURN_IF_ERROR(ParseCallArgs(test.get()));
      } else if ((t.kind == TokenKind::kName || t.kind == TokenKind::kString ||
                  t.kind == TokenKind::kInt || t.kind == TokenKind::kFloat || IsOp("[") ||
                  IsOp("{")) &&
                 !IsName("else") && !IsName("or") && !IsName("and") && !IsName("if") &&
                 !IsName("is") && !IsName("in") && !IsName("not")) {
        PENG_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
        PENG_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
        test->children.push_back(std::move(arg));
      }
      PENG_ASSIGN_OR_RETURN(node, Seal(std::move(test)));
    } else if (IsOp("(")) {
      PENG_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
    } else {
      return node;
    }
  }
}

}  // namespace peng::chat_template_internal
