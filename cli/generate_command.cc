// `peng generate`: one-shot or interactive (--chat) text generation on the CPU worker, or on
// the CUDA worker with --device cuda.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "cli/common.h"
#include "cli/flags.h"
#include "engine/forward.h"
#include "engine/forward_factory.h"
#include "engine/sampler.h"
#include "engine/simple_kv_cache.h"
#include "server/chat_template.h"

namespace peng::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// One sequence's KV plus the tokens it holds, so that a follow-up prompt sharing a prefix (a
// chat's next turn) only computes the new tokens.
class Session {
 public:
  Session(const Model& model, std::unique_ptr<ForwardBackend> forward, std::unique_ptr<KvCache> kv)
      : model_(model), forward_(std::move(forward)), kv_(std::move(kv)) {}

  // Prefills `prompt` (reusing the cached prefix) and samples up to max_new tokens, streaming
  // text through on_text. Returns the generated ids.
  absl::StatusOr<std::vector<int32_t>> Run(const std::vector<int32_t>& prompt, Sampler& sampler,
                                           int64_t max_new, bool stream_text) {
    size_t keep = 0;
    while (keep < cached_.size() && keep < prompt.size() && cached_[keep] == prompt[keep]) ++keep;
    if (keep == prompt.size()) --keep;  // always recompute the last token for its logits
    cached_.resize(keep);
    const int64_t ctx = model_.config.context_length;
    if (static_cast<int64_t>(prompt.size()) >= ctx) {
      return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt.size(),
                                                     " tokens; the model's context is ", ctx));
    }
    max_new = std::min<int64_t>(max_new, ctx - static_cast<int64_t>(prompt.size()));

    ForwardOutput out;
    const auto t0 = Clock::now();
    prompt_len_ = static_cast<int64_t>(prompt.size());
    std::span<const int32_t> fresh(prompt.data() + keep, prompt.size() - keep);
    PENG_RETURN_IF_ERROR(Step(fresh, static_cast<int64_t>(keep), &out));
    const auto t1 = Clock::now();
    cached_ = prompt;

    IncrementalDecoder decoder(*model_.tokenizer);
    std::vector<int32_t> generated;
    while (static_cast<int64_t>(generated.size()) < max_new) {
      const SampledToken tok = sampler.Sample(out.row(0));
      if (tok.id < 0) return absl::InternalError("the model produced non-finite logits (inf or NaN)");
      sampler.Accept(tok.id);
      if (model_.tokenizer->IsEndOfGeneration(tok.id)) break;
      generated.push_back(tok.id);
      if (stream_text) {
        std::fputs(decoder.Push(tok.id).c_str(), stdout);
        std::fflush(stdout);
      }
      if (static_cast<int64_t>(generated.size()) == max_new) break;
      const int32_t id = tok.id;
      PENG_RETURN_IF_ERROR(Step({&id, 1}, static_cast<int64_t>(cached_.size()), &out));
      cached_.push_back(id);
    }
    if (stream_text) std::fputs(decoder.Flush().c_str(), stdout);
    const auto t2 = Clock::now();
    std::fprintf(stderr, "\nprompt: %zu tokens (%zu computed) in %.3f s, %.1f tok/s | generation: %zu tokens in %.3f s, %.1f tok/s\n",
                 prompt.size(), fresh.size(), Seconds(t0, t1), fresh.size() / Seconds(t0, t1),
                 generated.size(), Seconds(t1, t2),
                 generated.size() > 1 ? (generated.size() - 1) / Seconds(t1, t2) : 0.0);
    return generated;
  }

 private:
  absl::Status Step(std::span<const int32_t> tokens, int64_t start, ForwardOutput* out) {
    ForwardBatch batch;
    batch.chunks.push_back({.seq = 0, .start_pos = start, .tokens = tokens, .prompt_len = prompt_len_});
    return forward_->Forward(batch, *kv_, out);
  }

  const Model& model_;
  std::unique_ptr<ForwardBackend> forward_;
  std::unique_ptr<KvCache> kv_;
  std::vector<int32_t> cached_;
  int64_t prompt_len_ = 0;  // of the current prompt
};

// Reads the sampling flags (range checks here; vocabulary-dependent checks after the load).
absl::StatusOr<SamplingParams> ParseSampling(const Flags& f) {
  SamplingParams p;
  PENG_ASSIGN_OR_RETURN(double temperature, f.Double("temperature", 0.8, 0, 100));
  PENG_ASSIGN_OR_RETURN(double top_p, f.Double("top-p", 0.95, 0, 1));
  PENG_ASSIGN_OR_RETURN(int64_t top_k, f.Int("top-k", 40, -1, 1 << 24));
  PENG_ASSIGN_OR_RETURN(double min_p, f.Double("min-p", 0.05, 0, 1));
  PENG_ASSIGN_OR_RETURN(double rep, f.Double("repeat-penalty", 1.0, 0, 10));
  PENG_ASSIGN_OR_RETURN(double presence, f.Double("presence-penalty", 0.0, -2, 2));
  PENG_ASSIGN_OR_RETURN(double frequency, f.Double("frequency-penalty", 0.0, -2, 2));
  p.temperature = static_cast<float>(temperature);
  p.top_p = static_cast<float>(top_p);
  p.top_k = static_cast<int32_t>(top_k);
  p.min_p = static_cast<float>(min_p);
  p.repetition_penalty = static_cast<float>(rep);
  p.presence_penalty = static_cast<float>(presence);
  p.frequency_penalty = static_cast<float>(frequency);
  if (f.Has("seed")) {
    PENG_ASSIGN_OR_RETURN(int64_t seed, f.Int("seed", 0, 0, INT64_MAX));
    p.seed = static_cast<uint64_t>(seed);
  }
  return p;
}

absl::Status RunGenerate(int argc, char** argv) {
  Flags f({"model", "prompt", "max-tokens", "temperature", "top-p", "top-k", "min-p", "seed",
           "repeat-penalty", "presence-penalty", "frequency-penalty", "threads", "system",
           "device", "cuda-device", "kv-format", "activations"},
          {"chat", "output-ids", "no-bos", "no-amx"});
  PENG_RETURN_IF_ERROR(f.Parse(argc, argv));
  PENG_ASSIGN_OR_RETURN(int64_t max_tokens, f.Int("max-tokens", 256, 1, 1 << 20));
  PENG_ASSIGN_OR_RETURN(int64_t threads, f.Int("threads", 2, 1, 256));
  if (!f.Has("prompt") && !f.Has("chat")) {
    return absl::InvalidArgumentError("give --prompt TEXT, or --chat for an interactive chat");
  }
  PENG_ASSIGN_OR_RETURN(SamplingParams params, ParseSampling(f));
  BackendOptions backend;
  PENG_ASSIGN_OR_RETURN(backend.device, ParseDevice(f.String("device", "cpu")));
  backend.cpu.num_threads = static_cast<int>(threads);
  PENG_ASSIGN_OR_RETURN(backend.cpu.int8_activations, Int8ActivationsFlag(f));
  backend.cpu.amx_prompts = !f.Has("no-amx");
  PENG_ASSIGN_OR_RETURN(int64_t cuda_device, f.Int("cuda-device", 0, 0, 1023));
  backend.cuda_device = static_cast<int>(cuda_device);
  const std::string kv_format = f.String("kv-format", "f16");
  if (kv_format == "f32" || kv_format == "f16" || kv_format == "bf16") {
    backend.kv_format = kv_format == "f32"   ? kernels::KvFormat::kF32
                        : kv_format == "f16" ? kernels::KvFormat::kF16
                                             : kernels::KvFormat::kBF16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--kv-format: expected f32, f16 or bf16, got \"", kv_format, "\""));
  }
  PENG_ASSIGN_OR_RETURN(auto model, LoadModelWithProgress(f.String("model", kDefaultModel)));
  const Tokenizer& tok = *model->tokenizer;
  PENG_RETURN_IF_ERROR(params.Validate(model->config.vocab_size));
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<ForwardBackend> forward, MakeForward(*model, backend));
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> kv,
                        MakeKvCache(model->config, backend, model->config.context_length));
  Session session(*model, std::move(forward), std::move(kv));
  const bool output_ids = f.Has("output-ids");

  auto run = [&](const std::string& text, bool special) -> absl::StatusOr<std::vector<int32_t>> {
    // (Encode adds no second BOS to a rendered chat prompt that already starts with it.)
    std::vector<int32_t> ids = tok.Encode(text, !f.Has("no-bos"), special);
    if (ids.empty()) {
      return absl::InvalidArgumentError(
          "--prompt is empty and the model adds no BOS token, so there is nothing to generate from");
    }
    PENG_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(params, model->config.vocab_size, ids));
    return session.Run(ids, sampler, max_tokens, !output_ids);
  };

  if (!f.Has("chat")) {
    PENG_ASSIGN_OR_RETURN(std::vector<int32_t> ids, run(f.String("prompt"), true));
    if (output_ids) {
      std::string s = "[";
      for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&s, i ? ", " : "", ids[i]);
      std::printf("%s]\n", s.c_str());
    } else {
      std::printf("\n");
    }
    return absl::OkStatus();
  }

  if (tok.chat_template().empty()) return absl::FailedPreconditionError("the model has no chat template");
  PENG_ASSIGN_OR_RETURN(ChatTemplate chat_template, ChatTemplate::Parse(tok.chat_template()));
  const std::string bos = tok.bos_id() >= 0 ? tok.TokenPiece(tok.bos_id()) : "";
  const std::string eos = tok.eos_id() >= 0 ? tok.TokenPiece(tok.eos_id()) : "";
  std::vector<ChatMessage> messages;
  if (f.Has("system")) messages.push_back({.role = "system", .content = f.String("system")});
  auto turn = [&](const std::string& user) -> absl::Status {
    messages.push_back({.role = "user", .content = user});
    PENG_ASSIGN_OR_RETURN(std::string prompt, chat_template.Render(messages, true, bos, eos));
    PENG_ASSIGN_OR_RETURN(std::vector<int32_t> ids, run(prompt, true));
    messages.push_back({.role = "assistant", .content = tok.Decode(ids, true)});
    std::printf("\n");
    return absl::OkStatus();
  };
  if (f.Has("prompt")) return turn(f.String("prompt"));
  std::fprintf(stderr, "chatting with %s — type a message, Ctrl-D to quit\n", model->config.name.c_str());
  std::string line;
  while (true) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    PENG_RETURN_IF_ERROR(turn(line));
  }
  return absl::OkStatus();
}

}  // namespace

int RunGenerateCommand(int argc, char** argv) {
  absl::Status s = RunGenerate(argc, argv);
  return s.ok() ? 0 : Fail("generate", s);
}

}  // namespace peng::cli
