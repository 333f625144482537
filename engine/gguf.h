// GgufFile: a parsed GGUF v2/v3 file — metadata key/values and tensor descriptors whose data
// points into a read-only mmap owned by the file object (views die with it). Immutable after
// Open(), so safe to read from any thread. Every length, count, offset and shape read from the
// file is bounds-checked, and no two tensors' bytes may overlap; a corrupt, truncated or hostile
// file yields DataLoss naming the file, the field and the offset (names read from the file are
// escaped, never printed raw).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/mapped_file.h"
#include "kernels/ggml_types.h"

namespace peng {

enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
const char* GgufTypeName(GgufType t);

// One metadata value. Scalars keep their exact type; arrays keep their element type.
struct GgufValue {
  GgufType type = GgufType::kUint8;
  GgufType elem_type = GgufType::kUint8;  // for arrays
  uint64_t u = 0;                          // unsigned and bool scalars
  int64_t i = 0;                           // signed scalars (also set for unsigned that fit)
  double f = 0;                            // float scalars (also set for integers)
  std::string s;
  std::vector<GgufValue> array;

  bool is_integer() const;
  bool is_number() const { return is_integer() || type == GgufType::kFloat32 || type == GgufType::kFloat64; }
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> shape;  // GGML order: shape[0] is the contiguous (row) dimension
  kernels::GgmlType type;
  uint64_t offset = 0;         // relative to the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t num_elements() const;
};

class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses bytes already mapped (tests use this for mutated buffers).
  static absl::StatusOr<std::unique_ptr<GgufFile>> Parse(std::unique_ptr<MappedFile> file);
  static absl::StatusOr<std::unique_ptr<GgufFile>> ParseBuffer(absl::string_view name,
                                                              std::span<const uint8_t> bytes);

  uint32_t version() const { return version_; }
  const std::string& path() const { return path_; }

  const GgufValue* Find(absl::string_view key) const;
  // Typed getters: NotFound if absent, DataLoss (naming the key) on a type mismatch.
  absl::StatusOr<int64_t> GetInt(absl::string_view key) const;
  absl::StatusOr<double> GetFloat(absl::string_view key) const;
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<std::string> GetString(absl::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(absl::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(absl::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key) const;
  // Same, with a default for an absent key (a present key of the wrong type is still an error).
  absl::StatusOr<int64_t> GetIntOr(absl::string_view key, int64_t def) const;
  absl::StatusOr<double> GetFloatOr(absl::string_view key, double def) const;
  absl::StatusOr<bool> GetBoolOr(absl::string_view key, bool def) const;
  absl::StatusOr<std::string> GetStringOr(absl::string_view key, std::string def) const;

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* FindTensor(absl::string_view name) const;

 private:
  GgufFile() = default;
  absl::Status ParseAll(std::span<const uint8_t> bytes);

  std::string path_;
  std::unique_ptr<MappedFile> file_;
  std::vector<uint8_t> owned_;  // ParseBuffer copies here
  uint32_t version_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace peng
