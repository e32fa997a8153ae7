// Foundation benchmarks: the machine's two ceilings (sgemm GFLOP/s, copy GB/s), the cost of
// the autograd layer around matmul, and conv2d forward+backward at the RSTG backbone's shapes.
//
//   build/bench_foundation                       all
//   build/bench_foundation --benchmark_filter=Conv
// Counters: GFLOPs = useful flops / second; GBps = bytes moved / second.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstring>
#include <string>
#include <vector>

#include "autograd/blas.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

using namespace stgnn;

namespace {

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOPs"] =
      benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// ---- ceilings

void BM_SgemmPeak(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::vector<float> a(static_cast<size_t>(n) * n, 1.0f), b(a), c(a);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_SgemmPeak)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

// Copy bandwidth: 256 MiB copied by all threads, counting bytes read + bytes written.
void BM_CopyBandwidth(benchmark::State& state) {
  const int64_t n = 64 << 20;  // floats
  Tensor src = Tensor::ones({n}), dst = Tensor::zeros({n});
  for (auto _ : state) {
    parallel_for(n, 1 << 20, [&](int64_t b, int64_t e) {
      std::memcpy(dst.data() + b, src.data() + b, static_cast<size_t>(e - b) * sizeof(float));
    });
    benchmark::DoNotOptimize(dst.data());
  }
  state.counters["GBps"] = benchmark::Counter(2.0 * n * sizeof(float) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CopyBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- sgemm implementations side by side: OpenBLAS vs our AVX-512 kernel (blas.h), same shapes,
// same run. Shapes: a square peak; GLEVR's per-edge Linear (E = 9,600 edge rows, 1536 -> 1024)
// forward, input gradient and weight gradient; an RSTG conv as im2col (64 channels, 3x3x32 taps,
// 32 videos x 10 frames x 16x16 pixels); a recurrent step's gate product (batch 448, 128 -> 512).
struct GemmShape {
  const char* name;
  bool transpose_a, transpose_b;
  int64_t m, n, k;
};
const GemmShape kGemmShapes[] = {
    {"square_1024", false, false, 1024, 1024, 1024},
    {"glevr_edge_forward", false, true, 9600, 1024, 1536},
    {"glevr_edge_grad_input", false, false, 9600, 1536, 1024},
    {"glevr_edge_grad_weight", true, false, 1024, 1536, 9600},
    {"rstg_conv_im2col", false, false, 64, 81920, 288},
    {"recurrent_gates", false, true, 448, 512, 128},
};

void BM_Gemm(benchmark::State& state) {
  const GemmShape& shape = kGemmShapes[state.range(1)];
  const auto backend = state.range(0) == 0 ? GemmBackend::kOpenBlas : GemmBackend::kAvx512;
  if (backend == GemmBackend::kAvx512 && !gemm_avx512_available()) {
    state.SkipWithError("built without AVX-512");
    return;
  }
  state.SetLabel(std::string(shape.name) +
                 (backend == GemmBackend::kOpenBlas ? " openblas" : " avx512"));
  std::vector<float> a(static_cast<size_t>(shape.m * shape.k), 0.5f),
      b(static_cast<size_t>(shape.k * shape.n), 0.25f), c(static_cast<size_t>(shape.m * shape.n));
  for (auto _ : state) {
    sgemm_with(backend, shape.transpose_a, shape.transpose_b, shape.m, shape.n, shape.k, a.data(),
               b.data(), c.data(), false);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, 2.0 * shape.m * shape.n * shape.k);
}
// Interleaved (shape, then backend) so each pair runs back to back.
BENCHMARK(BM_Gemm)
    ->ArgsProduct({{0, 1}, {0, 1, 2, 3, 4, 5}})
    ->ArgNames({"avx512", "shape"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- matmul: raw sgemm vs the autograd op (which also allocates its result)

void BM_MatmulRawSgemm(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a), c(a);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_MatmulRawSgemm)->Arg(256)->Arg(512)->Arg(1024)->UseRealTime();

void BM_MatmulAutograd(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = Tensor::full({n, n}, 0.5f), b = Tensor::full({n, n}, 0.5f);
  for (auto _ : state) {
    Tensor c = matmul(a, b);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_MatmulAutograd)->Arg(256)->Arg(512)->Arg(1024)->UseRealTime();

// ---- conv2d forward + backward at the RSTG backbone's layer shapes
// Args: batch (frames), in channels, out channels, input size. 3x3, no padding.

void BM_Conv2dForwardBackward(benchmark::State& state) {
  const int64_t n = state.range(0), c = state.range(1), o = state.range(2), s = state.range(3);
  Rng rng(1);
  Tensor x =
      randn({n, c, s, s}, rng).set_requires_grad(c > 1);  // the first layer needs no input gradient
  Tensor w = randn({o, c, 3, 3}, rng, 0.0f, 0.1f).set_requires_grad(true);
  Tensor b = Tensor::zeros({o}).set_requires_grad(true);
  const int64_t os = s - 2;
  Tensor g = Tensor::ones({n, o, os, os});
  for (auto _ : state) {
    Tensor y = conv2d(x, w, b);
    y.backward(g);
    w.zero_grad();
    b.zero_grad();
    if (x.requires_grad()) x.zero_grad();
  }
  const double forward = 2.0 * n * o * c * 9 * os * os;
  set_flops(state, forward * (c > 1 ? 3.0 : 2.0));  // + weight grad (+ input grad)
}
// Small widths (32, 64, 128) at the full batch of 32 videos x 10 frames.
BENCHMARK(BM_Conv2dForwardBackward)
    ->Args({320, 1, 32, 64})
    ->Args({320, 32, 64, 31})
    ->Args({320, 64, 128, 14})
    ->Unit(benchmark::kMillisecond)
    ->MinWarmUpTime(3.0)
    ->UseRealTime();
// Paper widths (512) at one video (10 frames): a full batch would take minutes per iteration.
BENCHMARK(BM_Conv2dForwardBackward)
    ->Args({10, 1, 512, 64})
    ->Args({10, 512, 512, 31})
    ->Args({10, 512, 512, 14})
    ->Unit(benchmark::kMillisecond)
    ->MinWarmUpTime(3.0)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
