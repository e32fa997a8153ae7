// Convolution (im2col + cblas_sgemm) and pooling on NCHW maps.
//
// Parallel strategy: images are independent, so threads take contiguous ranges of images and
// each runs im2col and a single-threaded sgemm per image (OpenBLAS's OpenMP build runs
// single-threaded inside our parallel region), with a per-thread im2col buffer. The weight
// gradient is a sum over images: the images are cut into a fixed number of contiguous groups
// (kWeightGradGroups, whatever the thread count), each group accumulates its own partial in
// image order, and the partials are added in group order, so the result is bit-identical for
// any thread count (a thread owns whole groups).
#include <cblas.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace stgnn {

namespace {

struct ConvGeometry {
  int64_t n, c, h, w;  // input
  int64_t o, kh, kw;   // weight
  int64_t stride, padding;
  int64_t oh, ow;  // output
  int64_t patch() const { return c * kh * kw; }
  int64_t pixels() const { return oh * ow; }
};

// col [C*KH*KW, OH*OW] from one image x [C, H, W] (zeros where the window hangs off the map).
void im2col(const float* x, const ConvGeometry& g, float* col) {
  for (int64_t ch = 0; ch < g.c; ++ch) {
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        float* dst = col + ((ch * g.kh + ki) * g.kw + kj) * g.pixels();
        for (int64_t r = 0; r < g.oh; ++r) {
          const int64_t y = r * g.stride + ki - g.padding;
          float* row = dst + r * g.ow;
          if (y < 0 || y >= g.h) {
            std::fill(row, row + g.ow, 0.0f);
            continue;
          }
          const float* src = x + (ch * g.h + y) * g.w;
          if (g.stride == 1 && g.padding == 0) {
            std::memcpy(row, src + kj, static_cast<size_t>(g.ow) * sizeof(float));
            continue;
          }
          for (int64_t q = 0; q < g.ow; ++q) {
            const int64_t xcol = q * g.stride + kj - g.padding;
            row[q] = (xcol >= 0 && xcol < g.w) ? src[xcol] : 0.0f;
          }
        }
      }
    }
  }
}

// The adjoint of im2col: x [C, H, W] += the patches in col [C*KH*KW, OH*OW].
void col2im_add(const float* col, const ConvGeometry& g, float* x) {
  for (int64_t ch = 0; ch < g.c; ++ch) {
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const float* src = col + ((ch * g.kh + ki) * g.kw + kj) * g.pixels();
        for (int64_t r = 0; r < g.oh; ++r) {
          const int64_t y = r * g.stride + ki - g.padding;
          if (y < 0 || y >= g.h) continue;
          float* dst = x + (ch * g.h + y) * g.w;
          const float* row = src + r * g.ow;
          for (int64_t q = 0; q < g.ow; ++q) {
            const int64_t xcol = q * g.stride + kj - g.padding;
            if (xcol >= 0 && xcol < g.w) dst[xcol] += row[q];
          }
        }
      }
    }
  }
}

// Direct kernels for thin patches (C*KH*KW small, stride 1, no padding; e.g. the 1-channel
// first layer), where im2col + sgemm with an inner dimension of 9 runs at a few GFLOP/s.
// The trick: give the output plane the input's row stride W (OW + KW - 1 columns, the extra
// ones garbage) so that every tap becomes ONE long multiply-add over the whole plane,
// out[p] += w * x[p + ki * W + kj], instead of OH short rows; valid columns are copied out
// at the end. The loop stops at (OH - 1) * W + OW, so reads stay inside the image.
bool use_direct(const ConvGeometry& g) {
  return g.stride == 1 && g.padding == 0 && g.patch() <= 27;
}

// y_i [O, OH, OW] = bias + W * x_i for one image x_i [C, H, W]; wide [OH * W] scratch.
void direct_forward(const float* x, const float* w, const float* bias, const ConvGeometry& g,
                    float* y, std::vector<float>& wide) {
  const int64_t span = (g.oh - 1) * g.w + g.ow;
  wide.resize(static_cast<size_t>(g.oh * g.w));
  float* acc = wide.data();
  for (int64_t o = 0; o < g.o; ++o) {
    std::fill(acc, acc + span, bias ? bias[o] : 0.0f);
    for (int64_t ch = 0; ch < g.c; ++ch) {
      for (int64_t ki = 0; ki < g.kh; ++ki) {
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          const float tap = w[((o * g.c + ch) * g.kh + ki) * g.kw + kj];
          const float* in = x + ch * g.h * g.w + ki * g.w + kj;
#pragma omp simd
          for (int64_t p = 0; p < span; ++p)
            acc[p] += tap * in[p];
        }
      }
    }
    float* plane = y + o * g.pixels();
    for (int64_t r = 0; r < g.oh; ++r)
      std::memcpy(plane + r * g.ow, acc + r * g.w, static_cast<size_t>(g.ow) * sizeof(float));
  }
}

// dW [O, C, KH, KW] += sum over pixels of dy_i[o] * shifted x_i, for one image: dy's plane is
// spread to row stride W with zeros in the extra columns, then each tap is one long dot
// product.
void direct_weight_grad(const float* x, const float* dy, const ConvGeometry& g, float* dw,
                        std::vector<float>& wide) {
  const int64_t span = (g.oh - 1) * g.w + g.ow;
  wide.assign(static_cast<size_t>(g.oh * g.w), 0.0f);
  float* grad = wide.data();
  for (int64_t o = 0; o < g.o; ++o) {
    const float* plane = dy + o * g.pixels();
    for (int64_t r = 0; r < g.oh; ++r)
      std::memcpy(grad + r * g.w, plane + r * g.ow, static_cast<size_t>(g.ow) * sizeof(float));
    for (int64_t ch = 0; ch < g.c; ++ch) {
      for (int64_t ki = 0; ki < g.kh; ++ki) {
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          const float* in = x + ch * g.h * g.w + ki * g.w + kj;
          float total = 0.0f;
#pragma omp simd reduction(+ : total)
          for (int64_t p = 0; p < span; ++p)
            total += grad[p] * in[p];
          dw[((o * g.c + ch) * g.kh + ki) * g.kw + kj] += total;
        }
      }
    }
  }
}

// Image groups of the weight gradient (see the top of the file). More groups let more threads
// share the weight gradient; each costs one weight-sized partial (4.7 MB at the paper's
// 512 -> 512 layer, so 16 of them stay small beside the activations).
constexpr int64_t kWeightGradGroups = 16;

// Runs fn(thread, image_begin, image_end) with threads owning contiguous image ranges.
template <typename Fn>
void for_image_ranges(int64_t images, const Fn& fn) {
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>(omp_in_parallel() ? 1 : omp_get_max_threads(), images));
#pragma omp parallel num_threads(static_cast <int>(threads))
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    fn(t, images * t / nt, images * (t + 1) / nt);
  }
}

}  // namespace

// x [N, C, H, W], weight [O, C, KH, KW], bias [O] -> [N, O, OH, OW].
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding) {
  if (x.dim() != 4 || weight.dim() != 4 || x.size(1) != weight.size(1) ||
      (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0)))) {
    throw ShapeError("conv2d: input " + shape_str(x.shape()) + ", weight " +
                     shape_str(weight.shape()) +
                     (bias.defined() ? ", bias " + shape_str(bias.shape()) : ""));
  }
  if (stride < 1 || padding < 0) {
    throw ValueError("conv2d: stride " + std::to_string(stride) + ", padding " +
                     std::to_string(padding));
  }
  ConvGeometry g{
      x.size(0), x.size(1), x.size(2), x.size(3), weight.size(0), weight.size(2), weight.size(3),
      stride,    padding,   0,         0};
  g.oh = (g.h + 2 * padding - g.kh) / stride + 1;
  g.ow = (g.w + 2 * padding - g.kw) / stride + 1;
  if (g.h + 2 * padding < g.kh || g.w + 2 * padding < g.kw) {
    throw ShapeError("conv2d: kernel " + shape_str(weight.shape()) + " larger than padded input " +
                     shape_str(x.shape()));
  }
  Tensor out = Tensor::empty({g.n, g.o, g.oh, g.ow});
  const float* px = x.data();
  const float* pw = weight.data();
  const float* pb = bias.defined() ? bias.data() : nullptr;
  float* po = out.data();
  const bool direct = use_direct(g);
  for_image_ranges(g.n, [&](int64_t, int64_t begin, int64_t end) {
    std::vector<float> wide;
    if (direct) {
      for (int64_t i = begin; i < end; ++i) {
        direct_forward(px + i * g.c * g.h * g.w, pw, pb, g, po + i * g.o * g.pixels(), wide);
      }
      return;
    }
    std::vector<float> col(static_cast<size_t>(g.patch() * g.pixels()));
    for (int64_t i = begin; i < end; ++i) {
      float* dst = po + i * g.o * g.pixels();
      if (pb) {
        for (int64_t oc = 0; oc < g.o; ++oc)
          std::fill(dst + oc * g.pixels(), dst + (oc + 1) * g.pixels(), pb[oc]);
      }
      im2col(px + i * g.c * g.h * g.w, g, col.data());
      // out_i [O, P] = W [O, CKK] x col [CKK, P]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(g.o),
                  static_cast<blasint>(g.pixels()), static_cast<blasint>(g.patch()), 1.0f, pw,
                  static_cast<blasint>(g.patch()), col.data(), static_cast<blasint>(g.pixels()),
                  pb ? 1.0f : 0.0f, dst, static_cast<blasint>(g.pixels()));
    }
  });
  return Tensor::make_result(
      out, "conv2d", {x, weight, bias}, [x, weight, bias, g](const Tensor&, const Tensor& grad) {
        const float* px = x.data();
        const float* pw = weight.data();
        const float* pg = grad.data();
        const bool want_x = x.requires_grad();
        const bool want_w = weight.requires_grad();
        Tensor gx = want_x ? Tensor::zeros(x.shape()) : Tensor();
        // One weight-gradient partial per image group (group k: images [n k / G, n (k+1) / G)),
        // summed in group order afterwards.
        const int64_t groups = std::min<int64_t>(kWeightGradGroups, g.n);
        std::vector<std::vector<float>> partial_w(want_w ? static_cast<size_t>(groups) : 0);
        for_image_ranges(groups, [&](int64_t, int64_t group_begin, int64_t group_end) {
          std::vector<float> col(static_cast<size_t>(g.patch() * g.pixels()));
          const bool direct = use_direct(g);
          for (int64_t group = group_begin; group < group_end; ++group) {
            float* dw = nullptr;
            if (want_w) {
              std::vector<float>& partial = partial_w[static_cast<size_t>(group)];
              partial.assign(static_cast<size_t>(g.o * g.patch()), 0.0f);
              dw = partial.data();
            }
            for (int64_t i = g.n * group / groups; i < g.n * (group + 1) / groups; ++i) {
              const float* gi = pg + i * g.o * g.pixels();
              if (want_w && direct) {
                direct_weight_grad(px + i * g.c * g.h * g.w, gi, g, dw, col);
              } else if (want_w) {
                im2col(px + i * g.c * g.h * g.w, g, col.data());
                // dW [O, CKK] += dout_i [O, P] x col^T [P, CKK]
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(g.o),
                            static_cast<blasint>(g.patch()), static_cast<blasint>(g.pixels()), 1.0f,
                            gi, static_cast<blasint>(g.pixels()), col.data(),
                            static_cast<blasint>(g.pixels()), 1.0f, dw,
                            static_cast<blasint>(g.patch()));
              }
              if (want_x) {
                // dcol [CKK, P] = W^T [CKK, O] x dout_i [O, P], then scattered back to the image.
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
                            static_cast<blasint>(g.patch()), static_cast<blasint>(g.pixels()),
                            static_cast<blasint>(g.o), 1.0f, pw, static_cast<blasint>(g.patch()),
                            gi, static_cast<blasint>(g.pixels()), 0.0f, col.data(),
                            static_cast<blasint>(g.pixels()));
                col2im_add(col.data(), g, gx.data() + i * g.c * g.h * g.w);
              }
            }
          }
        });
        if (want_x) x.accumulate_grad(gx);
        if (want_w) {
          Tensor gw = Tensor::zeros(weight.shape());
          float* p = gw.data();
          for (const auto& part : partial_w) {
            if (part.empty()) continue;
            for (size_t k = 0; k < part.size(); ++k)
              p[k] += part[k];
          }
          weight.accumulate_grad(gw);
        }
        if (bias.defined() && bias.requires_grad()) {
          // db[o] = sum over images and pixels of dout.
          Tensor gb = Tensor::zeros(bias.shape());
          parallel_for(g.o, 1, [&](int64_t o0, int64_t o1) {
            for (int64_t oc = o0; oc < o1; ++oc) {
              double s = 0.0;
              for (int64_t i = 0; i < g.n; ++i) {
                // A vectorised float sum per plane, accumulated across planes in double.
                const float* row = pg + (i * g.o + oc) * g.pixels();
                float plane = 0.0f;
#pragma omp simd reduction(+ : plane)
                for (int64_t k = 0; k < g.pixels(); ++k)
                  plane += row[k];
                s += plane;
              }
              gb.data()[oc] = static_cast<float>(s);
            }
          });
          bias.accumulate_grad(gb);
        }
      });
}

// ---------------------------------------------------------------- pooling

namespace {

struct PoolGeometry {
  int64_t planes, h, w, k, stride, oh, ow;
};

PoolGeometry pool_geometry(const Tensor& x, int64_t kernel, int64_t stride, const char* op) {
  if (x.dim() != 4)
    throw ShapeError(std::string(op) + ": want [N,C,H,W], got " + shape_str(x.shape()));
  if (stride == 0) stride = kernel;
  if (kernel < 1 || stride < 1 || kernel > x.size(2) || kernel > x.size(3)) {
    throw ShapeError(std::string(op) + ": kernel " + std::to_string(kernel) + " stride " +
                     std::to_string(stride) + " for input " + shape_str(x.shape()));
  }
  return {x.size(0) * x.size(1),
          x.size(2),
          x.size(3),
          kernel,
          stride,
          (x.size(2) - kernel) / stride + 1,
          (x.size(3) - kernel) / stride + 1};
}

}  // namespace

// x [N, C, H, W] -> [N, C, OH, OW], the max of each window; gradient to the first maximum.
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride) {
  const PoolGeometry p = pool_geometry(x, kernel, stride, "max_pool2d");
  Tensor out = Tensor::empty({x.size(0), x.size(1), p.oh, p.ow});
  // Flat input offset (within the plane) of each output's maximum, kept for backward.
  auto arg = std::make_shared<std::vector<int32_t>>(static_cast<size_t>(out.numel()));
  const float* px = x.data();
  float* po = out.data();
  parallel_for(p.planes, std::max<int64_t>(1, kElementwiseGrain / (p.h * p.w)),
               [&](int64_t b, int64_t e) {
                 for (int64_t plane = b; plane < e; ++plane) {
                   const float* in = px + plane * p.h * p.w;
                   for (int64_t r = 0; r < p.oh; ++r) {
                     for (int64_t c = 0; c < p.ow; ++c) {
                       int64_t best = r * p.stride * p.w + c * p.stride;
                       for (int64_t i = 0; i < p.k; ++i) {
                         for (int64_t j = 0; j < p.k; ++j) {
                           const int64_t at = (r * p.stride + i) * p.w + c * p.stride + j;
                           if (in[at] > in[best]) best = at;
                         }
                       }
                       const int64_t o = (plane * p.oh + r) * p.ow + c;
                       po[o] = in[best];
                       (*arg)[static_cast<size_t>(o)] = static_cast<int32_t>(best);
                     }
                   }
                 }
               });
  return Tensor::make_result(out, "max_pool2d", {x}, [x, p, arg](const Tensor&, const Tensor& g) {
    Tensor gx = Tensor::zeros(x.shape());
    float* pgx = gx.data();
    const float* pg = g.data();
    const int64_t per_plane = p.oh * p.ow;
    parallel_for(p.planes, std::max<int64_t>(1, kElementwiseGrain / (p.h * p.w)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t plane = b; plane < e; ++plane) {
                     for (int64_t k = 0; k < per_plane; ++k) {
                       const int64_t o = plane * per_plane + k;
                       pgx[plane * p.h * p.w + (*arg)[static_cast<size_t>(o)]] += pg[o];
                     }
                   }
                 });
    x.accumulate_grad(gx);
  });
}

// x [N, C, H, W] -> [N, C, OH, OW], the mean of each window.
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride) {
  const PoolGeometry p = pool_geometry(x, kernel, stride, "avg_pool2d");
  Tensor out = Tensor::empty({x.size(0), x.size(1), p.oh, p.ow});
  const float inv = 1.0f / static_cast<float>(p.k * p.k);
  const float* px = x.data();
  float* po = out.data();
  parallel_for(p.planes, std::max<int64_t>(1, kElementwiseGrain / (p.h * p.w)),
               [&](int64_t b, int64_t e) {
                 for (int64_t plane = b; plane < e; ++plane) {
                   const float* in = px + plane * p.h * p.w;
                   for (int64_t r = 0; r < p.oh; ++r) {
                     for (int64_t c = 0; c < p.ow; ++c) {
                       float s = 0.0f;
                       for (int64_t i = 0; i < p.k; ++i) {
                         for (int64_t j = 0; j < p.k; ++j)
                           s += in[(r * p.stride + i) * p.w + c * p.stride + j];
                       }
                       po[(plane * p.oh + r) * p.ow + c] = s * inv;
                     }
                   }
                 }
               });
  return Tensor::make_result(out, "avg_pool2d", {x}, [x, p, inv](const Tensor&, const Tensor& g) {
    Tensor gx = Tensor::zeros(x.shape());
    float* pgx = gx.data();
    const float* pg = g.data();
    parallel_for(p.planes, std::max<int64_t>(1, kElementwiseGrain / (p.h * p.w)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t plane = b; plane < e; ++plane) {
                     float* dst = pgx + plane * p.h * p.w;
                     for (int64_t r = 0; r < p.oh; ++r) {
                       for (int64_t c = 0; c < p.ow; ++c) {
                         const float v = pg[(plane * p.oh + r) * p.ow + c] * inv;
                         for (int64_t i = 0; i < p.k; ++i) {
                           for (int64_t j = 0; j < p.k; ++j)
                             dst[(r * p.stride + i) * p.w + c * p.stride + j] += v;
                         }
                       }
                     }
                   }
                 });
    x.accumulate_grad(gx);
  });
}

// ---------------------------------------------------------------- area pooling onto cells

std::vector<Cell> grid_cells(int64_t rows, int64_t cols, int64_t height, int64_t width) {
  if (rows < 1 || cols < 1 || height < 1 || width < 1) {
    throw ValueError("grid_cells: " + std::to_string(rows) + "x" + std::to_string(cols) +
                     " grid over " + std::to_string(height) + "x" + std::to_string(width) + " map");
  }
  std::vector<Cell> cells;
  const float ch = static_cast<float>(height) / rows, cw = static_cast<float>(width) / cols;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      cells.push_back({i * ch, j * cw, (i + 1) * ch, (j + 1) * cw});
    }
  }
  return cells;
}

namespace {

// Per cell, the pixels it touches and each pixel's share (overlap area / cell area).
struct PoolWeights {
  std::vector<std::vector<std::pair<int32_t, float>>> taps;
};

PoolWeights area_weights(const std::vector<Cell>& cells, int64_t h, int64_t w) {
  PoolWeights pw;
  for (const Cell& cell : cells) {
    if (!(cell.top >= 0 && cell.left >= 0 && cell.bottom <= h && cell.right <= w &&
          cell.bottom > cell.top && cell.right > cell.left)) {
      throw ValueError("area_pool: cell [" + std::to_string(cell.top) + "," +
                       std::to_string(cell.bottom) + ")x[" + std::to_string(cell.left) + "," +
                       std::to_string(cell.right) + ") outside the " + std::to_string(h) + "x" +
                       std::to_string(w) + " map");
    }
    std::vector<std::pair<int32_t, float>> taps;
    const float area = (cell.bottom - cell.top) * (cell.right - cell.left);
    for (int64_t r = static_cast<int64_t>(std::floor(cell.top)); r < std::ceil(cell.bottom); ++r) {
      const float dy = std::min<float>(cell.bottom, r + 1) - std::max<float>(cell.top, r);
      for (int64_t c = static_cast<int64_t>(std::floor(cell.left)); c < std::ceil(cell.right);
           ++c) {
        const float dx = std::min<float>(cell.right, c + 1) - std::max<float>(cell.left, c);
        if (dy > 0 && dx > 0) taps.emplace_back(static_cast<int32_t>(r * w + c), dy * dx / area);
      }
    }
    pw.taps.push_back(std::move(taps));
  }
  return pw;
}

}  // namespace

// x [N, C, H, W] -> [N, K, C], K = cells.size().
Tensor area_pool(const Tensor& x, const std::vector<Cell>& cells) {
  if (x.dim() != 4) throw ShapeError("area_pool: want [N,C,H,W], got " + shape_str(x.shape()));
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t k = static_cast<int64_t>(cells.size());
  auto weights = std::make_shared<PoolWeights>(area_weights(cells, h, w));
  Tensor out = Tensor::empty({n, k, c});
  const float* px = x.data();
  float* po = out.data();
  parallel_for(n * c, std::max<int64_t>(1, kElementwiseGrain / (h * w)), [&](int64_t b, int64_t e) {
    for (int64_t plane = b; plane < e; ++plane) {
      const int64_t i = plane / c, ch = plane % c;
      const float* in = px + plane * h * w;
      for (int64_t cell = 0; cell < k; ++cell) {
        float s = 0.0f;
        for (const auto& [pixel, share] : weights->taps[static_cast<size_t>(cell)])
          s += share * in[pixel];
        po[(i * k + cell) * c + ch] = s;
      }
    }
  });
  return Tensor::make_result(
      out, "area_pool", {x}, [x, weights, n, c, h, w, k](const Tensor&, const Tensor& g) {
        Tensor gx = Tensor::zeros(x.shape());
        float* pgx = gx.data();
        const float* pg = g.data();
        parallel_for(
            n * c, std::max<int64_t>(1, kElementwiseGrain / (h * w)), [&](int64_t b, int64_t e) {
              for (int64_t plane = b; plane < e; ++plane) {
                const int64_t i = plane / c, ch = plane % c;
                float* dst = pgx + plane * h * w;
                for (int64_t cell = 0; cell < k; ++cell) {
                  const float v = pg[(i * k + cell) * c + ch];
                  for (const auto& [pixel, share] : weights->taps[static_cast<size_t>(cell)])
                    dst[pixel] += share * v;
                }
              }
            });
        x.accumulate_grad(gx);
      });
}

}  // namespace stgnn
