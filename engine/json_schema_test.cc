#include "engine/json_schema.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdlib>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "engine/json_constraint.h"
#include "engine/testing/grammar_walk.h"

namespace peng {
namespace {

using OJson = nlohmann::ordered_json;

// A schema as pydantic writes one: a nested model through $defs, an Optional (anyOf with null),
// an enum, a list of integers with bounds, and a boolean.
const char* kPerson = R"({
  "$defs": {"Address": {"properties": {"city": {"title": "City", "type": "string"},
                                       "zip": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
                        "required": ["city", "zip"], "title": "Address", "type": "object"}},
  "properties": {"name": {"type": "string"},
                 "age": {"type": "integer"},
                 "colour": {"enum": ["red", "green"]},
                 "scores": {"items": {"type": "integer"}, "maxItems": 3, "minItems": 1, "type": "array"},
                 "address": {"$ref": "#/$defs/Address"},
                 "member": {"type": "boolean", "default": false}},
  "required": ["name", "age", "colour", "scores", "address"],
  "title": "Person", "type": "object"})";

std::shared_ptr<const JsonSchema> Compile(const char* text) {
  auto s = JsonSchema::Compile(OJson::parse(text));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : nullptr;
}

bool Accepts(const JsonSchema& schema, std::string_view doc) {
  SchemaGrammar g(&schema);
  return g.FeedAll(doc) && g.Complete();
}

TEST(JsonSchemaTest, AcceptsDocumentsOfTheSchema) {
  const auto schema = Compile(kPerson);
  for (const char* doc : {
           R"({"name": "Ann", "age": 30, "colour": "red", "scores": [1, 2], "address": {"city": "Oslo", "zip": 150}})",
           R"({"name":"B\"o\\b","age":-1,"colour":"green","scores":[7],"address":{"city":"","zip":null},"member":true})",
           "{\n  \"name\": \"\xc3\xa9\",\n  \"age\": 0,\n  \"colour\": \"red\",\n  \"scores\": [ 1 , 2 , 3 ],\n"
           "  \"address\": {\"city\": \"x\", \"zip\": 10}\n}\n"}) {
    EXPECT_TRUE(Accepts(*schema, doc)) << doc;
  }
}

TEST(JsonSchemaTest, RefusesWhatTheSchemaForbids) {
  const auto schema = Compile(kPerson);
  for (const char* doc : {
           R"({"age": 30, "name": "Ann"})",  // out of declared order / missing required
           R"({"name": "Ann", "age": 30.5})",  // an integer with a fraction
           R"({"name": "Ann", "age": 1e3})",
           R"({"name": "Ann", "age": "30"})",
           R"({"name": "Ann", "age": 30, "colour": "blue"})",
           R"({"name": "Ann", "age": 30, "colour": "red", "scores": []})",  // minItems 1
           R"({"name": "Ann", "age": 30, "colour": "red", "scores": [1, 2, 3, 4]})",  // maxItems 3
           R"({"name": "Ann", "age": 30, "colour": "red", "scores": [1], "address": {"city": "x"}})",  // zip required
           R"({"name": "Ann", "age": 30, "colour": "red", "scores": [1], "address": {"city": "x", "zip": 1}, "extra": 1})",
           R"({"name": "Ann", "age": 30, "colour": "red", "scores": [1], "address": {"city": "x", "zip": 1}})x",
           R"([1])"}) {
    EXPECT_FALSE(Accepts(*schema, doc)) << doc;
  }
}

TEST(JsonSchemaTest, OptionalPropertiesMayBeSkippedRequiredOnesNot) {
  const auto schema = Compile(R"({"type": "object", "properties": {"a": {"type": "integer"},
      "b": {"type": "string"}, "c": {"type": "boolean"}}, "required": ["c"]})");
  EXPECT_TRUE(Accepts(*schema, R"({"c": true})"));
  EXPECT_TRUE(Accepts(*schema, R"({"b": "x", "c": false})"));
  EXPECT_TRUE(Accepts(*schema, R"({"a": 1, "b": "x", "c": true})"));
  EXPECT_FALSE(Accepts(*schema, R"({"a": 1})"));
  EXPECT_FALSE(Accepts(*schema, R"({})"));
  // Keys that share a prefix are told apart byte by byte.
  const auto prefixes = Compile(R"({"type": "object", "properties": {"ab": {"type": "integer"}, "abc": {"type": "integer"}}})");
  EXPECT_TRUE(Accepts(*prefixes, R"({"abc": 1})"));
  EXPECT_TRUE(Accepts(*prefixes, R"({"ab": 1, "abc": 2})"));
  EXPECT_FALSE(Accepts(*prefixes, R"({"abc": 1, "ab": 2})"));
}

TEST(JsonSchemaTest, FreeFormValuesAndRecursion) {
  const auto schema = Compile(R"({"type": "object", "properties": {"any": {}, "tags": {"type": "array"},
      "tree": {"$ref": "#/$defs/Node"}},
      "$defs": {"Node": {"type": "object", "properties": {"v": {"type": "number"},
                 "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}, "required": ["v"]}}})");
  EXPECT_TRUE(Accepts(*schema, R"({"any": [1, {"x": null}], "tags": ["a", 2], "tree": {"v": 1.5, "kids": [{"v": -2e-3}]}})"));
  EXPECT_TRUE(Accepts(*schema, R"({"any": 12, "tree": {"v": 0}})"));
  EXPECT_FALSE(Accepts(*schema, R"({"tree": {"kids": []}})"));
}

TEST(JsonSchemaTest, AdditionalPropertiesWithoutPropertiesIsAMap) {
  // pydantic's dict[str, int] and dict[str, Address].
  const auto schema = Compile(R"({"type": "object", "properties": {
      "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
      "places": {"additionalProperties": {"$ref": "#/$defs/P"}, "type": "object"}},
      "required": ["counts", "places"],
      "$defs": {"P": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}}})");
  EXPECT_TRUE(Accepts(*schema, R"({"counts": {}, "places": {}})"));
  EXPECT_TRUE(Accepts(*schema, R"({"counts": {"a b": 1, "\u00e9\"": -2}, "places": {"home": {"x": 1.5}}})"));
  EXPECT_FALSE(Accepts(*schema, R"({"counts": {"a": 1.5}, "places": {}})"));
  EXPECT_FALSE(Accepts(*schema, R"({"counts": {"a": 1,}, "places": {}})"));
  EXPECT_FALSE(Accepts(*schema, R"({"counts": {"a": 1}, "places": {"home": {}}})"));
  // With declared properties the output holds those alone (valid whatever additionalProperties says).
  const auto declared = Compile(R"({"type": "object", "properties": {"a": {"type": "integer"}},
      "additionalProperties": {"type": "string"}})");
  EXPECT_TRUE(Accepts(*declared, R"({"a": 1})"));
  EXPECT_FALSE(Accepts(*declared, R"({"b": "x"})"));
}

TEST(JsonSchemaTest, PatternsAndFormats) {
  const auto schema = Compile(R"({"type": "object", "properties": {
      "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
      "when": {"type": "string", "format": "date"},
      "at": {"type": "string", "format": "date-time"},
      "id": {"type": "string", "format": "uuid"},
      "note": {"type": "string", "format": "hostname"}},
      "required": ["code", "when", "at", "id", "note"]})");
  const std::string tail = R"(, "id": "123e4567-e89b-12d3-a456-426614174000", "note": "any \"text\""})";
  EXPECT_TRUE(Accepts(*schema, R"({"code": "AB-123", "when": "2024-02-28", "at": "2024-04-30T23:59:59.5+01:00")" + tail));
  EXPECT_TRUE(Accepts(*schema, R"({"code": "ZZ-000", "when": "1999-12-31", "at": "1999-12-31T00:00:00Z")" + tail));
  for (const char* bad : {R"({"code": "AB-12", )", R"({"code": "ab-123", )", R"({"code": "AB-123", "when": "2024-13-01", )",
                          R"({"code": "AB-123", "when": "2024-01-32", )", R"({"code": "AB-123", "when": "24-01-01", )",
                          R"({"code": "AB-123", "when": "2023-02-30", )", R"({"code": "AB-123", "when": "2023-04-31", )",
                          R"({"code": "AB-123", "when": "0000-01-01", )",
                          R"({"code": "AB-123", "when": "2024-01-01", "at": "2024-01-01 10:00:00", )",
                          R"({"code": "AB-123", "when": "2024-01-01", "at": "2024-01-01T24:00:00", )"}) {
    SchemaGrammar g(schema.get());
    EXPECT_FALSE(g.FeedAll(bad)) << bad;
  }
  // A pattern string takes no escapes (its bytes are the value).
  SchemaGrammar g(schema.get());
  EXPECT_FALSE(g.FeedAll(R"({"code": "A\u0042-123")"));
  // Durations (pydantic's timedelta): ISO 8601, each part present with at least one field.
  const auto durations = Compile(R"({"type": "object", "properties": {"d": {"type": "string", "format": "duration"}}})");
  for (const char* ok : {"P1Y", "P2M3D", "P1W", "PT4H", "PT5M6.5S", "P1DT2H", "-P1D", "P1Y2M3W4DT5H6M7.123456S"}) {
    EXPECT_TRUE(Accepts(*durations, std::string(R"({"d": ")") + ok + "\"}")) << ok;
  }
  for (const char* bad : {"P", "PT", "P1DT", "1D", "P1H", "PT1D", "P1.5D", "P1S", "Durin's Palace"}) {
    EXPECT_FALSE(Accepts(*durations, std::string(R"({"d": ")") + bad + "\"}")) << bad;
  }
}

TEST(JsonSchemaTest, StringLengthsCountCharacters) {
  const auto schema = Compile(R"({"type": "object", "properties": {
      "s": {"type": "string", "minLength": 2, "maxLength": 3},
      "p": {"type": "string", "pattern": "^[a-z\u00e9]*$", "maxLength": 2},
      "url": {"type": "string", "format": "uri", "minLength": 1, "maxLength": 2083}},
      "required": ["s", "p", "url"]})");
  const std::string tail = R"(, "url": "https://example.com/a?b=1"})";
  for (const char* ok : {R"({"s": "ab", "p": "")", R"({"s": "abc", "p": "zz")",
                         "{\"s\": \"\xc3\xa9\xc3\xa9\", \"p\": \"\xc3\xa9" "a\"",  // two-byte characters count one each
                         R"({"s": "a\n", "p": "a")"}) {                            // an escape counts one
    EXPECT_TRUE(Accepts(*schema, ok + tail)) << ok;
  }
  for (const char* bad : {R"({"s": "a", )", R"({"s": "abcd", )", R"({"s": "ab", "p": "abc", )",
                          R"({"s": "ab", "p": "a", "url": "example.com"})"}) {
    EXPECT_FALSE(Accepts(*schema, bad)) << bad;
  }
}

TEST(JsonSchemaTest, IntegerBoundsAdmitExactlyTheIntegersBetween) {
  const std::pair<const char*, std::pair<int, int>> cases[] = {
      {R"({"minimum": 0})", {0, 1000}},  // 1000: the test's upper end
      {R"({"exclusiveMinimum": 0, "maximum": 12})", {1, 12}},
      {R"({"minimum": -10, "maximum": -3})", {-10, -3}},
      {R"({"minimum": -7.5, "exclusiveMaximum": 20})", {-7, 19}},
      {R"({"maximum": 5, "exclusiveMaximum": true, "minimum": 5, "exclusiveMinimum": false})", {5, 4}},
  };
  for (const auto& [bounds, range] : cases) {
    auto props = OJson::parse(bounds);
    props["type"] = "integer";
    const OJson root = {{"type", "object"}, {"properties", {{"n", props}}}, {"required", {"n"}}};
    const auto compiled = JsonSchema::Compile(root);
    if (range.first > range.second) {  // no integer: an error
      EXPECT_FALSE(compiled.ok()) << bounds;
      continue;
    }
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    for (int v = -120; v <= 120; ++v) {
      const std::string doc = "{\"n\": " + std::to_string(v) + "}";
      const bool inside = v >= range.first && v <= range.second;
      EXPECT_EQ(Accepts(**compiled, doc), inside) << bounds << " " << v;
    }
    EXPECT_FALSE(Accepts(**compiled, R"({"n": 07})"));
    EXPECT_FALSE(Accepts(**compiled, R"({"n": 5.0})"));
  }
}

// multipleOf on integers (and whole multipleOf on numbers, written as integers): exactly the
// multiples within the bounds; every prefix the grammar takes still completes to one. Bounds
// beyond int64 hold the integer within int64.
TEST(JsonSchemaTest, MultipleOfAdmitsExactlyTheMultiplesBetween) {
  struct Case {
    const char* schema;
    int lo, hi, k;
  };
  const Case cases[] = {
      {R"({"type": "integer", "multipleOf": 5})", -120, 120, 5},
      {R"({"type": "integer", "multipleOf": 7, "minimum": -20, "exclusiveMaximum": 35})", -20, 34, 7},
      {R"({"type": "number", "multipleOf": 2.0, "minimum": 0.5, "maximum": 9.5})", 1, 9, 2},
      {R"({"type": "integer", "multipleOf": 1, "minimum": -3})", -3, 120, 1},
      {R"({"type": "integer", "multipleOf": 25, "minimum": 1e30})", 0, -1, 1},  // nothing in int64: an error
      {R"({"type": "integer", "multipleOf": 40, "minimum": 1, "maximum": 39})", 0, -1, 1},
      {R"({"type": "integer", "minimum": -1e30, "maximum": 1e30})", -120, 120, 1},
  };
  for (const Case& c : cases) {
    const OJson root = {{"type", "object"}, {"properties", {{"n", OJson::parse(c.schema)}}}, {"required", {"n"}}};
    const auto compiled = JsonSchema::Compile(root);
    if (c.lo > c.hi) {
      EXPECT_FALSE(compiled.ok()) << c.schema;
      continue;
    }
    ASSERT_TRUE(compiled.ok()) << c.schema << ": " << compiled.status();
    for (int v = -120; v <= 120; ++v) {
      const bool inside = v >= c.lo && v <= c.hi && v % c.k == 0;
      EXPECT_EQ(Accepts(**compiled, "{\"n\": " + std::to_string(v) + "}"), inside) << c.schema << " " << v;
      // A prefix it takes completes: digits go on until the value is a multiple in range.
      SchemaGrammar g(compiled->get());
      if (!g.FeedAll("{\"n\": " + std::to_string(v))) continue;
      std::string rest = "}";
      bool done = g.FeedAll(rest);
      for (int d = 0; !done && d < 10; ++d) {
        for (char digit = '0'; digit <= '9' && !done; ++digit) {
          SchemaGrammar h = g;
          if (h.Feed(static_cast<uint8_t>(digit))) {
            g = h;
            done = g.FeedAll("}");
            break;
          }
        }
      }
      EXPECT_TRUE(done) << c.schema << ": stuck after " << v;
    }
  }
  EXPECT_TRUE(Accepts(*Compile(R"({"type": "object", "properties": {"n": {"type": "integer", "maximum": 1e30}}})"),
                      R"({"n": 9223372036854775807})"));
  EXPECT_FALSE(Accepts(*Compile(R"({"type": "object", "properties": {"n": {"type": "integer", "maximum": 1e30}}})"),
                       R"({"n": 9223372036854775808})"));
  for (const char* bad : {R"({"type": "integer", "multipleOf": 2.5})", R"({"type": "number", "multipleOf": 0.01})",
                          R"({"type": "integer", "multipleOf": 0})", R"({"type": "integer", "multipleOf": "5"})"}) {
    const OJson root = {{"type", "object"}, {"properties", {{"n", OJson::parse(bad)}}}};
    const auto s = JsonSchema::Compile(root);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.status().message().find("multipleOf"), std::string::npos) << s.status();
  }
}

// Every string of up to 5 characters over "-0.159" (and a few longer ones) is accepted exactly
// when it is a JSON number without exponent whose double (Python's float) is within the bounds;
// and every prefix the grammar takes can still be completed to an accepted number.
TEST(JsonSchemaTest, NumberBoundsAdmitExactlyTheNumbersBetween) {
  struct Case {
    const char* bounds;
    double lo, hi;
    bool lo_open, hi_open;
  };
  const Case cases[] = {
      {R"({"minimum": 0, "maximum": 1})", 0, 1, false, false},
      {R"({"exclusiveMinimum": 0, "exclusiveMaximum": 1})", 0, 1, true, true},
      {R"({"minimum": -1.5})", -1.5, HUGE_VAL, false, false},
      {R"({"maximum": -0.5, "minimum": -91})", -91, -0.5, false, false},
      {R"({"minimum": 0.15, "maximum": 5, "exclusiveMaximum": true})", 0.15, 5, false, true},
      {R"({"minimum": 9.5, "maximum": 9.5})", 9.5, 9.5, false, false},
  };
  const std::regex json_number(R"(-?(0|[1-9][0-9]*)(\.[0-9]+)?)");
  std::vector<std::string> strings = {""};
  for (int len = 1; len <= 5; ++len) {
    const size_t before = strings.size();
    for (size_t i = 0; i < before; ++i) {
      if (strings[i].size() != static_cast<size_t>(len - 1)) continue;
      for (const char c : std::string("-0.159")) strings.push_back(strings[i] + c);
    }
  }
  for (const char* extra : {"0.15000000000000001", "0.149999999999999999", "1.0000000000000000001", "100", "1e0",
                            "90.99999", "-91.0000", "9.50", "0.000000000000000000001"}) {
    strings.push_back(extra);
  }
  for (const Case& c : cases) {
    auto props = OJson::parse(c.bounds);
    props["type"] = "number";
    const OJson root = {{"type", "object"}, {"properties", {{"x", props}}}, {"required", {"x"}}};
    const auto compiled = JsonSchema::Compile(root);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    for (const std::string& x : strings) {
      if (x.empty()) continue;
      const double v = std::strtod(x.c_str(), nullptr);
      const bool inside = std::regex_match(x, json_number) && (c.lo_open ? v > c.lo : v >= c.lo) &&
                          (c.hi_open ? v < c.hi : v <= c.hi);
      const size_t digits = std::count_if(x.begin(), x.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
      if (inside && digits > 15) continue;  // past the mantissa the grammar writes: may be refused
      EXPECT_EQ(Accepts(**compiled, "{\"x\": " + x + "}"), inside) << c.bounds << " " << x;
    }
    std::mt19937 rng(3);
    std::vector<std::string> units = {"-", ".", "0", "1", "5", "9", "00", "99"};
    for (int walk = 0; walk < 500; ++walk) {
      SchemaGrammar g(compiled->get());
      ASSERT_TRUE(g.FeedAll("{\"x\": "));
      const std::string doc = "{\"x\": " + testing::WalkThenFinish(g, rng, units, 12, "0123456789.-}", 80);
      ASSERT_TRUE(g.Complete()) << c.bounds << " stuck after: " << doc;
      const double v = nlohmann::json::parse(doc)["x"].get<double>();
      EXPECT_TRUE((c.lo_open ? v > c.lo : v >= c.lo) && (c.hi_open ? v < c.hi : v <= c.hi)) << doc;
    }
  }
  EXPECT_FALSE(JsonSchema::Compile(OJson::parse(
      R"({"type": "object", "properties": {"x": {"type": "number", "minimum": 2, "exclusiveMaximum": 2}}})")).ok());
}

TEST(JsonSchemaTest, TuplesTakeEachItemsSchemaInTurn) {
  // pydantic's tuple[float, str, bool] and tuple[int, *tuple[str, ...]] (prefixItems, then items).
  const auto pair = Compile(R"({"type": "object", "properties": {
      "t": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}],
            "minItems": 3, "maxItems": 3},
      "u": {"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}, "minItems": 1},
      "v": {"prefixItems": [{"const": 1}], "items": false}},
      "required": ["t", "u", "v"]})");
  EXPECT_TRUE(Accepts(*pair, R"({"t": [1.5, "a", true], "u": [3], "v": [1]})"));
  EXPECT_TRUE(Accepts(*pair, R"({"t": [0, "", false], "u": [3, "x", "y"], "v": []})"));
  EXPECT_FALSE(Accepts(*pair, R"({"t": ["a", 1.5, true], "u": [3], "v": [1]})"));
  EXPECT_FALSE(Accepts(*pair, R"({"t": [1.5, "a"], "u": [3], "v": [1]})"));
  EXPECT_FALSE(Accepts(*pair, R"({"t": [1.5, "a", true, 1], "u": [3], "v": [1]})"));
  EXPECT_FALSE(Accepts(*pair, R"({"t": [1.5, "a", true], "u": [3, 4], "v": [1]})"));
  EXPECT_FALSE(Accepts(*pair, R"({"t": [1.5, "a", true], "u": [], "v": [1]})"));
  EXPECT_FALSE(Accepts(*pair, R"({"t": [1.5, "a", true], "u": [3], "v": [1, 1]})"));
}

TEST(JsonSchemaTest, UniqueItemsOfEnumsNeverRepeat) {
  // pydantic's set[Colour] (an Enum through $defs) and set[Literal[1, 12]].
  const auto schema = Compile(R"({"$defs": {"Colour": {"enum": ["red", "green", "blue"], "type": "string"}},
      "type": "object", "properties": {
        "c": {"type": "array", "items": {"$ref": "#/$defs/Colour"}, "uniqueItems": true},
        "n": {"type": "array", "items": {"enum": [1, 12]}, "uniqueItems": true, "minItems": 1}},
      "required": ["c", "n"]})");
  for (const char* doc : {R"({"c": [], "n": [1]})", R"({"c": ["red", "blue", "green"], "n": [12, 1]})",
                          R"({"c": ["green"], "n": [1, 12]})"}) {
    EXPECT_TRUE(Accepts(*schema, doc)) << doc;
  }
  for (const char* doc : {R"({"c": ["red", "red"], "n": [1]})", R"({"c": [], "n": [1, 1]})",
                          R"({"c": [], "n": [12, 12]})", R"({"c": ["red", "green", "blue", "red"], "n": [1]})",
                          R"({"c": ["red", "green", "blue",)"}) {
    EXPECT_FALSE(Accepts(*schema, doc)) << doc;
  }
  std::mt19937 rng(23);
  std::vector<std::string> units;
  for (const char* u : {"[", "]", "\"", ",", " ", "1", "2", "red", "green", "blue", "\"red\"", "{", "}", ":", "c", "n"}) {
    units.emplace_back(u);
  }
  for (int walk = 0; walk < 2000; ++walk) {
    SchemaGrammar g(schema.get());
    const std::string doc = testing::WalkThenFinish(g, rng, units, 80, testing::JsonFinishBytes(), 20000);
    ASSERT_TRUE(g.Complete()) << "stuck after: " << doc;
    const nlohmann::json v = nlohmann::json::parse(doc);
    for (const char* key : {"c", "n"}) {
      std::vector<std::string> seen;
      for (const auto& e : v.at(key)) seen.push_back(e.dump());
      std::sort(seen.begin(), seen.end());
      EXPECT_TRUE(std::adjacent_find(seen.begin(), seen.end()) == seen.end()) << doc;
    }
  }
  // Unique arrays of other values may not hold one another (sets of frozensets).
  const auto nested = JsonSchema::Compile(OJson::parse(R"({"type": "object", "properties": {"s": {"type": "array",
      "uniqueItems": true, "items": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}}}})"));
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.status().message().find("inside the items of another"), std::string::npos) << nested.status();
}

// A constraint over a toy vocabulary of JSON pieces, driven like a sampler: random allowed
// tokens, then (past max_steps) the allowed token that comes first in `units`, which lists
// the closing pieces first. Returns the text, or "" when no end token came in time.
std::string SampleDocument(SchemaConstraint& c, const JsonVocabulary& vocab, std::mt19937& rng, int max_steps) {
  std::string doc;
  for (int step = 0; step < 400; ++step) {
    std::vector<float> logits(vocab.pieces.size(), 0.0f);
    c.Mask(logits);
    std::vector<int> allowed;
    for (size_t id = 0; id < logits.size(); ++id) {
      if (logits[id] == 0.0f) allowed.push_back(static_cast<int>(id));
    }
    if (allowed.empty()) return "";
    const int id = step < max_steps ? allowed[rng() % allowed.size()] : allowed.front();
    if (vocab.kinds[id] == JsonVocabulary::Kind::kEndOfGeneration) return doc;
    c.Accept(id);
    doc += vocab.pieces[id];
  }
  return "";
}

// pydantic's set[str], set[conint(ge=1, le=3)] and a set of frozen models: the items are told
// apart as JSON values (escapes decoded, objects whatever their spacing), and a bounded
// integer never starts an item that only a used value completes.
TEST(JsonSchemaTest, UniqueItemsOfAnyValueNeverRepeat) {
  const auto schema = Compile(R"({"type": "object", "properties": {
      "s": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
      "n": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 12}, "uniqueItems": true},
      "o": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]},
            "uniqueItems": true},
      "i": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true},
      "c": {"type": "array", "items": {"type": "string", "maxLength": 1}, "uniqueItems": true}},
      "required": ["s", "n", "o", "i", "c"]})");
  auto vocab = std::make_shared<JsonVocabulary>();
  for (const char* piece : {"", "\"", "]", "}", "\",", ",", "]}", "1", "2", "3", "12", "0", "4",
                            "a", "b", "\\u0061", "\\", "u", "{", "[", ":", "\"s\"", "\"n\"", "\"o\"", "\"a\"",
                            "\"a\",", "1,", "2]", "{\"a\":", "1}", " 1", "1]", "s", "n", "o", "\"i\"", "i",
                            "\"k\"", "k", "{\"k\":", "-", "10", "5", "6", "7", "8", "9", "\"c\"", "c", " ", "\n"}) {
    vocab->pieces.push_back(piece);
    vocab->kinds.push_back(*piece ? JsonVocabulary::Kind::kText : JsonVocabulary::Kind::kEndOfGeneration);
  }
  vocab->Index();
  std::mt19937 rng(7);
  int finished = 0;
  for (int walk = 0; walk < 1500; ++walk) {
    SchemaConstraint c(vocab, schema);
    const std::string doc = SampleDocument(c, *vocab, rng, static_cast<int>(rng() % 120));
    if (doc.empty()) continue;
    ++finished;
    ASSERT_TRUE(nlohmann::json::accept(doc)) << doc;
    const nlohmann::json v = nlohmann::json::parse(doc);
    for (const char* key : {"s", "n", "o", "i", "c"}) {
      const auto& items = v.at(key);
      for (size_t i = 0; i < items.size(); ++i) {
        for (size_t j = 0; j < i; ++j) ASSERT_NE(items[i], items[j]) << key << " repeats in: " << doc;
      }
    }
    for (const auto& n : v.at("n")) ASSERT_TRUE(n.get<int>() >= 1 && n.get<int>() <= 12) << doc;
  }
  EXPECT_GT(finished, 1400);  // walks end: the constraint leaves no dead end to these items
  // Two spellings of one string are one value: after "a", the string "\u0061" may not close.
  const auto id = [&](const char* piece) {
    return static_cast<int32_t>(std::find(vocab->pieces.begin(), vocab->pieces.end(), piece) - vocab->pieces.begin());
  };
  SchemaConstraint c(vocab, schema);
  for (const char* piece : {"{", "\"s\"", ":", "[", "\"a\",", "\"", "\\u0061"}) c.Accept(id(piece));
  std::vector<float> logits(vocab->pieces.size(), 0.0f);
  c.Mask(logits);
  EXPECT_EQ(logits[id("\"")], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(logits[id("\",")], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(logits[id("a")], 0.0f);
}

TEST(JsonSchemaTest, CacheHandsOutOneSchemaPerText) {
  SchemaCache cache(2);
  const auto a = OJson::parse(R"({"type": "object", "properties": {"x": {"type": "integer"}}})");
  const auto b = OJson::parse(R"({"type": "object", "properties": {"y": {"type": "string"}}})");
  const auto c = OJson::parse(R"({"type": "object"})");
  const auto a1 = cache.Compile(a), b1 = cache.Compile(b), a2 = cache.Compile(a);
  ASSERT_TRUE(a1.ok() && a2.ok() && b1.ok());
  EXPECT_EQ(a1->get(), a2->get());
  EXPECT_NE(a1->get(), b1->get());
  ASSERT_TRUE(cache.Compile(c).ok());  // evicts b, the least recently used
  EXPECT_EQ(cache.Compile(a)->get(), a1->get());
  EXPECT_NE(cache.Compile(b)->get(), b1->get());  // compiled again
  EXPECT_FALSE(cache.Compile(OJson::parse(R"({"type": "string"})")).ok());
}

TEST(JsonSchemaTest, UnsupportedSchemasAreErrorsThatSayWhy) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"type": "object", "properties": {"s": {"type": "string", "pattern": "(?<=a)b"}}})", "lookaround"},
      {R"({"type": "object", "properties": {"s": {"type": "string", "minLength": 3, "maxLength": 2}}})", "minLength exceeds"},
      {R"({"type": "object", "properties": {"n": {"type": "number", "minimum": 3, "maximum": 2}}})", "no number lies"},
      {R"({"type": "object", "properties": {"n": {"type": "number", "multipleOf": 0.5}}})", "only a whole multipleOf"},
      {R"({"type": "object", "properties": {"n": {"not": {"type": "string"}}}})", "'not' is not supported"},
      {R"({"type": "string"})", "top level must be an object"},
      {R"({"type": "object", "properties": {"x": {"anyOf": [{"type": "object", "properties": {"a": {}}},
          {"type": "object", "properties": {"a": {"type": "string"}}}]}}})",
       "same byte ('{')"},
      // Objects whose tags overlap cannot be told apart.
      {R"({"type": "object", "properties": {"x": {"anyOf": [
          {"properties": {"t": {"enum": ["a", "b"]}}, "required": ["t"]},
          {"properties": {"t": {"const": "b"}}, "required": ["t"]}]}}})",
       "by a tag"},
      {R"({"type": "object", "properties": {"x": {"$ref": "#/$defs/Missing"}}})", "Missing"},
      {R"({"type": "object", "properties": {"x": {"type": "date"}}})", "unknown type 'date'"},
      {R"({"type": "object", "properties": {"x": {"type": "array", "minItems": 3, "maxItems": 2}}})", "minItems exceeds"},
  };
  for (const auto& [text, why] : cases) {
    const auto s = JsonSchema::Compile(OJson::parse(text));
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(why), std::string::npos) << s.status();
  }
}

// pydantic's discriminated union (Field(discriminator="kind")), with the tag declared last in
// one branch and the union inside an Optional.
const char* kPets = R"({
  "$defs": {"Cat": {"properties": {"kind": {"const": "cat", "type": "string"}, "lives": {"type": "integer"}},
                    "required": ["kind", "lives"], "type": "object"},
            "Dog": {"properties": {"name": {"type": "string"}, "kind": {"enum": ["dog", "puppy"]}},
                    "required": ["name", "kind"], "type": "object"}},
  "properties": {"pet": {"anyOf": [{"oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
                                    "discriminator": {"propertyName": "kind"}}, {"type": "null"}]},
                 "pets": {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]}}},
  "required": ["pet", "pets"], "type": "object"})";

TEST(JsonSchemaTest, UnionsOfObjectsGoByTheirTag) {
  const auto schema = Compile(kPets);
  for (const char* doc : {
           R"({"pet": {"kind": "cat", "lives": 9}, "pets": []})",
           R"({"pet": {"kind": "dog", "name": "Rex"}, "pets": [{"kind": "puppy", "name": "a"}, {"kind": "cat", "lives": 1}]})",
           R"({"pet": null, "pets": [ { "kind" : "cat" , "lives" : 3 } ]})"}) {
    EXPECT_TRUE(Accepts(*schema, doc)) << doc;
  }
  for (const char* doc : {
           R"({"pet": {"kind": "cat", "name": "Rex"}, "pets": []})",  // a dog's property on a cat
           R"({"pet": {"kind": "dog", "lives": 9}, "pets": []})",
           R"({"pet": {"name": "Rex", "kind": "dog"}, "pets": []})",  // the tag comes first
           R"({"pet": {"kind": "cow"}, "pets": []})",
           R"({"pet": {"kind": "cat"}, "pets": []})",  // lives is required
           R"({"pet": {}, "pets": []})"}) {
    EXPECT_FALSE(Accepts(*schema, doc)) << doc;
  }
  std::mt19937 rng(11);
  std::vector<std::string> units;
  for (const char c : std::string("{}[]\":, 0123456789-tacdogpuynlivesm")) units.emplace_back(1, c);
  const std::string finish = testing::JsonFinishBytes();
  for (int walk = 0; walk < 2000; ++walk) {
    SchemaGrammar g(schema.get());
    const std::string doc = testing::WalkThenFinish(g, rng, units, 200, finish, 20000);
    ASSERT_TRUE(g.Complete()) << "stuck after: " << doc;
    const nlohmann::json parsed = nlohmann::json::parse(doc, nullptr, false);
    ASSERT_FALSE(parsed.is_discarded()) << doc;
    std::vector<nlohmann::json> pets(parsed["pets"].begin(), parsed["pets"].end());
    if (!parsed["pet"].is_null()) pets.push_back(parsed["pet"]);
    for (const nlohmann::json& pet : pets) {
      const std::string kind = pet.at("kind");
      if (kind == "cat") {
        EXPECT_TRUE(pet.at("lives").is_number_integer()) << doc;
        EXPECT_EQ(pet.size(), 2u) << doc;
      } else {
        EXPECT_TRUE(kind == "dog" || kind == "puppy") << doc;
        EXPECT_TRUE(pet.at("name").is_string()) << doc;
        EXPECT_EQ(pet.size(), 2u) << doc;
      }
    }
  }
}

TEST(JsonSchemaTest, UnionsOfObjectsGoByTheirFirstKey) {
  // pydantic's Union[Cat, Dog, Note] with no tag: each model starts with keys of its own.
  const auto schema = Compile(R"({"type": "object", "properties": {"x": {"anyOf": [
      {"type": "object", "properties": {"nick": {"type": "string"}, "meows": {"type": "integer"}}, "required": ["meows"]},
      {"type": "object", "properties": {"barks": {"type": "integer"}, "nick": {"type": "string"}}, "required": ["barks"]},
      {"type": "null"}]},
    "y": {"anyOf": [{"type": "object", "properties": {"opt": {"type": "integer"}}},
                    {"type": "object", "properties": {"d": {"type": "boolean"}}, "required": ["d"]}]}},
    "required": ["x", "y"]})");
  for (const char* doc : {R"({"x": {"meows": 1}, "y": {}})", R"({"x": {"nick": "Tom", "meows": 9}, "y": {"opt": 2}})",
                          R"({"x": {"barks": 2, "nick": "Rex"}, "y": {"d": true}})", R"({"x": null, "y": {"d": false}})"}) {
    EXPECT_TRUE(Accepts(*schema, doc)) << doc;
  }
  for (const char* doc : {R"({"x": {}, "y": {}})", R"({"x": {"meows": 1, "barks": 2}, "y": {}})",
                          R"({"x": {"nick": "Tom", "barks": 2}, "y": {}})", R"({"x": {"barks": 2}, "y": {"opt": 1, "d": true}})",
                          R"({"x": {"meows": "one"}, "y": {}})"}) {
    EXPECT_FALSE(Accepts(*schema, doc)) << doc;
  }
  std::mt19937 rng(17);
  std::vector<std::string> units;
  for (const char* u : {"{", "}", "\"", ":", ",", " ", "1", "null", "true", "meows", "barks", "nick", "opt", "d", "x", "y", "T"}) {
    units.emplace_back(u);
  }
  const std::string finish = testing::JsonFinishBytes();
  for (int walk = 0; walk < 2000; ++walk) {
    SchemaGrammar g(schema.get());
    const std::string doc = testing::WalkThenFinish(g, rng, units, 60, finish, 20000);
    ASSERT_TRUE(g.Complete()) << "stuck after: " << doc;
    const nlohmann::json v = nlohmann::json::parse(doc);
    const nlohmann::json& x = v.at("x");
    if (!x.is_null()) {
      const bool cat = x.contains("meows") && x["meows"].is_number_integer() && !x.contains("barks");
      const bool dog = x.contains("barks") && x["barks"].is_number_integer() && !x.contains("meows");
      EXPECT_TRUE(cat != dog) << doc;
    }
    EXPECT_TRUE(v.at("y").empty() || v["y"].contains("opt") != v["y"].contains("d")) << doc;
  }
  // Branches that can start with one key are not told apart.
  EXPECT_FALSE(JsonSchema::Compile(OJson::parse(R"({"type": "object", "properties": {"x": {"anyOf": [
      {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
      {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}]}}})")).ok());
}

TEST(JsonSchemaTest, OtherTopLevelsWhenAsked) {
  const OJson calls = OJson::parse(R"({"type": "array", "minItems": 1, "items": {"type": "integer"}})");
  EXPECT_FALSE(JsonSchema::Compile(calls).ok());
  const auto schema = JsonSchema::Compile(calls, /*object_root=*/false);
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_TRUE(Accepts(**schema, "[1, 2]"));
  EXPECT_FALSE(Accepts(**schema, "[]"));
  EXPECT_FALSE(Accepts(**schema, "{}"));
}

// Random walks through the schema's grammar, completed greedily: every result is valid JSON
// (nlohmann's parser) with the required keys of the top level present.
TEST(JsonSchemaTest, EveryAcceptedPrefixCompletes) {
  const auto schema = Compile(kPerson);
  std::string alphabet = "{}[]\":, 0123456789-.eEtruefalsnxyzabcdgiop\\\n";
  const std::string finish = testing::JsonFinishBytes();
  std::mt19937 rng(5);
  std::vector<std::string> units;
  for (const char c : alphabet) units.emplace_back(1, c);
  for (int walk = 0; walk < 3000; ++walk) {
    SchemaGrammar g(schema.get());
    const std::string doc = testing::WalkThenFinish(g, rng, units, 300, finish, 20000);
    ASSERT_TRUE(g.Complete()) << "stuck after: " << doc;
    const nlohmann::json parsed = nlohmann::json::parse(doc, nullptr, false);
    ASSERT_FALSE(parsed.is_discarded()) << doc;
    for (const char* key : {"name", "age", "colour", "scores", "address"}) ASSERT_TRUE(parsed.contains(key)) << doc;
    EXPECT_TRUE(parsed["age"].is_number_integer()) << doc;
    EXPECT_TRUE(parsed["address"]["zip"].is_null() || parsed["address"]["zip"].is_number_integer()) << doc;
    EXPECT_GE(parsed["scores"].size(), 1u);
    EXPECT_LE(parsed["scores"].size(), 3u);
  }
}

TEST(JsonSchemaTest, ConstraintMasksWithTheSchema) {
  const auto schema = Compile(R"({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})");
  auto vocab = std::make_shared<JsonVocabulary>();
  for (const char* piece : {"{", "\"ok\"", "\"no\"", ":", " true", "false", "}", "1"}) {
    vocab->pieces.push_back(piece);
    vocab->kinds.push_back(JsonVocabulary::Kind::kText);
  }
  vocab->pieces.push_back("");
  vocab->kinds.push_back(JsonVocabulary::Kind::kEndOfGeneration);
  vocab->Index();
  SchemaConstraint c(vocab, schema);
  const auto allowed = [&] {
    std::vector<float> logits(vocab->pieces.size(), 0.0f);
    c.Mask(logits);
    std::vector<int> ids;
    for (size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] == 0.0f) ids.push_back(static_cast<int>(i));
    }
    return ids;
  };
  EXPECT_EQ(allowed(), (std::vector<int>{0}));
  c.Accept(0);
  EXPECT_EQ(allowed(), (std::vector<int>{1}));  // the one key; "}" is not: "ok" is required
  c.Accept(1);
  EXPECT_EQ(allowed(), (std::vector<int>{3}));
  c.Accept(3);
  EXPECT_EQ(allowed(), (std::vector<int>{4, 5}));
  c.Accept(4);
  EXPECT_EQ(allowed(), (std::vector<int>{6}));
  c.Accept(6);
  EXPECT_EQ(allowed(), (std::vector<int>{8}));
}

}  // namespace
}  // namespace peng
