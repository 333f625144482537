#include "scheduler/stop_checker.h"

#include <algorithm>

namespace peng {

StopChecker::StopChecker(const Tokenizer* tokenizer, const StopConditions& stop)
    : tokenizer_(tokenizer), stop_(stop) {
  if (tokenizer_ != nullptr) decoder_.emplace(*tokenizer_, /*skip_special=*/true);
}

StopChecker::Step StopChecker::Push(int32_t token, int64_t num_generated) {
  Step step;
  // min_tokens: the first min_tokens tokens are never stop tokens (the sampler bans them; one
  // forced there is text), and a stop string may end the output from the min_tokens-th on.
  const bool may_stop = num_generated > stop_.min_tokens;
  const bool may_stop_string = num_generated >= stop_.min_tokens;
  const bool eog = tokenizer_ != nullptr && !stop_.ignore_eos && tokenizer_->IsEndOfGeneration(token);
  const bool stop_id = std::find(stop_.stop_token_ids.begin(), stop_.stop_token_ids.end(), token) !=
                       stop_.stop_token_ids.end();
  if ((eog || stop_id) && may_stop) {
    // The stop token itself produces no text; what was held back is released.
    step.text = std::move(pending_) + (decoder_ ? decoder_->Flush() : "");
    pending_.clear();
    step.finish = FinishReason::kStop;
    return step;
  }
  if (decoder_) pending_ += decoder_->Push(token);

  // The earliest stop string in the pending text ends the sequence there.
  size_t best = std::string::npos, best_len = 0;
  for (const std::string& s : stop_.stop) {
    if (s.empty() || !may_stop_string) continue;
    const size_t at = pending_.find(s);
    if (at != std::string::npos && at < best) {
      best = at;
      best_len = s.size();
    }
  }
  if (best != std::string::npos) {
    step.text = pending_.substr(0, stop_.include_stop_str_in_output ? best + best_len : best);
    pending_.clear();
    step.finish = FinishReason::kStop;
    return step;
  }
  if (num_generated >= stop_.max_tokens) {
    step.text = std::move(pending_) + (decoder_ ? decoder_->Flush() : "");
    pending_.clear();
    step.finish = FinishReason::kLength;
    return step;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stop_.stop) {
    if (s.empty()) continue;
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k) {
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  step.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return step;
}

}  // namespace peng
