// Tokenizer: text <-> token ids for byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM2) and
// SentencePiece-style BPE (Llama-2, Mistral), loaded from GGUF metadata or a Hugging Face
// tokenizer.json (+ tokenizer_config.json). Immutable after loading: every method is const and
// safe to call from many threads at once. IncrementalDecoder is per-stream state (one owner).
//
// Special tokens: control tokens (GGUF CONTROL, tokenizer.json added tokens with special=true)
// are recognised in the text only with parse_special; user-defined tokens (GGUF USER_DEFINED,
// added tokens with special=false) are always recognised, as in llama.cpp and Hugging Face.
// BPE itself never produces control tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "engine/bpe_merger.h"
#include "engine/tokenizer_pre_tokenizer.h"
#include "engine/tokenizer_spec.h"
#include "engine/tokenizer_unicode.h"

namespace peng {

class GgufFile;

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* (model "gpt2" or "llama") and tokenizer.chat_template.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf);
  // Hugging Face files: tokenizer.json (model BPE) and, when the path is non-empty,
  // tokenizer_config.json for bos/eos, add_bos_token and the chat template.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromHfFiles(
      const std::string& tokenizer_json_path, const std::string& tokenizer_config_path);
  // Validates and indexes a spec (both loaders end here; tests build specs directly).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(TokenizerSpec spec);

  // add_bos: prepend BOS when add_bos_default() and the ids do not already start with it.
  // parse_special: recognise control tokens written in the text (e.g. "<|im_start|>").
  std::vector<int32_t> Encode(std::string_view text, bool add_bos, bool parse_special) const;
  // Concatenated token bytes, ill-formed UTF-8 replaced by U+FFFD. Out-of-range ids are skipped.
  std::string Decode(std::span<const int32_t> ids, bool skip_special) const;
  // The raw bytes a token stands for (may be part of a UTF-8 character). Empty if out of range.
  std::string TokenPiece(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(spec_.tokens.size()); }
  int32_t bos_id() const { return spec_.bos_id; }  // -1 if none
  int32_t eos_id() const { return spec_.eos_id; }  // -1 if none
  bool add_bos_default() const { return spec_.add_bos && spec_.bos_id >= 0; }
  // eos, eot, eom and end-of-turn control tokens (<|im_end|>, <|eot_id|>, <|endoftext|>, ...).
  bool IsEndOfGeneration(int32_t id) const { return end_of_generation_.contains(id); }
  const absl::flat_hash_set<int32_t>& end_of_generation_ids() const { return end_of_generation_; }
  // Control and unknown tokens: skipped by Decode(skip_special=true).
  bool IsSpecial(int32_t id) const;
  // The id of the token whose stored text is exactly `text` (any kind).
  std::optional<int32_t> FindToken(std::string_view text) const;
  const std::string& chat_template() const { return spec_.chat_template; }
  // Whether Decode drops the leading space that encoding added (SentencePiece).
  bool strips_leading_space() const { return spec_.strip_decoded_leading_space; }

 private:
  explicit Tokenizer(TokenizerSpec spec, PreTokenizer pre)
      : spec_(std::move(spec)), pre_(std::move(pre)) {}
  absl::Status Index();
  void EncodeSegment(std::string_view segment, bool first_segment,
                     std::vector<int32_t>* ids) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;
  // Longest special/user-defined token starting at text[pos] (-1 if none) and its length.
  int32_t MatchSpecial(std::string_view text, size_t pos, bool parse_special,
                       size_t* len) const;

  TokenizerSpec spec_;
  PreTokenizer pre_;
  BpeMerger merger_;
  using TokenMap = absl::flat_hash_map<std::string, int32_t, StringViewHash, StringViewEq>;
  TokenMap token_to_id_;  // every token, first id wins
  TokenMap piece_to_id_;  // tokens BPE may produce
  std::vector<int32_t> byte_symbol_;  // 256: byte-level char token, or <0xNN> fallback token
  std::vector<std::string> decoded_;  // id -> bytes (TokenPiece)
  std::vector<std::vector<int32_t>> specials_by_byte_;  // first byte -> ids, longest first
  absl::flat_hash_set<int32_t> end_of_generation_;
};

// Streaming detokenizer: Push() returns the text completed by one more token and never emits a
// broken UTF-8 sequence — bytes of an unfinished character are held back until it completes;
// an ill-formed sequence becomes U+FFFD. Flush() emits what is held (as U+FFFD). Not
// thread-safe; the tokenizer must outlive it.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = true)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  std::string Push(int32_t id);
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  bool at_start_ = true;  // nothing emitted yet (SentencePiece leading-space strip)
  std::string pending_;   // an incomplete UTF-8 character (at most 3 bytes)
};

}  // namespace peng
