// GRU and LSTM: fast kernels (sgemm + fused gate kernels), scalar references, autograd ops and
// modules. The kernels' plan is in recurrent.h; here, per step t of T over a batch of B rows:
//
//   forward   hp = h_{t-1} W_hh^T                     one sgemm [B, H] x [H, G*H]
//             gates(xp_t + b_ih, hp + b_hh, h_{t-1})  one fused kernel -> h_t (c_t), saved_t
//   backward  dG_t = gate_backward(dh_t, saved_t)     one fused kernel
//             dh_{t-1} (+)= dGh_t W_hh                one sgemm [B, G*H] x [G*H, H]
//
// with xp = X W_ih^T for all steps in one sgemm before the loop, and dX = dGx W_ih,
// dW_ih = dGx^T X, dW_hh = dGh^T [h_0; ..; h_{T-1}] one sgemm each after it (hs stores h_0
// in front of h_1 .. h_T precisely so that the stacked previous states need no copy).
#include "nn/recurrent.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/blas.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace stgnn {

namespace rnn {

namespace {

// exp(x) written so that GCC vectorises it inside `omp simd` loops (a libm call keeps such a
// loop scalar unless -ffast-math enables libmvec). Reduction x = n ln2 + r with |r| <= ln2 / 2
// (ln2 split in two so that n * high part is exact), a degree-7 Taylor polynomial for e^r
// (truncation error below 1e-8 relative), and 2^n assembled in the exponent bits. x is clamped
// to [-87, 88] so that 2^n stays a normal float; a NaN fails both comparisons and propagates.
// Only unsigned integer arithmetic touches the bits, so no input is undefined behaviour.
[[gnu::always_inline]] inline float exp_simd(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // Adding 1.5 * 2^23 rounds x log2(e) to an integer (the float spacing there is 1) and leaves
  // that integer in the low mantissa bits.
  constexpr float kShift = 12582912.0f;
  const float shifted = x * 1.44269504088896341f + kShift;
  const float n = shifted - kShift;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  const uint32_t scale_bits = (bits - 0x4B400000u + 127u) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

[[gnu::always_inline]] inline float sigmoid_simd(float x) {
  return 1.0f / (1.0f + exp_simd(-x));
}

// tanh(x). For |x| >= 0.625, 1 - 2 / (e^{2|x|} + 1) with the sign restored; closer to zero
// that form loses relative accuracy to cancellation, so an odd polynomial x + x^3 P(x^2) takes
// over, P fitted by least squares (relative weight, Chebyshev nodes) on [0, 0.625^2]: at most
// 1.4 ulp there, 3 ulp on the exponential branch.
[[gnu::always_inline]] inline float tanh_simd(float x) {
  const float a = x < 0.0f ? -x : x;
  const float z = x * x;
  float p = -0.005691985599696636f;
  p = p * z + 0.020626291632652283f;
  p = p * z - 0.05373531952500343f;
  p = p * z + 0.13331381976604462f;
  p = p * z - 0.3333328068256378f;
  const float small = x + x * z * p;
  const float large = 1.0f - 2.0f / (exp_simd(2.0f * a) + 1.0f);
  const float signed_large = x < 0.0f ? -large : large;
  return a < 0.625f ? small : signed_large;
}

// Batch rows per thread in a gate kernel: enough elements to pay for waking a thread.
int64_t row_grain(int64_t floats_per_row) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, floats_per_row));
}

// out [cols] = column sums of m [rows, cols]. Threads own column ranges: no races, and each
// column is summed in row order whatever the thread count.
void column_sums(const float* m, int64_t rows, int64_t cols, float* out) {
  parallel_for(cols, std::max<int64_t>(16, kElementwiseGrain / std::max<int64_t>(1, rows)),
               [&](int64_t c0, int64_t c1) {
                 std::fill(out + c0, out + c1, 0.0f);
                 for (int64_t r = 0; r < rows; ++r) {
                   const float* row = m + r * cols;
#pragma omp simd
                   for (int64_t c = c0; c < c1; ++c)
                     out[c] += row[c];
                 }
               });
}

// ---- fused gate kernels, one step over batch rows. Rows are independent (each reads and
// writes only its own row of every buffer), so parallel_for may split them across threads.

// GRU forward: xp, hp [B, 3H] = x W_ih^T, h W_hh^T (no biases); b_ih, b_hh [3H];
// hprev, hout [B, H]; saved [B, 4H] <- r, z, n, W_hn h + b_hn.
void gru_gates_forward(int64_t batch, int64_t H, const float* xp, const float* hp,
                       const float* b_ih, const float* b_hh, const float* hprev, float* hout,
                       float* saved) {
  parallel_for(batch, row_grain(7 * H), [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; ++b) {
      const float* x_row = xp + b * 3 * H;
      const float* h_row = hp + b * 3 * H;
      const float* h_prev = hprev + b * H;
      float* h_out = hout + b * H;
      float* s = saved + b * 4 * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float r = sigmoid_simd(x_row[j] + b_ih[j] + h_row[j] + b_hh[j]);
        const float z = sigmoid_simd(x_row[H + j] + b_ih[H + j] + h_row[H + j] + b_hh[H + j]);
        const float hn = h_row[2 * H + j] + b_hh[2 * H + j];
        const float n = tanh_simd(x_row[2 * H + j] + b_ih[2 * H + j] + r * hn);
        h_out[j] = n + z * (h_prev[j] - n);
        s[j] = r;
        s[H + j] = z;
        s[2 * H + j] = n;
        s[3 * H + j] = hn;
      }
    }
  });
}

// GRU backward: grad_h [B, H] = dL/dh_t from the outputs; carry [B, H] holds dL/dh_t from
// later steps on entry and the direct part z * dh of dL/dh_{t-1} on exit; saved [B, 4H];
// hprev [B, H]. Writes dgx [B, 3H] (pre-activation gradients, the input side) and dgh
// [B, 3H] (the hidden side, whose n block is scaled by r).
void gru_gates_backward(int64_t batch, int64_t H, const float* grad_h, float* carry,
                        const float* saved, const float* hprev, float* dgx, float* dgh) {
  parallel_for(batch, row_grain(12 * H), [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; ++b) {
      const float* gh = grad_h + b * H;
      float* c = carry + b * H;
      const float* s = saved + b * 4 * H;
      const float* h_prev = hprev + b * H;
      float* gx = dgx + b * 3 * H;
      float* gg = dgh + b * 3 * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float r = s[j], z = s[H + j], n = s[2 * H + j], hn = s[3 * H + j];
        const float dh = gh[j] + c[j];
        c[j] = dh * z;
        const float dn = dh * (1.0f - z) * (1.0f - n * n);
        const float dr = dn * hn * r * (1.0f - r);
        const float dz = dh * (h_prev[j] - n) * z * (1.0f - z);
        gx[j] = dr;
        gx[H + j] = dz;
        gx[2 * H + j] = dn;
        gg[j] = dr;
        gg[H + j] = dz;
        gg[2 * H + j] = dn * r;
      }
    }
  });
}

// LSTM forward: xp, hp [B, 4H]; biases [4H]; cprev, hout, cout [B, H];
// saved [B, 5H] <- i, f, g, o, tanh(c').
void lstm_gates_forward(int64_t batch, int64_t H, const float* xp, const float* hp,
                        const float* b_ih, const float* b_hh, const float* cprev, float* hout,
                        float* cout, float* saved) {
  parallel_for(batch, row_grain(11 * H), [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; ++b) {
      const float* x_row = xp + b * 4 * H;
      const float* h_row = hp + b * 4 * H;
      const float* c_prev = cprev + b * H;
      float* h_out = hout + b * H;
      float* c_out = cout + b * H;
      float* s = saved + b * 5 * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = sigmoid_simd(x_row[j] + b_ih[j] + h_row[j] + b_hh[j]);
        const float f = sigmoid_simd(x_row[H + j] + b_ih[H + j] + h_row[H + j] + b_hh[H + j]);
        const float g =
            tanh_simd(x_row[2 * H + j] + b_ih[2 * H + j] + h_row[2 * H + j] + b_hh[2 * H + j]);
        const float o =
            sigmoid_simd(x_row[3 * H + j] + b_ih[3 * H + j] + h_row[3 * H + j] + b_hh[3 * H + j]);
        const float c = f * c_prev[j] + i * g;
        const float tc = tanh_simd(c);
        c_out[j] = c;
        h_out[j] = o * tc;
        s[j] = i;
        s[H + j] = f;
        s[2 * H + j] = g;
        s[3 * H + j] = o;
        s[4 * H + j] = tc;
      }
    }
  });
}

// LSTM backward: grad_h [B, H] = dL/dh_t from the outputs; dh_carry [B, H] = dL/dh_t from
// later steps; dc_carry [B, H] = dL/dc_t on entry, dL/dc_{t-1} on exit; saved [B, 5H];
// cprev [B, H]. Writes dg [B, 4H], the pre-activation gradients (the same on both sides).
void lstm_gates_backward(int64_t batch, int64_t H, const float* grad_h, const float* dh_carry,
                         float* dc_carry, const float* saved, const float* cprev, float* dg) {
  parallel_for(batch, row_grain(12 * H), [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; ++b) {
      const float* gh = grad_h + b * H;
      const float* dhc = dh_carry + b * H;
      float* dcc = dc_carry + b * H;
      const float* s = saved + b * 5 * H;
      const float* c_prev = cprev + b * H;
      float* d = dg + b * 4 * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = s[j], f = s[H + j], g = s[2 * H + j], o = s[3 * H + j];
        const float tc = s[4 * H + j];
        const float dh = gh[j] + dhc[j];
        const float dc = dcc[j] + dh * o * (1.0f - tc * tc);
        dcc[j] = dc * f;
        d[j] = dc * g * i * (1.0f - i);
        d[H + j] = dc * c_prev[j] * f * (1.0f - f);
        d[2 * H + j] = dc * i * (1.0f - g * g);
        d[3 * H + j] = dh * tc * o * (1.0f - o);
      }
    }
  });
}

// Copies a [B, H] state into place, or zeros when absent.
void load_state(const float* state, int64_t n, float* dst) {
  if (state) {
    std::memcpy(dst, state, static_cast<size_t>(n) * sizeof(float));
  } else {
    std::fill(dst, dst + n, 0.0f);
  }
}

// The weight gradients every backward shares, from dgx / dgh [T*B, G*H] (one buffer for both
// when the sides agree, as in LSTM). With a zero initial state the first step's rows of
// dW_hh's product vanish, so they are skipped.
void weight_grads(const Dims& d, int64_t gates, const float* x, const Weights& w, const float* hs,
                  const float* dgx, const float* dgh, bool h0_is_zero, const Grads& g) {
  const int64_t rows = d.steps * d.batch, width = gates * d.hidden;
  if (g.dx) sgemm(false, false, rows, d.input, width, dgx, w.w_ih, g.dx, false);
  if (g.dw_ih) sgemm(true, false, width, d.input, rows, dgx, x, g.dw_ih, false);
  if (g.dw_hh) {
    const int64_t skip = h0_is_zero ? d.batch : 0;
    sgemm(true, false, width, d.hidden, rows - skip, dgh + skip * width, hs + skip * d.hidden,
          g.dw_hh, false);
  }
  if (g.db_ih) column_sums(dgx, rows, width, g.db_ih);
  if (g.db_hh) {
    if (dgh == dgx && g.db_ih) {
      std::memcpy(g.db_hh, g.db_ih, static_cast<size_t>(width) * sizeof(float));
    } else {
      column_sums(dgh, rows, width, g.db_hh);
    }
  }
}

}  // namespace

void gru_forward(const Dims& d, const float* x, const float* h0, const Weights& w, float* hs,
                 float* saved) {
  const int64_t B = d.batch, H = d.hidden, width = 3 * H;
  Tensor xp = Tensor::empty({d.steps * B, width});
  Tensor hp = Tensor::empty({B, width});
  sgemm(false, true, d.steps * B, width, d.input, x, w.w_ih, xp.data(), false);
  load_state(h0, B * H, hs);
  for (int64_t t = 0; t < d.steps; ++t) {
    const float* hprev = hs + t * B * H;
    if (t == 0 && !h0) {
      hp.fill_(0.0f);
    } else {
      sgemm(false, true, B, width, H, hprev, w.w_hh, hp.data(), false);
    }
    gru_gates_forward(B, H, xp.data() + t * B * width, hp.data(), w.b_ih, w.b_hh, hprev,
                      hs + (t + 1) * B * H, saved + t * B * kGruSavedPerHidden * H);
  }
}

void gru_backward(const Dims& d, const float* x, const Weights& w, const float* hs,
                  const float* saved, const float* grad_hs, bool h0_is_zero, const Grads& g) {
  const int64_t B = d.batch, H = d.hidden, width = 3 * H;
  Tensor dgx = Tensor::empty({d.steps * B, width});
  Tensor dgh = Tensor::empty({d.steps * B, width});
  Tensor carry = Tensor::zeros({B, H});
  for (int64_t t = d.steps - 1; t >= 0; --t) {
    float* dgh_t = dgh.data() + t * B * width;
    gru_gates_backward(B, H, grad_hs + t * B * H, carry.data(),
                       saved + t * B * kGruSavedPerHidden * H, hs + t * B * H,
                       dgx.data() + t * B * width, dgh_t);
    if (t > 0 || g.dh0) sgemm(false, false, B, H, width, dgh_t, w.w_hh, carry.data(), true);
  }
  if (g.dh0) std::memcpy(g.dh0, carry.data(), static_cast<size_t>(B * H) * sizeof(float));
  weight_grads(d, 3, x, w, hs, dgx.data(), dgh.data(), h0_is_zero, g);
}

void lstm_forward(const Dims& d, const float* x, const float* h0, const float* c0, const Weights& w,
                  float* hs, float* cs, float* saved) {
  const int64_t B = d.batch, H = d.hidden, width = 4 * H;
  Tensor xp = Tensor::empty({d.steps * B, width});
  Tensor hp = Tensor::empty({B, width});
  sgemm(false, true, d.steps * B, width, d.input, x, w.w_ih, xp.data(), false);
  load_state(h0, B * H, hs);
  load_state(c0, B * H, cs);
  for (int64_t t = 0; t < d.steps; ++t) {
    if (t == 0 && !h0) {
      hp.fill_(0.0f);
    } else {
      sgemm(false, true, B, width, H, hs + t * B * H, w.w_hh, hp.data(), false);
    }
    lstm_gates_forward(B, H, xp.data() + t * B * width, hp.data(), w.b_ih, w.b_hh, cs + t * B * H,
                       hs + (t + 1) * B * H, cs + (t + 1) * B * H,
                       saved + t * B * kLstmSavedPerHidden * H);
  }
}

void lstm_backward(const Dims& d, const float* x, const Weights& w, const float* hs,
                   const float* cs, const float* saved, const float* grad_hs,
                   const float* grad_c_last, bool h0_is_zero, const Grads& g) {
  const int64_t B = d.batch, H = d.hidden, width = 4 * H;
  Tensor dg = Tensor::empty({d.steps * B, width});
  Tensor dh_carry = Tensor::zeros({B, H});
  Tensor dc_carry = Tensor::empty({B, H});
  load_state(grad_c_last, B * H, dc_carry.data());
  for (int64_t t = d.steps - 1; t >= 0; --t) {
    float* dg_t = dg.data() + t * B * width;
    lstm_gates_backward(B, H, grad_hs + t * B * H, dh_carry.data(), dc_carry.data(),
                        saved + t * B * kLstmSavedPerHidden * H, cs + t * B * H, dg_t);
    if (t > 0 || g.dh0) sgemm(false, false, B, H, width, dg_t, w.w_hh, dh_carry.data(), false);
  }
  const size_t state_bytes = static_cast<size_t>(B * H) * sizeof(float);
  if (g.dh0) std::memcpy(g.dh0, dh_carry.data(), state_bytes);
  if (g.dc0) std::memcpy(g.dc0, dc_carry.data(), state_bytes);
  weight_grads(d, 4, x, w, hs, dg.data(), dg.data(), h0_is_zero, g);
}

// ---------------------------------------------------------------- scalar references

namespace reference {

namespace {

double sigmoid(double v) {
  return 1.0 / (1.0 + std::exp(-v));
}

// sum_k a[k] b[k] in double.
double dot(const float* a, const float* b, int64_t n) {
  double s = 0.0;
  for (int64_t k = 0; k < n; ++k)
    s += static_cast<double>(a[k]) * b[k];
  return s;
}

// Row `row` of W [rows, cols] times v [cols], plus bias[row].
double affine(const float* w, const float* bias, int64_t row, const float* v, int64_t cols) {
  return dot(w + row * cols, v, cols) + bias[row];
}

// The gradients shared by both cells, from per-step pre-activation gradients held in double:
// dgx / dgh [T*B, G*H], hs [(T+1)*B, H].
void weight_grads(const Dims& d, int64_t gates, const float* x, const Weights& w, const float* hs,
                  const std::vector<double>& dgx, const std::vector<double>& dgh, const Grads& g) {
  const int64_t rows = d.steps * d.batch, width = gates * d.hidden;
  const auto at = [width](const std::vector<double>& m, int64_t r, int64_t c) {
    return m[static_cast<size_t>(r * width + c)];
  };
  if (g.dx) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < d.input; ++k) {
        double s = 0.0;
        for (int64_t c = 0; c < width; ++c)
          s += at(dgx, r, c) * w.w_ih[c * d.input + k];
        g.dx[r * d.input + k] = static_cast<float>(s);
      }
    }
  }
  for (int64_t c = 0; c < width; ++c) {
    if (g.dw_ih) {
      for (int64_t k = 0; k < d.input; ++k) {
        double s = 0.0;
        for (int64_t r = 0; r < rows; ++r)
          s += at(dgx, r, c) * x[r * d.input + k];
        g.dw_ih[c * d.input + k] = static_cast<float>(s);
      }
    }
    if (g.dw_hh) {
      for (int64_t k = 0; k < d.hidden; ++k) {
        double s = 0.0;
        for (int64_t r = 0; r < rows; ++r)
          s += at(dgh, r, c) * hs[r * d.hidden + k];
        g.dw_hh[c * d.hidden + k] = static_cast<float>(s);
      }
    }
    double sx = 0.0, sh = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      sx += at(dgx, r, c);
      sh += at(dgh, r, c);
    }
    if (g.db_ih) g.db_ih[c] = static_cast<float>(sx);
    if (g.db_hh) g.db_hh[c] = static_cast<float>(sh);
  }
}

// carry [B, H] += dG_t [B, G*H] W_hh [G*H, H].
void add_hidden_grad(const Dims& d, int64_t gates, const Weights& w, const double* dg_t,
                     std::vector<double>& carry) {
  const int64_t width = gates * d.hidden;
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t k = 0; k < d.hidden; ++k) {
      double s = 0.0;
      for (int64_t c = 0; c < width; ++c)
        s += dg_t[b * width + c] * w.w_hh[c * d.hidden + k];
      carry[static_cast<size_t>(b * d.hidden + k)] += s;
    }
  }
}

}  // namespace

void gru_forward(const Dims& d, const float* x, const float* h0, const Weights& w, float* hs,
                 float* saved) {
  const int64_t B = d.batch, H = d.hidden, in = d.input;
  for (int64_t i = 0; i < B * H; ++i)
    hs[i] = h0 ? h0[i] : 0.0f;
  for (int64_t t = 0; t < d.steps; ++t) {
    for (int64_t b = 0; b < B; ++b) {
      const float* xv = x + (t * B + b) * in;
      const float* hv = hs + (t * B + b) * H;
      float* out = hs + ((t + 1) * B + b) * H;
      float* s = saved + (t * B + b) * kGruSavedPerHidden * H;
      for (int64_t j = 0; j < H; ++j) {
        const double r =
            sigmoid(affine(w.w_ih, w.b_ih, j, xv, in) + affine(w.w_hh, w.b_hh, j, hv, H));
        const double z =
            sigmoid(affine(w.w_ih, w.b_ih, H + j, xv, in) + affine(w.w_hh, w.b_hh, H + j, hv, H));
        const double hn = affine(w.w_hh, w.b_hh, 2 * H + j, hv, H);
        const double n = std::tanh(affine(w.w_ih, w.b_ih, 2 * H + j, xv, in) + r * hn);
        out[j] = static_cast<float>((1.0 - z) * n + z * hv[j]);
        s[j] = static_cast<float>(r);
        s[H + j] = static_cast<float>(z);
        s[2 * H + j] = static_cast<float>(n);
        s[3 * H + j] = static_cast<float>(hn);
      }
    }
  }
}

// h0_is_zero only lets the fast kernel skip work; the reference does all of it.
void gru_backward(const Dims& d, const float* x, const Weights& w, const float* hs,
                  const float* saved, const float* grad_hs, bool /*h0_is_zero*/, const Grads& g) {
  const int64_t B = d.batch, H = d.hidden, width = 3 * H;
  const size_t all = static_cast<size_t>(d.steps * B * width);
  std::vector<double> dgx(all), dgh(all), carry(static_cast<size_t>(B * H), 0.0);
  for (int64_t t = d.steps - 1; t >= 0; --t) {
    std::vector<double> next(static_cast<size_t>(B * H));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const float* s = saved + row * kGruSavedPerHidden * H;
      for (int64_t j = 0; j < H; ++j) {
        const double r = s[j], z = s[H + j], n = s[2 * H + j], hn = s[3 * H + j];
        const double h_prev = hs[row * H + j];
        const double dh = grad_hs[row * H + j] + carry[static_cast<size_t>(b * H + j)];
        // h' = (1 - z) n + z h
        const double dn_pre = dh * (1.0 - z) * (1.0 - n * n);
        const double dz_pre = dh * (h_prev - n) * z * (1.0 - z);
        const double dr_pre = dn_pre * hn * r * (1.0 - r);
        const size_t base = static_cast<size_t>(row * width);
        dgx[base + j] = dgh[base + j] = dr_pre;
        dgx[base + H + j] = dgh[base + H + j] = dz_pre;
        dgx[base + 2 * H + j] = dn_pre;
        dgh[base + 2 * H + j] = dn_pre * r;
        next[static_cast<size_t>(b * H + j)] = dh * z;
      }
    }
    add_hidden_grad(d, 3, w, dgh.data() + t * B * width, next);
    carry = next;
  }
  if (g.dh0) {
    for (int64_t i = 0; i < B * H; ++i)
      g.dh0[i] = static_cast<float>(carry[static_cast<size_t>(i)]);
  }
  weight_grads(d, 3, x, w, hs, dgx, dgh, g);
}

void lstm_forward(const Dims& d, const float* x, const float* h0, const float* c0, const Weights& w,
                  float* hs, float* cs, float* saved) {
  const int64_t B = d.batch, H = d.hidden, in = d.input;
  for (int64_t i = 0; i < B * H; ++i) {
    hs[i] = h0 ? h0[i] : 0.0f;
    cs[i] = c0 ? c0[i] : 0.0f;
  }
  for (int64_t t = 0; t < d.steps; ++t) {
    for (int64_t b = 0; b < B; ++b) {
      const float* xv = x + (t * B + b) * in;
      const float* hv = hs + (t * B + b) * H;
      const float* cv = cs + (t * B + b) * H;
      float* h_out = hs + ((t + 1) * B + b) * H;
      float* c_out = cs + ((t + 1) * B + b) * H;
      float* s = saved + (t * B + b) * kLstmSavedPerHidden * H;
      for (int64_t j = 0; j < H; ++j) {
        const auto pre = [&](int64_t gate) {
          return affine(w.w_ih, w.b_ih, gate * H + j, xv, in) +
                 affine(w.w_hh, w.b_hh, gate * H + j, hv, H);
        };
        const double i = sigmoid(pre(0)), f = sigmoid(pre(1)), g = std::tanh(pre(2));
        const double o = sigmoid(pre(3));
        const double c = f * cv[j] + i * g;
        const double tc = std::tanh(c);
        c_out[j] = static_cast<float>(c);
        h_out[j] = static_cast<float>(o * tc);
        s[j] = static_cast<float>(i);
        s[H + j] = static_cast<float>(f);
        s[2 * H + j] = static_cast<float>(g);
        s[3 * H + j] = static_cast<float>(o);
        s[4 * H + j] = static_cast<float>(tc);
      }
    }
  }
}

void lstm_backward(const Dims& d, const float* x, const Weights& w, const float* hs,
                   const float* cs, const float* saved, const float* grad_hs,
                   const float* grad_c_last, bool /*h0_is_zero*/, const Grads& g) {
  const int64_t B = d.batch, H = d.hidden, width = 4 * H;
  std::vector<double> dg(static_cast<size_t>(d.steps * B * width));
  std::vector<double> dh_carry(static_cast<size_t>(B * H), 0.0), dc_carry(dh_carry);
  if (grad_c_last) {
    for (int64_t i = 0; i < B * H; ++i)
      dc_carry[static_cast<size_t>(i)] = grad_c_last[i];
  }
  for (int64_t t = d.steps - 1; t >= 0; --t) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const float* s = saved + row * kLstmSavedPerHidden * H;
      for (int64_t j = 0; j < H; ++j) {
        const double i = s[j], f = s[H + j], gg = s[2 * H + j], o = s[3 * H + j];
        const double tc = s[4 * H + j];
        const size_t k = static_cast<size_t>(b * H + j);
        const double dh = grad_hs[row * H + j] + dh_carry[k];
        // h' = o tanh(c'), c' = f c + i g
        const double dc = dc_carry[k] + dh * o * (1.0 - tc * tc);
        const size_t base = static_cast<size_t>(row * width);
        dg[base + j] = dc * gg * i * (1.0 - i);
        dg[base + H + j] = dc * cs[row * H + j] * f * (1.0 - f);
        dg[base + 2 * H + j] = dc * i * (1.0 - gg * gg);
        dg[base + 3 * H + j] = dh * tc * o * (1.0 - o);
        dc_carry[k] = dc * f;
      }
    }
    std::fill(dh_carry.begin(), dh_carry.end(), 0.0);
    add_hidden_grad(d, 4, w, dg.data() + t * B * width, dh_carry);
  }
  for (int64_t i = 0; i < B * H; ++i) {
    if (g.dh0) g.dh0[i] = static_cast<float>(dh_carry[static_cast<size_t>(i)]);
    if (g.dc0) g.dc0[i] = static_cast<float>(dc_carry[static_cast<size_t>(i)]);
  }
  weight_grads(d, 4, x, w, hs, dg, dg, g);
}

}  // namespace reference

}  // namespace rnn

// ---------------------------------------------------------------- autograd ops

namespace {

enum class CellKind { kGru, kLstm };

int64_t gate_count(CellKind kind) {
  return kind == CellKind::kGru ? 3 : 4;
}

// The initial state of one call: h and c [B, H] apart, or LSTM's packed [2, B, H] = [h; c]
// (used instead of h and c when defined). Undefined parts are zeros.
struct InitialState {
  Tensor h, c, packed;
};

// Checks one recurrent call's arguments and returns its sizes. x is [T, B, in] for a sequence
// and [B, in] for a cell; weights [G*H, in], [G*H, H]; biases [G*H] or undefined. The message
// names every argument's shape and the expected forms.
rnn::Dims check_arguments(const char* op, CellKind kind, bool sequence, const Tensor& x,
                          const InitialState& state, const Tensor& w_ih, const Tensor& w_hh,
                          const Tensor& b_ih, const Tensor& b_hh) {
  const std::vector<std::pair<const char*, const Tensor*>> required = {
      {"x", &x}, {"weight_ih", &w_ih}, {"weight_hh", &w_hh}};
  for (const auto& [name, t] : required) {
    if (!t->defined()) throw ValueError(std::string(op) + ": " + name + " is undefined");
  }
  const int64_t gates = gate_count(kind);
  const std::vector<std::pair<std::string, const Tensor*>> states = {
      {sequence ? "h0" : "h", &state.h},
      {sequence ? "c0" : "c", &state.c},
      {"state", &state.packed}};
  const auto fail = [&]() {
    std::string shapes = "x " + shape_str(x.shape());
    for (const auto& [name, t] : states) {
      if (t->defined()) shapes += ", " + name + " " + shape_str(t->shape());
    }
    shapes += ", weight_ih " + shape_str(w_ih.shape()) + ", weight_hh " + shape_str(w_hh.shape());
    if (b_ih.defined()) shapes += ", bias_ih " + shape_str(b_ih.shape());
    if (b_hh.defined()) shapes += ", bias_hh " + shape_str(b_hh.shape());
    const std::string g = std::to_string(gates);
    return ShapeError(std::string(op) + ": " + shapes + " do not fit; expected x " +
                      (sequence ? "[T,B,in] with T >= 1" : "[B,in]") +
                      (state.packed.defined() ? ", state [2,B,H]" : ", states [B,H]") +
                      ", weight_ih [" + g + "H,in], weight_hh [" + g + "H,H], biases [" + g +
                      "H] with H >= 1");
  };
  if (x.dim() != (sequence ? 3 : 2) || w_ih.dim() != 2 || w_hh.dim() != 2) throw fail();
  rnn::Dims d{};
  d.steps = sequence ? x.size(0) : 1;
  d.batch = x.size(-2);
  d.input = x.size(-1);
  d.hidden = w_hh.size(1);
  const int64_t width = gates * d.hidden;
  if (d.steps < 1 || d.hidden < 1 || w_hh.size(0) != width || w_ih.size(0) != width ||
      w_ih.size(1) != d.input) {
    throw fail();
  }
  for (const Tensor* b : {&b_ih, &b_hh}) {
    if (b->defined() && b->shape() != Shape{width}) throw fail();
  }
  for (const Tensor* s : {&state.h, &state.c}) {
    if (s->defined() && s->shape() != Shape{d.batch, d.hidden}) throw fail();
  }
  if (state.packed.defined() && state.packed.shape() != Shape{2, d.batch, d.hidden}) throw fail();
  return d;
}

const float* data_or_null(const Tensor& t) {
  return t.defined() ? t.data() : nullptr;
}

// A fresh gradient buffer for `t` when it needs one, and its pointer for rnn::Grads.
float* gradient_slot(const Tensor& t, Tensor& slot) {
  if (!t.requires_grad()) return nullptr;
  slot = Tensor::empty(t.shape());
  return slot.data();
}

void accumulate_if(const Tensor& t, const Tensor& g) {
  if (g.defined()) t.accumulate_grad(g);
}

// Runs one recurrent layer over x (viewed as [T*B, in]) and returns its packed result with
// shape `result_shape`: h_1 .. h_T, followed by c_T for LSTM. The result is a view into the
// buffer hs = [h_0, h_1, .., h_T (, c_T)], whose leading h_0 makes hs[0 .. T*B) the stacked
// previous states that backward's dW_hh product reads in place.
Tensor run_layer(const char* op, CellKind kind, const rnn::Dims& d, const Shape& result_shape,
                 const Tensor& x, const InitialState& state, const Tensor& w_ih, const Tensor& w_hh,
                 const Tensor& b_ih, const Tensor& b_hh) {
  const int64_t T = d.steps, B = d.batch, H = d.hidden, width = gate_count(kind) * H;
  const bool lstm = kind == CellKind::kLstm;
  const Tensor bias_ih = b_ih.defined() ? b_ih : Tensor::zeros({width});
  const Tensor bias_hh = b_hh.defined() ? b_hh : Tensor::zeros({width});
  const rnn::Weights weights{w_ih.data(), w_hh.data(), bias_ih.data(), bias_hh.data()};
  const Tensor& packed = state.packed;
  const float* h0 = packed.defined() ? packed.data() : data_or_null(state.h);
  const float* c0 = packed.defined() ? packed.data() + B * H : data_or_null(state.c);
  Tensor hs = Tensor::empty({T + 1 + (lstm ? 1 : 0), B, H});
  Tensor cs, saved;
  if (lstm) {
    cs = Tensor::empty({T + 1, B, H});
    saved = Tensor::empty({T * B, rnn::kLstmSavedPerHidden * H});
    rnn::lstm_forward(d, x.data(), h0, c0, weights, hs.data(), cs.data(), saved.data());
    std::memcpy(hs.data() + (T + 1) * B * H, cs.data() + T * B * H,
                static_cast<size_t>(B * H) * sizeof(float));
  } else {
    saved = Tensor::empty({T * B, rnn::kGruSavedPerHidden * H});
    rnn::gru_forward(d, x.data(), h0, weights, hs.data(), saved.data());
  }
  Tensor result = slice(hs, 0, 1, hs.size(0)).reshape(result_shape);
  // The closure keeps hs (not the result: hs is another handle on the storage, with no node,
  // so no cycle) because backward reads the states.
  return Tensor::make_result(
      result, op, {x, state.h, state.c, packed, w_ih, w_hh, b_ih, b_hh},
      [kind, d, x, state, w_ih, w_hh, b_ih, b_hh, weights, bias_ih, bias_hh, hs, cs, saved](
          const Tensor&, const Tensor& grad) {
        Tensor gx, gh0, gc0, gstate, gw_ih, gw_hh, gb_ih, gb_hh;
        rnn::Grads g;
        g.dx = gradient_slot(x, gx);
        if (float* both = gradient_slot(state.packed, gstate)) {
          g.dh0 = both;
          g.dc0 = both + d.batch * d.hidden;
        } else {
          g.dh0 = gradient_slot(state.h, gh0);
          g.dc0 = gradient_slot(state.c, gc0);
        }
        g.dw_ih = gradient_slot(w_ih, gw_ih);
        g.dw_hh = gradient_slot(w_hh, gw_hh);
        g.db_ih = gradient_slot(b_ih, gb_ih);
        g.db_hh = gradient_slot(b_hh, gb_hh);
        const bool h0_is_zero = !state.packed.defined() && !state.h.defined();
        if (kind == CellKind::kLstm) {
          rnn::lstm_backward(d, x.data(), weights, hs.data(), cs.data(), saved.data(), grad.data(),
                             grad.data() + d.steps * d.batch * d.hidden, h0_is_zero, g);
        } else {
          rnn::gru_backward(d, x.data(), weights, hs.data(), saved.data(), grad.data(), h0_is_zero,
                            g);
        }
        accumulate_if(x, gx);
        accumulate_if(state.h, gh0);
        accumulate_if(state.c, gc0);
        accumulate_if(state.packed, gstate);
        accumulate_if(w_ih, gw_ih);
        accumulate_if(w_hh, gw_hh);
        accumulate_if(b_ih, gb_ih);
        accumulate_if(b_hh, gb_hh);
      });
}

// An LSTM sequence from either form of initial state; the views of the packed result.
SequenceResult run_lstm_sequence(const Tensor& x, const InitialState& state, const Tensor& w_ih,
                                 const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh) {
  const rnn::Dims d =
      check_arguments("lstm_sequence", CellKind::kLstm, true, x, state, w_ih, w_hh, b_ih, b_hh);
  const int64_t T = d.steps;
  const Shape state_shape = {d.batch, d.hidden};
  const Tensor packed = run_layer("lstm_sequence", CellKind::kLstm, d, {T + 1, d.batch, d.hidden},
                                  x, state, w_ih, w_hh, b_ih, b_hh);
  SequenceResult r;
  r.output = slice(packed, 0, 0, T);
  r.h_n = slice(packed, 0, T - 1, T).reshape(state_shape);
  r.c_n = slice(packed, 0, T, T + 1).reshape(state_shape);
  r.state = slice(packed, 0, T - 1, T + 1);
  return r;
}

}  // namespace

Tensor gru_cell(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                const Tensor& b_ih, const Tensor& b_hh) {
  const InitialState state{h, Tensor(), Tensor()};
  const rnn::Dims d =
      check_arguments("gru_cell", CellKind::kGru, false, x, state, w_ih, w_hh, b_ih, b_hh);
  return run_layer("gru_cell", CellKind::kGru, d, {d.batch, d.hidden}, x, state, w_ih, w_hh, b_ih,
                   b_hh);
}

LstmState lstm_cell(const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih,
                    const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh) {
  const InitialState state{h, c, Tensor()};
  const rnn::Dims d =
      check_arguments("lstm_cell", CellKind::kLstm, false, x, state, w_ih, w_hh, b_ih, b_hh);
  const Tensor packed = run_layer("lstm_cell", CellKind::kLstm, d, {2, d.batch, d.hidden}, x, state,
                                  w_ih, w_hh, b_ih, b_hh);
  const Shape state_shape = {d.batch, d.hidden};
  return {slice(packed, 0, 0, 1).reshape(state_shape), slice(packed, 0, 1, 2).reshape(state_shape)};
}

Tensor lstm_cell_packed(const Tensor& x, const Tensor& state, const Tensor& w_ih,
                        const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh) {
  const InitialState initial{Tensor(), Tensor(), state};
  const rnn::Dims d =
      check_arguments("lstm_cell", CellKind::kLstm, false, x, initial, w_ih, w_hh, b_ih, b_hh);
  return run_layer("lstm_cell", CellKind::kLstm, d, {2, d.batch, d.hidden}, x, initial, w_ih, w_hh,
                   b_ih, b_hh);
}

SequenceResult gru_sequence(const Tensor& x, const Tensor& h0, const Tensor& w_ih,
                            const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh) {
  const InitialState state{h0, Tensor(), Tensor()};
  const rnn::Dims d =
      check_arguments("gru_sequence", CellKind::kGru, true, x, state, w_ih, w_hh, b_ih, b_hh);
  const int64_t T = d.steps;
  SequenceResult r;
  r.output = run_layer("gru_sequence", CellKind::kGru, d, {T, d.batch, d.hidden}, x, state, w_ih,
                       w_hh, b_ih, b_hh);
  r.h_n = slice(r.output, 0, T - 1, T).reshape({d.batch, d.hidden});
  r.state = r.h_n;
  return r;
}

SequenceResult lstm_sequence(const Tensor& x, const Tensor& h0, const Tensor& c0,
                             const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                             const Tensor& b_hh) {
  return run_lstm_sequence(x, {h0, c0, Tensor()}, w_ih, w_hh, b_ih, b_hh);
}

// ---------------------------------------------------------------- modules

RecurrentCell::RecurrentCell(int64_t gates, int64_t input_size, int64_t hidden_size, bool bias,
                             Rng& rng)
    : input_size_(input_size), hidden_size_(hidden_size) {
  if (input_size < 0 || hidden_size < 1) {
    throw ValueError("recurrent cell: input size " + std::to_string(input_size) +
                     " and hidden size " + std::to_string(hidden_size) +
                     " (need input >= 0, hidden >= 1)");
  }
  // torch's reset_parameters: every parameter U(-1/sqrt(H), 1/sqrt(H)), in registration order.
  const float bound = 1.0f / std::sqrt(static_cast<float>(hidden_size));
  const int64_t width = gates * hidden_size;
  weight_ih =
      register_parameter("weight_ih", rand_uniform({width, input_size}, rng, -bound, bound));
  weight_hh =
      register_parameter("weight_hh", rand_uniform({width, hidden_size}, rng, -bound, bound));
  if (bias) {
    bias_ih = register_parameter("bias_ih", rand_uniform({width}, rng, -bound, bound));
    bias_hh = register_parameter("bias_hh", rand_uniform({width}, rng, -bound, bound));
  }
}

GRUCell::GRUCell(int64_t input_size, int64_t hidden_size, bool bias, Rng& rng)
    : RecurrentCell(3, input_size, hidden_size, bias, rng) {}

Tensor GRUCell::forward(const Tensor& x, const Tensor& h) {
  return gru_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh);
}

SequenceResult GRUCell::sequence(const Tensor& x, const Tensor& state) {
  return gru_sequence(x, state, weight_ih, weight_hh, bias_ih, bias_hh);
}

Tensor GRUCell::initial_state(int64_t batch) const {
  return Tensor::zeros({batch, hidden_size()});
}

Tensor GRUCell::hidden(const Tensor& state) const {
  if (!state.defined()) throw ValueError("GRUCell::hidden: undefined state");
  return state;
}

LSTMCell::LSTMCell(int64_t input_size, int64_t hidden_size, bool bias, Rng& rng)
    : RecurrentCell(4, input_size, hidden_size, bias, rng) {}

LstmState LSTMCell::forward(const Tensor& x, const Tensor& h, const Tensor& c) {
  return lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh);
}

Tensor LSTMCell::step(const Tensor& x, const Tensor& state) {
  return lstm_cell_packed(x, state, weight_ih, weight_hh, bias_ih, bias_hh);
}

SequenceResult LSTMCell::sequence(const Tensor& x, const Tensor& state) {
  return run_lstm_sequence(x, {Tensor(), Tensor(), state}, weight_ih, weight_hh, bias_ih, bias_hh);
}

Tensor LSTMCell::initial_state(int64_t batch) const {
  return Tensor::zeros({2, batch, hidden_size()});
}

Tensor LSTMCell::hidden(const Tensor& state) const {
  if (!state.defined()) throw ValueError("LSTMCell::hidden: undefined state");
  if (state.dim() != 3 || state.size(0) != 2) {
    throw ShapeError("LSTMCell::hidden: state " + shape_str(state.shape()) +
                     " is not [2,B,H] = [h; c]");
  }
  return slice(state, 0, 0, 1).reshape({state.size(1), state.size(2)});
}

SequenceResult GRU::forward(const Tensor& x, const Tensor& h0) {
  return gru_sequence(x, h0, weight_ih, weight_hh, bias_ih, bias_hh);
}

SequenceResult LSTM::forward(const Tensor& x, const Tensor& h0, const Tensor& c0) {
  return lstm_sequence(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh);
}

}  // namespace stgnn
