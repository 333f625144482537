// Python semantics shared by the chat template filters and str methods: call-argument
// binding (positional then keyword, by name) and str operations (strip, case, replace,
// split) as CPython does them for ASCII text. Stateless functions.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/chat_template_value.h"

namespace peng::chat_template_internal {

class Renderer;

absl::Status ArgError(absl::string_view msg);

// Binds positional then keyword arguments to `names` (Python signature order). Missing ones
// stay undefined, so callers apply their defaults with `is_undefined()`.
absl::StatusOr<std::vector<Value>> Bind(absl::string_view fn, CallArgs& args,
                                        std::initializer_list<absl::string_view> names);
int64_t IntOr(const Value& v, int64_t dflt);
bool BoolOr(const Value& v, bool dflt);

bool IsPySpace(char c);
// str.strip/lstrip/rstrip; `chars` undefined/none means whitespace.
std::string Strip(const std::string& s, const Value& chars, bool left, bool right);
std::string Lower(std::string s);
std::string Upper(std::string s);
std::string Capitalize(const std::string& s);
std::string PyTitle(const std::string& s);  // str.title()
// str.replace, charging the renderer for the built string.
absl::StatusOr<Value> Replace(Renderer& r, const std::string& s, const std::string& old,
                              const std::string& with, int64_t count);
// str.split(sep, maxsplit); `sep` not a string means runs of whitespace.
Value Split(const std::string& s, const Value& sep, int64_t maxsplit);

}  // namespace peng::chat_template_internal
