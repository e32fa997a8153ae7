// Whole-file reads and crash-safe (atomic) writes, shared by every module that writes files.
//
// An atomic write puts the bytes in a temporary file in the same directory, fsyncs it, renames
// it over the target and fsyncs the directory, so a reader (or a run resumed after a crash or a
// kill -9) sees either the old file or the complete new one, never a torn write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace stgnn {

// The whole content of a file. Throws IoError naming the path when it cannot be opened or read.
std::vector<uint8_t> read_file_bytes(const std::string& path);
std::string read_file(const std::string& path);

// A borrowed byte range, one piece of a file being written.
struct ByteSpan {
  const void* data;
  size_t size;
};

// Writes the concatenated chunks to `path` atomically (see above), mode 0644. Throws IoError
// naming the path and the system error (disk full, permission denied, missing directory); the
// temporary file is removed on failure.
void write_file_atomic(const std::string& path, const std::vector<ByteSpan>& chunks);
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace stgnn
