#include "engine/tokenizer.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/tokenizer_unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace peng {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// A temp dir holding hand-made tokenizer.json / tokenizer_config.json files.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("peng_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// Byte-level BPE: ids 0..255 are the single bytes (in byte order), then one token per merge,
// then the added tokens.
struct TinyBpe {
  std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\xC4\xA0", "w"},  // "Ġ" "w"
      {"o", "r"}, {"\xC4\xA0w", "or"}, {"\xC4\xA0wor", "l"}, {"\xC4\xA0worl", "d"}};
  Json vocab = Json::object();
  int32_t next_id = 0;
  TinyBpe() {
    for (int b = 0; b < 256; ++b) vocab[std::string(ByteToUnicode(b))] = next_id++;
    for (const auto& [a, b] : merges) vocab[a + b] = next_id++;
  }
  int32_t Id(const std::string& t) const { return vocab.at(t).get<int32_t>(); }

  Json TokenizerJson(bool list_merges) const {
    Json m = Json::array();
    for (const auto& [a, b] : merges) {
      m.push_back(list_merges ? Json::array({a, b}) : Json(a + " " + b));
    }
    return Json{
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}}},
        {"added_tokens",
         {{{"id", next_id}, {"content", "<|im_start|>"}, {"special", true}},
          {{"id", next_id + 1}, {"content", "<|im_end|>"}, {"special", true}},
          {{"id", next_id + 2}, {"content", "<|im_end|>x"}, {"special", true}},
          {{"id", next_id + 3}, {"content", "[tool]"}, {"special", false}}}},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Digits"}, {"individual_digits", true}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}}},
        {"decoder", {{"type", "ByteLevel"}}},
    };
  }
};

std::unique_ptr<Tokenizer> LoadTiny(bool list_merges = false, const Json& config = Json()) {
  TempDir dir;
  TinyBpe bpe;
  const std::string json = dir.Write("tokenizer.json", bpe.TokenizerJson(list_merges).dump());
  const std::string cfg = config.is_null() ? "" : dir.Write("cfg.json", config.dump());
  auto tok = Tokenizer::FromHfFiles(json, cfg);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

TEST(TokenizerBpeTest, MergesWordsByRank) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  TinyBpe bpe;
  EXPECT_THAT(tok->Encode("hello world", false, true),
              ElementsAre(bpe.Id("hello"), bpe.Id("\xC4\xA0world")));
  // "helo": h+e merges, then no rule joins "he" "l" "o".
  EXPECT_THAT(tok->Encode("helo", false, true),
              ElementsAre(bpe.Id("he"), bpe.Id("l"), bpe.Id("o")));
  // Digits are split one by one before the byte-level regex.
  EXPECT_THAT(tok->Encode("42", false, true), ElementsAre(bpe.Id("4"), bpe.Id("2")));
  EXPECT_EQ(tok->vocab_size(), bpe.next_id + 4);
}

TEST(TokenizerBpeTest, ListAndStringMergesAgree) {
  auto a = LoadTiny(false), b = LoadTiny(true);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  for (const char* s : {"hello world", "hell o", "worldhello 12 hello"}) {
    EXPECT_EQ(a->Encode(s, false, true), b->Encode(s, false, true)) << s;
  }
}

TEST(TokenizerBpeTest, RoundTripsArbitraryText) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  for (const std::string s :
       {"hello world", "  leading and trailing  ", "tabs\tand\nnew\r\nlines\n\n",
        "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x8E\x89!", "x = f(1, 2) * 3.14;", ""}) {
    EXPECT_EQ(tok->Decode(tok->Encode(s, false, true), false), s);
  }
}

TEST(TokenizerBpeTest, SpecialTokensLongestMatchOnlyWhenParsing) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  const int32_t start = *tok->FindToken("<|im_start|>");
  const int32_t end_x = *tok->FindToken("<|im_end|>x");
  const int32_t tool = *tok->FindToken("[tool]");
  const auto ids = tok->Encode("<|im_start|>hello<|im_end|>x", false, true);
  TinyBpe bpe;
  EXPECT_THAT(ids, ElementsAre(start, bpe.Id("hello"), end_x));
  EXPECT_TRUE(tok->IsSpecial(start));
  EXPECT_EQ(tok->Decode(ids, /*skip_special=*/true), "hello");
  EXPECT_EQ(tok->Decode(ids, false), "<|im_start|>hello<|im_end|>x");

  // Not parsing: the markup is plain text, BPE never yields the control token.
  const auto plain = tok->Encode("<|im_start|>", false, false);
  EXPECT_GT(plain.size(), 1u);
  for (int32_t id : plain) EXPECT_FALSE(tok->IsSpecial(id));
  EXPECT_EQ(tok->Decode(plain, true), "<|im_start|>");
  // A non-special added token is recognised either way.
  EXPECT_THAT(tok->Encode("[tool]", false, false), ElementsAre(tool));
  EXPECT_TRUE(tok->IsEndOfGeneration(*tok->FindToken("<|im_end|>")));
  EXPECT_FALSE(tok->IsEndOfGeneration(start));
}

TEST(TokenizerBpeTest, ConfigSetsBosAndTemplate) {
  Json config = {{"bos_token", "<|im_start|>"},
                 {"eos_token", {{"content", "<|im_end|>"}}},
                 {"add_bos_token", true},
                 {"chat_template", "{{ messages }}"}};
  auto tok = LoadTiny(false, config);
  ASSERT_NE(tok, nullptr);
  const int32_t bos = *tok->FindToken("<|im_start|>");
  EXPECT_EQ(tok->bos_id(), bos);
  EXPECT_EQ(tok->eos_id(), *tok->FindToken("<|im_end|>"));
  EXPECT_EQ(tok->chat_template(), "{{ messages }}");
  EXPECT_EQ(tok->Encode("hello", true, true).front(), bos);
  EXPECT_EQ(tok->Encode("hello", false, true).front(), TinyBpe().Id("hello"));
  // Not doubled when the text already starts with it.
  const auto ids = tok->Encode("<|im_start|>hello", true, true);
  EXPECT_EQ(ids.size(), 2u);
}

TEST(TokenizerBpeTest, BadFilesAreErrorsNamingTheProblem) {
  TempDir dir;
  TinyBpe bpe;
  Json j = bpe.TokenizerJson(false);
  j["model"]["merges"].push_back("he zz");
  auto s = Tokenizer::FromHfFiles(dir.Write("a.json", j.dump()), "");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("merge #9 \"he zz\""));

  j = bpe.TokenizerJson(false);
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  s = Tokenizer::FromHfFiles(dir.Write("b.json", j.dump()), "");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("BertPreTokenizer"));

  j = bpe.TokenizerJson(false);
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"}};
  s = Tokenizer::FromHfFiles(dir.Write("c.json", j.dump()), "");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("(unclosed"));

  s = Tokenizer::FromHfFiles(dir.Write("d.json", "{\"model\": {\"vocab\": [1, 2]"), "");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("invalid JSON"));

  s = Tokenizer::FromHfFiles(dir.Write("e.json", "{\"model\": {\"vocab\": 3}}"), "");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("model.vocab"));

  s = Tokenizer::FromHfFiles((std::filesystem::temp_directory_path() / "peng_no_such").string(),
                             "");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);

  j = bpe.TokenizerJson(false);
  Json config = {{"bos_token", "<s>"}};
  s = Tokenizer::FromHfFiles(dir.Write("f.json", j.dump()), dir.Write("g.json", config.dump()));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("bos_token \"<s>\""));
}

TEST(IncrementalDecoderTest, HoldsBackSplitCharacters) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  TinyBpe bpe;
  auto byte_id = [&](uint8_t b) { return bpe.Id(std::string(ByteToUnicode(b))); };
  IncrementalDecoder dec(*tok);
  EXPECT_EQ(dec.Push(bpe.Id("hello")), "hello");
  // U+1F389 (party popper) arrives one byte token at a time.
  EXPECT_EQ(dec.Push(byte_id(0xF0)), "");
  EXPECT_EQ(dec.Push(byte_id(0x9F)), "");
  EXPECT_EQ(dec.Push(byte_id(0x8E)), "");
  EXPECT_EQ(dec.Push(byte_id(0x89)), "\xF0\x9F\x8E\x89");
  // Control tokens are skipped by default.
  EXPECT_EQ(dec.Push(*tok->FindToken("<|im_end|>")), "");
  // An impossible byte is replaced at once; a dangling lead byte is held, then flushed.
  EXPECT_EQ(dec.Push(byte_id(0xFF)), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.Push(byte_id(0xC3)), "");
  EXPECT_EQ(dec.Push(bpe.Id("o")), "\xEF\xBF\xBDo");  // C3 followed by ASCII: broken
  EXPECT_EQ(dec.Push(byte_id(0xE6)), "");
  EXPECT_EQ(dec.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.Flush(), "");
}

TEST(IncrementalDecoderTest, StreamEqualsWholeDecode) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  const std::string text = "h\xC3\xA9llo w\xE6\x97\xA5rld \xF0\x9F\x8E\x89\xF0\x9F\x8E\x8A 12";
  const auto ids = tok->Encode(text, false, true);
  IncrementalDecoder dec(*tok);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string part = dec.Push(id);
    EXPECT_EQ(SanitizeUtf8(part), part) << "emitted broken UTF-8";
    streamed += part;
  }
  streamed += dec.Flush();
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(streamed, tok->Decode(ids, true));
}

TEST(Utf8Test, SanitizeReplacesMaximalSubparts) {
  EXPECT_EQ(SanitizeUtf8("a\xE2\x82" "b"), "a\xEF\xBF\xBD" "b");        // truncated 3-byte
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(SanitizeUtf8("\xC3\xA9"), "\xC3\xA9");
}

// SentencePiece-style: merge by the score of the merged piece, byte fallback for unknowns.
TokenizerSpec TinySpmVocab() {
  TokenizerSpec spec;
  auto add = [&](const std::string& t, TokenKind k, float score) {
    spec.tokens.push_back(t);
    spec.kinds.push_back(k);
    spec.scores.push_back(score);
  };
  add("<unk>", TokenKind::kUnknown, 0);
  add("<s>", TokenKind::kControl, 0);
  add("</s>", TokenKind::kControl, 0);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    add(name, TokenKind::kByte, 0);
  }
  const std::string sp = "\xE2\x96\x81";
  // Single characters, then merged pieces; higher score merges first.
  for (const char* c : {"h", "e", "l", "o", "w", "r", "d", "s", ">", "<"}) {
    add(c, TokenKind::kNormal, -10);
  }
  add(sp, TokenKind::kNormal, -10);
  add("ll", TokenKind::kNormal, -1);
  add("he", TokenKind::kNormal, -2);
  add("hell", TokenKind::kNormal, -3);
  add("hello", TokenKind::kNormal, -4);
  add(sp + "hello", TokenKind::kNormal, -5);
  add(sp + "w", TokenKind::kNormal, -6);
  add("<s", TokenKind::kNormal, -6);
  return spec;
}

std::unique_ptr<Tokenizer> TinySpm() {
  TokenizerSpec spec = TinySpmVocab();
  spec.source = "tiny-spm";
  spec.encoding = TextEncoding::kMetaspace;
  spec.merge_order = MergeOrder::kScores;
  spec.byte_fallback = true;
  const std::string sp = "\xE2\x96\x81";
  spec.normalizer = {{NormalizerStep::Kind::kReplace, " ", sp},
                     {NormalizerStep::Kind::kPrepend, "", sp}};
  spec.strip_decoded_leading_space = true;
  spec.bos_id = 1;
  spec.eos_id = 2;
  spec.unk_id = 0;
  spec.unknown_to_unk = true;
  spec.add_bos = true;
  auto tok = Tokenizer::Create(std::move(spec));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

TEST(TokenizerSpmTest, MergesByScoreWithByteFallback) {
  auto tok = TinySpm();
  ASSERT_NE(tok, nullptr);
  const std::string sp = "\xE2\x96\x81";
  auto id = [&](const std::string& t) { return *tok->FindToken(t); };
  EXPECT_THAT(tok->Encode("hello", true, false), ElementsAre(1, id(sp + "hello")));
  EXPECT_THAT(tok->Encode("hello w", false, false),
              ElementsAre(id(sp + "hello"), id(sp + "w")));
  // 'é' is not in the vocabulary: its two bytes become <0xC3><0xA9>.
  EXPECT_THAT(tok->Encode("h\xC3\xA9", false, false),
              ElementsAre(id(sp), id("h"), id("<0xC3>"), id("<0xA9>")));
  // "<s>" as text is never the control token, even though "<s" + ">" spells it.
  const auto plain = tok->Encode("<s>", false, false);
  EXPECT_THAT(plain, ElementsAre(id(sp), id("<s"), id(">")));
  EXPECT_THAT(tok->Encode("<s>hello", false, true), ElementsAre(1, id(sp + "hello")));

  for (const std::string s : {"hello world", "h\xC3\xA9llo  w\xF0\x9F\x8E\x89", " x"}) {
    EXPECT_EQ(tok->Decode(tok->Encode(s, true, false), true), s);
  }
  IncrementalDecoder dec(*tok);
  std::string streamed;
  for (int32_t t : tok->Encode("hello w\xC3\xA9", true, false)) streamed += dec.Push(t);
  EXPECT_EQ(streamed + dec.Flush(), "hello w\xC3\xA9");
}

// Arbitrary bytes (invalid UTF-8 included) survive encoding exactly: byte-level BPE maps every
// byte, SentencePiece falls back to <0xNN> tokens.
TEST(TokenizerFuzzTest, RandomBytesSurviveEncoding) {
  auto bpe = LoadTiny();
  auto spm = TinySpm();
  ASSERT_NE(bpe, nullptr);
  ASSERT_NE(spm, nullptr);
  std::mt19937 rng(7);
  const std::string alphabet = "helo wrd<s>|\n\t\xC3\xA9\xE2\x96\x81\xF0\x9F";
  for (int iter = 0; iter < 500; ++iter) {
    std::string text;
    const int n = rng() % 40;
    for (int i = 0; i < n; ++i) {
      text.push_back(rng() % 2 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng()));
    }
    std::string pieces;
    for (int32_t id : bpe->Encode(text, false, true)) pieces += bpe->TokenPiece(id);
    EXPECT_EQ(pieces, text);
    pieces.clear();
    for (int32_t id : spm->Encode(text, false, false)) pieces += spm->TokenPiece(id);
    if (!text.empty()) {
      EXPECT_EQ(pieces, " " + text);
    }
    EXPECT_EQ(bpe->Decode(bpe->Encode(text, false, true), false), SanitizeUtf8(text));
  }
}

TEST(TokenizerSpmTest, SpecErrors) {
  TokenizerSpec spec;
  spec.source = "bad";
  spec.tokens = {"a", "b"};
  spec.bos_id = 7;
  auto tok = Tokenizer::Create(spec);
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("bos token id 7 is out of range"));
  spec.bos_id = -1;
  spec.merge_order = MergeOrder::kScores;
  tok = Tokenizer::Create(spec);
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("scores has 0 entries"));
}

TEST(PreTokenizerTest, SplitBehaviors) {
  using B = PreTokenizerStep::Behavior;
  auto split = [](B behavior, bool invert) {
    PreTokenizerStep s;
    s.kind = PreTokenizerStep::Kind::kSplit;
    s.pattern = "-";
    s.literal = true;
    s.behavior = behavior;
    s.invert = invert;
    auto pre = PreTokenizer::Create({s});
    std::vector<std::string> words;
    pre->Split("a-b--c", false, &words);
    return words;
  };
  EXPECT_THAT(split(B::kRemoved, false), ElementsAre("a", "b", "c"));
  EXPECT_THAT(split(B::kIsolated, false), ElementsAre("a", "-", "b", "-", "-", "c"));
  EXPECT_THAT(split(B::kMergedWithPrevious, false), ElementsAre("a-", "b-", "-", "c"));
  EXPECT_THAT(split(B::kMergedWithNext, false), ElementsAre("a", "-b", "-", "-c"));
  EXPECT_THAT(split(B::kContiguous, false), ElementsAre("a", "-", "b", "--", "c"));
  EXPECT_THAT(split(B::kRemoved, true), ElementsAre("-", "-", "-"));
}

TEST(PreTokenizerTest, Gpt2RegexIsUnicodeAware) {
  PreTokenizerStep s;
  s.kind = PreTokenizerStep::Kind::kByteLevel;
  auto pre = PreTokenizer::Create({s});
  ASSERT_TRUE(pre.ok());
  std::vector<std::string> words;
  pre->Split("I'm caf\xC3\xA9 123  \xD9\x85\xD8\xB1\n", false, &words);
  EXPECT_THAT(words, ElementsAre("I", "'m", " caf\xC3\xA9", " 123", " ", " \xD9\x85\xD8\xB1",
                                 "\n"));
}

// Writes GGUF v3 metadata (no tensors) in memory.
class GgufWriter {
 public:
  GgufWriter& Str(const std::string& key, const std::string& v) {
    Key(key, 8);
    Text(v);
    return *this;
  }
  GgufWriter& U32(const std::string& key, uint32_t v) {
    Key(key, 4);
    Pod(v);
    return *this;
  }
  GgufWriter& Bool(const std::string& key, bool v) {
    Key(key, 7);
    Pod(static_cast<uint8_t>(v));
    return *this;
  }
  GgufWriter& Strs(const std::string& key, const std::vector<std::string>& v) {
    Array(key, 8, v.size());
    for (const auto& x : v) Text(x);
    return *this;
  }
  template <typename T>
  GgufWriter& Nums(const std::string& key, uint32_t type, const std::vector<T>& v) {
    Array(key, type, v.size());
    for (T x : v) Pod(x);
    return *this;
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> Load() const {
    std::string file = "GGUF";
    auto put = [&](auto x) { file.append(reinterpret_cast<const char*>(&x), sizeof(x)); };
    put(uint32_t{3});
    put(uint64_t{0});
    put(n_);
    file += kv_;
    std::vector<uint8_t> bytes(file.begin(), file.end());
    auto gguf = GgufFile::ParseBuffer("test.gguf", bytes);
    if (!gguf.ok()) return gguf.status();
    return Tokenizer::FromGguf(**gguf);
  }

 private:
  template <typename T>
  void Pod(T x) { kv_.append(reinterpret_cast<const char*>(&x), sizeof(x)); }
  void Text(const std::string& s) {
    Pod(static_cast<uint64_t>(s.size()));
    kv_ += s;
  }
  void Key(const std::string& key, uint32_t type) {
    Text(key);
    Pod(type);
    ++n_;
  }
  void Array(const std::string& key, uint32_t elem_type, size_t n) {
    Key(key, 9);
    Pod(elem_type);
    Pod(static_cast<uint64_t>(n));
  }
  std::string kv_;
  uint64_t n_ = 0;
};

GgufWriter SpmGguf() {
  TokenizerSpec v = TinySpmVocab();
  std::vector<int32_t> types;
  for (TokenKind k : v.kinds) types.push_back(static_cast<int32_t>(k));
  GgufWriter w;
  w.Str("tokenizer.ggml.model", "llama")
      .Strs("tokenizer.ggml.tokens", v.tokens)
      .Nums("tokenizer.ggml.token_type", 5, types)
      .Nums("tokenizer.ggml.scores", 6, v.scores)
      .U32("tokenizer.ggml.bos_token_id", 1)
      .U32("tokenizer.ggml.eos_token_id", 2)
      .U32("tokenizer.ggml.unknown_token_id", 0);
  return w;
}

TEST(TokenizerGgufTest, SentencePieceFromMetadata) {
  auto gguf_tok = SpmGguf().Load();
  ASSERT_TRUE(gguf_tok.ok()) << gguf_tok.status();
  auto spec_tok = TinySpm();
  ASSERT_NE(spec_tok, nullptr);
  EXPECT_TRUE((*gguf_tok)->add_bos_default());  // llama default
  for (const std::string s : {"hello world", "<s>hello</s>", "h\xC3\xA9llo  w", " x"}) {
    EXPECT_EQ((*gguf_tok)->Encode(s, true, true), spec_tok->Encode(s, true, true)) << s;
    EXPECT_EQ((*gguf_tok)->Decode((*gguf_tok)->Encode(s, true, false), true), s);
  }
}

TEST(TokenizerGgufTest, ByteLevelFromMetadataAndErrors) {
  TinyBpe bpe;
  std::vector<std::string> tokens(bpe.next_id);
  for (const auto& [text, id] : bpe.vocab.items()) tokens[id.get<int32_t>()] = text;
  std::vector<std::string> merges;
  for (const auto& [a, b] : bpe.merges) merges.push_back(a + " " + b);
  auto base = [&](const std::string& pre, const std::string& model = "gpt2") {
    GgufWriter w;
    w.Str("tokenizer.ggml.model", model).Strs("tokenizer.ggml.tokens", tokens)
        .Strs("tokenizer.ggml.merges", merges).Str("tokenizer.ggml.pre", pre);
    return w;
  };
  auto ok = base("smollm").Load();
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT((*ok)->Encode("hello world", true, true),
              ElementsAre(bpe.Id("hello"), bpe.Id("\xC4\xA0world")));
  EXPECT_FALSE((*ok)->add_bos_default());

  auto error_of = [](const absl::StatusOr<std::unique_ptr<Tokenizer>>& t) {
    return t.ok() ? std::string("OK") : std::string(t.status().message());
  };
  EXPECT_THAT(error_of(base("mystery-pre").Load()),
              HasSubstr("tokenizer.ggml.pre \"mystery-pre\" is not supported"));
  EXPECT_THAT(error_of(base("gpt2").U32("tokenizer.ggml.bos_token_id", 99999).Load()),
              HasSubstr("tokenizer.ggml.bos_token_id = 99999 is out of range"));
  EXPECT_THAT(error_of(base("gpt2", "bert").Load()),
              HasSubstr("tokenizer.ggml.model"));
  merges.push_back("hello zzz");
  EXPECT_THAT(error_of(base("gpt2").Load()), HasSubstr("merge #9 \"hello zzz\""));
  merges.pop_back();
  GgufWriter no_tokens;
  no_tokens.Str("tokenizer.ggml.model", "gpt2");
  EXPECT_THAT(error_of(no_tokens.Load()), HasSubstr("tokenizer.ggml.tokens"));
  GgufWriter bad_types = base("gpt2");
  bad_types.Nums("tokenizer.ggml.token_type", 5, std::vector<int32_t>{1, 2});
  EXPECT_THAT(error_of(bad_types.Load()), HasSubstr("token_type has 2 entries"));
}

// The real default model, when present (scripts download it into models/).
class SmolLmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* root = std::getenv("PENG_SOURCE_DIR");
    const std::string path =
        std::string(root != nullptr ? root : ".") + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
    auto gguf = GgufFile::Open(path);
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    auto tok = Tokenizer::FromGguf(**gguf);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *std::move(tok);
  }
  std::unique_ptr<Tokenizer> tok_;
};

// Expected ids come from Hugging Face `tokenizers` built from the same GGUF vocabulary.
TEST_F(SmolLmTest, KnownEncodings) {
  EXPECT_EQ(tok_->vocab_size(), 49152);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_FALSE(tok_->add_bos_default());
  EXPECT_THAT(tok_->Encode("Hello, world!", true, true), ElementsAre(19556, 28, 905, 17));
  EXPECT_THAT(tok_->Encode("<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n", true, true),
              ElementsAre(1, 4093, 198, 1780, 314, 216, 33, 34, 35, 36, 37, 1232, 216, 38, 39,
                          40, 47, 2, 198));
  EXPECT_THAT(tok_->Encode("  tabs\tand\n\nnewlines   ", true, true),
              ElementsAre(216, 29416, 197, 397, 198, 198, 2241, 5110, 333));
  const std::string cjk =
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD\xE3\x82\xB9"
      "\xE3\x83\x88 \xF0\x9F\x8E\x89 caf\xC3\xA9";
  const auto ids = tok_->Encode(cjk, true, true);
  EXPECT_THAT(ids, ElementsAre(23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251,
                               10391, 134, 11100, 226, 15107, 232, 227, 37366));
  EXPECT_EQ(tok_->Decode(ids, true), cjk);
  EXPECT_TRUE(tok_->IsEndOfGeneration(2));  // <|im_end|>
  EXPECT_TRUE(tok_->IsEndOfGeneration(0));  // <|endoftext|>
  EXPECT_FALSE(tok_->IsEndOfGeneration(1));
  EXPECT_THAT(tok_->chat_template(), HasSubstr("<|im_start|>"));
}

TEST_F(SmolLmTest, LongPromptIsFast) {
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "The quick brown fox jumps over the lazy dog 42. ";
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok_->Encode(text, false, true);
  const double ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(ids.size(), 20000u);
  EXPECT_LT(ms, 1000.0) << ids.size() << " tokens took " << ms << " ms";
  EXPECT_EQ(tok_->Decode(ids, false), text);
}

}  // namespace
}  // namespace peng
