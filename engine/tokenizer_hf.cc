// Tokenizer::FromHfFiles: translates a Hugging Face tokenizer.json (+ tokenizer_config.json)
// into a TokenizerSpec. JSON exceptions stop here and become a Status naming the key path.
// Supported: model BPE; normalizers Sequence/Prepend/Replace(String)/NFC; pre-tokenizers
// Sequence/Split/Digits/ByteLevel/Metaspace; post-processor TemplateProcessing (for BOS).
// NFC is accepted as a pass-through: text already in NFC (nearly all text) tokenizes exactly;
// decomposed input may differ from Hugging Face. Anything else is an error naming it.
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "engine/json_file.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"

namespace peng {
namespace {

using Json = nlohmann::json;

absl::Status Bad(const std::string& key_path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(key_path, ": ", what));
}

// A string field, or the "content" of an AddedToken-shaped object; empty if absent/null.
std::string TokenText(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return {};
}

absl::Status AddNormalizer(const Json& j, const std::string& path, TokenizerSpec* spec) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    const Json& list = j.at("normalizers");
    for (size_t i = 0; i < list.size(); ++i) {
      PENG_RETURN_IF_ERROR(
          AddNormalizer(list[i], absl::StrCat(path, ".normalizers[", i, "]"), spec));
    }
  } else if (type == "Prepend") {
    spec->normalizer.push_back(
        {NormalizerStep::Kind::kPrepend, "", j.at("prepend").get<std::string>()});
  } else if (type == "Replace") {
    if (!j.at("pattern").contains("String")) {
      return absl::UnimplementedError(absl::StrCat(path, ": Replace with a Regex pattern"));
    }
    spec->normalizer.push_back(
        {NormalizerStep::Kind::kReplace, j["pattern"]["String"].get<std::string>(),
         j.at("content").get<std::string>()});
  } else if (type != "NFC") {
    return absl::UnimplementedError(absl::StrCat(path, ": normalizer \"", type, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<PreTokenizerStep::Behavior> ParseBehavior(const std::string& b,
                                                         const std::string& path) {
  using B = PreTokenizerStep::Behavior;
  if (b == "Removed") return B::kRemoved;
  if (b == "Isolated") return B::kIsolated;
  if (b == "MergedWithPrevious") return B::kMergedWithPrevious;
  if (b == "MergedWithNext") return B::kMergedWithNext;
  if (b == "Contiguous") return B::kContiguous;
  return Bad(path, absl::StrCat("unknown split behavior \"", b, "\""));
}

absl::Status AddPreTokenizer(const Json& j, const std::string& path, TokenizerSpec* spec) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = j.value("type", "");
  PreTokenizerStep s;
  if (type == "Sequence") {
    const Json& list = j.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) {
      PENG_RETURN_IF_ERROR(
          AddPreTokenizer(list[i], absl::StrCat(path, ".pretokenizers[", i, "]"), spec));
    }
    return absl::OkStatus();
  } else if (type == "Split") {
    s.kind = PreTokenizerStep::Kind::kSplit;
    const Json& pattern = j.at("pattern");
    if (pattern.contains("Regex")) {
      s.pattern = pattern["Regex"].get<std::string>();
    } else if (pattern.contains("String")) {
      s.pattern = pattern["String"].get<std::string>();
      s.literal = true;
    } else {
      return Bad(path + ".pattern", "neither Regex nor String");
    }
    PENG_ASSIGN_OR_RETURN(s.behavior, ParseBehavior(j.at("behavior").get<std::string>(),
                                                    path + ".behavior"));
    s.invert = j.value("invert", false);
  } else if (type == "Digits") {
    s.kind = PreTokenizerStep::Kind::kDigits;
    s.individual_digits = j.value("individual_digits", false);
  } else if (type == "ByteLevel") {
    s.kind = PreTokenizerStep::Kind::kByteLevel;
    s.add_prefix_space = j.value("add_prefix_space", true);
    s.use_regex = j.value("use_regex", true);
  } else if (type == "Metaspace") {
    s.kind = PreTokenizerStep::Kind::kMetaspace;
    s.replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    s.split = j.value("split", true);
    const std::string scheme =
        j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never");
    if (scheme == "always") s.prepend = PreTokenizerStep::Prepend::kAlways;
    else if (scheme == "first") s.prepend = PreTokenizerStep::Prepend::kFirst;
    else if (scheme == "never") s.prepend = PreTokenizerStep::Prepend::kNever;
    else return Bad(path + ".prepend_scheme", absl::StrCat("unknown value \"", scheme, "\""));
    if (s.prepend != PreTokenizerStep::Prepend::kNever) spec->strip_decoded_leading_space = true;
  } else {
    return absl::UnimplementedError(absl::StrCat(path, ": pre-tokenizer \"", type, "\""));
  }
  if (s.kind == PreTokenizerStep::Kind::kByteLevel) spec->encoding = TextEncoding::kByteLevel;
  spec->pre_tokenizer.push_back(std::move(s));
  return absl::OkStatus();
}

// Decoder facts that change decoding: byte-level, and the leading space Strip drops.
void ReadDecoder(const Json& j, TokenizerSpec* spec) {
  if (!j.is_object()) return;
  const std::string type = j.value("type", "");
  if (type == "Sequence" && j.contains("decoders")) {
    for (const Json& d : j["decoders"]) ReadDecoder(d, spec);
  } else if (type == "ByteLevel") {
    spec->encoding = TextEncoding::kByteLevel;
  } else if (type == "Strip") {
    if (j.value("content", std::string()) == " " && j.value("start", 0) > 0) {
      spec->strip_decoded_leading_space = true;
    }
  } else if (type == "Metaspace") {
    const std::string scheme =
        j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never");
    if (scheme != "never") spec->strip_decoded_leading_space = true;
  }
}

absl::Status ReadModel(const Json& model, TokenizerSpec* spec) {
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") {
    return absl::UnimplementedError(absl::StrCat("model.type \"", type, "\" (only BPE)"));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return absl::UnimplementedError(absl::StrCat("model.", key, " is not supported"));
    }
  }
  const Json& vocab = model.at("vocab");
  if (!vocab.is_object()) return Bad("model.vocab", "not an object");
  for (const auto& [text, id_json] : vocab.items()) {
    if (!id_json.is_number_integer()) return Bad("model.vocab[\"" + text + "\"]", "not an id");
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= (1 << 30)) {
      return Bad("model.vocab[\"" + text + "\"]", absl::StrCat("id ", id, " out of range"));
    }
    if (id >= static_cast<int64_t>(spec->tokens.size())) {
      spec->tokens.resize(id + 1);
      spec->kinds.resize(id + 1, TokenKind::kUnused);
    }
    spec->tokens[id] = text;
    spec->kinds[id] = TokenKind::kNormal;
  }
  const Json& merges = model.at("merges");
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return Bad(absl::StrCat("model.merges[", i, "]"),
                   absl::StrCat("\"", s, "\" is not two tokens separated by one space"));
      }
      spec->merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec->merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return Bad(absl::StrCat("model.merges[", i, "]"), "neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  spec->byte_fallback = model.value("byte_fallback", false);
  spec->ignore_merges = model.value("ignore_merges", false);
  return absl::OkStatus();
}

absl::Status ReadAddedTokens(const Json& added, TokenizerSpec* spec) {
  if (added.is_null()) return absl::OkStatus();
  for (size_t i = 0; i < added.size(); ++i) {
    const Json& t = added[i];
    const std::string path = absl::StrCat("added_tokens[", i, "]");
    if (!t.contains("id") || !t["id"].is_number_integer()) return Bad(path, "missing id");
    const int64_t id = t["id"].get<int64_t>();
    if (id < 0 || id >= (1 << 30)) return Bad(path, absl::StrCat("id ", id, " out of range"));
    const std::string content = TokenText(t);
    if (content.empty()) return Bad(path, "missing content");
    if (id >= static_cast<int64_t>(spec->tokens.size())) {
      spec->tokens.resize(id + 1);
      spec->kinds.resize(id + 1, TokenKind::kUnused);
    }
    spec->tokens[id] = content;
    spec->kinds[id] = t.value("special", false) ? TokenKind::kControl : TokenKind::kUserDefined;
  }
  return absl::OkStatus();
}

// TemplateProcessing whose "single" template starts with a special token adds BOS.
void ReadPostProcessor(const Json& j, TokenizerSpec* spec, std::string* bos_text) {
  if (!j.is_object()) return;
  const std::string type = j.value("type", "");
  if (type == "Sequence" && j.contains("processors")) {
    for (const Json& p : j["processors"]) ReadPostProcessor(p, spec, bos_text);
  } else if (type == "TemplateProcessing" && j.contains("single") && j["single"].is_array() &&
             !j["single"].empty()) {
    const Json& first = j["single"][0];
    if (first.is_object() && first.contains("SpecialToken")) {
      *bos_text = first["SpecialToken"].value("id", std::string());
      spec->add_bos = !bos_text->empty();
    }
  }
}

absl::Status ReadConfig(const Json& c, TokenizerSpec* spec, std::string* bos, std::string* eos,
                        std::string* unk) {
  if (!c.is_object()) return Bad("tokenizer_config.json", "not an object");
  if (c.contains("bos_token") && !c["bos_token"].is_null()) *bos = TokenText(c["bos_token"]);
  if (c.contains("eos_token") && !c["eos_token"].is_null()) *eos = TokenText(c["eos_token"]);
  if (c.contains("unk_token") && !c["unk_token"].is_null()) *unk = TokenText(c["unk_token"]);
  if (c.contains("add_bos_token") && c["add_bos_token"].is_boolean()) {
    spec->add_bos = c["add_bos_token"].get<bool>();
  }
  if (c.contains("chat_template")) {
    const Json& t = c["chat_template"];
    if (t.is_string()) {
      spec->chat_template = t.get<std::string>();
    } else if (t.is_array()) {  // [{"name": "default", "template": ...}, ...]
      for (const Json& e : t) {
        if (e.is_object() && e.value("name", "") == "default") {
          spec->chat_template = e.value("template", "");
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenizerSpec> SpecFromHf(const std::string& json_path,
                                         const std::string& config_path) {
  TokenizerSpec spec;
  spec.source = json_path;
  spec.encoding = TextEncoding::kMetaspace;  // unless a ByteLevel step says otherwise
  spec.merge_order = MergeOrder::kRanks;
  PENG_ASSIGN_OR_RETURN(Json j, ReadJsonFile(json_path));
  std::string bos_text, eos_text, unk_text;
  try {
    if (!j.is_object() || !j.contains("model")) return Bad(json_path, "no \"model\" object");
    PENG_RETURN_IF_ERROR(ReadModel(j["model"], &spec));
    PENG_RETURN_IF_ERROR(ReadAddedTokens(j.value("added_tokens", Json()), &spec));
    PENG_RETURN_IF_ERROR(AddNormalizer(j.value("normalizer", Json()), "normalizer", &spec));
    PENG_RETURN_IF_ERROR(
        AddPreTokenizer(j.value("pre_tokenizer", Json()), "pre_tokenizer", &spec));
    ReadDecoder(j.value("decoder", Json()), &spec);
    ReadPostProcessor(j.value("post_processor", Json()), &spec, &bos_text);
    if (j["model"].contains("unk_token") && j["model"]["unk_token"].is_string()) {
      unk_text = j["model"]["unk_token"].get<std::string>();
      spec.unknown_to_unk = true;
    }
    if (!config_path.empty()) {
      PENG_ASSIGN_OR_RETURN(Json c, ReadJsonFile(config_path));
      absl::Status s = ReadConfig(c, &spec, &bos_text, &eos_text, &unk_text);
      if (!s.ok()) return Annotate(s, config_path);
    }
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(json_path, ": ", e.what()));
  }
  // Byte-fallback tokens decode to their byte and never take part in merges.
  if (spec.byte_fallback) {
    for (size_t i = 0; i < spec.tokens.size(); ++i) {
      const std::string& t = spec.tokens[i];
      if (spec.kinds[i] == TokenKind::kNormal && t.size() == 6 && t.starts_with("<0x") &&
          t.back() == '>') {
        spec.kinds[i] = TokenKind::kByte;
      }
    }
  }
  struct Named {
    const char* what;
    const std::string& text;
    int32_t* id;
  };
  for (const Named& n : {Named{"bos_token", bos_text, &spec.bos_id},
                         Named{"eos_token", eos_text, &spec.eos_id},
                         Named{"unk_token", unk_text, &spec.unk_id}}) {
    if (n.text.empty()) continue;
    int32_t found = -1;
    for (size_t i = 0; i < spec.tokens.size() && found < 0; ++i) {
      if (spec.tokens[i] == n.text) found = static_cast<int32_t>(i);
    }
    if (found < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(n.what, " \"", n.text, "\" is not in the vocabulary"));
    }
    *n.id = found;
  }
  return spec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromHfFiles(
    const std::string& tokenizer_json_path, const std::string& tokenizer_config_path) {
  PENG_ASSIGN_OR_RETURN(TokenizerSpec spec, SpecFromHf(tokenizer_json_path,
                                                       tokenizer_config_path));
  return Create(std::move(spec));
}

}  // namespace peng
