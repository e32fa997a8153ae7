// Ego-Exo4D data readers: .npy, torch.save .pt, label_mapping.csv, keystep JSON, takes,
// feature timing and feature-file discovery.
//
// The .pt/.npy fixtures under tests/fixtures/egoexo/ were written by real torch 1.13 and NumPy
// (make_fixtures.py); every array derives from base[i][j] = (4 i + j) / 4 - 1, i < 3, j < 4.
// Corrupt inputs are made here from those bytes, or from zip archives and pickles assembled
// byte by byte, and every one must raise a stgnn::Error (never crash or allocate wildly).
#include <doctest/doctest.h>
#include <stdlib.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/atomic_file.h"
#include "data/csv.h"
#include "data/egoexo.h"
#include "data/npy.h"
#include "data/torch_pt.h"

using namespace stgnn;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) {
  return std::string(STGNN_SOURCE_DIR) + "/tests/fixtures/egoexo/" + name;
}

float base(int64_t i, int64_t j) {
  return static_cast<float>(4 * i + j) * 0.25f - 1.0f;
}

// The [3, 4] base matrix, values checked exactly (all are multiples of 1/4).
void check_base(const Tensor& t) {
  REQUIRE(t.shape() == Shape{3, 4});
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 4; ++j)
      CHECK(t.data()[i * 4 + j] == base(i, j));
  }
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no exception>";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Parses every prefix of `bytes` and every single-byte corruption of it: each must either
// succeed or throw a stgnn::Error (any other exception fails the test; a crash aborts it).
// Returns how many truncations were rejected.
int64_t fuzz_bytes(const std::vector<uint8_t>& bytes,
                   const std::function<void(const uint8_t*, size_t)>& parse) {
  int64_t rejected = 0;
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    std::vector<uint8_t> part(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut));
    try {
      parse(part.data(), part.size());
    } catch (const Error&) {
      ++rejected;
    }
  }
  for (size_t at = 0; at < bytes.size(); ++at) {
    for (uint8_t flip : {uint8_t{0xff}, uint8_t{0x01}, uint8_t{0x80}}) {
      std::vector<uint8_t> bad = bytes;
      bad[at] ^= flip;
      try {
        parse(bad.data(), bad.size());
      } catch (const Error&) {
      }
    }
  }
  return rejected;
}

// A fresh directory removed (with its content) at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "stgnn_egoexo_XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& rel) const { return (fs::path(path_) / rel).string(); }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string to_string(const std::vector<uint8_t>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

// ---------------------------------------------------------------- hand-made zip archives

void put16(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>((v >> 8) & 0xff));
}
void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xffff);
  put16(s, v >> 16);
}

struct ZipEntry {
  std::string name;
  std::string data;
  int64_t claimed_size = -1;  // uncompressed size to write in the headers; -1 = the real one
};

// A stored (uncompressed) zip archive with correct CRCs, as torch.save writes them.
std::string make_zip(const std::vector<ZipEntry>& entries) {
  std::string out, central;
  for (const ZipEntry& e : entries) {
    const uint32_t crc = static_cast<uint32_t>(
        crc32(0, reinterpret_cast<const Bytef*>(e.data.data()), static_cast<uInt>(e.data.size())));
    const uint32_t size = static_cast<uint32_t>(e.data.size());
    const uint32_t claimed = e.claimed_size >= 0 ? static_cast<uint32_t>(e.claimed_size) : size;
    const uint32_t offset = static_cast<uint32_t>(out.size());
    put32(out, 0x04034b50);
    put16(out, 20);
    put16(out, 0);
    put16(out, 0);  // stored
    put16(out, 0);
    put16(out, 0x21);
    put32(out, crc);
    put32(out, size);
    put32(out, claimed);
    put16(out, static_cast<uint32_t>(e.name.size()));
    put16(out, 0);
    out += e.name + e.data;
    put32(central, 0x02014b50);
    put16(central, 20);
    put16(central, 20);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0x21);
    put32(central, crc);
    put32(central, size);
    put32(central, claimed);
    put16(central, static_cast<uint32_t>(e.name.size()));
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put32(central, 0);
    put32(central, offset);
    central += e.name;
  }
  const uint32_t central_offset = static_cast<uint32_t>(out.size());
  out += central;
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, static_cast<uint32_t>(entries.size()));
  put16(out, static_cast<uint32_t>(entries.size()));
  put32(out, static_cast<uint32_t>(central.size()));
  put32(out, central_offset);
  put16(out, 0);
  return out;
}

// ---------------------------------------------------------------- hand-made pickles

std::string p_int(int64_t v) {
  std::string s;
  if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
    s.push_back('J');
    put32(s, static_cast<uint32_t>(static_cast<int32_t>(v)));
  } else {
    s.push_back(static_cast<char>(0x8a));  // LONG1, 8 bytes
    s.push_back(8);
    for (int k = 0; k < 8; ++k)
      s.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * k)) & 0xff));
  }
  return s;
}
std::string p_str(const std::string& text) {
  std::string s = "X";
  put32(s, static_cast<uint32_t>(text.size()));
  return s + text;
}
std::string p_global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}
std::string p_ints_tuple(const std::vector<int64_t>& values) {
  std::string s = "(";
  for (int64_t v : values)
    s += p_int(v);
  return s + "t";
}

// The pickle torch.save writes for one tensor (protocol 2, without the memo puts).
std::string tensor_pickle(const std::string& storage_type, int64_t numel, int64_t offset,
                          const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
  return "\x80\x02" + p_global("torch._utils", "_rebuild_tensor_v2") + "((" + p_str("storage") +
         p_global("torch", storage_type) + p_str("0") + p_str("cpu") + p_int(numel) + "tQ" +
         p_int(offset) + p_ints_tuple(size) + p_ints_tuple(stride) + "\x89" +
         p_global("collections", "OrderedDict") + ")Rt" + "R.";
}

std::string floats(const std::vector<float>& values) {
  std::string s(values.size() * 4, '\0');
  std::memcpy(s.data(), values.data(), s.size());
  return s;
}

Tensor parse_pt(const std::string& zip) {
  return parse_torch_tensor(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "mem.pt");
}

std::string pt_with(const std::string& pickle, const std::string& storage) {
  return make_zip(
      {{"archive/data.pkl", pickle}, {"archive/data/0", storage}, {"archive/version", "3\n"}});
}

NpyArray parse_npy_text(const std::string& bytes) {
  return parse_npy(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem.npy");
}

// A .npy image with the given header dict (padded as NumPy does) and payload.
std::string npy_image(const std::string& dict, const std::string& payload, int major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0)
    header.push_back(' ');
  header.push_back('\n');
  std::string s = "\x93NUMPY";
  s.push_back(static_cast<char>(major));
  s.push_back('\0');
  if (major == 1) {
    put16(s, static_cast<uint32_t>(header.size()));
  } else {
    put32(s, static_cast<uint32_t>(header.size()));
  }
  return s + header + payload;
}

}  // namespace

// ================================================================ .npy

TEST_CASE("npy: NumPy-written files of every supported dtype and version") {
  for (const char* name :
       {"npy_f4.npy", "npy_f2.npy", "npy_f8.npy", "npy_v2.npy", "npy_v3.npy", "npy_fortran.npy"}) {
    CAPTURE(name);
    check_base(npy_to_tensor(read_npy(fixture(name))));
  }
  CHECK(read_npy(fixture("npy_f2.npy")).dtype == "<f2");
  CHECK(read_npy(fixture("npy_v3.npy")).dtype == "<f4");

  const NpyArray u1 = read_npy(fixture("npy_u1.npy"));
  CHECK(u1.dtype == "|u1");
  CHECK(u1.shape == Shape{2, 3});
  CHECK(npy_to_int64(u1) == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  CHECK(npy_to_tensor(u1).to_vector() == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK(npy_to_int64(read_npy(fixture("npy_i8.npy"))) ==
        std::vector<int64_t>{-3, 0, int64_t{1} << 40});
  CHECK(npy_to_int64(read_npy(fixture("npy_i4.npy"))) == std::vector<int64_t>{-7, 9});
  CHECK(npy_to_tensor(read_npy(fixture("npy_i4.npy"))).to_vector() == std::vector<float>{-7, 9});

  const Tensor scalar = npy_to_tensor(read_npy(fixture("npy_scalar.npy")));
  CHECK(scalar.shape().empty());
  CHECK(scalar.item() == 1.5f);

  CHECK_THROWS_AS(npy_to_int64(read_npy(fixture("npy_f4.npy"))), FormatError);
}

TEST_CASE("npy: the in-memory parser matches the file reader, Fortran order included") {
  for (const char* name : {"npy_f4.npy", "npy_fortran.npy", "npy_v2.npy"}) {
    const std::vector<uint8_t> bytes = read_file_bytes(fixture(name));
    const NpyArray a = parse_npy(bytes.data(), bytes.size(), name);
    const NpyArray b = read_npy(fixture(name));
    CHECK(a.shape == b.shape);
    CHECK(a.bytes == b.bytes);
  }
  // The Fortran file's payload is column-major on disk; after reading it is row-major.
  const std::vector<uint8_t> f = read_file_bytes(fixture("npy_fortran.npy"));
  float second_on_disk;
  std::memcpy(&second_on_disk, f.data() + f.size() - 48 + 4, 4);
  CHECK(second_on_disk == base(1, 0));
  CHECK(npy_to_tensor(read_npy(fixture("npy_fortran.npy"))).data()[1] == base(0, 1));
}

TEST_CASE("npy: 3-D Fortran order, f2 special values") {
  // Column-major [2, 3, 2] holding 0..11 in storage order: element (i, j, k) = i + 2 j + 6 k.
  std::vector<float> storage(12);
  for (int v = 0; v < 12; ++v)
    storage[static_cast<size_t>(v)] = static_cast<float>(v);
  const NpyArray a = parse_npy_text(
      npy_image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 2), }", floats(storage)));
  const Tensor t = npy_to_tensor(a);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 2; ++k)
        CHECK(t.data()[i * 6 + j * 2 + k] == static_cast<float>(i + 2 * j + 6 * k));
    }
  }
  // Half: 1.0, -2.0, 65504 (max), smallest subnormal 2^-24, +inf, NaN.
  const uint16_t halves[] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x7e00};
  std::string payload(reinterpret_cast<const char*>(halves), sizeof(halves));
  const Tensor h = npy_to_tensor(parse_npy_text(
      npy_image("{'descr': '<f2', 'fortran_order': False, 'shape': (6,), }", payload)));
  CHECK(h.data()[0] == 1.0f);
  CHECK(h.data()[1] == -2.0f);
  CHECK(h.data()[2] == 65504.0f);
  CHECK(h.data()[3] == std::ldexp(1.0f, -24));
  CHECK(std::isinf(h.data()[4]));
  CHECK(std::isnan(h.data()[5]));
}

TEST_CASE("npy: header dict parsing is robust but strict") {
  const std::string payload = floats({1, 2, 3});
  // Key order, double quotes, no trailing comma, Python 2 long suffix: all fine.
  CHECK(parse_npy_text(
            npy_image("{\"shape\": (3L,), \"fortran_order\": False, \"descr\": \"<f4\"}", payload))
            .shape == Shape{3});
  CHECK(parse_npy_text(npy_image("{'descr':'<f4','fortran_order':False,'shape':(1,3,)}", payload))
            .shape == Shape{1, 3});
  CHECK(parse_npy_text(
            npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", payload, 2))
            .shape == Shape{3});

  auto bad = [&](const std::string& dict, const std::string& expected) {
    CAPTURE(dict);
    const std::string msg = message_of([&] { parse_npy_text(npy_image(dict, payload)); });
    CHECK(contains(msg, expected));
    CHECK(contains(msg, "mem.npy"));
  };
  bad("{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", "unsupported dtype '>f4'");
  bad("{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", "unsupported dtype");
  bad("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", "structured");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", "not a tuple");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }", "non-negative");
  bad("{'descr': '<f4', 'fortran_order': False, }", "missing key 'shape'");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'extra': 1}",
      "unexpected key 'extra'");
  bad("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3,), }", "True or False");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), } junk", "after the header");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", "truncated");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "trailing bytes");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "too large");
  bad("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
      "overflows");

  std::string wrong_version =
      npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", payload);
  wrong_version[6] = 4;
  CHECK(contains(message_of([&] { parse_npy_text(wrong_version); }), "version 4.0"));
  CHECK(contains(message_of([&] { parse_npy_text("\x93NUMPX\x01\x00\x10\x00"s); }), "magic"));
  CHECK(contains(message_of([&] { parse_npy_text(""); }), "too short"));
  // A header length pointing past the end of the file.
  std::string long_header = "\x93NUMPY\x01\x00"s;
  put16(long_header, 60000);
  CHECK(contains(message_of([&] { parse_npy_text(long_header + "{}"); }), "truncated"));
}

TEST_CASE("npy: a header claiming 10^12 elements is rejected before allocating") {
  TempDir dir;
  const std::string lie = npy_image(
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }", floats({1, 2}));
  write_bytes(dir / "lie.npy", lie);
  // Allocating 4 TB would throw std::bad_alloc (not a stgnn::Error) and fail this check.
  const std::string msg = message_of([&] { read_npy(dir / "lie.npy"); });
  CHECK(contains(msg, "4000000000000 bytes of data, the file holds 8"));
  CHECK(contains(msg, "lie.npy"));
  CHECK_THROWS_AS(parse_npy_text(lie), FormatError);
  CHECK_THROWS_AS(read_npy(dir / "absent.npy"), IoError);
}

TEST_CASE("npy: truncated and corrupted fixtures never crash") {
  for (const char* name : {"npy_f4.npy", "npy_fortran.npy", "npy_v2.npy", "npy_f2.npy"}) {
    CAPTURE(name);
    const std::vector<uint8_t> bytes = read_file_bytes(fixture(name));
    const int64_t rejected = fuzz_bytes(
        bytes, [&](const uint8_t* p, size_t n) { npy_to_tensor(parse_npy(p, n, name)); });
    // Every proper prefix is short of data, so every truncation must be rejected.
    CHECK(rejected == static_cast<int64_t>(bytes.size()));
  }
}

TEST_CASE("npy: writers round-trip, align data to 64 bytes and leave no temporary files") {
  TempDir dir;
  const Tensor t = Tensor::from_vector({2, 3}, {1.5f, -2, 0, 3.25f, 1e-8f, 7});
  write_npy(dir / "t.npy", t);
  const std::vector<uint8_t> bytes = read_file_bytes(dir / "t.npy");
  CHECK(bytes.size() == 128 + 24);  // like NumPy: the dict needs two 64-byte blocks
  CHECK(bytes[127] == '\n');
  CHECK(to_string(bytes).substr(10).find(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }") == 0);
  CHECK(npy_to_tensor(read_npy(dir / "t.npy")).to_vector() == t.to_vector());

  write_npy(dir / "one.npy", Tensor::from_vector({3}, {1, 2, 3}));
  CHECK(contains(to_string(read_file_bytes(dir / "one.npy")), "'shape': (3,)"));
  write_npy(dir / "scalar.npy", Tensor::scalar(4.5f));
  CHECK(npy_to_tensor(read_npy(dir / "scalar.npy")).item() == 4.5f);
  write_npy(dir / "empty.npy", Tensor::zeros({0, 7}));
  CHECK(read_npy(dir / "empty.npy").shape == Shape{0, 7});

  const uint8_t u8[] = {0, 200, 255, 7};
  write_npy_u8(dir / "u8.npy", {2, 2}, u8);
  CHECK(npy_to_int64(read_npy(dir / "u8.npy")) == std::vector<int64_t>{0, 200, 255, 7});
  const int64_t i64[] = {-1, int64_t{1} << 50, 3};
  write_npy_i64(dir / "i64.npy", {3}, i64);
  CHECK(npy_to_int64(read_npy(dir / "i64.npy")) == std::vector<int64_t>{-1, int64_t{1} << 50, 3});

  // Overwriting replaces the file in one step.
  write_npy(dir / "t.npy", Tensor::from_vector({1}, {9}));
  CHECK(npy_to_tensor(read_npy(dir / "t.npy")).to_vector() == std::vector<float>{9});
  for (const auto& entry : fs::directory_iterator(dir.str())) {
    CHECK_FALSE(contains(entry.path().filename().string(), ".tmp"));
  }
  CHECK_THROWS_AS(write_npy_i64(dir / "bad.npy", {-1}, i64), ValueError);
  CHECK_THROWS_AS(write_npy(dir / "no/such/dir/x.npy", t), IoError);
}

// ================================================================ .pt

TEST_CASE("pt: torch.save files of float32, float16 and float64") {
  check_base(read_torch_tensor(fixture("pt_f32.pt")));
  check_base(read_torch_tensor(fixture("pt_f16.pt")));
  check_base(read_torch_tensor(fixture("pt_f64.pt")));
  const std::vector<uint8_t> bytes = read_file_bytes(fixture("pt_f32.pt"));
  check_base(parse_torch_tensor(bytes.data(), bytes.size(), "pt_f32.pt"));
}

TEST_CASE("pt: storage offsets and strides of views") {
  const Tensor tr = read_torch_tensor(fixture("pt_transposed.pt"));  // base.t()
  REQUIRE(tr.shape() == Shape{4, 3});
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 3; ++j)
      CHECK(tr.data()[i * 3 + j] == base(j, i));
  }
  const Tensor sl = read_torch_tensor(fixture("pt_sliced.pt"));  // base[1:, 1:3]
  REQUIRE(sl.shape() == Shape{2, 2});
  CHECK(sl.to_vector() == std::vector<float>{base(1, 1), base(1, 2), base(2, 1), base(2, 2)});
  const Tensor st = read_torch_tensor(fixture("pt_stepped.pt"));  // base[:, ::2]
  REQUIRE(st.shape() == Shape{3, 2});
  CHECK(st.to_vector() ==
        std::vector<float>{base(0, 0), base(0, 2), base(1, 0), base(1, 2), base(2, 0), base(2, 2)});
  const Tensor four = read_torch_tensor(fixture("pt_4d.pt"));
  CHECK(four.shape() == Shape{1, 3, 1, 4});
  for (int64_t k = 0; k < 12; ++k)
    CHECK(four.data()[k] == base(k / 4, k % 4));
}

TEST_CASE("pt: empty, zero-element, 0-d tensors and parameters") {
  CHECK(read_torch_tensor(fixture("pt_empty.pt")).shape() == Shape{0, 5});
  CHECK(read_torch_tensor(fixture("pt_binint.pt")).shape() == Shape{70000, 0});  // BININT
  CHECK(read_torch_tensor(fixture("pt_long1.pt")).shape() ==
        Shape{(int64_t{1} << 31) + 5, 0});  // LONG1
  const Tensor s = read_torch_tensor(fixture("pt_scalar.pt"));
  CHECK(s.shape().empty());
  CHECK(s.item() == 2.5f);
  const Tensor p = read_torch_tensor(fixture("pt_parameter.pt"));  // _rebuild_parameter, BINGET
  CHECK(p.to_vector() == std::vector<float>{base(0, 0), base(0, 1), base(0, 2), base(0, 3)});
}

TEST_CASE("pt: objects that are not a float tensor are named in the error") {
  const std::string dict = message_of([] { read_torch_tensor(fixture("pt_dict.pt")); });
  CHECK(contains(dict, "pt_dict.pt"));
  CHECK(contains(dict, "dict with keys [str 'features']"));
  CHECK(contains(dict, "not a tensor"));
  const std::string longs = message_of([] { read_torch_tensor(fixture("pt_int64.pt")); });
  CHECK(contains(longs, "torch.LongStorage"));
  CHECK_THROWS_AS(read_torch_tensor(fixture("npy_f4.npy")), FormatError);  // not a zip
  CHECK_THROWS_AS(read_torch_tensor(fixture("absent.pt")), IoError);
}

TEST_CASE("pt: truncated and corrupted torch files never crash") {
  for (const char* name : {"pt_f32.pt", "pt_transposed.pt", "pt_parameter.pt"}) {
    CAPTURE(name);
    const std::vector<uint8_t> bytes = read_file_bytes(fixture(name));
    const int64_t rejected =
        fuzz_bytes(bytes, [&](const uint8_t* p, size_t n) { parse_torch_tensor(p, n, name); });
    // A zip's directory is at its end: no proper prefix can be read.
    CHECK(rejected == static_cast<int64_t>(bytes.size()));
  }
}

TEST_CASE("pt: hand-assembled archives exercise the pickle machine and its limits") {
  const std::string six = floats({0, 1, 2, 3, 4, 5});
  // A transposed [3, 2] view of a 6-float storage, built without torch.
  const Tensor t = parse_pt(pt_with(tensor_pickle("FloatStorage", 6, 0, {3, 2}, {1, 3}), six));
  CHECK(t.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  // Protocol-4 spellings: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, BINGET.
  std::string p4 = "\x80\x04\x95";
  p4 += std::string(8, '\0');
  auto short_str = [](const std::string& s) {
    return std::string(1, static_cast<char>(0x8c)) + static_cast<char>(s.size()) + s;
  };
  p4 += short_str("torch._utils") + short_str("_rebuild_tensor_v2") + "\x93\x94";
  p4 += "((" + short_str("storage") + short_str("torch") + short_str("HalfStorage") + "\x93" +
        short_str("0") + short_str("cpu") + "K\x02tQK\x01K\x01\x85K\x01\x85\x89" + "N" + "tR.";
  const uint16_t halves[] = {0x3c00, 0xc000};
  const Tensor h = parse_pt(pt_with(p4, std::string(reinterpret_cast<const char*>(halves), 4)));
  CHECK(h.to_vector() == std::vector<float>{-2.0f});

  auto rejects = [&](const std::string& zip, const std::string& expected) {
    const std::string msg = message_of([&] { parse_pt(zip); });
    CAPTURE(msg);
    CHECK(contains(msg, "mem.pt"));
    CHECK(contains(msg, expected));
  };
  rejects(pt_with("garbage that is not a pickle", six), "unsupported pickle opcode");
  rejects(pt_with(tensor_pickle("FloatStorage", 100, 0, {10, 10}, {10, 1}), six),
          "expected 400 bytes");
  rejects(pt_with(tensor_pickle("FloatStorage", int64_t{1} << 40, 0, {2}, {1}), six),
          "expected 4398046511104 bytes");
  rejects(pt_with(tensor_pickle("FloatStorage", 6, 0, {3, 2}, {2, 2}), six), "reaches element 6");
  rejects(pt_with(tensor_pickle("FloatStorage", 6, 5, {2}, {1}), six), "reaches element 6");
  rejects(pt_with(tensor_pickle("FloatStorage", 6, 7, {0}, {1}), six), "offset beyond");
  rejects(pt_with(tensor_pickle("FloatStorage", 6, 0, {1000, 1000}, {0, 0}), six), "more elements");
  rejects(pt_with(tensor_pickle("FloatStorage", 6, 0, {int64_t{1} << 62, 4}, {1, 1}), six),
          "overflows");
  rejects(pt_with(tensor_pickle("FloatStorage", 6, 0, {2, 3}, {3}), six), "differ in length");
  rejects(pt_with(tensor_pickle("FloatStorage", 6, 0, std::vector<int64_t>(17, 1),
                                std::vector<int64_t>(17, 1)),
                  six),
          "17 dimensions");
  rejects(pt_with(tensor_pickle("FloatStorage", 6, 0, {6}, {1}).substr(0, 60), six),
          "truncated pickle");
  rejects(pt_with("\x80\x02" + p_global("os", "system") + p_str("ls") + "\x85R.", six),
          "unsupported callable os.system");
  rejects(pt_with("\x80\x02NN.", six), "STOP with 2 objects");
  rejects(pt_with("\x80\x02(N.", six), "open MARK");
  rejects(pt_with("\x80\x02h\x05.", six), "memo key 5");
  rejects(pt_with("\x80\x02t.", six), "no MARK");
  rejects(pt_with("\x80\x02s.", six), "stack underflow");
  rejects(pt_with("\x80\x09N.", six), "protocol 9");
  rejects(pt_with("\x80\x02\x8a\x09" + std::string(9, '\1') + ".", six), "does not fit");
  // A list that contains itself must neither recurse forever nor leak.
  rejects(pt_with("\x80\x02]q\x00h\x00\x61."s, six), "list of 1 items, not a tensor");
  // Deep nesting: 100 000 levels of 1-tuples are built iteratively and freed without recursion.
  std::string deep = "\x80\x02)";
  for (int k = 0; k < 100000; ++k)
    deep += "\x85";
  rejects(pt_with(deep + ".", six), "tuple of 1 items");
  std::string wide = "\x80\x02";
  for (int k = 0; k < 70000; ++k)
    wide += "N";
  rejects(pt_with(wide + ".", six), "stack deeper");
  std::string memo = "\x80\x02N";
  for (uint32_t k = 0; k < 70000; ++k) {
    memo += "r";
    put32(memo, k);
  }
  rejects(pt_with(memo + ".", six), "memo larger");

  // Zip-level damage.
  const std::string pickle = tensor_pickle("FloatStorage", 6, 0, {6}, {1});
  rejects(make_zip({{"archive/data/0", six}}), "no '<archive>/data.pkl'");
  rejects(make_zip({{"a/data.pkl", pickle}, {"b/data.pkl", pickle}}), "2 '<archive>/data.pkl'");
  rejects(make_zip({{"archive/data.pkl", pickle}}), "no entry 'archive/data/0'");
  rejects(make_zip({{"archive/data.pkl", pickle}, {"archive/data/0", six, int64_t{1} << 31}}), "");
  rejects(
      make_zip(
          {{"archive/data.pkl", pickle}, {"archive/data/0", six}, {"archive/byteorder", "big"}}),
      "not little-endian");
  rejects("PK\x05\x06 definitely not a zip archive", "not a zip archive");
  rejects("", "not a zip archive");
  CHECK(parse_pt(make_zip({{"archive/data.pkl", pickle},
                           {"archive/data/0", six},
                           {"archive/byteorder", "little"}}))
            .numel() == 6);
}

// ================================================================ label_mapping.csv

TEST_CASE("csv: RFC 4180 quoting, CRLF, BOM, embedded newlines and line numbers") {
  const std::string text =
      "\xEF\xBB\xBF"
      "a,b,c\r\n"
      "1,\"x, y\",\"say \"\"hi\"\"\"\r\n"
      "\r\n"
      "2,\"two\nlines\",\r\n"
      "3,,last";
  const std::vector<CsvRecord> rows = parse_csv(text, "t.csv");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].fields == std::vector<std::string>{"a", "b", "c"});
  CHECK(rows[1].fields == std::vector<std::string>{"1", "x, y", "say \"hi\""});
  CHECK(rows[2].line == 4);
  CHECK(rows[2].fields == std::vector<std::string>{"2", "two\nlines", ""});
  CHECK(rows[3].line == 6);
  CHECK(rows[3].fields == std::vector<std::string>{"3", "", "last"});
  CHECK(message_of([] { parse_csv("a\n\"open,\nstill open", "t.csv"); }) ==
        "t.csv:2: unterminated quoted field");
  CHECK(message_of([] { parse_csv("a\nb\"c\n", "t.csv"); }) ==
        "t.csv:2: quote inside an unquoted field");
  CHECK(message_of([] { parse_csv("\"a\"b\n", "t.csv"); }) ==
        "t.csv:1: unexpected character after a closing quote");
}

TEST_CASE("label mapping: quoted step names, validation with file:line") {
  const std::string text =
      "label_id,step_unique_id,step_name,scenario_name\r\n"
      "1,843,\"Unbox package, then check\",covid\r\n"
      "0,1567,Stir the mixture,cooking\r\n"
      "2,77,\"Say \"\"done\"\"\",cooking\r\n";
  const LabelMapping m = parse_label_mapping(text, "label_mapping.csv");
  REQUIRE(m.num_classes() == 3);
  CHECK(m.entries[0].step_unique_id == 1567);
  CHECK(m.entries[1].step_name == "Unbox package, then check");
  CHECK(m.entries[1].scenario_name == "covid");
  CHECK(m.entries[2].step_name == "Say \"done\"");
  CHECK(m.label_for_step(843) == 1);
  CHECK(m.label_for_step(12345) == -1);

  // Columns in another order, no scenario column.
  const LabelMapping m2 =
      parse_label_mapping("step_name,label_id,step_unique_id\nA,0,5\n", "m2.csv");
  CHECK(m2.entries[0].step_name == "A");
  CHECK(m2.label_for_step(5) == 0);

  const std::string header = "label_id,step_unique_id,step_name,scenario_name\n";
  CHECK(message_of([&] { parse_label_mapping(header + "0,1,a,s\n2,2,b,s\n", "m.csv"); }) ==
        "m.csv:3: label_id 2 outside 0..1 (label ids must be 0..n-1 for n = 2 rows)");
  CHECK(message_of([&] { parse_label_mapping(header + "0,1,a,s\n0,2,b,s\n", "m.csv"); }) ==
        "m.csv:3: label_id 0 already defined on line 2");
  CHECK(message_of([&] { parse_label_mapping(header + "0,1,a,s\n1,1,b,s\n", "m.csv"); }) ==
        "m.csv:3: step_unique_id 1 already mapped on line 2");
  CHECK(message_of([&] { parse_label_mapping(header + "0,x,a,s\n", "m.csv"); }) ==
        "m.csv:2: step_unique_id 'x' is not an integer");
  CHECK(message_of([&] { parse_label_mapping(header + "0,1,a,b,s\n", "m.csv"); }) ==
        "m.csv:2: expected 4 fields, found 5");
  CHECK(contains(message_of([] { parse_label_mapping("id,step\n0,1\n", "m.csv"); }),
                 "m.csv:1: header lacks column 'label_id'"));
  CHECK(contains(message_of([&] { parse_label_mapping(header, "m.csv"); }), "no labels"));
  CHECK_THROWS_AS(read_label_mapping("/nonexistent/label_mapping.csv"), IoError);
}

// ================================================================ keystep JSON

namespace {

const char* kUidA = "77cd56fc-6b68-4c7f-814b-81545484dd2d";
const char* kUidB = "0a1b2c3d-0000-4000-8000-000000000001";

std::string clip(const std::string& take, double s, double e, const std::string& cam) {
  std::ostringstream out;
  out << "train/" << take << "/start" << s << "_end" << e << "_" << cam << ".mp4";
  return out.str();
}

// One segment object of keystep_segment_*.json; `labels` adds step_unique_id/label_id/step_name.
std::string segment_json(const std::string& uid, const std::string& take, double s, double e,
                         bool labels, int64_t step = 0, int64_t label = 0) {
  std::ostringstream out;
  out << "{\"segment_name_list\": [\"" << clip(take, s, e, "aria02_214-1") << "\", \""
      << clip(take, s, e, "cam01") << "\", \"" << clip(take, s, e, "gp02") << "\"],"
      << "\"ego_segment_name\": \"" << clip(take, s, e, "aria02_214-1") << "\","
      << "\"take_uid\": \"" << uid << "\", \"take_name\": \"" << take << "\","
      << "\"start_time\": " << s << ", \"end_time\": " << e << ", \"unknown_extra\": {\"x\": [1]}";
  if (labels)
    out << ", \"step_unique_id\": " << step << ", \"label_id\": " << label
        << ", \"step_name\": \"s\"";
  out << "}";
  return out.str();
}

LabelMapping small_mapping() {
  return parse_label_mapping(
      "label_id,step_unique_id,step_name,scenario_name\n0,1567,Stir,cooking\n1,843,Unbox,covid\n"
      "2,900,\"Rinse, dry\",cooking\n",
      "label_mapping.csv");
}

}  // namespace

TEST_CASE("keystep segments: labelled split with extra keys, cameras and file indices") {
  const LabelMapping mapping = small_mapping();
  const std::string text =
      "{\"date\": \"2024\", \"description\": \"d\", \"splits\": [\"train\"], \"segments\": [" +
      segment_json(kUidA, "georgiatech_covid_07_6", 40.5, 50, true, 843, 1) + "," +
      segment_json(kUidB, "upenn_cooking_1", 3, 9.5, true, 1567, 0) + "," +
      segment_json(kUidA, "georgiatech_covid_07_6", 0.85598, 33.20377, true, 900, 2) + "]}";
  const KeystepSplit split = parse_keystep_segments(text, "train.json", &mapping);
  REQUIRE(split.segments.size() == 3);
  CHECK(split.total_in_file == 3);
  CHECK(split.labelled());
  const KeystepSegment& s0 = split.segments[0];
  CHECK(s0.index == 0);
  CHECK(s0.take_uid == kUidA);
  CHECK(s0.label == 1);
  CHECK(s0.step_unique_id == 843);
  CHECK(s0.start_time == 40.5);
  CHECK(s0.ego_camera == "aria02_214-1");
  CHECK(s0.exo_cameras == std::vector<std::string>{"cam01", "gp02"});
  CHECK(s0.segment_names.size() == 3);

  const std::vector<Take> takes = group_takes(split.segments);
  REQUIRE(takes.size() == 2);
  CHECK(takes[0].take_uid == kUidA);  // first appearance
  CHECK(takes[1].take_uid == kUidB);
  REQUIRE(takes[0].segments.size() == 2);
  CHECK(takes[0].segments[0].start_time == 0.85598);  // sorted by start time
  CHECK(takes[0].segments[0].index == 2);             // the file index survives sorting
  CHECK(takes[0].segments[1].index == 0);
  CHECK(takes[0].cameras() == std::vector<std::string>{"aria02_214-1", "cam01", "gp02"});
}

TEST_CASE("keystep segments: the unannotated test split and label rules") {
  const std::string test_text = "{\"segments\": [" + segment_json(kUidA, "t", 1, 2, false) + "]}";
  const KeystepSplit test = parse_keystep_segments(test_text, "test.json", nullptr);
  REQUIRE(test.segments.size() == 1);
  CHECK(test.segments[0].label == -1);
  CHECK(test.segments[0].step_unique_id == -1);
  CHECK_FALSE(test.labelled());
  // A bare array is accepted too.
  CHECK(parse_keystep_segments("[" + segment_json(kUidA, "t", 1, 2, false) + "]", "a.json")
            .segments.size() == 1);

  const LabelMapping mapping = small_mapping();
  // step_unique_id alone: mapped, or dropped and counted.
  std::string only_step = segment_json(kUidA, "t", 1, 2, false);
  only_step.insert(only_step.size() - 1, ", \"step_unique_id\": \"900\"");
  std::string unmapped = segment_json(kUidA, "t", 3, 4, false);
  unmapped.insert(unmapped.size() - 1, ", \"step_unique_id\": 4242");
  const KeystepSplit s =
      parse_keystep_segments("[" + only_step + "," + unmapped + "]", "x.json", &mapping);
  REQUIRE(s.segments.size() == 1);
  CHECK(s.segments[0].label == 2);
  CHECK(s.dropped_unmapped == 1);
  CHECK(s.total_in_file == 2);

  CHECK(
      contains(message_of([&] {
                 parse_keystep_segments("[" + segment_json(kUidA, "t", 1, 2, true, 843, 7) + "]",
                                        "x.json", &mapping);
               }),
               "'x.json': segment 0: field 'label_id': 7 is outside 0..2 of 'label_mapping.csv'"));
  CHECK(contains(message_of([&] {
                   parse_keystep_segments("[" + segment_json(kUidA, "t", 1, 2, true, 843, 0) + "]",
                                          "x.json", &mapping);
                 }),
                 "disagrees with step_unique_id 843, which is label 1"));
  CHECK(contains(message_of([&] {
                   parse_keystep_segments("[" + segment_json(kUidA, "t", 1, 2, true, 843, -1) + "]",
                                          "x.json");
                 }),
                 "is negative"));
}

TEST_CASE("keystep segments: missing and mistyped fields name file, segment and field") {
  auto msg_for = [](const std::string& seg) {
    return message_of([&] {
      parse_keystep_segments(
          "{\"segments\": [" + segment_json(kUidA, "t", 1, 2, false) + "," + seg + "]}", "v.json");
    });
  };
  std::string seg = segment_json(kUidA, "t", 1, 2, false);
  std::string no_start = seg;
  no_start.replace(no_start.find("\"start_time\": 1,"), 16, "");
  CHECK(msg_for(no_start) == "'v.json': segment 1: missing field 'start_time'");
  std::string text_time = seg;
  text_time.replace(text_time.find("\"end_time\": 2"), 13, "\"end_time\": \"2\"");
  CHECK(msg_for(text_time) ==
        "'v.json': segment 1: field 'end_time': expected a number of seconds, found string \"2\"");
  CHECK(msg_for(segment_json(kUidA, "t", 5, 2, false)) ==
        "'v.json': segment 1: end_time 2 is before start_time 5");
  std::string neg = seg;
  neg.replace(neg.find("\"start_time\": 1"), 15, "\"start_time\": -1");
  CHECK(contains(msg_for(neg), "segment 1: field 'start_time': -1 is not a non-negative time"));
  std::string bad_uid = seg;
  bad_uid.replace(bad_uid.find("\"take_uid\": \""), 13, "\"take_uid\": 5, \"x\": \"");
  CHECK(msg_for(bad_uid) ==
        "'v.json': segment 1: field 'take_uid': expected a string, found number 5");
  std::string bad_clip = seg;
  bad_clip.replace(bad_clip.find("_cam01.mp4"), 10, ".mp4");
  CHECK(
      contains(msg_for(bad_clip),
               "'v.json': segment 1: clip name 'train/t/start1_end2.mp4' does not have the form"));
  std::string bad_label = seg;
  bad_label.insert(bad_label.size() - 1, ", \"label_id\": 1.5");
  CHECK(msg_for(bad_label) ==
        "'v.json': segment 1: field 'label_id': expected an integer, found number 1.5");
  CHECK(msg_for("[]") == "'v.json': segment 1: expected an object, found array");
  CHECK(contains(message_of([] { parse_keystep_segments("{\"segments\": [", "v.json"); }),
                 "'v.json': invalid JSON"));
  CHECK(contains(message_of([] { parse_keystep_segments("{\"x\": 1}", "v.json"); }),
                 "no \"segments\""));
  CHECK_THROWS_AS(read_keystep_segments("/nonexistent/keystep_segment_val.json"), IoError);
}

TEST_CASE("keystep raw annotations: takes, dropped steps, running indices") {
  const LabelMapping mapping = small_mapping();
  const std::string text = R"({
    "annotations": {
      "uid-b": {"take_uid": "uid-b", "take_name": "take_b", "scenario": "Cooking",
                "annotation_meta": {"x": 1},
                "segments": [
                  {"start_time": 5.0, "end_time": 9.0, "step_id": 3, "step_unique_id": 1567,
                   "step_name": "Stir", "step_description": "stir well", "is_essential": true,
                   "parents": [1, 2]},
                  {"start_time": 1.0, "end_time": 2.0, "step_id": 4, "step_unique_id": 31337,
                   "step_name": "Rare", "step_description": "", "is_essential": false}]},
      "uid-a": {"take_name": "take_a", "scenario": "Covid",
                "segments": [
                  {"start_time": 0.5, "end_time": 3.0, "step_unique_id": "843"}]}
    },
    "taxonomy": {"Cooking": {"1567": {"name": "Stir"}}},
    "vocabulary": ["stir"]
  })";
  const KeystepSplit split = parse_raw_keysteps(text, "keystep_train.json", mapping);
  CHECK(split.total_in_file == 3);
  CHECK(split.dropped_unmapped == 1);
  REQUIRE(split.segments.size() == 2);
  CHECK(split.segments[0].take_uid == "uid-b");  // file order, not key order
  CHECK(split.segments[0].index == 0);
  CHECK(split.segments[0].label == 0);
  CHECK(split.segments[0].is_essential);
  CHECK(split.segments[0].step_description == "stir well");
  CHECK(split.segments[0].scenario == "Cooking");
  CHECK(split.segments[1].take_uid == "uid-a");  // from the key
  CHECK(split.segments[1].index == 2);
  CHECK(split.segments[1].label == 1);
  CHECK(split.segments[1].ego_camera.empty());
  const std::vector<Take> takes = group_takes(split.segments);
  REQUIRE(takes.size() == 2);
  CHECK(takes[0].take_name == "take_b");
  // Raw annotations carry no cameras, so features cannot be looked up for them.
  TempDir dir;
  CHECK(contains(message_of([&] {
                   load_take_features(FeatureIndex(dir.str()), takes[0], false,
                                      MissingFeatures::kError);
                 }),
                 "no camera names"));

  // The array form of "annotations".
  const KeystepSplit arr = parse_raw_keysteps(
      R"({"annotations": [{"take_uid": "u", "take_name": "n", "segments": [{"start_time": 0, "end_time": 1, "step_unique_id": 900}]}]})",
      "k.json", mapping);
  REQUIRE(arr.segments.size() == 1);
  CHECK(arr.segments[0].label == 2);

  CHECK(
      message_of([&] {
        parse_raw_keysteps(
            R"({"annotations": {"u": {"take_name": "n", "segments": [{"start_time": 0, "end_time": 1}]}}})",
            "k.json", mapping);
      }) == "'k.json': take u segment 0: missing field 'step_unique_id'");
  CHECK(
      message_of([&] {
        parse_raw_keysteps(
            R"({"annotations": {"u": {"take_name": "n", "segments": [{"start_time": 0, "end_time": 1, "step_unique_id": 900, "is_essential": "yes"}]}}})",
            "k.json", mapping);
      }) ==
      "'k.json': take u segment 0: field 'is_essential': expected true or false, found string "
      "\"yes\"");
  CHECK(contains(message_of([&] { parse_raw_keysteps(R"({"taxonomy": {}})", "k.json", mapping); }),
                 "no \"annotations\""));
}

TEST_CASE("takes: camera names and grouping errors") {
  CHECK(camera_from_segment_name(
            "train/georgiatech_covid_07_6/start0.85598_end33.20377_aria02_214-1.mp4") ==
        "aria02_214-1");
  CHECK(camera_from_segment_name("start12_end13.5_cam01.mp4") == "cam01");
  CHECK(camera_from_segment_name("x/y/start1e-3_end2_gp02.mp4") == "gp02");
  CHECK_THROWS_AS(camera_from_segment_name("train/t/clip_cam01.mp4"), FormatError);
  CHECK_THROWS_AS(camera_from_segment_name("train/t/start1_end2_.mp4"), FormatError);
  CHECK_THROWS_AS(camera_from_segment_name("train/t/start1_endx_cam01.mp4"), FormatError);
  CHECK(camera_device("aria02_214-1") == "aria02");
  CHECK(camera_device("cam01") == "cam01");

  KeystepSegment a;
  a.take_uid = "u";
  a.take_name = "n";
  a.ego_camera = "aria01_214-1";
  KeystepSegment b = a;
  b.index = 1;
  b.ego_camera = "aria02_214-1";
  CHECK(message_of([&] {
          group_takes({a, b});
        }) == "take u: segment 1 has ego camera 'aria02_214-1', earlier segments 'aria01_214-1'");
  b = a;
  b.index = 1;
  b.take_name = "other";
  CHECK(message_of([&] {
          group_takes({a, b});
        }) == "take u: segment 1 names it 'other', earlier segments 'n'");
}

// ================================================================ feature timing

namespace {

// Row t = [t, 10 t]: a segment mean is easy to state by hand.
Tensor ramp(int64_t rows) {
  std::vector<float> v;
  for (int64_t t = 0; t < rows; ++t) {
    v.push_back(static_cast<float>(t));
    v.push_back(static_cast<float>(10 * t));
  }
  return Tensor::from_vector({rows, 2}, v);
}

}  // namespace

TEST_CASE("feature timing: windows inside the segment, the overlap fallback, outside the video") {
  // Windows (s): t0 [0, 1.067), t1 [0.533, 1.6), t2 [1.067, 2.133), t3 [1.6, 2.667),
  // t4 [2.133, 3.2), t5 [2.667, 3.733).
  const Tensor f = ramp(6);
  // [0.5, 2.2] fully contains t1 and t2 only.
  CHECK(segment_feature(f, 0.5, 2.2).to_vector() == std::vector<float>{1.5f, 15.0f});
  // Boundaries written with 6 decimals (16/30 = 0.5333.., 64/30 = 2.1333..): still t1, t2.
  CHECK(segment_feature(f, 0.533333, 2.133333).to_vector() == std::vector<float>{1.5f, 15.0f});
  // [0, 3.733334] contains all six: mean of 0..5 = 2.5.
  CHECK(segment_feature(f, 0.0, 3.733334).to_vector() == std::vector<float>{2.5f, 25.0f});
  // [1.65, 1.7] is shorter than a window: the overlapping t2 and t3 are averaged.
  CHECK(segment_feature(f, 1.65, 1.7).to_vector() == std::vector<float>{2.5f, 25.0f});
  // A zero-length segment at 0 overlaps t0 only.
  CHECK(segment_feature(f, 0.0, 0.0).to_vector() == std::vector<float>{0.0f, 0.0f});
  // Past the last window.
  CHECK(message_of([&] { segment_feature(f, 10.0, 12.5); }) ==
        "segment [10, 12.5] s overlaps none of the 6 feature windows, which cover [0, 3.733333333) "
        "s");
  CHECK_THROWS_AS(segment_feature(ramp(0), 0.0, 1.0), FormatError);
  CHECK_THROWS_AS(segment_feature(f, 2.0, 1.0), ValueError);
  CHECK_THROWS_AS(segment_feature(f, NAN, 1.0), ValueError);
  CHECK_THROWS_AS(segment_feature(Tensor::zeros({6}), 0.0, 1.0), ShapeError);
  // Another timing: one window per second.
  CHECK(segment_feature(f, 2.0, 4.0, FeatureTiming{1.0, 1, 1}).to_vector() ==
        std::vector<float>{2.5f, 25.0f});

  Take take;
  take.take_uid = "u";
  take.take_name = "n";
  KeystepSegment s;
  s.index = 4;
  s.start_time = 0.5;
  s.end_time = 2.2;
  take.segments.push_back(s);
  s.index = 9;
  s.start_time = 1.65;
  s.end_time = 1.7;
  take.segments.push_back(s);
  const Tensor both = take_segment_features(f, take, "u_aria.pt");
  CHECK(both.shape() == Shape{2, 2});
  CHECK(both.to_vector() == std::vector<float>{1.5f, 15.0f, 2.5f, 25.0f});
  s.index = 11;
  s.start_time = 50;
  s.end_time = 60;
  take.segments.push_back(s);
  CHECK(contains(message_of([&] { take_segment_features(f, take, "u_aria.pt"); }),
                 "features 'u_aria.pt': take u (n) segment 11: segment [50, 60] s overlaps none"));
}

// ================================================================ feature files

TEST_CASE("feature discovery: nested directories, streams, GLEVR names, missing cameras") {
  TempDir dir;
  const std::string uid = kUidA;
  // Ego .pt two levels down, exo cam01 as .npy with a stream suffix elsewhere.
  fs::create_directories(dir / "omnivore/train/a");
  fs::copy_file(fixture("pt_f32.pt"), dir / ("omnivore/train/a/" + uid + "_aria02_214-1.pt"));
  fs::create_directories(dir / "converted");
  write_npy(dir / ("converted/" + uid + "_cam01_0.npy"), Tensor::full({5, 4}, 1.0f));
  write_bytes(dir / "notes.txt", "ignored");
  const FeatureIndex index(dir.str());
  CHECK(index.num_files() == 2);

  CHECK(index.find_camera(uid, "take_a", "aria02_214-1") ==
        dir / ("omnivore/train/a/" + uid + "_aria02_214-1.pt"));
  CHECK(index.find_camera(uid, "take_a", "cam01") == dir / ("converted/" + uid + "_cam01_0.npy"));
  CHECK_FALSE(index.find_camera(uid, "take_a", "gp02").has_value());
  const std::string missing = message_of([&] { index.require_camera(uid, "take_a", "gp02", 2); });
  CHECK(missing == "no feature file for take " + uid + " (take_a) camera gp02 under '" + dir.str() +
                       "' (looked for " + uid + "_gp02.{pt,npy}, " + uid +
                       "_gp02_<stream>.{pt,npy}, take_a_2.npy)");
  CHECK_THROWS_AS(index.require_camera(uid, "take_a", "gp02"), IoError);

  Take take;
  take.take_uid = uid;
  take.take_name = "take_a";
  take.ego_camera = "aria02_214-1";
  take.exo_cameras = {"cam01", "gp02"};
  const TakeFeatures ego_only = load_take_features(index, take, false, MissingFeatures::kError);
  REQUIRE(ego_only.cameras.size() == 1);
  CHECK(ego_only.has_ego);
  check_base(ego_only.cameras[0].features);
  const std::string err =
      message_of([&] { load_take_features(index, take, true, MissingFeatures::kError); });
  CHECK(contains(err, "camera gp02"));
  CHECK(contains(err, uid));
  const TakeFeatures skipped = load_take_features(index, take, true, MissingFeatures::kSkip);
  CHECK(skipped.cameras.size() == 2);
  CHECK(skipped.cameras[1].camera == "cam01");
  CHECK(skipped.missing == std::vector<std::string>{"gp02"});

  // Cameras of one take must share D.
  write_npy(dir / ("converted/" + uid + "_gp02_0.npy"), Tensor::full({5, 7}, 1.0f));
  const FeatureIndex index2(dir.str());
  CHECK(
      contains(message_of([&] { load_take_features(index2, take, true, MissingFeatures::kError); }),
               "camera aria02_214-1 features are [3,4] ('" +
                   dir / ("omnivore/train/a/" + uid + "_aria02_214-1.pt") +
                   "') but camera gp02 features are [5,7]"));

  // GLEVR-style per-view files, found by view index only.
  fs::create_directories(dir / "glevr");
  write_npy(dir / "glevr/take_g_0.npy", Tensor::full({2, 4}, 3.0f));
  write_npy(dir / "glevr/take_g_1.npy", Tensor::full({2, 4}, 4.0f));
  const FeatureIndex index3(dir.str());
  CHECK(index3.find_camera("uid-g", "take_g", "aria01_214-1", 0) == dir / "glevr/take_g_0.npy");
  CHECK(index3.find_camera("uid-g", "take_g", "cam02", 1) == dir / "glevr/take_g_1.npy");
  CHECK_FALSE(index3.find_camera("uid-g", "take_g", "cam02").has_value());

  // Two files for one camera are reported, not silently picked.
  fs::copy_file(fixture("pt_f32.pt"), dir / ("converted/" + uid + "_cam01_0.pt"));
  const FeatureIndex index4(dir.str());
  CHECK(contains(message_of([&] { index4.find_camera(uid, "take_a", "cam01"); }), "ambiguous"));

  CHECK_THROWS_AS(FeatureIndex(dir / "absent"), IoError);
}

TEST_CASE("feature discovery: symlinked directories are followed once, loops terminate") {
  TempDir dir;
  fs::create_directories(dir / "real");
  write_npy(dir / "real/u_cam01_0.npy", Tensor::full({2, 3}, 1.0f));
  fs::create_directory_symlink(dir / "real", dir / "link");
  fs::create_directory_symlink(dir.str(), dir / "real/loop");
  const FeatureIndex index(dir.str());
  CHECK(index.num_files() == 1);
  CHECK(index.find_camera("u", "", "cam01").has_value());
}

TEST_CASE("feature files: rank, NaN rows, caption features per take") {
  TempDir dir;
  Tensor bad = Tensor::zeros({3, 4});
  bad.data()[1 * 4 + 2] = NAN;
  write_npy(dir / "nan.npy", bad);
  CHECK(message_of([&] { read_feature_matrix(dir / "nan.npy"); }) ==
        "features '" + dir / "nan.npy" + "': row 1 column 2 is NaN");
  Tensor inf = Tensor::zeros({3, 4});
  inf.data()[11] = INFINITY;
  write_npy(dir / "inf.npy", inf);
  CHECK(contains(message_of([&] { read_feature_matrix(dir / "inf.npy"); }),
                 "row 2 column 3 is infinite"));
  write_npy(dir / "rank3.npy", Tensor::zeros({1, 2, 3}));
  CHECK(contains(message_of([&] { read_feature_matrix(dir / "rank3.npy"); }),
                 "expected a [T, D] matrix, found [1,2,3]"));
  write_bytes(dir / "x.txt", "1 2 3");
  CHECK_THROWS_AS(read_feature_matrix(dir / "x.txt"), FormatError);
  check_base(read_feature_matrix(fixture("pt_f16.pt")));
  check_base(read_feature_matrix(fixture("npy_f8.npy")));

  fs::create_directories(dir / "captions");
  write_npy(dir / "captions/uid-c.npy", Tensor::full({2, 768}, 0.5f));
  write_npy(dir / "captions/take_d.npy", Tensor::full({3, 768}, 0.5f));
  const FeatureIndex captions(dir / "captions");
  const auto c = captions.find_take("uid-c", "take_c");
  REQUIRE(c.has_value());
  CHECK(read_caption_features(*c, 2).shape() == Shape{2, 768});
  CHECK(contains(message_of([&] { read_caption_features(*c, 3); }),
                 "expected [3, D] (one row per segment of the take), found [2,768]"));
  CHECK(captions.find_take("uid-d", "take_d") == dir / "captions/take_d.npy");
  CHECK_FALSE(captions.find_take("uid-e", "take_e").has_value());
}
