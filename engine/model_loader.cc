#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "base/status.h"

namespace peng {

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path,
                                                 const LoadProgress& progress) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("model path ", path, " does not exist"));
  }
  if (S_ISDIR(st.st_mode)) return LoadHfModel(path, progress);
  return LoadGgufModel(path, progress);
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("model path ", path, " does not exist"));
  }
  return S_ISDIR(st.st_mode) ? LoadHfModelConfig(path) : LoadGgufModelConfig(path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("model path ", path, " does not exist"));
  }
  if (S_ISDIR(st.st_mode)) {
    const std::string config = path + "/tokenizer_config.json";
    return Tokenizer::FromHfFiles(path + "/tokenizer.json",
                                  ::stat(config.c_str(), &st) == 0 ? config : "");
  }
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  return Tokenizer::FromGguf(*file);
}

}  // namespace peng
