#include "data/npy.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

#include "autograd/atomic_file.h"
#include "data/bytes.h"

namespace stgnn {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// NumPy >= 1.24 refuses headers above 10 000 bytes by default; allow more but keep a bound so
// that a corrupt length cannot make us read or scan megabytes of garbage.
constexpr size_t kMaxHeaderSize = 1 << 20;
constexpr size_t kMaxDims = 32;

struct Header {
  std::string dtype;
  Shape shape;
  bool fortran_order = false;
  size_t data_offset = 0;
  size_t nbytes = 0;
};

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw FormatError("npy '" + name + "': " + what);
}

// Offset of the first data byte, from the magic, version and header-length fields; `data` holds
// the first `available` bytes of the file (at least 12 unless the file is shorter).
size_t npy_data_offset(const uint8_t* data, size_t available, const std::string& name) {
  if (available < 10) {
    fail(name, "file is " + std::to_string(available) + " bytes, too short for a .npy header");
  }
  if (std::memcmp(data, kMagic, kMagicSize) != 0) fail(name, "bad magic (not a .npy file)");
  const int major = data[6];
  const int minor = data[7];
  if (!((major == 1 || major == 2 || major == 3) && minor == 0)) {
    fail(name, "unsupported format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " (1.0, 2.0 and 3.0 are read)");
  }
  size_t prefix = 10;
  size_t header_len = load_le<uint16_t>(data + 8);
  if (major >= 2) {
    if (available < 12) fail(name, "file is too short for a version 2/3 header length");
    prefix = 12;
    header_len = load_le<uint32_t>(data + 8);
  }
  if (header_len > kMaxHeaderSize) {
    fail(name, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderSize) + " bytes");
  }
  return prefix + header_len;
}

// Recursive-descent reader for the header, a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
class HeaderParser {
 public:
  HeaderParser(const char* begin, const char* end, const std::string& name)
      : p_(begin), begin_(begin), end_(end), name_(name) {}

  Header parse() {
    Header h;
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') {
        ++p_;
        break;
      }
      const std::string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (have_descr) error("duplicate key 'descr'");
        if (peek() != '\'' && peek() != '"')
          error("'descr' is not a string (structured dtypes are not supported)");
        h.dtype = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_fortran) error("duplicate key 'fortran_order'");
        h.fortran_order = parse_bool();
        have_fortran = true;
      } else if (key == "shape") {
        if (have_shape) error("duplicate key 'shape'");
        h.shape = parse_shape();
        have_shape = true;
      } else {
        error("unexpected key '" + key + "'");
      }
      skip_space();
      if (peek() == ',') {
        ++p_;
      } else if (peek() != '}') {
        error("expected ',' or '}'");
      }
    }
    // NumPy pads the header with spaces and ends it with a newline; anything else is damage.
    while (p_ < end_) {
      if (*p_ != ' ' && *p_ != '\n' && *p_ != '\t' && *p_ != '\r' && *p_ != '\0') {
        error("unexpected text after the header dict");
      }
      ++p_;
    }
    if (!have_descr) error("missing key 'descr'");
    if (!have_fortran) error("missing key 'fortran_order'");
    if (!have_shape) error("missing key 'shape'");
    return h;
  }

 private:
  char peek() const { return p_ < end_ ? *p_ : '\0'; }
  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r'))
      ++p_;
  }
  [[noreturn]] void error(const std::string& what) const {
    std::string text(begin_, static_cast<size_t>(end_ - begin_));
    if (text.size() > 120) text = text.substr(0, 120) + "...";
    for (char& c : text) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    }
    fail(name_,
         "header: " + what + " at byte " + std::to_string(p_ - begin_) + " in \"" + text + "\"");
  }
  void expect(char c) {
    if (peek() != c) error(std::string("expected '") + c + "'");
    ++p_;
  }
  std::string parse_string() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') error("expected a quoted string");
    ++p_;
    std::string out;
    while (p_ < end_ && *p_ != quote) {
      if (*p_ == '\\') error("escape sequences are not supported in header strings");
      out.push_back(*p_++);
    }
    if (p_ >= end_) error("unterminated string");
    ++p_;
    return out;
  }
  bool parse_bool() {
    if (end_ - p_ >= 4 && std::memcmp(p_, "True", 4) == 0) {
      p_ += 4;
      return true;
    }
    if (end_ - p_ >= 5 && std::memcmp(p_, "False", 5) == 0) {
      p_ += 5;
      return false;
    }
    error("expected True or False");
  }
  int64_t parse_dim() {
    if (!(peek() >= '0' && peek() <= '9')) error("expected a non-negative integer dimension");
    int64_t value = 0;
    while (peek() >= '0' && peek() <= '9') {
      if (value > (std::numeric_limits<int64_t>::max() - 9) / 10) error("dimension too large");
      value = value * 10 + (*p_++ - '0');
    }
    if (peek() == 'L') ++p_;  // Python 2 long literal, written by old NumPy versions
    return value;
  }
  // A Python tuple literal: "()", "(3,)", "(3, 4)" or "(3, 4,)". "(3)" is an int in Python,
  // not a tuple, so it is rejected as NumPy would.
  Shape parse_shape() {
    expect('(');
    Shape shape;
    bool trailing_comma = false;
    while (true) {
      skip_space();
      if (peek() == ')') {
        ++p_;
        break;
      }
      if (shape.size() >= kMaxDims) error("more than " + std::to_string(kMaxDims) + " dimensions");
      shape.push_back(parse_dim());
      skip_space();
      trailing_comma = false;
      if (peek() == ',') {
        ++p_;
        trailing_comma = true;
      } else if (peek() != ')') {
        error("expected ',' or ')' in shape");
      }
    }
    if (shape.size() == 1 && !trailing_comma)
      error("shape is not a tuple (a 1-tuple needs a comma)");
    return shape;
  }

  const char* p_;
  const char* begin_;
  const char* end_;
  const std::string& name_;
};

// `data` holds the first `data_offset` bytes of a .npy image of `total_size` bytes.
Header parse_header(const uint8_t* data, size_t data_offset, size_t total_size,
                    const std::string& name) {
  const size_t prefix = data[6] == 1 ? 10 : 12;
  HeaderParser parser(reinterpret_cast<const char*>(data + prefix),
                      reinterpret_cast<const char*>(data + data_offset), name);
  Header h = parser.parse();
  h.data_offset = data_offset;
  const size_t itemsize = [&] {
    try {
      return npy_itemsize(h.dtype);
    } catch (const FormatError& e) {
      fail(name, e.what());
    }
  }();
  uint64_t numel = 1;
  for (int64_t d : h.shape) {
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
      fail(name, "shape " + shape_str(h.shape) + " overflows");
    }
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(itemsize), &nbytes) ||
      numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail(name, "shape " + shape_str(h.shape) + " overflows");
  }
  const uint64_t payload = total_size - data_offset;
  if (nbytes != payload) {
    fail(name, "header says " + h.dtype + " " + shape_str(h.shape) + " = " +
                   std::to_string(nbytes) + " bytes of data, the file holds " +
                   std::to_string(payload) +
                   (nbytes > payload ? " (truncated?)" : " (trailing bytes)"));
  }
  h.nbytes = static_cast<size_t>(nbytes);
  return h;
}

// Column-major `src` -> row-major `dst`, both holding shape_numel(shape) items of `itemsize`.
void fortran_to_c(const uint8_t* src, uint8_t* dst, const Shape& shape, size_t itemsize) {
  const size_t rank = shape.size();
  const int64_t numel = shape_numel(shape);
  if (numel == 0) return;
  std::vector<int64_t> src_stride(rank);
  int64_t stride = 1;
  for (size_t k = 0; k < rank; ++k) {
    src_stride[k] = stride;
    stride *= shape[k];
  }
  // Walk destination indices in row-major order, keeping the source offset in step.
  std::vector<int64_t> index(rank, 0);
  int64_t src_offset = 0;
  for (int64_t i = 0; i < numel; ++i) {
    std::memcpy(dst + static_cast<size_t>(i) * itemsize,
                src + static_cast<size_t>(src_offset) * itemsize, itemsize);
    for (size_t k = rank; k-- > 0;) {
      if (++index[k] < shape[k]) {
        src_offset += src_stride[k];
        break;
      }
      src_offset -= src_stride[k] * (shape[k] - 1);
      index[k] = 0;
    }
  }
}

NpyArray finish(const Header& h, const uint8_t* payload) {
  NpyArray out;
  out.dtype = h.dtype;
  out.shape = h.shape;
  out.bytes.resize(h.nbytes);
  if (h.nbytes == 0) return out;
  if (h.fortran_order && h.shape.size() > 1) {
    fortran_to_c(payload, out.bytes.data(), h.shape, npy_itemsize(h.dtype));
  } else {
    std::memcpy(out.bytes.data(), payload, h.nbytes);
  }
  return out;
}

std::string header_text(const std::string& dtype, const Shape& shape) {
  std::string text = "{'descr': '" + dtype + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  if (shape.size() == 1) text += ",";
  text += "), }";
  return text;
}

void write_npy_raw(const std::string& path, const std::string& dtype, const Shape& shape,
                   const void* values, size_t itemsize) {
  for (int64_t d : shape) {
    if (d < 0)
      throw ValueError("write_npy '" + path + "': negative dimension in " + shape_str(shape));
  }
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
      throw ValueError("write_npy '" + path + "': shape " + shape_str(shape) + " overflows");
    }
  }
  if (numel > 0 && values == nullptr) {
    throw ValueError("write_npy '" + path + "': null data for shape " + shape_str(shape));
  }
  std::string dict = header_text(dtype, shape);
  // Version 1.0 stores the header length in 16 bits; NumPy switches to 2.0 beyond that.
  const bool v2 = dict.size() + 1 + 10 > 65535;
  const size_t prefix = v2 ? 12 : 10;
  const size_t unpadded = prefix + dict.size() + 1;
  const size_t total = (unpadded + 63) / 64 * 64;
  dict.append(total - unpadded, ' ');
  dict.push_back('\n');
  std::string head(kMagic, kMagicSize);
  head.push_back(static_cast<char>(v2 ? 2 : 1));
  head.push_back('\0');
  const uint32_t len = static_cast<uint32_t>(dict.size());
  head.push_back(static_cast<char>(len & 0xff));
  head.push_back(static_cast<char>((len >> 8) & 0xff));
  if (v2) {
    head.push_back(static_cast<char>((len >> 16) & 0xff));
    head.push_back(static_cast<char>((len >> 24) & 0xff));
  }
  head += dict;
  write_file_atomic(path,
                    {{head.data(), head.size()}, {values, static_cast<size_t>(numel) * itemsize}});
}

}  // namespace

size_t npy_itemsize(const std::string& dtype) {
  if (dtype == "<f4" || dtype == "<i4") return 4;
  if (dtype == "<f8" || dtype == "<i8") return 8;
  if (dtype == "<f2") return 2;
  if (dtype == "|u1") return 1;
  throw FormatError("unsupported dtype '" + dtype + "' (read: <f4 <f2 <f8 |u1 <i4 <i8)");
}

NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  if (data == nullptr && size > 0) throw ValueError("parse_npy: null data");
  const size_t offset = npy_data_offset(data, size, name_for_errors);
  if (offset > size) {
    fail(name_for_errors, "header of " + std::to_string(offset) + " bytes but the file has " +
                              std::to_string(size) + " (truncated)");
  }
  const Header h = parse_header(data, offset, size, name_for_errors);
  return finish(h, data + offset);
}

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot open '" + path + "': " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0) throw IoError("cannot read '" + path + "': not seekable");
  const size_t total = static_cast<size_t>(end);
  in.seekg(0);
  // Read the header first and validate it against the file size, so that a lying shape is
  // rejected before the data buffer is allocated.
  std::vector<uint8_t> head(std::min<size_t>(total, 12));
  if (!in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()))) {
    throw IoError("cannot read '" + path + "'");
  }
  const size_t offset = npy_data_offset(head.data(), head.size(), path);
  if (offset > total) {
    fail(path, "header of " + std::to_string(offset) + " bytes but the file has " +
                   std::to_string(total) + " (truncated)");
  }
  const size_t already = head.size();
  head.resize(offset);
  if (offset > already && !in.read(reinterpret_cast<char*>(head.data() + already),
                                   static_cast<std::streamsize>(offset - already))) {
    throw IoError("cannot read '" + path + "'");
  }
  const Header h = parse_header(head.data(), offset, total, path);
  in.seekg(static_cast<std::streamoff>(offset));
  std::vector<uint8_t> payload(h.nbytes);
  if (h.nbytes > 0 &&
      !in.read(reinterpret_cast<char*>(payload.data()), static_cast<std::streamsize>(h.nbytes))) {
    throw IoError("cannot read '" + path + "': short read");
  }
  if (!h.fortran_order || h.shape.size() <= 1) {
    NpyArray out;
    out.dtype = h.dtype;
    out.shape = h.shape;
    out.bytes = std::move(payload);
    return out;
  }
  return finish(h, payload.data());
}

Tensor npy_to_tensor(const NpyArray& array) {
  const size_t itemsize = npy_itemsize(array.dtype);
  const int64_t numel = shape_numel(array.shape);
  if (array.bytes.size() != static_cast<size_t>(numel) * itemsize) {
    throw ShapeError("npy_to_tensor: " + std::to_string(array.bytes.size()) + " bytes for " +
                     array.dtype + " " + shape_str(array.shape));
  }
  Tensor t = Tensor::empty(array.shape);
  if (numel == 0) return t;
  float* out = t.data();
  const uint8_t* in = array.bytes.data();
  const size_t n = static_cast<size_t>(numel);
  if (array.dtype == "<f4") {
    std::memcpy(out, in, n * 4);
  } else if (array.dtype == "<f2") {
    for (size_t i = 0; i < n; ++i)
      out[i] = half_to_float(load_le<uint16_t>(in + 2 * i));
  } else if (array.dtype == "<f8") {
    for (size_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(load_le<double>(in + 8 * i));
  } else if (array.dtype == "|u1") {
    for (size_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(in[i]);
  } else if (array.dtype == "<i4") {
    for (size_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(load_le<int32_t>(in + 4 * i));
  } else {  // "<i8", the only remaining supported dtype
    for (size_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(load_le<int64_t>(in + 8 * i));
  }
  return t;
}

std::vector<int64_t> npy_to_int64(const NpyArray& array) {
  const size_t itemsize = npy_itemsize(array.dtype);
  const size_t n = array.bytes.size() / itemsize;
  if (array.bytes.size() != static_cast<size_t>(shape_numel(array.shape)) * itemsize) {
    throw ShapeError("npy_to_int64: " + std::to_string(array.bytes.size()) + " bytes for " +
                     array.dtype + " " + shape_str(array.shape));
  }
  std::vector<int64_t> out(n);
  const uint8_t* in = array.bytes.data();
  if (array.dtype == "|u1") {
    for (size_t i = 0; i < n; ++i)
      out[i] = in[i];
  } else if (array.dtype == "<i4") {
    for (size_t i = 0; i < n; ++i)
      out[i] = load_le<int32_t>(in + 4 * i);
  } else if (array.dtype == "<i8") {
    for (size_t i = 0; i < n; ++i)
      out[i] = load_le<int64_t>(in + 8 * i);
  } else {
    throw FormatError("npy_to_int64: dtype '" + array.dtype +
                      "' is not an integer type (expected |u1, <i4 or <i8)");
  }
  return out;
}

void write_npy(const std::string& path, const Tensor& tensor) {
  if (!tensor.defined()) throw ValueError("write_npy '" + path + "': undefined tensor");
  write_npy_raw(path, "<f4", tensor.shape(), tensor.numel() > 0 ? tensor.data() : nullptr, 4);
}

void write_npy_u8(const std::string& path, const Shape& shape, const uint8_t* values) {
  write_npy_raw(path, "|u1", shape, values, 1);
}

void write_npy_i64(const std::string& path, const Shape& shape, const int64_t* values) {
  write_npy_raw(path, "<i8", shape, values, 8);
}

}  // namespace stgnn
