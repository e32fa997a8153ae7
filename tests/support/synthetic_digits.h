// Synthetic MNIST-like digits for tests that must not download anything: every class is a
// distinct vertical bar, every variant shifts and brightens it, on a faint checkerboard that
// stays below SyncMNIST's ink threshold.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/mnist.h"

namespace stgnn::testing {

// A 28x28 digit of class `label`, variant `variant`.
std::vector<uint8_t> synthetic_digit(int label, int variant);
// per_class digits of each class, classes interleaved (0, 1, ..., 9, 0, 1, ...).
DigitSet synthetic_pool(int per_class);
// IDX file images (magic 2051) and labels (magic 2049) of a set, big-endian headers.
void append_be32(std::vector<uint8_t>& out, uint32_t v);
std::vector<uint8_t> idx_images(const DigitSet& set, uint32_t magic = 2051, uint32_t rows = 28,
                                uint32_t cols = 28);
std::vector<uint8_t> idx_labels(const DigitSet& set, uint32_t magic = 2049);
// Writes the four standard MNIST IDX files of (train, test) into dir (created).
void write_idx_dir(const std::string& dir, const DigitSet& train, const DigitSet& test);

}  // namespace stgnn::testing
