#include "server/chat_template_pystr.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "server/chat_template_eval.h"

namespace peng::chat_template_internal {

absl::Status ArgError(absl::string_view msg) { return absl::InvalidArgumentError(msg); }

absl::StatusOr<std::vector<Value>> Bind(absl::string_view fn, CallArgs& args,
                                        std::initializer_list<absl::string_view> names) {
  if (args.positional.size() > names.size()) {
    return ArgError(absl::StrCat(fn, "() takes at most ", names.size(), " argument(s) (",
                                 args.positional.size(), " given)"));
  }
  std::vector<Value> out(names.size());
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = std::move(args.positional[i]);
  for (auto& [key, value] : args.keyword) {
    size_t i = 0;
    for (absl::string_view n : names) {
      if (n == key) break;
      ++i;
    }
    if (i == names.size()) {
      return ArgError(absl::StrCat(fn, "() got an unexpected keyword argument '", key, "'"));
    }
    out[i] = std::move(value);
  }
  return out;
}

bool IsPySpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
         (c >= 0x1c && c <= 0x1f);
}

std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  auto strip_char = [&](char c) {
    if (chars.is_string()) return chars.str().find(c) != std::string::npos;
    return IsPySpace(c);
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && strip_char(s[b])) ++b;
  }
  if (right) {
    while (e > b && strip_char(s[e - 1])) --e;
  }
  return s.substr(b, e - b);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string Capitalize(const std::string& s) {
  std::string out = Lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

// Python str.title(): a letter after a letter is lowered, any other letter raised.
std::string PyTitle(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isalpha(u)) {
      c = static_cast<char>(prev_cased ? std::tolower(u) : std::toupper(u));
      prev_cased = true;
    } else {
      prev_cased = false;
    }
  }
  return out;
}



absl::StatusOr<Value> Replace(Renderer& r, const std::string& s, const std::string& old,
                              const std::string& with, int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  int64_t done = 0;
  if (old.empty()) {  // Python inserts `with` around every character
    std::vector<size_t> offsets = CodePointOffsets(s);
    for (size_t i = 0; i + 1 < offsets.size(); ++i) {
      if (done < count) {
        out += with;
        ++done;
      }
      out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
      PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
    }
    if (done < count) out += with;
  } else {
    size_t pos = 0;
    while (done < count) {
      const size_t hit = s.find(old, pos);
      if (hit == std::string::npos) break;
      out.append(s, pos, hit - pos);
      out += with;
      pos = hit + old.size();
      ++done;
      PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
    }
    out.append(s, pos, std::string::npos);
  }
  PENG_RETURN_IF_ERROR(r.CheckSize(out.size()));
  PENG_RETURN_IF_ERROR(r.Charge(static_cast<int64_t>(out.size() / 64)));
  return Value::String(std::move(out));
}

// Python str.split / rsplit.
Value Split(const std::string& s, const Value& sep, int64_t maxsplit) {
  std::vector<Value> parts;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (!sep.is_string()) {
    size_t i = 0;
    int64_t splits = 0;
    while (true) {
      while (i < s.size() && IsPySpace(s[i])) ++i;
      if (i >= s.size()) break;
      if (splits >= maxsplit) {  // Python keeps the rest as is, trailing spaces included
        parts.push_back(Value::String(s.substr(i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !IsPySpace(s[j])) ++j;
      parts.push_back(Value::String(s.substr(i, j - i)));
      ++splits;
      i = j;
    }
    return Value::List(std::move(parts));
  }
  const std::string& d = sep.str();
  size_t pos = 0;
  int64_t splits = 0;
  while (splits < maxsplit) {
    const size_t hit = s.find(d, pos);
    if (hit == std::string::npos) break;
    parts.push_back(Value::String(s.substr(pos, hit - pos)));
    pos = hit + d.size();
    ++splits;
  }
  parts.push_back(Value::String(s.substr(pos)));
  return Value::List(std::move(parts));
}

int64_t IntOr(const Value& v, int64_t dflt) { return v.is_integral() ? v.int_value() : dflt; }
bool BoolOr(const Value& v, bool dflt) { return v.is_undefined() ? dflt : Truthy(v); }


}  // namespace peng::chat_template_internal
