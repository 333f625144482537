// Statement half of the chat template parser: the template body, tags (if/for/set/macro/
// call/filter/with/break/continue/generation), assignment targets and macro parameters, and
// the ParseProgram entry point. Expressions are parsed in chat_template_expr_parser.cc.
#include "server/chat_template_parser.h"

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "server/chat_template_lexer.h"
#include "server/chat_template_parser_internal.h"

namespace peng::chat_template_internal {
namespace {

StmtPtr MakeStmt(Stmt::Kind kind, size_t offset) {
  auto s = std::make_unique<Stmt>();
  s->kind = kind;
  s->offset = offset;
  return s;
}

}  // namespace

std::string Describe(const Token& t) {
  switch (t.kind) {
    case TokenKind::kText: return "template text";
    case TokenKind::kVarBegin: return "'{{'";
    case TokenKind::kVarEnd: return "'}}'";
    case TokenKind::kBlockBegin: return "'{%'";
    case TokenKind::kBlockEnd: return "'%}'";
    case TokenKind::kName: return absl::StrCat("'", t.text, "'");
    case TokenKind::kString: return "string literal";
    case TokenKind::kInt:
    case TokenKind::kFloat: return "number";
    case TokenKind::kOperator: return absl::StrCat("'", t.text, "'");
    case TokenKind::kEnd: return "end of template";
  }
  return "token";
}

absl::StatusOr<Body> Parser::ParseTemplate() {
  Body body;
  std::string end;
  PENG_RETURN_IF_ERROR(ParseBody({}, &body, &end));
  return body;
}

// Statements until a `{% <end> ...` with <end> in `ends`; consumes `{%` and the end name.
absl::Status Parser::ParseBody(std::initializer_list<absl::string_view> ends, Body* body,
                               std::string* end_tag) {
  DepthGuard guard(this);
  PENG_RETURN_IF_ERROR(CheckDepth());
  const size_t open_offset = open_tags_.empty() ? Cur().offset : open_tags_.back();
  std::string names;
  for (absl::string_view end : ends) {
    absl::StrAppend(&names, names.empty() ? "" : " or ", "'", end, "'");
  }
  open_ends_.push_back(names);
  struct PopEnds {
    std::vector<std::string>* v;
    ~PopEnds() { v->pop_back(); }
  } pop_ends{&open_ends_};
  while (true) {
    const Token& t = Cur();
    switch (t.kind) {
      case TokenKind::kText: {
        auto s = MakeStmt(Stmt::Kind::kText, t.offset);
        s->text = t.text;
        body->push_back(std::move(s));
        Advance();
        break;
      }
      case TokenKind::kVarBegin: {
        auto s = MakeStmt(Stmt::Kind::kOutput, t.offset);
        Advance();
        PENG_ASSIGN_OR_RETURN(s->expr, ParseTuple(true));
        if (Cur().kind != TokenKind::kVarEnd) return Unexpected("end of print statement '}}'");
        Advance();
        body->push_back(std::move(s));
        break;
      }
      case TokenKind::kBlockBegin: {
        const Token& name = Peek();
        if (name.kind != TokenKind::kName) {
          Advance();
          return Unexpected("a statement name");
        }
        for (absl::string_view end : ends) {
          if (name.text == end) {
            Advance();
            Advance();
            *end_tag = name.text;
            return absl::OkStatus();
          }
        }
        PENG_RETURN_IF_ERROR(ParseStatement(body));
        break;
      }
      case TokenKind::kEnd: {
        if (ends.size() == 0) return absl::OkStatus();
        return Error(open_offset,
                     absl::StrCat("unexpected end of template; the block opened here needs ",
                                  names));
      }
      default: return Unexpected("template text or a tag");
    }
  }
}

absl::Status Parser::ParseStatement(Body* body) {
  Advance();  // {%
  const Token& t = Cur();
  const size_t offset = tokens_[idx_ - 1].offset;
  const std::string name = t.text;
  Advance();
  open_tags_.push_back(offset);
  absl::Status st = ParseNamedStatement(name, offset, t.offset, body);
  open_tags_.pop_back();
  return st;
}

absl::Status Parser::ParseNamedStatement(const std::string& name, size_t offset,
                                         size_t name_offset, Body* body) {
  if (name == "if") return ParseIf(offset, body);
  if (name == "for") return ParseFor(offset, body);
  if (name == "set") return ParseSet(offset, body);
  if (name == "macro") return ParseMacro(offset, body);
  if (name == "call") return ParseCallBlock(offset, body);
  if (name == "filter") return ParseFilterBlock(offset, body);
  if (name == "with") return ParseWith(offset, body);
  if (name == "break" || name == "continue") {
    if (loop_depth_ == 0) return Error(offset, absl::StrCat("'", name, "' outside of a loop"));
    PENG_RETURN_IF_ERROR(ExpectBlockEnd());
    body->push_back(
        MakeStmt(name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, offset));
    return absl::OkStatus();
  }
  if (name == "generation") {
    // transformers' AssistantTracker marker: renders as its body.
    PENG_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    PENG_RETURN_IF_ERROR(ParseBody({"endgeneration"}, body, &end));
    return ExpectBlockEnd();
  }
  if (absl::string_view(name).substr(0, 3) == "end" || name == "elif" || name == "else") {
    // open_ends_.back() is the body this tag sits in; empty at the top level.
    const std::string& expected = open_ends_.back();
    if (expected.empty()) {
      return Error(name_offset, absl::StrCat("unexpected '", name, "' with no open block"));
    }
    return Error(name_offset, absl::StrCat("unexpected '", name,
                                           "'; the innermost open block needs ", expected));
  }
  return Error(name_offset, absl::StrCat("unknown tag '", name, "'"));
}

absl::Status Parser::ParseIf(size_t offset, Body* body) {
  auto s = MakeStmt(Stmt::Kind::kIf, offset);
  IfBranch branch;
  PENG_ASSIGN_OR_RETURN(branch.condition, ParseTuple(false));
  while (true) {
    PENG_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    const bool is_else = branch.condition == nullptr;
    if (is_else) {
      PENG_RETURN_IF_ERROR(ParseBody({"endif"}, &branch.body, &end));
    } else {
      PENG_RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, &branch.body, &end));
    }
    s->branches.push_back(std::move(branch));
    branch = IfBranch();
    if (end == "endif") break;
    if (end == "elif") {
      PENG_ASSIGN_OR_RETURN(branch.condition, ParseTuple(false));
    }
  }
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  body->push_back(std::move(s));
  return absl::OkStatus();
}

absl::StatusOr<AssignTarget> Parser::ParseTarget(bool allow_attr) {
  AssignTarget target;
  const bool parens = IsOp("(");
  if (parens) Advance();
  PENG_ASSIGN_OR_RETURN(std::string first, ExpectName());
  target.names.push_back(std::move(first));
  if (allow_attr && !parens && IsOp(".")) {
    Advance();
    PENG_ASSIGN_OR_RETURN(target.attr, ExpectName());
    return target;
  }
  while (IsOp(",")) {
    Advance();
    target.is_tuple = true;
    if (Cur().kind != TokenKind::kName) break;  // trailing comma
    PENG_ASSIGN_OR_RETURN(std::string next, ExpectName());
    target.names.push_back(std::move(next));
  }
  if (parens) {
    target.is_tuple = true;
    PENG_RETURN_IF_ERROR(ExpectOp(")"));
  }
  for (const std::string& n : target.names) {
    if (n == "loop" && !allow_attr) continue;
    if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" ||
        n == "None") {
      return Error(Cur().offset, absl::StrCat("cannot assign to '", n, "'"));
    }
  }
  return target;
}

absl::Status Parser::ParseFor(size_t offset, Body* body) {
  auto s = MakeStmt(Stmt::Kind::kFor, offset);
  PENG_ASSIGN_OR_RETURN(s->target, ParseTarget(false));
  if (!IsName("in")) return Unexpected("'in'");
  Advance();
  PENG_ASSIGN_OR_RETURN(s->expr, ParseTuple(false));
  if (IsName("if")) {
    Advance();
    PENG_ASSIGN_OR_RETURN(s->filter, ParseExpression());
  }
  if (IsName("recursive")) return Error(Cur().offset, "recursive loops are not supported");
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  std::string end;
  ++loop_depth_;
  absl::Status st = ParseBody({"endfor", "else"}, &s->body, &end);
  --loop_depth_;
  PENG_RETURN_IF_ERROR(st);
  if (end == "else") {
    PENG_RETURN_IF_ERROR(ExpectBlockEnd());
    PENG_RETURN_IF_ERROR(ParseBody({"endfor"}, &s->else_body, &end));
  }
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  body->push_back(std::move(s));
  return absl::OkStatus();
}

absl::Status Parser::ParseSet(size_t offset, Body* body) {
  PENG_ASSIGN_OR_RETURN(AssignTarget target, ParseTarget(true));
  if (IsOp("=")) {
    Advance();
    auto s = MakeStmt(Stmt::Kind::kSet, offset);
    s->target = std::move(target);
    PENG_ASSIGN_OR_RETURN(s->expr, ParseTuple(true));
    PENG_RETURN_IF_ERROR(ExpectBlockEnd());
    body->push_back(std::move(s));
    return absl::OkStatus();
  }
  if (target.is_tuple || !target.attr.empty()) return Unexpected("'='");
  auto s = MakeStmt(Stmt::Kind::kSetBlock, offset);
  s->target = std::move(target);
  if (IsOp("|")) {
    auto placeholder = MakeExpr(Expr::Kind::kName, Cur().offset);
    placeholder->name = "\x01body";
    PENG_ASSIGN_OR_RETURN(s->filter, ParseFilterChain(std::move(placeholder), true));
  }
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  std::string end;
  PENG_RETURN_IF_ERROR(ParseBody({"endset"}, &s->body, &end));
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  body->push_back(std::move(s));
  return absl::OkStatus();
}

absl::Status Parser::ParseMacroBody(Stmt* s, absl::string_view end_name) {
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  const int saved_loop_depth = loop_depth_;
  loop_depth_ = 0;
  std::string end;
  absl::Status st = ParseBody({end_name}, &s->body, &end);
  loop_depth_ = saved_loop_depth;
  PENG_RETURN_IF_ERROR(st);
  if (Cur().kind == TokenKind::kName) Advance();  // {% endmacro name %}
  return ExpectBlockEnd();
}

absl::Status Parser::ParseParams(Stmt* s) {
  PENG_RETURN_IF_ERROR(ExpectOp("("));
  while (!IsOp(")")) {
    if (!s->params.empty()) PENG_RETURN_IF_ERROR(ExpectOp(","));
    if (IsOp(")")) break;
    MacroParam p;
    PENG_ASSIGN_OR_RETURN(p.name, ExpectName());
    if (IsOp("=")) {
      Advance();
      PENG_ASSIGN_OR_RETURN(p.default_value, ParseExpression());
    }
    s->params.push_back(std::move(p));
  }
  Advance();
  return absl::OkStatus();
}

absl::Status Parser::ParseMacro(size_t offset, Body* body) {
  auto s = MakeStmt(Stmt::Kind::kMacro, offset);
  PENG_ASSIGN_OR_RETURN(s->name, ExpectName());
  PENG_RETURN_IF_ERROR(ParseParams(s.get()));
  PENG_RETURN_IF_ERROR(ParseMacroBody(s.get(), "endmacro"));
  body->push_back(std::move(s));
  return absl::OkStatus();
}

absl::Status Parser::ParseCallBlock(size_t offset, Body* body) {
  auto s = MakeStmt(Stmt::Kind::kCallBlock, offset);
  if (IsOp("(")) PENG_RETURN_IF_ERROR(ParseParams(s.get()));  // caller's parameters
  PENG_ASSIGN_OR_RETURN(s->expr, ParseExpression());
  if (s->expr->kind != Expr::Kind::kCall) {
    return Error(s->expr->offset, "{% call %} needs a macro call");
  }
  PENG_RETURN_IF_ERROR(ParseMacroBody(s.get(), "endcall"));
  body->push_back(std::move(s));
  return absl::OkStatus();
}

absl::Status Parser::ParseFilterBlock(size_t offset, Body* body) {
  auto s = MakeStmt(Stmt::Kind::kFilterBlock, offset);
  auto placeholder = MakeExpr(Expr::Kind::kName, Cur().offset);
  placeholder->name = "\x01body";
  PENG_ASSIGN_OR_RETURN(s->filter, ParseFilterChain(std::move(placeholder), false));
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  std::string end;
  PENG_RETURN_IF_ERROR(ParseBody({"endfilter"}, &s->body, &end));
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  body->push_back(std::move(s));
  return absl::OkStatus();
}

absl::Status Parser::ParseWith(size_t offset, Body* body) {
  auto s = MakeStmt(Stmt::Kind::kWith, offset);
  while (Cur().kind != TokenKind::kBlockEnd) {
    if (!s->assignments.empty()) PENG_RETURN_IF_ERROR(ExpectOp(","));
    PENG_ASSIGN_OR_RETURN(AssignTarget target, ParseTarget(false));
    PENG_RETURN_IF_ERROR(ExpectOp("="));
    PENG_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
    s->assignments.emplace_back(std::move(target), std::move(value));
  }
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  std::string end;
  PENG_RETURN_IF_ERROR(ParseBody({"endwith"}, &s->body, &end));
  PENG_RETURN_IF_ERROR(ExpectBlockEnd());
  body->push_back(std::move(s));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Program>> ParseProgram(std::string source, int max_nesting) {
  auto program = std::make_unique<Program>();
  program->source = NormalizeTemplateSource(source);
  PENG_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(program->source));
  Parser parser(program->source, std::move(tokens), max_nesting);
  PENG_ASSIGN_OR_RETURN(program->body, parser.ParseTemplate());
  return program;
}

}  // namespace peng::chat_template_internal
