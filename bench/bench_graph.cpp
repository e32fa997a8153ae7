// Graph benchmarks at the shapes the models run (forward + backward each), with the same
// computations in PyTorch 1.13 in bench/torch/bench_graph.py:
//   RstgSpaceStage/D  one RSTG space stage (send, attention gather, update) over a batch of
//                     32 videos x 10 frames x 14 region nodes: 4480 nodes, 28,800 edges.
//   GlevrEdgeConv     EdgeConv {3072, 1536, 1024} over 32 takes x 625 segments (20,000 nodes,
//                     temporal chain tau = 1 with self loops: 59,936 edges).
//   GlevrRgcn         RGCNConv 1024 -> 278, 2 relations, same graph.
//   LargeSparse/r     1,000,000 power-law edges over 100,000 nodes, F = 64, sum (r = 0) or
//                     max (r = 1) aggregation.
// Counters: GFLOPs = GEMM flops of forward + backward (3x the forward's) per second, for the
// dense-heavy stages; GBps = feature bytes gathered + written per second (forward + backward) for
// the memory-bound SpMM, to be read against BM_CopyBandwidth in bench_foundation.
//
//   build/bench_graph --benchmark_filter=LargeSparse
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "graph/layers.h"
#include "graph/message_passing.h"

using namespace stgnn;

namespace {

void set_rate(benchmark::State& state, const char* name, double per_iteration) {
  state.counters[name] =
      benchmark::Counter(per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

Tensor param(const Shape& shape, Rng& rng, float scale) {
  return randn(shape, rng, 0.0f, scale).set_requires_grad(true);
}

// ---- RSTG space stage

Graph rstg_batch_graph() {
  std::vector<Cell> cells;
  for (int64_t s : {3, 2, 1}) {
    for (const Cell& c : grid_cells(s, s, 6, 6))
      cells.push_back(c);
  }
  const std::vector<Graph> frames(32 * 10, region_graph(cells));
  return batch_graphs(frames, nullptr);
}

// x [N, D] -> [N, D]. Send m_ji = MLP([x_j ; x_i]) (2 layers, ReLU) with the first layer split
// into per-node products; attention a_ji = edge softmax of LeakyReLU(w1.x_i + w2.x_j);
// g_i = ReLU(sum_j a_ji m_ji + b); update v_i = MLP([x_i ; g_i]) (2 layers, ReLU).
struct RstgStage {
  Tensor send_w1, send_b1, send_w2, send_b2, att_w, gather_b, up_w1, up_b1, up_w2, up_b2;
  int64_t d;

  RstgStage(int64_t dim, Rng& rng) : d(dim) {
    const float s1 = 1.0f / std::sqrt(2.0f * dim), s2 = 1.0f / std::sqrt(static_cast<float>(dim));
    send_w1 = param({dim, 2 * dim}, rng, s1);
    send_b1 = param({dim}, rng, 0.01f);
    send_w2 = param({dim, dim}, rng, s2);
    send_b2 = param({dim}, rng, 0.01f);
    att_w = param({2, dim}, rng, s2);  // row 0: w1 (destination x_i), row 1: w2 (source x_j)
    gather_b = param({dim}, rng, 0.01f);
    up_w1 = param({dim, 2 * dim}, rng, s1);
    up_b1 = param({dim}, rng, 0.01f);
    up_w2 = param({dim, dim}, rng, s2);
    up_b2 = param({dim}, rng, 0.01f);
  }

  Tensor forward(const Tensor& x, const Graph& g) const {
    Tensor at_source = linear(x, slice(send_w1, 1, 0, d));                    // W_j x_j
    Tensor at_destination = linear(x, slice(send_w1, 1, d, 2 * d), send_b1);  // W_i x_i + b
    Tensor m = relu(gather_add(at_source, at_destination, g));
    m = relu(linear(m, send_w2, send_b2));  // [E, D]
    Tensor p = linear(x, att_w);            // [N, 2]
    Tensor scores = leaky_relu(gather_add(slice(p, 1, 1, 2), slice(p, 1, 0, 1), g), 0.2f);
    Tensor a = edge_softmax(scores, g);  // [E, 1]
    Tensor gathered = relu(add(scatter(m, g, Reduce::kSum, a), gather_b));
    Tensor h = relu(linear(concat({x, gathered}, 1), up_w1, up_b1));
    return relu(linear(h, up_w2, up_b2));
  }

  // Forward GEMM flops: two [N,D]x[D,D] send products, [E,D]x[D,D], the [N,2D]x[2D,D] and
  // [N,D]x[D,D] update products.
  double forward_flops(int64_t n, int64_t e) const {
    return 2.0 * d * d * (2.0 * n + e + 2.0 * n + n);
  }
};

void BM_RstgSpaceStage(benchmark::State& state) {
  const Graph g = rstg_batch_graph();
  Rng rng(1);
  RstgStage stage(state.range(0), rng);
  Tensor x = randn({g.num_nodes(), state.range(0)}, rng).set_requires_grad(true);
  const Tensor ones = Tensor::ones({g.num_nodes(), state.range(0)});
  for (auto _ : state) {
    Tensor y = stage.forward(x, g);
    y.backward(ones);
    benchmark::DoNotOptimize(x.grad().data());
    x.zero_grad();
  }
  state.counters["nodes"] = static_cast<double>(g.num_nodes());
  state.counters["edges"] = static_cast<double>(g.num_edges());
  set_rate(state, "GFLOPs", 3.0 * stage.forward_flops(g.num_nodes(), g.num_edges()));
}
BENCHMARK(BM_RstgSpaceStage)
    ->Arg(128)
    ->Arg(512)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinWarmUpTime(1.0);

// ---- GLEVR layers

Graph glevr_batch_graph() {
  const std::vector<Graph> takes(32, temporal_chain(625, 1));
  const Graph chain = batch_graphs(takes, nullptr);
  // Two relations as in GLEVR's RGCN (cross-view vs the rest): every tenth edge is relation 1.
  std::vector<int64_t> src(chain.src().begin(), chain.src().end());
  std::vector<int64_t> dst(chain.dst().begin(), chain.dst().end());
  std::vector<int64_t> type(src.size());
  for (size_t e = 0; e < type.size(); ++e)
    type[e] = e % 10 == 0 ? 1 : 0;
  return Graph(chain.num_nodes(), src, dst, type, 2, chain.edge_attr());
}

void BM_GlevrEdgeConv(benchmark::State& state) {
  const Graph g = glevr_batch_graph();
  Rng rng(2);
  EdgeConv layer({3072, 1536, 1024}, rng);
  Tensor x = randn({g.num_nodes(), 1536}, rng).set_requires_grad(true);
  const Tensor ones = Tensor::ones({g.num_nodes(), 1024});
  for (auto _ : state) {
    Tensor y = layer(x, g);
    y.backward(ones);
    benchmark::DoNotOptimize(x.grad().data());
    x.zero_grad();
    layer.zero_grad();
  }
  const double n = static_cast<double>(g.num_nodes()), e = static_cast<double>(g.num_edges());
  state.counters["edges"] = e;
  set_rate(state, "GFLOPs", 3.0 * (2.0 * 2.0 * n * 1536 * 1536 + 2.0 * e * 1536 * 1024));
}
// Iterations take seconds and the first two run on fresh pages (the buffer cache is still
// filling), so warm up longer than the rest.
BENCHMARK(BM_GlevrEdgeConv)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinWarmUpTime(20.0)
    ->MinTime(10.0);

void BM_GlevrRgcn(benchmark::State& state) {
  const Graph g = glevr_batch_graph();
  Rng rng(3);
  RGCNConv layer(1024, 278, 2, true, rng);
  Tensor x = randn({g.num_nodes(), 1024}, rng).set_requires_grad(true);
  const Tensor ones = Tensor::ones({g.num_nodes(), 278});
  for (auto _ : state) {
    Tensor y = layer(x, g);
    y.backward(ones);
    benchmark::DoNotOptimize(x.grad().data());
    x.zero_grad();
    layer.zero_grad();
  }
  const double n = static_cast<double>(g.num_nodes());
  set_rate(state, "GFLOPs", 3.0 * 2.0 * n * 1024 * 278 * 3);  // root + 2 relations
}
BENCHMARK(BM_GlevrRgcn)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinWarmUpTime(3.0)
    ->MinTime(5.0);

// ---- large sparse aggregation

Graph large_power_law_graph() {
  const int64_t n = 100000, e = 1000000;
  Rng rng(4);
  std::vector<double> cumulative(static_cast<size_t>(n));
  double total = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    total += std::pow(static_cast<double>(k + 1), -0.8);
    cumulative[static_cast<size_t>(k)] = total;
  }
  std::vector<int64_t> src(static_cast<size_t>(e)), dst(static_cast<size_t>(e));
  for (int64_t k = 0; k < e; ++k) {
    const double u = rng.uniform_double() * total;
    dst[static_cast<size_t>(k)] = std::min<int64_t>(
        n - 1, std::lower_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
    src[static_cast<size_t>(k)] = rng.randint(0, n);
  }
  return Graph(n, src, dst);
}

void BM_LargeSparse(benchmark::State& state) {
  static const Graph g = large_power_law_graph();
  const Reduce reduce = state.range(0) == 0 ? Reduce::kSum : Reduce::kMax;
  const int64_t f = 64;
  Rng rng(5);
  Tensor x = randn({g.num_nodes(), f}, rng).set_requires_grad(true);
  const Tensor grad = Tensor::ones({g.num_nodes(), f});
  for (auto _ : state) {
    Tensor y = aggregate(x, g, reduce);
    y.backward(grad);
    benchmark::DoNotOptimize(x.grad().data());
    x.zero_grad();
  }
  const double n = static_cast<double>(g.num_nodes()), e = static_cast<double>(g.num_edges());
  const double row = 4.0 * f;
  // Forward: E rows gathered, N written (+ N int32 arg rows for max). Backward over the
  // out-CSR: E rows of the output gradient gathered (+ E arg rows for max), N rows written.
  const double forward = e * row + n * row + (reduce == Reduce::kMax ? n * row : 0.0);
  const double backward = e * row + n * row + (reduce == Reduce::kMax ? e * row : 0.0);
  state.counters["edges"] = e;
  set_rate(state, "GBps", forward + backward);
}
BENCHMARK(BM_LargeSparse)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
