// The recursive-descent Parser behind ParseProgram (chat_template_parser.h), shared by its two
// halves: statements and tags in chat_template_parser.cc, expressions in
// chat_template_expr_parser.cc. One Parser parses one template and owns the token cursor and
// the nesting counters that bound recursion. Internal: include chat_template_parser.h instead.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/chat_template_ast.h"
#include "server/chat_template_lexer.h"

namespace peng::chat_template_internal {

// A fresh expression node of `kind` at byte `offset` of the source.
ExprPtr MakeExpr(Expr::Kind kind, size_t offset);
// How a token is named in "expected X, got Y" errors.
std::string Describe(const Token& t);

class Parser {
 public:
  Parser(const std::string& source, std::vector<Token> tokens, int max_nesting)
      : source_(source), tokens_(std::move(tokens)), max_nesting_(max_nesting) {}

  absl::StatusOr<Body> ParseTemplate();

 private:
  // Bounds recursion: every nested body and every expression level goes through one.
  class DepthGuard {
   public:
    explicit DepthGuard(Parser* p) : p_(p) { ++p_->depth_; }
    ~DepthGuard() { --p_->depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    Parser* p_;
  };

  const Token& Cur() const { return tokens_[idx_]; }
  const Token& Peek(size_t n = 1) const {
    return tokens_[std::min(idx_ + n, tokens_.size() - 1)];
  }
  void Advance() {
    if (idx_ + 1 < tokens_.size()) ++idx_;
  }
  bool IsOp(absl::string_view op, const Token* t = nullptr) const {
    const Token& tok = t ? *t : Cur();
    return tok.kind == TokenKind::kOperator && tok.text == op;
  }
  bool IsName(absl::string_view name, const Token* t = nullptr) const {
    const Token& tok = t ? *t : Cur();
    return tok.kind == TokenKind::kName && tok.text == name;
  }

  absl::Status Error(size_t offset, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template syntax error at ", LineColumn(source_, offset), ": ", what));
  }
  absl::Status Unexpected(absl::string_view expected) const {
    return Error(Cur().offset, absl::StrCat("expected ", expected, ", got ", Describe(Cur())));
  }
  absl::Status CheckDepth() const {
    if (depth_ > max_nesting_) {
      return Error(Cur().offset, absl::StrCat("template nested deeper than ", max_nesting_));
    }
    return absl::OkStatus();
  }

  absl::Status ExpectOp(absl::string_view op) {
    if (!IsOp(op)) return Unexpected(absl::StrCat("'", op, "'"));
    Advance();
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Cur().kind != TokenKind::kBlockEnd) return Unexpected("end of statement block '%}'");
    Advance();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Cur().kind != TokenKind::kName) return Unexpected("a name");
    std::string name = Cur().text;
    Advance();
    return name;
  }

  // ---- statements (chat_template_parser.cc) ----
  absl::Status ParseBody(std::initializer_list<absl::string_view> ends, Body* body,
                         std::string* end_tag);
  absl::Status ParseStatement(Body* body);
  absl::Status ParseNamedStatement(const std::string& name, size_t offset, size_t name_offset,
                                   Body* body);
  absl::Status ParseIf(size_t offset, Body* body);
  absl::StatusOr<AssignTarget> ParseTarget(bool allow_attr);
  absl::Status ParseFor(size_t offset, Body* body);
  absl::Status ParseSet(size_t offset, Body* body);
  absl::Status ParseMacroBody(Stmt* s, absl::string_view end_name);
  absl::Status ParseParams(Stmt* s);
  absl::Status ParseMacro(size_t offset, Body* body);
  absl::Status ParseCallBlock(size_t offset, Body* body);
  absl::Status ParseFilterBlock(size_t offset, Body* body);
  absl::Status ParseWith(size_t offset, Body* body);

  // ---- expressions, jinja2 precedence loosest first (chat_template_expr_parser.cc) ----
  bool AtTupleEnd() const;
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr);
  absl::StatusOr<ExprPtr> ParseExpression();
  absl::StatusOr<ExprPtr> Binary(absl::string_view op, size_t offset, ExprPtr left, ExprPtr right);
  absl::StatusOr<ExprPtr> Seal(ExprPtr e);
  absl::StatusOr<ExprPtr> ParseOr();
  absl::StatusOr<ExprPtr> ParseAnd();
  absl::StatusOr<ExprPtr> ParseNot();
  absl::StatusOr<ExprPtr> ParseCompare();
  absl::StatusOr<ExprPtr> ParseMath1();
  absl::StatusOr<ExprPtr> ParseConcat();
  absl::StatusOr<ExprPtr> ParseMath2();
  absl::StatusOr<ExprPtr> ParsePow();
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter);
  absl::StatusOr<ExprPtr> ParsePrimary();
  absl::Status ParseCallArgs(Expr* call);
  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee);
  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr obj);
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseFilterChain(ExprPtr node, bool first_pipe_required);
  absl::StatusOr<ExprPtr> ParseOneFilter(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node);

  const std::string& source_;
  std::vector<Token> tokens_;
  size_t idx_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  std::vector<size_t> open_tags_;        // offsets of the `{%` of statements being parsed
  std::vector<std::string> open_ends_;   // end tags each open body accepts ("" at top level)
  const int max_nesting_;
};

}  // namespace peng::chat_template_internal
