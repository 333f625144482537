#include "cli/common.h"

#include <unistd.h>

#include <cstdio>

namespace peng::cli {

absl::StatusOr<std::unique_ptr<Model>> LoadModelWithProgress(const std::string& path) {
  const bool tty = ::isatty(STDERR_FILENO);
  auto progress = [&](int done, int total) {
    if (!tty && done != total) return;
    constexpr int kWidth = 30;
    const int filled = done * kWidth / total;
    std::fprintf(stderr, "\rloading %s [%.*s%*s] %d/%d layers%s", path.c_str(), filled,
                 "##############################", kWidth - filled, "", done, total,
                 done == total ? "\n" : "");
    std::fflush(stderr);
  };
  return LoadModel(path, progress);
}

int Fail(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "peng %s: %s\n", command, std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace peng::cli
