// `peng tokenize`: encode text to token ids (or decode ids to text) with a model's tokenizer.
// Used by people checking prompts and by tests/python/test_tokenizer.py, which compares it with
// Hugging Face `tokenizers` on thousands of strings through --jsonl.
#include <climits>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status.h"
#include "absl/strings/str_cat.h"
#include "cli/flags.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"

namespace peng {
namespace {

constexpr const char* kUsage =
    "usage: peng tokenize --model PATH [--text TEXT | --jsonl] [--no-bos] [--no-special]\n"
    "                     [--decode] [--skip-special]\n"
    "  --model PATH     GGUF file, or a folder with tokenizer.json (+ tokenizer_config.json)\n"
    "  --text TEXT      encode TEXT and print its ids as a JSON array\n"
    "                   (with --decode: TEXT is ids, as a JSON array or separated by spaces)\n"
    "  --jsonl          read stdin lines, each a JSON string (with --decode: a JSON array of\n"
    "                   ids); write one JSON array of ids (a JSON string) per line\n"
    "  --no-bos         never prepend BOS (default: when the model asks for it)\n"
    "  --no-special     treat control-token markup such as <|im_start|> as plain text\n"
    "  --decode         ids -> text\n"
    "  --skip-special   with --decode: leave control tokens out of the text\n";

struct Options {
  std::string model;
  std::string text;
  bool has_text = false;
  bool jsonl = false;
  bool add_bos = true;
  bool parse_special = true;
  bool decode = false;
  bool skip_special = false;
};

// Parses argv (argv[0] is "tokenize"); an error message for a bad command line.
absl::StatusOr<Options> ParseArgs(int argc, char** argv, bool* help) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto take_value = [&]() -> absl::StatusOr<std::string> {
      if (has_value) return value;
      return cli::NextValue(arg.substr(2), argc, argv, &i);
    };
    const bool is_flag = arg == "--jsonl" || arg == "--no-bos" || arg == "--no-special" ||
                         arg == "--decode" || arg == "--skip-special" || arg == "--help" ||
                         arg == "-h";
    if (is_flag && has_value) {
      return absl::InvalidArgumentError(absl::StrCat(arg, " takes no value"));
    }
    if (arg == "--model") {
      auto v = take_value();
      if (!v.ok()) return v.status();
      o.model = *v;
    } else if (arg == "--text") {
      auto v = take_value();
      if (!v.ok()) return v.status();
      o.text = *v;
      o.has_text = true;
    } else if (arg == "--jsonl") {
      o.jsonl = true;
    } else if (arg == "--no-bos") {
      o.add_bos = false;
    } else if (arg == "--no-special") {
      o.parse_special = false;
    } else if (arg == "--decode") {
      o.decode = true;
    } else if (arg == "--skip-special") {
      o.skip_special = true;
    } else if (arg == "--help" || arg == "-h") {
      *help = true;
      return o;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument \"", arg, "\""));
    }
  }
  if (o.model.empty()) return absl::InvalidArgumentError("--model is required");
  if (o.has_text == o.jsonl) {
    return absl::InvalidArgumentError("give exactly one of --text and --jsonl");
  }
  return o;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> OpenTokenizer(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    const std::filesystem::path dir(path);
    const std::string config = (dir / "tokenizer_config.json").string();
    return Tokenizer::FromHfFiles((dir / "tokenizer.json").string(),
                                  std::filesystem::exists(config, ec) ? config : "");
  }
  auto gguf = GgufFile::Open(path);
  if (!gguf.ok()) return gguf.status();
  return Tokenizer::FromGguf(**gguf);
}

// A JSON integer as a token id; one beyond 32 bits is outside every vocabulary.
absl::StatusOr<int32_t> JsonId(const nlohmann::json& v) {
  const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= INT32_MAX
                                           : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
  if (!fits) return absl::InvalidArgumentError(absl::StrCat("token id ", v.dump(), " is outside the vocabulary"));
  return static_cast<int32_t>(v.get<int64_t>());
}

// "[1, 2, 3]" or "1 2 3" / "1,2,3" -> ids.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_array()) {
    for (const auto& v : j) {
      if (!v.is_number_integer()) return absl::InvalidArgumentError("ids must be integers");
      PENG_ASSIGN_OR_RETURN(int32_t id, JsonId(v));
      ids.push_back(id);
    }
    return ids;
  }
  std::string cur;
  for (size_t i = 0; i <= text.size(); ++i) {
    const char c = i < text.size() ? text[i] : ' ';
    if (c == ' ' || c == ',' || c == '\t' || c == '\n') {
      if (cur.empty()) continue;
      try {
        size_t used = 0;
        ids.push_back(std::stoi(cur, &used));
        if (used != cur.size()) throw std::invalid_argument(cur);
      } catch (const std::exception&) {
        return absl::InvalidArgumentError(absl::StrCat("\"", cur, "\" is not a token id"));
      }
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  return ids;
}

// Ids outside the vocabulary are an error, as /detokenize and gRPC Detokenize make them.
absl::Status CheckIds(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", tok.vocab_size(), ")"));
    }
  }
  return absl::OkStatus();
}

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int RunJsonl(const Tokenizer& tok, const Options& o) {
  std::string line;
  for (int64_t line_no = 1; std::getline(std::cin, line); ++line_no) {
    nlohmann::json in = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (o.decode) {
      std::vector<int32_t> ids;
      bool ok = in.is_array();
      for (size_t k = 0; ok && k < in.size(); ++k) {
        ok = in[k].is_number_integer() && JsonId(in[k]).ok();
        if (ok) ids.push_back(*JsonId(in[k]));
      }
      if (!ok) {
        std::cerr << "peng tokenize: stdin line " << line_no << " is not a JSON array of token ids\n";
        return 1;
      }
      if (absl::Status s = CheckIds(tok, ids); !s.ok()) {
        std::cerr << "peng tokenize: stdin line " << line_no << ": " << s.message() << "\n";
        return 1;
      }
      std::cout << Dump(tok.Decode(ids, o.skip_special)) << '\n';
    } else {
      if (!in.is_string()) {
        std::cerr << "peng tokenize: stdin line " << line_no << " is not a JSON string\n";
        return 1;
      }
      std::cout << Dump(tok.Encode(in.get<std::string>(), o.add_bos, o.parse_special)) << '\n';
    }
    std::cout.flush();
  }
  return 0;
}

}  // namespace

int RunTokenizeCommand(int argc, char** argv) {
  bool help = false;
  absl::StatusOr<Options> opts = ParseArgs(argc, argv, &help);
  if (help) {
    std::cout << kUsage;
    return 0;
  }
  if (!opts.ok()) {
    std::cerr << "peng tokenize: " << opts.status().message() << " (see --help)\n";
    return 2;
  }
  auto tok = OpenTokenizer(opts->model);
  if (!tok.ok()) {
    std::cerr << "peng tokenize: " << tok.status().message() << "\n";
    return 1;
  }
  if (opts->jsonl) return RunJsonl(**tok, *opts);
  if (opts->decode) {
    absl::StatusOr<std::vector<int32_t>> ids = ParseIds(opts->text);
    if (ids.ok()) {
      if (absl::Status s = CheckIds(**tok, *ids); !s.ok()) ids = s;
    }
    if (!ids.ok()) {
      std::cerr << "peng tokenize: --text: " << ids.status().message() << "\n";
      return 2;
    }
    std::cout << (*tok)->Decode(*ids, opts->skip_special) << '\n';
  } else {
    std::cout << Dump((*tok)->Encode(opts->text, opts->add_bos, opts->parse_special)) << '\n';
  }
  return 0;
}

}  // namespace peng
