#include "engine/json_grammar.h"

#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/json_constraint.h"
#include "engine/testing/grammar_walk.h"
#include "nlohmann/json.hpp"

namespace peng {
namespace {

bool Accepts(std::string_view doc) {
  JsonGrammar g;
  return g.FeedAll(doc) && g.Complete();
}

TEST(JsonGrammarTest, AcceptsObjects) {
  for (const char* doc : {"{}", " {\n}\n", R"({"a":1})", R"({"a": -0.5e+10, "b": [true, false, null, "x"]})",
                          R"({"k": {"n": [[], {}, [1, 2.25, -3E2]], "s": "tab\tq\"\\\/\u00e9\u20AC"}})",
                          "{\"utf8\": \"\xc3\xa9\xe2\x82\xac\"}", R"({"":0,"0":10})"}) {
    EXPECT_TRUE(Accepts(doc)) << doc;
    EXPECT_TRUE(nlohmann::json::accept(doc)) << doc;  // the reference agrees
  }
}

TEST(JsonGrammarTest, RefusesWhatJsonForbidsAtTheFirstBadByte) {
  // Each: a document and the length of its longest valid prefix.
  const std::pair<std::string_view, size_t> cases[] = {
      {"[1]", 0},           {"\"s\"", 0},        {"1", 0},            {R"({"a":01})", 6},
      {R"({"a":1,})", 7},   {"{,}", 1},          {R"({"a" 1})", 5},   {"{'a':1}", 1},
      {R"({"a":tru})", 8},  {R"({"a":"\x"})", 7}, {R"({"a":1.})", 7}, {R"({"a":-})", 6},
      {R"({"a":1e})", 7},   {"{}x", 2},          {"{}}", 2},          {R"({"a":[1}})", 7},
      {R"({"a":{]})", 6},   {"{\"a\":\"\x01\"}", 6}, {R"({"a":"\u12G4"})", 10}, {R"({"a":+1})", 5},
  };
  for (const auto& [doc, valid] : cases) {
    const nlohmann::json parsed = nlohmann::json::parse(doc, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(parsed.is_object()) << doc;  // the reference: not one JSON object
    JsonGrammar g;
    size_t taken = 0;
    while (taken < doc.size() && g.Feed(static_cast<uint8_t>(doc[taken]))) ++taken;
    EXPECT_EQ(taken, valid) << doc;
  }
}

TEST(JsonGrammarTest, StringsAreWellFormedUtf8) {
  EXPECT_TRUE(Accepts("{\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\": 1}"));
  for (const char* bad : {"{\"\xc3\"", "{\"\x80", "{\"\xe2\x82\"", "{\"\xc0\x80", "{\"\xf8"}) {
    JsonGrammar g;
    EXPECT_FALSE(g.FeedAll(bad)) << bad;
  }
  EXPECT_EQ(JsonGrammar::PlainStringPrefix("ab\xc3\xa9" "c"), 5u);
  EXPECT_EQ(JsonGrammar::PlainStringPrefix("ab\xc3"), 2u);  // an unfinished character
  EXPECT_EQ(JsonGrammar::PlainStringPrefix("a\"b"), 1u);
  EXPECT_EQ(JsonGrammar::PlainStringPrefix("\x80" "a"), 0u);
}

TEST(JsonGrammarTest, RefusedByteLeavesTheStateAsItWas) {
  JsonGrammar g;
  ASSERT_TRUE(g.FeedAll(R"({"a": 12)"));
  const JsonGrammar before = g;
  EXPECT_FALSE(g.Feed('x'));
  EXPECT_TRUE(g == before);
  EXPECT_FALSE(g.FeedAll("3x"));
  EXPECT_TRUE(g == before);
  EXPECT_TRUE(g.FeedAll("3}"));
  EXPECT_TRUE(g.Complete());
}

TEST(JsonGrammarTest, BoundsWhitespaceRunsAndDepth) {
  JsonGrammar g;
  ASSERT_TRUE(g.Feed('{'));
  for (int i = 0; i < JsonGrammar::kMaxWhitespace; ++i) ASSERT_TRUE(g.Feed(' '));
  EXPECT_FALSE(g.Feed('\n'));
  ASSERT_TRUE(g.FeedAll(R"("a":)"));
  for (int i = 1; i < JsonGrammar::kMaxDepth; ++i) ASSERT_TRUE(g.Feed('[')) << i;
  EXPECT_FALSE(g.Feed('['));
}

TEST(JsonGrammarTest, WhitespaceRunsHoldOneLineBreak) {
  JsonGrammar g;
  ASSERT_TRUE(g.FeedAll("{\n  \"a\": [\r\n    1,\n\t2 \n ]\n}"));  // pretty-printed: one break per run
  EXPECT_TRUE(g.Complete());
  JsonGrammar h;
  ASSERT_TRUE(h.FeedAll("{\n  "));
  EXPECT_FALSE(h.Feed('\n'));  // a blank line
  EXPECT_FALSE(h.Feed('\r'));
  ASSERT_TRUE(h.FeedAll("\"a\"\r"));
  EXPECT_FALSE(h.Feed('\r'));
  ASSERT_TRUE(h.Feed('\n'));
  EXPECT_FALSE(h.Feed('\n'));
  ASSERT_TRUE(h.FeedAll(":\n1}"));  // a new run after each token
  EXPECT_TRUE(h.Complete());
}

// `doc` with the exponent of every number outside strings cut to one digit.
std::string ShortExponents(std::string_view doc) {
  std::string out;
  bool in_string = false, escaped = false, exponent = false;
  for (size_t i = 0; i < doc.size(); ++i) {
    const char c = doc[i];
    if (in_string) {
      in_string = escaped || c != '"';
      escaped = !escaped && c == '\\';
    } else if (c == '"') {
      in_string = true;
    } else if (c == 'e' || c == 'E') {
      exponent = true;
    } else if (exponent && c >= '0' && c <= '9') {
      out.push_back(c);
      while (i + 1 < doc.size() && doc[i + 1] >= '0' && doc[i + 1] <= '9') ++i;
      exponent = false;
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// Any prefix the grammar takes completes to a document the reference parses: random walks over
// a JSON-ish alphabet, then the first byte of a fixed preference list that the grammar takes,
// until the object is complete.
TEST(JsonGrammarTest, EveryAcceptedPrefixCompletesToValidJson) {
  // Units of one byte, and one two-byte UTF-8 character (the grammar does not validate UTF-8;
  // the reference does).
  std::vector<std::string> alphabet = {"\xc3\xa9"};
  for (const char c : std::string_view("{}[]\":,0123456789-.eE+truefalsn \n\\xu")) alphabet.emplace_back(1, c);
  const std::string finish = "\"}]0:abcdefghijklmnopqrstuvwxyz{";
  std::mt19937 rng(7);
  for (int walk = 0; walk < 20000; ++walk) {
    JsonGrammar g;
    const std::string doc = testing::WalkThenFinish(g, rng, alphabet, 200, finish, 10000);
    ASSERT_TRUE(g.Complete()) << "stuck after: " << doc;
    // The reference refuses numbers beyond a double's range (RFC 8259 leaves range to
    // implementations): it reads every exponent as one digit.
    const std::string ref = ShortExponents(doc);
    ASSERT_TRUE(nlohmann::json::accept(ref)) << doc;
    EXPECT_EQ(doc[doc.find_first_not_of(" \n")], '{') << doc;
  }
}

std::shared_ptr<const JsonVocabulary> ToyVocabulary() {
  auto v = std::make_shared<JsonVocabulary>();
  using K = JsonVocabulary::Kind;
  const std::pair<std::string, K> tokens[] = {{"{", K::kText}, {"}", K::kText},    {"\"a\"", K::kText},
                                              {":", K::kText}, {"1", K::kText},    {" ", K::kText},
                                              {"", K::kEndOfGeneration},           {"x", K::kText},
                                              {"{\"", K::kText}, {"", K::kOther}};
  for (const auto& [piece, kind] : tokens) {
    v->pieces.push_back(piece);
    v->kinds.push_back(kind);
  }
  v->Index();
  return v;
}

template <class C>
std::vector<int> Allowed(C& c, size_t n) {
  std::vector<float> logits(n, 0.0f);
  c.Mask(logits);
  std::vector<int> ids;
  for (size_t i = 0; i < n; ++i) {
    if (logits[i] == 0.0f) ids.push_back(static_cast<int>(i));
    else EXPECT_EQ(logits[i], -std::numeric_limits<float>::infinity());
  }
  return ids;
}

TEST(JsonConstraintTest, MasksTokensByTheirBytesThenOnlyEnds) {
  const auto vocab = ToyVocabulary();
  const size_t n = vocab->pieces.size();
  JsonConstraint c(vocab);
  EXPECT_EQ(Allowed(c, n), (std::vector<int>{0, 5, 8}));  // "{", " ", "{\""
  c.Accept(0);
  EXPECT_EQ(Allowed(c, n), (std::vector<int>{1, 2, 5}));  // "}", "\"a\"", " "
  c.Accept(2);
  EXPECT_EQ(Allowed(c, n), (std::vector<int>{3, 5}));
  c.Accept(3);
  EXPECT_EQ(Allowed(c, n), (std::vector<int>{0, 2, 4, 5, 8}));  // a value: "{", "\"a\"", "1", " ", "{\""
  c.Accept(4);
  EXPECT_EQ(Allowed(c, n), (std::vector<int>{1, 4, 5}));  // more digits, the close, space
  c.Accept(1);
  EXPECT_TRUE(c.grammar().Complete());
  EXPECT_EQ(Allowed(c, n), (std::vector<int>{6}));  // the end token only
}

// The mask (first-byte groups, plain string prefixes, the cache) equals the definition: a token
// is allowed when a copy of the grammar takes every one of its bytes. Random tokens over a
// JSON-ish alphabet, at the states of random walks.
TEST(JsonConstraintTest, MaskIsTheDefinition) {
  const std::string alphabet = "{}[]\":, 0123456789-.eEtruefalsnxyz\\\n\x01\xc3\xa9";
  std::mt19937 rng(11);
  auto vocab = std::make_shared<JsonVocabulary>();
  for (int i = 0; i < 3000; ++i) {
    std::string piece(1 + rng() % 6, ' ');
    for (char& c : piece) c = alphabet[rng() % alphabet.size()];
    vocab->pieces.push_back(piece);
    vocab->kinds.push_back(JsonVocabulary::Kind::kText);
  }
  vocab->pieces.push_back("");
  vocab->kinds.push_back(JsonVocabulary::Kind::kEndOfGeneration);
  vocab->Index();
  const size_t n = vocab->pieces.size();
  for (int walk = 0; walk < 40; ++walk) {
    JsonConstraint c(vocab);
    for (int step = 0; step < 60; ++step) {
      std::vector<float> logits(n, 0.0f);
      c.Mask(logits);
      std::vector<int32_t> allowed;
      for (size_t id = 0; id < n; ++id) {
        JsonGrammar g = c.grammar();
        const bool expect = vocab->kinds[id] == JsonVocabulary::Kind::kEndOfGeneration
                                ? g.Complete()
                                : !c.grammar().Complete() && g.FeedAll(vocab->pieces[id]);
        ASSERT_EQ(logits[id] == 0.0f, expect) << "token " << id << " '" << vocab->pieces[id] << "'";
        if (expect) allowed.push_back(static_cast<int32_t>(id));
      }
      if (c.grammar().Complete()) break;
      ASSERT_FALSE(allowed.empty());
      c.Accept(allowed[rng() % allowed.size()]);
    }
  }
}

TEST(ChoiceGrammarTest, OneOfTheChoicesThenTheEnd) {
  const auto set = ChoiceSet::Create({"yes", "yes sir", "no"});
  ASSERT_TRUE(set.ok());
  ChoiceGrammar g(set->get());
  EXPECT_FALSE(g.CanStop());
  EXPECT_FALSE(g.Feed('x'));
  ASSERT_TRUE(g.FeedAll("yes"));
  EXPECT_TRUE(g.CanStop());     // "yes" is whole ...
  EXPECT_FALSE(g.Complete());   // ... and " sir" may follow
  ASSERT_TRUE(g.FeedAll(" sir"));
  EXPECT_TRUE(g.Complete());
  EXPECT_FALSE(g.Feed('!'));
  EXPECT_FALSE(ChoiceSet::Create({}).ok());
  EXPECT_FALSE(ChoiceSet::Create({"a", ""}).ok());
  EXPECT_FALSE(ChoiceSet::Create({"a", "a"}).ok());

  // As a constraint: after "yes" both the end token and " sir" may come.
  auto vocab = std::make_shared<JsonVocabulary>();
  for (const char* piece : {"yes", " sir", "no", "y", "x"}) {
    vocab->pieces.push_back(piece);
    vocab->kinds.push_back(JsonVocabulary::Kind::kText);
  }
  vocab->pieces.push_back("");
  vocab->kinds.push_back(JsonVocabulary::Kind::kEndOfGeneration);
  vocab->Index();
  ChoiceConstraint c(vocab, *set);
  EXPECT_EQ(Allowed(c, vocab->pieces.size()), (std::vector<int>{0, 2, 3}));
  c.Accept(0);
  EXPECT_EQ(Allowed(c, vocab->pieces.size()), (std::vector<int>{1, 5}));
  c.Accept(1);
  EXPECT_EQ(Allowed(c, vocab->pieces.size()), (std::vector<int>{5}));
}

TEST(RegexGrammarTest, TheWholeOutputMatchesThenTheEnd) {
  const auto re = ByteRegex::Compile("\\d{3}(-\\d{2})?", ByteRegex::Use::kWholeText);
  ASSERT_TRUE(re.ok()) << re.status();
  auto shared = std::make_shared<const ByteRegex>(*re);
  RegexGrammar g(shared.get());
  EXPECT_FALSE(g.Feed('x'));
  ASSERT_TRUE(g.FeedAll("123"));
  EXPECT_TRUE(g.CanStop());
  EXPECT_FALSE(g.Complete());
  EXPECT_FALSE(g.FeedAll("-1x"));  // refused whole: the state is as it was
  ASSERT_TRUE(g.FeedAll("-45"));
  EXPECT_TRUE(g.Complete());

  auto vocab = std::make_shared<JsonVocabulary>();
  for (const char* piece : {"12", "3", "-", "-4", "a", "456"}) {
    vocab->pieces.push_back(piece);
    vocab->kinds.push_back(JsonVocabulary::Kind::kText);
  }
  vocab->pieces.push_back("");
  vocab->kinds.push_back(JsonVocabulary::Kind::kEndOfGeneration);
  vocab->Index();
  RegexConstraint c(vocab, shared);
  EXPECT_EQ(Allowed(c, vocab->pieces.size()), (std::vector<int>{0, 1, 5}));
  c.Accept(0);
  EXPECT_EQ(Allowed(c, vocab->pieces.size()), (std::vector<int>{1}));
  c.Accept(1);  // "123": the end, or "-" and two digits
  EXPECT_EQ(Allowed(c, vocab->pieces.size()), (std::vector<int>{2, 3, 6}));
  c.Accept(3);
  EXPECT_EQ(Allowed(c, vocab->pieces.size()), (std::vector<int>{1}));
  c.Accept(1);
  EXPECT_EQ(Allowed(c, vocab->pieces.size()), (std::vector<int>{6}));
}

TEST(JsonConstraintTest, SequencesShareMasksByState) {
  const auto vocab = ToyVocabulary();
  const size_t n = vocab->pieces.size();
  auto shared = std::make_shared<SharedMasks<JsonGrammar>>();
  JsonConstraint first(vocab, shared);
  std::vector<std::vector<int>> seen;
  for (const int id : {0, 2, 3, 4, 1}) {  // {"a":1}
    seen.push_back(Allowed(first, n));
    first.Accept(id);
  }
  const int64_t computed = shared->inserted();
  EXPECT_EQ(computed, 5);
  JsonConstraint second(vocab, shared);  // the same path: every mask from the shared ones
  int step = 0;
  for (const int id : {0, 2, 3, 4, 1}) {
    EXPECT_EQ(Allowed(second, n), seen[step++]);
    second.Accept(id);
  }
  EXPECT_EQ(shared->inserted(), computed);
}

}  // namespace
}  // namespace peng
