// Elementwise ops: values against hand-computed results, broadcasting, gradient checks.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/ops.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

TEST_CASE("binary ops: values and broadcasting") {
  Tensor a = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor row = Tensor::from_vector({3}, {10, 20, 30});
  Tensor col = Tensor::from_vector({2, 1}, {100, 200});
  CHECK(add(a, row).to_vector() == std::vector<float>{11, 22, 33, 14, 25, 36});
  CHECK(sub(row, a).to_vector() == std::vector<float>{9, 18, 27, 6, 15, 24});
  CHECK(mul(a, col).to_vector() == std::vector<float>{100, 200, 300, 800, 1000, 1200});
  CHECK(div(a, Tensor::scalar(2)).to_vector() == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3});
  // [2,1] with [3] -> [2,3] (both operands stretch).
  CHECK(add(col, row).shape() == Shape{2, 3});
  CHECK(add(col, row).to_vector() == std::vector<float>{110, 120, 130, 210, 220, 230});
  CHECK_THROWS_AS(add(a, Tensor::zeros({2})), ShapeError);
  try {
    add(a, Tensor::zeros({4}));
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()) == "add: cannot broadcast [2,3] with [4]");
  }
}

TEST_CASE("unary ops: values") {
  Tensor x = Tensor::from_vector({4}, {-2.0f, -0.5f, 0.5f, 2.0f});
  const std::vector<float> v = x.to_vector();
  const auto close = [](const Tensor& t, auto f, const std::vector<float>& in) {
    for (size_t i = 0; i < in.size(); ++i)
      CHECK(t.data()[i] == doctest::Approx(f(in[i])).epsilon(1e-6));
  };
  close(
      exp(x), [](float a) { return std::exp(a); }, v);
  close(
      tanh(x), [](float a) { return std::tanh(a); }, v);
  close(
      sigmoid(x), [](float a) { return 1.0f / (1.0f + std::exp(-a)); }, v);
  close(
      relu(x), [](float a) { return a > 0 ? a : 0.0f; }, v);
  close(
      leaky_relu(x, 0.2f), [](float a) { return a > 0 ? a : 0.2f * a; }, v);
  close(
      gelu(x), [](float a) { return 0.5f * a * (1 + std::erf(a / std::sqrt(2.0f))); }, v);
  close(
      neg(x), [](float a) { return -a; }, v);
  Tensor p = Tensor::from_vector({3}, {0.5f, 1.0f, 4.0f});
  close(
      log(p), [](float a) { return std::log(a); }, p.to_vector());
  close(
      sqrt(p), [](float a) { return std::sqrt(a); }, p.to_vector());
  close(
      pow_scalar(p, 1.5f), [](float a) { return std::pow(a, 1.5f); }, p.to_vector());
  // Large tensors take the threaded path; it must give the same numbers.
  Rng rng(3);
  Tensor big = randn({300, 257}, rng);
  Tensor y = tanh(big);
  for (int64_t i = 0; i < big.numel(); i += 997)
    CHECK(y.data()[i] == doctest::Approx(std::tanh(big.data()[i])));
}

TEST_CASE("binary ops: gradients with broadcasting") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const std::vector<std::pair<Shape, Shape>> cases = {{{3, 5}, {3, 5}}, {{2, 3, 5}, {5}},
                                                      {{7}, {1}},       {{4, 1, 3}, {5, 1}},
                                                      {{3}, {2, 3}},    {{}, {2, 2}}};
  for (const auto& shapes : cases) {
    const Shape &sa = shapes.first, &sb = shapes.second;  // not bindings: CAPTURE is a lambda
    CAPTURE(shape_str(sa));
    CAPTURE(shape_str(sb));
    require_gradcheck([](const std::vector<Tensor>& in) { return add(in[0], in[1]); },
                      {random_tensor(sa, rng), random_tensor(sb, rng)}, seed);
    require_gradcheck([](const std::vector<Tensor>& in) { return sub(in[0], in[1]); },
                      {random_tensor(sa, rng), random_tensor(sb, rng)}, seed);
    require_gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); },
                      {random_tensor(sa, rng), random_tensor(sb, rng)}, seed);
    require_gradcheck([](const std::vector<Tensor>& in) { return div(in[0], in[1]); },
                      {random_tensor(sa, rng), positive_tensor(sb, rng)}, seed);
  }
}

TEST_CASE("scalar ops and unary ops: gradients") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const Shape shape{3, 7};
  require_gradcheck([](const std::vector<Tensor>& in) { return add_scalar(in[0], 2.5f); },
                    {random_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return mul_scalar(in[0], -1.5f); },
                    {random_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return neg(in[0]); },
                    {random_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return exp(in[0]); },
                    {random_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return log(in[0]); },
                    {positive_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return sqrt(in[0]); },
                    {positive_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return pow_scalar(in[0], 2.5f); },
                    {positive_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return relu(in[0]); },
                    {away_from_zero(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return leaky_relu(in[0], 0.1f); },
                    {away_from_zero(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return sigmoid(in[0]); },
                    {random_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return tanh(in[0]); },
                    {random_tensor(shape, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return gelu(in[0]); },
                    {random_tensor(shape, rng)}, seed);
}

TEST_CASE("a tensor used twice receives both gradient contributions") {
  Tensor x = Tensor::from_vector({2}, {3.0f, -1.0f}).set_requires_grad(true);
  Tensor y = sum(mul(x, x) + x);  // dy/dx = 2x + 1
  y.backward();
  CHECK(x.grad().to_vector() == std::vector<float>{7.0f, -1.0f});
  // Gradients accumulate across backward calls until zeroed.
  sum(x).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{8.0f, 0.0f});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("no-grad scope records nothing") {
  Tensor x = Tensor::ones({3}).set_requires_grad(true);
  {
    NoGradGuard guard;
    Tensor y = exp(x);
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(static_cast<bool>(y.node()));
  }
  CHECK(exp(x).requires_grad());
}

TEST_CASE("the gradient check catches a wrong backward") {
  // sigmoid with a deliberately wrong derivative (s instead of s (1 - s)).
  const auto wrong_sigmoid = [](const std::vector<Tensor>& in) {
    const Tensor x = in[0];
    Tensor y;
    {
      NoGradGuard guard;
      y = sigmoid(x);
    }
    return Tensor::make_result(
        y.copy(), "wrong_sigmoid", {x},
        [x](const Tensor& out, const Tensor& g) { x.accumulate_grad(mul(g, out)); });
  };
  Rng rng(fresh_seed());
  const GradCheckResult r = gradcheck(wrong_sigmoid, {random_tensor({4, 3}, rng)});
  CHECK_FALSE(r.ok);
  CHECK(r.report.find("analytic") != std::string::npos);
}

TEST_CASE("backward frees the graph and memory returns to baseline") {
  Rng rng(5);
  Tensor w = randn({16, 16}, rng).set_requires_grad(true);
  Tensor x = randn({8, 16}, rng);
  // Warm-up creates w's gradient buffer once.
  sum(tanh(matmul(x, w))).backward();
  const MemoryStats before = memory_stats();
  for (int step = 0; step < 1000; ++step) {
    Tensor loss = sum(tanh(matmul(x, w)) * 2.0f + 1.0f);
    loss.backward();
    CHECK_FALSE(loss.requires_grad());  // the graph behind it is gone
    w.zero_grad();
    sum(exp(w)).backward();  // re-creates the gradient buffer
  }
  const MemoryStats after = memory_stats();
  CHECK(after.live_buffers == before.live_buffers);
  CHECK(after.live_bytes == before.live_bytes);
}
