// Message-passing kernels: every fast kernel against its scalar reference (outputs poisoned with
// NaN first, so an element a kernel forgets to write fails), determinism across runs and thread
// counts, gradient checks of every op, and the ops' shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <set>

#include "autograd/parallel.h"
#include "graph/message_passing.h"
#include "graph_test_graphs.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kPoisonArg = -777;

Tensor poisoned(const Shape& shape) {
  return Tensor::full(shape, kNaN);
}

int64_t max_in_degree(const Graph& g) {
  int64_t m = 0;
  for (int64_t i = 0; i < g.num_nodes(); ++i)
    m = std::max(m, g.in_degree(i));
  return m;
}

// Float sums in CSR order against double sums in edge order: the difference grows with the
// number of terms in a row (its degree) or a dot product (its width).
void check_kernel(const Tensor& fast, const Tensor& ref, const Graph& g, int64_t width) {
  const double atol = 1e-6 * static_cast<double>(2 + max_in_degree(g) + width);
  check_close(fast, ref, 1e-5, atol);
}

// Weight layouts to try for a width: none, [E], and [E, H] for a divisor H > 1 of the width.
std::vector<int64_t> head_cases(int64_t width) {
  std::vector<int64_t> cases{0, 1};
  for (int64_t h : {3, 7, 2}) {
    if (h < width && width % h == 0) {
      cases.push_back(h);
      break;
    }
  }
  if (width > 1 && cases.size() == 2) cases.push_back(width);
  return cases;
}

// heads 0 = no weights, 1 = [E], H > 1 = [E, H].
Tensor make_weights(const Graph& g, int64_t heads, Rng& rng) {
  if (heads == 0) return Tensor();
  return heads == 1 ? random_tensor({g.num_edges()}, rng)
                    : random_tensor({g.num_edges(), heads}, rng);
}

EdgeWeights view(const Tensor& w) {
  EdgeWeights v;
  if (w.defined()) {
    v.data = w.data();
    v.heads = w.dim() == 2 ? w.size(1) : 1;
  }
  return v;
}

std::vector<NamedGraph> test_graphs(Rng& rng, int64_t relations = 0) {
  std::vector<NamedGraph> graphs = small_graphs(rng, relations);
  graphs.push_back({"power law", power_law_graph(rng, 1500, 20000, relations)});
  return graphs;
}

const Reduce kReduces[] = {Reduce::kSum, Reduce::kMean, Reduce::kMax};

// The signature shared by kernels::X_forward and reference::X_forward for aggregate / scatter.
using ReduceForward = void (*)(const float*, int64_t, const Graph&, Reduce, EdgeWeights, float*,
                               int32_t*);
using ReduceBackward = void (*)(const float*, const float*, int64_t, const Graph&, Reduce,
                                EdgeWeights, const int32_t*, float*, float*);

// Compares fast and reference forward (outputs and arg-max) and backward (input and weight
// gradients) of aggregate (input rows are nodes) or scatter (input rows are edges).
void compare_reduce_kernels(const Graph& g, bool rows_are_edges, ReduceForward fast_forward,
                            ReduceForward ref_forward, ReduceBackward fast_backward,
                            ReduceBackward ref_backward, Rng& rng) {
  for (int64_t width : {1, 7, 33}) {
    for (int64_t heads : head_cases(width)) {
      for (Reduce reduce : kReduces) {
        CAPTURE(width);
        CAPTURE(heads);
        CAPTURE(reduce_name(reduce));
        const int64_t rows = rows_are_edges ? g.num_edges() : g.num_nodes();
        const Tensor in = random_tensor({rows, width}, rng);
        const Tensor w = make_weights(g, heads, rng);
        const Tensor grad_out = random_tensor({g.num_nodes(), width}, rng);
        const size_t cells = static_cast<size_t>(g.num_nodes() * width);
        Tensor out_fast = poisoned({g.num_nodes(), width});
        Tensor out_ref = poisoned({g.num_nodes(), width});
        std::vector<int32_t> arg_fast(cells, kPoisonArg), arg_ref(cells, kPoisonArg);
        const bool is_max = reduce == Reduce::kMax;
        fast_forward(in.data(), width, g, reduce, view(w), out_fast.data(),
                     is_max ? arg_fast.data() : nullptr);
        ref_forward(in.data(), width, g, reduce, view(w), out_ref.data(),
                    is_max ? arg_ref.data() : nullptr);
        check_kernel(out_fast, out_ref, g, width);
        if (is_max) CHECK(arg_fast == arg_ref);

        Tensor gin_fast = poisoned(in.shape()), gin_ref = poisoned(in.shape());
        Tensor gw_fast, gw_ref;
        if (w.defined()) {
          gw_fast = poisoned(w.shape());
          gw_ref = poisoned(w.shape());
        }
        fast_backward(grad_out.data(), in.data(), width, g, reduce, view(w), arg_fast.data(),
                      gin_fast.data(), w.defined() ? gw_fast.data() : nullptr);
        ref_backward(grad_out.data(), in.data(), width, g, reduce, view(w), arg_ref.data(),
                     gin_ref.data(), w.defined() ? gw_ref.data() : nullptr);
        check_kernel(gin_fast, gin_ref, g, width);
        if (w.defined()) check_kernel(gw_fast, gw_ref, g, width);
      }
    }
  }
}

// A simple graph (no duplicate (src, dst) pairs) for max gradient checks: duplicates would tie.
Graph simple_graph(Rng& rng, int64_t n, int64_t e) {
  std::set<std::pair<int64_t, int64_t>> pairs;
  std::vector<int64_t> src, dst;
  for (int64_t k = 0; k < e; ++k) {
    const int64_t s = rng.randint(0, n - 1), d = rng.randint(0, n - 1);  // node n-1 isolated
    if (pairs.insert({s, d}).second) {
      src.push_back(s);
      dst.push_back(d);
    }
  }
  return Graph(n, src, dst);
}

}  // namespace

TEST_CASE("gather and gather_add kernels equal their references") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " (replay with STGNN_TEST_SEED)");
  Rng rng(seed);
  for (const NamedGraph& ng : test_graphs(rng)) {
    CAPTURE(ng.name);
    const Graph& g = ng.graph;
    for (int64_t width : {1, 7, 33}) {
      CAPTURE(width);
      const Tensor a = random_tensor({g.num_nodes(), width}, rng);
      const Tensor b = random_tensor({g.num_nodes(), width}, rng);
      const Tensor ge = random_tensor({g.num_edges(), width}, rng);
      for (EdgeEnd end : {EdgeEnd::kSource, EdgeEnd::kDestination}) {
        Tensor f = poisoned({g.num_edges(), width}), r = poisoned({g.num_edges(), width});
        kernels::gather_forward(a.data(), width, g, end, f.data());
        reference::gather_forward(a.data(), width, g, end, r.data());
        check_kernel(f, r, g, width);
        Tensor gf = poisoned(a.shape()), gr = poisoned(a.shape());
        kernels::gather_backward(ge.data(), width, g, end, gf.data());
        reference::gather_backward(ge.data(), width, g, end, gr.data());
        check_kernel(gf, gr, g, width);
      }
      Tensor f = poisoned({g.num_edges(), width}), r = poisoned({g.num_edges(), width});
      kernels::gather_add_forward(a.data(), b.data(), width, g, f.data());
      reference::gather_add_forward(a.data(), b.data(), width, g, r.data());
      check_kernel(f, r, g, width);
      Tensor gsf = poisoned(a.shape()), gdf = poisoned(a.shape());
      Tensor gsr = poisoned(a.shape()), gdr = poisoned(a.shape());
      kernels::gather_add_backward(ge.data(), width, g, gsf.data(), gdf.data());
      reference::gather_add_backward(ge.data(), width, g, gsr.data(), gdr.data());
      check_kernel(gsf, gsr, g, width);
      check_kernel(gdf, gdr, g, width);
    }
  }
}

TEST_CASE("aggregate kernels (sum, mean, max; no, [E] and [E,H] weights) equal their references") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " (replay with STGNN_TEST_SEED)");
  Rng rng(seed);
  for (const NamedGraph& ng : test_graphs(rng)) {
    CAPTURE(ng.name);
    compare_reduce_kernels(ng.graph, false, kernels::aggregate_forward,
                           reference::aggregate_forward, kernels::aggregate_backward,
                           reference::aggregate_backward, rng);
  }
}

TEST_CASE("scatter kernels equal their references") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " (replay with STGNN_TEST_SEED)");
  Rng rng(seed);
  for (const NamedGraph& ng : test_graphs(rng)) {
    CAPTURE(ng.name);
    compare_reduce_kernels(ng.graph, true, kernels::scatter_forward, reference::scatter_forward,
                           kernels::scatter_backward, reference::scatter_backward, rng);
  }
}

TEST_CASE("edge softmax kernels equal their references and normalise every row") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " (replay with STGNN_TEST_SEED)");
  Rng rng(seed);
  for (const NamedGraph& ng : test_graphs(rng)) {
    CAPTURE(ng.name);
    const Graph& g = ng.graph;
    for (int64_t heads : {1, 3, 8}) {
      CAPTURE(heads);
      const Tensor s = random_tensor({g.num_edges(), heads}, rng, 3.0f);
      const Tensor go = random_tensor({g.num_edges(), heads}, rng);
      Tensor f = poisoned(s.shape()), r = poisoned(s.shape());
      kernels::edge_softmax_forward(s.data(), heads, g, f.data());
      reference::edge_softmax_forward(s.data(), heads, g, r.data());
      check_close(f, r, 1e-5, 1e-7);
      std::vector<double> row_sum(static_cast<size_t>(g.num_nodes() * heads), 0.0);
      for (int64_t e = 0; e < g.num_edges(); ++e) {
        for (int64_t h = 0; h < heads; ++h) {
          row_sum[static_cast<size_t>(g.dst()[static_cast<size_t>(e)] * heads + h)] +=
              f.data()[e * heads + h];
        }
      }
      for (int64_t i = 0; i < g.num_nodes(); ++i) {
        for (int64_t h = 0; h < heads; ++h) {
          const double want = g.in_degree(i) > 0 ? 1.0 : 0.0;
          CHECK(std::fabs(row_sum[static_cast<size_t>(i * heads + h)] - want) < 1e-5);
        }
      }
      Tensor gf = poisoned(s.shape()), gr = poisoned(s.shape());
      kernels::edge_softmax_backward(f.data(), go.data(), heads, g, gf.data());
      reference::edge_softmax_backward(f.data(), go.data(), heads, g, gr.data());
      check_close(gf, gr, 1e-4, 1e-6);
    }
  }
}

TEST_CASE("relational kernels equal their references") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " (replay with STGNN_TEST_SEED)");
  Rng rng(seed);
  for (int64_t relations : {1, 3}) {
    for (const NamedGraph& ng : test_graphs(rng, relations)) {
      CAPTURE(ng.name);
      CAPTURE(relations);
      const Graph& g = ng.graph;
      const int64_t n = g.num_nodes(), r = g.num_relations();
      for (int64_t width : {1, 7, 33}) {
        for (Reduce reduce : {Reduce::kSum, Reduce::kMean}) {
          CAPTURE(width);
          CAPTURE(reduce_name(reduce));
          const Tensor x = random_tensor({n, width}, rng);
          const Tensor x_rel = random_tensor({n, r, width}, rng);
          const Tensor g_rel = random_tensor({n, r, width}, rng);
          const Tensor g_node = random_tensor({n, width}, rng);
          Tensor f = poisoned({n, r, width}), ref = poisoned({n, r, width});
          kernels::aggregate_by_relation_forward(x.data(), width, g, reduce, f.data());
          reference::aggregate_by_relation_forward(x.data(), width, g, reduce, ref.data());
          check_kernel(f, ref, g, width);
          Tensor gf = poisoned(x.shape()), gr = poisoned(x.shape());
          kernels::aggregate_by_relation_backward(g_rel.data(), width, g, reduce, gf.data());
          reference::aggregate_by_relation_backward(g_rel.data(), width, g, reduce, gr.data());
          check_kernel(gf, gr, g, width);
          Tensor sf = poisoned({n, width}), sr = poisoned({n, width});
          kernels::aggregate_relation_slots_forward(x_rel.data(), width, g, reduce, sf.data());
          reference::aggregate_relation_slots_forward(x_rel.data(), width, g, reduce, sr.data());
          check_kernel(sf, sr, g, width);
          Tensor sgf = poisoned(x_rel.shape()), sgr = poisoned(x_rel.shape());
          kernels::aggregate_relation_slots_backward(g_node.data(), width, g, reduce, sgf.data());
          reference::aggregate_relation_slots_backward(g_node.data(), width, g, reduce, sgr.data());
          check_kernel(sgf, sgr, g, width);
        }
      }
    }
  }
}

TEST_CASE("kernels are bitwise deterministic across runs and between 1 and 2 threads") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed << " (replay with STGNN_TEST_SEED)");
  Rng rng(seed);
  // Big enough that the row partition really uses two threads (cost x width >> grain).
  const Graph g = power_law_graph(rng, 3000, 40000, 2);
  const int64_t width = 33, heads = 3;
  const int64_t n = g.num_nodes(), e = g.num_edges();
  const Tensor x = random_tensor({n, width}, rng);
  const Tensor m = random_tensor({e, width}, rng);
  const Tensor w = random_tensor({e, heads}, rng);
  const Tensor gn = random_tensor({n, width}, rng);
  const Tensor ge = random_tensor({e, width}, rng);
  const Tensor s = random_tensor({e, heads}, rng);
  const Tensor gs = random_tensor({e, heads}, rng);
  const Tensor g_rel = random_tensor({n, 2, width}, rng);

  // Runs every fast kernel once and returns all outputs concatenated.
  const auto run_all = [&]() {
    std::vector<float> all;
    const auto take = [&](const std::vector<float>& v) {
      all.insert(all.end(), v.begin(), v.end());
    };
    std::vector<float> node(static_cast<size_t>(n * width)), node2(node.size());
    std::vector<float> edge(static_cast<size_t>(e * width)), weight(static_cast<size_t>(e * heads));
    std::vector<int32_t> arg(node.size());
    kernels::gather_forward(x.data(), width, g, EdgeEnd::kSource, edge.data());
    take(edge);
    kernels::gather_backward(ge.data(), width, g, EdgeEnd::kSource, node.data());
    take(node);
    kernels::gather_add_backward(ge.data(), width, g, node.data(), node2.data());
    take(node);
    take(node2);
    for (Reduce reduce : kReduces) {
      kernels::aggregate_forward(x.data(), width, g, reduce, view(w), node.data(), arg.data());
      take(node);
      kernels::aggregate_backward(gn.data(), x.data(), width, g, reduce, view(w), arg.data(),
                                  node2.data(), weight.data());
      take(node2);
      take(weight);
      kernels::scatter_forward(m.data(), width, g, reduce, view(w), node.data(), arg.data());
      take(node);
      kernels::scatter_backward(gn.data(), m.data(), width, g, reduce, view(w), arg.data(),
                                edge.data(), weight.data());
      take(edge);
      take(weight);
    }
    kernels::edge_softmax_forward(s.data(), heads, g, weight.data());
    take(weight);
    std::vector<float> grad_scores(weight.size());
    kernels::edge_softmax_backward(weight.data(), gs.data(), heads, g, grad_scores.data());
    take(grad_scores);
    std::vector<float> rel(static_cast<size_t>(n * 2 * width));
    kernels::aggregate_by_relation_forward(x.data(), width, g, Reduce::kMean, rel.data());
    take(rel);
    kernels::aggregate_by_relation_backward(g_rel.data(), width, g, Reduce::kMean, node.data());
    take(node);
    kernels::aggregate_relation_slots_forward(g_rel.data(), width, g, Reduce::kMean, node.data());
    take(node);
    kernels::aggregate_relation_slots_backward(gn.data(), width, g, Reduce::kMean, rel.data());
    take(rel);
    return all;
  };
  const int saved = num_threads();
  set_num_threads(2);
  const std::vector<float> first = run_all();
  const std::vector<float> second = run_all();
  set_num_threads(1);
  const std::vector<float> single = run_all();
  set_num_threads(saved);
  REQUIRE(first.size() == second.size());
  REQUIRE(first.size() == single.size());
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(first.data(), single.data(), first.size() * sizeof(float)) == 0);
}

TEST_CASE("hand-computed aggregate, scatter and edge softmax") {
  // Edges: 0->1, 2->1, 1->1 (self loop), 0->2; node 0 has no in-edges.
  const Graph g(3, {0, 2, 1, 0}, {1, 1, 1, 2});
  const Tensor x = Tensor::from_vector({3, 2}, {1, -1, 2, 5, -3, 4});
  CHECK(aggregate(x, g, Reduce::kSum).to_vector() == std::vector<float>{0, 0, 0, 8, 1, -1});
  check_close(aggregate(x, g, Reduce::kMean),
              Tensor::from_vector({3, 2}, {0, 0, 0, 8.0f / 3, 1, -1}));
  CHECK(aggregate(x, g, Reduce::kMax).to_vector() == std::vector<float>{0, 0, 2, 5, 1, -1});
  const Tensor w = Tensor::from_vector({4}, {2, 1, 0.5f, -1});
  CHECK(aggregate(x, g, Reduce::kSum, w).to_vector() == std::vector<float>{0, 0, 0, 4.5f, -1, 1});
  const Tensor messages = Tensor::from_vector({4, 1}, {1, 2, 3, 4});
  CHECK(scatter(messages, g, Reduce::kSum).to_vector() == std::vector<float>{0, 6, 4});
  CHECK(scatter(messages, g, Reduce::kMax).to_vector() == std::vector<float>{0, 3, 4});
  const Tensor a = edge_softmax(Tensor::from_vector({4}, {0, 0, std::log(2.0f), 7}), g);
  check_close(a, Tensor::from_vector({4}, {0.25f, 0.25f, 0.5f, 1.0f}));
  CHECK(gather(x, g, EdgeEnd::kDestination).to_vector() ==
        std::vector<float>{2, 5, 2, 5, 2, 5, -3, 4});
  CHECK(gather_add(x, x, g).to_vector() == std::vector<float>{3, 4, -1, 9, 4, 10, -2, 3});
  const Graph typed(3, {0, 2, 1, 0}, {1, 1, 1, 2}, {0, 1, 1, 0});
  check_close(aggregate_by_relation(x, typed, Reduce::kMean),
              Tensor::from_vector({3, 2, 2}, {0, 0, 0, 0, 1, -1, -0.5f, 4.5f, 1, -1, 0, 0}));
}

TEST_CASE("gradient checks of every message-passing op") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const Graph g = random_graph(rng, 7, 6, 16, 2);  // self loops, duplicates, isolated node 6
  const int64_t n = g.num_nodes(), e = g.num_edges();
  for (EdgeEnd end : {EdgeEnd::kSource, EdgeEnd::kDestination}) {
    require_gradcheck([&](const std::vector<Tensor>& in) { return gather(in[0], g, end); },
                      {random_tensor({n, 3}, rng)}, seed);
  }
  require_gradcheck([&](const std::vector<Tensor>& in) { return gat_edge_scores(in[0], in[1], g); },
                    {random_tensor({n, 2}, rng), random_tensor({n, 2}, rng)}, seed);
  for (Reduce reduce : {Reduce::kSum, Reduce::kMean}) {
    CAPTURE(reduce_name(reduce));
    for (int64_t heads : {0, 1, 2}) {
      CAPTURE(heads);
      const Tensor w = make_weights(g, heads, rng);
      std::vector<Tensor> node_inputs{random_tensor({n, 4}, rng)};
      std::vector<Tensor> edge_inputs{random_tensor({e, 4}, rng)};
      if (w.defined()) {
        node_inputs.push_back(w);
        edge_inputs.push_back(w);
      }
      require_gradcheck(
          [&](const std::vector<Tensor>& in) {
            return aggregate(in[0], g, reduce, in.size() > 1 ? in[1] : Tensor());
          },
          node_inputs, seed);
      require_gradcheck(
          [&](const std::vector<Tensor>& in) {
            return scatter(in[0], g, reduce, in.size() > 1 ? in[1] : Tensor());
          },
          edge_inputs, seed);
    }
    require_gradcheck(
        [&](const std::vector<Tensor>& in) { return aggregate_by_relation(in[0], g, reduce); },
        {random_tensor({n, 3}, rng)}, seed);
    require_gradcheck(
        [&](const std::vector<Tensor>& in) { return aggregate_relation_slots(in[0], g, reduce); },
        {random_tensor({n, 2, 3}, rng)}, seed);
  }
  // Max: inputs pairwise at least 0.5 apart and weights within 1% of 1, so that no candidate
  // pair comes within a finite-difference step of a tie; no duplicate edges (they would tie).
  const Graph simple = simple_graph(rng, 7, 16);
  for (int64_t heads : {0, 1, 2}) {
    CAPTURE(heads);
    std::vector<Tensor> node_inputs{distinct_values({n, 4}, rng, 0.5f)};
    std::vector<Tensor> edge_inputs{distinct_values({simple.num_edges(), 4}, rng, 0.5f)};
    if (heads > 0) {
      const Shape ws = heads == 1 ? Shape{simple.num_edges()} : Shape{simple.num_edges(), heads};
      node_inputs.push_back(rand_uniform(ws, rng, 0.99f, 1.01f));
      edge_inputs.push_back(rand_uniform(ws, rng, 0.99f, 1.01f));
    }
    require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          return aggregate(in[0], simple, Reduce::kMax, in.size() > 1 ? in[1] : Tensor());
        },
        node_inputs, seed);
    require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          return scatter(in[0], simple, Reduce::kMax, in.size() > 1 ? in[1] : Tensor());
        },
        edge_inputs, seed);
  }
  require_gradcheck([&](const std::vector<Tensor>& in) { return edge_softmax(in[0], g); },
                    {random_tensor({e}, rng)}, seed);
  require_gradcheck([&](const std::vector<Tensor>& in) { return edge_softmax(in[0], g); },
                    {random_tensor({e, 3}, rng)}, seed);
  // Composed as in GAT: softmax weights feeding an aggregate; gradients through both.
  require_gradcheck(
      [&](const std::vector<Tensor>& in) {
        return aggregate(in[0], g, Reduce::kSum, edge_softmax(in[1], g));
      },
      {random_tensor({n, 4}, rng), random_tensor({e, 2}, rng)}, seed);
}

TEST_CASE("message-passing ops reject mismatched shapes") {
  const Graph g(3, {0, 1}, {1, 2});
  const Tensor x = Tensor::zeros({3, 4});
  CHECK_THROWS_AS(gather(Tensor::zeros({2, 4}), g), ShapeError);
  CHECK_THROWS_AS(gather(Tensor::zeros({3}), g), ShapeError);
  CHECK_THROWS_AS(gather_add(x, Tensor::zeros({3, 5}), g), ShapeError);
  CHECK_THROWS_AS(aggregate(x, g, Reduce::kSum, Tensor::zeros({3})), ShapeError);
  CHECK_THROWS_AS(aggregate(x, g, Reduce::kSum, Tensor::zeros({2, 3})), ShapeError);
  CHECK_NOTHROW(aggregate(x, g, Reduce::kSum, Tensor::zeros({2, 2})));
  CHECK_THROWS_AS(scatter(x, g, Reduce::kSum), ShapeError);
  CHECK_THROWS_AS(edge_softmax(Tensor::zeros({3}), g), ShapeError);
  CHECK_THROWS_AS(edge_softmax(Tensor::zeros({2, 1, 1}), g), ShapeError);
  CHECK_THROWS_AS(aggregate_by_relation(x, g, Reduce::kMax), ValueError);
  CHECK_THROWS_AS(aggregate_relation_slots(Tensor::zeros({3, 2, 4}), g, Reduce::kSum), ShapeError);
  try {
    aggregate(Tensor::zeros({2, 4}), g, Reduce::kMean);
    FAIL("no error");
  } catch (const ShapeError& err) {
    CHECK(std::string(err.what()) == "aggregate: x [2,4] must be [3, F] for a graph of 3 nodes");
  }
}
