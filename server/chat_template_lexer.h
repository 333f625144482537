// Chat template lexer: splits Jinja source into text and tag tokens the way jinja2's lexer
// does with trim_blocks=True and lstrip_blocks=True (transformers' settings): `-` strips
// whitespace beside a tag, `+` keeps it, a block/comment end eats one newline, and leading
// spaces before a block/comment tag on its own line are dropped. Comments vanish here and
// {% raw %} bodies become text. Pure function; positions are byte offsets into the
// normalized source (\r\n -> \n, one trailing newline dropped, as jinja2 does).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peng::chat_template_internal {

enum class TokenKind {
  kText,        // literal output; `text` holds it
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,        // identifiers and keywords
  kString,      // `text` holds the unescaped value
  kInt,
  kFloat,
  kOperator,    // `text` holds it: + - * / // % ** ~ == != < <= > >= = . , : | ( ) [ ] { }
  kEnd,         // end of the template
};

struct Token {
  TokenKind kind;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  size_t offset = 0;
};

// jinja2's newline normalization and trailing-newline rule.
std::string NormalizeTemplateSource(absl::string_view source);

// Tokenizes a normalized source. Errors name "line:column".
absl::StatusOr<std::vector<Token>> Lex(const std::string& source);

// "line:column" (1-based, columns in bytes) of `offset` in `source`.
std::string LineColumn(absl::string_view source, size_t offset);

}  // namespace peng::chat_template_internal
