// Stop strings and detokenization on SmolLM2's real tokenizer (skipped without the model).
#include "scheduler/stop_checker.h"


#include "engine/testing/test_model.h"
#include "gtest/gtest.h"

namespace peng {
namespace {

class StopCheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Model* model = testing::SharedSmolLM2();
    tok_ = model ? model->tokenizer.get() : nullptr;
    if (tok_ == nullptr) GTEST_SKIP() << "SmolLM2 not in models/";
  }
  // Feeds the tokens of `text` and returns (emitted text, finish reason, tokens consumed).
  std::tuple<std::string, FinishReason, int> Run(const std::string& text, const StopConditions& stop) {
    StopChecker checker(tok_, stop);
    std::string out;
    int n = 0;
    for (int32_t id : tok_->Encode(text, false, false)) {
      ++n;
      StopChecker::Step s = checker.Push(id, n);
      out += s.text;
      if (s.finish != FinishReason::kNone) return {out, s.finish, n};
    }
    return {out, FinishReason::kNone, n};
  }
  const Tokenizer* tok_ = nullptr;
};

TEST_F(StopCheckerTest, StopStringIsNeverEmittedEvenAcrossTokens) {
  StopConditions stop;
  stop.max_tokens = 100;
  stop.stop = {"END OF STORY"};
  auto [text, finish, n] = Run("The dragon slept. END OF STORY and more text", stop);
  EXPECT_EQ(text, "The dragon slept. ");
  EXPECT_EQ(finish, FinishReason::kStop);
}

TEST_F(StopCheckerTest, IncludeStopStringWhenAsked) {
  StopConditions stop;
  stop.max_tokens = 100;
  stop.stop = {"\n\n"};
  stop.include_stop_str_in_output = true;
  auto [text, finish, n] = Run("line one\n\nline two", stop);
  EXPECT_EQ(text, "line one\n\n");
  EXPECT_EQ(finish, FinishReason::kStop);
}

TEST_F(StopCheckerTest, HeldBackPrefixIsReleasedWhenItDoesNotMatch) {
  StopConditions stop;
  stop.max_tokens = 100;
  stop.stop = {"STOPNOW"};
  auto [text, finish, n] = Run("a STOP sign", stop);
  EXPECT_EQ(text, "a STOP sign");  // no match: everything comes out (the last bit at the end)
  EXPECT_EQ(finish, FinishReason::kNone);
}

TEST_F(StopCheckerTest, MaxTokensFlushesEverything) {
  StopConditions stop;
  stop.max_tokens = 3;
  stop.stop = {"zzz"};
  auto [text, finish, n] = Run("Hello there my friend", stop);
  EXPECT_EQ(finish, FinishReason::kLength);
  EXPECT_EQ(n, 3);
  EXPECT_EQ(text, tok_->Decode(tok_->Encode("Hello there my friend", false, false), true).substr(0, text.size()));
}

TEST_F(StopCheckerTest, EndOfGenerationStopsUnlessIgnored) {
  StopConditions stop;
  stop.max_tokens = 100;
  const int32_t im_end = *tok_->FindToken("<|im_end|>");
  StopChecker a(tok_, stop);
  EXPECT_EQ(a.Push(im_end, 1).finish, FinishReason::kStop);
  stop.ignore_eos = true;
  StopChecker b(tok_, stop);
  EXPECT_EQ(b.Push(im_end, 1).finish, FinishReason::kNone);
}

TEST_F(StopCheckerTest, MultiByteCharactersAreNeverSplit) {
  StopConditions stop;
  stop.max_tokens = 100;
  StopChecker checker(tok_, stop);
  std::string out;
  int n = 0;
  for (int32_t id : tok_->Encode("héllo 🐉 世界", false, false)) {
    const std::string piece = checker.Push(id, ++n).text;
    // Every emitted piece is valid UTF-8 on its own.
    for (size_t i = 0; i < piece.size();) {
      const unsigned char c = piece[i];
      const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
      ASSERT_LE(i + len, piece.size()) << "split character in piece";
      i += len;
    }
    out += piece;
  }
  EXPECT_EQ(out, "héllo 🐉 世界");
}

// min_tokens: a stop string ends the output only from the min_tokens-th token on (earlier
// matches are text), and a stop token before then is text too.
TEST_F(StopCheckerTest, MinTokensHoldsStopsBack) {
  StopConditions stop;
  stop.max_tokens = 100;
  stop.stop = {"END"};
  stop.min_tokens = 4;
  const auto [text, finish, n] = Run("A END B END C", stop);
  EXPECT_EQ(finish, FinishReason::kStop);
  EXPECT_GE(n, 4);
  EXPECT_EQ(text.substr(0, 5), "A END");
  const std::vector<int32_t> ids = tok_->Encode("A END", false, false);
  ASSERT_LT(static_cast<int>(ids.size()), 4);  // the first END lies within the first 4 tokens
  stop.stop.clear();
  stop.stop_token_ids = {ids[0]};
  StopChecker checker(tok_, stop);
  EXPECT_EQ(checker.Push(ids[0], 1).finish, FinishReason::kNone);  // the 1st token: text
  EXPECT_EQ(checker.Push(ids[0], 5).finish, FinishReason::kStop);  // past min_tokens: a stop
}

}  // namespace
}  // namespace peng
