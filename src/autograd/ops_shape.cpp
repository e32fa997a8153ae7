// Shape ops: concat, slice, transpose / permute, and the row gather / scatter pair
// index_select / index_add. All results are contiguous copies, except a slice along the
// outermost non-trivial axis, which is a view.
#include <cstring>
#include <memory>

#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace stgnn {

namespace {

int64_t normalise_axis(int64_t axis, int64_t nd, const char* op, const Shape& shape) {
  const int64_t a = axis < 0 ? axis + nd : axis;
  if (a < 0 || a >= nd) {
    throw ShapeError(std::string(op) + ": axis " + std::to_string(axis) + " out of range for " +
                     shape_str(shape));
  }
  return a;
}

// Product of dims [from, to).
int64_t dims_product(const Shape& s, int64_t from, int64_t to) {
  int64_t p = 1;
  for (int64_t d = from; d < to; ++d)
    p *= s[static_cast<size_t>(d)];
  return p;
}

// Copies `rows` blocks of `width` floats from src (row stride src_stride) to dst (dst_stride).
void copy_blocks(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
                 int64_t width) {
  if (width == 0) return;
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / width), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      std::memcpy(dst + r * dst_stride, src + r * src_stride,
                  static_cast<size_t>(width) * sizeof(float));
    }
  });
}

void check_index(const IndexTensor& index, int64_t n, const char* op) {
  if (index.shape.size() != 1) {
    throw ShapeError(std::string(op) + ": index must be 1-D, got " + shape_str(index.shape));
  }
  for (int64_t i = 0; i < index.numel(); ++i) {
    if (index[i] < 0 || index[i] >= n) {
      throw ValueError(std::string(op) + ": index " + std::to_string(index[i]) + " at position " +
                       std::to_string(i) + " outside [0, " + std::to_string(n) + ")");
    }
  }
}

// dst[index[m], :] += src[m, :] for m in order; threads own column ranges (no races, the
// order of additions into each element is fixed).
void scatter_add_rows(float* dst, const float* src, const IndexTensor& index, int64_t width) {
  const int64_t m = index.numel();
  const int64_t grain = std::max<int64_t>(16, kElementwiseGrain / std::max<int64_t>(1, m));
  parallel_for(width, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < m; ++r) {
      float* d = dst + index[r] * width;
      const float* s = src + r * width;
      for (int64_t c = c0; c < c1; ++c)
        d[c] += s[c];
    }
  });
}

// out[m, :] = x[index[m], :].
void gather_rows(float* out, const float* x, const IndexTensor& index, int64_t width) {
  parallel_for(index.numel(), std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, width)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   std::memcpy(out + r * width, x + index[r] * width,
                               static_cast<size_t>(width) * sizeof(float));
                 }
               });
}

}  // namespace

// ---------------------------------------------------------------- concat / slice

// parts [..., a_k, ...] along axis -> [..., sum a_k, ...].
Tensor concat(const std::vector<Tensor>& parts, int64_t axis) {
  if (parts.empty()) throw ShapeError("concat: no tensors");
  const Shape& first = parts[0].shape();
  const int64_t nd = static_cast<int64_t>(first.size());
  const int64_t a = normalise_axis(axis, nd, "concat", first);
  Shape out_shape = first;
  out_shape[static_cast<size_t>(a)] = 0;
  for (const Tensor& p : parts) {
    Shape s = p.shape();
    if (static_cast<int64_t>(s.size()) != nd) {
      throw ShapeError("concat: " + shape_str(first) + " with " + shape_str(s));
    }
    out_shape[static_cast<size_t>(a)] += s[static_cast<size_t>(a)];
    s[static_cast<size_t>(a)] = first[static_cast<size_t>(a)];
    if (s != first)
      throw ShapeError("concat: " + shape_str(first) + " with " + shape_str(p.shape()) +
                       " along axis " + std::to_string(a));
  }
  const int64_t outer = dims_product(first, 0, a);
  const int64_t inner = dims_product(first, a + 1, nd);
  const int64_t out_width = out_shape[static_cast<size_t>(a)] * inner;
  Tensor out = Tensor::empty(out_shape);
  int64_t column = 0;
  for (const Tensor& p : parts) {
    const int64_t width = p.size(a) * inner;
    copy_blocks(p.data(), width, out.data() + column, out_width, outer, width);
    column += width;
  }
  return Tensor::make_result(out, "concat", parts, [parts, a](const Tensor&, const Tensor& g) {
    int64_t start = 0;
    for (const Tensor& p : parts) {
      const int64_t len = p.size(a);
      if (p.requires_grad()) p.accumulate_grad(slice(g, a, start, start + len));
      start += len;
    }
  });
}

// x [..., n, ...] -> [..., end - start, ...].
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end) {
  const Shape& shape = x.shape();
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t a = normalise_axis(axis, nd, "slice", shape);
  const int64_t extent = shape[static_cast<size_t>(a)];
  if (start < 0 || end < start || end > extent) {
    throw ShapeError("slice: [" + std::to_string(start) + ", " + std::to_string(end) +
                     ") outside axis " + std::to_string(a) + " of " + shape_str(shape));
  }
  const int64_t outer = dims_product(shape, 0, a);
  const int64_t inner = dims_product(shape, a + 1, nd);
  Shape out_shape = shape;
  out_shape[static_cast<size_t>(a)] = end - start;
  Tensor out;
  if (outer == 1) {
    // Contiguous block: a view into x's storage.
    out = x.detach();
    out.impl()->shape = out_shape;
    out.impl()->offset += start * inner;
  } else {
    out = Tensor::empty(out_shape);
    copy_blocks(x.data() + start * inner, extent * inner, out.data(), (end - start) * inner, outer,
                (end - start) * inner);
  }
  return Tensor::make_result(
      out, "slice", {x}, [x, start, end, outer, inner, extent](const Tensor&, const Tensor& g) {
        // The gradient is g placed back into a zero tensor of x's shape.
        Tensor gx = Tensor::zeros(x.shape());
        copy_blocks(g.data(), (end - start) * inner, gx.data() + start * inner, extent * inner,
                    outer, (end - start) * inner);
        x.accumulate_grad(gx);
      });
}

// ---------------------------------------------------------------- permute / transpose

namespace {

// out = x with dims reordered: out dim d is x dim order[d].
Tensor permute_forward(const Tensor& x, const std::vector<int64_t>& order) {
  const Shape& shape = x.shape();
  const size_t nd = shape.size();
  Shape out_shape(nd);
  std::vector<int64_t> x_strides(nd), strides(nd);
  int64_t stride = 1;
  for (size_t d = nd; d-- > 0;) {
    x_strides[d] = stride;
    stride *= shape[d];
  }
  for (size_t d = 0; d < nd; ++d) {
    out_shape[d] = shape[static_cast<size_t>(order[d])];
    strides[d] = x_strides[static_cast<size_t>(order[d])];
  }
  Tensor out = Tensor::empty(out_shape);
  if (out.numel() == 0) return out;
  const float* px = x.data();
  float* po = out.data();
  // Rows of the output's last dim; each row's start in x found by unravelling its index.
  const int64_t last = nd ? out_shape[nd - 1] : 1;
  const int64_t last_stride = nd ? strides[nd - 1] : 1;
  const int64_t rows = out.numel() / last;
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / last), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t rem = r, offset = 0;
      for (size_t d = nd - 1; d-- > 0;) {
        offset += (rem % out_shape[d]) * strides[d];
        rem /= out_shape[d];
      }
      float* dst = po + r * last;
      const float* src = px + offset;
      for (int64_t i = 0; i < last; ++i)
        dst[i] = src[i * last_stride];
    }
  });
  return out;
}

}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& order) {
  const int64_t nd = x.dim();
  std::vector<int64_t> resolved(order.size());
  std::vector<bool> seen(static_cast<size_t>(nd), false);
  bool valid = static_cast<int64_t>(order.size()) == nd;
  for (size_t d = 0; valid && d < order.size(); ++d) {
    const int64_t a = order[d] < 0 ? order[d] + nd : order[d];
    valid = a >= 0 && a < nd && !seen[static_cast<size_t>(a)];
    if (valid) seen[static_cast<size_t>(a)] = true;
    resolved[d] = a;
  }
  if (!valid) {
    std::string o = "(";
    for (size_t d = 0; d < order.size(); ++d)
      o += (d ? "," : "") + std::to_string(order[d]);
    throw ShapeError("permute: order " + o + ") invalid for " + shape_str(x.shape()));
  }
  Tensor out = permute_forward(x, resolved);
  return Tensor::make_result(out, "permute", {x}, [x, resolved](const Tensor&, const Tensor& g) {
    std::vector<int64_t> inverse(resolved.size());
    for (size_t d = 0; d < resolved.size(); ++d)
      inverse[static_cast<size_t>(resolved[d])] = static_cast<int64_t>(d);
    x.accumulate_grad(permute_forward(g, inverse));
  });
}

Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1) {
  const int64_t nd = x.dim();
  const int64_t a = normalise_axis(axis0, nd, "transpose", x.shape());
  const int64_t b = normalise_axis(axis1, nd, "transpose", x.shape());
  std::vector<int64_t> order(static_cast<size_t>(nd));
  for (int64_t d = 0; d < nd; ++d)
    order[static_cast<size_t>(d)] = d;
  std::swap(order[static_cast<size_t>(a)], order[static_cast<size_t>(b)]);
  return permute(x, order);
}

// ---------------------------------------------------------------- gather / scatter rows

// x [N, ...], index [M] -> [M, ...].
Tensor index_select(const Tensor& x, const IndexTensor& index) {
  if (x.dim() < 1) throw ShapeError("index_select: input must have a row dim, got []");
  check_index(index, x.size(0), "index_select");
  Shape out_shape = x.shape();
  out_shape[0] = index.numel();
  const int64_t width = x.size(0) == 0 ? 0 : x.numel() / x.size(0);
  Tensor out = Tensor::empty(out_shape);
  gather_rows(out.data(), x.data(), index, width);
  return Tensor::make_result(out, "index_select", {x},
                             [x, index, width](const Tensor&, const Tensor& g) {
                               Tensor gx = Tensor::zeros(x.shape());
                               scatter_add_rows(gx.data(), g.data(), index, width);
                               x.accumulate_grad(gx);
                             });
}

// base [N, ...], index [M], source [M, ...] -> [N, ...].
Tensor index_add(const Tensor& base, const IndexTensor& index, const Tensor& source) {
  if (base.dim() < 1 || source.dim() != base.dim() || source.size(0) != index.numel() ||
      !std::equal(base.shape().begin() + 1, base.shape().end(), source.shape().begin() + 1)) {
    throw ShapeError("index_add: base " + shape_str(base.shape()) + ", index " +
                     shape_str(index.shape) + ", source " + shape_str(source.shape()));
  }
  check_index(index, base.size(0), "index_add");
  const int64_t width = base.size(0) == 0 ? 0 : base.numel() / base.size(0);
  Tensor out = base.copy();
  scatter_add_rows(out.data(), source.data(), index, width);
  return Tensor::make_result(out, "index_add", {base, source},
                             [base, index, source, width](const Tensor&, const Tensor& g) {
                               if (base.requires_grad()) base.accumulate_grad(g);
                               if (source.requires_grad()) {
                                 Tensor gs = Tensor::empty(source.shape());
                                 gather_rows(gs.data(), g.data(), index, width);
                                 source.accumulate_grad(gs);
                               }
                             });
}

}  // namespace stgnn
