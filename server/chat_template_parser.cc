#include "server/chat_template_parser.h"

#include <algorithm>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "server/chat_template_lexer.h"

namespace peng::chat_template_internal {
namespace {

ExprPtr MakeExpr(Expr::Kind kind, size_t offset) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->offset = offset;
  return e;
}

StmtPtr MakeStmt(Stmt::Kind kind, size_t offset) {
  auto s = std::make_unique<Stmt>();
  s->kind = kind;
  s->offset = offset;
  return s;
}

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

class Parser {
 public:
  Parser(const std::string& source, std::vector<Token> tokens, int max_nesting)
      : source_(source), tokens_(std::move(tokens)), max_nesting_(max_nesting) {}

  absl::StatusOr<Body> ParseTemplate() {
    Body body;
    std::string end;
    PENG_RETURN_IF_ERROR(ParseBody({}, &body, &end));
    return body;
  }

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

  // Statements until a `{% <end> ...` with <end> in `ends`; consumes `{%` and the end name.
  absl::Status ParseBody(std::initializer_list<absl::string_view> ends, Body* body,
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

  absl::Status ParseStatement(Body* body) {
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

  absl::Status ParseNamedStatement(const std::string& name, size_t offset, size_t name_offset,
                                   Body* body) {
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

  absl::Status ParseIf(size_t offset, Body* body) {
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

  absl::StatusOr<AssignTarget> ParseTarget(bool allow_attr) {
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

  absl::Status ParseFor(size_t offset, Body* body) {
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

  absl::Status ParseSet(size_t offset, Body* body) {
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

  absl::Status ParseMacroBody(Stmt* s, absl::string_view end_name) {
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

  absl::Status ParseParams(Stmt* s) {
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

  absl::Status ParseMacro(size_t offset, Body* body) {
    auto s = MakeStmt(Stmt::Kind::kMacro, offset);
    PENG_ASSIGN_OR_RETURN(s->name, ExpectName());
    PENG_RETURN_IF_ERROR(ParseParams(s.get()));
    PENG_RETURN_IF_ERROR(ParseMacroBody(s.get(), "endmacro"));
    body->push_back(std::move(s));
    return absl::OkStatus();
  }

  absl::Status ParseCallBlock(size_t offset, Body* body) {
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

  absl::Status ParseFilterBlock(size_t offset, Body* body) {
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

  absl::Status ParseWith(size_t offset, Body* body) {
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

  // ---- expressions (jinja2 precedence, loosest first) ----

  bool AtTupleEnd() const {
    const Token& t = Cur();
    return t.kind == TokenKind::kVarEnd || t.kind == TokenKind::kBlockEnd ||
           t.kind == TokenKind::kEnd || IsOp(")") || IsOp("]") || IsOp("}") || IsName("if") ||
           IsName("recursive");
  }

  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr) {
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

  absl::StatusOr<ExprPtr> ParseExpression() {
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

  absl::StatusOr<ExprPtr> Binary(absl::string_view op, size_t offset, ExprPtr left,
                                 ExprPtr right) {
    auto e = MakeExpr(Expr::Kind::kBinary, offset);
    e->name = std::string(op);
    e->children.push_back(std::move(left));
    e->children.push_back(std::move(right));
    return Seal(std::move(e));
  }

  // Records the tree depth; left-deep chains (a + a + ...) are built by loops, not recursion,
  // so this is what keeps evaluation and destruction from exhausting the stack.
  absl::StatusOr<ExprPtr> Seal(ExprPtr e) {
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

  absl::StatusOr<ExprPtr> ParseOr() {
    PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      const size_t offset = Cur().offset;
      Advance();
      PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      PENG_ASSIGN_OR_RETURN(left, Binary("or", offset, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      const size_t offset = Cur().offset;
      Advance();
      PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      PENG_ASSIGN_OR_RETURN(left, Binary("and", offset, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
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

  absl::StatusOr<ExprPtr> ParseCompare() {
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

  absl::StatusOr<ExprPtr> ParseMath1() {
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

  absl::StatusOr<ExprPtr> ParseConcat() {
    PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      const size_t offset = Cur().offset;
      Advance();
      PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      PENG_ASSIGN_OR_RETURN(left, Binary("~", offset, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
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

  absl::StatusOr<ExprPtr> ParsePow() {
    PENG_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      const size_t offset = Cur().offset;
      Advance();
      PENG_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      PENG_ASSIGN_OR_RETURN(left, Binary("**", offset, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
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

  absl::StatusOr<ExprPtr> ParsePrimary() {
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

  absl::Status ParseCallArgs(Expr* call) {
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

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    auto call = MakeExpr(Expr::Kind::kCall, Cur().offset);
    call->children.push_back(std::move(callee));
    PENG_RETURN_IF_ERROR(ParseCallArgs(call.get()));
    return Seal(std::move(call));
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr obj) {
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

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
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
  absl::StatusOr<ExprPtr> ParseFilterChain(ExprPtr node, bool first_pipe_required) {
    bool first = true;
    while (IsOp("|") || (first && !first_pipe_required && Cur().kind == TokenKind::kName)) {
      if (IsOp("|")) Advance();
      first = false;
      PENG_ASSIGN_OR_RETURN(node, ParseOneFilter(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseOneFilter(ExprPtr node) {
    auto f = MakeExpr(Expr::Kind::kFilter, Cur().offset);
    PENG_ASSIGN_OR_RETURN(f->name, ExpectName());
    f->children.push_back(std::move(node));
    if (IsOp("(")) PENG_RETURN_IF_ERROR(ParseCallArgs(f.get()));
    return Seal(std::move(f));
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
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

  const std::string& source_;
  std::vector<Token> tokens_;
  size_t idx_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  std::vector<size_t> open_tags_;        // offsets of the `{%` of statements being parsed
  std::vector<std::string> open_ends_;   // end tags each open body accepts ("" at top level)
  const int max_nesting_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Program>> ParseProgram(std::string source, int max_nesting) {
  auto program = std::make_unique<Program>();
  program->source = NormalizeTemplateSource(source);
  PENG_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(program->source));
  Parser parser(program->source, std::move(tokens), max_nesting);
  PENG_ASSIGN_OR_RETURN(program->body, parser.ParseTemplate());
  return program;
}

}  // namespace peng::chat_template_internal
