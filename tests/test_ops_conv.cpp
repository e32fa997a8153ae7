// conv2d (against PyTorch and a direct loop), pooling and area pooling: values and gradients.
#include <doctest/doctest.h>

#include "autograd/ops.h"
#include "autograd/parallel.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

// Direct convolution, the plain reference for the im2col + sgemm kernel.
Tensor reference_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride,
                        int64_t pad) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
  const int64_t o = w.size(0), kh = w.size(2), kw = w.size(3);
  const int64_t oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1;
  Tensor y = Tensor::zeros({n, o, oh, ow});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t r = 0; r < oh; ++r)
        for (int64_t q = 0; q < ow; ++q) {
          double s = b.defined() ? b.data()[oc] : 0.0;
          for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t ki = 0; ki < kh; ++ki)
              for (int64_t kj = 0; kj < kw; ++kj) {
                const int64_t yy = r * stride + ki - pad, xx = q * stride + kj - pad;
                if (yy < 0 || yy >= h || xx < 0 || xx >= wd) continue;
                s += static_cast<double>(x.data()[((i * c + ch) * h + yy) * wd + xx]) *
                     w.data()[((oc * c + ch) * kh + ki) * kw + kj];
              }
          y.data()[((i * o + oc) * oh + r) * ow + q] = static_cast<float>(s);
        }
  return y;
}

}  // namespace

TEST_CASE("conv2d matches PyTorch (stride 2, padding 1) with gradients") {
  Tensor x = read_fixture("torch_ops", "conv_x").set_requires_grad(true);
  Tensor w = read_fixture("torch_ops", "conv_w").set_requires_grad(true);
  Tensor b = read_fixture("torch_ops", "conv_b").set_requires_grad(true);
  Tensor y = conv2d(x, w, b, 2, 1);
  check_close(y, read_fixture("torch_ops", "conv_y"), 1e-4, 1e-5);
  y.backward(read_fixture("torch_ops", "conv_g"));
  check_close(x.grad(), read_fixture("torch_ops", "conv_gx"), 1e-4, 1e-5);
  check_close(w.grad(), read_fixture("torch_ops", "conv_gw"), 1e-4, 1e-5);
  check_close(b.grad(), read_fixture("torch_ops", "conv_gb"), 1e-4, 1e-5);
}

TEST_CASE("conv2d equals the direct loop; gradients for several geometries") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  struct Case {
    Shape x, w;
    int64_t stride, pad;
  };
  for (const Case& k :
       {Case{{2, 1, 9, 8}, {3, 1, 3, 3}, 1, 0}, Case{{3, 2, 7, 7}, {4, 2, 3, 2}, 2, 1},
        Case{{1, 3, 5, 6}, {2, 3, 1, 1}, 1, 0}, Case{{2, 2, 6, 5}, {3, 2, 3, 3}, 1, 2}}) {
    CAPTURE(shape_str(k.x));
    Tensor x = random_tensor(k.x, rng), w = random_tensor(k.w, rng),
           b = random_tensor({k.w[0]}, rng);
    check_close(conv2d(x, w, b, k.stride, k.pad), reference_conv2d(x, w, b, k.stride, k.pad), 1e-4,
                1e-5);
    require_gradcheck(
        [&k](const std::vector<Tensor>& in) {
          return conv2d(in[0], in[1], in[2], k.stride, k.pad);
        },
        {x, w, b}, seed);
  }
  CHECK_THROWS_AS(conv2d(Tensor::zeros({1, 2, 5, 5}), Tensor::zeros({3, 1, 3, 3}), Tensor()),
                  ShapeError);
  CHECK_THROWS_AS(conv2d(Tensor::zeros({1, 1, 2, 2}), Tensor::zeros({3, 1, 3, 3}), Tensor()),
                  ShapeError);
}

TEST_CASE("conv2d's gradients are bit-identical for any thread count") {
  // The weight gradient sums over images; its partials follow fixed image groups, not threads.
  // 37 images: more than the 16 groups, and groups of unequal size. Both kernels: the direct
  // one (a 1-channel 3x3 patch) and im2col + sgemm.
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  for (const Shape& w_shape : {Shape{4, 1, 3, 3}, Shape{5, 4, 3, 3}}) {
    CAPTURE(shape_str(w_shape));
    const Tensor x = random_tensor({37, w_shape[1], 9, 8}, rng), w = random_tensor(w_shape, rng),
                 b = random_tensor({w_shape[0]}, rng);
    const Tensor upstream = random_tensor({37, w_shape[0], 7, 6}, rng);
    const auto gradients = [&](int threads) {
      set_num_threads(threads);
      Tensor xs = x.copy().set_requires_grad(true), ws = w.copy().set_requires_grad(true),
             bs = b.copy().set_requires_grad(true);
      conv2d(xs, ws, bs).backward(upstream);
      std::vector<float> all = xs.grad().to_vector();
      for (const Tensor& g : {ws.grad(), bs.grad()}) {
        const std::vector<float> v = g.to_vector();
        all.insert(all.end(), v.begin(), v.end());
      }
      return all;
    };
    const int saved = num_threads();
    const std::vector<float> one = gradients(1), two = gradients(2), three = gradients(3);
    set_num_threads(saved);
    CHECK(one == two);
    CHECK(one == three);
  }
}

TEST_CASE("max_pool2d and avg_pool2d: values and gradients") {
  Tensor x =
      Tensor::from_vector({1, 1, 4, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  CHECK(max_pool2d(x, 2).to_vector() == std::vector<float>{6, 8, 14, 16});
  CHECK(avg_pool2d(x, 2).to_vector() == std::vector<float>{3.5f, 5.5f, 11.5f, 13.5f});
  // Odd size: the last row / column is dropped (floor), as in PyTorch.
  CHECK(max_pool2d(Tensor::zeros({2, 3, 7, 5}), 2).shape() == Shape{2, 3, 3, 2});
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return max_pool2d(in[0], 2); },
                    {distinct_values({2, 3, 7, 5}, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return max_pool2d(in[0], 3, 2); },
                    {distinct_values({1, 2, 7, 7}, rng)}, seed);
  require_gradcheck([](const std::vector<Tensor>& in) { return avg_pool2d(in[0], 2); },
                    {random_tensor({2, 3, 7, 5}, rng)}, seed);
}

TEST_CASE("area pooling onto grids of cells") {
  // A 6x6 map of ones with value = row index: the 3x3 grid's cells average 2x2 blocks.
  Tensor x = Tensor::empty({1, 1, 6, 6});
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 6; ++c)
      x.data()[r * 6 + c] = static_cast<float>(r);
  std::vector<Cell> cells = grid_cells(3, 3, 6, 6);
  const std::vector<Cell> two = grid_cells(2, 2, 6, 6), one = grid_cells(1, 1, 6, 6);
  cells.insert(cells.end(), two.begin(), two.end());
  cells.insert(cells.end(), one.begin(), one.end());
  Tensor y = area_pool(x, cells);
  CHECK(y.shape() == Shape{1, 14, 1});
  CHECK(y.data()[0] == doctest::Approx(0.5f));   // rows 0-1
  CHECK(y.data()[8] == doctest::Approx(4.5f));   // rows 4-5
  CHECK(y.data()[9] == doctest::Approx(1.0f));   // rows 0-2
  CHECK(y.data()[13] == doctest::Approx(2.5f));  // whole map
  // Fractional cells: a 3x3 grid over a 4x4 map weights boundary pixels by area.
  Tensor ones = Tensor::ones({2, 3, 4, 4});
  Tensor z = area_pool(ones, grid_cells(3, 3, 4, 4));
  for (float v : z.to_vector())
    CHECK(v == doctest::Approx(1.0f));
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  require_gradcheck(
      [](const std::vector<Tensor>& in) { return area_pool(in[0], grid_cells(3, 3, 4, 5)); },
      {random_tensor({2, 3, 4, 5}, rng)}, seed);
  CHECK_THROWS_AS(area_pool(ones, {Cell{0, 0, 5, 4}}), ValueError);
}
