// The fuzz targets (tests/fuzz/targets.h) in the ordinary test suite: every seed of the
// committed corpus is a valid file that its parser must accept (names starting "rejected_"
// are valid files of something else, which it must refuse), and every input that ever crashed
// a harness (tests/fuzz/regressions/<target>/) must now be handled: accepted or refused with
// a stgnn::Error, never a crash, a sanitizer report or another exception.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>

#include "autograd/atomic_file.h"
#include "fuzz/targets.h"

using namespace stgnn;
namespace fs = std::filesystem;

namespace {

const fs::path kFuzzDir = fs::path(STGNN_SOURCE_DIR) / "tests" / "fuzz";

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("every fuzz target accepts its seed corpus") {
  for (const fuzz::NamedTarget& target : fuzz::all_targets()) {
    CAPTURE(target.name);
    const std::vector<fs::path> seeds = files_in(kFuzzDir / "corpus" / target.name);
    CHECK(seeds.size() >= 2);
    for (const fs::path& seed : seeds) {
      CAPTURE(seed.string());
      const std::vector<uint8_t> bytes = read_file_bytes(seed.string());
      const bool rejected = seed.filename().string().rfind("rejected_", 0) == 0;
      CHECK(target.run(bytes.data(), bytes.size()) == !rejected);
    }
  }
}

TEST_CASE("inputs that once crashed a fuzz harness are handled") {
  int64_t inputs = 0;
  for (const fuzz::NamedTarget& target : fuzz::all_targets()) {
    for (const fs::path& input : files_in(kFuzzDir / "regressions" / target.name)) {
      CAPTURE(input.string());
      const std::vector<uint8_t> bytes = read_file_bytes(input.string());
      target.run(bytes.data(), bytes.size());  // returns (either way) instead of crashing
      ++inputs;
    }
  }
  MESSAGE(inputs << " regression inputs replayed");
}
