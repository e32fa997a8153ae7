// matmul (2-D, batched, transposes) and linear: values against a plain triple loop, gradients.
#include <doctest/doctest.h>

#include "autograd/ops.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

// Reference: C = op(A) op(B) for one 2-D pair.
Tensor reference_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const int64_t m = ta ? a.size(1) : a.size(0), k = ta ? a.size(0) : a.size(1);
  const int64_t n = tb ? b.size(0) : b.size(1);
  Tensor c = Tensor::zeros({m, n});
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t q = 0; q < k; ++q) {
        const float av = ta ? a.data()[q * a.size(1) + i] : a.data()[i * a.size(1) + q];
        const float bv = tb ? b.data()[j * b.size(1) + q] : b.data()[q * b.size(1) + j];
        s += static_cast<double>(av) * bv;
      }
      c.data()[i * n + j] = static_cast<float>(s);
    }
  }
  return c;
}

}  // namespace

TEST_CASE("matmul 2-D with every transpose combination") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      Tensor a = random_tensor(ta ? Shape{7, 5} : Shape{5, 7}, rng);
      Tensor b = random_tensor(tb ? Shape{3, 7} : Shape{7, 3}, rng);
      check_close(matmul(a, b, ta, tb), reference_matmul(a, b, ta, tb), 1e-5, 1e-5);
      require_gradcheck(
          [ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b},
          seed);
    }
  }
}

TEST_CASE("matmul batched, and batched by a shared 2-D matrix") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = random_tensor(ta ? Shape{3, 4, 5} : Shape{3, 5, 4}, rng);
      Tensor b3 = random_tensor(tb ? Shape{3, 2, 4} : Shape{3, 4, 2}, rng);
      Tensor b2 = random_tensor(tb ? Shape{2, 4} : Shape{4, 2}, rng);
      Tensor c3 = matmul(a, b3, ta, tb);
      Tensor c2 = matmul(a, b2, ta, tb);
      CHECK(c3.shape() == Shape{3, 5, 2});
      for (int64_t i = 0; i < 3; ++i) {
        Tensor ai = slice(a, 0, i, i + 1).reshape({a.size(1), a.size(2)});
        Tensor bi = slice(b3, 0, i, i + 1).reshape({b3.size(1), b3.size(2)});
        check_close(slice(c3, 0, i, i + 1).reshape({5, 2}), reference_matmul(ai, bi, ta, tb), 1e-5,
                    1e-5);
        check_close(slice(c2, 0, i, i + 1).reshape({5, 2}), reference_matmul(ai, b2, ta, tb), 1e-5,
                    1e-5);
      }
      require_gradcheck(
          [ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b3},
          seed);
      require_gradcheck(
          [ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b2},
          seed);
    }
  }
  // A 2-D left operand against a batch.
  Tensor a2 = random_tensor({5, 4}, rng);
  Tensor b3 = random_tensor({3, 4, 2}, rng);
  CHECK(matmul(a2, b3).shape() == Shape{3, 5, 2});
  require_gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {a2, b3},
                    seed);
}

TEST_CASE("matmul shape errors name both shapes") {
  try {
    matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}));
    FAIL("no throw");
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()) == "matmul: cannot multiply [2,3] by [4,5]");
  }
  CHECK_THROWS_AS(matmul(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 4, 5})), ShapeError);
  CHECK_THROWS_AS(matmul(Tensor::zeros({3}), Tensor::zeros({3, 1})), ShapeError);
}

TEST_CASE("linear = x W^T + b over leading dims") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  Tensor x = random_tensor({2, 3, 5}, rng);
  Tensor w = random_tensor({4, 5}, rng);
  Tensor b = random_tensor({4}, rng);
  Tensor y = linear(x, w, b);
  CHECK(y.shape() == Shape{2, 3, 4});
  Tensor expect = add(matmul(x.reshape({6, 5}), w, false, true), b).reshape({2, 3, 4});
  check_close(y, expect, 1e-5, 1e-5);
  require_gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                    {x, w, b}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w},
                    seed);
  CHECK_THROWS_AS(linear(x, Tensor::zeros({4, 6}), b), ShapeError);
}

TEST_CASE("empty inner dimension gives zeros") {
  Tensor c = matmul(Tensor::zeros({3, 0}), Tensor::zeros({0, 2}));
  CHECK(c.to_vector() == std::vector<float>(6, 0.0f));
}
