// Reductions, softmax family and cross-entropy: values, PyTorch fixtures, gradients.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/ops.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

TEST_CASE("sum / mean / max values over all and over an axis") {
  Tensor x = Tensor::from_vector({2, 3}, {1, 5, 3, 4, 2, 6});
  CHECK(sum(x).item() == 21.0f);
  CHECK(mean(x).item() == 3.5f);
  CHECK(max(x).item() == 6.0f);
  CHECK(sum(x, 0).to_vector() == std::vector<float>{5, 7, 9});
  CHECK(sum(x, -1).to_vector() == std::vector<float>{9, 12});
  CHECK(mean(x, 1, true).shape() == Shape{2, 1});
  CHECK(max(x, 0).to_vector() == std::vector<float>{4, 5, 6});
  CHECK(max(x, 1).to_vector() == std::vector<float>{5, 6});
  CHECK_THROWS_AS(sum(x, 2), ShapeError);
  CHECK_THROWS_AS(max(Tensor::zeros({0})), ShapeError);
}

TEST_CASE("max sends the gradient to the arg-max") {
  Tensor x = Tensor::from_vector({2, 3}, {1, 5, 3, 4, 2, 6}).set_requires_grad(true);
  max(x, 1).backward(Tensor::from_vector({2}, {10, 20}));
  CHECK(x.grad().to_vector() == std::vector<float>{0, 10, 0, 0, 0, 20});
}

TEST_CASE("reductions: gradients over every axis, odd sizes") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const Shape shape{3, 5, 7};
  require_gradcheck([](const std::vector<Tensor>& in) { return sum(in[0]); },
                    {random_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return mean(in[0]); },
                    {random_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return max(in[0]); },
                    {distinct_values(shape, rng)}, seed);
  for (int64_t axis = -3; axis < 3; ++axis) {
    for (bool keep : {false, true}) {
      CAPTURE(axis);
      require_gradcheck(
          [axis, keep](const std::vector<Tensor>& in) { return sum(in[0], axis, keep); },
          {random_tensor(shape, rng)}, seed);
      require_gradcheck(
          [axis, keep](const std::vector<Tensor>& in) { return mean(in[0], axis, keep); },
          {random_tensor(shape, rng)}, seed);
      require_gradcheck(
          [axis, keep](const std::vector<Tensor>& in) { return max(in[0], axis, keep); },
          {distinct_values(shape, rng)}, seed);
    }
  }
}

TEST_CASE("softmax and log_softmax: rows sum to one, stable for large inputs, gradients") {
  Tensor x = Tensor::from_vector({2, 3}, {1000, 1001, 1002, -5, 0, 5});
  Tensor s = softmax(x);
  for (int r = 0; r < 2; ++r) {
    CHECK(s.data()[r * 3] + s.data()[r * 3 + 1] + s.data()[r * 3 + 2] == doctest::Approx(1.0f));
  }
  Tensor ls = log_softmax(x);
  for (int i = 0; i < 6; ++i)
    CHECK(std::exp(ls.data()[i]) == doctest::Approx(s.data()[i]));
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return softmax(in[0]); },
                    {random_tensor({4, 3, 7}, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return log_softmax(in[0]); },
                    {random_tensor({4, 3, 7}, rng)}, seed);
}

TEST_CASE("cross_entropy matches PyTorch with ignore_index") {
  Tensor logits = read_fixture("torch_ops", "ce_logits");
  Tensor label_values = read_fixture("torch_ops", "ce_labels");
  std::vector<int64_t> labels;
  for (float v : label_values.to_vector())
    labels.push_back(static_cast<int64_t>(v));
  logits.set_requires_grad(true);
  Tensor loss = cross_entropy(logits, IndexTensor(labels));
  CHECK(loss.item() == doctest::Approx(read_fixture("torch_ops", "ce_loss").item()).epsilon(1e-6));
  loss.backward();
  check_close(logits.grad(), read_fixture("torch_ops", "ce_grad"), 1e-5, 1e-7);
}

TEST_CASE("cross_entropy: gradients, all-ignored batch, bad labels") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const IndexTensor labels({2, -1, 0, 4, 4});
  require_gradcheck(
      [&labels](const std::vector<Tensor>& in) { return cross_entropy(in[0], labels); },
      {random_tensor({5, 5}, rng)}, seed);
  Tensor logits = random_tensor({2, 3}, rng).set_requires_grad(true);
  Tensor none = cross_entropy(logits, IndexTensor({-1, -1}));
  CHECK(none.item() == 0.0f);
  none.backward();
  CHECK(logits.grad().to_vector() == std::vector<float>(6, 0.0f));
  CHECK_THROWS_AS(cross_entropy(logits, IndexTensor({0, 3})), ValueError);
  CHECK_THROWS_AS(cross_entropy(logits, IndexTensor({0})), ShapeError);
}
