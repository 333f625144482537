#include "engine/byte_regex.h"

#include <gtest/gtest.h>

#include <regex>
#include <string>

namespace peng {
namespace {

ByteRegex Re(const char* p) {
  auto re = ByteRegex::Compile(p);
  EXPECT_TRUE(re.ok()) << re.status();
  return re.ok() ? *std::move(re) : *ByteRegex::Compile("^$");
}

// Every string of a small alphabet up to length 5 gets the same verdict from the DFA and from
// std::regex (ECMAScript, the grammar JSON Schema names), searched as JSON Schema searches.
TEST(ByteRegexTest, AgreesWithStdRegexOnEveryShortString) {
  const char* patterns[] = {"^a+b?$", "ab|c", "^(ab|a)*$", "^[a-c]{2,3}$", "^[^b]+$", "b$", "^a",
                            "^(a|b)c{0,2}$", "^\\d-\\d$", "^[0-9a]{1,}x?$", "^a.c$", "^(?:ab){2}$", "", "^a+?b*?$"};
  const std::string alphabet = "abc1-x";
  for (const char* p : patterns) {
    const ByteRegex re = Re(p);
    const std::regex ref(p, std::regex::ECMAScript);
    std::vector<std::string> strings = {""};
    for (int len = 1; len <= 5; ++len) {
      std::vector<std::string> next;
      for (const std::string& s : strings) {
        if (static_cast<int>(s.size()) != len - 1) continue;
        for (const char c : alphabet) next.push_back(s + c);
      }
      strings.insert(strings.end(), next.begin(), next.end());
    }
    for (const std::string& s : strings) {
      EXPECT_EQ(re.Matches(s), std::regex_search(s, ref)) << "pattern '" << p << "' string '" << s << "'";
    }
  }
}

TEST(ByteRegexTest, StringsNeverTakeQuotesBackslashesOrControlBytes) {
  const ByteRegex re = Re(".*");
  EXPECT_TRUE(re.Matches("any text \xc3\xa9"));
  EXPECT_FALSE(re.Matches("a\"b"));
  EXPECT_FALSE(re.Matches("a\\b"));
  EXPECT_FALSE(re.Matches("a\nb"));
}

TEST(ByteRegexTest, UnsupportedSyntaxIsAnErrorThatSaysWhat) {
  for (const auto& [p, why] : std::vector<std::pair<const char*, const char*>>{
           {"a(?=b)", "lookaround"}, {"a*+", "possessive"}, {"(a", "unclosed '('"}, {"a)", "unmatched ')'"},
           {"[a", "unclosed '['"}, {"a{2,1}", "fall"}, {"a{100}", "above 64"}, {"\\p{L}", "\\p"},
           {"a^b", "anchors"}, {"*a", "nothing to repeat"}}) {
    const auto re = ByteRegex::Compile(p);
    ASSERT_FALSE(re.ok()) << p;
    EXPECT_NE(re.status().message().find(why), std::string::npos) << re.status();
  }
}

// A request's pattern is bounded in what it can cost: group depth (the parser recurses per
// group), quantifiers stacked on one atom, the NFA its counted repeats expand to, and the work
// of the subset construction. Each is an error, quickly.
TEST(ByteRegexTest, PatternsThatWouldCostTooMuchAreErrors) {
  const std::string deep = std::string(200'000, '(') + "a" + std::string(200'000, ')');
  const std::string stacked = "a" + std::string(100'000, '*');
  for (const auto& [p, why] : std::vector<std::pair<std::string, const char*>>{
           {deep, "nested deeper than 64"}, {stacked, "more than 4 quantifiers"},
           {"((a{64}){64}){64}", "too large"}, {"^(a|b)*a(a|b){12}$", "automaton states"}}) {
    for (const auto use : {ByteRegex::Use::kJsonPattern, ByteRegex::Use::kWholeText}) {
      const auto re = ByteRegex::Compile(p, use);
      ASSERT_FALSE(re.ok()) << p.substr(0, 40);
      EXPECT_NE(re.status().message().find(why), std::string::npos) << re.status().message().substr(0, 200);
    }
  }
  EXPECT_TRUE(ByteRegex::Compile(std::string(64, '(') + "a" + std::string(64, ')')).ok());
  EXPECT_TRUE(ByteRegex::Compile("^(a{64}){4}$").ok());
}

// A whole text (guided_regex) matches from end to end, anchors or not, over any bytes; the
// verdicts agree with std::regex_match.
TEST(ByteRegexTest, WholeTextsMatchFromEndToEnd) {
  const char* patterns[] = {"a+b?", "^ab|c$", "(ab|a)*", "[a-c]{2,3}", "[^b]+", "\"[a-c]*\"", "a\\nb|.c"};
  const std::string alphabet = "abc\"\n";
  for (const char* p : patterns) {
    const auto re = ByteRegex::Compile(p, ByteRegex::Use::kWholeText);
    ASSERT_TRUE(re.ok()) << p << ": " << re.status();
    std::string ecma = p;  // std::regex_match anchors by itself
    if (ecma.front() == '^') ecma = "(?:" + ecma.substr(1, ecma.size() - 2) + ")";
    const std::regex ref(ecma, std::regex::ECMAScript);
    std::vector<std::string> strings = {""};
    for (size_t at = 0; at < strings.size() && strings.size() < 4000; ++at) {
      if (strings[at].size() < 4) {
        for (const char c : alphabet) strings.push_back(strings[at] + c);
      }
    }
    for (const std::string& s : strings) {
      EXPECT_EQ(re->Matches(s), std::regex_match(s, ref)) << "pattern '" << p << "' string '" << s << "'";
    }
  }
}

// Every state the DFA can reach can still finish a match, and Final() says when nothing can
// follow; a regex that no text (or no JSON string) matches is an error.
TEST(ByteRegexTest, DeadEndsArePrunedAndFinalStatesKnown) {
  const auto json = ByteRegex::Compile("^(a\"|b)c$");  // a JSON string never holds the quote
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->Next(json->start(), 'a'), ByteRegex::kDead);
  EXPECT_TRUE(json->Matches("bc"));
  EXPECT_FALSE(ByteRegex::Compile("^a\"$").ok());
  EXPECT_TRUE(ByteRegex::Compile("^a\"$", ByteRegex::Use::kWholeText).ok());

  const auto re = ByteRegex::Compile("(yes|no)!?", ByteRegex::Use::kWholeText);
  ASSERT_TRUE(re.ok()) << re.status();
  uint16_t s = re->start();
  for (const char c : std::string("no")) s = re->Next(s, static_cast<uint8_t>(c));
  EXPECT_TRUE(re->Accepting(s));
  EXPECT_FALSE(re->Final(s));  // '!' may follow
  s = re->Next(s, '!');
  EXPECT_TRUE(re->Accepting(s) && re->Final(s));
}

}  // namespace
}  // namespace peng
