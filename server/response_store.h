// ResponseStore: the Responses API's stored responses (`store`, on by default as in OpenAI's
// API), for `previous_response_id`, GET / DELETE /v1/responses/{id} and GET
// /v1/responses/{id}/input_items. Kept in memory, newest
// first, up to a number of responses and a number of bytes; the oldest go first, and a restart
// forgets them all. Each entry holds the response object as it was returned and the
// conversation it ends, as chat messages (the instructions excepted: a follow-up's own
// instructions replace them, as in OpenAI's API). Thread-safe.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "nlohmann/json.hpp"

namespace peng::server {

class ResponseStore {
 public:
  struct Entry {
    nlohmann::ordered_json response;     // the response object
    nlohmann::ordered_json messages;     // chat messages: the input so far, then the output
    nlohmann::ordered_json input_items;  // the request's input, as items with ids (input_items)
  };

  ResponseStore(size_t max_responses, size_t max_bytes) : max_responses_(max_responses), max_bytes_(max_bytes) {}

  // Keeps `entry` under `id` (replacing one with that id); an entry bigger than max_bytes is
  // not kept.
  void Put(const std::string& id, Entry entry);
  // The entry, or null when it is unknown, deleted or evicted.
  std::shared_ptr<const Entry> Get(const std::string& id) const;
  // Whether there was such an entry.
  bool Erase(const std::string& id);

  size_t size() const;
  size_t bytes() const;

 private:
  struct Slot {
    std::shared_ptr<const Entry> entry;
    size_t bytes = 0;
    std::list<std::string>::iterator age;  // its place in order_
  };
  void EraseLocked(std::unordered_map<std::string, Slot>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_responses_;
  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> order_ ABSL_GUARDED_BY(mu_);  // newest first
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace peng::server
