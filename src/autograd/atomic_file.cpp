#include "autograd/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "autograd/error.h"

namespace stgnn {

namespace {

std::string errno_text() {
  return std::strerror(errno);
}

// Writes all of [data, data + size) to fd, retrying on EINTR and short writes.
bool write_all(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError("cannot open '" + path + "': " + errno_text());
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    throw IoError("cannot stat '" + path + "': " + why);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError("cannot read '" + path + "': not a regular file");
  }
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(static_cast<size_t>(st.st_size));
  } catch (const std::bad_alloc&) {
    ::close(fd);
    throw IoError("cannot read '" + path + "': out of memory for " + std::to_string(st.st_size) +
                  " bytes");
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = errno_text();
      ::close(fd);
      throw IoError("cannot read '" + path + "': " + why);
    }
    if (n == 0) break;  // the file shrank while we read it
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  bytes.resize(done);
  return bytes;
}

void write_file_atomic(const std::string& path, const std::vector<ByteSpan>& chunks) {
  const std::filesystem::path target(path);
  const std::filesystem::path dir =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0)
    throw IoError("cannot create a temporary file next to '" + path + "': " + errno_text());
  const std::string tmp_path(name.data());
  auto fail = [&](const std::string& what) {
    const std::string why = errno_text();
    ::close(fd);
    ::unlink(tmp_path.c_str());
    throw IoError("cannot write '" + path + "': " + what + ": " + why);
  };
  for (const ByteSpan& chunk : chunks) {
    if (chunk.size > 0 && !write_all(fd, static_cast<const uint8_t*>(chunk.data), chunk.size)) {
      fail("write");
    }
  }
  if (::fchmod(fd, 0644) != 0) fail("fchmod");
  if (::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp_path.c_str());
    throw IoError("cannot write '" + path + "': close: " + why);
  }
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp_path.c_str());
    throw IoError("cannot write '" + path + "': rename: " + why);
  }
  // Persist the directory entry; some file systems refuse fsync on directories, which only
  // weakens durability, so that failure is not an error.
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

std::string read_file(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, std::vector<ByteSpan>{{bytes.data(), bytes.size()}});
}

}  // namespace stgnn
