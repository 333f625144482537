#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "base/status.h"

namespace peng {

absl::Status InModelFile(const absl::Status& s, const std::string& path) {
  if (s.ok()) return s;
  const absl::StatusCode code = absl::IsInvalidArgument(s) ? absl::StatusCode::kDataLoss : s.code();
  return absl::Status(code, absl::StrCat(path, ": ", s.message()));
}

namespace {

// A Hugging Face folder's loaders report file names inside the folder ("config.json: …"); the
// folder is named here, once. (GGUF errors name their file where they arise.)
template <class T>
absl::StatusOr<T> InModelFolder(absl::StatusOr<T> r, const std::string& dir) {
  if (r.ok()) return r;
  return InModelFile(r.status(), dir);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path,
                                                 const LoadProgress& progress) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("model path ", path, " does not exist"));
  }
  if (S_ISDIR(st.st_mode)) return InModelFolder(LoadHfModel(path, progress), path);
  return LoadGgufModel(path, progress);
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("model path ", path, " does not exist"));
  }
  return S_ISDIR(st.st_mode) ? InModelFolder(LoadHfModelConfig(path), path) : LoadGgufModelConfig(path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("model path ", path, " does not exist"));
  }
  if (S_ISDIR(st.st_mode)) {
    const std::string config = path + "/tokenizer_config.json";
    return InModelFolder(Tokenizer::FromHfFiles(path + "/tokenizer.json",
                                                 ::stat(config.c_str(), &st) == 0 ? config : ""),
                         path);
  }
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  return Tokenizer::FromGguf(*file);
}

}  // namespace peng
