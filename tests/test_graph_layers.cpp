// Graph layers: PyG-compatible names, shapes and initialisation; outputs and every gradient
// against plain-PyTorch restatements of the PyG layers (tests/fixtures/graph/make_fixtures.py);
// independent loop references for both aggregation orders; gradient checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "graph/layers.h"
#include "graph_test_graphs.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

std::vector<int64_t> fixture_indices(const std::string& name) {
  const Tensor t = read_fixture("graph", name);
  std::vector<int64_t> v;
  for (int64_t i = 0; i < t.numel(); ++i)
    v.push_back(static_cast<int64_t>(t.data()[i]));
  return v;
}

Graph fixture_graph() {
  return Graph(7, fixture_indices("graph_src"), fixture_indices("graph_dst"),
               fixture_indices("graph_type"), 2);
}

// Loads the fixture's parameters into the module by their PyG names, runs forward and backward
// with the fixture's upstream gradient, and compares the output and every gradient.
void check_against_fixture(GraphLayer& layer, const std::string& prefix, const Graph& graph) {
  CAPTURE(prefix);
  // Named copies of the structured bindings: CAPTURE's lambda cannot capture a binding in C++17
  // (clang rejects it; gcc allows it).
  for (auto& [binding, p] : layer.named_parameters()) {
    const std::string name = binding;
    CAPTURE(name);
    const Tensor value = read_fixture("graph", prefix + "_" + name);
    REQUIRE(value.shape() == p.shape());
    p.copy_from(value);
  }
  Tensor x = read_fixture("graph", prefix + "_x").set_requires_grad(true);
  Tensor y = layer(x, graph);
  check_close(y, read_fixture("graph", prefix + "_y"), 1e-5, 1e-5);
  y.backward(read_fixture("graph", prefix + "_g"));
  check_close(x.grad(), read_fixture("graph", prefix + "_gx"), 1e-5, 1e-5);
  for (auto& [binding, p] : layer.named_parameters()) {
    const std::string name = binding;
    CAPTURE(name);
    check_close(p.grad(), read_fixture("graph", prefix + "_grad_" + name), 1e-5, 1e-5);
  }
}

std::vector<std::string> names_of(const Module& m) {
  std::vector<std::string> names;
  for (const auto& [name, t] : m.named_parameters())
    names.push_back(name + shape_str(t.shape()));
  return names;
}

// Every |value| within the glorot bound, and the bound nearly reached (enough samples).
void check_glorot(const Tensor& t) {
  const int64_t fan = t.size(-2) + t.size(-1);
  const float bound = std::sqrt(6.0f / static_cast<float>(fan));
  float largest = 0.0f;
  for (int64_t i = 0; i < t.numel(); ++i)
    largest = std::max(largest, std::fabs(t.data()[i]));
  CHECK(largest <= bound);
  CHECK(largest > 0.7f * bound);
}

Graph simple_graph(Rng& rng, int64_t n, int64_t e) {
  std::set<std::pair<int64_t, int64_t>> pairs;
  std::vector<int64_t> src, dst;
  for (int64_t k = 0; k < e; ++k) {
    const int64_t s = rng.randint(0, n - 1), d = rng.randint(0, n - 1);  // node n-1 isolated
    if (s != d && pairs.insert({s, d}).second) {
      src.push_back(s);
      dst.push_back(d);
    }
  }
  return Graph(n, src, dst);
}

// x W^T for a row-major [out, in] W, as plain loops.
std::vector<double> times_weight_t(const Tensor& x, const Tensor& w, int64_t row) {
  const int64_t in = w.size(1), out = w.size(0);
  std::vector<double> r(static_cast<size_t>(out), 0.0);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t k = 0; k < in; ++k)
      r[static_cast<size_t>(o)] +=
          static_cast<double>(x.data()[row * in + k]) * w.data()[o * in + k];
  }
  return r;
}

}  // namespace

TEST_CASE("graph layers: PyG parameter names, shapes and initialisation") {
  Rng rng(fresh_seed());
  GCNConv gcn(16, 32, true, rng);
  // Own parameters first, then children's: the order of torch's state_dict.
  CHECK(names_of(gcn) == std::vector<std::string>{"bias[32]", "lin.weight[32,16]"});
  check_glorot(gcn.lin->weight);
  CHECK(gcn.bias.to_vector() == std::vector<float>(32, 0.0f));
  SAGEConv sage(16, 32, rng);
  CHECK(names_of(sage) ==
        std::vector<std::string>{"lin_l.weight[32,16]", "lin_l.bias[32]", "lin_r.weight[32,16]"});
  GATConv gat(16, 8, 4, true, 0.2f, 0.0f, true, true, rng);
  CHECK(names_of(gat) == std::vector<std::string>{"att_src[1,4,8]", "att_dst[1,4,8]", "bias[32]",
                                                  "lin.weight[32,16]"});
  check_glorot(gat.lin->weight);
  check_glorot(gat.att_src);
  CHECK(names_of(GATConv(16, 8, 4, false, 0.2f, 0.0f, true, true, rng))[2] == "bias[8]");
  EdgeConv edge({32, 16, 24}, rng);
  CHECK(names_of(edge) == std::vector<std::string>{"nn.0.weight[16,32]", "nn.0.bias[16]",
                                                   "nn.2.weight[24,16]", "nn.2.bias[24]"});
  CHECK(edge.in_channels == 16);
  RGCNConv rgcn(16, 12, 2, true, rng);
  CHECK(names_of(rgcn) == std::vector<std::string>{"weight[2,16,12]", "root[16,12]", "bias[12]"});
  check_glorot(rgcn.weight);
  check_glorot(rgcn.root);
  CHECK_THROWS_AS(EdgeConv({7, 3}, rng), ValueError);
  CHECK_THROWS_AS(EdgeConv({8}, rng), ValueError);
  CHECK_THROWS_AS(GATConv(4, 4, 0), ValueError);
  CHECK_THROWS_AS(RGCNConv(4, 4, 0), ValueError);
  const Graph g(3, {0, 1}, {1, 2});
  CHECK_THROWS_AS(gcn(Tensor::zeros({3, 15}), g), ShapeError);
  CHECK_THROWS_AS(gcn(Tensor::zeros({4, 16}), g), ShapeError);
  CHECK_THROWS_AS(rgcn(Tensor::zeros({3, 16}), Graph(3, {0}, {1}, {2})), ValueError);
}

TEST_CASE("graph layers match PyTorch restatements of PyG (outputs and all gradients)") {
  const Graph g = fixture_graph();
  Rng rng(1);
  {
    GCNConv layer(5, 4, true, rng);
    check_against_fixture(layer, "gcn", g);
  }
  {
    SAGEConv layer(5, 4, rng);
    check_against_fixture(layer, "sage", g);
  }
  {
    GATConv layer(5, 4, 3, true, 0.2f, 0.0f, true, true, rng);
    check_against_fixture(layer, "gat_concat", g);
  }
  {
    GATConv layer(5, 4, 2, false, 0.2f, 0.0f, true, true, rng);
    check_against_fixture(layer, "gat_mean", g);
  }
  {
    EdgeConv layer({10, 8, 3}, rng);
    check_against_fixture(layer, "edgeconv", g);
  }
  {
    RGCNConv layer(5, 3, 2, true, rng);  // out < in: transform first
    check_against_fixture(layer, "rgcn_narrow", g);
  }
  {
    RGCNConv layer(3, 6, 2, true, rng);  // out > in: aggregate first
    check_against_fixture(layer, "rgcn_wide", g);
  }
}

TEST_CASE("GCNConv and SAGEConv equal loop references in both aggregation orders") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  Rng rng(seed);
  const Graph g = random_graph(rng, 9, 7, 25);  // self loops, duplicates, isolated nodes
  for (const auto& widths : {std::pair<int64_t, int64_t>{3, 6}, {6, 3}}) {
    const int64_t in = widths.first, out = widths.second;
    CAPTURE(in);
    CAPTURE(out);
    const Tensor x = random_tensor({9, in}, rng);
    GCNConv gcn(in, out, true, rng);
    gcn.bias.copy_from(random_tensor({out}, rng));
    SAGEConv sage(in, out, rng);
    const Graph loops = g.with_self_loops();
    std::vector<double> deg(9, 0.0);
    for (int32_t d : loops.dst())
      deg[static_cast<size_t>(d)] += 1.0;
    std::vector<double> gcn_want(static_cast<size_t>(9 * out)), sage_want(gcn_want.size());
    for (int64_t i = 0; i < 9; ++i) {
      for (int64_t o = 0; o < out; ++o)
        gcn_want[static_cast<size_t>(i * out + o)] = gcn.bias.data()[o];
    }
    for (int64_t e = 0; e < loops.num_edges(); ++e) {
      const int64_t s = loops.src()[static_cast<size_t>(e)],
                    d = loops.dst()[static_cast<size_t>(e)];
      const double norm =
          1.0 / std::sqrt(deg[static_cast<size_t>(s)] * deg[static_cast<size_t>(d)]);
      const std::vector<double> h = times_weight_t(x, gcn.lin->weight, s);
      for (int64_t o = 0; o < out; ++o)
        gcn_want[static_cast<size_t>(d * out + o)] += norm * h[static_cast<size_t>(o)];
    }
    for (int64_t i = 0; i < 9; ++i) {
      std::vector<double> mean(static_cast<size_t>(in), 0.0);
      for (int64_t e = 0; e < g.num_edges(); ++e) {
        if (g.dst()[static_cast<size_t>(e)] != i) continue;
        for (int64_t k = 0; k < in; ++k) {
          mean[static_cast<size_t>(k)] += x.data()[g.src()[static_cast<size_t>(e)] * in + k] /
                                          static_cast<double>(g.in_degree(i));
        }
      }
      const std::vector<double> root = times_weight_t(x, sage.lin_r->weight, i);
      for (int64_t o = 0; o < out; ++o) {
        double v = sage.lin_l->bias.data()[o] + root[static_cast<size_t>(o)];
        for (int64_t k = 0; k < in; ++k)
          v += sage.lin_l->weight.data()[o * in + k] * mean[static_cast<size_t>(k)];
        sage_want[static_cast<size_t>(i * out + o)] = v;
      }
    }
    const auto as_tensor = [&](const std::vector<double>& v) {
      std::vector<float> f(v.begin(), v.end());
      return Tensor::from_vector({9, out}, f);
    };
    check_close(gcn(x, g), as_tensor(gcn_want), 1e-5, 1e-5);
    check_close(sage(x, g), as_tensor(sage_want), 1e-5, 1e-5);
  }
}

TEST_CASE("RGCNConv: both aggregation orders agree; fewer graph relations use the first weights") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  Rng rng(seed);
  const Graph g = random_graph(rng, 10, 8, 30, 3);
  const Tensor x = random_tensor({10, 4}, rng);
  RGCNConv layer(4, 4, 3, true, rng);  // in == out: aggregate first
  layer.bias.copy_from(random_tensor({4}, rng));
  // Same function through the transform-first path, composed from the ops by hand.
  Tensor w_cat = permute(layer.weight, {1, 0, 2}).reshape({4, 12});
  Tensor transformed =
      aggregate_relation_slots(matmul(x, w_cat).reshape({10, 3, 4}), g, Reduce::kMean);
  check_close(layer(x, g), add(add(transformed, matmul(x, layer.root)), layer.bias), 1e-5, 1e-5);
  // A single-relation graph uses weight[0] only.
  const Graph plain(10, std::vector<int64_t>(g.src().begin(), g.src().end()),
                    std::vector<int64_t>(g.dst().begin(), g.dst().end()));
  Tensor want = add(
      add(matmul(aggregate(x, plain, Reduce::kMean), slice(layer.weight, 0, 0, 1).reshape({4, 4})),
          matmul(x, layer.root)),
      layer.bias);
  check_close(layer(x, plain), want, 1e-5, 1e-5);
}

TEST_CASE("GATConv attention dropout acts in training only") {
  Rng rng(fresh_seed());
  const Graph g = random_graph(rng, 8, 8, 30);
  const Tensor x = random_tensor({8, 5}, rng);
  GATConv with_dropout(5, 3, 2, true, 0.2f, 0.5f, true, true, rng);
  GATConv without(5, 3, 2, true, 0.2f, 0.0f, true, true, rng);
  NamedTensorList a = with_dropout.named_parameters(), b = without.named_parameters();
  for (size_t k = 0; k < a.size(); ++k)
    b[k].second.copy_from(a[k].second);
  with_dropout.eval();
  check_close(with_dropout(x, g), without(x, g));
  with_dropout.train();
  const std::vector<float> trained = with_dropout(x, g).to_vector();
  CHECK(trained != without(x, g).to_vector());
}

TEST_CASE("gradient checks of every graph layer (inputs and parameters)") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  const Graph g = random_graph(rng, 6, 5, 12, 2);
  const int64_t n = g.num_nodes();
  {
    GCNConv layer(3, 4, true, rng);
    require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          layer.lin->weight = in[1];
          layer.bias = in[2];
          return layer(in[0], g);
        },
        {random_tensor({n, 3}, rng), layer.lin->weight, random_tensor({4}, rng)}, seed);
  }
  {
    SAGEConv layer(4, 3, rng);
    require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          layer.lin_l->weight = in[1];
          layer.lin_l->bias = in[2];
          layer.lin_r->weight = in[3];
          return layer(in[0], g);
        },
        {random_tensor({n, 4}, rng), layer.lin_l->weight, layer.lin_l->bias, layer.lin_r->weight},
        seed);
  }
  for (int64_t in_ch : {3, 5}) {  // both RGCN paths
    RGCNConv layer(in_ch, 4, 2, true, rng);
    require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          layer.weight = in[1];
          layer.root = in[2];
          layer.bias = in[3];
          return layer(in[0], g);
        },
        {random_tensor({n, in_ch}, rng), layer.weight, layer.root, random_tensor({4}, rng)}, seed);
  }
  {
    // LeakyReLU has a kink at 0: draw inputs until every attention logit is at least 0.05 from
    // it (a finite-difference step moves a logit by well under 0.02).
    const Graph small = simple_graph(rng, 5, 8);
    const Graph loops = small.with_self_loops();
    for (bool concat : {true, false}) {
      CAPTURE(concat);
      GATConv layer(3, 2, 2, concat, 0.2f, 0.0f, true, true, rng);
      Tensor x;
      bool found = false;
      for (int attempt = 0; attempt < 500 && !found; ++attempt) {
        x = random_tensor({5, 3}, rng);
        layer.att_src = glorot_uniform({1, 2, 2}, rng);
        layer.att_dst = glorot_uniform({1, 2, 2}, rng);
        NoGradGuard no_grad;
        Tensor h = linear(x, layer.lin->weight).reshape({5, 2, 2});
        Tensor s =
            gat_edge_scores(sum(mul(h, layer.att_src), -1), sum(mul(h, layer.att_dst), -1), loops);
        found = true;
        for (float v : s.to_vector())
          found = found && std::fabs(v) > 0.05f;
      }
      REQUIRE(found);
      require_gradcheck(
          [&](const std::vector<Tensor>& in) {
            layer.lin->weight = in[1];
            layer.att_src = in[2];
            layer.att_dst = in[3];
            layer.bias = in[4];
            return layer(in[0], small);
          },
          {x, layer.lin->weight, layer.att_src, layer.att_dst,
           random_tensor(layer.bias.shape(), rng)},
          seed);
    }
  }
  {
    // EdgeConv has a ReLU and a max: draw inputs until every hidden unit is 0.05 from 0 and
    // every max leads its runner-up by 0.05; no duplicate edges (they tie exactly).
    const Graph small = simple_graph(rng, 6, 12);
    EdgeConv layer({6, 4, 2}, rng);
    Tensor x;
    bool found = false;
    for (int attempt = 0; attempt < 20000 && !found; ++attempt) {
      x = random_tensor({6, 3}, rng);
      NoGradGuard no_grad;
      const Tensor xi = gather(x, small, EdgeEnd::kDestination);
      const Tensor xj = gather(x, small, EdgeEnd::kSource);
      const Tensor hidden =
          linear(concat({xi, sub(xj, xi)}, 1), layer.linears[0]->weight, layer.linears[0]->bias);
      const Tensor m = layer.linears[1]->forward(relu(hidden));
      found = true;
      for (float v : hidden.to_vector())
        found = found && std::fabs(v) > 0.05f;
      for (int64_t i = 0; i < 6 && found; ++i) {
        for (int64_t f = 0; f < 2; ++f) {
          std::vector<float> candidates;
          for (int64_t e = 0; e < small.num_edges(); ++e) {
            if (small.dst()[static_cast<size_t>(e)] == i) candidates.push_back(m.data()[e * 2 + f]);
          }
          std::sort(candidates.rbegin(), candidates.rend());
          if (candidates.size() > 1) found = found && candidates[0] - candidates[1] > 0.05f;
        }
      }
    }
    REQUIRE(found);
    require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          layer.linears[0]->weight = in[1];
          layer.linears[0]->bias = in[2];
          layer.linears[1]->weight = in[3];
          layer.linears[1]->bias = in[4];
          return layer(in[0], small);
        },
        {x, layer.linears[0]->weight, layer.linears[0]->bias, layer.linears[1]->weight,
         layer.linears[1]->bias},
        seed);
  }
}
