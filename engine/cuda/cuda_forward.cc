#include "engine/cuda/cuda_forward.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "engine/cuda/cuda_attention.h"
#include "engine/cuda/cuda_status.h"
#include "engine/cuda/cuda_weights.h"
#include "engine/cuda/device_arena.h"
#include "engine/cuda/gemm.h"
#include "engine/cuda/ops.h"
#include "kernels/cuda/dequantize.h"

namespace peng {

using cuda::Bf16;
using cuda::CudaStatus;

namespace {

// Page-locked host memory for the per-batch metadata upload (so the copy is truly async).
class PinnedInts {
 public:
  ~PinnedInts() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  bool Fits(size_t count) const { return count <= capacity_; }
  absl::Status Reserve(size_t count) {
    if (Fits(count)) return absl::OkStatus();
    const size_t want = std::max(count, 2 * capacity_);  // grows geometrically
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = nullptr;
    capacity_ = 0;
    void* p = nullptr;
    PENG_RETURN_IF_ERROR(CudaStatus(cudaMallocHost(&p, want * sizeof(int32_t)),
                                    "cudaMallocHost for batch metadata"));
    data_ = static_cast<int32_t*>(p);
    capacity_ = want;
    return absl::OkStatus();
  }
  int32_t* data() const { return data_; }

 private:
  int32_t* data_ = nullptr;
  size_t capacity_ = 0;
};

// What a step's launches depend on besides the metadata's contents: two steps of one shape run
// the same launches with the same arguments, so a decode step's launches are captured once
// per shape into a CUDA graph and replayed (one launch per step instead of ~10 per layer).
struct StepShape {
  int64_t tokens = 0, logit_rows = 0;
  int seqs = 0, max_pages = 0;
  int64_t max_kv = 0, max_chunk = 0;
  const uint8_t* kv_base = nullptr;
  auto Key() const { return std::tie(tokens, logit_rows, seqs, max_pages, max_kv, max_chunk, kv_base); }
  bool operator<(const StepShape& o) const { return Key() < o.Key(); }
};

// Decode steps (one token per sequence) round their page-table width up to a power of two and
// size attention for that many pages, so that shapes repeat as histories grow: the kernels
// read each sequence's own length, and the splits past it are empty. Other steps use the
// exact widths.
StepShape ShapeOf(const ForwardBatch& batch, const BatchTotals& tot, int tokens_per_page,
                  const uint8_t* kv_base) {
  StepShape s;
  s.tokens = tot.tokens;
  s.logit_rows = tot.logit_rows;
  s.seqs = static_cast<int>(batch.chunks.size());
  s.max_chunk = tot.max_chunk;
  s.kv_base = kv_base;
  const int64_t pages = (tot.max_kv + tokens_per_page - 1) / tokens_per_page;
  if (tot.max_chunk == 1) {
    int64_t width = 1;
    while (width < pages) width *= 2;
    s.max_pages = static_cast<int>(width);
    s.max_kv = width * tokens_per_page;
  } else {
    s.max_pages = static_cast<int>(pages);
    s.max_kv = tot.max_kv;
  }
  return s;
}

// An instantiated graph, destroyed with its owner.
class GraphExec {
 public:
  explicit GraphExec(cudaGraphExec_t exec) : exec_(exec) {}
  ~GraphExec() { cudaGraphExecDestroy(exec_); }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  cudaGraphExec_t get() const { return exec_; }

 private:
  cudaGraphExec_t exec_;
};

// Decode graphs kept at most; past it the cache starts over (shapes drift as batches change).
constexpr size_t kMaxGraphs = 64;

}  // namespace

struct CudaForward::Impl {
  Impl(const Model& m, const CudaForwardOptions& o) : model(m), c(m.config), options(o) {}
  ~Impl() {
    // Members that free device memory run after this; make sure no work still uses it.
    if (stream != nullptr) {
      cudaStreamSynchronize(stream);
    }
    graphs.clear();
    weights.reset();
    gemm.reset();
    scratch = cuda::DeviceArena();
    kv_pools.clear();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  absl::Status Init();
  absl::Status Run(const ForwardBatch& batch, const BatchTotals& tot, KvCache& kv, ForwardOutput* out);

  // Per-step device pointers, carved from `scratch` in a fixed order for a shape.
  struct Buffers {
    int32_t* meta;
    uint8_t* embd;
    float *x, *wide_out, *q, *attn, *logits;
    Bf16* act;
    uint8_t* workspace;
    size_t workspace_bytes;
    size_t num_ints;
  };
  // Everything a step does on the stream from the metadata upload to the LM head's logits
  // (not their copy to the host): what a decode graph holds.
  absl::Status Enqueue(const StepShape& shape, const KvPageLayout& layout, const Buffers& buf);
  // Runs Enqueue through the graph of `shape`, capturing and instantiating it the first time.
  absl::Status LaunchGraph(const StepShape& shape, const KvPageLayout& layout, const Buffers& buf);

  const Model& model;
  const ModelConfig& c;
  CudaForwardOptions options;
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::CudaWeights> weights;
  std::unique_ptr<cuda::Gemm> gemm;
  cuda::CudaAttention attention;
  cuda::DeviceArena scratch;
  PinnedInts meta;
  std::vector<cuda::DeviceBuffer> kv_pools;
  std::vector<kernels::KvSpan> spans;  // reused per (chunk, layer, head)
  // Decode graphs by shape. They hold pointers into `scratch` and `meta`: cleared before either
  // is reallocated.
  std::map<StepShape, std::unique_ptr<GraphExec>> graphs;
};

absl::Status CudaForward::Impl::Init() {
  PENG_ASSIGN_OR_RETURN(const int devices, cuda::CudaDeviceCount());
  if (options.device < 0 || options.device >= devices) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.device,
                                                   " does not exist (", devices, " found)"));
  }
  PENG_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA worker: ", c.num_heads, " heads over ",
                                                   c.num_kv_heads, " kv heads"));
  }
  PENG_ASSIGN_OR_RETURN(attention,
                        cuda::CudaAttention::Find(options.kv_format, c.head_dim, c.gqa_group()));
  PENG_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  PENG_ASSIGN_OR_RETURN(gemm, cuda::Gemm::Create(stream));
  PENG_ASSIGN_OR_RETURN(weights, cuda::CudaWeights::Upload(model, stream));
  return absl::OkStatus();
}

absl::Status CudaForward::Impl::Run(const ForwardBatch& batch, const BatchTotals& tot,
                                    KvCache& kv, ForwardOutput* out) {
  const KvPageLayout layout = kv.PageLayout();
  if (layout.base == nullptr) {
    return absl::FailedPreconditionError(
        "the CUDA worker needs a KV cache whose pages live in device memory (CudaKvCache, or "
        "memory/'s page pool over CudaForward::KvPoolMemory)");
  }
  if (layout.format != options.kv_format) {
    return absl::FailedPreconditionError(absl::StrCat(
        "KV pages are ", kernels::KvFormatName(layout.format), " but the CUDA worker's attention "
        "kernels were chosen for ", kernels::KvFormatName(options.kv_format)));
  }
  PENG_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));

  const StepShape shape = ShapeOf(batch, tot, layout.tokens_per_page, layout.base);
  const int S = shape.seqs, H = c.num_kv_heads, L = c.num_layers, max_pages = shape.max_pages;
  const int64_t n = shape.tokens, m = shape.logit_rows;
  const int64_t d = c.d_model, qd = int64_t{c.num_heads} * c.head_dim;
  const int64_t kvd = int64_t{H} * c.head_dim, ffn = c.ffn_dim, V = c.vocab_size;

  // Host metadata, one int32 array: ids | pos | seq | q_start | kv_len | rows | page tables.
  const int64_t tables_per_layer = int64_t{S} * H * max_pages;
  const size_t num_ints = 3 * n + (S + 1) + S + m + L * tables_per_layer;
  // Scratch, carved from one arena in this order (the same addresses for the same shape while
  // the arena is not regrown).
  Buffers buf;
  buf.num_ints = num_ints;
  buf.workspace_bytes = attention.WorkspaceBytes(S, c.num_heads, c.head_dim, static_cast<int>(shape.max_kv));
  const size_t embd_bytes = n * weights->embd_row_bytes;
  const int64_t wide = std::max(qd + 2 * kvd, 2 * ffn);
  const size_t sizes[] = {num_ints * sizeof(int32_t), embd_bytes, n * d * sizeof(float),
                          n * std::max({d, qd, ffn}) * sizeof(Bf16), n * wide * sizeof(float),
                          n * qd * sizeof(float), n * qd * sizeof(float), m * V * sizeof(float),
                          buf.workspace_bytes};
  size_t total = 0;
  for (size_t size : sizes) total += cuda::DeviceArena::Round(std::max<size_t>(size, 1));
  // The decode graphs hold pointers into `meta` and `scratch`: they are destroyed before either
  // is freed to regrow. Freeing first was followed by segfaults inside cudaGraphLaunch (3 in 50
  // serving rounds on an H200): a regrown buffer that landed at the freed one's address kept
  // the old graphs, which were then replayed against allocations the driver had released.
  if (!meta.Fits(num_ints) || total > scratch.capacity()) graphs.clear();
  PENG_RETURN_IF_ERROR(meta.Reserve(num_ints));
  int32_t* ids = meta.data();
  int32_t* pos = ids + n;
  int32_t* seq = pos + n;
  int32_t* q_start = seq + n;
  int32_t* kv_len = q_start + S + 1;
  int32_t* rows = kv_len + S;
  int32_t* tables = rows + m;
  int64_t t = 0, r = 0;
  for (int ci = 0; ci < S; ++ci) {
    const SequenceChunk& ch = batch.chunks[ci];
    const int64_t len = static_cast<int64_t>(ch.tokens.size());
    q_start[ci] = static_cast<int32_t>(t);
    kv_len[ci] = static_cast<int32_t>(ch.start_pos + len);
    if (ch.logits == SequenceChunk::Logits::kAll) {
      for (int64_t i = 0; i < len; ++i) rows[r++] = static_cast<int32_t>(t + i);
    } else if (ch.logits == SequenceChunk::Logits::kLast) {
      rows[r++] = static_cast<int32_t>(t + len - 1);
    }
    for (int64_t i = 0; i < len; ++i, ++t) {
      ids[t] = ch.tokens[i];
      pos[t] = static_cast<int32_t>(ch.start_pos + i);
      seq[t] = ci;
    }
  }
  q_start[S] = static_cast<int32_t>(t);
  std::fill(tables, tables + L * tables_per_layer, 0);
  for (int l = 0; l < L; ++l) {
    for (int ci = 0; ci < S; ++ci) {
      const SequenceChunk& ch = batch.chunks[ci];
      for (int h = 0; h < H; ++h) {
        kv.Spans(ch.seq, l, h, kv_len[ci], &spans);
        int32_t* row = tables + ((int64_t{l} * S + ci) * H + h) * max_pages;
        for (size_t i = 0; i < spans.size(); ++i) {
          // Address arithmetic only: the pointers are device pointers.
          const auto offset = reinterpret_cast<uintptr_t>(spans[i].k) -
                              reinterpret_cast<uintptr_t>(layout.base);
          if (offset % layout.page_bytes != 0 || spans[i].format != layout.format) {
            return absl::InternalError(absl::StrCat("KV span ", i, " of sequence ", ch.seq, " layer ", l,
                                                    " head ", h, " is not a page of the KV layout"));
          }
          row[i] = static_cast<int32_t>(offset / layout.page_bytes);
        }
      }
    }
  }

  PENG_RETURN_IF_ERROR(scratch.Reserve(total, "forward scratch"));
  PENG_ASSIGN_OR_RETURN(buf.meta, scratch.Take<int32_t>(num_ints));
  PENG_ASSIGN_OR_RETURN(buf.embd, scratch.TakeBytes(std::max<size_t>(embd_bytes, 1)));
  PENG_ASSIGN_OR_RETURN(buf.x, scratch.Take<float>(n * d));
  PENG_ASSIGN_OR_RETURN(buf.act, scratch.Take<Bf16>(n * std::max({d, qd, ffn})));
  PENG_ASSIGN_OR_RETURN(buf.wide_out, scratch.Take<float>(n * wide));
  PENG_ASSIGN_OR_RETURN(buf.q, scratch.Take<float>(n * qd));
  PENG_ASSIGN_OR_RETURN(buf.attn, scratch.Take<float>(n * qd));
  PENG_ASSIGN_OR_RETURN(buf.logits, scratch.Take<float>(std::max<int64_t>(m * V, 1)));
  PENG_ASSIGN_OR_RETURN(buf.workspace, scratch.TakeBytes(std::max<size_t>(buf.workspace_bytes, 1)));

  if (options.graphs && shape.max_chunk == 1) {
    PENG_RETURN_IF_ERROR(LaunchGraph(shape, layout, buf));
  } else {
    PENG_RETURN_IF_ERROR(Enqueue(shape, layout, buf));
  }
  out->vocab_size = V;
  out->logits.resize(static_cast<size_t>(m) * V);
  if (m > 0) {
    PENG_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out->logits.data(), buf.logits, m * V * sizeof(float),
                                              cudaMemcpyDeviceToHost, stream));
  }
  // Also keeps `meta` and the scratch from being reused while this batch still reads them.
  PENG_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status CudaForward::Impl::LaunchGraph(const StepShape& shape, const KvPageLayout& layout,
                                            const Buffers& buf) {
  auto it = graphs.find(shape);
  if (it == graphs.end()) {
    if (graphs.size() >= kMaxGraphs) graphs.clear();
    // Thread-local capture: other threads' CUDA calls (a KV pool allocation, say) go on as usual.
    PENG_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    const absl::Status enqueued = Enqueue(shape, layout, buf);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    if (!enqueued.ok() || ended != cudaSuccess) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      PENG_RETURN_IF_ERROR(Annotate(enqueued, "capturing a decode step"));
      return CudaStatus(ended, "cudaStreamEndCapture (decode step)");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    PENG_RETURN_IF_ERROR(CudaStatus(instantiated, "cudaGraphInstantiate (decode step)"));
    it = graphs.emplace(shape, std::make_unique<GraphExec>(exec)).first;
  }
  return CudaStatus(cudaGraphLaunch(it->second->get(), stream), "cudaGraphLaunch (decode step)");
}

absl::Status CudaForward::Impl::Enqueue(const StepShape& shape, const KvPageLayout& layout,
                                        const Buffers& buf) {
  const int S = shape.seqs, H = c.num_kv_heads, L = c.num_layers;
  const int64_t n = shape.tokens, m = shape.logit_rows;
  const int64_t d = c.d_model, hd = c.head_dim, qd = int64_t{c.num_heads} * hd;
  const int64_t kvd = int64_t{H} * hd, ffn = c.ffn_dim, V = c.vocab_size;
  const int tpp = layout.tokens_per_page;
  const int64_t tables_per_layer = int64_t{S} * H * shape.max_pages;

  PENG_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(buf.meta, meta.data(), buf.num_ints * sizeof(int32_t),
                                            cudaMemcpyHostToDevice, stream));
  const int32_t* d_ids = buf.meta;
  const int32_t* d_pos = d_ids + n;
  const int32_t* d_seq = d_pos + n;
  const int32_t* d_q_start = d_seq + n;
  const int32_t* d_kv_len = d_q_start + S + 1;
  const int32_t* d_rows = d_kv_len + S;
  const int32_t* d_tables = d_rows + m;
  float* x = buf.x;
  Bf16* act = buf.act;

  // Embedding: gather the rows in their stored blocks, dequantize them together.
  PENG_CUDA_RETURN_IF_ERROR(cuda::GatherRows(weights->token_embd, weights->embd_row_bytes, d_ids, n,
                                             buf.embd, stream));
  if (!kernels::cuda::DequantizeToF32(weights->embd_type, buf.embd, x, n * d, stream)) {
    return absl::UnimplementedError(absl::StrCat("no CUDA dequantizer for the token embedding's type ",
                                                 kernels::Traits(weights->embd_type).name));
  }
  PENG_CUDA_RETURN_IF_ERROR(cudaGetLastError());

  const cuda::QkvShape qkv_shape{c.num_heads, H, static_cast<int>(hd), c.rope_dim, c.rope_style};
  const bool prefill = shape.max_chunk > 1;
  cuda::AttentionLaunch launch;
  launch.num_seqs = S;
  launch.num_kv_heads = H;
  launch.q = buf.q;
  launch.out = buf.attn;
  launch.q_start = d_q_start;
  launch.kv_len = d_kv_len;
  launch.kv_base = layout.base;
  launch.page_bytes = layout.page_bytes;
  launch.tokens_per_page = tpp;
  launch.max_pages = shape.max_pages;
  launch.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  launch.max_q_len = static_cast<int>(shape.max_chunk);
  launch.max_kv_len = static_cast<int>(shape.max_kv);
  launch.workspace = buf.workspace;
  launch.workspace_bytes = buf.workspace_bytes;

  for (int l = 0; l < L; ++l) {
    const cuda::CudaLayerWeights& w = weights->layers[l];
    const int32_t* layer_tables = d_tables + l * tables_per_layer;
    PENG_CUDA_RETURN_IF_ERROR(cuda::RmsNormToBf16(x, nullptr, w.attn_norm, c.rms_eps,
                                                  static_cast<int>(d), n, act, stream));
    PENG_RETURN_IF_ERROR(gemm->Run(act, n, w.qkv, qd + 2 * kvd, d, buf.wide_out, false));
    cuda::KvStoreTarget target;
    // The cache hands out const spans; the worker owns the rows it writes (KvCache contract).
    target.base = const_cast<uint8_t*>(layout.base);
    target.page_bytes = layout.page_bytes;
    target.tokens_per_page = tpp;
    target.page_table = layer_tables;
    target.max_pages = shape.max_pages;
    target.format = layout.format;
    PENG_CUDA_RETURN_IF_ERROR(cuda::QkvEpilogue(buf.wide_out, w.qkv_bias, weights->rope_inv_freq, d_pos,
                                                d_seq, n, qkv_shape, target, buf.q, stream));
    launch.page_table = layer_tables;
    PENG_RETURN_IF_ERROR(Annotate(attention.Launch(launch, prefill, stream),
                                  absl::StrCat("layer ", l)));
    PENG_CUDA_RETURN_IF_ERROR(cuda::CastToBf16(buf.attn, n * qd, act, stream));
    PENG_RETURN_IF_ERROR(gemm->Run(act, n, w.wo, d, qd, x, /*accumulate=*/true));
    PENG_CUDA_RETURN_IF_ERROR(cuda::RmsNormToBf16(x, nullptr, w.ffn_norm, c.rms_eps,
                                                  static_cast<int>(d), n, act, stream));
    PENG_RETURN_IF_ERROR(gemm->Run(act, n, w.gate_up, 2 * ffn, d, buf.wide_out, false));
    PENG_CUDA_RETURN_IF_ERROR(cuda::SwiGluToBf16(buf.wide_out, n, static_cast<int>(ffn), act, stream));
    PENG_RETURN_IF_ERROR(gemm->Run(act, n, w.down, d, ffn, x, /*accumulate=*/true));
  }

  // Final norm and LM head over the requested rows only.
  if (m > 0) {
    PENG_CUDA_RETURN_IF_ERROR(cuda::RmsNormToBf16(x, d_rows, weights->output_norm, c.rms_eps,
                                                  static_cast<int>(d), m, act, stream));
    PENG_RETURN_IF_ERROR(gemm->Run(act, m, weights->lm_head, V, d, buf.logits, false));
  }
  return absl::OkStatus();
}

CudaForward::CudaForward(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaForward::~CudaForward() = default;

absl::StatusOr<std::unique_ptr<CudaForward>> CudaForward::Create(const Model& model,
                                                                 const CudaForwardOptions& options) {
  auto impl = std::make_unique<Impl>(model, options);
  PENG_RETURN_IF_ERROR(Annotate(impl->Init(), "CUDA worker"));
  return std::unique_ptr<CudaForward>(new CudaForward(std::move(impl)));
}

absl::Status CudaForward::Forward(const ForwardBatch& batch, KvCache& kv, ForwardOutput* out) {
  PENG_ASSIGN_OR_RETURN(const BatchTotals tot, CheckBatch(batch, impl_->c));
  for (const SequenceChunk& ch : batch.chunks) {
    PENG_RETURN_IF_ERROR(kv.Reserve(ch.seq, ch.start_pos + static_cast<int64_t>(ch.tokens.size())));
  }
  if (tot.tokens == 0) {
    out->vocab_size = impl_->c.vocab_size;
    out->logits.clear();
    return absl::OkStatus();
  }
  absl::Status status = impl_->Run(batch, tot, kv, out);
  // On failure work may still be queued that reads the pinned metadata and the scratch: let it
  // drain before the next batch reuses them.
  if (!status.ok()) cudaStreamSynchronize(impl_->stream);
  return status;
}

absl::StatusOr<uint8_t*> CudaForward::KvPoolMemory(size_t bytes) {
  PENG_CUDA_RETURN_IF_ERROR(cudaSetDevice(impl_->options.device));
  PENG_ASSIGN_OR_RETURN(cuda::DeviceBuffer buffer, cuda::DeviceBuffer::Allocate(bytes, "KV page pool"));
  uint8_t* p = buffer.data();
  impl_->kv_pools.push_back(std::move(buffer));
  return p;
}

}  // namespace peng
