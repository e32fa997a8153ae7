// Dropout, batch_norm and layer_norm: PyTorch fixtures, train/eval behaviour, gradients.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/ops.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

// The plain rule the dropout kernel implements: element i is dropped iff
// counter_uniform(seed, i) < p.
std::vector<float> dropout_mask_reference(int64_t n, float p, uint64_t seed) {
  std::vector<float> kept(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    kept[static_cast<size_t>(i)] =
        counter_uniform(seed, static_cast<uint64_t>(i)) < p ? 0.0f : 1.0f;
  return kept;
}

TEST_CASE("dropout: the kernel's mask is exactly counter_uniform(seed, i) < p") {
  const int64_t n = 50000;
  Tensor x = Tensor::ones({n});
  // p * 2^24 exactly an integer (0.5, 0.25), not (0.3, 0.1), tiny, and next to 1.
  for (float p : {0.5f, 0.25f, 0.3f, 0.1f, 1e-7f, 0.999999f, std::nextafter(0.5f, 1.0f)}) {
    for (uint64_t seed : {uint64_t{0}, uint64_t{7}, fresh_seed()}) {
      const std::vector<float> y = dropout(x, p, true, seed).to_vector();
      const std::vector<float> kept = dropout_mask_reference(n, p, seed);
      int64_t mismatches = 0;
      for (int64_t i = 0; i < n; ++i)
        mismatches += (y[static_cast<size_t>(i)] != 0.0f) != (kept[static_cast<size_t>(i)] != 0.0f);
      INFO("p = " << p << ", seed = " << seed);
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("dropout: eval is identity, train keeps ~1-p scaled by 1/(1-p), seeded") {
  Tensor x = Tensor::ones({100, 100});
  CHECK(dropout(x, 0.5f, false, 1).data() == x.data());
  Tensor y = dropout(x, 0.3f, true, 42);
  int64_t kept = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    const float v = y.data()[i];
    CHECK((v == 0.0f || v == doctest::Approx(1.0f / 0.7f)));
    kept += v != 0.0f;
  }
  CHECK(kept == doctest::Approx(7000).epsilon(0.03));  // binomial sd ~46 for 10,000 draws
  CHECK(dropout(x, 0.3f, true, 42).to_vector() == y.to_vector());
  CHECK(dropout(x, 0.3f, true, 43).to_vector() != y.to_vector());
  CHECK_THROWS_AS(dropout(x, 1.0f, true, 1), ValueError);
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return dropout(in[0], 0.4f, true, 7); },
                    {random_tensor({5, 7}, rng)}, seed);
}

TEST_CASE("batch_norm NCHW matches PyTorch in train and eval") {
  Tensor x = read_fixture("torch_ops", "bn_x").set_requires_grad(true);
  Tensor w = read_fixture("torch_ops", "bn_weight").set_requires_grad(true);
  Tensor b = read_fixture("torch_ops", "bn_bias").set_requires_grad(true);
  Tensor running_mean = Tensor::zeros({3});
  Tensor running_var = Tensor::ones({3});
  Tensor y = batch_norm(x, w, b, running_mean, running_var, true);
  check_close(y, read_fixture("torch_ops", "bn_y"), 1e-4, 1e-5);
  y.backward(read_fixture("torch_ops", "bn_g"));
  check_close(x.grad(), read_fixture("torch_ops", "bn_gx"), 1e-4, 1e-5);
  check_close(w.grad(), read_fixture("torch_ops", "bn_gw"), 1e-4, 1e-5);
  check_close(b.grad(), read_fixture("torch_ops", "bn_gb"), 1e-4, 1e-5);
  check_close(running_mean, read_fixture("torch_ops", "bn_running_mean"), 1e-5, 1e-6);
  check_close(running_var, read_fixture("torch_ops", "bn_running_var"), 1e-5, 1e-6);
  Tensor y_eval =
      batch_norm(read_fixture("torch_ops", "bn_eval_x"), w, b, running_mean, running_var, false);
  check_close(y_eval, read_fixture("torch_ops", "bn_eval_y"), 1e-4, 1e-5);
}

TEST_CASE("batch_norm gradients: [N,C] and NCHW, train and eval, with and without affine") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  for (const Shape& shape : {Shape{7, 3}, Shape{3, 2, 3, 5}}) {
    for (bool training : {true, false}) {
      CAPTURE(shape_str(shape));
      CAPTURE(training);
      const int64_t c = shape[1];
      Tensor rm = random_tensor({c}, rng);
      Tensor rv = positive_tensor({c}, rng);
      require_gradcheck(
          [&](const std::vector<Tensor>& in) {
            Tensor m = rm.copy(), v = rv.copy();
            return batch_norm(in[0], in[1], in[2], m, v, training);
          },
          {random_tensor(shape, rng), random_tensor({c}, rng), random_tensor({c}, rng)}, seed);
      require_gradcheck(
          [&](const std::vector<Tensor>& in) {
            Tensor m = rm.copy(), v = rv.copy();
            return batch_norm(in[0], Tensor(), Tensor(), m, v, training);
          },
          {random_tensor(shape, rng)}, seed);
    }
  }
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  CHECK_THROWS_AS(batch_norm(Tensor::zeros({4, 2}), Tensor(), Tensor(), rm, rv, true), ShapeError);
  CHECK_THROWS_AS(batch_norm(Tensor::zeros({1, 3}), Tensor(), Tensor(), rm, rv, true), ShapeError);
}

TEST_CASE("layer_norm matches PyTorch; gradients") {
  Tensor x = read_fixture("torch_ops", "ln_x").set_requires_grad(true);
  Tensor w = read_fixture("torch_ops", "ln_weight").set_requires_grad(true);
  Tensor b = read_fixture("torch_ops", "ln_bias").set_requires_grad(true);
  Tensor y = layer_norm(x, w, b);
  check_close(y, read_fixture("torch_ops", "ln_y"), 1e-4, 1e-5);
  y.backward(read_fixture("torch_ops", "ln_g"));
  check_close(x.grad(), read_fixture("torch_ops", "ln_gx"), 1e-4, 1e-5);
  check_close(w.grad(), read_fixture("torch_ops", "ln_gw"), 1e-4, 1e-5);
  check_close(b.grad(), read_fixture("torch_ops", "ln_gb"), 1e-4, 1e-5);
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  require_gradcheck(
      [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); },
      {random_tensor({2, 3, 7}, rng), random_tensor({7}, rng), random_tensor({7}, rng)}, seed);
  require_gradcheck(
      [](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor()); },
      {random_tensor({4, 5}, rng)}, seed);
}
