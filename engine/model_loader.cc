#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "engine/model.h"

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

}  // namespace peng
