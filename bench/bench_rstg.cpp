// RSTG training throughput: one step (forward, backward, Adam) on a batch of 10-frame 64x64
// videos, reported as videos/s. Peer: bench/torch/rstg.py bench with the same arguments.
//
//   build/bench_rstg --benchmark_filter=Default
// Args: backbone widths (3), node dim D, batch, stage norm (0/1), residual space stages (0/1).
#include <benchmark/benchmark.h>

#include "models/rstg.h"
#include "nn/optim.h"

using namespace stgnn;

namespace {

void BM_RstgTrainStep(benchmark::State& state) {
  RstgConfig config;
  config.backbone_channels = {state.range(0), state.range(1), state.range(2)};
  config.node_dim = state.range(3);
  const int64_t batch = state.range(4);
  config.stage_norm = state.range(5) != 0;
  config.stage_residual = state.range(6) != 0;
  Rng rng(0);
  Rstg model(config, rng);
  Adam opt(model.named_parameters(), 1e-3);
  Tensor video = rand_uniform({batch, 10, 1, 64, 64}, rng, 0.0f, 1.0f);
  std::vector<int64_t> labels(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i)
    labels[static_cast<size_t>(i)] = i % 46;
  const IndexTensor y(labels);
  for (auto _ : state) {
    opt.zero_grad();
    cross_entropy(model.forward(video), y).backward();
    opt.step();
  }
  state.counters["videos_per_s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}
// The default preset's network (with its stage LayerNorm and residual space stages), the
// issue's reference "small" network, and the paper's widths (both without). The first steps run
// several times slower than the rest (fresh pages until the buffer cache holds every shape), so
// each warms up for a few steps; the PyTorch peer warms up for 3 steps.
BENCHMARK(BM_RstgTrainStep)
    ->Name("RstgTrainStep/Default")
    ->Args({16, 32, 64, 64, 32, 1, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinWarmUpTime(3.0);
BENCHMARK(BM_RstgTrainStep)
    ->Name("RstgTrainStep/Small")
    ->Args({32, 64, 128, 128, 32, 0, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinWarmUpTime(8.0);
BENCHMARK(BM_RstgTrainStep)
    ->Name("RstgTrainStep/Paper")
    ->Args({512, 512, 512, 512, 2, 0, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinWarmUpTime(8.0)
    ->MinTime(6.0);

}  // namespace

BENCHMARK_MAIN();
