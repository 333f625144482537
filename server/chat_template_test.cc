// Chat template interpreter tests. The real-template and snippet cases replay renderings made
// by jinja2 (tests/fixtures/render_chat_templates.py) and compare byte for byte; the rest pin
// error positions, limits and the Peng-specific API behaviour.
#include "server/chat_template.h"

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "engine/gguf.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peng {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

ChatMessage Msg(std::string role, std::string content) {
  ChatMessage m;
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}

std::string SourceDir() {
  const char* root = std::getenv("PENG_SOURCE_DIR");
  return root ? root : ".";
}

std::string DataDir() { return SourceDir() + "/server/testdata/chat_templates"; }

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string MustRead(const std::string& path) {
  std::optional<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.has_value()) << "missing " << path;
  return text.value_or("");
}

// Must match case_name() in tests/fixtures/render_chat_templates.py.
std::string CaseName(const Json& c) {
  if (c.contains("name")) return c["name"].get<std::string>();
  std::string name = c["conversation"].get<std::string>();
  if (c.value("with_tools", false)) name += "_tools";
  if (c.contains("extra")) {
    for (auto it = c["extra"].begin(); it != c["extra"].end(); ++it) name += "_" + it.key();
  }
  if (!c["add_generation_prompt"].get<bool>()) name += "_noprompt";
  return name;
}

std::vector<ChatMessage> Messages(const Json& conversation) {
  std::vector<ChatMessage> out;
  for (const Json& m : conversation) {
    ChatMessage msg;
    msg.role = m["role"].get<std::string>();
    msg.content = m.value("content", "");
    msg.name = m.value("name", "");
    if (m.contains("tool_calls")) msg.tool_calls = m["tool_calls"];
    msg.tool_call_id = m.value("tool_call_id", "");
    out.push_back(std::move(msg));
  }
  return out;
}

ChatTemplate MustParse(const std::string& source,
                       ChatTemplateOptions options = ChatTemplateOptions()) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source, std::move(options));
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return *ChatTemplate::Parse("");
  return *std::move(t);
}

// Renders `source` with variables only (no messages needed).
absl::StatusOr<std::string> RenderVars(const std::string& source, const Json& vars = Json::object(),
                                       ChatTemplateOptions options = ChatTemplateOptions()) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source, std::move(options));
  if (!t.ok()) return t.status();
  return t->RenderWithVariables(vars);
}

// ------------------------------------------------------------- real templates

void CheckTemplateCases(const std::string& template_name) {
  const Json spec = Json::parse(MustRead(DataDir() + "/cases.json"));
  ChatTemplate tpl = MustParse(MustRead(DataDir() + "/" + template_name + ".jinja"));
  int checked = 0;
  for (const Json& c : spec["cases"]) {
    if (c["template"] != template_name) continue;
    const std::string name = template_name + "." + CaseName(c);
    SCOPED_TRACE(name);
    Json extra = c.value("extra", Json::object());
    if (c.value("with_tools", false)) extra["tools"] = spec["tools"];
    absl::StatusOr<std::string> out =
        tpl.Render(Messages(spec["conversations"][c["conversation"].get<std::string>()]),
                   c["add_generation_prompt"].get<bool>(), "<BOS>", "<EOS>", extra);
    const std::string expected_dir = DataDir() + "/expected/";
    if (std::optional<std::string> error = ReadFile(expected_dir + name + ".error.txt")) {
      ASSERT_FALSE(out.ok()) << "expected error: " << *error;
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(out.status().message(), *error);  // raise_exception messages pass verbatim
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, MustRead(expected_dir + name + ".txt"));
    }
    ++checked;
  }
  EXPECT_GE(checked, 4) << "too few cases for " << template_name;
}

TEST(ChatTemplateRealTest, SmolLM2) { CheckTemplateCases("smollm2"); }
TEST(ChatTemplateRealTest, Llama3) { CheckTemplateCases("llama3"); }
TEST(ChatTemplateRealTest, Llama31WithTools) { CheckTemplateCases("llama3.1"); }
TEST(ChatTemplateRealTest, Qwen25WithTools) { CheckTemplateCases("qwen2.5"); }
TEST(ChatTemplateRealTest, MistralV01) { CheckTemplateCases("mistral_v0.1"); }
TEST(ChatTemplateRealTest, MistralV03WithTools) { CheckTemplateCases("mistral_v0.3"); }

TEST(ChatTemplateRealTest, SmolLM2FromGgufMatchesTestdata) {
  const std::string path = SourceDir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(path)) GTEST_SKIP() << "model not present: " << path;
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  absl::StatusOr<std::string> source = (*gguf)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(*source, MustRead(DataDir() + "/smollm2.jinja"));
  ChatTemplate tpl = MustParse(*source);
  absl::StatusOr<std::string> out = tpl.Render({Msg("user", "Hi")}, true, "", "<|im_end|>");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

// ------------------------------------------------------------- jinja2 parity snippets

TEST(ChatTemplateSnippetTest, MatchesJinja2) {
  const Json snippets = Json::parse(MustRead(DataDir() + "/expected/snippets.json"));
  ASSERT_GE(snippets.size(), 30u);
  for (const Json& s : snippets) {
    const std::string name = s["name"].get<std::string>();
    SCOPED_TRACE(name);
    absl::StatusOr<std::string> out = RenderVars(s["template"].get<std::string>(), s["vars"]);
    if (s.contains("error")) {
      ASSERT_FALSE(out.ok()) << "jinja2 failed with: " << s["error"] << "; Peng gave: " << *out;
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
      // Peng prefixes runtime errors with line:column; the gist must match jinja2's.
      EXPECT_THAT(std::string(out.status().message()),
                  HasSubstr(s["error"].get<std::string>().substr(0, 20)));
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, s["output"].get<std::string>());
    }
  }
}

// ------------------------------------------------------------- errors with positions

TEST(ChatTemplateErrorTest, SyntaxErrorsNameLineAndColumn) {
  struct Case {
    const char* source;
    const char* position;
    const char* what;
  };
  const Case cases[] = {
      {"Hello\n{% if x %}\n{{ 1 + }}\n{% endif %}", "3:8", "expected an expression"},
      {"{% for x in y %}never closed", "1:1", "'endfor'"},
      {"ok\n  {% frobnicate %}", "2:6", "unknown tag 'frobnicate'"},
      {"{{ 'abc }}", "1:4", "unterminated string"},
      {"{{ a $ b }}", "1:6", "unexpected char '$'"},
      {"{% endif %}", "1:4", "unexpected 'endif'"},
      {"{# never closed", "1:1", "missing end of comment"},
      {"{{ a ) }}", "1:6", "unexpected ')'"},
      {"{% if x %}{% else %}{% elif y %}{% endif %}", "1:24",
       "unexpected 'elif'; the innermost open block needs 'endif'"},
      {"{% break %}", "1:1", "outside of a loop"},
      {"{{ x", "1:1", "expected '}}'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.source);
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(c.source);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()),
                HasSubstr(absl::StrCat("syntax error at ", c.position, ":")));
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.what));
  }
}

TEST(ChatTemplateErrorTest, RuntimeErrorsNameLineAndColumn) {
  absl::StatusOr<std::string> out = RenderVars("line one\n  {{ 'a' + 1 }}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "2:10: can only concatenate str (not \"int\") to str");

  out = RenderVars("{% for m in messages %}{{ m.content.upper(1, 2) }}{% endfor %}",
                   {{"messages", {{{"content", "x"}}}}});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "1:42: str.upper() takes no arguments (2 given)");

  out = RenderVars("{{ x | frobnicate }}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "1:8: unknown filter 'frobnicate'");

  out = RenderVars("{{ x is frobnicated }}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "1:6: unknown test 'frobnicated'");

  out = RenderVars("{{ 'abc'.nomethod() }}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "1:18: 'str object' has no attribute 'nomethod'");
}

TEST(ChatTemplateErrorTest, RaiseExceptionMessageIsVerbatim) {
  ChatTemplate t = MustParse(MustRead(DataDir() + "/mistral_v0.1.jinja"));
  absl::StatusOr<std::string> out =
      t.Render({Msg("system", "s"), Msg("user", "u")}, true, "<s>", "</s>");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(),
            "Conversation roles must alternate user/assistant/user/assistant/...");
}

// ------------------------------------------------------------- limits

ChatTemplateOptions SmallLimits() {
  ChatTemplateOptions o;
  o.limits.max_output_bytes = 4096;
  o.limits.max_loop_iterations = 10000;
  o.limits.max_steps = 5000000;
  o.limits.max_call_depth = 16;
  o.limits.max_nesting = 64;
  return o;
}

TEST(ChatTemplateLimitTest, HostileTemplatesFailWithClearErrors) {
  struct Case {
    std::string source;
    const char* what;
  };
  const std::string deep_parens = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  std::string long_chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) long_chain += " + 1";
  long_chain += " }}";
  std::string deep_blocks;
  for (int i = 0; i < 5000; ++i) deep_blocks += "{% if true %}";
  std::string exploding = "{% set a = [1,2,3,4,5,6,7,8,9,10] %}";
  for (char c = 'b'; c <= 'j'; ++c) {
    const char p = c - 1;
    exploding += absl::StrCat("{% set ", std::string(1, c), " = [", std::string(1, p), ",",
                              std::string(1, p), ",", std::string(1, p), ",", std::string(1, p),
                              ",", std::string(1, p), ",", std::string(1, p), ",",
                              std::string(1, p), ",", std::string(1, p), ",", std::string(1, p),
                              ",", std::string(1, p), "] %}");
  }
  const Case cases[] = {
      {"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
       "loop iterations"},
      {"{% for i in range(9000) %}xxxxxxxx{% endfor %}", "output exceeds the limit of 4096"},
      {"{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
       "{% endfor %}",
       "larger than the limit"},
      {"{{ 'a' * 1000000000000 }}", "larger than the limit"},
      {"{{ ([1] * 100000000) | length }}", "larger than the limit"},
      {"{{ 'a' | replace('', 'xxxxxxxxxxxxxxxxxxxxxxxxxx') * 1000 }}", "larger than the limit"},
      {"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed deeper than 16"},
      {deep_parens, "nested deeper than"},
      {long_chain, "nested deeper than"},
      {deep_blocks, "nested deeper than"},
      {exploding + "{{ j }}", "larger than the limit"},
      {exploding + "{{ j | tojson }}", "tojson: result passes"},
      {"{{ 9223372036854775807 + 1 }}", "integer overflow"},
      {"{{ 2 ** 64 }}", "integer overflow"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.source.substr(0, 80));
    absl::StatusOr<std::string> out = RenderVars(c.source, Json::object(), SmallLimits());
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(out.status().message()), HasSubstr(c.what));
  }
}

TEST(ChatTemplateLimitTest, SelfReferencingNamespaceRendersAndIsFreed) {
  // namespaces are the only mutable values; the renderer empties them when done, so this
  // cycle does not leak (checked under ASan).
  absl::StatusOr<std::string> out = RenderVars(
      "{% set ns = namespace(n=1) %}{% set ns.self = ns %}{% set d = {'k': ns} %}"
      "{% set ns.items = d.items %}{{ ns.self.self.n }}{{ ns.items() | length }}");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "11");
}

TEST(ChatTemplateLimitTest, EvaluationBudgetStopsLongLoops) {
  ChatTemplateOptions options;
  options.limits.max_steps = 200000;
  absl::StatusOr<std::string> out = RenderVars(
      "{% for i in range(50000) %}{% if i > 5 and i < 3 or i == -1 %}{% endif %}{% endfor %}",
      Json::object(), options);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()),
              HasSubstr("exceeded its budget of 200000 evaluation steps"));
}

TEST(ChatTemplateLimitTest, DefaultLimitsAllowLongConversations) {
  ChatTemplate t = MustParse(MustRead(DataDir() + "/qwen2.5.jinja"));
  std::vector<ChatMessage> messages;
  for (int i = 0; i < 2000; ++i) {
    messages.push_back(Msg(i % 2 == 0 ? "user" : "assistant", std::string(500, 'x')));
  }
  absl::StatusOr<std::string> out = t.Render(messages, true, "", "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_GT(out->size(), 1000000u);
}

// ------------------------------------------------------------- API behaviour

TEST(ChatTemplateApiTest, MessageDictHoldsOnlyPresentOptionalFields) {
  ChatTemplate t = MustParse("{% for m in messages %}{{ m | tojson }}\n{% endfor %}");
  ChatMessage plain{"user", "hi", "", nullptr, ""};
  ChatMessage full{"assistant", "", "bot", Json::parse(R"([{"id": "c1"}])"), ""};
  ChatMessage tool{"tool", "42", "", nullptr, "c1"};
  absl::StatusOr<std::string> out = t.Render({plain, full, tool}, false, "", "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "{\"role\": \"user\", \"content\": \"hi\"}\n"
            "{\"role\": \"assistant\", \"content\": \"\", \"name\": \"bot\", "
            "\"tool_calls\": [{\"id\": \"c1\"}]}\n"
            "{\"role\": \"tool\", \"content\": \"42\", \"tool_call_id\": \"c1\"}\n");
}

TEST(ChatTemplateApiTest, NamedVariablesWinOverExtra) {
  ChatTemplate t = MustParse("{{ bos_token }}|{{ add_generation_prompt }}|{{ custom }}|{{ tools | length }}");
  absl::StatusOr<std::string> out =
      t.Render({}, true, "<s>", "</s>",
               {{"bos_token", "X"}, {"custom", 5}, {"tools", Json::array({1, 2})}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>|True|5|2");
  EXPECT_FALSE(t.Render({}, true, "", "", Json::array()).ok());
}

TEST(ChatTemplateApiTest, StrftimeNowUsesInjectedClock) {
  ChatTemplateOptions options;
  options.time_zone = absl::UTCTimeZone();
  options.now = [] {
    return absl::FromCivil(absl::CivilSecond(2024, 7, 26, 13, 5, 0), absl::UTCTimeZone());
  };
  ChatTemplate t = MustParse("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d') }}",
                             options);
  absl::StatusOr<std::string> out = t.Render({}, false, "", "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "26 Jul 2024|2024-07-26");
}

TEST(ChatTemplateApiTest, GenerationBlockRendersItsBody) {
  // transformers' {% generation %} marks assistant text for masks; it renders as its body.
  ChatTemplate t = MustParse(
      "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}");
  absl::StatusOr<std::string> out = t.Render({Msg("assistant", "a"), Msg("assistant", "b")}, false, "", "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "[a][b]");
}

TEST(ChatTemplateApiTest, UndefinedAttributeChainsStayUndefined) {
  absl::StatusOr<std::string> out =
      RenderVars("[{{ a.b.c }}]{{ a.b.c is defined }}{{ x.y | default('d') }}", {{"x", 1}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "[]Falsed");
}

TEST(ChatTemplateApiTest, ConcurrentRendersShareOneParsedTemplate) {
  const ChatTemplate t = MustParse(MustRead(DataDir() + "/llama3.1.jinja"));
  const std::vector<ChatMessage> messages = {Msg("system", "sys"), Msg("user", "hello")};
  absl::StatusOr<std::string> reference = t.Render(messages, true, "<s>", "</s>");
  ASSERT_TRUE(reference.ok()) << reference.status();
  std::vector<std::string> results(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 50; ++k) {
        absl::StatusOr<std::string> out = t.Render(messages, true, "<s>", "</s>");
        results[i] = out.ok() ? *out : std::string(out.status().message());
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (const std::string& r : results) EXPECT_EQ(r, *reference);
}

TEST(ChatTemplateApiTest, SourceIsNormalized) {
  ChatTemplate t = MustParse("a\r\nb\n");
  EXPECT_EQ(t.source(), "a\nb");
}

}  // namespace
}  // namespace peng
