#include "engine/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "nlohmann/json.hpp"

namespace peng {
namespace {

using Json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// absl::string_view, not std::string_view: Debian's Abseil keeps its own string_view type.
absl::Status TensorError(absl::string_view tensor, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("tensor '", tensor, "': field '", field, "': ", what));
}

// A JSON integer in [0, max], as uint64.
absl::StatusOr<uint64_t> ReadUnsigned(const Json& v, absl::string_view tensor,
                                      absl::string_view field, uint64_t max) {
  if (!v.is_number_unsigned()) {
    return TensorError(tensor, field, absl::StrCat("expected a non-negative integer, got ",
                                                   v.dump()));
  }
  uint64_t u = v.get<uint64_t>();
  if (u > max) return TensorError(tensor, field, absl::StrCat(u, " is out of range"));
  return u;
}

struct ParsedEntry {
  SafetensorsTensor tensor;
  uint64_t begin = 0, end = 0;
};

absl::StatusOr<ParsedEntry> ParseEntry(const std::string& name, const Json& v,
                                       uint64_t data_size) {
  if (!v.is_object()) return TensorError(name, "", "entry is not a JSON object");
  ParsedEntry e;
  e.tensor.name = name;
  auto dtype = v.find("dtype");
  if (dtype == v.end() || !dtype->is_string()) {
    return TensorError(name, "dtype", "missing or not a string");
  }
  e.tensor.dtype = dtype->get<std::string>();
  auto elem = SafetensorsDtypeSize(e.tensor.dtype);
  if (!elem.ok()) return TensorError(name, "dtype", elem.status().message());

  auto shape = v.find("shape");
  if (shape == v.end() || !shape->is_array()) {
    return TensorError(name, "shape", "missing or not an array");
  }
  uint64_t count = 1;
  for (size_t i = 0; i < shape->size(); ++i) {
    PENG_ASSIGN_OR_RETURN(uint64_t dim,
                          ReadUnsigned((*shape)[i], name, absl::StrCat("shape[", i, "]"),
                                       std::numeric_limits<int64_t>::max()));
    if (__builtin_mul_overflow(count, dim, &count)) {
      return TensorError(name, "shape", "element count overflows 64 bits");
    }
    e.tensor.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(count, static_cast<uint64_t>(*elem), &nbytes)) {
    return TensorError(name, "shape", "byte size overflows 64 bits");
  }

  auto offsets = v.find("data_offsets");
  if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2) {
    return TensorError(name, "data_offsets", "missing or not an array of two integers");
  }
  uint64_t max = std::numeric_limits<uint64_t>::max();
  PENG_ASSIGN_OR_RETURN(e.begin, ReadUnsigned((*offsets)[0], name, "data_offsets[0]", max));
  PENG_ASSIGN_OR_RETURN(e.end, ReadUnsigned((*offsets)[1], name, "data_offsets[1]", max));
  if (e.begin > e.end) {
    return TensorError(name, "data_offsets", absl::StrCat("begin ", e.begin, " > end ", e.end));
  }
  if (e.end > data_size) {
    return TensorError(name, "data_offsets",
                       absl::StrCat("end ", e.end, " is past the data section (", data_size,
                                    " bytes)"));
  }
  if (e.end - e.begin != nbytes) {
    return TensorError(name, "data_offsets",
                       absl::StrCat("span of ", e.end - e.begin, " bytes, but shape x dtype is ",
                                    nbytes, " bytes"));
  }
  e.tensor.nbytes = static_cast<size_t>(nbytes);
  return e;
}

}  // namespace

int64_t SafetensorsTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated at parse time not to overflow
  return n;
}

absl::StatusOr<size_t> SafetensorsDtypeSize(std::string_view dtype) {
  static const auto* sizes = new std::map<std::string, size_t, std::less<>>{
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},     {"C64", 8}};
  auto it = sizes->find(dtype);
  if (it == sizes->end()) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported safetensors dtype '",
                                                   absl::string_view(dtype.data(), dtype.size()), "'"));
  }
  return it->second;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  PENG_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  return Parse(std::move(file));
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    std::unique_ptr<MappedFile> file) {
  std::unique_ptr<SafetensorsFile> st(new SafetensorsFile());
  st->path_ = file->path();
  std::span<const uint8_t> bytes(file->data(), file->size());
  st->file_ = std::move(file);
  PENG_RETURN_IF_ERROR(Annotate(st->ParseHeader(bytes), st->path_));
  return st;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::ParseBuffer(
    std::string_view name, std::span<const uint8_t> bytes) {
  std::unique_ptr<SafetensorsFile> st(new SafetensorsFile());
  st->path_ = std::string(name);  // std::string_view: public API
  PENG_RETURN_IF_ERROR(Annotate(st->ParseHeader(bytes), st->path_));
  return st;
}

absl::Status SafetensorsFile::ParseHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("file is ", bytes.size(), " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat("header length ", header_len,
                                                   " exceeds the file (", bytes.size(),
                                                   " bytes) or the 100 MB limit"));
  }
  const uint8_t* header = bytes.data() + 8;
  const uint8_t* data = header + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;

  std::vector<ParsedEntry> entries;
  try {
    Json root = Json::parse(header, header + header_len);
    if (!root.is_object()) {
      return absl::InvalidArgumentError("header is not a JSON object");
    }
    for (const auto& [key, value] : root.items()) {
      if (key == "__metadata__") {
        if (!value.is_object()) {
          return absl::InvalidArgumentError("field '__metadata__' is not a JSON object");
        }
        for (const auto& [mk, mv] : value.items()) {
          if (!mv.is_string()) {
            return absl::InvalidArgumentError(
                absl::StrCat("field '__metadata__.", mk, "' is not a string"));
          }
          metadata_.emplace_back(mk, mv.get<std::string>());
        }
        continue;
      }
      PENG_ASSIGN_OR_RETURN(ParsedEntry e, ParseEntry(key, value, data_size));
      entries.push_back(std::move(e));
    }
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("header JSON: ", e.what()));
  }

  std::sort(entries.begin(), entries.end(), [](const ParsedEntry& a, const ParsedEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].begin < entries[i - 1].end) {
      return TensorError(entries[i].tensor.name, "data_offsets",
                         absl::StrCat("overlaps tensor '", entries[i - 1].tensor.name, "'"));
    }
  }
  tensors_.reserve(entries.size());
  for (auto& e : entries) {
    e.tensor.data = data + e.begin;
    by_name_.emplace(e.tensor.name, tensors_.size());
    tensors_.push_back(std::move(e.tensor));
  }
  return absl::OkStatus();
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  auto it = by_name_.find(absl::string_view(name.data(), name.size()));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  std::unique_ptr<SafetensorsModel> model(new SafetensorsModel());
  model->dir_ = dir;
  std::error_code ec;
  const fs::path root(dir);
  const fs::path index_path = root / "model.safetensors.index.json";
  const fs::path single_path = root / "model.safetensors";

  if (fs::is_regular_file(root, ec)) {  // a bare .safetensors file is a one-shard model
    PENG_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir));
    PENG_RETURN_IF_ERROR(model->AddFile(std::move(file)));
  } else if (fs::is_regular_file(index_path, ec)) {
    // weight_map: tensor name -> shard file name (relative to the folder).
    std::map<std::string, std::string> weight_map;
    PENG_ASSIGN_OR_RETURN(auto index_file, MappedFile::Open(index_path.string()));
    try {
      const uint8_t* p = index_file->data();
      Json index = Json::parse(p, p + index_file->size());
      if (!index.is_object() || !index.contains("weight_map") ||
          !index["weight_map"].is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path.string(), ": field 'weight_map' missing or not an object"));
      }
      for (const auto& [name, shard] : index["weight_map"].items()) {
        if (!shard.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(
              index_path.string(), ": field 'weight_map.", name, "' is not a string"));
        }
        weight_map[name] = shard.get<std::string>();
      }
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": ", e.what()));
    }
    std::map<std::string, const SafetensorsFile*> shards;
    for (const auto& [name, shard] : weight_map) {
      if (shards.contains(shard)) continue;
      fs::path rel(shard);
      if (rel.empty() || rel.is_absolute() ||
          std::any_of(rel.begin(), rel.end(), [](const fs::path& c) { return c == ".."; })) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path.string(), ": field 'weight_map.", name, "': bad shard name '", shard, "'"));
      }
      PENG_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open((root / rel).string()));
      shards[shard] = file.get();
      PENG_RETURN_IF_ERROR(model->AddFile(std::move(file)));
    }
    for (const auto& [name, shard] : weight_map) {
      if (shards[shard]->Find(name) == nullptr) {
        return absl::NotFoundError(absl::StrCat(index_path.string(), ": tensor '", name,
                                                "' is not in its shard ", shard));
      }
    }
  } else if (fs::is_regular_file(single_path, ec)) {
    PENG_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path.string()));
    PENG_RETURN_IF_ERROR(model->AddFile(std::move(file)));
  } else {
    return absl::NotFoundError(absl::StrCat("no model.safetensors or model.safetensors.index.json in ",
                                            dir));
  }
  std::sort(model->tensors_.begin(), model->tensors_.end(),
            [](const SafetensorsTensor* a, const SafetensorsTensor* b) { return a->name < b->name; });
  return model;
}

absl::Status SafetensorsModel::AddFile(std::unique_ptr<SafetensorsFile> file) {
  for (const SafetensorsTensor& t : file->tensors()) {
    auto [it, inserted] = by_name_.emplace(t.name, &t);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' is in two shards of ",
                                                     dir_, " (", file->path(), ")"));
    }
    tensors_.push_back(&t);
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

const SafetensorsTensor* SafetensorsModel::Find(std::string_view name) const {
  auto it = by_name_.find(absl::string_view(name.data(), name.size()));
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace peng
