// Tokenizer::FromGguf: translates llama.cpp's tokenizer.ggml.* metadata into a TokenizerSpec.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

namespace peng {
namespace {

constexpr const char* kLlama3SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

PreTokenizerStep IsolatedSplit(const char* pattern) {
  PreTokenizerStep s;
  s.kind = PreTokenizerStep::Kind::kSplit;
  s.pattern = pattern;
  s.behavior = PreTokenizerStep::Behavior::kIsolated;
  return s;
}

PreTokenizerStep ByteLevel(bool use_regex) {
  PreTokenizerStep s;
  s.kind = PreTokenizerStep::Kind::kByteLevel;
  s.use_regex = use_regex;
  return s;
}

PreTokenizerStep IndividualDigits() {
  PreTokenizerStep s;
  s.kind = PreTokenizerStep::Kind::kDigits;
  s.individual_digits = true;
  return s;
}

// tokenizer.ggml.pre -> the Hugging Face pre-tokenizer the converter saw (llama-vocab.cpp).
absl::Status SetPreTokenizer(const std::string& pre, TokenizerSpec* spec) {
  static const char* const kGpt2Names[] = {"default", "gpt2",  "gpt-2", "phi-2",
                                           "mpt",     "olmo", "roberta-bpe"};
  static const char* const kDigitsThenGpt2[] = {"smollm",    "starcoder", "refact", "command-r",
                                                "codeshell", "exaone",    "minerva"};
  static const char* const kLlama3Names[] = {"llama-bpe", "llama3", "smaug-bpe", "dbrx"};
  for (const char* name : kGpt2Names) {
    if (pre == name) {
      spec->pre_tokenizer = {ByteLevel(true)};
      return absl::OkStatus();
    }
  }
  for (const char* name : kDigitsThenGpt2) {
    if (pre == name) {
      spec->pre_tokenizer = {IndividualDigits(), ByteLevel(true)};
      return absl::OkStatus();
    }
  }
  for (const char* name : kLlama3Names) {
    if (pre == name) {
      spec->pre_tokenizer = {IsolatedSplit(kLlama3SplitPattern), ByteLevel(false)};
      spec->ignore_merges = true;
      return absl::OkStatus();
    }
  }
  if (pre == "qwen2") {
    spec->pre_tokenizer = {IsolatedSplit(kQwen2SplitPattern), ByteLevel(false)};
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(
      "tokenizer.ggml.pre \"", pre, "\" is not supported (known: ",
      absl::StrJoin(kGpt2Names, ", "), ", ", absl::StrJoin(kDigitsThenGpt2, ", "), ", ",
      absl::StrJoin(kLlama3Names, ", "), ", qwen2)"));
}

absl::Status ReadIds(const GgufFile& gguf, TokenizerSpec* spec) {
  struct IdKey {
    const char* key;
    int32_t* out;
  };
  const IdKey keys[] = {{"tokenizer.ggml.bos_token_id", &spec->bos_id},
                        {"tokenizer.ggml.eos_token_id", &spec->eos_id},
                        {"tokenizer.ggml.eot_token_id", &spec->eot_id},
                        {"tokenizer.ggml.eom_token_id", &spec->eom_id},
                        {"tokenizer.ggml.unknown_token_id", &spec->unk_id}};
  for (const IdKey& k : keys) {
    PENG_ASSIGN_OR_RETURN(int64_t v, gguf.GetIntOr(k.key, -1));
    if (v < -1 || v >= static_cast<int64_t>(spec->tokens.size())) {
      return absl::InvalidArgumentError(absl::StrCat(k.key, " = ", v,
                                                     " is out of range (vocabulary of ",
                                                     spec->tokens.size(), " tokens)"));
    }
    *k.out = static_cast<int32_t>(v);
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenizerSpec> SpecFromGguf(const GgufFile& gguf) {
  TokenizerSpec spec;
  spec.source = gguf.path();
  PENG_ASSIGN_OR_RETURN(std::string model, gguf.GetString("tokenizer.ggml.model"));
  PENG_ASSIGN_OR_RETURN(spec.tokens, gguf.GetStringArray("tokenizer.ggml.tokens"));
  if (gguf.Find("tokenizer.ggml.token_type") != nullptr) {
    PENG_ASSIGN_OR_RETURN(std::vector<int64_t> types,
                          gguf.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != spec.tokens.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.ggml.token_type has ", types.size(), " entries for ",
                       spec.tokens.size(), " tokens"));
    }
    spec.kinds.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 0 || types[i] > static_cast<int64_t>(TokenKind::kByte)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tokenizer.ggml.token_type[", i, "] = ", types[i], " is not a known token type"));
      }
      spec.kinds.push_back(static_cast<TokenKind>(types[i]));
    }
  }
  PENG_RETURN_IF_ERROR(ReadIds(gguf, &spec));
  PENG_ASSIGN_OR_RETURN(spec.chat_template, gguf.GetStringOr("tokenizer.chat_template", ""));

  if (model == "gpt2") {
    spec.encoding = TextEncoding::kByteLevel;
    spec.merge_order = MergeOrder::kRanks;
    PENG_ASSIGN_OR_RETURN(std::vector<std::string> merges,
                          gguf.GetStringArray("tokenizer.ggml.merges"));
    spec.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string& m = merges[i];
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tokenizer.ggml.merges[", i, "] = \"", m, "\" is not two tokens separated by ' '"));
      }
      spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
    PENG_ASSIGN_OR_RETURN(std::string pre, gguf.GetStringOr("tokenizer.ggml.pre", "default"));
    PENG_RETURN_IF_ERROR(SetPreTokenizer(pre, &spec));
    PENG_ASSIGN_OR_RETURN(spec.add_bos, gguf.GetBoolOr("tokenizer.ggml.add_bos_token", false));
  } else if (model == "llama") {
    spec.encoding = TextEncoding::kMetaspace;
    spec.merge_order = MergeOrder::kScores;
    spec.byte_fallback = true;
    spec.unknown_to_unk = true;
    PENG_ASSIGN_OR_RETURN(spec.scores, gguf.GetFloatArray("tokenizer.ggml.scores"));
    PENG_ASSIGN_OR_RETURN(bool add_space_prefix,
                          gguf.GetBoolOr("tokenizer.ggml.add_space_prefix", true));
    spec.normalizer.push_back({NormalizerStep::Kind::kReplace, " ", "\xE2\x96\x81"});
    if (add_space_prefix) {
      spec.normalizer.push_back({NormalizerStep::Kind::kPrepend, "", "\xE2\x96\x81"});
    }
    spec.strip_decoded_leading_space = add_space_prefix;
    PENG_ASSIGN_OR_RETURN(spec.add_bos, gguf.GetBoolOr("tokenizer.ggml.add_bos_token", true));
  } else {
    return absl::UnimplementedError(absl::StrCat(
        "tokenizer.ggml.model \"", model, "\" is not supported (supported: gpt2, llama)"));
  }
  return spec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& gguf) {
  absl::StatusOr<TokenizerSpec> spec = SpecFromGguf(gguf);
  if (!spec.ok()) return Annotate(spec.status(), absl::StrCat("tokenizer in ", gguf.path()));
  return Create(*std::move(spec));
}

}  // namespace peng
