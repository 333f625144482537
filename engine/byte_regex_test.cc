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
                            "^(a|b)c{0,2}$", "^\\d-\\d$", "^[0-9a]{1,}x?$", "^a.c$", "^(?:ab){2}$", ""};
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
           {"a(?=b)", "lookaround"}, {"a*?", "lazy"}, {"(a", "unclosed '('"}, {"a)", "unmatched ')'"},
           {"[a", "unclosed '['"}, {"a{2,1}", "fall"}, {"a{100}", "above 64"}, {"\\p{L}", "\\p"},
           {"a^b", "anchors"}, {"*a", "nothing to repeat"}}) {
    const auto re = ByteRegex::Compile(p);
    ASSERT_FALSE(re.ok()) << p;
    EXPECT_NE(re.status().message().find(why), std::string::npos) << re.status();
  }
}

}  // namespace
}  // namespace peng
