#include "autograd/rng.h"

namespace stgnn {

Rng& global_rng() {
  static Rng rng(0);
  return rng;
}

void manual_seed(uint64_t seed) {
  global_rng().reseed(seed);
}

Tensor randn(const Shape& shape, Rng& rng, float mean, float stddev) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = mean + stddev * rng.normal();
  return t;
}

Tensor rand_uniform(const Shape& shape, Rng& rng, float lo, float hi) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = rng.uniform(lo, hi);
  return t;
}

}  // namespace stgnn
