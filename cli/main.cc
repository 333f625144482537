// peng: the command-line entry point. Subcommands live in their own files.
#include <cstdio>
#include <cstring>

#include "base/crash_report.h"

namespace peng::cli {
int RunGenerateCommand(int argc, char** argv);
int RunLogitsCommand(int argc, char** argv);
int RunDumpTensorCommand(int argc, char** argv);
int RunBenchCommand(int argc, char** argv);
int RunServeCommand(int argc, char** argv);
int RunPerplexityCommand(int argc, char** argv);
}  // namespace peng::cli
namespace peng {
int RunTokenizeCommand(int argc, char** argv);  // cli/tokenize_command.cc
}  // namespace peng

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* help;
  bool own_help = false;  // the command prints a fuller usage of its own on --help
};

const Command kCommands[] = {
    {"serve", peng::cli::RunServeCommand,
     "[--config FILE] [--model PATH] [--http-port N] [--grpc-port N] [--api-key KEY] [--kv-budget SIZE] [--print-config]"},
    {"generate", peng::cli::RunGenerateCommand,
     "--model PATH --prompt TEXT [--chat] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S] [--device cpu|cuda] [--activations int8|f32] [--no-amx] [--output-ids]"},
    {"bench", peng::cli::RunBenchCommand, "--model PATH [--prompt-tokens 512] [--gen-tokens 128] [--threads 2] [--reps 3] [--activations int8|f32] [--no-amx] [--no-amx-attention] [--batch B] [--pin-threads] [--json]"},
    {"perplexity", peng::cli::RunPerplexityCommand,
     "--model PATH --text FILE --ctx N [--max-windows W] [--kv-mode dense|quantized|leankv] [--kv-format F] [--chunk 16] [--threads T] [--activations int8|f32] [--no-amx] [--no-amx-attention] [--config FILE]"},
    {"tokenize", peng::RunTokenizeCommand, "--model PATH [--text TEXT] [--jsonl] [--decode]", true},
    {"logits", peng::cli::RunLogitsCommand, "--model PATH (--prompt TEXT | --ids 1,2,3) --out FILE.npy [--activations int8|f32] [--no-amx] [--no-amx-attention]"},
    {"dump-tensor", peng::cli::RunDumpTensorCommand, "--model FILE.gguf --tensor NAME --out FILE.npy"},
};

int Usage(FILE* out) {
  std::fprintf(out, "usage: peng <command> [flags]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.help);
  std::fprintf(out,
               "\nA switch (--chat, --pin-threads, --metrics-auth, ...) alone means true; it takes a value only\n"
               "as --switch=false or when the next argument is true or false.\n"
               "\nexit status: 0 success; 2 usage or config error (unknown flag, bad value, a config file that\n"
               "is missing, unreadable or invalid); 1 any other failure (a model file that is missing, unreadable,\n"
               "corrupt or unsupported; no device; a port in use).\n");
  return out == stdout ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  // A crash (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) prints where it happened to stderr
  // before the process dies: a daemon's log then says where (base/crash_report.h).
  peng::InstallCrashReport(argv[0]);
  if (argc < 2) return Usage(stderr);
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) return Usage(stdout);
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    for (int i = 2; i < argc && !c.own_help; ++i) {
      if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
        std::printf("usage: peng %s %s\n(peng --help: every command, switches and exit statuses)\n", c.name, c.help);
        return 0;
      }
    }
    return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "peng: unknown command '%s'\n", argv[1]);
  return Usage(stderr);
}
