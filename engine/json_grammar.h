// JsonGrammar: a byte-at-a-time recognizer of one JSON text (RFC 8259) whose top-level value is
// an object: what JSON mode (OpenAI's response_format {"type": "json_object"}) promises. Feed()
// takes the next byte and returns false, leaving the state as it was, when no valid document
// continues that way; so every prefix it accepts extends to a complete document. A plain value
// type of 16 bytes: callers copy it to try a token's bytes. Not thread-safe.
//
// Limits, so a constrained generation cannot stall in filler: at most kMaxDepth nested
// containers, and whitespace between tokens in runs of at most kMaxWhitespace bytes holding at
// most one line break (see TakeWhitespace). Strings take any byte >= 0x20 except
// an unescaped quote or backslash, in well-formed UTF-8 sequences (lead and continuation bytes;
// overlong and surrogate forms are not told apart).
#pragma once

#include <cstdint>
#include <string_view>

namespace peng {

// Feed and FeedAll of a grammar with Advance(c) (a step with no undo): the state as it was when
// a byte is refused. Shared by JsonGrammar and SchemaGrammar (json_schema.h).
template <class G>
bool FeedOrRestore(G& g, std::string_view bytes) {
  const G saved = g;
  for (const char c : bytes) {
    if (!g.Advance(static_cast<uint8_t>(c))) {
      g = saved;
      return false;
    }
  }
  return true;
}

// One byte of a run of whitespace between tokens, if the run may take it: at most
// JsonGrammar::kMaxWhitespace bytes and one line break ("\n" or "\r\n"), the shape of
// pretty-printed JSON. Without the line-break rule a small model fills its output with blank
// lines (up to the byte limit, again and again) instead of writing the next value. `run` is the
// run's state: the byte count in bits 0-5, a '\n' seen in bit 6, a '\r' in bit 7; 0 starts a run.
bool TakeWhitespace(uint8_t c, uint8_t* run);

class JsonGrammar {
 public:
  static constexpr int kMaxDepth = 64;
  static constexpr int kMaxWhitespace = 32;

  // The default recognizes one object; with any_value, one JSON value of any kind (a JSON
  // schema's free-form parts, engine/json_schema.h).
  JsonGrammar() = default;
  explicit JsonGrammar(bool any_value) : mode_(any_value ? Mode::kValue : Mode::kStart) {}

  // Whether `c` may come next; if so the state moves past it, otherwise nothing changes.
  bool Feed(uint8_t c) { return FeedOrRestore(*this, std::string_view(reinterpret_cast<const char*>(&c), 1)); }
  // Feed without the undo: on false the state is unspecified (for copies that are dropped).
  bool Advance(uint8_t c) { return FeedOne(c); }
  // Feeds every byte of `bytes`; false (and the state as it was) if any is refused.
  bool FeedAll(std::string_view bytes) { return FeedOrRestore(*this, bytes); }
  // The top-level value is complete: only whitespace may follow.
  bool Complete() const { return mode_ == Mode::kDone; }
  // The output may end here (GrammarConstraint allows end-of-generation tokens): Complete().
  bool CanStop() const { return Complete(); }
  // Complete, or a top-level number that may end here (numbers end at the next byte that
  // cannot continue them, which belongs to whatever follows).
  bool CanEnd() const;
  // Inside a string, between characters, not in an escape: bytes of plain string text (see
  // PlainStringPrefix) leave the state exactly as it is.
  bool InPlainString() const { return mode_ == Mode::kString && sub_ == kPlain && utf8_ == 0; }
  // The length of the longest prefix of `bytes` that is plain string text: whole UTF-8
  // characters, none a control character, '"' or '\\'.
  static size_t PlainStringPrefix(std::string_view bytes);
  // UTF-8 continuation bytes that lead byte c announces; -1 when c cannot start a character
  // (a continuation byte, 0xC0, 0xC1, 0xF5-0xFF).
  static int Utf8Continuations(uint8_t c) {
    return c < 0x80 ? 0 : c < 0xC2 ? -1 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : c < 0xF5 ? 3 : -1;
  }

  friend bool operator==(const JsonGrammar&, const JsonGrammar&) = default;

 private:
  enum class Mode : uint8_t {
    kStart,          // before the top-level '{'
    kValue,          // a value must come (after ':', ',' in an array)
    kValueOrClose,   // after '[': a value or ']'
    kKeyOrClose,     // after '{': a key or '}'
    kKey,            // after ',' in an object: a key
    kColon,          // after a key
    kAfterValue,     // after a value inside a container: ',' or the container's close
    kString,         // inside a key (key_ = 1) or a value string; sub_ = escape progress
    kNumber,         // sub_ = a Num state
    kLiteral,        // true / false / null: aux_ = which, sub_ = bytes matched
    kDone,           // the top-level object is closed
  };
  // Number states (RFC 8259 §6): the ones marked "end" may finish the number.
  enum Num : uint8_t { kMinus, kZero /*end*/, kInt /*end*/, kDot, kFrac /*end*/, kExp, kExpSign, kExpDigits /*end*/ };
  // String escape progress: kPlain, kBackslash, or 4..1 hex digits of \uXXXX still to come.
  static constexpr uint8_t kPlain = 0, kBackslash = 5;

  bool FeedOne(uint8_t c);
  bool OpenContainer(bool object);
  bool CloseContainer(bool object);
  // A value just ended: back to the enclosing container, or done at the top.
  void EndValue() { mode_ = depth_ == 0 ? Mode::kDone : Mode::kAfterValue; }
  bool StartValue(uint8_t c);
  bool TopIsObject() const { return (stack_ >> (depth_ - 1)) & 1; }

  Mode mode_ = Mode::kStart;
  uint8_t sub_ = 0;
  uint8_t aux_ = 0;
  uint8_t key_ = 0;         // the string being read is a key
  uint8_t whitespace_ = 0;  // the run of whitespace before the next token (TakeWhitespace)
  uint8_t utf8_ = 0;        // in a string: continuation bytes the current character still needs
  uint8_t depth_ = 0;
  uint64_t stack_ = 0;      // bit d: container d is an object (1) or an array (0)
};

}  // namespace peng
