// UTF-8 helpers and the GPT-2 byte-level alphabet shared by the tokenizer pieces.
// Pure functions over bytes; no state besides immutable tables, so thread-safe.
// Invalid UTF-8 is handled the way Python/Rust "replace" decoding does it: every maximal
// subpart of an ill-formed sequence becomes one U+FFFD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace peng {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
inline constexpr std::string_view kMetaspace = "\xE2\x96\x81";        // U+2581 '▁'

// Appends the UTF-8 encoding of `cp` (assumed a valid scalar value) to `out`.
void AppendUtf8(uint32_t cp, std::string* out);

// Length of the well-formed UTF-8 character at the start of `s`, or 0 when `s` starts with an
// ill-formed sequence. If `incomplete` is non-null it is set when the bytes form a valid but
// truncated prefix of a character (more bytes could still complete it).
size_t ValidUtf8CharLen(std::string_view s, bool* incomplete = nullptr);

// Length in bytes of the next unit of `s` for splitting into characters: a valid character, or
// the maximal ill-formed subpart (at least 1 byte). 0 only for an empty `s`.
size_t NextUtf8Unit(std::string_view s);

// Replaces ill-formed sequences with U+FFFD.
std::string SanitizeUtf8(std::string_view s);

// Splits `s` into (valid, replaced) text and a held-back tail: the output gets every complete
// character (ill-formed parts as U+FFFD) and the return value is the number of trailing bytes
// that form a valid but incomplete character and must wait for more input.
size_t AppendCompleteUtf8(std::string_view s, std::string* out);

// GPT-2 byte-level alphabet: each byte maps to one printable code point ("Ġ" for space).
// ByteToUnicode returns its UTF-8 encoding; UnicodeToByte returns -1 for code points outside it.
std::string_view ByteToUnicode(uint8_t byte);
int UnicodeToByte(uint32_t cp);

// `s` with every occurrence of `from` (non-empty) replaced by `to`.
std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to);

// Transparent hashing so maps keyed by std::string can be probed with std::string_view
// (the packaged Abseil's own heterogeneous lookup wants absl::string_view).
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
struct StringViewEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};

// Decodes the code point of a valid UTF-8 character of length `len` at `p`.
uint32_t DecodeUtf8(const char* p, size_t len);

}  // namespace peng
