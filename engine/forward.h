// LlamaForward: the batched forward pass of a Llama-family model on the CPU. One call runs
// several sequences of different lengths (prefill chunks and single-token decodes mixed) through
// every layer, writing new K/V into and attending over a KvCache. Owned by one worker thread; it
// owns its thread pool and scratch buffers, which grow to the largest batch seen.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "base/huge_pages.h"
#include "base/thread_pool.h"
#include "engine/cpu_attention.h"
#include "engine/forward_backend.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace peng {

struct ForwardOptions {
  int num_threads = 2;
  // Batches with at least this many tokens run their matmuls as dequantize + oneDNN sgemm;
  // smaller ones use the fused dequantizing kernels (measured crossover: engine/README.md).
  int blas_min_tokens = 64;
  // Interleaved matmuls (kernels/cpu/interleaved.h) quantize their activations to int8 per 32-column block and
  // run the VNNI kernel (~3.5x the float kernel's rate; kernels/cpu/interleaved.h). false keeps
  // float32 activations: logits within ~1e-5 of a float64 reference, for checking against one.
  bool int8_activations = true;
  // With int8 activations on a CPU with AMX-BF16: the tokens of prompts of at least
  // `amx_min_prompt` tokens run their matmuls on the AMX kernel (kernels/cpu/amx.h; bfloat16
  // activations; prefill 1.4-1.6x from 128 tokens on), every other token on the int8 kernel.
  // Which kernel a token takes depends only on its sequence (SequenceChunk::prompt_len), so
  // results stay batch-invariant. Shorter prompts stay on the int8 kernel: the AMX kernel
  // dequantizes the weights in every call, which fewer tokens do not repay (break-even ~64).
  bool amx_prompts = true;
  int amx_min_prompt = 64;
  // With amx_prompts: the same tokens (prompts of amx_min_prompt tokens or more) run their
  // attention on AMX tiles too (kernels/cpu/amx_attention.h; bfloat16 queries, keys, values and
  // probabilities), for dense or quantized KV (not LeanKV) and head_dim 64 or 128, whatever the
  // weights' type (float matrices keep their matmuls on the float kernels). false keeps it on
  // the float vector kernels (for measuring one against the other).
  bool amx_attention = true;
  // Each pool thread (the caller included) on a CPU of its own (base/thread_pool.h).
  Pinning pinning = Pinning::kNone;
};

class LlamaForward : public ForwardBackend {
 public:
  LlamaForward(const Model& model, const ForwardOptions& options);

  // Reserves KV for every chunk (nothing changes if any reservation fails), then runs the batch.
  absl::Status Forward(const ForwardBatch& batch, KvCache& kv, ForwardOutput* out) override;
  int64_t PromptPathMinTokens() const override { return amx_ ? options_.amx_min_prompt : 0; }
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn) override { pool_.ParallelFor(n, 1, fn); }

  // Finds the generated attention kernels for this model and KV `format` now (Forward does it
  // on first use); the error names the variant tuple that was not built.
  absl::Status PrepareAttention(kernels::KvFormat format) { return attention_.Prepare(format); }
  absl::Status PrepareAttention(kernels::KvFormat high, kernels::KvFormat low) {
    return attention_.Prepare(high, low);
  }

 private:
  // Rows [begin, end) of a batch that take the same matmul kernel: the AMX kernel (prompt
  // tokens, see ForwardOptions::amx_prompts) or the int8 one.
  struct RowSegment {
    int64_t begin, end;
    bool amx;
  };
  // A 64-byte-aligned buffer that grows (zeroed) and never shrinks.
  struct AlignedScratch {
    HugeBuffer data;
    size_t bytes = 0;
    uint8_t* Grow(size_t n);
  };
  // One matmul input in the forms the interleaved kernels read, kept across calls: int8 codes
  // and scales (QuantizeActivations' layout) for rows on the int8 kernel, bfloat16 for rows on
  // the AMX kernel. Row t is at index t in either form.
  struct MatMulInput {
    std::vector<int8_t> codes;
    std::vector<float> scales;
    AlignedScratch bf16;  // kAmxTokenBlock rows beyond the last: the AMX kernel reads 32-row blocks
    void Reserve(int64_t n, int64_t cols, bool amx);  // room for n tokens (bfloat16 ones with amx)
    // Rows [t0, t1) of x, each in the form its segment's kernel reads.
    void Prepare(const float* x, int64_t cols, int64_t t0, int64_t t1, std::span<const RowSegment> segments);
    const uint16_t* bf16_row(int64_t t, int64_t cols) const {
      return reinterpret_cast<const uint16_t*>(bf16.data.get()) + t * cols;
    }
    uint16_t* bf16_row(int64_t t, int64_t cols) { return reinterpret_cast<uint16_t*>(bf16.data.get()) + t * cols; }
  };
  // xq (optional): x already prepared by the caller, for the interleaved kernels.
  struct MatMulJob {
    const kernels::MatrixView* w;
    const float* x;
    float* y;
    const MatMulInput* xq = nullptr;
  };
  // y_j = x_j · W_jᵀ for every job over the same n tokens (of kernels `segments`), in one pass
  // of the pool: each thread takes the pieces of its own share of every matrix's rows in order,
  // then the other threads' last pieces. With an `epilogue` every matrix has the same rows, and
  // a piece computes rows [r0, r1) of each, then runs epilogue(r0, r1) (so elementwise ops on
  // the outputs need no barrier).
  void MatMuls(std::initializer_list<MatMulJob> jobs, int64_t n, std::span<const RowSegment> segments,
               const std::function<void(int64_t, int64_t)>& epilogue = nullptr);
  void RunLayer(int layer, const ForwardBatch& batch, KvCache& kv, int64_t n);
  // Whether the int8 kernels will read `w`, so that a normed input is worth quantizing in the
  // norm's own pass (the values MatMuls would compute, without a pass of their own).
  bool Int8Reads(const kernels::MatrixView& w) const;
  // RMSNorm of rows [b, e) of x_ with `weight` into xn_; with `quantize`, also their copy for
  // the interleaved kernels into xn_q_.
  void NormRows(int64_t b, int64_t e, const std::vector<float>& weight, bool quantize);

  const Model& model_;
  const ModelConfig& c_;
  ForwardOptions options_;
  const bool amx_;  // prompts may take the AMX kernel (asked before the pool's threads start)
  ThreadPool pool_;
  CpuAttention attention_;
  // Scratch, [tokens x width] row-major.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, row_scratch_, dense_w_;
  std::vector<int64_t> pos_;       // position of each batch token
  std::vector<int32_t> chunk_of_;  // chunk index of each batch token
  std::vector<uint8_t> row_amx_;            // per batch row: 1 when it takes the AMX kernel
  std::vector<RowSegment> segments_;        // the batch's rows by kernel
  std::vector<RowSegment> logit_segments_;  // the LM head's rows by kernel
  std::vector<float> rope_cos_, rope_sin_;  // [tokens x rope_dim / 2]: angles shared by all layers
  // Matmul inputs: shared by all threads for large batches; for small ones each thread
  // prepares every token itself (a few microseconds) instead of paying a pool barrier.
  std::vector<MatMulInput> inputs_shared_;                   // [input]
  MatMulInput xn_q_;                                         // xn_'s copy, made by NormRows
  std::vector<std::vector<MatMulInput>> inputs_per_thread_;  // [thread][input]
  std::vector<AlignedScratch> amx_scratch_;                  // [thread]
  // MatMuls' work: rows [r0, r1) of job `job` (of every job when job < 0); its owner's rows of
  // that job end at owner_end.
  struct RowRange {
    int job;
    int64_t r0, r1, owner_end;
  };
  // One thread's pieces, indices [front, back) of row_ranges_ in one word: the owner takes from
  // the front, the other threads from the back. A cache line each.
  struct alignas(64) Claim {
    std::atomic<uint64_t> span{0};
    void Reset(size_t front, size_t back) { span.store(uint64_t{back} << 32 | front, std::memory_order_relaxed); }
    int64_t TakeFront();  // an index, or -1 when none is left
    int64_t TakeBack();
  };
  std::vector<RowRange> row_ranges_;
  std::vector<Claim> claims_;  // [thread]
};

}  // namespace peng
