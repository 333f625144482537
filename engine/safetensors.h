// Safetensors files and Hugging Face model folders. SafetensorsFile is one parsed
// `.safetensors` file: tensor descriptors whose `data` points into a read-only mmap owned by the
// file object (views die with it). SafetensorsModel is a folder: model.safetensors, or shards
// listed by model.safetensors.index.json, with lookup by name across shards. Both are immutable
// after Open(), so safe to read from any thread. Every header length, dtype, shape and offset is
// validated (overflow-safe); a corrupt file yields an error naming the tensor and the field.
// Tensor data is NOT guaranteed to be aligned: read it with memcpy or unaligned-safe loads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "base/mapped_file.h"

namespace peng {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;           // "F32", "F16", "BF16", "I64", ... as stored
  std::vector<int64_t> shape;  // row-major as stored (HF order): shape.back() is contiguous
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t num_elements() const;
};

// Bytes per element of a safetensors dtype name, or InvalidArgument for an unknown name.
absl::StatusOr<size_t> SafetensorsDtypeSize(std::string_view dtype);

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses bytes already mapped (tests use this for mutated buffers).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(std::unique_ptr<MappedFile> file);
  // Parses caller-owned bytes; they must outlive the returned object.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> ParseBuffer(
      std::string_view name, std::span<const uint8_t> bytes);

  const std::string& path() const { return path_; }
  // Tensors in data-offset order.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* Find(std::string_view name) const;
  // The optional "__metadata__" string map, in key order.
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader(std::span<const uint8_t> bytes);

  std::string path_;
  std::unique_ptr<MappedFile> file_;  // null for ParseBuffer
  std::vector<SafetensorsTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> by_name_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

// A Hugging Face model folder's weights. Every tensor named in the index must exist in the
// shard the index names; a name in two shards is an error.
class SafetensorsModel {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // All tensors of all shards, sorted by name.
  const std::vector<const SafetensorsTensor*>& tensors() const { return tensors_; }
  const SafetensorsTensor* Find(std::string_view name) const;

 private:
  SafetensorsModel() = default;
  absl::Status AddFile(std::unique_ptr<SafetensorsFile> file);

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<const SafetensorsTensor*> tensors_;
  absl::flat_hash_map<std::string, const SafetensorsTensor*> by_name_;
};

}  // namespace peng
