// SyncMNIST: the synthetic video benchmark of RSTG (Nicolicioiu, Duta, Leordeanu, NeurIPS
// 2019); the protocol is in design/syncmnist.md. D MNIST digits of distinct classes jump
// around a black 100x100 canvas for 10 frames; two of them (or, with probability 1/92,
// none) make identical jumps. The label names the synchronised pair's classes.
//
// One video, generate_video(pool, seed, index, options):
//  1. rng = Rng(seed).fork(index): every video is a pure function of (seed, index), so
//     batches can be made in parallel and in any order with identical bytes.
//  2. none = rng.uniform_double() < none_probability  (label 45: every digit independent).
//  3. Slot 0, the "source", is pool digit source_digit(seed, index, N): video i = pass * N + k
//     of a split uses digit perm_pass(k), perm_pass a seeded permutation of the N pool digits.
//     So every digit is the source once per pass over the pool (the released data: the test
//     split uses each of the 10,000 test digits once; train makes 10 passes over 60,000),
//     while consecutive videos do not share a source class (pools are often sorted by class,
//     as the npm digits are, which would make every batch of consecutive videos one class).
//  4. Slots 1..D-1: the 9 classes other than the source's are shuffled (rng.shuffle) and the
//     first D-1 are taken; for each, a digit of that class is drawn uniformly from the pool
//     (rng.randint over that class's digits in pool order).
//  5. Synchronised slots: (0, 1), as in the released generator, or with random_sync_slots two
//     distinct slots a < b drawn uniformly; (-1, -1) when none.
//  6. Initial top-left corners: for each slot in order, row then col = randint(0, L) with
//     L = canvas - 28 (72), as released: the digit lies inside the canvas (and never touches
//     its last row or column).
//  7. For each frame, before drawing it: the synced pair first (row then col), then each other
//     slot in order (row then col). A coordinate p jumps by randint(lo, hi) (numpy semantics,
//     hi exclusive) with lo = max(-max_jump, -p), hi = min(max_jump, L - p), so p stays in
//     [0, L - 1] = [0, 71]. The pair draws one jump per axis from the intersection of its two
//     ranges and both move by it (never empty here since lo <= 0 < hi; if it were, no move).
//  8. Draw: slots pasted in order onto a zero canvas; a digit pixel < ink_threshold (10) keeps
//     what is underneath, any other pixel replaces it, so later slots occlude earlier ones.
//  9. Resize canvas -> output_size with resize_bilinear_u8 (Pillow's BILINEAR, below).
//
// Labels: pair_class(a, b) numbers the unordered class pairs lexicographically, (0,1) = 0,
// (0,2) = 1, ..., (0,9) = 8, (1,2) = 9, ..., (8,9) = 44; 45 = no synchronised pair. (The
// released code numbers pairs colexicographically, (1,0) = 0, (2,0) = 1, (2,1) = 2, ...; map
// through class_pair / pair_class when comparing with its files.)
//
// Deviations from the released generator, deliberate: its upper jump bound is
// min(10, 71 - p), so after the first jump a digit never reaches 71 (we allow [0, 71] as the
// protocol states); its scipy.misc.imresize also stretched each frame's contrast to its own
// min..max (a no-op whenever the frame contains 0 and 255, as nearly every frame does).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "data/mnist.h"

namespace stgnn {

constexpr int kSyncPairClasses = 45;
constexpr int kNoSyncClass = 45;
constexpr int kSyncClasses = 46;

// Class index of the unordered pair {a, b} of digit classes, a != b in 0..9 (either order):
// 0..44. ValueError otherwise.
int pair_class(int a, int b);
// Inverse of pair_class: label 0..44 -> (a, b) with a < b; kNoSyncClass -> (-1, -1).
// ValueError outside 0..45.
std::pair<int, int> class_pair(int label);

struct SyncMnistOptions {
  int digits = 3;                        // D: 3 (3Sync) or 5 (5Sync); any of 2..10 works
  int frames = 10;                       // T
  int canvas = 100;                      // side of the square canvas the digits move on
  int output_size = 64;                  // side of each frame handed to a model
  int max_jump = 10;                     // jumps are uniform in [-max_jump, max_jump)
  double none_probability = 1.0 / 92.0;  // chance of a video with no synchronised pair
  int ink_threshold = 10;                // digit pixels below this are transparent
  // false: the synced pair is slots (0, 1), pasted first (released protocol). true: two
  // random slots, so the pair is not always the one occluded by the others.
  bool random_sync_slots = false;
};

// ValueError naming the field when an option is outside its domain.
void validate_options(const SyncMnistOptions& options);

struct SyncVideo {
  std::vector<uint8_t> frames;         // [T, S, S], S = output_size
  int label = kNoSyncClass;            // 0..45
  std::vector<int> digit_classes;      // [D], paste order
  std::vector<int64_t> digit_indices;  // [D], index of each digit in the pool
  std::vector<int> positions;          // [T, D, 2]: (row, col) top-left on the canvas, per frame
  int sync_a = -1;                     // paste-order slots of the synced pair, -1 if none
  int sync_b = -1;
};

// One video (steps above). ValueError if the options are invalid, the pool is malformed, or
// the pool lacks a class. Indexes the pool by class on every call (O(pool.count)): use
// generate_batch for many videos.
// The source digit of video `index`: a permutation of [0, pool_count) per pass of pool_count
// videos, keyed by (seed, pass) (cycle-walking over keyed bijective mixing of the next power
// of two, so it needs no table).
int64_t source_digit(uint64_t seed, uint64_t index, int64_t pool_count);

SyncVideo generate_video(const DigitSet& pool, uint64_t seed, uint64_t index,
                         const SyncMnistOptions& options);

// Videos first_index .. first_index + count - 1, as contiguous arrays (ready for an
// exporter or for conversion to tensors). Identical to calling generate_video per index,
// whatever the thread count.
struct SyncBatch {
  int64_t count = 0;
  int frames = 0;                      // T
  int size = 0;                        // S
  int digits = 0;                      // D
  std::vector<uint8_t> videos;         // [count, T, S, S]
  std::vector<int32_t> labels;         // [count]
  std::vector<int32_t> digit_classes;  // [count, D]
  std::vector<int64_t> digit_indices;  // [count, D]
  std::vector<int32_t> positions;      // [count, T, D, 2]
  std::vector<int32_t> sync_slots;     // [count, 2], (-1, -1) when none
};

// Parallel over videos (parallel_for); each video owns its slice of every array.
SyncBatch generate_batch(const DigitSet& pool, uint64_t seed, uint64_t first_index, int64_t count,
                         const SyncMnistOptions& options);

// Pastes a 28x28 digit at top-left (row, col) of a canvas [side, side]: pixels >= threshold
// replace the canvas, the rest keep it. The digit must lie inside the canvas (ValueError).
void paste_digit(uint8_t* canvas, int side, const uint8_t* digit, int row, int col, int threshold);

// src [src_h, src_w] -> dst [dst_h, dst_w], uint8, as Pillow's Image.resize(BILINEAR)
// does it (what the released generator's scipy.misc.imresize called): a separable triangle
// filter whose support grows with the downscale factor (so a 100 -> 64 shrink averages every
// source pixel rather than sampling), sample centres at (i + 0.5) * in / out, weights
// normalised per output pixel and stored as 22-bit fixed point; the horizontal pass runs
// first and rounds to uint8, then the vertical pass. Bit-identical to Pillow 9.4 (tested
// against its output).
void resize_bilinear_u8(const uint8_t* src, int src_h, int src_w, uint8_t* dst, int dst_h,
                        int dst_w);

}  // namespace stgnn
