#include "base/cgroup.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

namespace peng {
namespace {

// The cgroup path of a v1 controller (or, for "", the v2 path) in /proc/self/cgroup; "/" when
// the process has none listed.
std::string OwnPath(const std::string& controller) {
  std::string line;
  for (std::istringstream lines(ReadSmallFile("/proc/self/cgroup")); std::getline(lines, line);) {
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = "," + line.substr(a + 1, b - a - 1) + ",";
    if (controller.empty() ? controllers == ",," : controllers.find("," + controller + ",") != std::string::npos) {
      return line.substr(b + 1);
    }
  }
  return "/";
}

std::optional<int64_t> Number(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

}  // namespace

std::string ReadSmallFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream text;
  text << f.rdbuf();
  return f ? text.str() : std::string();
}

std::string CgroupV2Dir() { return "/sys/fs/cgroup" + OwnPath(""); }

std::string CgroupV1Dir(const std::string& mount, const std::string& controller) {
  return "/sys/fs/cgroup/" + mount + OwnPath(controller);
}

std::optional<int64_t> CgroupMemoryHeadroom(const std::string& limit, const std::string& usage) {
  const std::optional<int64_t> max = Number(limit), used = Number(usage);
  // v2 writes "max" for no limit; v1 a page-rounded 2^63 - 1.
  if (!max || !used || *max >= (int64_t{1} << 62)) return std::nullopt;
  return std::max<int64_t>(0, *max - *used);
}

std::optional<int64_t> CgroupMemoryHeadroom() {
  for (const std::string& dir : {CgroupV2Dir(), std::string("/sys/fs/cgroup")}) {
    const std::string limit = ReadSmallFile(dir + "/memory.max");
    if (!limit.empty()) return CgroupMemoryHeadroom(limit, ReadSmallFile(dir + "/memory.current"));
  }
  for (const std::string& dir : {CgroupV1Dir("memory", "memory"), std::string("/sys/fs/cgroup/memory")}) {
    const std::string limit = ReadSmallFile(dir + "/memory.limit_in_bytes");
    if (!limit.empty()) return CgroupMemoryHeadroom(limit, ReadSmallFile(dir + "/memory.usage_in_bytes"));
  }
  return std::nullopt;
}

}  // namespace peng
