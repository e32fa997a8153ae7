// Random numbers: one seeded generator for everything.
//
// Rng is xoshiro256** seeded through splitmix64. For work split across threads we never
// share a generator: either fork() a child stream per item (a pure function of the parent
// seed and the item index) or hash a counter with counter_uniform(). Either way results do
// not depend on the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>

#include "autograd/tensor.h"

namespace stgnn {

// splitmix64 finaliser: a bijective 64-bit mix, used to seed and to hash counters.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from (key, counter): the stateless generator for parallel kernels.
inline float counter_uniform(uint64_t key, uint64_t counter) {
  return static_cast<float>(mix64(key ^ mix64(counter)) >> 40) * (1.0f / 16777216.0f);
}

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    seed_ = seed;
    uint64_t x = seed;
    for (auto& s : state_) {
      x = mix64(x);
      s = x;
    }
    has_spare_normal_ = false;
  }
  uint64_t seed() const { return seed_; }

  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 24 random bits (every float value in the range is reachable).
  float uniform() { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform_double() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  // Integer uniform in [lo, hi) (numpy randint semantics); lo < hi required.
  int64_t randint(int64_t lo, int64_t hi) {
    const uint64_t range = static_cast<uint64_t>(hi - lo);
    // Rejection sampling removes modulo bias.
    const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t x;
    do {
      x = next_u64();
    } while (x >= limit);
    return lo + static_cast<int64_t>(x % range);
  }

  // Standard normal (Box-Muller, both values used).
  float normal() {
    if (has_spare_normal_) {
      has_spare_normal_ = false;
      return spare_normal_;
    }
    double u1;
    do {
      u1 = uniform_double();
    } while (u1 <= 0.0);
    const double u2 = uniform_double();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_normal_ = static_cast<float>(radius * std::sin(2.0 * M_PI * u2));
    has_spare_normal_ = true;
    return static_cast<float>(radius * std::cos(2.0 * M_PI * u2));
  }

  // An independent child stream, a pure function of this generator's seed and `stream`.
  Rng fork(uint64_t stream) const { return Rng(mix64(seed_ ^ mix64(stream + 0x51ed2701ULL))); }

  // Fisher-Yates shuffle of [first, last).
  template <typename It>
  void shuffle(It first, It last) {
    const int64_t n = last - first;
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(first[i], first[randint(0, i + 1)]);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t seed_ = 0;
  uint64_t state_[4];
  bool has_spare_normal_ = false;
  float spare_normal_ = 0.0f;
};

// The process-wide generator that initialisers, dropout and data order draw from.
Rng& global_rng();
void manual_seed(uint64_t seed);

// Tensors filled from a generator (leaves, no history).
Tensor randn(const Shape& shape, Rng& rng, float mean = 0.0f, float stddev = 1.0f);
Tensor rand_uniform(const Shape& shape, Rng& rng, float lo, float hi);

}  // namespace stgnn
