// BpeMerger: the merge loop of byte-pair encoding over one word, shared by GPT-2 style
// (merge ranks) and SentencePiece style (piece scores turned into ranks) tokenizers.
// It owns the pair table (left id, right id) -> (rank, merged id); lower rank merges first,
// ties go to the leftmost pair (as Hugging Face and llama.cpp do). Immutable after building,
// so Apply() is safe from many threads. Cost per word: O(n log n) in its symbol count.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace peng {

// One symbol of a word being merged: a token id (-1: not in the vocabulary; never merges)
// and the byte span of the word it covers.
struct BpeSymbol {
  int32_t id = -1;
  uint32_t begin = 0;
  uint32_t len = 0;
};

class BpeMerger {
 public:
  struct Merge {
    int32_t rank = 0;
    int32_t merged_id = 0;
  };

  // Adds a merge; for a pair seen before the lower rank is kept.
  void Add(int32_t left_id, int32_t right_id, int32_t rank, int32_t merged_id);
  const Merge* Find(int32_t left_id, int32_t right_id) const;
  size_t size() const { return pairs_.size(); }

  // Merges `symbols` (a word's initial symbols, in order) as far as the table allows.
  void Apply(std::vector<BpeSymbol>* symbols) const;

 private:
  static uint64_t Key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  absl::flat_hash_map<uint64_t, Merge> pairs_;
};

}  // namespace peng
