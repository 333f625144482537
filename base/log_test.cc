#include "base/log.h"

#include <string>

#include "gtest/gtest.h"

namespace peng {
namespace {

// Client text in a message cannot start a log line of its own or flood the log.
TEST(LogTest, ControlCharactersAreEscapedAndLongMessagesCut) {
  EXPECT_EQ(LogSafe("request_id=a\nFAKE 500\r\tb\x01\x7f"), "request_id=a\\nFAKE 500\\r\\tb\\x01\\x7f");
  EXPECT_EQ(LogSafe("héllo \"quoted\""), "héllo \"quoted\"");  // UTF-8 and quotes untouched
  const std::string huge(100000, 'x');
  const std::string cut = LogSafe(huge);
  EXPECT_EQ(cut, std::string(kMaxLogMessageBytes, 'x') + "... (95904 more bytes)");
}

}  // namespace
}  // namespace peng
