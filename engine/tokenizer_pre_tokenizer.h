// PreTokenizer: splits a text segment into words before BPE, following Hugging Face
// pre-tokenizer semantics (Split / Digits / ByteLevel / Metaspace, applied in sequence).
// Regexes are PCRE2 in UTF + UCP mode (so \p{L}, \p{N}, \s are Unicode-aware), compiled and
// JIT-compiled once; invalid UTF-8 in the input never matches and is kept as its own piece.
// Immutable after Create(): Split() is safe to call from many threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer_spec.h"

namespace peng {

// A compiled PCRE2 pattern. Thread-safe to match from many threads.
class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [begin, end) of the successive non-empty matches in `text`.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// The GPT-2 byte-level split pattern (Hugging Face ByteLevel pre-tokenizer, use_regex=true).
inline constexpr const char* kGpt2SplitPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class PreTokenizer {
 public:
  static absl::StatusOr<PreTokenizer> Create(const std::vector<PreTokenizerStep>& steps);

  // Appends the words of `text` to `words`. `first_segment`: `text` starts the whole input
  // (Metaspace prepend_scheme "first" looks at it). With no steps the text is one word.
  void Split(std::string_view text, bool first_segment, std::vector<std::string>* words) const;

 private:
  struct Step {
    PreTokenizerStep spec;
    std::shared_ptr<const Regex> regex;  // kSplit (non-literal), kDigits, kByteLevel
  };
  std::vector<Step> steps_;
};

}  // namespace peng
