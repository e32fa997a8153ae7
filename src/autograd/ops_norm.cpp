// Dropout, batch normalisation and layer normalisation.
#include <cmath>
#include <memory>

#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace stgnn {

// ---------------------------------------------------------------- dropout

namespace {

// y = x * keep(i) / (1 - p), keep(i) a pure function of (seed, i): element i is dropped when
// counter_uniform(seed, i) < p (see dropout_mask_reference in the tests). counter_uniform is
// (h >> 40) * 2^-24 with h = mix64(seed ^ mix64(i)), so the test is done on the integer
// k = h >> 40 < 2^24 instead: k * 2^-24 < p  <=>  k < p * 2^24 (exact in float)  <=>
// k < ceil(p * 2^24). Same mask bit for bit, and an all-integer loop the compiler vectorises
// (the float compare through a function call did not: it was a quarter of a GLEVR step).
Tensor dropout_apply(const Tensor& x, float p, uint64_t seed) {
  Tensor out = Tensor::empty(x.shape());
  const float scale = 1.0f / (1.0f - p);
  const uint64_t drop_below = static_cast<uint64_t>(std::ceil(p * 16777216.0f));
  const float* px = x.data();
  float* po = out.data();
  parallel_for(x.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const uint64_t k = mix64(seed ^ mix64(static_cast<uint64_t>(i))) >> 40;
      const float kept = px[i] * scale;  // loaded unconditionally: a select, not a masked load
      po[i] = k < drop_below ? 0.0f : kept;
    }
  });
  return out;
}

}  // namespace

Tensor dropout(const Tensor& x, float p, bool training, uint64_t seed) {
  if (!(p >= 0.0f && p < 1.0f))
    throw ValueError("dropout: p = " + std::to_string(p) + " outside [0, 1)");
  if (!training || p == 0.0f) return x;
  Tensor out = dropout_apply(x, p, seed);
  return Tensor::make_result(out, "dropout", {x}, [x, p, seed](const Tensor&, const Tensor& g) {
    // The same mask applied to the gradient (regenerated from the seed, not stored).
    x.accumulate_grad(dropout_apply(g, p, seed));
  });
}

// ---------------------------------------------------------------- batch norm

namespace {

// x viewed as [N, C, S] (S = H * W, or 1 for [N, C]).
struct ChannelView {
  int64_t n, c, s;
};

ChannelView channel_view(const Tensor& x) {
  if (x.dim() != 2 && x.dim() != 4) {
    throw ShapeError("batch_norm: want [N,C] or [N,C,H,W], got " + shape_str(x.shape()));
  }
  return {x.size(0), x.size(1), x.dim() == 4 ? x.size(2) * x.size(3) : 1};
}

// Per-channel sum over N and S of f(value, channel), in double, threads owning channels.
template <typename Fn>
std::vector<double> channel_sums(const float* x, const ChannelView& v, const Fn& f) {
  std::vector<double> sums(static_cast<size_t>(v.c), 0.0);
  parallel_for(v.c, 1, [&](int64_t c0, int64_t c1) {
    if (v.s == 1) {  // [N, C]: a contiguous row per i, summed in the same order as below
      for (int64_t i = 0; i < v.n; ++i) {
        const float* row = x + i * v.c;
        for (int64_t c = c0; c < c1; ++c)
          sums[static_cast<size_t>(c)] += f(row[c], c);
      }
      return;
    }
    for (int64_t i = 0; i < v.n; ++i) {
      for (int64_t c = c0; c < c1; ++c) {
        const float* p = x + (i * v.c + c) * v.s;
        double s = 0.0;
        for (int64_t k = 0; k < v.s; ++k)
          s += f(p[k], c);
        sums[static_cast<size_t>(c)] += s;
      }
    }
  });
  return sums;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, bool training, float momentum, float eps) {
  const ChannelView v = channel_view(x);
  const auto check_channels = [&](const Tensor& t, const char* what) {
    if (t.defined() && (t.dim() != 1 || t.size(0) != v.c)) {
      throw ShapeError(std::string("batch_norm: ") + what + " " + shape_str(t.shape()) +
                       " for input " + shape_str(x.shape()));
    }
  };
  check_channels(weight, "weight");
  check_channels(bias, "bias");
  check_channels(running_mean, "running_mean");
  check_channels(running_var, "running_var");
  const int64_t count = v.n * v.s;
  // Per channel: mean and 1 / sqrt(var + eps) used to normalise.
  auto mean = std::make_shared<std::vector<float>>(static_cast<size_t>(v.c));
  auto inv_std = std::make_shared<std::vector<float>>(static_cast<size_t>(v.c));
  if (training) {
    if (count <= 1) {
      throw ShapeError("batch_norm: training needs more than 1 value per channel, got input " +
                       shape_str(x.shape()));
    }
    const std::vector<double> sums = channel_sums(x.data(), v, [](float a, int64_t) { return a; });
    std::vector<double> mu(static_cast<size_t>(v.c));
    for (int64_t c = 0; c < v.c; ++c)
      mu[static_cast<size_t>(c)] = sums[static_cast<size_t>(c)] / count;
    const std::vector<double> squares = channel_sums(x.data(), v, [&](float a, int64_t c) {
      const double d = a - mu[static_cast<size_t>(c)];
      return d * d;
    });
    for (int64_t c = 0; c < v.c; ++c) {
      const size_t k = static_cast<size_t>(c);
      const double var = squares[k] / count;
      (*mean)[k] = static_cast<float>(mu[k]);
      (*inv_std)[k] = static_cast<float>(1.0 / std::sqrt(var + eps));
      if (running_mean.defined()) {
        running_mean.data()[c] =
            (1.0f - momentum) * running_mean.data()[c] + momentum * static_cast<float>(mu[k]);
      }
      if (running_var.defined()) {
        const double unbiased = var * count / (count - 1);
        running_var.data()[c] =
            (1.0f - momentum) * running_var.data()[c] + momentum * static_cast<float>(unbiased);
      }
    }
  } else {
    if (!running_mean.defined() || !running_var.defined()) {
      throw ValueError("batch_norm: evaluation needs running statistics");
    }
    for (int64_t c = 0; c < v.c; ++c) {
      (*mean)[static_cast<size_t>(c)] = running_mean.data()[c];
      (*inv_std)[static_cast<size_t>(c)] = 1.0f / std::sqrt(running_var.data()[c] + eps);
    }
  }
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  float* po = out.data();
  const float* pw = weight.defined() ? weight.data() : nullptr;
  const float* pb = bias.defined() ? bias.data() : nullptr;
  // y = x * scale[c] + shift[c]; the per-channel factors once, not per row, and the channel
  // stepped along rather than taken modulo C per row (a division per element for [N, C]).
  std::vector<float> scale(static_cast<size_t>(v.c)), shift(static_cast<size_t>(v.c));
  for (int64_t c = 0; c < v.c; ++c) {
    const size_t k = static_cast<size_t>(c);
    scale[k] = (*inv_std)[k] * (pw ? pw[c] : 1.0f);
    shift[k] = (pb ? pb[c] : 0.0f) - (*mean)[k] * scale[k];
  }
  const float* pa = scale.data();
  const float* pc = shift.data();
  const int64_t per_sample = std::max<int64_t>(1, v.c * v.s);
  parallel_for(v.n, std::max<int64_t>(1, kElementwiseGrain / per_sample),
               [&](int64_t i0, int64_t i1) {
                 for (int64_t i = i0; i < i1; ++i) {
                   const float* in = px + i * v.c * v.s;
                   float* o = po + i * v.c * v.s;
                   if (v.s == 1) {  // [N, C]: one contiguous row, vectorised across channels
                     for (int64_t c = 0; c < v.c; ++c)
                       o[c] = in[c] * pa[c] + pc[c];
                     continue;
                   }
                   for (int64_t c = 0; c < v.c; ++c) {
                     for (int64_t k = 0; k < v.s; ++k)
                       o[c * v.s + k] = in[c * v.s + k] * pa[c] + pc[c];
                   }
                 }
               });
  return Tensor::make_result(
      out, "batch_norm", {x, weight, bias},
      [x, weight, bias, v, count, mean, inv_std, training](const Tensor&, const Tensor& g) {
        const float* px = x.data();
        const float* pg = g.data();
        const auto xhat = [&](float a, int64_t c) {
          return (a - (*mean)[static_cast<size_t>(c)]) * (*inv_std)[static_cast<size_t>(c)];
        };
        // Per channel: sum(g) and sum(g * xhat), the two reductions every gradient needs.
        std::vector<double> sum_g(static_cast<size_t>(v.c), 0.0),
            sum_gx(static_cast<size_t>(v.c), 0.0);
        parallel_for(v.c, 1, [&](int64_t c0, int64_t c1) {
          if (v.s == 1) {  // [N, C]: contiguous rows, same summation order as below
            for (int64_t i = 0; i < v.n; ++i) {
              for (int64_t c = c0; c < c1; ++c) {
                const int64_t at = i * v.c + c;
                sum_g[static_cast<size_t>(c)] += pg[at];
                sum_gx[static_cast<size_t>(c)] += pg[at] * xhat(px[at], c);
              }
            }
            return;
          }
          for (int64_t i = 0; i < v.n; ++i) {
            for (int64_t c = c0; c < c1; ++c) {
              const int64_t base = (i * v.c + c) * v.s;
              double sg = 0.0, sgx = 0.0;
              for (int64_t k = 0; k < v.s; ++k) {
                sg += pg[base + k];
                sgx += pg[base + k] * xhat(px[base + k], c);
              }
              sum_g[static_cast<size_t>(c)] += sg;
              sum_gx[static_cast<size_t>(c)] += sgx;
            }
          }
        });
        if (x.requires_grad()) {
          // Training: gx = w * inv_std * (g - mean(g) - xhat * mean(g * xhat));
          // eval (statistics are constants): gx = w * inv_std * g.
          Tensor gx = Tensor::empty(x.shape());
          float* p = gx.data();
          const float* pw = weight.defined() ? weight.data() : nullptr;
          std::vector<float> scale(static_cast<size_t>(v.c)), mg(static_cast<size_t>(v.c)),
              mgx(static_cast<size_t>(v.c));
          for (int64_t c = 0; c < v.c; ++c) {
            const size_t k = static_cast<size_t>(c);
            scale[k] = (*inv_std)[k] * (pw ? pw[c] : 1.0f);
            mg[k] = training ? static_cast<float>(sum_g[k] / count) : 0.0f;
            mgx[k] = training ? static_cast<float>(sum_gx[k] / count) : 0.0f;
          }
          const float *pa = scale.data(), *pm = mg.data(), *pmx = mgx.data();
          const float *pmean = mean->data(), *pinv = inv_std->data();
          const int64_t per_sample = std::max<int64_t>(1, v.c * v.s);
          parallel_for(v.n, std::max<int64_t>(1, kElementwiseGrain / per_sample),
                       [&](int64_t i0, int64_t i1) {
                         for (int64_t i = i0; i < i1; ++i) {
                           const int64_t base = i * v.c * v.s;
                           if (v.s == 1) {  // [N, C]: vectorised across channels
                             for (int64_t c = 0; c < v.c; ++c) {
                               const float xh = (px[base + c] - pmean[c]) * pinv[c];
                               p[base + c] = pa[c] * (pg[base + c] - pm[c] - xh * pmx[c]);
                             }
                             continue;
                           }
                           for (int64_t c = 0; c < v.c; ++c) {
                             for (int64_t k = 0; k < v.s; ++k) {
                               const int64_t at = base + c * v.s + k;
                               const float xh = (px[at] - pmean[c]) * pinv[c];
                               p[at] = pa[c] * (pg[at] - pm[c] - xh * pmx[c]);
                             }
                           }
                         }
                       });
          x.accumulate_grad(gx);
        }
        if (weight.defined() && weight.requires_grad()) {
          Tensor gw = Tensor::empty({v.c});
          for (int64_t c = 0; c < v.c; ++c)
            gw.data()[c] = static_cast<float>(sum_gx[static_cast<size_t>(c)]);
          weight.accumulate_grad(gw);
        }
        if (bias.defined() && bias.requires_grad()) {
          Tensor gb = Tensor::empty({v.c});
          for (int64_t c = 0; c < v.c; ++c)
            gb.data()[c] = static_cast<float>(sum_g[static_cast<size_t>(c)]);
          bias.accumulate_grad(gb);
        }
      });
}

// ---------------------------------------------------------------- layer norm

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  if (x.dim() < 1) throw ShapeError("layer_norm: input must have a feature dim, got []");
  const int64_t f = x.size(-1);
  for (const Tensor* t : {&weight, &bias}) {
    if (t->defined() && (t->dim() != 1 || t->size(0) != f)) {
      throw ShapeError("layer_norm: parameter " + shape_str(t->shape()) + " for input " +
                       shape_str(x.shape()));
    }
  }
  const int64_t rows = f == 0 ? 0 : x.numel() / f;
  // xhat (normalised input) and 1/std per row are kept for backward.
  auto xhat = std::make_shared<Tensor>(Tensor::empty(x.shape()));
  auto inv_std = std::make_shared<std::vector<float>>(static_cast<size_t>(rows));
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  float* ph = xhat->data();
  float* po = out.data();
  const float* pw = weight.defined() ? weight.data() : nullptr;
  const float* pb = bias.defined() ? bias.data() : nullptr;
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, f)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const float* in = px + r * f;
                   double mu = 0.0;
                   for (int64_t k = 0; k < f; ++k)
                     mu += in[k];
                   mu /= f;
                   double var = 0.0;
                   for (int64_t k = 0; k < f; ++k)
                     var += (in[k] - mu) * (in[k] - mu);
                   var /= f;
                   const float is = static_cast<float>(1.0 / std::sqrt(var + eps));
                   (*inv_std)[static_cast<size_t>(r)] = is;
                   for (int64_t k = 0; k < f; ++k) {
                     const float h = static_cast<float>(in[k] - mu) * is;
                     ph[r * f + k] = h;
                     po[r * f + k] = h * (pw ? pw[k] : 1.0f) + (pb ? pb[k] : 0.0f);
                   }
                 }
               });
  return Tensor::make_result(
      out, "layer_norm", {x, weight, bias},
      [x, weight, bias, xhat, inv_std, rows, f](const Tensor&, const Tensor& g) {
        const float* pg = g.data();
        const float* ph = xhat->data();
        const float* pw = weight.defined() ? weight.data() : nullptr;
        if (x.requires_grad()) {
          // gx = inv_std * (gh - mean(gh) - xhat * mean(gh * xhat)), gh = g * w.
          Tensor gx = Tensor::empty(x.shape());
          float* p = gx.data();
          parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, f)),
                       [&](int64_t r0, int64_t r1) {
                         for (int64_t r = r0; r < r1; ++r) {
                           double mg = 0.0, mgh = 0.0;
                           for (int64_t k = 0; k < f; ++k) {
                             const float gh = pg[r * f + k] * (pw ? pw[k] : 1.0f);
                             mg += gh;
                             mgh += gh * ph[r * f + k];
                           }
                           mg /= f;
                           mgh /= f;
                           const float is = (*inv_std)[static_cast<size_t>(r)];
                           for (int64_t k = 0; k < f; ++k) {
                             const float gh = pg[r * f + k] * (pw ? pw[k] : 1.0f);
                             p[r * f + k] = is * (gh - static_cast<float>(mg) -
                                                  ph[r * f + k] * static_cast<float>(mgh));
                           }
                         }
                       });
          x.accumulate_grad(gx);
        }
        if (weight.defined() && weight.requires_grad()) {
          Tensor gh = Tensor::empty(x.shape());
          float* p = gh.data();
          for (int64_t i = 0; i < gh.numel(); ++i)
            p[i] = pg[i] * ph[i];
          weight.accumulate_grad(sum_to_shape(gh.reshape({rows, f}), weight.shape()));
        }
        if (bias.defined() && bias.requires_grad()) {
          bias.accumulate_grad(sum_to_shape(g.reshape({rows, f}), bias.shape()));
        }
      });
}

}  // namespace stgnn
