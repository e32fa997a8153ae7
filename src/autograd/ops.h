// The differentiable op set. Every op here has a forward, a backward and a gradient check
// in tests/. Shapes are given as [dims]; "..." means any leading dims.
//
// Broadcasting (binary elementwise ops) follows NumPy: shapes are aligned on the right and a
// dim of 1 (or a missing leading dim) stretches. The gradient of a stretched operand is
// summed back to its own shape.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/rng.h"
#include "autograd/tensor.h"

namespace stgnn {

// ---------------------------------------------------------------- elementwise
// (ops_elementwise.cpp)
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, float s);
Tensor mul_scalar(const Tensor& a, float s);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor pow_scalar(const Tensor& x, float exponent);
Tensor relu(const Tensor& x);
Tensor leaky_relu(const Tensor& x, float negative_slope = 0.01f);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor gelu(const Tensor& x);  // exact form x * Phi(x), as torch.nn.functional.gelu

inline Tensor operator+(const Tensor& a, const Tensor& b) {
  return add(a, b);
}
inline Tensor operator-(const Tensor& a, const Tensor& b) {
  return sub(a, b);
}
inline Tensor operator*(const Tensor& a, const Tensor& b) {
  return mul(a, b);
}
inline Tensor operator/(const Tensor& a, const Tensor& b) {
  return div(a, b);
}
inline Tensor operator-(const Tensor& x) {
  return neg(x);
}
inline Tensor operator*(const Tensor& a, float s) {
  return mul_scalar(a, s);
}
inline Tensor operator*(float s, const Tensor& a) {
  return mul_scalar(a, s);
}
inline Tensor operator+(const Tensor& a, float s) {
  return add_scalar(a, s);
}

// Broadcast result shape of a and b, or ShapeError naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Sums g over the dims that were stretched to reach g's shape from `shape`.
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

// ---------------------------------------------------------------- linear algebra (ops_linalg.cpp)
// a [M,K] x b [K,N] -> [M,N]; a [B,M,K] x b [B,K,N] -> [B,M,N]; a [B,M,K] x b [K,N] -> [B,M,N].
// transpose_a / transpose_b transpose the last two dims of the operand first.
// Every product goes through cblas_sgemm.
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);
// x [..., in], weight [out, in], bias [out] or undefined -> [..., out] = x weight^T + bias.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---------------------------------------------------------------- reductions (ops_reduce.cpp)
Tensor sum(const Tensor& x);                                      // -> [] (0-d)
Tensor sum(const Tensor& x, int64_t axis, bool keepdim = false);  // axis may be negative
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor max(const Tensor& x);  // gradient flows to the first maximal element
Tensor max(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor softmax(const Tensor& x);      // over the last axis
Tensor log_softmax(const Tensor& x);  // over the last axis
// logits [N, C], labels [N] in [0, C) or ignore_index -> [] mean over the labelled rows
// (0 when none is labelled, with zero gradient).
Tensor cross_entropy(const Tensor& logits, const IndexTensor& labels, int64_t ignore_index = -1);

// ---------------------------------------------------------------- shape ops (ops_shape.cpp)
Tensor concat(const std::vector<Tensor>& parts, int64_t axis);
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end);  // [start, end)
Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& order);
// Rows of x [N, ...] picked by index [M] -> [M, ...].
Tensor index_select(const Tensor& x, const IndexTensor& index);
// base [N, ...] with rows of source [M, ...] added at rows index [M] -> [N, ...]
// (index_select's adjoint; duplicates accumulate).
Tensor index_add(const Tensor& base, const IndexTensor& index, const Tensor& source);

// ---------------------------------------------------------------- regularisation, normalisation
// (ops_norm.cpp) Inverted dropout: zeroes each element with probability p and scales the rest by
// 1/(1-p). The mask is a pure function of (seed, element index), so it does not depend on threads.
Tensor dropout(const Tensor& x, float p, bool training, uint64_t seed);
// x [N, C] or [N, C, H, W]; statistics per channel over the other dims. In training, batch
// statistics normalise and running_mean / running_var (biased -> unbiased variance, as torch)
// are updated in place with `momentum`; in eval the running statistics normalise.
// weight / bias [C] may be undefined (no affine).
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f);
// Normalises over the last axis; weight / bias [F] may be undefined.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps = 1e-5f);

// ---------------------------------------------------------------- images (ops_conv.cpp)
// x [N, C, H, W], weight [O, C, KH, KW], bias [O] or undefined -> [N, O, OH, OW]
// with OH = (H + 2 * padding - KH) / stride + 1. im2col + cblas_sgemm.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride = 1,
              int64_t padding = 0);
// x [N, C, H, W] -> [N, C, (H - k) / stride + 1, (W - k) / stride + 1]; stride 0 means k.
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0);

// A rectangle of a feature map in fractional map coordinates: rows [top, bottom), cols
// [left, right). Pixel (r, c) covers [r, r+1) x [c, c+1).
struct Cell {
  float top, left, bottom, right;
};
// Area pooling: x [N, C, H, W] -> [N, cells, C], node k = the area-weighted mean of the map
// over cells[k] (a pixel partly inside a cell counts by the overlapping area).
Tensor area_pool(const Tensor& x, const std::vector<Cell>& cells);
// The cells of a rows x cols grid laid over an H x W map.
std::vector<Cell> grid_cells(int64_t rows, int64_t cols, int64_t height, int64_t width);

}  // namespace stgnn
