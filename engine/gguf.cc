#include "engine/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace peng {
namespace {

using kernels::GgmlType;

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxStringBytes = 1ull << 30;
constexpr uint64_t kMaxArrayElems = 1ull << 28;
constexpr uint64_t kMaxTensors = 1ull << 20;
constexpr uint64_t kMaxMetadata = 1ull << 20;
constexpr uint64_t kMaxKeyBytes = 65535;  // the GGUF spec's limit
constexpr uint32_t kMaxDims = 4;
constexpr int kMaxNesting = 4;
// The fewest bytes a metadata entry (key length, type, a 1-byte value) and a tensor info (name
// length, dims count, one dim, type, offset) can take: a count that cannot fit is caught early.
constexpr uint64_t kMinMetadataBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

// Every problem with the file's bytes is DataLoss: the file is bad, not the caller's argument.
absl::Status Corrupt(absl::string_view message) { return absl::DataLossError(message); }

// A name read from the file, safe to print: non-printable bytes escaped, long names cut.
std::string Shown(absl::string_view name) {
  constexpr size_t kMaxShown = 80;
  return name.size() <= kMaxShown ? absl::CHexEscape(name)
                                  : absl::StrCat(absl::CHexEscape(name.substr(0, kMaxShown)), "...");
}

// Keys and tensor names are printable ASCII; anything else is a corrupt length or table.
bool IsPrintableName(absl::string_view name) {
  return !name.empty() &&
         std::all_of(name.begin(), name.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; });
}

// Bounds-checked little-endian cursor over the file bytes.
class Cursor {
 public:
  explicit Cursor(std::span<const uint8_t> b) : b_(b) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return b_.size() - pos_; }

  template <typename T>
  absl::Status Read(T* out, absl::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what, sizeof(T));
    std::memcpy(out, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }
  absl::Status ReadString(std::string* out, absl::string_view what) {
    uint64_t n = 0;
    PENG_RETURN_IF_ERROR(Read(&n, what));
    if (n > kMaxStringBytes) {
      return Corrupt(absl::StrCat(what, ": string length ", n, " at offset ", pos_ - 8, " is implausible"));
    }
    if (remaining() < n) {
      return Corrupt(absl::StrCat("truncated or corrupt file: ", what, ": a string of ", n, " bytes at offset ",
                                  pos_, " exceeds the file (", remaining(), " bytes left)"));
    }
    out->assign(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return absl::OkStatus();
  }
  absl::Status Truncated(absl::string_view what, uint64_t need) const {
    return Corrupt(absl::StrCat("truncated file: ", what, " needs ", need, " bytes at offset ", pos_, ", ",
                                remaining(), " left"));
  }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

absl::Status ReadValue(Cursor& c, GgufType type, const std::string& key, int depth,
                       GgufValue* v) {
  v->type = type;
  switch (type) {
#define PENG_GGUF_INT(enum_name, ctype)                        \
  case GgufType::enum_name: {                                  \
    ctype x = 0;                                                   \
    PENG_RETURN_IF_ERROR(c.Read(&x, key));                     \
    if constexpr (std::is_signed_v<ctype>) {                   \
      v->i = x;                                                \
      v->u = static_cast<uint64_t>(x);                         \
    } else {                                                   \
      v->u = x;                                                \
      v->i = static_cast<int64_t>(x);                          \
    }                                                          \
    v->f = static_cast<double>(x);                             \
    return absl::OkStatus();                                   \
  }
    PENG_GGUF_INT(kUint8, uint8_t)
    PENG_GGUF_INT(kInt8, int8_t)
    PENG_GGUF_INT(kUint16, uint16_t)
    PENG_GGUF_INT(kInt16, int16_t)
    PENG_GGUF_INT(kUint32, uint32_t)
    PENG_GGUF_INT(kInt32, int32_t)
    PENG_GGUF_INT(kUint64, uint64_t)
    PENG_GGUF_INT(kInt64, int64_t)
#undef PENG_GGUF_INT
    case GgufType::kFloat32: {
      float x = 0;
      PENG_RETURN_IF_ERROR(c.Read(&x, key));
      v->f = x;
      return absl::OkStatus();
    }
    case GgufType::kFloat64:
      return c.Read(&v->f, key);
    case GgufType::kBool: {
      uint8_t x = 0;
      PENG_RETURN_IF_ERROR(c.Read(&x, key));
      if (x > 1) return Corrupt(absl::StrCat(key, ": bool value ", int(x), " at offset ", c.pos() - 1));
      v->u = x;
      v->i = x;
      return absl::OkStatus();
    }
    case GgufType::kString:
      return c.ReadString(&v->s, key);
    case GgufType::kArray: {
      if (depth >= kMaxNesting) {
        return Corrupt(absl::StrCat(key, ": arrays nested more than ", kMaxNesting, " deep"));
      }
      uint32_t et = 0;
      uint64_t n = 0;
      PENG_RETURN_IF_ERROR(c.Read(&et, key));
      PENG_RETURN_IF_ERROR(c.Read(&n, key));
      if (et > static_cast<uint32_t>(GgufType::kFloat64)) {
        return Corrupt(absl::StrCat(key, ": unknown array element type ", et, " at offset ", c.pos() - 12));
      }
      if (n > kMaxArrayElems) {
        return Corrupt(absl::StrCat(key, ": array length ", n, " at offset ", c.pos() - 8, " is implausible"));
      }
      // Every element takes at least one byte: a count beyond the bytes left cannot fit.
      if (n > c.remaining()) {
        return Corrupt(absl::StrCat("truncated or corrupt file: ", key, ": an array of ", n, " elements at offset ",
                                    c.pos() - 8, " exceeds the file (", c.remaining(), " bytes left)"));
      }
      v->elem_type = static_cast<GgufType>(et);
      v->array.resize(n);
      for (uint64_t k = 0; k < n; ++k) {
        PENG_RETURN_IF_ERROR(ReadValue(c, v->elem_type, key, depth + 1, &v->array[k]));
      }
      return absl::OkStatus();
    }
  }
  return Corrupt(absl::StrCat(key, ": unknown value type ", static_cast<uint32_t>(type)));
}

absl::Status TypeError(absl::string_view key, const GgufValue& v, absl::string_view want) {
  return Corrupt(absl::StrCat("GGUF key ", key, " is ", GgufTypeName(v.type), ", expected ", want));
}

}  // namespace

const char* GgufTypeName(GgufType t) {
  static const char* kNames[] = {"uint8", "int8",  "uint16", "int16", "uint32", "int32", "float32",
                                 "bool",  "string", "array", "uint64", "int64", "float64"};
  auto i = static_cast<uint32_t>(t);
  return i < 13 ? kNames[i] : "unknown";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kUint16: case GgufType::kInt16:
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kUint64: case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}

int64_t GgufTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  // MappedFile calls a path that is no regular file (a device, a FIFO) an InvalidArgument; here
  // it is one more file that is not a GGUF.
  if (!file.ok() && absl::IsInvalidArgument(file.status())) return Corrupt(file.status().message());
  if (!file.ok()) return file.status();
  return Parse(*std::move(file));
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(std::unique_ptr<MappedFile> file) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->path_ = file->path();
  std::span<const uint8_t> bytes(file->data(), file->size());
  g->file_ = std::move(file);
  PENG_RETURN_IF_ERROR(Annotate(g->ParseAll(bytes), g->path_));
  return g;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::ParseBuffer(absl::string_view name,
                                                                std::span<const uint8_t> bytes) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->path_ = std::string(name);
  g->owned_.assign(bytes.begin(), bytes.end());
  PENG_RETURN_IF_ERROR(Annotate(g->ParseAll(g->owned_), g->path_));
  return g;
}

absl::Status GgufFile::ParseAll(std::span<const uint8_t> bytes) {
  Cursor c(bytes);
  uint32_t magic = 0;
  PENG_RETURN_IF_ERROR(c.Read(&magic, "magic"));
  if (magic != kMagic) return Corrupt("not a GGUF file (bad magic)");
  PENG_RETURN_IF_ERROR(c.Read(&version_, "version"));
  if (version_ != 2 && version_ != 3) {
    return Corrupt(absl::StrCat("unsupported GGUF version ", version_, " (Peng reads 2 and 3)"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  PENG_RETURN_IF_ERROR(c.Read(&n_tensors, "tensor count"));
  PENG_RETURN_IF_ERROR(c.Read(&n_kv, "metadata count"));
  if (n_tensors > kMaxTensors) return Corrupt(absl::StrCat("implausible tensor count ", n_tensors));
  if (n_kv > kMaxMetadata) return Corrupt(absl::StrCat("implausible metadata count ", n_kv));
  const uint64_t min_header = n_kv * kMinMetadataBytes + n_tensors * kMinTensorInfoBytes;
  if (min_header > c.remaining()) {
    return Corrupt(absl::StrCat("truncated file: the header declares ", n_kv, " metadata entries and ", n_tensors,
                                " tensors, which need at least ", min_header, " bytes after offset ", c.pos(),
                                "; the file has ", c.remaining()));
  }

  kv_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    const size_t key_offset = c.pos();
    std::string key;
    PENG_RETURN_IF_ERROR(c.ReadString(&key, absl::StrCat("metadata key #", k)));
    if (key.size() > kMaxKeyBytes || !IsPrintableName(key)) {
      return Corrupt(absl::StrCat("metadata key #", k, " at offset ", key_offset, " is not a valid key (",
                                  key.size(), " bytes: \"", Shown(key), "\"); keys are 1 to ", kMaxKeyBytes,
                                  " bytes of printable ASCII"));
    }
    uint32_t type = 0;
    PENG_RETURN_IF_ERROR(c.Read(&type, key));
    if (type > static_cast<uint32_t>(GgufType::kFloat64)) {
      return Corrupt(absl::StrCat("metadata ", key, ": unknown value type ", type, " at offset ", c.pos() - 4));
    }
    GgufValue v;
    PENG_RETURN_IF_ERROR(ReadValue(c, static_cast<GgufType>(type), key, 0, &v));
    if (!kv_index_.emplace(key, kv_.size()).second) {
      return Corrupt(absl::StrCat("duplicate metadata key ", key));
    }
    kv_.emplace_back(std::move(key), std::move(v));
  }

  uint64_t alignment = 32;
  if (const GgufValue* a = Find("general.alignment")) {
    if (!a->is_integer() || a->u == 0 || a->u > (1u << 20) || (a->u & (a->u - 1)) != 0) {
      return Corrupt("general.alignment must be a power of two <= 1 MiB");
    }
    alignment = a->u;
  }

  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    const size_t name_offset = c.pos();
    GgufTensor t;
    PENG_RETURN_IF_ERROR(c.ReadString(&t.name, absl::StrCat("tensor #", k, " name")));
    if (!IsPrintableName(t.name)) {
      return Corrupt(absl::StrCat("tensor #", k, " at offset ", name_offset, ": name of ", t.name.size(),
                                  " bytes is not printable ASCII: \"", Shown(t.name), "\""));
    }
    uint32_t n_dims = 0;
    PENG_RETURN_IF_ERROR(c.Read(&n_dims, t.name));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return Corrupt(absl::StrCat("tensor ", t.name, ": ", n_dims, " dimensions (1..4 allowed)"));
    }
    int64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      int64_t dim = 0;
      PENG_RETURN_IF_ERROR(c.Read(&dim, t.name));
      if (dim <= 0 || dim > (int64_t{1} << 40) || elems > std::numeric_limits<int64_t>::max() / dim) {
        return Corrupt(absl::StrCat("tensor ", t.name, ": bad dimension ", d, " = ", dim));
      }
      elems *= dim;
      t.shape.push_back(dim);
    }
    uint32_t type = 0;
    PENG_RETURN_IF_ERROR(c.Read(&type, t.name));
    const kernels::GgmlTypeTraits* tr = kernels::FindGgmlType(type);
    if (tr == nullptr) return Corrupt(absl::StrCat("tensor ", t.name, ": unknown GGML type id ", type));
    t.type = static_cast<GgmlType>(type);
    if (t.shape[0] % tr->block_elems != 0) {
      return Corrupt(absl::StrCat("tensor ", t.name, ": row length ", t.shape[0], " is not a multiple of the ",
                                  tr->name, " block size ", tr->block_elems));
    }
    t.nbytes = static_cast<size_t>(elems / tr->block_elems) * tr->block_bytes;
    PENG_RETURN_IF_ERROR(c.Read(&t.offset, t.name));
    if (t.offset % alignment != 0) {
      return Corrupt(absl::StrCat("tensor ", t.name, ": offset ", t.offset, " is not aligned to ", alignment));
    }
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      return Corrupt(absl::StrCat("duplicate tensor name ", t.name));
    }
    tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = (c.pos() + alignment - 1) / alignment * alignment;
  if (data_start > bytes.size() && !tensors_.empty()) {
    return Corrupt("truncated file: tensor data section is missing");
  }
  const uint64_t data_size = bytes.size() - std::min<uint64_t>(data_start, bytes.size());
  for (GgufTensor& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      return Corrupt(absl::StrCat("tensor ", t.name, " (", kernels::Traits(t.type).name, ") needs bytes [",
                                  data_start + t.offset, ", ", data_start + t.offset + t.nbytes,
                                  ") but the file has ", bytes.size(),
                                  ": a truncated file, or a wrong type or shape in the tensor table"));
    }
    t.data = bytes.data() + data_start + t.offset;
  }
  // Each tensor's bytes are its own: an overlap means a wrong type or shape in the table (the
  // model would read another tensor's bytes as its own).
  std::vector<const GgufTensor*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const GgufTensor& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensor& a = *by_offset[i - 1];
    const GgufTensor& b = *by_offset[i];
    if (a.offset + a.nbytes > b.offset) {
      return Corrupt(absl::StrCat("tensor ", a.name, " (", kernels::Traits(a.type).name, ", data-section bytes [",
                                  a.offset, ", ", a.offset + a.nbytes, ")) overlaps tensor ", b.name,
                                  " (from byte ", b.offset, "): a wrong type or shape in the tensor table"));
    }
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(absl::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensor* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<int64_t> GgufFile::GetInt(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF key ", key, " is missing"));
  if (!v->is_integer()) return TypeError(key, *v, "an integer");
  if (v->type == GgufType::kUint64 && v->u > uint64_t{std::numeric_limits<int64_t>::max()}) {
    return Corrupt(absl::StrCat("GGUF key ", key, " is out of range"));
  }
  return v->i;
}

absl::StatusOr<double> GgufFile::GetFloat(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF key ", key, " is missing"));
  if (!v->is_number()) return TypeError(key, *v, "a number");
  return v->f;
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF key ", key, " is missing"));
  if (v->type != GgufType::kBool && !v->is_integer()) return TypeError(key, *v, "a bool");
  return v->u != 0;
}

absl::StatusOr<std::string> GgufFile::GetString(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF key ", key, " is missing"));
  if (v->type != GgufType::kString) return TypeError(key, *v, "a string");
  return v->s;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF key ", key, " is missing"));
  if (v->type != GgufType::kArray || v->elem_type != GgufType::kString) {
    return TypeError(key, *v, "an array of strings");
  }
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) out.push_back(e.s);
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF key ", key, " is missing"));
  if (v->type != GgufType::kArray || (v->array.size() > 0 && !v->array[0].is_number())) {
    return TypeError(key, *v, "an array of numbers");
  }
  std::vector<float> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) out.push_back(static_cast<float>(e.f));
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF key ", key, " is missing"));
  if (v->type != GgufType::kArray || (v->array.size() > 0 && !v->array[0].is_integer())) {
    return TypeError(key, *v, "an array of integers");
  }
  std::vector<int64_t> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) out.push_back(e.i);
  return out;
}

absl::StatusOr<int64_t> GgufFile::GetIntOr(absl::string_view key, int64_t def) const {
  return Find(key) ? GetInt(key) : def;
}
absl::StatusOr<double> GgufFile::GetFloatOr(absl::string_view key, double def) const {
  return Find(key) ? GetFloat(key) : def;
}
absl::StatusOr<bool> GgufFile::GetBoolOr(absl::string_view key, bool def) const {
  return Find(key) ? GetBool(key) : def;
}
absl::StatusOr<std::string> GgufFile::GetStringOr(absl::string_view key, std::string def) const {
  return Find(key) ? GetString(key) : def;
}

}  // namespace peng
