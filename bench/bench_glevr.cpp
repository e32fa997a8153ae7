// One GLEVR training epoch at Ego-Exo4D scale, with the same network and loop in PyTorch 1.13 in
// bench/torch/bench_glevr.py:
//   GlevrEpoch/takes/segments/exo   takes x segments, 1536-d features for the ego view and `exo`
//                                   exo views, 278 classes; training graphs ego + exo (tau 1,
//                                   ego -> exo and exo <-> exo cross-view edges, as keystep_exp
//                                   --exo builds them); batches of 32 takes in a shuffled order;
//                                   GLEVR as released (Linear 1536 -> 1536, C2 = 1024, dropout
//                                   0.5); cross-entropy over every node; Adam lr 5e-4, weight
//                                   decay 0.01.
// One iteration is one epoch. Counters: s_per_epoch, segments_per_s (ego segments), and the peak
// memory: peak_rss_MiB (the process, getrusage) and peak_tensor_MiB (live tensor buffers).
// The features of 5,000 x 30 segments x 5 views are 4.6 GB at float32, more than the memory goal
// of 4 GiB on their own, so each batch's features are generated when it is needed (a seeded
// function of the take and view), as a loader streaming them from disk would provide them.
//
//   build/bench_glevr --benchmark_filter='GlevrEpoch/5000/30/4'   the measurement; long
//   build/bench_glevr --benchmark_filter='GlevrEpoch/648/'         20 batches of 32 and one of 8,
//                                                                  like 5,000's last; 3 min
//   build/bench_glevr --benchmark_filter='GlevrEpoch/64/'          smoke test
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <vector>

#include "autograd/ops.h"
#include "autograd/parallel.h"
#include "graph/take_graph.h"
#include "models/glevr.h"
#include "nn/optim.h"

using namespace stgnn;

namespace {

constexpr int64_t kDim = 1536, kClasses = 278, kBatch = 32;

double peak_rss_mib() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// Rows [views * segments, kDim] of one take, view-major (ego first): a class-dependent mean plus
// uniform noise, a pure function of (take, view, segment).
void take_features(int64_t take, int64_t segments, int64_t views,
                   const std::vector<int64_t>& labels, float* out) {
  parallel_for(views * segments, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t label = labels[static_cast<size_t>(r % segments)];
      const uint64_t key = mix64(static_cast<uint64_t>(take) * 64 + static_cast<uint64_t>(r));
      float* row = out + r * kDim;
      for (int64_t d = 0; d < kDim; ++d) {
        row[d] = counter_uniform(key, static_cast<uint64_t>(d)) - 0.5f +
                 (((label * 131 + d) % 17) == 0 ? 0.5f : 0.0f);
      }
    }
  });
}

void BM_GlevrEpoch(benchmark::State& state) {
  const int64_t takes = state.range(0), segments = state.range(1), exo = state.range(2);
  const int64_t views = 1 + exo;
  GlevrConfig config;
  config.input_dims = {kDim};
  config.classes = kClasses;
  Rng rng(1);
  Glevr model(config, rng);
  Adam optimizer(model.named_parameters(), 5e-4, 0.9, 0.999, 1e-8, 0.01);
  const Graph take_graph = build_take_graph(glevr_take_spec(segments, exo, false)).graph;
  std::vector<std::vector<int64_t>> labels(static_cast<size_t>(takes));
  for (auto& l : labels) {
    for (int64_t i = 0; i < segments; ++i)
      l.push_back(rng.randint(0, kClasses));
  }
  int64_t epoch = 0;
  for (auto _ : state) {
    std::vector<int64_t> order(static_cast<size_t>(takes));
    for (int64_t t = 0; t < takes; ++t)
      order[static_cast<size_t>(t)] = t;
    Rng(mix64(static_cast<uint64_t>(epoch++))).shuffle(order.begin(), order.end());
    for (int64_t first = 0; first < takes; first += kBatch) {
      const int64_t n = std::min(kBatch, takes - first);
      Tensor x = Tensor::empty({n * views * segments, kDim});
      std::vector<int64_t> node_labels;
      for (int64_t k = 0; k < n; ++k) {
        const int64_t take = order[static_cast<size_t>(first + k)];
        take_features(take, segments, views, labels[static_cast<size_t>(take)],
                      x.data() + k * views * segments * kDim);
        for (int64_t v = 0; v < views; ++v) {
          const auto& l = labels[static_cast<size_t>(take)];
          node_labels.insert(node_labels.end(), l.begin(), l.end());
        }
      }
      const Graph g = batch_graphs(std::vector<Graph>(static_cast<size_t>(n), take_graph), nullptr);
      model.reseed_dropout(static_cast<uint64_t>(first));
      optimizer.zero_grad();
      Tensor loss = cross_entropy(model.forward(x, g), IndexTensor(node_labels));
      loss.backward();
      optimizer.step();
      benchmark::DoNotOptimize(loss.item());
    }
  }
  state.counters["s_per_epoch"] = benchmark::Counter(
      1.0, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["segments_per_s"] = benchmark::Counter(
      static_cast<double>(takes * segments), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_rss_MiB"] = peak_rss_mib();
  state.counters["peak_tensor_MiB"] =
      static_cast<double>(memory_stats().peak_bytes) / (1024.0 * 1024.0);
}

}  // namespace

BENCHMARK(BM_GlevrEpoch)
    ->Args({5000, 30, 4})
    ->Args({648, 30, 4})
    ->Args({64, 30, 4})
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(1);

BENCHMARK_MAIN();
