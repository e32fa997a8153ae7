// Recurrent cells at RSTG's time-stage shapes: T = 10 frames, B = 32 videos x 14 nodes = 448
// rows, in = H = 128 or 512, no initial state, gradients for the input and every weight.
//
//   BM_{Gru,Lstm}Sequence         the autograd op, forward + backward
//   BM_{Gru,Lstm}SequenceForward  the op's forward alone, without recording (inference)
//   BM_{Gru,Lstm}SgemmOnly        only the cblas_sgemm calls one forward + backward makes: the
//                                 same shapes in the same order on preallocated buffers
//
// Sequence / SgemmOnly is the cost of everything that is not a matrix product (gate kernels,
// allocation, autograd); the goal is <= 1.3. bench/torch/bench_recurrent.py times
// torch.nn.GRU / LSTM at the same shapes.
//
//   build/bench_recurrent --benchmark_filter=Gru
// Counter: GFLOPs = the sgemm flops of the pass / second (the same count for all three kinds).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "autograd/ops.h"
#include "nn/recurrent.h"

using namespace stgnn;

namespace {

constexpr int64_t kSteps = 10;
constexpr int64_t kBatch = 32 * 14;

// The matrix products of one pass with no initial state (so the first step has no hidden
// product) and no gradient for it (so the last backward step has none either), per
// nn/recurrent.cpp: input projection [T*B, in] x [in, G*H]; T - 1 hidden products
// [B, H] x [H, G*H]; T - 1 backward hidden products [B, G*H] x [G*H, H]; dX = dG W_ih,
// dW_ih = dG^T X, dW_hh = dG^T H_prev over (T - 1) * B rows.
double pass_flops(int64_t gates, int64_t in, int64_t H) {
  const double T = kSteps, B = kBatch, width = static_cast<double>(gates * H);
  const double input_side = 2.0 * T * B * width * in;        // one of: projection, dX, dW_ih
  const double hidden_side = 2.0 * (T - 1) * B * width * H;  // one of: forward, dh, dW_hh
  return 3.0 * input_side + 3.0 * hidden_side;
}

void set_flops(benchmark::State& state, double flops) {
  state.counters["GFLOPs"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

template <typename Layer>
void sequence_forward_backward(benchmark::State& state, int64_t gates) {
  const int64_t H = state.range(0), in = H;
  Rng rng(1);
  Layer layer(in, H, true, rng);
  Tensor x = randn({kSteps, kBatch, in}, rng).set_requires_grad(true);
  const Tensor g = Tensor::ones({kSteps, kBatch, H});
  for (auto _ : state) {
    const SequenceResult r = layer.forward(x);
    r.output.backward(g);
    layer.zero_grad();
    x.zero_grad();
  }
  set_flops(state, pass_flops(gates, in, H));
}

template <typename Layer>
void sequence_forward(benchmark::State& state, int64_t gates) {
  const int64_t H = state.range(0), in = H;
  Rng rng(1);
  Layer layer(in, H, true, rng);
  const Tensor x = randn({kSteps, kBatch, in}, rng);
  NoGradGuard no_grad;
  for (auto _ : state) {
    const SequenceResult r = layer.forward(x);
    benchmark::DoNotOptimize(r.output.data());
  }
  const double T = kSteps, B = kBatch, width = static_cast<double>(gates * H);
  set_flops(state, 2.0 * T * B * width * in + 2.0 * (T - 1) * B * width * H);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
          float* c, float beta) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a,
              static_cast<blasint>(ta ? m : k), b, static_cast<blasint>(tb ? k : n), beta, c,
              static_cast<blasint>(n));
}

// The sgemm calls of sequence_forward_backward, in order, on buffers allocated once. GRU's
// backward hidden product accumulates into z * dh (beta 1); LSTM's overwrites (beta 0).
void sgemm_only(benchmark::State& state, int64_t gates) {
  const int64_t H = state.range(0), in = H, T = kSteps, B = kBatch, width = gates * H;
  const auto buffer = [](int64_t n) { return std::vector<float>(static_cast<size_t>(n), 0.01f); };
  std::vector<float> x = buffer(T * B * in), w_ih = buffer(width * in), w_hh = buffer(width * H);
  std::vector<float> hs = buffer((T + 1) * B * H), xp = buffer(T * B * width);
  std::vector<float> hp = buffer(B * width), carry = buffer(B * H);
  // GRU keeps the input side's and the hidden side's gate gradients apart; LSTM shares one.
  std::vector<float> dgx = buffer(T * B * width), dgh = buffer(gates == 3 ? T * B * width : 0);
  const float* dg_hidden = gates == 3 ? dgh.data() : dgx.data();
  std::vector<float> dx = buffer(T * B * in), dw_ih = buffer(width * in), dw_hh = buffer(width * H);
  const float backward_beta = gates == 3 ? 1.0f : 0.0f;
  for (auto _ : state) {
    gemm(false, true, T * B, width, in, x.data(), w_ih.data(), xp.data(), 0.0f);
    for (int64_t t = 1; t < T; ++t)
      gemm(false, true, B, width, H, hs.data() + t * B * H, w_hh.data(), hp.data(), 0.0f);
    for (int64_t t = T - 1; t >= 1; --t) {
      gemm(false, false, B, H, width, dg_hidden + t * B * width, w_hh.data(), carry.data(),
           backward_beta);
    }
    gemm(false, false, T * B, in, width, dgx.data(), w_ih.data(), dx.data(), 0.0f);
    gemm(true, false, width, in, T * B, dgx.data(), x.data(), dw_ih.data(), 0.0f);
    gemm(true, false, width, H, (T - 1) * B, dg_hidden + B * width, hs.data() + B * H, dw_hh.data(),
         0.0f);
    benchmark::DoNotOptimize(dw_hh.data());
  }
  set_flops(state, pass_flops(gates, in, H));
}

void BM_GruSequence(benchmark::State& state) {
  sequence_forward_backward<GRU>(state, 3);
}
void BM_LstmSequence(benchmark::State& state) {
  sequence_forward_backward<LSTM>(state, 4);
}
void BM_GruSequenceForward(benchmark::State& state) {
  sequence_forward<GRU>(state, 3);
}
void BM_LstmSequenceForward(benchmark::State& state) {
  sequence_forward<LSTM>(state, 4);
}
void BM_GruSgemmOnly(benchmark::State& state) {
  sgemm_only(state, 3);
}
void BM_LstmSgemmOnly(benchmark::State& state) {
  sgemm_only(state, 4);
}

BENCHMARK(BM_GruSequence)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_GruSgemmOnly)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LstmSequence)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LstmSgemmOnly)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_GruSequenceForward)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LstmSequenceForward)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
