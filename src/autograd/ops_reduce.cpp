// Reductions, softmax and the cross-entropy loss.
// An axis reduction views x as [outer, axis, inner]; each thread owns whole output rows, and
// every sum runs in a fixed order, so results do not depend on the thread count.
#include <cmath>
#include <limits>
#include <memory>

#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace stgnn {

namespace {

struct AxisView {
  int64_t outer, extent, inner, axis;
};

AxisView axis_view(const Shape& shape, int64_t axis, const char* op) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t a = axis < 0 ? axis + nd : axis;
  if (a < 0 || a >= nd) {
    throw ShapeError(std::string(op) + ": axis " + std::to_string(axis) + " out of range for " +
                     shape_str(shape));
  }
  AxisView v{1, shape[static_cast<size_t>(a)], 1, a};
  for (int64_t d = 0; d < a; ++d)
    v.outer *= shape[static_cast<size_t>(d)];
  for (int64_t d = a + 1; d < nd; ++d)
    v.inner *= shape[static_cast<size_t>(d)];
  return v;
}

Shape reduced_shape(const Shape& shape, int64_t axis, bool keepdim) {
  Shape out = shape;
  if (keepdim) {
    out[static_cast<size_t>(axis)] = 1;
  } else {
    out.erase(out.begin() + axis);
  }
  return out;
}

// out[o, i] = sum_j x[o, j, i]; x [outer, extent, inner] -> [outer, inner].
void sum_axis_forward(const float* x, float* out, const AxisView& v) {
  parallel_for(v.outer * v.inner,
               std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, v.extent)),
               [&](int64_t b, int64_t e) {
                 for (int64_t idx = b; idx < e; ++idx) {
                   const int64_t o = idx / v.inner, i = idx % v.inner;
                   const float* p = x + o * v.extent * v.inner + i;
                   float s = 0.0f;
                   for (int64_t j = 0; j < v.extent; ++j)
                     s += p[j * v.inner];
                   out[idx] = s;
                 }
               });
}

// gx[o, j, i] = g[o, i] * scale: the broadcast back of a sum or mean.
Tensor sum_axis_backward(const Tensor& g, const Shape& x_shape, const AxisView& v, float scale) {
  Tensor gx = Tensor::empty(x_shape);
  const float* pg = g.data();
  float* p = gx.data();
  parallel_for(v.outer * v.extent,
               std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, v.inner)),
               [&](int64_t b, int64_t e) {
                 for (int64_t row = b; row < e; ++row) {
                   const int64_t o = row / v.extent;
                   const float* src = pg + o * v.inner;
                   float* dst = p + row * v.inner;
                   for (int64_t i = 0; i < v.inner; ++i)
                     dst[i] = src[i] * scale;
                 }
               });
  return gx;
}

double sum_all(const float* p, int64_t n) {
  return fixed_chunks_reduce(n, [p](int64_t b, int64_t e) {
    double s = 0.0;
    for (int64_t i = b; i < e; ++i)
      s += p[i];
    return s;
  });
}

}  // namespace

// ---------------------------------------------------------------- sum / mean

Tensor sum(const Tensor& x) {
  Tensor out = Tensor::scalar(static_cast<float>(sum_all(x.data(), x.numel())));
  return Tensor::make_result(out, "sum", {x}, [x](const Tensor&, const Tensor& g) {
    x.accumulate_grad(Tensor::full(x.shape(), g.item()));
  });
}

Tensor mean(const Tensor& x) {
  if (x.numel() == 0) throw ShapeError("mean: empty tensor " + shape_str(x.shape()));
  const float scale = 1.0f / static_cast<float>(x.numel());
  Tensor out = Tensor::scalar(static_cast<float>(sum_all(x.data(), x.numel()) / x.numel()));
  return Tensor::make_result(out, "mean", {x}, [x, scale](const Tensor&, const Tensor& g) {
    x.accumulate_grad(Tensor::full(x.shape(), g.item() * scale));
  });
}

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) {
  const AxisView v = axis_view(x.shape(), axis, "sum");
  Tensor out = Tensor::empty(reduced_shape(x.shape(), v.axis, keepdim));
  sum_axis_forward(x.data(), out.data(), v);
  return Tensor::make_result(out, "sum_axis", {x}, [x, v](const Tensor&, const Tensor& g) {
    x.accumulate_grad(sum_axis_backward(g, x.shape(), v, 1.0f));
  });
}

Tensor mean(const Tensor& x, int64_t axis, bool keepdim) {
  const AxisView v = axis_view(x.shape(), axis, "mean");
  if (v.extent == 0) throw ShapeError("mean: empty axis in " + shape_str(x.shape()));
  const float scale = 1.0f / static_cast<float>(v.extent);
  Tensor out = Tensor::empty(reduced_shape(x.shape(), v.axis, keepdim));
  sum_axis_forward(x.data(), out.data(), v);
  float* o = out.data();
  for (int64_t i = 0; i < out.numel(); ++i)
    o[i] *= scale;
  return Tensor::make_result(out, "mean_axis", {x}, [x, v, scale](const Tensor&, const Tensor& g) {
    x.accumulate_grad(sum_axis_backward(g, x.shape(), v, scale));
  });
}

// ---------------------------------------------------------------- max

Tensor max(const Tensor& x) {
  if (x.numel() == 0) throw ShapeError("max: empty tensor " + shape_str(x.shape()));
  const float* p = x.data();
  int64_t best = 0;
  for (int64_t i = 1; i < x.numel(); ++i) {
    if (p[i] > p[best]) best = i;
  }
  Tensor out = Tensor::scalar(p[best]);
  return Tensor::make_result(out, "max", {x}, [x, best](const Tensor&, const Tensor& g) {
    Tensor gx = Tensor::zeros(x.shape());
    gx.data()[best] = g.item();
    x.accumulate_grad(gx);
  });
}

Tensor max(const Tensor& x, int64_t axis, bool keepdim) {
  const AxisView v = axis_view(x.shape(), axis, "max");
  if (v.extent == 0) throw ShapeError("max: empty axis in " + shape_str(x.shape()));
  Tensor out = Tensor::empty(reduced_shape(x.shape(), v.axis, keepdim));
  // arg[o * inner + i] = the first j with the maximal x[o, j, i]; kept for backward.
  auto arg = std::make_shared<std::vector<int32_t>>(static_cast<size_t>(out.numel()));
  const float* px = x.data();
  float* o = out.data();
  parallel_for(out.numel(), std::max<int64_t>(1, kElementwiseGrain / v.extent),
               [&](int64_t b, int64_t e) {
                 for (int64_t idx = b; idx < e; ++idx) {
                   const float* p = px + (idx / v.inner) * v.extent * v.inner + idx % v.inner;
                   int32_t best = 0;
                   for (int64_t j = 1; j < v.extent; ++j) {
                     if (p[j * v.inner] > p[best * v.inner]) best = static_cast<int32_t>(j);
                   }
                   (*arg)[static_cast<size_t>(idx)] = best;
                   o[idx] = p[best * v.inner];
                 }
               });
  return Tensor::make_result(out, "max_axis", {x}, [x, v, arg](const Tensor&, const Tensor& g) {
    Tensor gx = Tensor::zeros(x.shape());
    float* p = gx.data();
    const float* pg = g.data();
    for (int64_t idx = 0; idx < g.numel(); ++idx) {
      const int64_t j = (*arg)[static_cast<size_t>(idx)];
      p[(idx / v.inner) * v.extent * v.inner + j * v.inner + idx % v.inner] = pg[idx];
    }
    x.accumulate_grad(gx);
  });
}

// ---------------------------------------------------------------- softmax family

namespace {

// y[r, :] = softmax(x[r, :]) (log = false) or log_softmax (log = true); x [rows, cols].
void softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, cols)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const float* in = x + r * cols;
                   float* out = y + r * cols;
                   float m = -std::numeric_limits<float>::infinity();
                   for (int64_t c = 0; c < cols; ++c)
                     m = std::max(m, in[c]);
                   double total = 0.0;
                   for (int64_t c = 0; c < cols; ++c)
                     total += std::exp(static_cast<double>(in[c] - m));
                   if (log) {
                     const float lse = m + static_cast<float>(std::log(total));
                     for (int64_t c = 0; c < cols; ++c)
                       out[c] = in[c] - lse;
                   } else {
                     const float inv = static_cast<float>(1.0 / total);
                     for (int64_t c = 0; c < cols; ++c)
                       out[c] = std::exp(in[c] - m) * inv;
                   }
                 }
               });
}

int64_t last_dim(const Tensor& x, const char* op) {
  if (x.dim() == 0) throw ShapeError(std::string(op) + ": needs at least 1 dim, got []");
  return x.size(-1);
}

}  // namespace

Tensor softmax(const Tensor& x) {
  const int64_t cols = last_dim(x, "softmax");
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor out = Tensor::empty(x.shape());
  softmax_rows_forward(x.data(), out.data(), rows, cols, false);
  return Tensor::make_result(
      out, "softmax", {x}, [x, rows, cols](const Tensor& y, const Tensor& g) {
        // gx = y * (g - sum_c(g * y)).
        Tensor gx = Tensor::empty(x.shape());
        const float* py = y.data();
        const float* pg = g.data();
        float* p = gx.data();
        parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, cols)),
                     [&](int64_t r0, int64_t r1) {
                       for (int64_t r = r0; r < r1; ++r) {
                         const float* yr = py + r * cols;
                         const float* gr = pg + r * cols;
                         float dot = 0.0f;
                         for (int64_t c = 0; c < cols; ++c)
                           dot += gr[c] * yr[c];
                         for (int64_t c = 0; c < cols; ++c)
                           p[r * cols + c] = yr[c] * (gr[c] - dot);
                       }
                     });
        x.accumulate_grad(gx);
      });
}

Tensor log_softmax(const Tensor& x) {
  const int64_t cols = last_dim(x, "log_softmax");
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor out = Tensor::empty(x.shape());
  softmax_rows_forward(x.data(), out.data(), rows, cols, true);
  return Tensor::make_result(
      out, "log_softmax", {x}, [x, rows, cols](const Tensor& y, const Tensor& g) {
        // gx = g - exp(y) * sum_c(g).
        Tensor gx = Tensor::empty(x.shape());
        const float* py = y.data();
        const float* pg = g.data();
        float* p = gx.data();
        parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, cols)),
                     [&](int64_t r0, int64_t r1) {
                       for (int64_t r = r0; r < r1; ++r) {
                         const float* gr = pg + r * cols;
                         float total = 0.0f;
                         for (int64_t c = 0; c < cols; ++c)
                           total += gr[c];
                         for (int64_t c = 0; c < cols; ++c) {
                           p[r * cols + c] = gr[c] - std::exp(py[r * cols + c]) * total;
                         }
                       }
                     });
        x.accumulate_grad(gx);
      });
}

// logits [N, C], labels [N] -> [] = mean over labelled rows of -log softmax(logits)[label].
Tensor cross_entropy(const Tensor& logits, const IndexTensor& labels, int64_t ignore_index) {
  if (logits.dim() != 2 || labels.numel() != logits.size(0)) {
    throw ShapeError("cross_entropy: logits " + shape_str(logits.shape()) + ", labels " +
                     shape_str(labels.shape) + " (want [N,C] and [N])");
  }
  const int64_t n = logits.size(0), c = logits.size(1);
  int64_t labelled = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = labels[i];
    if (y == ignore_index) continue;
    if (y < 0 || y >= c) {
      throw ValueError("cross_entropy: label " + std::to_string(y) + " at row " +
                       std::to_string(i) + " outside [0, " + std::to_string(c) + ")");
    }
    ++labelled;
  }
  auto log_probs = std::make_shared<Tensor>(Tensor::empty(logits.shape()));
  softmax_rows_forward(logits.data(), log_probs->data(), n, c, true);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] != ignore_index) total -= log_probs->data()[i * c + labels[i]];
  }
  Tensor out = Tensor::scalar(labelled > 0 ? static_cast<float>(total / labelled) : 0.0f);
  return Tensor::make_result(
      out, "cross_entropy", {logits},
      [logits, labels, ignore_index, labelled, log_probs, n, c](const Tensor&, const Tensor& g) {
        // d/dlogits = (softmax - onehot(label)) / labelled on labelled rows, 0 elsewhere.
        Tensor gx = Tensor::zeros(logits.shape());
        if (labelled > 0) {
          const float scale = g.item() / static_cast<float>(labelled);
          const float* lp = log_probs->data();
          float* p = gx.data();
          parallel_for(n, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, c)),
                       [&](int64_t r0, int64_t r1) {
                         for (int64_t i = r0; i < r1; ++i) {
                           if (labels[i] == ignore_index) continue;
                           for (int64_t k = 0; k < c; ++k)
                             p[i * c + k] = std::exp(lp[i * c + k]) * scale;
                           p[i * c + labels[i]] -= scale;
                         }
                       });
        }
        logits.accumulate_grad(gx);
      });
}

}  // namespace stgnn
