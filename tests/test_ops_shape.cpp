// Shape ops: concat, slice, reshape, transpose / permute, index_select / index_add.
#include <doctest/doctest.h>

#include "autograd/ops.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

TEST_CASE("concat and slice along each axis") {
  Tensor a = Tensor::from_vector({2, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::from_vector({2, 1}, {5, 6});
  CHECK(concat({a, b}, 1).to_vector() == std::vector<float>{1, 2, 5, 3, 4, 6});
  CHECK(concat({a, a}, 0).shape() == Shape{4, 2});
  CHECK(slice(concat({a, b}, 1), 1, 1, 3).to_vector() == std::vector<float>{2, 5, 4, 6});
  CHECK_THROWS_AS(concat({a, b}, 0), ShapeError);
  CHECK_THROWS_AS(slice(a, 0, 1, 3), ShapeError);
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  for (int64_t axis = 0; axis < 3; ++axis) {
    CAPTURE(axis);
    Shape s1{3, 4, 5}, s2{3, 4, 5};
    s2[static_cast<size_t>(axis)] = 2;
    require_gradcheck(
        [axis](const std::vector<Tensor>& in) {
          return concat({in[0], in[1], in[0]}, axis);
        },
        {random_tensor(s1, rng), random_tensor(s2, rng)}, seed);
    require_gradcheck([axis](const std::vector<Tensor>& in) { return slice(in[0], axis, 1, 3); },
                      {random_tensor(s1, rng)}, seed);
  }
}

TEST_CASE("reshape, transpose and permute") {
  Tensor x = Tensor::from_vector({2, 3}, {0, 1, 2, 3, 4, 5});
  CHECK(transpose(x, 0, 1).to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  Tensor y = Tensor::empty({2, 3, 4});
  for (int i = 0; i < 24; ++i)
    y.data()[i] = static_cast<float>(i);
  Tensor p = permute(y, {2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  // p[k, i, j] = y[i, j, k]
  CHECK(p.data()[(3 * 2 + 1) * 3 + 2] == y.data()[(1 * 3 + 2) * 4 + 3]);
  CHECK_THROWS_AS(permute(y, {0, 0, 1}), ShapeError);
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  require_gradcheck(
      [](const std::vector<Tensor>& in) {
        return in[0].reshape({5, -1});
      },
      {random_tensor({3, 5}, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return transpose(in[0], 0, 2); },
                    {random_tensor({2, 3, 5}, rng)}, seed);
  require_gradcheck(
      [](const std::vector<Tensor>& in) {
        return permute(in[0], {1, 3, 0, 2});
      },
      {random_tensor({2, 3, 4, 5}, rng)}, seed);
}

TEST_CASE("index_select and index_add with duplicates") {
  Tensor x = Tensor::from_vector({3, 2}, {1, 2, 3, 4, 5, 6});
  const IndexTensor idx({2, 0, 2});
  CHECK(index_select(x, idx).to_vector() == std::vector<float>{5, 6, 1, 2, 5, 6});
  Tensor src = Tensor::from_vector({3, 2}, {1, 1, 10, 10, 100, 100});
  CHECK(index_add(Tensor::zeros({3, 2}), idx, src).to_vector() ==
        std::vector<float>{10, 10, 0, 0, 101, 101});
  CHECK_THROWS_AS(index_select(x, IndexTensor({3})), ValueError);
  CHECK_THROWS_AS(index_select(x, IndexTensor({-1})), ValueError);
  CHECK_THROWS_AS(index_add(x, idx, Tensor::zeros({2, 2})), ShapeError);
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const IndexTensor many({4, 0, 0, 3, 1, 4, 4});
  require_gradcheck([&many](const std::vector<Tensor>& in) { return index_select(in[0], many); },
                    {random_tensor({5, 3}, rng)}, seed);
  require_gradcheck(
      [&many](const std::vector<Tensor>& in) { return index_add(in[0], many, in[1]); },
      {random_tensor({5, 3}, rng), random_tensor({7, 3}, rng)}, seed);
}

TEST_CASE("a leading-dim slice is a view; gradients still flow") {
  Tensor x = Tensor::from_vector({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor s = slice(x, 0, 1, 2);
  CHECK(s.data() == x.data() + 2);
}
