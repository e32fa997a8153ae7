// Whole-file reads and crash-safe (atomic) writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace stgnn {

// The whole content of a file. Throws IoError naming the path when it cannot be opened or read.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// A borrowed byte range, one piece of a file being written.
struct ByteSpan {
  const void* data;
  size_t size;
};

// Writes the concatenated chunks to `path` so that readers only ever see the old file or the
// complete new one: the bytes go to a temporary file in the same directory, which is fsync'ed
// and renamed over `path`; the directory is fsync'ed afterwards so the rename survives a crash.
// The new file gets mode 0644. Throws IoError naming the path; the temporary file is removed on
// failure.
void write_file_atomic(const std::string& path, const std::vector<ByteSpan>& chunks);

}  // namespace stgnn
