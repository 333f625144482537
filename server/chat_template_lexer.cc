#include "server/chat_template_lexer.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace peng::chat_template_internal {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool AllSpace(absl::string_view s) {
  return std::all_of(s.begin(), s.end(), IsSpace);
}

absl::string_view RStrip(absl::string_view s) {
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Lexer {
 public:
  explicit Lexer(const std::string& src) : src_(src) {}

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < src_.size()) {
      const size_t start = FindTagStart(pos_);
      if (start == std::string::npos) {
        EmitText(src_.substr(pos_), pos_);
        pos_ = src_.size();
        break;
      }
      const char kind = src_[start + 1];
      char sign = 0;
      if (start + 2 < src_.size() && (src_[start + 2] == '-' || src_[start + 2] == '+')) {
        sign = src_[start + 2];
      }
      absl::string_view text(src_.data() + pos_, start - pos_);
      if (sign == '-') {
        text = RStrip(text);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: drop spaces between the line start and a block or comment tag.
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == absl::string_view::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting_) && l_pos < text.size() &&
            AllSpace(text.substr(l_pos))) {
          text = text.substr(0, l_pos);
        }
      }
      EmitText(std::string(text), pos_);
      pos_ = start + 2 + (sign ? 1 : 0);
      absl::Status s;
      if (kind == '#') {
        s = LexComment(start);
      } else if (kind == '%' && IsRawBegin()) {
        s = LexRaw(start);
      } else {
        s = LexTag(kind == '{', start);
      }
      if (!s.ok()) return s;
    }
    tokens_.push_back(Token{TokenKind::kEnd, "", 0, 0, src_.size()});
    return std::move(tokens_);
  }

 private:
  absl::Status Error(size_t offset, absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template syntax error at ", LineColumn(src_, offset), ": ", what));
  }

  size_t FindTagStart(size_t from) const {
    while (true) {
      const size_t p = src_.find('{', from);
      if (p == std::string::npos || p + 1 >= src_.size()) return std::string::npos;
      const char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      from = p + 1;
    }
  }

  void EmitText(std::string text, size_t offset) {
    if (!text.empty()) tokens_.push_back(Token{TokenKind::kText, std::move(text), 0, 0, offset});
  }

  void SkipSpace(size_t* p) const {
    while (*p < src_.size() && IsSpace(src_[*p])) ++*p;
  }

  bool StartsWith(size_t p, absl::string_view s) const {
    return absl::string_view(src_).substr(p, s.size()) == s;
  }

  // Matches `%}` / `-%}` / `+%}` at p; sets the end and whether to strip or keep newlines.
  bool MatchBlockEnd(size_t p, size_t* end) const {
    if (StartsWith(p, "-%}")) {
      *end = p + 3;
      SkipSpace(end);
      return true;
    }
    if (StartsWith(p, "+%}")) {
      *end = p + 3;
      return true;
    }
    if (StartsWith(p, "%}")) {
      *end = p + 2;
      if (*end < src_.size() && src_[*end] == '\n') ++*end;  // trim_blocks
      return true;
    }
    return false;
  }

  void SetLineStarting(size_t end) { line_starting_ = end > 0 && src_[end - 1] == '\n'; }

  absl::Status LexComment(size_t start) {
    const size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) return Error(start, "missing end of comment tag");
    size_t end = close + 2;
    if (close > pos_ && src_[close - 1] == '-') {
      SkipSpace(&end);
    } else if (end < src_.size() && src_[end] == '\n') {
      ++end;  // trim_blocks applies to comments too
    }
    pos_ = end;
    SetLineStarting(end);
    return absl::OkStatus();
  }

  // `{% raw %}` (with optional -/+ and spaces), given pos_ just after `{%` and its sign.
  bool IsRawBegin() const {
    size_t p = pos_;
    SkipSpace(&p);
    if (!StartsWith(p, "raw")) return false;
    p += 3;
    SkipSpace(&p);
    return StartsWith(p, "-%}") || StartsWith(p, "%}");
  }

  absl::Status LexRaw(size_t start) {
    size_t p = pos_;
    SkipSpace(&p);
    p += 3;
    SkipSpace(&p);
    if (src_[p] == '-') {
      p += 3;
      SkipSpace(&p);
    } else {
      p += 2;  // jinja2 applies no trim_blocks after {% raw %}
    }
    const size_t body = p;
    size_t search = body;
    while (true) {
      const size_t open = src_.find("{%", search);
      if (open == std::string::npos) return Error(start, "missing end of raw directive");
      size_t q = open + 2;
      const bool strip_before = q < src_.size() && src_[q] == '-';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ++q;
      SkipSpace(&q);
      if (StartsWith(q, "endraw")) {
        q += 6;
        SkipSpace(&q);
        size_t end;
        if (MatchBlockEnd(q, &end)) {
          absl::string_view text(src_.data() + body, open - body);
          if (strip_before) text = RStrip(text);
          EmitText(std::string(text), body);
          pos_ = end;
          SetLineStarting(end);
          return absl::OkStatus();
        }
      }
      search = open + 2;
    }
  }

  absl::Status LexTag(bool variable, size_t start) {
    tokens_.push_back(
        Token{variable ? TokenKind::kVarBegin : TokenKind::kBlockBegin, "", 0, 0, start});
    std::vector<char> brackets;
    while (true) {
      SkipSpace(&pos_);
      if (pos_ >= src_.size()) {
        return Error(start, variable ? "unexpected end of template, expected '}}'"
                                     : "unexpected end of template, expected '%}'");
      }
      if (brackets.empty()) {
        size_t end = 0;
        bool matched = false;
        if (variable) {
          if (StartsWith(pos_, "-}}")) {
            end = pos_ + 3;
            SkipSpace(&end);
            matched = true;
          } else if (StartsWith(pos_, "}}")) {
            end = pos_ + 2;
            matched = true;
          }
        } else {
          matched = MatchBlockEnd(pos_, &end);
        }
        if (matched) {
          tokens_.push_back(Token{variable ? TokenKind::kVarEnd : TokenKind::kBlockEnd, "", 0,
                                  0, pos_});
          pos_ = end;
          SetLineStarting(end);
          return absl::OkStatus();
        }
      }
      absl::Status s = LexToken(&brackets);
      if (!s.ok()) return s;
    }
  }

  absl::Status LexToken(std::vector<char>* brackets) {
    const size_t start = pos_;
    const char c = src_[pos_];
    if (c == '\'' || c == '"') return LexString();
    if (std::isdigit(static_cast<unsigned char>(c))) return LexNumber();
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) ||
                                    src_[pos_] == '_')) {
        ++pos_;
      }
      tokens_.push_back(Token{TokenKind::kName, src_.substr(start, pos_ - start), 0, 0, start});
      return absl::OkStatus();
    }
    static constexpr absl::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
    for (absl::string_view op : kTwo) {
      if (StartsWith(pos_, op)) {
        pos_ += 2;
        tokens_.push_back(Token{TokenKind::kOperator, std::string(op), 0, 0, start});
        return absl::OkStatus();
      }
    }
    static constexpr absl::string_view kOne = "+-*/%~<>=.,:|()[]{};";
    if (kOne.find(c) == absl::string_view::npos) {
      return Error(start, absl::StrCat("unexpected char '", std::string(1, c), "'"));
    }
    if (c == '(' || c == '[' || c == '{') {
      brackets->push_back(c == '(' ? ')' : (c == '[' ? ']' : '}'));
    } else if (c == ')' || c == ']' || c == '}') {
      if (brackets->empty() || brackets->back() != c) {
        return Error(start, absl::StrCat("unexpected '", std::string(1, c), "'"));
      }
      brackets->pop_back();
    }
    ++pos_;
    tokens_.push_back(Token{TokenKind::kOperator, std::string(1, c), 0, 0, start});
    return absl::OkStatus();
  }

  absl::Status LexString() {
    const size_t start = pos_;
    const char quote = src_[pos_++];
    std::string value;
    while (true) {
      if (pos_ >= src_.size()) return Error(start, "unterminated string literal");
      const char c = src_[pos_++];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (pos_ >= src_.size()) return Error(start, "unterminated string literal");
      const char e = src_[pos_++];
      auto hex = [&](int digits) -> bool {
        if (pos_ + digits > src_.size()) return false;
        uint32_t cp = 0;
        for (int i = 0; i < digits; ++i) {
          const char h = src_[pos_ + i];
          if (!std::isxdigit(static_cast<unsigned char>(h))) return false;
          cp = cp * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                                                                        : (std::tolower(h) - 'a' + 10));
        }
        if (cp > 0x10FFFF) return false;
        pos_ += digits;
        AppendUtf8(cp, &value);
        return true;
      };
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case 'a': value += '\a'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '\n': break;  // line continuation
        case 'x':
          if (!hex(2)) return Error(pos_ - 2, "invalid \\x escape");
          break;
        case 'u':
          if (!hex(4)) return Error(pos_ - 2, "invalid \\u escape");
          break;
        case 'U':
          if (!hex(8)) return Error(pos_ - 2, "invalid \\U escape");
          break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int i = 0; i < 2 && pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '7';
                 ++i) {
              cp = cp * 8 + (src_[pos_++] - '0');
            }
            AppendUtf8(cp, &value);
          } else {
            value += '\\';  // Python keeps unknown escapes verbatim
            value += e;
          }
      }
    }
    tokens_.push_back(Token{TokenKind::kString, std::move(value), 0, 0, start});
    return absl::OkStatus();
  }

  absl::Status LexNumber() {
    const size_t start = pos_;
    auto digits = [&] {
      while (pos_ < src_.size() &&
             (std::isdigit(static_cast<unsigned char>(src_[pos_])) ||
              (src_[pos_] == '_' && pos_ + 1 < src_.size() &&
               std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))))) {
        ++pos_;
      }
    };
    digits();
    bool is_float = false;
    // `x.0.1` style attribute chains lex integers; a float needs digits on both sides.
    const bool after_dot = start > 0 && src_[start - 1] == '.';
    if (!after_dot && pos_ + 1 < src_.size() && src_[pos_] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      ++pos_;
      digits();
      is_float = true;
    }
    if (!after_dot && pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t p = pos_ + 1;
      if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
      if (p < src_.size() && std::isdigit(static_cast<unsigned char>(src_[p]))) {
        pos_ = p;
        digits();
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = start; i < pos_; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    Token t{is_float ? TokenKind::kFloat : TokenKind::kInt, text, 0, 0, start};
    if (is_float) {
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      const long long v = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) return Error(start, "integer literal out of range");
      t.int_value = v;
    }
    tokens_.push_back(std::move(t));
    return absl::OkStatus();
  }

  const std::string& src_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

std::string NormalizeTemplateSource(absl::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline=False
  return out;
}

absl::StatusOr<std::vector<Token>> Lex(const std::string& source) {
  return Lexer(source).Run();
}

std::string LineColumn(absl::string_view source, size_t offset) {
  offset = std::min(offset, source.size());
  const absl::string_view before = source.substr(0, offset);
  const size_t line = 1 + std::count(before.begin(), before.end(), '\n');
  const size_t nl = before.rfind('\n');
  const size_t column = nl == absl::string_view::npos ? offset + 1 : offset - nl;
  return absl::StrCat(line, ":", column);
}

}  // namespace peng::chat_template_internal
