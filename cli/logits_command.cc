// `peng logits` and `peng dump-tensor`: expose raw model outputs to the numpy reference tests.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "cli/common.h"
#include "cli/flags.h"
#include "cli/npy.h"
#include "engine/forward.h"
#include "engine/gguf.h"
#include "engine/simple_kv_cache.h"
#include "kernels/cpu/dequantize.h"

namespace peng::cli {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& s) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) return absl::InvalidArgumentError(absl::StrCat("--ids: bad id '", part, "'"));
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--ids is empty");
  return ids;
}

// Logits of every prompt position, computed in chunks of --chunk tokens (exercising the KV path).
absl::Status RunLogits(int argc, char** argv) {
  Flags f({"model", "prompt", "ids", "out", "chunk", "threads", "activations"}, {"no-bos", "no-amx", "no-amx-attention"});
  PENG_RETURN_IF_ERROR(f.Parse(argc, argv));
  if (!f.Has("out")) return absl::InvalidArgumentError("--out FILE.npy is required");
  if (f.Has("prompt") == f.Has("ids")) return absl::InvalidArgumentError("give exactly one of --prompt, --ids");
  PENG_ASSIGN_OR_RETURN(int64_t chunk, f.Int("chunk", 1 << 20, 1, 1 << 20));
  PENG_ASSIGN_OR_RETURN(int64_t threads, f.Int("threads", 2, 1, 256));
  PENG_ASSIGN_OR_RETURN(const bool int8, Int8ActivationsFlag(f));
  PENG_ASSIGN_OR_RETURN(auto model, LoadModel(f.String("model", kDefaultModel)));
  std::vector<int32_t> ids;
  if (f.Has("ids")) {
    PENG_ASSIGN_OR_RETURN(ids, ParseIds(f.String("ids")));
  } else {
    ids = model->tokenizer->Encode(f.String("prompt"), !f.Has("no-bos"), true);
  }
  const ModelConfig& c = model->config;
  LlamaForward forward(*model, ForwardOptions{.num_threads = static_cast<int>(threads),
                                              .int8_activations = int8,
                                              .amx_prompts = !f.Has("no-amx"),
                                              .amx_attention = !f.Has("no-amx-attention")});
  SimpleKvCache kv(c.num_layers, c.num_kv_heads, c.head_dim, c.context_length);
  std::vector<float> all;
  for (size_t start = 0; start < ids.size(); start += chunk) {
    const size_t len = std::min<size_t>(chunk, ids.size() - start);
    ForwardBatch batch;
    batch.chunks.push_back({.seq = 0, .start_pos = static_cast<int64_t>(start),
                            .tokens = {ids.data() + start, len}, .logits = SequenceChunk::Logits::kAll,
                            .prompt_len = static_cast<int64_t>(ids.size())});
    ForwardOutput out;
    PENG_RETURN_IF_ERROR(forward.Forward(batch, kv, &out));
    all.insert(all.end(), out.logits.begin(), out.logits.end());
  }
  PENG_RETURN_IF_ERROR(WriteNpyF32(f.String("out"), {static_cast<int64_t>(ids.size()), c.vocab_size}, all.data()));
  std::string json = "{\"ids\": [";
  for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&json, i ? ", " : "", ids[i]);
  std::printf("%s]}\n", json.c_str());
  return absl::OkStatus();
}

absl::Status RunDumpTensor(int argc, char** argv) {
  Flags f({"model", "tensor", "out"}, {});
  PENG_RETURN_IF_ERROR(f.Parse(argc, argv));
  if (!f.Has("tensor") || !f.Has("out")) return absl::InvalidArgumentError("--tensor NAME and --out FILE.npy are required");
  PENG_ASSIGN_OR_RETURN(auto file, GgufFile::Open(f.String("model", kDefaultModel)));
  const GgufTensor* t = file->FindTensor(f.String("tensor"));
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("tensor ", f.String("tensor"), " is not in the file"));
  std::vector<float> data(t->num_elements());
  const int64_t row = t->shape[0];
  const size_t row_bytes = kernels::RowBytes(t->type, row);
  for (int64_t r = 0; r < t->num_elements() / row; ++r) {
    if (!kernels::DequantizeRow(t->type, t->data + r * row_bytes, data.data() + r * row, row)) {
      return absl::UnimplementedError(absl::StrCat("type ", kernels::Traits(t->type).name, " is not supported"));
    }
  }
  std::vector<int64_t> shape(t->shape.rbegin(), t->shape.rend());
  return WriteNpyF32(f.String("out"), shape, data.data());
}

}  // namespace

int RunLogitsCommand(int argc, char** argv) {
  absl::Status s = RunLogits(argc, argv);
  return s.ok() ? 0 : Fail("logits", s);
}

int RunDumpTensorCommand(int argc, char** argv) {
  absl::Status s = RunDumpTensor(argc, argv);
  return s.ok() ? 0 : Fail("dump-tensor", s);
}

}  // namespace peng::cli
