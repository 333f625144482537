// ForwardBackend: the one interface a worker's batched forward pass is reached through, so the
// engine loop and the CLI run the CPU worker (LlamaForward, forward.h) or the CUDA worker
// (CudaForward, engine/cuda/) alike. A batch is a list of SequenceChunks (prefill chunks and
// decodes of different sequences mixed); the output holds the logits rows the chunks asked for.
// A backend is owned and called by one thread; it owns its scratch (host or device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"

namespace peng {

// One sequence's slice of a batch: tokens at positions [start_pos, start_pos + tokens.size()).
struct SequenceChunk {
  int64_t seq = 0;               // KvCache sequence id
  int64_t start_pos = 0;         // tokens before this chunk are already in the cache
  std::span<const int32_t> tokens;
  enum class Logits { kNone, kLast, kAll } logits = Logits::kLast;
  // The sequence's prompt length: positions below it hold prompt tokens, the rest generated
  // ones (0: treat every token as generated). A backend may run a long prompt's tokens through
  // other kernels (the CPU worker: AMX, forward.h), so a sequence's rows get the same
  // arithmetic whatever else is in the batch only if this is the same in every batch.
  int64_t prompt_len = 0;
};

struct ForwardBatch {
  std::vector<SequenceChunk> chunks;
};

// Logits rows, in chunk order, for the positions each chunk asked for.
struct ForwardOutput {
  int64_t vocab_size = 0;
  std::vector<float> logits;  // [rows x vocab_size]
  int64_t rows() const { return vocab_size ? static_cast<int64_t>(logits.size()) / vocab_size : 0; }
  std::span<const float> row(int64_t r) const {
    return {logits.data() + r * vocab_size, static_cast<size_t>(vocab_size)};
  }
};

class ForwardBackend {
 public:
  virtual ~ForwardBackend() = default;

  // Reserves KV for every chunk (nothing changes if any reservation fails), then runs the
  // batch through every layer and fills `out` with the requested logits rows.
  virtual absl::Status Forward(const ForwardBatch& batch, KvCache& kv, ForwardOutput* out) = 0;

  // Memory for memory/'s KV page pool where this backend reads KV: `bytes` of device memory,
  // owned by the backend and valid until it is destroyed. nullptr (the default) means host
  // memory: the pool allocates its own.
  virtual absl::StatusOr<uint8_t*> KvPoolMemory(size_t bytes) { return nullptr; }

  // Prompts of at least this many tokens compute their prompt positions on other kernels than
  // generated tokens (the CPU's AMX path, ForwardOptions::amx_prompts); 0: every position takes
  // the same kernels. The prefix cache keeps KV computed one way apart from KV computed the other.
  virtual int64_t PromptPathMinTokens() const { return 0; }

  // Runs fn(begin, end) over pieces covering [0, n) on this backend's host threads, for host
  // work between forward passes (LeanKV's compression); called from the thread that calls
  // Forward. Serial by default.
  virtual void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn) { fn(0, n); }
};

// Totals of a batch, after checking it against the model (every chunk non-empty, inside the
// context, token ids inside the vocabulary): InvalidArgument naming the chunk otherwise.
struct BatchTotals {
  int64_t tokens = 0;      // all chunks' tokens
  int64_t logit_rows = 0;  // rows the chunks ask logits for
  int64_t max_kv = 0;      // longest history after the batch
  int64_t max_chunk = 0;   // longest chunk
};
absl::StatusOr<BatchTotals> CheckBatch(const ForwardBatch& batch, const ModelConfig& config);

}  // namespace peng
