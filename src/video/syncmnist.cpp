#include "video/syncmnist.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "autograd/error.h"
#include "autograd/parallel.h"
#include "autograd/rng.h"

namespace stgnn {

namespace {

// Pillow's 8-bit resampling keeps weights in 32 - 8 - 2 bits: room for 8-bit pixels and
// for sums of weights slightly above 1 without overflowing an int32 accumulator.
constexpr int kWeightBits = 22;

// One axis of a separable resample: output o reads `count[o]` inputs from `first[o]`.
struct ResampleAxis {
  int taps = 0;                  // row stride of `weights`
  std::vector<int> first;        // [out]
  std::vector<int> count;        // [out]
  std::vector<int32_t> weights;  // [out, taps], fixed point, each row sums to ~2^22
};

ResampleAxis make_axis(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  // Downscaling stretches the triangle over `scale` input pixels so each output averages
  // every input under it; upscaling keeps the plain 2-tap linear interpolation.
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;
  const double inv_filter_scale = 1.0 / filter_scale;
  ResampleAxis axis;
  axis.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  axis.first.resize(out_size);
  axis.count.resize(out_size);
  axis.weights.assign(static_cast<size_t>(out_size) * axis.taps, 0);
  std::vector<double> w(axis.taps);
  for (int o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    // static_cast truncates toward zero, which is the rounding Pillow's bounds use.
    const int lo = std::max(0, static_cast<int>(center - support + 0.5));
    const int hi = std::min(in_size, static_cast<int>(center + support + 0.5));
    const int n = std::max(0, hi - lo);
    double total = 0.0;
    for (int k = 0; k < n; ++k) {
      const double x = std::abs((k + lo - center + 0.5) * inv_filter_scale);
      w[k] = x < 1.0 ? 1.0 - x : 0.0;
      total += w[k];
    }
    for (int k = 0; k < n; ++k) {
      const double normalised = total != 0.0 ? w[k] / total : w[k];
      axis.weights[static_cast<size_t>(o) * axis.taps + k] =
          static_cast<int32_t>(0.5 + normalised * (1 << kWeightBits));
    }
    axis.first[o] = lo;
    axis.count[o] = n;
  }
  return axis;
}

uint8_t round_fixed(int32_t acc) {
  return static_cast<uint8_t>(std::clamp(acc >> kWeightBits, 0, 255));
}

// src [src_h, src_w] -> dst [dst_h, dst_w]; tmp holds the horizontal pass [src_h, dst_w].
void resample(const uint8_t* src, int src_h, int src_w, uint8_t* dst, int dst_h, int dst_w,
              const ResampleAxis& rows, const ResampleAxis& cols, std::vector<uint8_t>& tmp) {
  tmp.resize(static_cast<size_t>(src_h) * dst_w);
  constexpr int32_t kHalf = 1 << (kWeightBits - 1);
  for (int r = 0; r < src_h; ++r) {
    const uint8_t* in = src + static_cast<size_t>(r) * src_w;
    uint8_t* out = tmp.data() + static_cast<size_t>(r) * dst_w;
    for (int o = 0; o < dst_w; ++o) {
      const int32_t* w = cols.weights.data() + static_cast<size_t>(o) * cols.taps;
      const uint8_t* p = in + cols.first[o];
      int32_t acc = kHalf;
      for (int k = 0; k < cols.count[o]; ++k)
        acc += p[k] * w[k];
      out[o] = round_fixed(acc);
    }
  }
  std::vector<int32_t> acc(dst_w);
  for (int o = 0; o < dst_h; ++o) {
    const int32_t* w = rows.weights.data() + static_cast<size_t>(o) * rows.taps;
    std::fill(acc.begin(), acc.end(), kHalf);
    for (int k = 0; k < rows.count[o]; ++k) {
      const uint8_t* in = tmp.data() + static_cast<size_t>(rows.first[o] + k) * dst_w;
      for (int c = 0; c < dst_w; ++c)
        acc[c] += in[c] * w[k];
    }
    uint8_t* out = dst + static_cast<size_t>(o) * dst_w;
    for (int c = 0; c < dst_w; ++c)
      out[c] = round_fixed(acc[c]);
  }
}

void paste_unchecked(uint8_t* canvas, int side, const uint8_t* digit, int row, int col,
                     int threshold) {
  for (int r = 0; r < kDigitSide; ++r) {
    uint8_t* dst = canvas + static_cast<size_t>(row + r) * side + col;
    const uint8_t* src = digit + r * kDigitSide;
    for (int c = 0; c < kDigitSide; ++c) {
      if (src[c] >= threshold) dst[c] = src[c];
    }
  }
}

// Everything a video needs besides (seed, index): built once per batch.
struct Generator {
  const DigitSet& pool;
  SyncMnistOptions options;
  std::array<std::vector<int64_t>, kDigitClasses> by_class;  // pool indices of each class
  ResampleAxis axis;  // canvas -> output_size, the same for rows and columns
};

Generator make_generator(const DigitSet& pool, const SyncMnistOptions& options) {
  validate_options(options);
  validate_digit_set(pool, "SyncMNIST pool");
  Generator g{pool, options, {}, make_axis(options.canvas, options.output_size)};
  for (int64_t i = 0; i < pool.count; ++i)
    g.by_class[pool.labels[i]].push_back(i);
  for (int c = 0; c < kDigitClasses; ++c) {
    if (g.by_class[c].empty()) {
      throw ValueError("SyncMNIST pool of " + std::to_string(pool.count) +
                       " digits has no digit of class " + std::to_string(c));
    }
  }
  return g;
}

// Where one video's outputs go (slices of a SyncVideo or of a SyncBatch).
struct VideoSlots {
  uint8_t* frames;     // [T, S, S]
  int32_t* label;      // [1]
  int32_t* classes;    // [D]
  int64_t* indices;    // [D]
  int32_t* positions;  // [T, D, 2]
  int32_t* sync;       // [2]
};

struct Scratch {
  std::vector<uint8_t> canvas;
  std::vector<uint8_t> resize_tmp;
};

// The jump range [lo, hi) that keeps coordinate p inside [0, limit).
std::pair<int, int> jump_range(int p, int max_jump, int limit) {
  return {std::max(-max_jump, -p), std::min(max_jump, limit - p)};
}

void generate_into(const Generator& g, uint64_t seed, uint64_t index, Scratch& scratch,
                   const VideoSlots& out) {
  const SyncMnistOptions& o = g.options;
  const int digits = o.digits;
  // Top-left corners lie in [0, limit): as released, a digit never touches the last row/col.
  const int limit = o.canvas - kDigitSide;
  Rng rng = Rng(seed).fork(index);

  const bool none = rng.uniform_double() < o.none_probability;

  const int64_t source = source_digit(seed, index, g.pool.count);
  out.indices[0] = source;
  out.classes[0] = g.pool.labels[source];
  std::array<int, kDigitClasses - 1> others{};
  for (int c = 0, k = 0; c < kDigitClasses; ++c) {
    if (c != out.classes[0]) others[k++] = c;
  }
  rng.shuffle(others.begin(), others.end());
  for (int s = 1; s < digits; ++s) {
    const std::vector<int64_t>& members = g.by_class[others[s - 1]];
    out.classes[s] = others[s - 1];
    out.indices[s] = members[rng.randint(0, static_cast<int64_t>(members.size()))];
  }

  int a = -1, b = -1;
  if (!none) {
    if (o.random_sync_slots) {
      a = static_cast<int>(rng.randint(0, digits));
      b = static_cast<int>(rng.randint(0, digits - 1));
      if (b >= a) ++b;
      if (a > b) std::swap(a, b);
    } else {
      a = 0;
      b = 1;
    }
  }
  out.sync[0] = a;
  out.sync[1] = b;
  *out.label = none ? kNoSyncClass : pair_class(out.classes[a], out.classes[b]);

  std::array<std::array<int, 2>, kDigitClasses> pos{};
  for (int s = 0; s < digits; ++s) {
    for (int axis = 0; axis < 2; ++axis)
      pos[s][axis] = static_cast<int>(rng.randint(0, limit));
  }

  const size_t frame_pixels = static_cast<size_t>(o.output_size) * o.output_size;
  scratch.canvas.resize(static_cast<size_t>(o.canvas) * o.canvas);
  for (int t = 0; t < o.frames; ++t) {
    if (!none) {
      for (int axis = 0; axis < 2; ++axis) {
        const auto [lo_a, hi_a] = jump_range(pos[a][axis], o.max_jump, limit);
        const auto [lo_b, hi_b] = jump_range(pos[b][axis], o.max_jump, limit);
        const int lo = std::max(lo_a, lo_b), hi = std::min(hi_a, hi_b);
        if (lo < hi) {
          const int jump = static_cast<int>(rng.randint(lo, hi));
          pos[a][axis] += jump;
          pos[b][axis] += jump;
        }
      }
    }
    for (int s = 0; s < digits; ++s) {
      if (s == a || s == b) continue;
      for (int axis = 0; axis < 2; ++axis) {
        const auto [lo, hi] = jump_range(pos[s][axis], o.max_jump, limit);
        pos[s][axis] += static_cast<int>(rng.randint(lo, hi));
      }
    }

    std::fill(scratch.canvas.begin(), scratch.canvas.end(), uint8_t{0});
    for (int s = 0; s < digits; ++s) {
      int32_t* p = out.positions + (static_cast<size_t>(t) * digits + s) * 2;
      p[0] = pos[s][0];
      p[1] = pos[s][1];
      paste_unchecked(scratch.canvas.data(), o.canvas, g.pool.image(out.indices[s]), pos[s][0],
                      pos[s][1], o.ink_threshold);
    }
    resample(scratch.canvas.data(), o.canvas, o.canvas, out.frames + t * frame_pixels,
             o.output_size, o.output_size, g.axis, g.axis, scratch.resize_tmp);
  }
}

}  // namespace

int64_t source_digit(uint64_t seed, uint64_t index, int64_t pool_count) {
  if (pool_count <= 0) throw ValueError("source_digit: empty pool");
  const uint64_t n = static_cast<uint64_t>(pool_count);
  const uint64_t key = mix64(seed ^ mix64(index / n + 0x50a5ce));
  int bits = 1;
  while ((uint64_t{1} << bits) < n)
    ++bits;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  // Each round is a bijection on [0, 2^bits): multiply by an odd constant, add a key, xor-shift
  // right. Cycle-walking (re-applying until the value falls below n) restricts the bijection
  // to [0, n); the expected number of walks is below 2.
  uint64_t x = index % n;
  do {
    for (int round = 0; round < 4; ++round) {
      const uint64_t round_key = mix64(key + static_cast<uint64_t>(round));
      x = (x * (round_key | 1) + (round_key >> 17)) & mask;
      x ^= x >> (bits / 2 + 1);
    }
  } while (x >= n);
  return static_cast<int64_t>(x);
}

int pair_class(int a, int b) {
  if (a < 0 || a >= kDigitClasses || b < 0 || b >= kDigitClasses || a == b) {
    throw ValueError("pair_class: classes (" + std::to_string(a) + ", " + std::to_string(b) +
                     ") must be distinct and in 0..9");
  }
  if (a > b) std::swap(a, b);
  // Pairs starting with i < a number sum_{i<a} (9 - i) = a * (19 - a) / 2.
  return a * (19 - a) / 2 + (b - a - 1);
}

std::pair<int, int> class_pair(int label) {
  if (label == kNoSyncClass) return {-1, -1};
  if (label < 0 || label > kNoSyncClass) {
    throw ValueError("class_pair: label " + std::to_string(label) + " outside 0..45");
  }
  int a = 0;
  while (label >= 9 - a) {
    label -= 9 - a;
    ++a;
  }
  return {a, a + 1 + label};
}

void validate_options(const SyncMnistOptions& o) {
  const auto fail = [](const std::string& field, const std::string& value,
                       const std::string& domain) {
    throw ValueError("SyncMnistOptions." + field + " = " + value + ", expected " + domain);
  };
  if (o.digits < 2 || o.digits > kDigitClasses) {
    fail("digits", std::to_string(o.digits), "2..10 (distinct classes)");
  }
  if (o.frames < 1 || o.frames > 10000) fail("frames", std::to_string(o.frames), "1..10000");
  if (o.canvas <= kDigitSide || o.canvas > 4096) {
    fail("canvas", std::to_string(o.canvas), "29..4096");
  }
  if (o.output_size < 1 || o.output_size > 4096) {
    fail("output_size", std::to_string(o.output_size), "1..4096");
  }
  if (o.max_jump < 1 || o.max_jump > 4096) {
    fail("max_jump", std::to_string(o.max_jump), "1..4096");
  }
  if (!(o.none_probability >= 0.0 && o.none_probability <= 1.0)) {
    fail("none_probability", std::to_string(o.none_probability), "a probability in [0, 1]");
  }
  if (o.ink_threshold < 0 || o.ink_threshold > 256) {
    fail("ink_threshold", std::to_string(o.ink_threshold), "0..256");
  }
}

SyncVideo generate_video(const DigitSet& pool, uint64_t seed, uint64_t index,
                         const SyncMnistOptions& options) {
  const Generator g = make_generator(pool, options);
  const int digits = options.digits, frames = options.frames, size = options.output_size;
  SyncVideo video;
  video.frames.resize(static_cast<size_t>(frames) * size * size);
  video.digit_classes.resize(digits);
  video.digit_indices.resize(digits);
  video.positions.resize(static_cast<size_t>(frames) * digits * 2);
  int32_t label = 0;
  std::array<int32_t, 2> sync{};
  Scratch scratch;
  generate_into(g, seed, index, scratch,
                {video.frames.data(), &label, video.digit_classes.data(),
                 video.digit_indices.data(), video.positions.data(), sync.data()});
  video.label = label;
  video.sync_a = sync[0];
  video.sync_b = sync[1];
  return video;
}

SyncBatch generate_batch(const DigitSet& pool, uint64_t seed, uint64_t first_index, int64_t count,
                         const SyncMnistOptions& options) {
  const Generator g = make_generator(pool, options);
  const int64_t frames = options.frames, size = options.output_size, digits = options.digits;
  const int64_t video_bytes = frames * size * size;
  if (count < 0 || count > (int64_t{1} << 40) / video_bytes) {
    throw ValueError("generate_batch: count " + std::to_string(count) + " of " +
                     std::to_string(video_bytes) + "-byte videos is outside 0..2^40 bytes");
  }
  SyncBatch batch;
  batch.count = count;
  batch.frames = options.frames;
  batch.size = options.output_size;
  batch.digits = options.digits;
  batch.videos.resize(static_cast<size_t>(count * video_bytes));
  batch.labels.resize(static_cast<size_t>(count));
  batch.digit_classes.resize(static_cast<size_t>(count * digits));
  batch.digit_indices.resize(static_cast<size_t>(count * digits));
  batch.positions.resize(static_cast<size_t>(count * frames * digits * 2));
  batch.sync_slots.resize(static_cast<size_t>(count * 2));
  // Each video is a pure function of (seed, index) and writes only its own slices, so any
  // split of the range over threads gives the same bytes.
  parallel_for(count, 4, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t i = begin; i < end; ++i) {
      generate_into(
          g, seed, first_index + static_cast<uint64_t>(i), scratch,
          {batch.videos.data() + i * video_bytes, batch.labels.data() + i,
           batch.digit_classes.data() + i * digits, batch.digit_indices.data() + i * digits,
           batch.positions.data() + i * frames * digits * 2, batch.sync_slots.data() + i * 2});
    }
  });
  return batch;
}

void paste_digit(uint8_t* canvas, int side, const uint8_t* digit, int row, int col, int threshold) {
  if (side < kDigitSide || row < 0 || col < 0 || row > side - kDigitSide ||
      col > side - kDigitSide) {
    throw ValueError("paste_digit: a 28x28 digit at (" + std::to_string(row) + ", " +
                     std::to_string(col) + ") does not fit a " + std::to_string(side) + "x" +
                     std::to_string(side) + " canvas");
  }
  paste_unchecked(canvas, side, digit, row, col, threshold);
}

void resize_bilinear_u8(const uint8_t* src, int src_h, int src_w, uint8_t* dst, int dst_h,
                        int dst_w) {
  if (src_h < 1 || src_w < 1 || dst_h < 1 || dst_w < 1) {
    throw ValueError("resize_bilinear_u8: [" + std::to_string(src_h) + "," + std::to_string(src_w) +
                     "] -> [" + std::to_string(dst_h) + "," + std::to_string(dst_w) +
                     "]: sizes must be positive");
  }
  std::vector<uint8_t> tmp;
  resample(src, src_h, src_w, dst, dst_h, dst_w, make_axis(src_h, dst_h), make_axis(src_w, dst_w),
           tmp);
}

}  // namespace stgnn
