// Device memory for the CUDA worker: DeviceBuffer owns one cudaMalloc'd region (RAII; no managed
// memory), DeviceArena hands out 256-byte aligned pieces of one buffer by bumping an offset.
// The worker keeps one arena for the weights (sized exactly at load) and one for per-batch
// scratch (reset per batch, regrown when a batch needs more). Owned by one thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace peng::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes, const char* what);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class DeviceArena {
 public:
  static constexpr size_t kAlignment = 256;
  static size_t Round(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

  // Makes sure the arena holds at least `bytes` (reallocating, which invalidates every pointer
  // taken so far, when it is smaller), then resets it.
  absl::Status Reserve(size_t bytes, const char* what);
  void Reset() { used_ = 0; }

  // The next `count` elements; Internal error when the arena is full (a sizing bug).
  template <typename T>
  absl::StatusOr<T*> Take(size_t count) {
    auto p = TakeBytes(count * sizeof(T));
    if (!p.ok()) return p.status();
    return reinterpret_cast<T*>(*p);
  }
  absl::StatusOr<uint8_t*> TakeBytes(size_t bytes);

  size_t capacity() const { return buffer_.size(); }
  const uint8_t* base() const { return buffer_.data(); }

 private:
  DeviceBuffer buffer_;
  size_t used_ = 0;
};

}  // namespace peng::cuda
