// Matrix products. Every product is one cblas_sgemm call (a loop of them for batches), so
// the autograd layer adds only the cost of allocating the result.

#include "autograd/blas.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace stgnn {

namespace {

struct MatmulDims {
  int64_t batch, m, k, n;
  bool batched_a, batched_b;
};

MatmulDims matmul_dims(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const auto fail = [&]() {
    return ShapeError("matmul: cannot multiply " + shape_str(a.shape()) + (ta ? "^T" : "") +
                      " by " + shape_str(b.shape()) + (tb ? "^T" : ""));
  };
  if (a.dim() < 2 || a.dim() > 3 || b.dim() < 2 || b.dim() > 3) throw fail();
  MatmulDims d{};
  d.batched_a = a.dim() == 3;
  d.batched_b = b.dim() == 3;
  const int64_t a_rows = a.size(-2), a_cols = a.size(-1);
  const int64_t b_rows = b.size(-2), b_cols = b.size(-1);
  d.m = ta ? a_cols : a_rows;
  d.k = ta ? a_rows : a_cols;
  const int64_t kb = tb ? b_cols : b_rows;
  d.n = tb ? b_rows : b_cols;
  if (d.k != kb) throw fail();
  if (d.batched_a && d.batched_b && a.size(0) != b.size(0)) throw fail();
  d.batch = d.batched_a ? a.size(0) : (d.batched_b ? b.size(0) : 1);
  return d;
}

// The raw product with batch broadcasting of a 2-D operand; no autograd.
Tensor matmul_forward(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const MatmulDims d = matmul_dims(a, b, ta, tb);
  const bool batched = d.batched_a || d.batched_b;
  Tensor out = Tensor::empty(batched ? Shape{d.batch, d.m, d.n} : Shape{d.m, d.n});
  const int64_t stride_a = d.batched_a ? d.m * d.k : 0;
  const int64_t stride_b = d.batched_b ? d.k * d.n : 0;
  for (int64_t i = 0; i < d.batch; ++i) {
    sgemm(ta, tb, d.m, d.n, d.k, a.data() + i * stride_a, b.data() + i * stride_b,
          out.data() + i * d.m * d.n, false);
  }
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  const MatmulDims d = matmul_dims(a, b, transpose_a, transpose_b);
  // [B,M,K] x [K,N] is one [B*M,K] x [K,N] product: one big sgemm, and its weight gradient is
  // one sgemm too instead of a batch of them summed.
  if (d.batched_a && !d.batched_b && !transpose_a) {
    return matmul(a.reshape({d.batch * d.m, d.k}), b, false, transpose_b)
        .reshape({d.batch, d.m, d.n});
  }
  Tensor out = matmul_forward(a, b, transpose_a, transpose_b);
  return Tensor::make_result(
      out, "matmul", {a, b}, [a, b, transpose_a, transpose_b](const Tensor&, const Tensor& g) {
        // C = opA(A) opB(B):  d opA(A) = dC opB(B)^T,  d opB(B) = opA(A)^T dC.
        if (a.requires_grad()) {
          Tensor ga = transpose_a ? matmul_forward(b, g, transpose_b, true)
                                  : matmul_forward(g, b, false, !transpose_b);
          a.accumulate_grad(sum_to_shape(ga, a.shape()));
        }
        if (b.requires_grad()) {
          Tensor gb = transpose_b ? matmul_forward(g, a, true, transpose_a)
                                  : matmul_forward(a, g, !transpose_a, false);
          b.accumulate_grad(sum_to_shape(gb, b.shape()));
        }
      });
}

// x [..., in], weight [out, in], bias [out] -> [..., out].
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (x.dim() < 1 || weight.dim() != 2 || x.size(-1) != weight.size(1) ||
      (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0)))) {
    throw ShapeError("linear: input " + shape_str(x.shape()) + ", weight " +
                     shape_str(weight.shape()) +
                     (bias.defined() ? ", bias " + shape_str(bias.shape()) : ""));
  }
  const int64_t in = weight.size(1), out_features = weight.size(0);
  const int64_t rows = x.numel() / std::max<int64_t>(1, in);
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  Tensor out = Tensor::empty(out_shape);
  float* o = out.data();
  if (bias.defined()) {
    // Seed C with the bias rows, then accumulate the product into it.
    const float* pb = bias.data();
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, out_features)),
                 [&](int64_t r0, int64_t r1) {
                   for (int64_t r = r0; r < r1; ++r)
                     std::copy(pb, pb + out_features, o + r * out_features);
                 });
  }
  sgemm(false, true, rows, out_features, in, x.data(), weight.data(), o, bias.defined());
  return Tensor::make_result(
      out, "linear", {x, weight, bias},
      [x, weight, bias, rows, in, out_features](const Tensor&, const Tensor& g) {
        if (x.requires_grad()) {
          Tensor gx = Tensor::empty(x.shape());  // [R,out] x [out,in]
          sgemm(false, false, rows, in, out_features, g.data(), weight.data(), gx.data(), false);
          x.accumulate_grad(gx);
        }
        if (weight.requires_grad()) {
          Tensor gw = Tensor::empty(weight.shape());  // [out,R] x [R,in]
          sgemm(true, false, out_features, in, rows, g.data(), x.data(), gw.data(), false);
          weight.accumulate_grad(gw);
        }
        if (bias.defined() && bias.requires_grad()) {
          bias.accumulate_grad(sum_to_shape(g.reshape({rows, out_features}), bias.shape()));
        }
      });
}

}  // namespace stgnn
