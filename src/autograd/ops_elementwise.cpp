// Elementwise ops: binary with NumPy broadcasting, and unary activations.
// Arithmetic runs on Eigen array maps over contiguous chunks, one chunk per thread.
#include <Eigen/Core>
#include <cmath>

#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace stgnn {

namespace {

using ArrayMap = Eigen::Map<Eigen::ArrayXf, Eigen::Unaligned>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf, Eigen::Unaligned>;

// Applies fn(in_chunk, out_chunk) over threads: x [...] -> [...]
template <typename Fn>
Tensor map_unary(const Tensor& x, const Fn& fn) {
  Tensor out = Tensor::empty(x.shape());
  const float* in = x.data();
  float* o = out.data();
  parallel_for(x.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
    ConstArrayMap a(in + begin, end - begin);
    ArrayMap r(o + begin, end - begin);
    fn(a, r);
  });
  return out;
}

// Same for two same-shaped inputs: (a_chunk, b_chunk, out_chunk).
template <typename Fn>
Tensor map_binary_same(const Tensor& a, const Tensor& b, const Fn& fn) {
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  const float* pb = b.data();
  float* o = out.data();
  parallel_for(a.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
    ConstArrayMap x(pa + begin, end - begin);
    ConstArrayMap y(pb + begin, end - begin);
    ArrayMap r(o + begin, end - begin);
    fn(x, y, r);
  });
  return out;
}

// Element strides of `shape` when broadcast to `out_shape` (0 along stretched dims).
std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out_shape) {
  const size_t n = out_shape.size();
  std::vector<int64_t> strides(n, 0);
  int64_t stride = 1;
  for (size_t k = 0; k < shape.size(); ++k) {
    const size_t axis = shape.size() - 1 - k;
    const size_t out_axis = n - 1 - k;
    strides[out_axis] = shape[axis] == 1 ? 0 : stride;
    stride *= shape[axis];
  }
  return strides;
}

// True when `small` equals the trailing dims of `big` (a row vector over leading dims).
bool is_suffix(const Shape& small, const Shape& big) {
  if (small.size() > big.size()) return false;
  return std::equal(small.begin(), small.end(), big.end() - static_cast<int64_t>(small.size()));
}

enum class BinaryOp { kAdd, kSub, kMul, kDiv };

inline float apply(BinaryOp op, float x, float y) {
  switch (op) {
    case BinaryOp::kAdd:
      return x + y;
    case BinaryOp::kSub:
      return x - y;
    case BinaryOp::kMul:
      return x * y;
    case BinaryOp::kDiv:
      return x / y;
  }
  return 0.0f;
}

template <BinaryOp kOp>
void apply_arrays(const ConstArrayMap& x, const ConstArrayMap& y, ArrayMap& r) {
  if constexpr (kOp == BinaryOp::kAdd) r = x + y;
  if constexpr (kOp == BinaryOp::kSub) r = x - y;
  if constexpr (kOp == BinaryOp::kMul) r = x * y;
  if constexpr (kOp == BinaryOp::kDiv) r = x / y;
}

// out = a (op) b with broadcasting; no autograd.
// Fast paths: same shape, one side a scalar, one side a trailing-dims row; otherwise a
// general odometer over the output index.
template <BinaryOp kOp>
Tensor broadcast_binary_forward(const Tensor& a, const Tensor& b, const char* name) {
  if (a.shape() == b.shape()) {
    return map_binary_same(a, b, [](const ConstArrayMap& x, const ConstArrayMap& y, ArrayMap& r) {
      apply_arrays<kOp>(x, y, r);
    });
  }
  const Shape out_shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(out_shape);
  const float* pa = a.data();
  const float* pb = b.data();
  float* o = out.data();
  const int64_t n = out.numel();
  if (out_shape == a.shape() && (b.numel() == 1 || is_suffix(b.shape(), out_shape))) {
    const int64_t inner = b.numel();
    const int64_t rows = inner == 0 ? 0 : n / inner;
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, inner)),
                 [&](int64_t r0, int64_t r1) {
                   ConstArrayMap y(pb, inner);
                   for (int64_t r = r0; r < r1; ++r) {
                     ConstArrayMap x(pa + r * inner, inner);
                     ArrayMap res(o + r * inner, inner);
                     apply_arrays<kOp>(x, y, res);
                   }
                 });
    return out;
  }
  if (out_shape == b.shape() && (a.numel() == 1 || is_suffix(a.shape(), out_shape))) {
    const int64_t inner = a.numel();
    const int64_t rows = inner == 0 ? 0 : n / inner;
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, inner)),
                 [&](int64_t r0, int64_t r1) {
                   ConstArrayMap x(pa, inner);
                   for (int64_t r = r0; r < r1; ++r) {
                     ConstArrayMap y(pb + r * inner, inner);
                     ArrayMap res(o + r * inner, inner);
                     apply_arrays<kOp>(x, y, res);
                   }
                 });
    return out;
  }
  // General case: walk the output with an odometer over all dims.
  const std::vector<int64_t> sa = broadcast_strides(a.shape(), out_shape);
  const std::vector<int64_t> sb = broadcast_strides(b.shape(), out_shape);
  const size_t nd = out_shape.size();
  std::vector<int64_t> index(nd, 0);
  int64_t ia = 0, ib = 0;
  for (int64_t i = 0; i < n; ++i) {
    o[i] = apply(kOp, pa[ia], pb[ib]);
    for (size_t d = nd; d-- > 0;) {
      ++index[d];
      ia += sa[d];
      ib += sb[d];
      if (index[d] < out_shape[d]) break;
      ia -= sa[d] * out_shape[d];
      ib -= sb[d] * out_shape[d];
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t k = 0; k < n; ++k) {
    const int64_t da = k < a.size() ? a[a.size() - 1 - k] : 1;
    const int64_t db = k < b.size() ? b[b.size() - 1 - k] : 1;
    if (da != db && da != 1 && db != 1) {
      throw ShapeError(std::string(op) + ": cannot broadcast " + shape_str(a) + " with " +
                       shape_str(b));
    }
    out[n - 1 - k] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  Tensor out = Tensor::zeros(shape);
  const float* pg = g.data();
  float* o = out.data();
  const int64_t n = g.numel();
  if (is_suffix(shape, g.shape()) || shape_numel(shape) == 1) {
    // Sum rows [rows, inner] -> [inner]; threads own column ranges, so no races and the
    // summation order per column is fixed.
    const int64_t inner = shape_numel(shape);
    const int64_t rows = inner == 0 ? 0 : n / inner;
    if (inner == 1) {
      o[0] = static_cast<float>(fixed_chunks_reduce(n, [&](int64_t b, int64_t e) {
        double s = 0.0;
        for (int64_t i = b; i < e; ++i)
          s += pg[i];
        return s;
      }));
      return out;
    }
    parallel_for(inner, std::max<int64_t>(16, kElementwiseGrain / std::max<int64_t>(1, rows)),
                 [&](int64_t c0, int64_t c1) {
                   for (int64_t r = 0; r < rows; ++r) {
                     const float* row = pg + r * inner;
                     for (int64_t c = c0; c < c1; ++c)
                       o[c] += row[c];
                   }
                 });
    return out;
  }
  // General case: accumulate each gradient element at its broadcast source.
  const Shape& gs = g.shape();
  if (shape.size() > gs.size()) {
    throw ShapeError("sum_to_shape: " + shape_str(gs) + " -> " + shape_str(shape));
  }
  const std::vector<int64_t> so = broadcast_strides(shape, gs);
  const size_t nd = gs.size();
  std::vector<int64_t> index(nd, 0);
  int64_t io = 0;
  for (int64_t i = 0; i < n; ++i) {
    o[io] += pg[i];
    for (size_t d = nd; d-- > 0;) {
      ++index[d];
      io += so[d];
      if (index[d] < gs[d]) break;
      io -= so[d] * gs[d];
      index[d] = 0;
    }
  }
  return out;
}

// ---------------------------------------------------------------- binary ops
// Each: forward with broadcasting; backward sends d out / d operand * g, summed back to the
// operand's shape.

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = broadcast_binary_forward<BinaryOp::kAdd>(a, b, "add");
  return Tensor::make_result(out, "add", {a, b}, [a, b](const Tensor&, const Tensor& g) {
    if (a.requires_grad()) a.accumulate_grad(sum_to_shape(g, a.shape()));
    if (b.requires_grad()) b.accumulate_grad(sum_to_shape(g, b.shape()));
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = broadcast_binary_forward<BinaryOp::kSub>(a, b, "sub");
  return Tensor::make_result(out, "sub", {a, b}, [a, b](const Tensor&, const Tensor& g) {
    if (a.requires_grad()) a.accumulate_grad(sum_to_shape(g, a.shape()));
    if (b.requires_grad()) b.accumulate_grad(sum_to_shape(neg(g), b.shape()));
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = broadcast_binary_forward<BinaryOp::kMul>(a, b, "mul");
  return Tensor::make_result(out, "mul", {a, b}, [a, b](const Tensor&, const Tensor& g) {
    if (a.requires_grad()) a.accumulate_grad(sum_to_shape(mul(g, b), a.shape()));
    if (b.requires_grad()) b.accumulate_grad(sum_to_shape(mul(g, a), b.shape()));
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = broadcast_binary_forward<BinaryOp::kDiv>(a, b, "div");
  return Tensor::make_result(out, "div", {a, b}, [a, b](const Tensor& out, const Tensor& g) {
    // d(a/b)/da = 1/b; d(a/b)/db = -a/b^2 = -out/b.
    if (a.requires_grad()) a.accumulate_grad(sum_to_shape(div(g, b), a.shape()));
    if (b.requires_grad()) b.accumulate_grad(sum_to_shape(neg(div(mul(g, out), b)), b.shape()));
  });
}

Tensor add_scalar(const Tensor& a, float s) {
  Tensor out = map_unary(a, [s](const ConstArrayMap& x, ArrayMap& r) { r = x + s; });
  return Tensor::make_result(out, "add_scalar", {a},
                             [a](const Tensor&, const Tensor& g) { a.accumulate_grad(g); });
}

Tensor mul_scalar(const Tensor& a, float s) {
  Tensor out = map_unary(a, [s](const ConstArrayMap& x, ArrayMap& r) { r = x * s; });
  return Tensor::make_result(out, "mul_scalar", {a}, [a, s](const Tensor&, const Tensor& g) {
    a.accumulate_grad(mul_scalar(g, s));
  });
}

Tensor neg(const Tensor& x) {
  Tensor out = map_unary(x, [](const ConstArrayMap& a, ArrayMap& r) { r = -a; });
  return Tensor::make_result(out, "neg", {x},
                             [x](const Tensor&, const Tensor& g) { x.accumulate_grad(neg(g)); });
}

// ---------------------------------------------------------------- unary ops
// Each backward multiplies g by the derivative, written in terms of the input x or the
// saved output y, whichever is cheaper.

Tensor exp(const Tensor& x) {
  Tensor out = map_unary(x, [](const ConstArrayMap& a, ArrayMap& r) { r = a.exp(); });
  return Tensor::make_result(out, "exp", {x}, [x](const Tensor& y, const Tensor& g) {
    x.accumulate_grad(map_binary_same(
        g, y, [](const ConstArrayMap& gg, const ConstArrayMap& yy, ArrayMap& r) { r = gg * yy; }));
  });
}

Tensor log(const Tensor& x) {
  Tensor out = map_unary(x, [](const ConstArrayMap& a, ArrayMap& r) { r = a.log(); });
  return Tensor::make_result(out, "log", {x}, [x](const Tensor&, const Tensor& g) {
    x.accumulate_grad(map_binary_same(
        g, x, [](const ConstArrayMap& gg, const ConstArrayMap& xx, ArrayMap& r) { r = gg / xx; }));
  });
}

Tensor sqrt(const Tensor& x) {
  Tensor out = map_unary(x, [](const ConstArrayMap& a, ArrayMap& r) { r = a.sqrt(); });
  return Tensor::make_result(out, "sqrt", {x}, [x](const Tensor& y, const Tensor& g) {
    x.accumulate_grad(map_binary_same(
        g, y,
        [](const ConstArrayMap& gg, const ConstArrayMap& yy, ArrayMap& r) { r = 0.5f * gg / yy; }));
  });
}

Tensor pow_scalar(const Tensor& x, float exponent) {
  Tensor out =
      map_unary(x, [exponent](const ConstArrayMap& a, ArrayMap& r) { r = a.pow(exponent); });
  return Tensor::make_result(out, "pow_scalar", {x}, [x, exponent](const Tensor&, const Tensor& g) {
    x.accumulate_grad(map_binary_same(
        g, x, [exponent](const ConstArrayMap& gg, const ConstArrayMap& xx, ArrayMap& r) {
          r = gg * exponent * xx.pow(exponent - 1.0f);
        }));
  });
}

Tensor relu(const Tensor& x) {
  Tensor out = map_unary(x, [](const ConstArrayMap& a, ArrayMap& r) { r = a.max(0.0f); });
  return Tensor::make_result(out, "relu", {x}, [x](const Tensor& y, const Tensor& g) {
    x.accumulate_grad(
        map_binary_same(g, y, [](const ConstArrayMap& gg, const ConstArrayMap& yy, ArrayMap& r) {
          r = (yy > 0.0f).select(gg, 0.0f);
        }));
  });
}

Tensor leaky_relu(const Tensor& x, float negative_slope) {
  Tensor out = map_unary(x, [negative_slope](const ConstArrayMap& a, ArrayMap& r) {
    r = (a > 0.0f).select(a, a * negative_slope);
  });
  return Tensor::make_result(
      out, "leaky_relu", {x}, [x, negative_slope](const Tensor&, const Tensor& g) {
        x.accumulate_grad(map_binary_same(
            g, x, [negative_slope](const ConstArrayMap& gg, const ConstArrayMap& xx, ArrayMap& r) {
              r = (xx > 0.0f).select(gg, gg * negative_slope);
            }));
      });
}

Tensor sigmoid(const Tensor& x) {
  Tensor out = map_unary(x, [](const ConstArrayMap& a, ArrayMap& r) { r = a.logistic(); });
  return Tensor::make_result(out, "sigmoid", {x}, [x](const Tensor& y, const Tensor& g) {
    x.accumulate_grad(
        map_binary_same(g, y, [](const ConstArrayMap& gg, const ConstArrayMap& yy, ArrayMap& r) {
          r = gg * yy * (1.0f - yy);
        }));
  });
}

Tensor tanh(const Tensor& x) {
  Tensor out = map_unary(x, [](const ConstArrayMap& a, ArrayMap& r) { r = a.tanh(); });
  return Tensor::make_result(out, "tanh", {x}, [x](const Tensor& y, const Tensor& g) {
    x.accumulate_grad(
        map_binary_same(g, y, [](const ConstArrayMap& gg, const ConstArrayMap& yy, ArrayMap& r) {
          r = gg * (1.0f - yy * yy);
        }));
  });
}

Tensor gelu(const Tensor& x) {
  // gelu(x) = x * Phi(x), Phi the standard normal CDF = (1 + erf(x / sqrt 2)) / 2.
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  constexpr float kInvSqrt2Pi = 0.39894228040143268f;
  Tensor out = map_unary(x, [](const ConstArrayMap& a, ArrayMap& r) {
    for (Eigen::Index i = 0; i < a.size(); ++i)
      r[i] = 0.5f * a[i] * (1.0f + std::erf(a[i] * kInvSqrt2));
  });
  return Tensor::make_result(out, "gelu", {x}, [x](const Tensor&, const Tensor& g) {
    // d/dx = Phi(x) + x * phi(x), phi the standard normal density.
    x.accumulate_grad(
        map_binary_same(g, x, [](const ConstArrayMap& gg, const ConstArrayMap& xx, ArrayMap& r) {
          for (Eigen::Index i = 0; i < xx.size(); ++i) {
            const float cdf = 0.5f * (1.0f + std::erf(xx[i] * kInvSqrt2));
            const float pdf = kInvSqrt2Pi * std::exp(-0.5f * xx[i] * xx[i]);
            r[i] = gg[i] * (cdf + xx[i] * pdf);
          }
        }));
  });
}

}  // namespace stgnn
