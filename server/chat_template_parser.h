// Recursive-descent parser for the chat template Jinja subset: statements if/elif/else,
// for (tuple targets, `if` filter, else), set (name, tuple, ns.attr, block form), macro,
// call, filter, with, break/continue, generation (transformers' marker, rendered as its body);
// expressions with jinja2's precedence. Nesting is bounded so hostile input cannot exhaust
// the stack. Pure function of its input. Statements are parsed in chat_template_parser.cc,
// expressions in chat_template_expr_parser.cc (the Parser class: chat_template_parser_internal.h).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/chat_template_ast.h"

namespace peng::chat_template_internal {

// Parses raw template source (normalized here). Errors are InvalidArgument with line:column.
absl::StatusOr<std::unique_ptr<Program>> ParseProgram(std::string source, int max_nesting);

}  // namespace peng::chat_template_internal
