// Crash-safe file writes: the bytes go to a temporary file in the same directory, are
// fsync'ed, and the temporary is renamed over the target (and the directory fsync'ed), so a
// reader sees either the old file or the complete new one, never a torn write.
#pragma once

#include <string>
#include <string_view>

namespace stgnn {

// Replaces `path` with `bytes` atomically. Throws IoError naming the path and the system
// error (disk full, permission denied, missing directory) and leaves no temporary behind.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Reads a whole file; IoError naming the path when it cannot be opened or read.
std::string read_file(const std::string& path);

}  // namespace stgnn
