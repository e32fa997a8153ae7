#include "support/synthetic_digits.h"

#include <filesystem>

#include "autograd/atomic_file.h"

namespace stgnn::testing {

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<uint8_t>(v >> shift));
}

// A 28x28 digit of class `label`, variant `variant`: a bar whose column and brightness depend
// on both, on a faint (below the ink threshold) checkerboard.
std::vector<uint8_t> synthetic_digit(int label, int variant) {
  std::vector<uint8_t> img(kDigitPixels);
  for (int r = 0; r < kDigitSide; ++r) {
    for (int c = 0; c < kDigitSide; ++c) {
      const bool bar = c >= 3 + 2 * label && c < 6 + 2 * label && r >= 2 + variant % 5 && r < 26;
      img[r * kDigitSide + c] =
          bar ? static_cast<uint8_t>(120 + 12 * label + variant % 11) : ((r + c) % 2 ? 5 : 0);
    }
  }
  return img;
}

// per_class digits of each class, classes interleaved (0, 1, ..., 9, 0, 1, ...).
DigitSet synthetic_pool(int per_class) {
  DigitSet set;
  for (int v = 0; v < per_class; ++v) {
    for (int label = 0; label < kDigitClasses; ++label) {
      const std::vector<uint8_t> img = synthetic_digit(label, v);
      set.pixels.insert(set.pixels.end(), img.begin(), img.end());
      set.labels.push_back(static_cast<uint8_t>(label));
      ++set.count;
    }
  }
  return set;
}

std::vector<uint8_t> idx_images(const DigitSet& set, uint32_t magic, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> out;
  append_be32(out, magic);
  append_be32(out, static_cast<uint32_t>(set.count));
  append_be32(out, rows);
  append_be32(out, cols);
  out.insert(out.end(), set.pixels.begin(), set.pixels.end());
  return out;
}

std::vector<uint8_t> idx_labels(const DigitSet& set, uint32_t magic) {
  std::vector<uint8_t> out;
  append_be32(out, magic);
  append_be32(out, static_cast<uint32_t>(set.count));
  out.insert(out.end(), set.labels.begin(), set.labels.end());
  return out;
}

void write_idx_dir(const std::string& dir, const DigitSet& train, const DigitSet& test) {
  std::filesystem::create_directories(dir);
  const auto put = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    write_file_atomic(dir + "/" + name, {{bytes.data(), bytes.size()}});
  };
  put("train-images-idx3-ubyte", idx_images(train));
  put("train-labels-idx1-ubyte", idx_labels(train));
  put("t10k-images-idx3-ubyte", idx_images(test));
  put("t10k-labels-idx1-ubyte", idx_labels(test));
}

}  // namespace stgnn::testing
