// TokenizerSpec: the plain-data description of a tokenizer that the loaders (GGUF metadata,
// Hugging Face tokenizer.json) produce and Tokenizer::Create() validates and indexes.
// Loaders only translate file formats into this; all behaviour lives in the Tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace peng {

// Mirrors GGUF tokenizer.ggml.token_type (llama.cpp's llama_token_type).
enum class TokenKind : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
  kByte = 6,
};

// How a word's characters become the initial BPE symbols and how tokens decode to bytes.
enum class TextEncoding {
  kByteLevel,  // GPT-2: every byte is a printable code point ("Ġ" = space)
  kMetaspace,  // SentencePiece: " " is "▁", unknown bytes fall back to <0xNN> tokens
};

// Which pairs merge first.
enum class MergeOrder {
  kRanks,   // explicit merge list, earlier = first (GPT-2 / HF BPE)
  kScores,  // SentencePiece BPE: the merged piece with the highest score first
};

// Normalizer steps, applied to each text segment between special tokens.
struct NormalizerStep {
  enum class Kind { kReplace, kPrepend };
  Kind kind = Kind::kReplace;
  std::string from;  // kReplace: literal to replace
  std::string to;    // kReplace: replacement; kPrepend: prefix for non-empty segments
};

// Pre-tokenizer steps (Hugging Face semantics), applied in order to every current piece.
struct PreTokenizerStep {
  enum class Kind { kSplit, kDigits, kByteLevel, kMetaspace };
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  Kind kind = Kind::kSplit;
  // kSplit: PCRE2 pattern (or a literal when `literal`), what to do with matches, invert.
  std::string pattern;
  bool literal = false;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  // kDigits
  bool individual_digits = false;
  // kByteLevel: split with the GPT-2 pattern first; prepend " " to pieces not starting with one.
  bool use_regex = true;
  bool add_prefix_space = false;
  // kMetaspace: " " -> replacement; prepend it (always / first segment only); split before it.
  std::string replacement = "\xE2\x96\x81";
  enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;
  bool split = true;
};

struct TokenizerSpec {
  std::string source;  // file path, for error messages
  TextEncoding encoding = TextEncoding::kByteLevel;
  MergeOrder merge_order = MergeOrder::kRanks;

  std::vector<std::string> tokens;  // id -> text as stored (byte-level encoded for kByteLevel)
  std::vector<TokenKind> kinds;     // same size as tokens
  std::vector<float> scores;        // kScores only; same size as tokens
  std::vector<std::pair<std::string, std::string>> merges;  // kRanks only, by rank

  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  bool ignore_merges = false;  // a word that is itself a token is emitted whole (Llama-3)
  bool byte_fallback = false;  // unknown characters become <0xNN> tokens
  // A symbol BPE cannot map (no token, no byte fallback) becomes unk_id; otherwise it is
  // dropped, as llama.cpp and Hugging Face do for byte-level vocabularies missing a byte.
  bool unknown_to_unk = false;
  bool strip_decoded_leading_space = false;  // drop the " " a Prepend/Metaspace added

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t eot_id = -1;
  int32_t eom_id = -1;
  int32_t unk_id = -1;
  bool add_bos = false;
  std::string chat_template;
};

}  // namespace peng
