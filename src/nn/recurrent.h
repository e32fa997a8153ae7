// Recurrent cells: GRU and LSTM, forward and backward written by hand, with PyTorch's exact
// conventions so that a torch.nn.GRU / torch.nn.LSTM checkpoint maps 1:1.
//
//   GRU, gates r, z, n:
//     r = s(W_ir x + b_ir + W_hr h + b_hr)      z = s(W_iz x + b_iz + W_hz h + b_hz)
//     n = tanh(W_in x + b_in + r * (W_hn h + b_hn))      h' = (1 - z) * n + z * h
//   LSTM, gates i, f, g, o:
//     i, f, o = s(W_i* x + b_i* + W_h* h + b_h*),  g = tanh(...),  c' = f * c + i * g,
//     h' = o * tanh(c')
//   weight_ih [G*H, in], weight_hh [G*H, H], bias_ih [G*H], bias_hh [G*H], the G gate blocks
//   stacked in the order above (G = 3 for GRU, 4 for LSTM): torch's weight_ih_l0 etc.
//   GRU's reset gate multiplies the hidden projection *after* its bias ("linear before
//   reset", the cuDNN form), so the hidden projection's n block is kept apart from the input's.
//
// Three layers, lowest first:
//  - rnn::*_forward / rnn::*_backward: raw kernels on float pointers. The input projection of
//    all steps is one sgemm, each step is one sgemm on h plus one fused elementwise gate kernel
//    (OpenMP over batch rows, `omp simd` over H) that saves the activations backward needs.
//    Backward through time is, per step, one fused gate kernel and one sgemm for dh_{t-1};
//    the weight gradients are one sgemm each over all steps at the end. rnn::reference:: holds
//    plain scalar loops with the same signatures, which the tests hold the fast kernels to.
//  - Autograd ops gru_cell, lstm_cell, gru_sequence, lstm_sequence.
//  - Modules GRUCell, LSTMCell, GRU, LSTM behind one RecurrentCell interface, so a model can
//    switch its recurrence between GRU and LSTM.
//
// Several outputs from one op: the engine attaches one Node to one Tensor, so an op with
// several outputs (LSTM's h' and c', a sequence's outputs and final state) returns one packed
// tensor and hands out leading-axis views of it, which share its storage. Gradients reaching
// any view accumulate into the packed tensor's gradient (zeros where a view was not used), and
// the op's backward reads that whole gradient: dL/dh' and dL/dc' arrive together, however the
// caller combined the views. A view's backward costs one zero-filled copy of the packed
// gradient, so the step-to-step path (lstm_cell_packed, RecurrentCell::step) takes and returns
// the packed LSTM state [2, B, H] itself and slices nothing.
#pragma once

#include <cstdint>

#include "autograd/rng.h"
#include "autograd/tensor.h"
#include "nn/module.h"

namespace stgnn {

// ---------------------------------------------------------------- raw kernels

namespace rnn {

// Sizes of one recurrent pass: T steps over a batch of B rows, `input` features in,
// `hidden` (H) features of state.
struct Dims {
  int64_t steps, batch, input, hidden;
};

// Parameters of one layer, row-major: w_ih [G*H, in], w_hh [G*H, H], b_ih, b_hh [G*H]
// (zeros for a layer without bias; never null).
struct Weights {
  const float* w_ih;
  const float* w_hh;
  const float* b_ih;
  const float* b_hh;
};

// Gradients a backward pass writes (overwrites, not accumulates). Null pointers are not wanted
// and not computed (dc0 is LSTM only). dx [T*B, in], dh0 / dc0 [B, H], dw_ih [G*H, in],
// dw_hh [G*H, H], db_ih / db_hh [G*H].
struct Grads {
  float* dx = nullptr;
  float* dh0 = nullptr;
  float* dc0 = nullptr;
  float* dw_ih = nullptr;
  float* dw_hh = nullptr;
  float* db_ih = nullptr;
  float* db_hh = nullptr;
};

// Floats of saved activations per batch row and step: GRU keeps r, z, n and W_hn h + b_hn;
// LSTM keeps i, f, g, o and tanh(c').
constexpr int64_t kGruSavedPerHidden = 4;
constexpr int64_t kLstmSavedPerHidden = 5;

// GRU over T steps. x [T*B, in] (step-major rows), h0 [B, H] or null for zeros.
// Writes hs [(T+1)*B, H] = h_0, h_1, ..., h_T (block 0 the initial state, so that
// hs[0 .. T*B) is every step's previous state, stacked) and saved [T*B, 4H].
void gru_forward(const Dims& d, const float* x, const float* h0, const Weights& w, float* hs,
                 float* saved);
// grad_hs [T*B, H] = dL/dh_1 .. dL/dh_T. Reads what gru_forward wrote; h0_is_zero says the
// forward ran with h0 = null (the kernel then skips products with the zero state).
void gru_backward(const Dims& d, const float* x, const Weights& w, const float* hs,
                  const float* saved, const float* grad_hs, bool h0_is_zero, const Grads& g);

// LSTM over T steps. x [T*B, in], h0 / c0 [B, H] or null for zeros.
// Writes hs [(T+1)*B, H] = h_0 .. h_T, cs [(T+1)*B, H] = c_0 .. c_T and saved [T*B, 5H].
void lstm_forward(const Dims& d, const float* x, const float* h0, const float* c0, const Weights& w,
                  float* hs, float* cs, float* saved);
// grad_hs [T*B, H] = dL/dh_1 .. dL/dh_T, grad_c_last [B, H] = dL/dc_T or null for zero.
void lstm_backward(const Dims& d, const float* x, const Weights& w, const float* hs,
                   const float* cs, const float* saved, const float* grad_hs,
                   const float* grad_c_last, bool h0_is_zero, const Grads& g);

// The same four functions as plain scalar loops (double accumulation, std::exp / std::tanh,
// no BLAS, no threads): the specification the fast kernels are tested against.
namespace reference {
void gru_forward(const Dims& d, const float* x, const float* h0, const Weights& w, float* hs,
                 float* saved);
void gru_backward(const Dims& d, const float* x, const Weights& w, const float* hs,
                  const float* saved, const float* grad_hs, bool h0_is_zero, const Grads& g);
void lstm_forward(const Dims& d, const float* x, const float* h0, const float* c0, const Weights& w,
                  float* hs, float* cs, float* saved);
void lstm_backward(const Dims& d, const float* x, const Weights& w, const float* hs,
                   const float* cs, const float* saved, const float* grad_hs,
                   const float* grad_c_last, bool h0_is_zero, const Grads& g);
}  // namespace reference

}  // namespace rnn

// ---------------------------------------------------------------- autograd ops
//
// In all ops: w_ih [G*H, in], w_hh [G*H, H], b_ih / b_hh [G*H] or undefined (no bias); a state
// argument that is undefined means zeros. Every op is differentiable w.r.t. every tensor
// argument. Shape mismatches throw ShapeError naming every shape.

// One GRU step: x [B, in], h [B, H] -> h' [B, H].
Tensor gru_cell(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                const Tensor& b_ih, const Tensor& b_hh);

// h and c of an LSTM, each [B, H].
struct LstmState {
  Tensor h, c;
};
// One LSTM step: x [B, in], h [B, H], c [B, H] -> {h', c'}. One op whose result is
// [2, B, H] = [h'; c']; h' and c' are views of it.
LstmState lstm_cell(const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih,
                    const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh);
// The same step on packed states: x [B, in], state [2, B, H] = [h; c] -> [2, B, H] = [h'; c'].
// The form RecurrentCell uses: a state handed from step to step is never sliced, so its
// gradient arrives whole, with no view in between.
Tensor lstm_cell_packed(const Tensor& x, const Tensor& state, const Tensor& w_ih,
                        const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh);

// What a sequence op returns; every member is a view of the op's one packed result.
struct SequenceResult {
  Tensor output;  // [T, B, H]: h_1 .. h_T
  Tensor h_n;     // [B, H]: h_T
  Tensor c_n;     // [B, H]: c_T (LSTM; undefined for GRU)
  Tensor state;   // the final state packed as RecurrentCell::step takes it: GRU h_n [B, H],
                  // LSTM [2, B, H] = [h_n; c_n]
};

// GRU over a sequence: x [T, B, in] (T >= 1), h0 [B, H] -> outputs and final state.
// The op's packed result is output itself.
SequenceResult gru_sequence(const Tensor& x, const Tensor& h0, const Tensor& w_ih,
                            const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh);
// LSTM over a sequence: x [T, B, in], h0 / c0 [B, H] -> outputs and final state.
// The op's packed result is [T + 1, B, H] = h_1 .. h_T, c_T.
SequenceResult lstm_sequence(const Tensor& x, const Tensor& h0, const Tensor& c0,
                             const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                             const Tensor& b_hh);

// ---------------------------------------------------------------- modules

// The interface a model's recurrent stage uses, whatever the cell. A state is one Tensor:
// GRU's is h [B, H], LSTM's is [2, B, H] = [h; c]. An undefined state means zeros.
// Parameters are named weight_ih, weight_hh, bias_ih, bias_hh (torch's, without the _l0 of
// torch.nn.GRU / LSTM), initialised U(-1/sqrt(H), 1/sqrt(H)) as torch does, in that order.
//
// A time stage interleaved with other work, one frame at a time:
//   Tensor state = cell.initial_state(B);   // or Tensor() for zeros
//   for (frame ...) { state = cell.step(v, state); v = cell.hidden(state); ... }
class RecurrentCell : public Module {
 public:
  // One step: x [B, in], state -> the next state.
  virtual Tensor step(const Tensor& x, const Tensor& state) = 0;
  // A whole sequence at once: x [T, B, in], initial state -> outputs and final state; the same
  // numbers as T calls of step, faster.
  virtual SequenceResult sequence(const Tensor& x, const Tensor& state) = 0;
  // The zero state for a batch of B rows.
  virtual Tensor initial_state(int64_t batch) const = 0;
  // The hidden output h [B, H] of a state (a view, differentiable).
  virtual Tensor hidden(const Tensor& state) const = 0;

  int64_t input_size() const { return input_size_; }
  int64_t hidden_size() const { return hidden_size_; }

  Tensor weight_ih, weight_hh, bias_ih, bias_hh;  // bias_* undefined without bias

 protected:
  // weight_ih [gates*H, in], weight_hh [gates*H, H], biases [gates*H] when `bias`.
  RecurrentCell(int64_t gates, int64_t input_size, int64_t hidden_size, bool bias, Rng& rng);

 private:
  int64_t input_size_, hidden_size_;
};

// torch.nn.GRUCell.
class GRUCell : public RecurrentCell {
 public:
  GRUCell(int64_t input_size, int64_t hidden_size, bool bias = true, Rng& rng = global_rng());
  // x [B, in], h [B, H] or undefined -> h' [B, H].
  Tensor forward(const Tensor& x, const Tensor& h = Tensor());
  Tensor step(const Tensor& x, const Tensor& state) override { return forward(x, state); }
  SequenceResult sequence(const Tensor& x, const Tensor& state) override;
  Tensor initial_state(int64_t batch) const override;
  Tensor hidden(const Tensor& state) const override;  // the state itself
};

// torch.nn.LSTMCell.
class LSTMCell : public RecurrentCell {
 public:
  LSTMCell(int64_t input_size, int64_t hidden_size, bool bias = true, Rng& rng = global_rng());
  // x [B, in], h and c [B, H] or undefined -> {h', c'}.
  LstmState forward(const Tensor& x, const Tensor& h = Tensor(), const Tensor& c = Tensor());
  // state [2, B, H] = [h; c] -> [2, B, H].
  Tensor step(const Tensor& x, const Tensor& state) override;
  SequenceResult sequence(const Tensor& x, const Tensor& state) override;
  Tensor initial_state(int64_t batch) const override;
  Tensor hidden(const Tensor& state) const override;
};

// torch.nn.GRU (one layer, batch_first = false): the GRUCell parameters run over sequences.
class GRU : public GRUCell {
 public:
  GRU(int64_t input_size, int64_t hidden_size, bool bias = true, Rng& rng = global_rng())
      : GRUCell(input_size, hidden_size, bias, rng) {}
  // x [T, B, in], h0 [B, H] or undefined -> {output [T, B, H], h_n}.
  SequenceResult forward(const Tensor& x, const Tensor& h0 = Tensor());
};

// torch.nn.LSTM (one layer, batch_first = false).
class LSTM : public LSTMCell {
 public:
  LSTM(int64_t input_size, int64_t hidden_size, bool bias = true, Rng& rng = global_rng())
      : LSTMCell(input_size, hidden_size, bias, rng) {}
  // x [T, B, in], h0 / c0 [B, H] or undefined -> {output [T, B, H], h_n, c_n}.
  SequenceResult forward(const Tensor& x, const Tensor& h0 = Tensor(), const Tensor& c0 = Tensor());
};

}  // namespace stgnn
