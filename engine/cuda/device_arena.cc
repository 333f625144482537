#include "engine/cuda/device_arena.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_status.h"

namespace peng::cuda {

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes, const char* what) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  void* p = nullptr;
  PENG_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&p, bytes), absl::StrCat("cudaMalloc ", bytes,
                                                                       " bytes for ", what)));
  b.data_ = static_cast<uint8_t*>(p);
  b.size_ = bytes;
  return b;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);  // nothing to do about a failure in a destructor
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

absl::Status DeviceArena::Reserve(size_t bytes, const char* what) {
  used_ = 0;
  if (bytes <= buffer_.size()) return absl::OkStatus();
  buffer_ = DeviceBuffer();  // free first so the old and new buffers never coexist
  PENG_ASSIGN_OR_RETURN(buffer_, DeviceBuffer::Allocate(bytes, what));
  return absl::OkStatus();
}

absl::StatusOr<uint8_t*> DeviceArena::TakeBytes(size_t bytes) {
  const size_t rounded = Round(bytes);
  if (used_ + rounded > buffer_.size()) {
    return absl::InternalError(absl::StrCat("device arena: ", bytes, " bytes requested, ",
                                            buffer_.size() - used_, " left of ", buffer_.size()));
  }
  uint8_t* p = buffer_.data() + used_;
  used_ += rounded;
  return p;
}

}  // namespace peng::cuda
