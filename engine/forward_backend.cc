#include "engine/forward_backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace peng {

absl::StatusOr<BatchTotals> CheckBatch(const ForwardBatch& batch, const ModelConfig& c) {
  BatchTotals totals;
  for (size_t ci = 0; ci < batch.chunks.size(); ++ci) {
    const SequenceChunk& ch = batch.chunks[ci];
    const int64_t len = static_cast<int64_t>(ch.tokens.size());
    if (len == 0) return absl::InvalidArgumentError(absl::StrCat("chunk ", ci, " has no tokens"));
    const int64_t end = ch.start_pos + len;
    if (ch.start_pos < 0 || end > c.context_length) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", ci, " covers positions [", ch.start_pos,
                                                     ", ", end, ") beyond the context of ",
                                                     c.context_length));
    }
    for (int32_t id : ch.tokens) {
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      }
    }
    totals.tokens += len;
    totals.max_kv = std::max(totals.max_kv, end);
    totals.max_chunk = std::max(totals.max_chunk, len);
    totals.logit_rows += ch.logits == SequenceChunk::Logits::kAll ? len
                         : ch.logits == SequenceChunk::Logits::kLast ? 1 : 0;
  }
  return totals;
}

}  // namespace peng
