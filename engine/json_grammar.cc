#include "engine/json_grammar.h"

namespace peng {
namespace {

constexpr std::string_view kLiterals[] = {"true", "false", "null"};

bool IsWhitespace(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool IsDigit(uint8_t c) { return c >= '0' && c <= '9'; }
bool IsHex(uint8_t c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

}  // namespace

bool TakeWhitespace(uint8_t c, uint8_t* run) {
  constexpr uint8_t kCount = 0x3F, kNewline = 0x40, kReturn = 0x80;
  if ((*run & kCount) == JsonGrammar::kMaxWhitespace) return false;
  if (c == '\n') {
    if (*run & kNewline) return false;
    *run |= kNewline;
  } else if (c == '\r') {
    if (*run & (kNewline | kReturn)) return false;
    *run |= kReturn;
  }
  ++*run;
  return true;
}

size_t JsonGrammar::PlainStringPrefix(std::string_view bytes) {
  size_t end = 0;  // the last character boundary of the plain prefix
  for (size_t i = 0; i < bytes.size();) {
    const uint8_t c = static_cast<uint8_t>(bytes[i]);
    const int more = Utf8Continuations(c);
    if (c < 0x20 || c == '"' || c == '\\' || more < 0 || i + more >= bytes.size()) break;
    bool whole = true;
    for (int k = 1; k <= more; ++k) whole = whole && (static_cast<uint8_t>(bytes[i + k]) & 0xC0) == 0x80;
    if (!whole) break;
    i += 1 + more;
    end = i;
  }
  return end;
}

bool JsonGrammar::CanEnd() const {
  return mode_ == Mode::kDone ||
         (mode_ == Mode::kNumber && depth_ == 0 && (sub_ == kZero || sub_ == kInt || sub_ == kFrac || sub_ == kExpDigits));
}

bool JsonGrammar::OpenContainer(bool object) {
  if (depth_ == kMaxDepth) return false;
  stack_ = object ? stack_ | (uint64_t{1} << depth_) : stack_ & ~(uint64_t{1} << depth_);
  ++depth_;
  mode_ = object ? Mode::kKeyOrClose : Mode::kValueOrClose;
  return true;
}

bool JsonGrammar::CloseContainer(bool object) {
  if (depth_ == 0 || TopIsObject() != object) return false;
  --depth_;
  EndValue();
  return true;
}

bool JsonGrammar::StartValue(uint8_t c) {
  switch (c) {
    case '{': return OpenContainer(true);
    case '[': return OpenContainer(false);
    case '"':
      mode_ = Mode::kString;
      sub_ = kPlain;
      key_ = 0;
      return true;
    case '-':
      mode_ = Mode::kNumber;
      sub_ = kMinus;
      return true;
    case 't': case 'f': case 'n':
      mode_ = Mode::kLiteral;
      aux_ = c == 't' ? 0 : c == 'f' ? 1 : 2;
      sub_ = 1;
      return true;
    default:
      if (!IsDigit(c)) return false;
      mode_ = Mode::kNumber;
      sub_ = c == '0' ? kZero : kInt;
      return true;
  }
}

bool JsonGrammar::FeedOne(uint8_t c) {
  // Whitespace: wherever a token of the grammar may start, a bounded run of it.
  const bool between_tokens = mode_ != Mode::kString && mode_ != Mode::kNumber && mode_ != Mode::kLiteral;
  if (between_tokens && IsWhitespace(c)) return TakeWhitespace(c, &whitespace_);
  whitespace_ = 0;
  switch (mode_) {
    case Mode::kStart:
      return c == '{' && OpenContainer(true);
    case Mode::kValue:
      return StartValue(c);
    case Mode::kValueOrClose:
      return c == ']' ? CloseContainer(false) : StartValue(c);
    case Mode::kKeyOrClose:
      if (c == '}') return CloseContainer(true);
      [[fallthrough]];
    case Mode::kKey:
      if (c != '"') return false;
      mode_ = Mode::kString;
      sub_ = kPlain;
      key_ = 1;
      return true;
    case Mode::kColon:
      if (c != ':') return false;
      mode_ = Mode::kValue;
      return true;
    case Mode::kAfterValue:
      if (c == ',') {
        mode_ = TopIsObject() ? Mode::kKey : Mode::kValue;
        return true;
      }
      return (c == '}' || c == ']') && CloseContainer(c == '}');
    case Mode::kString:
      if (utf8_ > 0) {  // inside a multi-byte character
        if ((c & 0xC0) != 0x80) return false;
        --utf8_;
        return true;
      }
      if (sub_ == kPlain) {
        if (c == '"') {
          if (key_) {
            mode_ = Mode::kColon;
          } else {
            EndValue();
          }
          return true;
        }
        if (c == '\\') sub_ = kBackslash;
        if (c < 0x20) return false;
        const int more = Utf8Continuations(c);
        if (more < 0) return false;
        utf8_ = static_cast<uint8_t>(more);
        return true;
      }
      if (sub_ == kBackslash) {
        if (c == 'u') {
          sub_ = 4;
          return true;
        }
        sub_ = kPlain;
        return c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't';
      }
      if (!IsHex(c)) return false;
      sub_ = sub_ == 1 ? kPlain : sub_ - 1;
      return true;
    case Mode::kNumber:
      switch (sub_) {
        case kMinus:
          if (!IsDigit(c)) return false;
          sub_ = c == '0' ? kZero : kInt;
          return true;
        case kDot:
          if (!IsDigit(c)) return false;
          sub_ = kFrac;
          return true;
        case kExp:
          if (c == '+' || c == '-') {
            sub_ = kExpSign;
            return true;
          }
          [[fallthrough]];
        case kExpSign:
          if (!IsDigit(c)) return false;
          sub_ = kExpDigits;
          return true;
        case kInt:
        case kFrac:
        case kExpDigits:
          if (IsDigit(c)) return true;
          [[fallthrough]];
        default:  // kZero and the digit states: the number may end here
          if (c == '.' && (sub_ == kZero || sub_ == kInt)) {
            sub_ = kDot;
            return true;
          }
          if ((c == 'e' || c == 'E') && sub_ != kExpDigits) {
            sub_ = kExp;
            return true;
          }
          // Any other byte ends the number and is read as what follows it (at the top level:
          // only whitespace; CanEnd() tells an embedding grammar that the number may end).
          EndValue();
          return FeedOne(c);
      }
    case Mode::kLiteral: {
      const std::string_view word = kLiterals[aux_];
      if (c != static_cast<uint8_t>(word[sub_])) return false;
      if (++sub_ == word.size()) EndValue();
      return true;
    }
    case Mode::kDone:
      return false;
  }
  return false;
}

}  // namespace peng
