// GRU and LSTM: fast kernels against their scalar references (poisoned outputs, odd sizes,
// saturated gates), the autograd ops against compositions of generic ops and against
// finite differences, the cell op stepped by hand against the sequence op, PyTorch 1.13
// fixtures, and the modules behind the RecurrentCell interface.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "nn/recurrent.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

enum class Kind { kGru, kLstm };

int64_t gates_of(Kind kind) {
  return kind == Kind::kGru ? 3 : 4;
}

std::string name_of(Kind kind) {
  return kind == Kind::kGru ? "GRU" : "LSTM";
}

// ---------------------------------------------------------------- kernel level

// Everything one raw kernel pass reads.
struct KernelInputs {
  rnn::Dims d;
  Kind kind;
  Tensor x, h0, c0, w_ih, w_hh, b_ih, b_hh, grad_hs, grad_c;  // h0, c0, grad_c may be undefined
};

// Everything it writes; each buffer NaN-poisoned before the pass so an unwritten element fails.
struct KernelOutputs {
  Tensor hs, cs, saved, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh;
};

KernelInputs kernel_inputs(Kind kind, const rnn::Dims& d, bool with_state, Rng& rng,
                           float scale = 1.0f) {
  const int64_t width = gates_of(kind) * d.hidden;
  KernelInputs in{d, kind, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  in.x = random_tensor({d.steps * d.batch, d.input}, rng, scale);
  in.w_ih = random_tensor({width, d.input}, rng, 0.5f * scale);
  in.w_hh = random_tensor({width, d.hidden}, rng, 0.5f * scale);
  in.b_ih = random_tensor({width}, rng, 0.5f * scale);
  in.b_hh = random_tensor({width}, rng, 0.5f * scale);
  in.grad_hs = random_tensor({d.steps * d.batch, d.hidden}, rng);
  if (with_state) {
    in.h0 = random_tensor({d.batch, d.hidden}, rng);
    if (kind == Kind::kLstm) in.c0 = random_tensor({d.batch, d.hidden}, rng);
  }
  if (kind == Kind::kLstm) in.grad_c = random_tensor({d.batch, d.hidden}, rng);
  return in;
}

const float* ptr(const Tensor& t) {
  return t.defined() ? t.data() : nullptr;
}

KernelOutputs run_kernels(const KernelInputs& in, bool reference) {
  const rnn::Dims& d = in.d;
  const int64_t H = d.hidden, width = gates_of(in.kind) * H;
  const int64_t rows = d.steps * d.batch;
  const bool lstm = in.kind == Kind::kLstm;
  KernelOutputs out;
  out.hs = Tensor::full({(d.steps + 1) * d.batch, H}, kNaN);
  out.cs = Tensor::full({(d.steps + 1) * d.batch, H}, kNaN);
  out.saved =
      Tensor::full({rows, (lstm ? rnn::kLstmSavedPerHidden : rnn::kGruSavedPerHidden) * H}, kNaN);
  out.dx = Tensor::full({rows, d.input}, kNaN);
  out.dh0 = Tensor::full({d.batch, H}, kNaN);
  out.dc0 = Tensor::full({d.batch, H}, kNaN);
  out.dw_ih = Tensor::full({width, d.input}, kNaN);
  out.dw_hh = Tensor::full({width, H}, kNaN);
  out.db_ih = Tensor::full({width}, kNaN);
  out.db_hh = Tensor::full({width}, kNaN);
  const rnn::Weights w{in.w_ih.data(), in.w_hh.data(), in.b_ih.data(), in.b_hh.data()};
  rnn::Grads g;
  g.dx = out.dx.data();
  g.dh0 = out.dh0.data();
  g.dc0 = lstm ? out.dc0.data() : nullptr;
  g.dw_ih = out.dw_ih.data();
  g.dw_hh = out.dw_hh.data();
  g.db_ih = out.db_ih.data();
  g.db_hh = out.db_hh.data();
  const bool h0_is_zero = !in.h0.defined();
  if (lstm) {
    (reference ? rnn::reference::lstm_forward : rnn::lstm_forward)(
        d, in.x.data(), ptr(in.h0), ptr(in.c0), w, out.hs.data(), out.cs.data(), out.saved.data());
    (reference ? rnn::reference::lstm_backward : rnn::lstm_backward)(
        d, in.x.data(), w, out.hs.data(), out.cs.data(), out.saved.data(), in.grad_hs.data(),
        ptr(in.grad_c), h0_is_zero, g);
  } else {
    (reference ? rnn::reference::gru_forward : rnn::gru_forward)(d, in.x.data(), ptr(in.h0), w,
                                                                 out.hs.data(), out.saved.data());
    (reference ? rnn::reference::gru_backward : rnn::gru_backward)(
        d, in.x.data(), w, out.hs.data(), out.saved.data(), in.grad_hs.data(), h0_is_zero, g);
  }
  return out;
}

// Fast against reference, buffer by buffer, within atol + rtol * |reference|. The reference
// accumulates in double and calls std::exp / std::tanh; the fast path sums in float inside
// sgemm and uses 1-3 ulp approximations of exp and tanh, and five steps of recurrence carry
// those roundings forward. At unit-scale inputs the worst observed difference is ~4e-6, so
// 2e-5 is the tolerance there; saturated gates (pre-activations of tens, whose float rounding
// is itself ~1e-5) and weight gradients summed over 600 rows reach ~1e-5, hence 1e-4 for those.
// A wrong formula or a missing term misses by orders of magnitude more.
void compare_outputs(const KernelOutputs& fast, const KernelOutputs& ref, Kind kind,
                     double tolerance = 2e-5) {
  const double rtol = tolerance, atol = tolerance;
  const std::vector<std::pair<std::string, std::pair<Tensor, Tensor>>> pairs = {
      {"hs", {fast.hs, ref.hs}},          {"saved", {fast.saved, ref.saved}},
      {"dx", {fast.dx, ref.dx}},          {"dh0", {fast.dh0, ref.dh0}},
      {"dw_ih", {fast.dw_ih, ref.dw_ih}}, {"dw_hh", {fast.dw_hh, ref.dw_hh}},
      {"db_ih", {fast.db_ih, ref.db_ih}}, {"db_hh", {fast.db_hh, ref.db_hh}}};
  for (const auto& named : pairs) {
    const std::string& name = named.first;  // CAPTURE cannot capture a binding (C++17)
    const auto& p = named.second;
    CAPTURE(name);
    check_close(p.first, p.second, rtol, atol);
  }
  if (kind == Kind::kLstm) {
    check_close(fast.cs, ref.cs, rtol, atol);
    check_close(fast.dc0, ref.dc0, rtol, atol);
  }
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.to_vector() == b.to_vector();
}

// ---------------------------------------------------------------- op level

// The cells written with generic autograd ops: the specification of the fused op.
Tensor gate(const Tensor& pre, int64_t k, int64_t H) {
  return slice(pre, 1, k * H, (k + 1) * H);
}

Tensor projection(const Tensor& v, const Tensor& w, const Tensor& b) {
  return linear(v, w, b);
}

Tensor composed_gru_cell(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                         const Tensor& b_ih, const Tensor& b_hh) {
  const int64_t H = w_hh.size(1);
  const Tensor gi = projection(x, w_ih, b_ih), gh = projection(h, w_hh, b_hh);
  const Tensor r = sigmoid(gate(gi, 0, H) + gate(gh, 0, H));
  const Tensor z = sigmoid(gate(gi, 1, H) + gate(gh, 1, H));
  const Tensor n = tanh(gate(gi, 2, H) + r * gate(gh, 2, H));
  return n + z * (h - n);
}

// -> [2, B, H] = [h'; c'].
Tensor composed_lstm_cell(const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih,
                          const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh) {
  const int64_t H = w_hh.size(1), B = x.size(0);
  const Tensor pre = projection(x, w_ih, b_ih) + projection(h, w_hh, b_hh);
  const Tensor i = sigmoid(gate(pre, 0, H)), f = sigmoid(gate(pre, 1, H));
  const Tensor g = tanh(gate(pre, 2, H)), o = sigmoid(gate(pre, 3, H));
  const Tensor c_next = f * c + i * g;
  const Tensor h_next = o * tanh(c_next);
  return concat({h_next.reshape({1, B, H}), c_next.reshape({1, B, H})}, 0);
}

// Flattens and joins tensors into one vector, so that one function output carries the
// gradients of several views.
Tensor joined(const std::vector<Tensor>& parts) {
  std::vector<Tensor> flat;
  for (const Tensor& p : parts)
    flat.push_back(p.reshape({p.numel()}));
  return concat(flat, 0);
}

// The forward value and the gradient of L = sum(f(inputs) * w) w.r.t. every input.
struct Evaluation {
  Tensor out;
  std::vector<Tensor> grads;
};

Evaluation evaluate(const TensorFn& f, const std::vector<Tensor>& inputs, uint64_t seed) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs)
    leaves.push_back(t.copy().set_requires_grad(true));
  Evaluation e;
  Tensor out = f(leaves);
  Rng rng(seed);
  out.backward(randn(out.shape(), rng));
  e.out = out.detach();
  for (const Tensor& leaf : leaves)
    e.grads.push_back(leaf.grad().defined() ? leaf.grad() : Tensor::zeros(leaf.shape()));
  return e;
}

void check_same_evaluation(const Evaluation& got, const Evaluation& want, double rtol,
                           double atol) {
  check_close(got.out, want.out, rtol, atol);
  REQUIRE(got.grads.size() == want.grads.size());
  for (size_t k = 0; k < got.grads.size(); ++k) {
    CAPTURE(k);
    check_close(got.grads[k], want.grads[k], rtol, atol);
  }
}

// The parameters of one layer.
struct Params {
  Tensor w_ih, w_hh, b_ih, b_hh;
};

Params random_params(Kind kind, int64_t in, int64_t H, Rng& rng) {
  const int64_t width = gates_of(kind) * H;
  return {random_tensor({width, in}, rng, 0.5f), random_tensor({width, H}, rng, 0.5f),
          random_tensor({width}, rng, 0.5f), random_tensor({width}, rng, 0.5f)};
}

Params fixture_params(const std::string& kind) {
  return {read_fixture("recurrent", kind + "_weight_ih"),
          read_fixture("recurrent", kind + "_weight_hh"),
          read_fixture("recurrent", kind + "_bias_ih"),
          read_fixture("recurrent", kind + "_bias_hh")};
}

}  // namespace

// ---------------------------------------------------------------- kernels

TEST_CASE("fast kernels equal the scalar references at odd sizes, every buffer written") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  for (Kind kind : {Kind::kGru, Kind::kLstm}) {
    for (int64_t H : {1, 7, 33}) {
      for (int64_t B : {1, 3}) {
        for (bool with_state : {true, false}) {
          CAPTURE(name_of(kind));
          CAPTURE(H);
          CAPTURE(B);
          CAPTURE(with_state);
          const rnn::Dims d{5, B, 5, H};
          const KernelInputs in = kernel_inputs(kind, d, with_state, rng);
          compare_outputs(run_kernels(in, false), run_kernels(in, true), kind);
        }
      }
    }
  }
}

TEST_CASE("fast kernels equal the references with saturated gates and multithreaded rows") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  for (Kind kind : {Kind::kGru, Kind::kLstm}) {
    CAPTURE(name_of(kind));
    // Pre-activations of tens: sigmoid and tanh at 0 / +-1 and the clamped exponential.
    const KernelInputs big = kernel_inputs(kind, {4, 3, 6, 9}, true, rng, 8.0f);
    compare_outputs(run_kernels(big, false), run_kernels(big, true), kind, 1e-4);
    // Enough rows for parallel_for to split the gate kernels and the column sums.
    const KernelInputs wide = kernel_inputs(kind, {3, 200, 17, 40}, true, rng);
    compare_outputs(run_kernels(wide, false), run_kernels(wide, true), kind, 1e-4);
  }
}

TEST_CASE("fast kernels are deterministic from run to run") {
  Rng rng(fresh_seed());
  for (Kind kind : {Kind::kGru, Kind::kLstm}) {
    CAPTURE(name_of(kind));
    const KernelInputs in = kernel_inputs(kind, {4, 300, 19, 48}, true, rng);
    const KernelOutputs a = run_kernels(in, false), b = run_kernels(in, false);
    if (kind == Kind::kLstm) CHECK(bitwise_equal(a.cs, b.cs));
    for (const auto& [x, y] : std::vector<std::pair<Tensor, Tensor>>{{a.hs, b.hs},
                                                                     {a.saved, b.saved},
                                                                     {a.dx, b.dx},
                                                                     {a.dh0, b.dh0},
                                                                     {a.dw_ih, b.dw_ih},
                                                                     {a.dw_hh, b.dw_hh},
                                                                     {a.db_ih, b.db_ih},
                                                                     {a.db_hh, b.db_hh}}) {
      CHECK(bitwise_equal(x, y));
    }
  }
}

TEST_CASE("a NaN input propagates to the outputs instead of being clamped away") {
  Rng rng(fresh_seed());
  for (Kind kind : {Kind::kGru, Kind::kLstm}) {
    KernelInputs in = kernel_inputs(kind, {2, 2, 3, 4}, true, rng);
    in.x.data()[0] = kNaN;  // row 0 of step 0
    const KernelOutputs out = run_kernels(in, false);
    const int64_t H = in.d.hidden, B = in.d.batch;
    for (int64_t j = 0; j < H; ++j) {
      CHECK(std::isnan(out.hs.data()[B * H + j]));         // h_1 of row 0
      CHECK(std::isfinite(out.hs.data()[B * H + H + j]));  // h_1 of row 1 is untouched
    }
  }
}

// ---------------------------------------------------------------- ops: gradients

TEST_CASE("gru_cell and lstm_cell gradients w.r.t. input, state and every weight") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const int64_t B = 3, in = 4, H = 5;
  const Tensor x = random_tensor({B, in}, rng), h = random_tensor({B, H}, rng);
  const Tensor c = random_tensor({B, H}, rng);
  const Params gru = random_params(Kind::kGru, in, H, rng);
  require_gradcheck(
      [](const std::vector<Tensor>& v) { return gru_cell(v[0], v[1], v[2], v[3], v[4], v[5]); },
      {x, h, gru.w_ih, gru.w_hh, gru.b_ih, gru.b_hh}, seed);
  const Params lstm = random_params(Kind::kLstm, in, H, rng);
  // The packed form, state [2, B, H] in and out.
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        return lstm_cell_packed(v[0], v[1], v[2], v[3], v[4], v[5]);
      },
      {x, random_tensor({2, B, H}, rng), lstm.w_ih, lstm.w_hh, lstm.b_ih, lstm.b_hh}, seed);
  // The two views of one result combined unevenly: both paths must reach the op.
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        const LstmState s = lstm_cell(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
        return s.h * 2.0f + s.c * s.c;
      },
      {x, h, c, lstm.w_ih, lstm.w_hh, lstm.b_ih, lstm.b_hh}, seed);
  // Zero states and no biases.
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        return gru_cell(v[0], Tensor(), v[1], v[2], Tensor(), Tensor());
      },
      {x, gru.w_ih, gru.w_hh}, seed);
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        return lstm_cell_packed(v[0], Tensor(), v[1], v[2], Tensor(), v[3]);
      },
      {x, lstm.w_ih, lstm.w_hh, lstm.b_hh}, seed);
}

TEST_CASE("gru_sequence gradients through 5 steps, with and without an initial state") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const int64_t T = 5, B = 3, in = 4, H = 5;
  const Tensor x = random_tensor({T, B, in}, rng), h0 = random_tensor({B, H}, rng);
  const Params p = random_params(Kind::kGru, in, H, rng);
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        const SequenceResult r = gru_sequence(v[0], v[1], v[2], v[3], v[4], v[5]);
        return joined({r.output, r.h_n});
      },
      {x, h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh}, seed);
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        return gru_sequence(v[0], Tensor(), v[1], v[2], v[3], v[4]).output;
      },
      {x, p.w_ih, p.w_hh, p.b_ih, p.b_hh}, seed);
  // Only the final state used.
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        return gru_sequence(v[0], v[1], v[2], v[3], v[4], v[5]).h_n;
      },
      {x, h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh}, seed);
}

TEST_CASE("lstm_sequence gradients through 5 steps, with and without an initial state") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const int64_t T = 5, B = 3, in = 4, H = 5;
  const Tensor x = random_tensor({T, B, in}, rng), h0 = random_tensor({B, H}, rng);
  const Tensor c0 = random_tensor({B, H}, rng);
  const Params p = random_params(Kind::kLstm, in, H, rng);
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        const SequenceResult r = lstm_sequence(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
        return joined({r.output, r.h_n, r.c_n});
      },
      {x, h0, c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh}, seed);
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        const SequenceResult r = lstm_sequence(v[0], Tensor(), Tensor(), v[1], v[2], v[3], v[4]);
        return joined({r.output, r.c_n});
      },
      {x, p.w_ih, p.w_hh, p.b_ih, p.b_hh}, seed);
  // Only the packed final state [h_n; c_n] used.
  require_gradcheck(
      [](const std::vector<Tensor>& v) {
        return lstm_sequence(v[0], v[1], v[2], v[3], v[4], v[5], v[6]).state;
      },
      {x, h0, c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh}, seed);
}

// ---------------------------------------------------------------- ops: against compositions

TEST_CASE("the fused ops equal the cells composed from generic ops, values and gradients") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  for (int64_t H : {1, 7, 33}) {
    for (int64_t B : {1, 3}) {
      CAPTURE(H);
      CAPTURE(B);
      const int64_t in = 5;
      const Tensor x = random_tensor({B, in}, rng), h = random_tensor({B, H}, rng);
      const Tensor c = random_tensor({B, H}, rng);
      const Params g = random_params(Kind::kGru, in, H, rng);
      const std::vector<Tensor> gru_inputs = {x, h, g.w_ih, g.w_hh, g.b_ih, g.b_hh};
      check_same_evaluation(evaluate(
                                [](const std::vector<Tensor>& v) {
                                  return gru_cell(v[0], v[1], v[2], v[3], v[4], v[5]);
                                },
                                gru_inputs, seed),
                            evaluate(
                                [](const std::vector<Tensor>& v) {
                                  return composed_gru_cell(v[0], v[1], v[2], v[3], v[4], v[5]);
                                },
                                gru_inputs, seed),
                            2e-5, 2e-5);
      const Params l = random_params(Kind::kLstm, in, H, rng);
      const std::vector<Tensor> lstm_inputs = {x, h, c, l.w_ih, l.w_hh, l.b_ih, l.b_hh};
      check_same_evaluation(
          evaluate(
              [](const std::vector<Tensor>& v) {
                const LstmState s = lstm_cell(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
                return concat({s.h.reshape({1, s.h.size(0), s.h.size(1)}),
                               s.c.reshape({1, s.c.size(0), s.c.size(1)})},
                              0);
              },
              lstm_inputs, seed),
          evaluate(
              [](const std::vector<Tensor>& v) {
                return composed_lstm_cell(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
              },
              lstm_inputs, seed),
          2e-5, 2e-5);
      // The packed form, its state assembled from the same h and c.
      check_same_evaluation(
          evaluate(
              [](const std::vector<Tensor>& v) {
                const Shape row = {1, v[1].size(0), v[1].size(1)};
                const Tensor state = concat({v[1].reshape(row), v[2].reshape(row)}, 0);
                return lstm_cell_packed(v[0], state, v[3], v[4], v[5], v[6]);
              },
              lstm_inputs, seed),
          evaluate(
              [](const std::vector<Tensor>& v) {
                return composed_lstm_cell(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
              },
              lstm_inputs, seed),
          2e-5, 2e-5);
    }
  }
}

TEST_CASE("the cell op stepped through time equals the sequence op") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  const int64_t T = 5, B = 3, in = 4, H = 7;
  const Tensor x = random_tensor({T, B, in}, rng), h0 = random_tensor({B, H}, rng);
  const Tensor c0 = random_tensor({B, H}, rng);
  const auto step_input = [](const Tensor& xs, int64_t t) {
    return slice(xs, 0, t, t + 1).reshape({xs.size(1), xs.size(2)});
  };
  const auto stacked = [](const std::vector<Tensor>& hs) {
    std::vector<Tensor> rows;
    for (const Tensor& h : hs)
      rows.push_back(h.reshape({1, h.size(0), h.size(1)}));
    return concat(rows, 0);
  };
  for (bool with_state : {true, false}) {
    CAPTURE(with_state);
    const Params g = random_params(Kind::kGru, in, H, rng);
    std::vector<Tensor> gru_inputs = {x, g.w_ih, g.w_hh, g.b_ih, g.b_hh};
    if (with_state) gru_inputs.push_back(h0);
    check_same_evaluation(evaluate(
                              [](const std::vector<Tensor>& v) {
                                const Tensor h = v.size() > 5 ? v[5] : Tensor();
                                const SequenceResult r =
                                    gru_sequence(v[0], h, v[1], v[2], v[3], v[4]);
                                return joined({r.output, r.h_n});
                              },
                              gru_inputs, seed),
                          evaluate(
                              [&](const std::vector<Tensor>& v) {
                                Tensor h = v.size() > 5 ? v[5] : Tensor();
                                std::vector<Tensor> outs;
                                for (int64_t t = 0; t < T; ++t) {
                                  h = gru_cell(step_input(v[0], t), h, v[1], v[2], v[3], v[4]);
                                  outs.push_back(h);
                                }
                                return joined({stacked(outs), h});
                              },
                              gru_inputs, seed),
                          1e-6, 1e-6);
    const Params l = random_params(Kind::kLstm, in, H, rng);
    std::vector<Tensor> lstm_inputs = {x, l.w_ih, l.w_hh, l.b_ih, l.b_hh};
    if (with_state) {
      lstm_inputs.push_back(h0);
      lstm_inputs.push_back(c0);
    }
    check_same_evaluation(
        evaluate(
            [](const std::vector<Tensor>& v) {
              const Tensor h = v.size() > 5 ? v[5] : Tensor(), c = v.size() > 6 ? v[6] : Tensor();
              const SequenceResult r = lstm_sequence(v[0], h, c, v[1], v[2], v[3], v[4]);
              return joined({r.output, r.h_n, r.c_n});
            },
            lstm_inputs, seed),
        evaluate(
            [&](const std::vector<Tensor>& v) {
              LstmState s{v.size() > 5 ? v[5] : Tensor(), v.size() > 6 ? v[6] : Tensor()};
              std::vector<Tensor> outs;
              for (int64_t t = 0; t < T; ++t) {
                s = lstm_cell(step_input(v[0], t), s.h, s.c, v[1], v[2], v[3], v[4]);
                outs.push_back(s.h);
              }
              return joined({stacked(outs), s.h, s.c});
            },
            lstm_inputs, seed),
        1e-6, 1e-6);
  }
}

TEST_CASE("ops give identical values and gradients on repeated runs") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const int64_t T = 4, B = 160, in = 24, H = 40;
  const Tensor x = random_tensor({T, B, in}, rng), h0 = random_tensor({B, H}, rng);
  const Tensor c0 = random_tensor({B, H}, rng);
  const Params g = random_params(Kind::kGru, in, H, rng);
  const Params l = random_params(Kind::kLstm, in, H, rng);
  const auto gru_fn = [](const std::vector<Tensor>& v) {
    return gru_sequence(v[0], v[1], v[2], v[3], v[4], v[5]).output;
  };
  const auto lstm_fn = [](const std::vector<Tensor>& v) {
    return lstm_sequence(v[0], v[1], v[2], v[3], v[4], v[5], v[6]).state;
  };
  const std::vector<std::pair<TensorFn, std::vector<Tensor>>> cases = {
      {gru_fn, {x, h0, g.w_ih, g.w_hh, g.b_ih, g.b_hh}},
      {lstm_fn, {x, h0, c0, l.w_ih, l.w_hh, l.b_ih, l.b_hh}}};
  for (const auto& [fn, inputs] : cases) {
    const Evaluation a = evaluate(fn, inputs, seed), b = evaluate(fn, inputs, seed);
    CHECK(bitwise_equal(a.out, b.out));
    for (size_t k = 0; k < a.grads.size(); ++k)
      CHECK(bitwise_equal(a.grads[k], b.grads[k]));
  }
}

TEST_CASE("an empty batch gives empty outputs and zero weight gradients") {
  Rng rng(fresh_seed());
  Params p = random_params(Kind::kLstm, 4, 6, rng);
  for (Tensor* t : {&p.w_ih, &p.w_hh, &p.b_ih, &p.b_hh})
    t->set_requires_grad(true);
  const SequenceResult r =
      lstm_sequence(Tensor::zeros({5, 0, 4}), Tensor(), Tensor(), p.w_ih, p.w_hh, p.b_ih, p.b_hh);
  CHECK(r.output.shape() == Shape{5, 0, 6});
  CHECK(r.c_n.shape() == Shape{0, 6});
  sum(r.output).backward();
  for (const Tensor& t : {p.w_ih, p.w_hh, p.b_ih, p.b_hh}) {
    REQUIRE(t.grad().defined());
    for (float v : t.grad().to_vector())
      CHECK(v == 0.0f);
  }
}

// ---------------------------------------------------------------- PyTorch fixtures

namespace {

// Runs our op on the fixture's inputs, backpropagates the fixture's upstream gradients and
// compares everything torch saved (computed in float64 from the same float32 values, so 1e-5
// relative is the float32 rounding of our own sums with a wide margin).
void check_against_torch(const std::string& kind, bool with_state) {
  const std::string prefix = kind + (with_state ? "" : "0");
  const bool lstm = kind == "lstm";
  const auto fx = [](const std::string& name) { return read_fixture("recurrent", name); };
  Params p = fixture_params(kind);
  Tensor x = fx(kind + "_x");
  Tensor h0 = with_state ? fx(kind + "_h0") : Tensor();
  Tensor c0 = with_state && lstm ? fx(kind + "_c0") : Tensor();
  for (Tensor* t : {&x, &h0, &c0, &p.w_ih, &p.w_hh, &p.b_ih, &p.b_hh}) {
    if (t->defined()) t->set_requires_grad(true);
  }
  const SequenceResult r = lstm ? lstm_sequence(x, h0, c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh)
                                : gru_sequence(x, h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh);
  const double rtol = 1e-5, atol = 1e-6;
  check_close(r.output, fx(prefix + "_out"), rtol, atol);
  check_close(r.h_n, fx(prefix + "_hn"), rtol, atol);
  Tensor loss = sum(r.output * fx(kind + "_g_out")) + sum(r.h_n * fx(kind + "_g_hn"));
  if (lstm) {
    check_close(r.c_n, fx(prefix + "_cn"), rtol, atol);
    loss = loss + sum(r.c_n * fx(kind + "_g_cn"));
  }
  loss.backward();
  check_close(x.grad(), fx(prefix + "_gx"), rtol, atol);
  if (with_state) {
    check_close(h0.grad(), fx(prefix + "_gh0"), rtol, atol);
    if (lstm) check_close(c0.grad(), fx(prefix + "_gc0"), rtol, atol);
  }
  check_close(p.w_ih.grad(), fx(prefix + "_gweight_ih"), rtol, atol);
  check_close(p.w_hh.grad(), fx(prefix + "_gweight_hh"), rtol, atol);
  check_close(p.b_ih.grad(), fx(prefix + "_gbias_ih"), rtol, atol);
  check_close(p.b_hh.grad(), fx(prefix + "_gbias_hh"), rtol, atol);
}

}  // namespace

TEST_CASE("GRU matches torch.nn.GRU: outputs, final state, every gradient") {
  SUBCASE("with h0") {
    check_against_torch("gru", true);
  }
  SUBCASE("zero h0") {
    check_against_torch("gru", false);
  }
}

TEST_CASE("LSTM matches torch.nn.LSTM: outputs, final states, every gradient") {
  SUBCASE("with h0, c0") {
    check_against_torch("lstm", true);
  }
  SUBCASE("zero h0, c0") {
    check_against_torch("lstm", false);
  }
}

// ---------------------------------------------------------------- modules

TEST_CASE("modules carry torch's parameter names, shapes and initial range") {
  Rng rng(fresh_seed());
  GRU gru(4, 6, true, rng);
  LSTMCell lstm(4, 6, true, rng);
  for (const auto& [module, gates] :
       std::vector<std::pair<const RecurrentCell*, int64_t>>{{&gru, 3}, {&lstm, 4}}) {
    const NamedTensorList named = module->named_parameters();
    REQUIRE(named.size() == 4);
    const std::vector<std::pair<std::string, Shape>> expect = {{"weight_ih", {gates * 6, 4}},
                                                               {"weight_hh", {gates * 6, 6}},
                                                               {"bias_ih", {gates * 6}},
                                                               {"bias_hh", {gates * 6}}};
    const float bound = 1.0f / std::sqrt(6.0f);
    for (size_t k = 0; k < 4; ++k) {
      CHECK(named[k].first == expect[k].first);
      CHECK(named[k].second.shape() == expect[k].second);
      CHECK(named[k].second.requires_grad());
      for (float v : named[k].second.to_vector())
        CHECK((v >= -bound && v <= bound));
    }
    CHECK(module->input_size() == 4);
    CHECK(module->hidden_size() == 6);
  }
  GRUCell no_bias(3, 2, false, rng);
  CHECK(no_bias.named_parameters().size() == 2);
  CHECK(no_bias.parameter_count() == 3 * 2 * 3 + 3 * 2 * 2);
  CHECK_THROWS_AS(LSTM(3, 0, true, rng), ValueError);
}

TEST_CASE("modules loaded with torch's parameters reproduce torch.nn.GRU / LSTM") {
  for (const std::string kind : {"gru", "lstm"}) {
    CAPTURE(kind);
    Rng rng(1);
    std::unique_ptr<RecurrentCell> module;
    if (kind == "gru") {
      module = std::make_unique<GRU>(4, 6, true, rng);
    } else {
      module = std::make_unique<LSTM>(4, 6, true, rng);
    }
    // A checkpoint maps 1:1: torch's weight_ih_l0 is our weight_ih, same layout.
    for (auto& [name, t] : module->named_parameters())
      t.copy_from(read_fixture("recurrent", kind + "_" + name));
    const Tensor x = read_fixture("recurrent", kind + "_x");
    const Tensor h0 = read_fixture("recurrent", kind + "_h0");
    Tensor state = h0;
    if (kind == "lstm") {
      const Tensor c0 = read_fixture("recurrent", kind + "_c0");
      state = concat({h0.reshape({1, 3, 6}), c0.reshape({1, 3, 6})}, 0);
    }
    const SequenceResult r = module->sequence(x, state);
    check_close(r.output, read_fixture("recurrent", kind + "_out"), 1e-5, 1e-6);
    check_close(module->hidden(r.state), read_fixture("recurrent", kind + "_hn"), 1e-5, 1e-6);
    const SequenceResult zero = module->sequence(x, Tensor());
    check_close(zero.output, read_fixture("recurrent", kind + "0_out"), 1e-5, 1e-6);
    if (kind == "gru") {
      check_close(dynamic_cast<GRU&>(*module).forward(x, h0).output,
                  read_fixture("recurrent", "gru_out"), 1e-5, 1e-6);
    } else {
      const SequenceResult lr =
          dynamic_cast<LSTM&>(*module).forward(x, h0, read_fixture("recurrent", "lstm_c0"));
      check_close(lr.c_n, read_fixture("recurrent", "lstm_cn"), 1e-5, 1e-6);
    }
  }
}

TEST_CASE("RecurrentCell: step from initial_state through time equals sequence, GRU or LSTM") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  const int64_t T = 4, B = 3, in = 5, H = 6;
  const Tensor x = random_tensor({T, B, in}, rng);
  std::vector<std::unique_ptr<RecurrentCell>> cells;
  cells.push_back(std::make_unique<GRUCell>(in, H, true, rng));
  cells.push_back(std::make_unique<LSTMCell>(in, H, true, rng));
  for (auto& cell : cells) {
    Tensor state = cell->initial_state(B);
    CHECK(cell->hidden(state).shape() == Shape{B, H});
    std::vector<Tensor> hidden;
    for (int64_t t = 0; t < T; ++t) {
      state = cell->step(slice(x, 0, t, t + 1).reshape({B, in}), state);
      hidden.push_back(cell->hidden(state).reshape({1, B, H}));
    }
    const SequenceResult r = cell->sequence(x, Tensor());
    check_close(concat(hidden, 0), r.output, 1e-6, 1e-6);
    check_close(state, r.state, 1e-6, 1e-6);
    // An undefined state steps like the zero state.
    check_close(cell->step(slice(x, 0, 0, 1).reshape({B, in}), Tensor()),
                cell->step(slice(x, 0, 0, 1).reshape({B, in}), cell->initial_state(B)), 0.0, 0.0);
    // The whole recurrence trains: gradients reach every parameter through the states.
    sum(cell->hidden(state)).backward();
    for (const auto& named : cell->named_parameters()) {
      const std::string& name = named.first;  // CAPTURE cannot capture a binding (C++17)
      const Tensor& t = named.second;
      CAPTURE(name);
      CHECK(t.grad().defined());
    }
  }
}

// ---------------------------------------------------------------- errors

TEST_CASE("shape errors name every shape; bad states are refused") {
  Rng rng(fresh_seed());
  const Params g = random_params(Kind::kGru, 4, 6, rng);
  try {
    gru_sequence(Tensor::zeros({5, 3, 4}), Tensor::zeros({3, 5}), g.w_ih, g.w_hh, g.b_ih, g.b_hh);
    FAIL("no throw");
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()) ==
          "gru_sequence: x [5,3,4], h0 [3,5], weight_ih [18,4], weight_hh [18,6], bias_ih [18], "
          "bias_hh [18] do not fit; expected x [T,B,in] with T >= 1, states [B,H], weight_ih "
          "[3H,in], weight_hh [3H,H], biases [3H] with H >= 1");
  }
  CHECK_THROWS_AS(gru_sequence(Tensor::zeros({0, 3, 4}), Tensor(), g.w_ih, g.w_hh, g.b_ih, g.b_hh),
                  ShapeError);
  CHECK_THROWS_AS(gru_cell(Tensor::zeros({3, 5}), Tensor(), g.w_ih, g.w_hh, g.b_ih, g.b_hh),
                  ShapeError);
  CHECK_THROWS_AS(
      gru_cell(Tensor::zeros({3, 4}), Tensor(), g.w_ih, g.w_hh, Tensor::zeros({17}), g.b_hh),
      ShapeError);
  CHECK_THROWS_AS(gru_cell(Tensor(), Tensor(), g.w_ih, g.w_hh, g.b_ih, g.b_hh), ValueError);
  // GRU weights are one gate short for an LSTM.
  CHECK_THROWS_AS(
      lstm_cell(Tensor::zeros({3, 4}), Tensor(), Tensor(), g.w_ih, g.w_hh, Tensor(), Tensor()),
      ShapeError);
  const Params l = random_params(Kind::kLstm, 4, 6, rng);
  try {
    lstm_cell_packed(Tensor::zeros({3, 4}), Tensor::zeros({3, 6}), l.w_ih, l.w_hh, l.b_ih, l.b_hh);
    FAIL("no throw");
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()) ==
          "lstm_cell: x [3,4], state [3,6], weight_ih [24,4], weight_hh [24,6], bias_ih [24], "
          "bias_hh [24] do not fit; expected x [B,in], state [2,B,H], weight_ih [4H,in], "
          "weight_hh [4H,H], biases [4H] with H >= 1");
  }
  LSTMCell cell(4, 6, true, rng);
  CHECK_THROWS_AS(cell.step(Tensor::zeros({3, 4}), Tensor::zeros({3, 6})), ShapeError);
  CHECK_THROWS_AS(cell.step(Tensor::zeros({3, 4}), Tensor::zeros({2, 3, 5})), ShapeError);
  CHECK_THROWS_AS(cell.hidden(Tensor()), ValueError);
  CHECK_THROWS_AS(cell.hidden(Tensor::zeros({3, 6})), ShapeError);
  CHECK_THROWS_AS(GRUCell(4, 6, true, rng).hidden(Tensor()), ValueError);
}
