// Built-in filters, tests, methods and globals of the chat template interpreter, matching
// jinja2's (and Python's str/dict methods) for the subset chat templates use. Filters and tests
// live in chat_template_builtins.cc, methods and globals in chat_template_methods.cc.
// Stateless; all per-render state and limits come through the Renderer argument.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/chat_template_value.h"

namespace peng::chat_template_internal {

class Renderer;

// `input | name(args)`. Unknown filters are an error naming the filter.
absl::StatusOr<Value> ApplyFilter(Renderer& r, absl::string_view name, const Value& input,
                                  CallArgs& args);
// `input is name(args)`. Unknown tests are an error naming the test.
absl::StatusOr<bool> ApplyTest(Renderer& r, absl::string_view name, const Value& input,
                               CallArgs& args);
// A Python method of a str or dict bound to `self` (e.g. "strip", "items"), or undefined.
Value BoundMethod(const Value& self, absl::string_view name);
// A global function (range, namespace, dict, raise_exception, strftime_now), or undefined.
Value GlobalFunction(absl::string_view name);

}  // namespace peng::chat_template_internal
