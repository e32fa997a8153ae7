// GLEVR: multi-stream take graphs (edge lists compared exactly on hand-made takes), the model's
// forward semantics and its gradients by finite differences, and the per-segment MLP.
#include <doctest/doctest.h>

#include <tuple>
#include <vector>

#include "graph/take_graph.h"
#include "models/glevr.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

// (source, destination, relation, attribute) per edge, in edge order.
using Edge = std::tuple<int, int, int, float>;

std::vector<Edge> edges_of(const Graph& g) {
  std::vector<Edge> out;
  for (int64_t e = 0; e < g.num_edges(); ++e) {
    const auto k = static_cast<size_t>(e);
    out.emplace_back(g.src()[k], g.dst()[k], g.edge_type()[k],
                     g.has_edge_attr() ? g.edge_attr()[k] : 99.0f);
  }
  return out;
}

// The temporal chain of one stream of n = 2 items at node offset `o` (tau 1, self loops).
std::vector<Edge> chain2(int o) {
  return {{o, o, 0, 0.0f}, {o, o + 1, 0, -1.0f}, {o + 1, o, 0, 1.0f}, {o + 1, o + 1, 0, 0.0f}};
}

void append(std::vector<Edge>& a, const std::vector<Edge>& b) {
  a.insert(a.end(), b.begin(), b.end());
}

// Every parameter nudged off its initial value: zero biases and unit BatchNorm weights would put
// activations on ReLU kinks in a symmetric way.
void jitter(Module& m, Rng& rng) {
  for (Tensor p : m.parameters()) {
    for (int64_t i = 0; i < p.numel(); ++i)
      p.data()[i] += 0.05f * rng.normal();
  }
}

GlevrConfig small_config(std::vector<int64_t> dims, bool projection, int64_t channels = 5) {
  GlevrConfig c;
  c.input_dims = std::move(dims);
  c.input_projection = projection;
  c.channels = projection ? channels : 0;
  c.hidden = 6;
  c.classes = 4;
  c.dropout = 0.5f;
  return c;
}

}  // namespace

TEST_CASE("take graph: one stream, tau 1, edges by (source, destination) with direction") {
  TakeGraphSpec spec;
  spec.streams = {{"ego", 0, 3, true}};
  const TakeGraph tg = build_take_graph(spec);
  CHECK(tg.num_nodes() == 3);
  CHECK(tg.graph.num_relations() == 2);
  const std::vector<Edge> want = {{0, 0, 0, 0.0f}, {0, 1, 0, -1.0f}, {1, 0, 0, 1.0f},
                                  {1, 1, 0, 0.0f}, {1, 2, 0, -1.0f}, {2, 1, 0, 1.0f},
                                  {2, 2, 0, 0.0f}};
  CHECK(edges_of(tg.graph) == want);
  CHECK(tg.stream_offsets == std::vector<int64_t>{0, 3});
  CHECK(tg.node_item == std::vector<int64_t>{0, 1, 2});
}

TEST_CASE("take graph: GLEVR's ego + 2 exo + text take, every edge in order") {
  const TakeGraph tg = build_take_graph(glevr_take_spec(2, 2, true));
  // Nodes: ego 0-1, exo1 2-3, exo2 4-5, text 6-7.
  CHECK(tg.stream_offsets == std::vector<int64_t>{0, 2, 4, 6, 8});
  CHECK(tg.node_type == std::vector<int64_t>{0, 0, 0, 0, 0, 0, 1, 1});
  CHECK(tg.node_stream == std::vector<int64_t>{0, 0, 1, 1, 2, 2, 3, 3});
  std::vector<Edge> want;
  for (int o : {0, 2, 4, 6})
    append(want, chain2(o));
  append(want, {{0, 2, 1, -2.0f}, {1, 3, 1, -2.0f}});  // ego->exo1
  append(want, {{0, 4, 1, -2.0f}, {1, 5, 1, -2.0f}});  // ego->exo2
  append(want,
         {{2, 4, 1, -2.0f}, {4, 2, 1, -2.0f}, {3, 5, 1, -2.0f}, {5, 3, 1, -2.0f}});  // exo<->exo
  append(want,
         {{6, 0, 0, -2.0f}, {0, 6, 0, -2.0f}, {7, 1, 0, -2.0f}, {1, 7, 0, -2.0f}});  // text<->ego
  CHECK(edges_of(tg.graph) == want);

  // Evaluation graphs: ego only.
  const TakeGraph ego = build_take_graph(glevr_take_spec(2, 0, false));
  CHECK(edges_of(ego.graph) == chain2(0));

  // Options: exo -> ego, no exo-exo edges, text as cross-view, no self loops, tau 0.
  GlevrGraphOptions o;
  o.cross_view = Alignment::kBToA;
  o.exo_to_exo = false;
  o.text_relation = kCrossViewRelation;
  o.self_loops = false;
  o.tau = 0;
  const TakeGraph bare = build_take_graph(glevr_take_spec(2, 2, true, o));
  const std::vector<Edge> want_bare = {{2, 0, 1, -2.0f}, {3, 1, 1, -2.0f}, {4, 0, 1, -2.0f},
                                       {5, 1, 1, -2.0f}, {6, 0, 1, -2.0f}, {0, 6, 1, -2.0f},
                                       {7, 1, 1, -2.0f}, {1, 7, 1, -2.0f}};
  CHECK(edges_of(bare.graph) == want_bare);
}

TEST_CASE("take graph: generic streams (sensors), unequal lengths, tau 2, no temporal edges") {
  TakeGraphSpec spec;
  spec.tau = 2;
  spec.self_loops = false;
  spec.num_relations = 3;
  spec.temporal_relation = 2;
  spec.streams = {{"video", 0, 3, true}, {"accel", 4, 2, false}, {"gyro", 4, 4, true}};
  spec.alignments = {{0, 1, Alignment::kBoth, 1, 0.5f}, {2, 0, Alignment::kAToB, 0, 0.0f}};
  const TakeGraph tg = build_take_graph(spec);
  CHECK(tg.num_nodes() == 9);
  CHECK(tg.node_type == std::vector<int64_t>{0, 0, 0, 4, 4, 4, 4, 4, 4});
  CHECK(tg.first_node(2) == 5);
  CHECK(tg.stream_length(2) == 4);
  const std::vector<Edge> want = {
      // video: every ordered pair within distance 2, no loops
      {0, 1, 2, -1.0f},
      {0, 2, 2, -1.0f},
      {1, 0, 2, 1.0f},
      {1, 2, 2, -1.0f},
      {2, 0, 2, 1.0f},
      {2, 1, 2, 1.0f},
      // gyro (nodes 5..8)
      {5, 6, 2, -1.0f},
      {5, 7, 2, -1.0f},
      {6, 5, 2, 1.0f},
      {6, 7, 2, -1.0f},
      {6, 8, 2, -1.0f},
      {7, 5, 2, 1.0f},
      {7, 6, 2, 1.0f},
      {7, 8, 2, -1.0f},
      {8, 6, 2, 1.0f},
      {8, 7, 2, 1.0f},
      // video <-> accel for the 2 common items, then gyro -> video for 3
      {0, 3, 1, 0.5f},
      {3, 0, 1, 0.5f},
      {1, 4, 1, 0.5f},
      {4, 1, 1, 0.5f},
      {5, 0, 0, 0.0f},
      {6, 1, 0, 0.0f},
      {7, 2, 0, 0.0f}};
  CHECK(edges_of(tg.graph) == want);
  CHECK(tg.graph.num_relations() == 3);

  TakeGraphSpec bad = spec;
  bad.alignments = {{0, 3, Alignment::kBoth, 1, 0.0f}};
  CHECK_THROWS_AS(build_take_graph(bad), ValueError);
  bad.alignments = {{1, 1, Alignment::kBoth, 1, 0.0f}};
  CHECK_THROWS_AS(build_take_graph(bad), ValueError);
  bad.alignments = {{0, 1, Alignment::kBoth, 3, 0.0f}};
  CHECK_THROWS_AS(build_take_graph(bad), ValueError);
  bad = spec;
  bad.streams[1].length = -1;
  CHECK_THROWS_AS(build_take_graph(bad), ValueError);
  bad = spec;
  bad.tau = -1;
  CHECK_THROWS_AS(build_take_graph(bad), ValueError);
  CHECK_THROWS_AS(glevr_take_spec(-1, 0, false), ValueError);
}

TEST_CASE("take graph: batching renumbers nodes and streams; SPELL's edge subsets") {
  const TakeGraph a = build_take_graph(glevr_take_spec(2, 1, false));  // 4 nodes, 2 streams
  const TakeGraph b = build_take_graph(glevr_take_spec(1, 0, true));   // 2 nodes, 2 streams
  std::vector<int64_t> offsets;
  const TakeGraph batch = batch_take_graphs({a, b}, &offsets);
  CHECK(offsets == std::vector<int64_t>{0, 4, 6});
  CHECK(batch.stream_offsets == std::vector<int64_t>{0, 2, 4, 5, 6});
  CHECK(batch.node_stream == std::vector<int64_t>{0, 0, 1, 1, 2, 3});
  CHECK(batch.node_type == std::vector<int64_t>{0, 0, 0, 0, 0, 1});
  CHECK(batch.node_item == std::vector<int64_t>{0, 1, 0, 1, 0, 0});
  std::vector<Edge> want;
  append(want, chain2(0));
  append(want, chain2(2));
  append(want, {{0, 2, 1, -2.0f}, {1, 3, 1, -2.0f}});
  append(want, {{4, 4, 0, 0.0f}, {5, 5, 0, 0.0f}, {5, 4, 0, -2.0f}, {4, 5, 0, -2.0f}});
  CHECK(edges_of(batch.graph) == want);

  // Forward stream: attr <= 0 (self loops, earlier -> later, alignments); backward: attr >= 0.
  const Graph f = forward_edges(a.graph);
  const Graph bw = backward_edges(a.graph);
  const std::vector<Edge> want_f = {{0, 0, 0, 0.0f},  {0, 1, 0, -1.0f}, {1, 1, 0, 0.0f},
                                    {2, 2, 0, 0.0f},  {2, 3, 0, -1.0f}, {3, 3, 0, 0.0f},
                                    {0, 2, 1, -2.0f}, {1, 3, 1, -2.0f}};
  const std::vector<Edge> want_b = {{0, 0, 0, 0.0f}, {1, 0, 0, 1.0f}, {1, 1, 0, 0.0f},
                                    {2, 2, 0, 0.0f}, {3, 2, 0, 1.0f}, {3, 3, 0, 0.0f}};
  CHECK(edges_of(f) == want_f);
  CHECK(edges_of(bw) == want_b);
  CHECK(f.num_relations() == 2);
  CHECK_THROWS_AS(forward_edges(Graph(2, {0}, {1})), ValueError);
}

TEST_CASE("GLEVR: shapes, parameter names, and ego logits unaffected by exo nodes at eval") {
  Rng rng(7);
  GlevrConfig c = small_config({6}, true);
  Glevr model(c, rng);
  int64_t found = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    if (name == "input.0.weight") CHECK((found++, p.shape() == Shape{5, 6}));
    if (name == "forward.edge.nn.0.weight") CHECK((found++, p.shape() == Shape{5, 10}));
    if (name == "backward.edge.nn.2.weight") CHECK((found++, p.shape() == Shape{6, 5}));
    if (name == "undirected.rgcn.weight") CHECK((found++, p.shape() == Shape{2, 6, 4}));
    if (name == "undirected.norm.weight") CHECK((found++, p.shape() == Shape{6}));
  }
  CHECK(found == 5);
  // Train a few BatchNorm steps so the running statistics are not the identity.
  const Graph ego_only = build_take_graph(glevr_take_spec(3, 0, false)).graph;
  const Graph with_exo = build_take_graph(glevr_take_spec(3, 2, false)).graph;
  const Tensor x = random_tensor({9, 6}, rng);
  for (int k = 0; k < 3; ++k)
    model.forward(x, with_exo);
  model.eval();
  const Tensor all = model.forward(x, with_exo);
  CHECK(all.shape() == Shape{9, 4});
  const Tensor ego = model.forward(slice(x, 0, 0, 3), ego_only);
  check_close(slice(all, 0, 0, 3), ego, 1e-5, 1e-6);
  // Exo nodes do receive the ego nodes' messages: their logits differ from exo-only graphs.
  const Tensor exo_alone = model.forward(slice(x, 0, 3, 6), ego_only);
  double difference = 0;
  for (int64_t i = 0; i < exo_alone.numel(); ++i)
    difference += std::fabs(exo_alone.data()[i] - slice(all, 0, 3, 6).data()[i]);
  CHECK(difference > 1e-3);
  // Eval mode is deterministic (no dropout).
  check_close(model.forward(x, with_exo), all, 0, 0);
  CHECK_THROWS_AS(model.forward(random_tensor({9, 5}, rng), with_exo), ShapeError);
  CHECK_THROWS_AS(model.forward(random_tensor({8, 6}, rng), with_exo), ShapeError);
}

TEST_CASE("GLEVR: dropout masks are a pure function of the reseeded generator") {
  Rng rng(11);
  Glevr model(small_config({6}, true), rng);
  const Graph g = build_take_graph(glevr_take_spec(4, 1, false)).graph;
  const Tensor x = random_tensor({8, 6}, rng);
  model.reseed_dropout(5);
  const Tensor a = model.forward(x, g);
  model.reseed_dropout(5);
  const Tensor b = model.forward(x, g);
  check_close(a, b, 0, 0);
  model.reseed_dropout(6);
  const Tensor c = model.forward(x, g);
  double difference = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    difference += std::fabs(a.data()[i] - c.data()[i]);
  CHECK(difference > 1e-3);
}

namespace {

// Finite differences through a whole GLEVR: in training mode every BatchNorm couples all nodes,
// so a step on any early parameter shifts every activation of a channel and those near a ReLU
// or max kink (BatchNorm centres them there) cross it. Hence two checks: (1) in training mode,
// the RGCN parameters, after the last kink, where the loss is linear and must agree exactly;
// (2) with every BatchNorm switched to fixed statistics of unit order (so that it is a
// per-channel affine map that neither couples the nodes nor magnifies a step), every parameter
// and the input, most elements agreeing; the function is then piecewise linear, so a small step
// (4e-4, retried at 1e-4) adds no truncation error while crossing fewer kinks: with hundreds of
// ReLU and max kinks, one often lies within 1e-3 of the point, and since every element of a
// bias vector reaches it, a whole tensor then fails together at the default step of 1e-2.
// float32 rounding stays far below the tolerance at 1e-4 for a model this small. Even so about one
// random point in thirty has a kink within 1e-4 of it, so these checks use fixed points (seeds)
// where none does, instead of fresh ones: finite differences cannot judge a gradient at a kink,
// and a wrong backward fails at any point. C1 is 12: with fewer hidden
// units an edge whose EdgeConv hidden layer is entirely off sends the bare output bias, tying
// with another such edge in the max, a kink exactly at the point checked (2^-C1 per edge).
// BatchNorm's own training-mode backward is checked op by op (test_ops_norm).
GradCheckOptions model_options(uint64_t seed) {
  GradCheckOptions options;
  options.seed = seed;
  options.step = 4e-4f;
  options.retry_smaller_step = true;
  options.min_fraction_ok = 0.6;
  options.max_checks_per_input = 16;
  return options;
}

void batch_norms_fixed(Glevr& model, Rng& rng) {
  for (BatchNorm* norm : {model.input_norm.get(), model.forward_stream->norm.get(),
                          model.backward_stream->norm.get(), model.undirected_stream->norm.get()}) {
    norm->eval();
    norm->running_mean.copy_from(random_tensor(norm->running_mean.shape(), rng, 0.1f));
    norm->running_var.copy_from(positive_tensor(norm->running_var.shape(), rng));
  }
}

std::vector<Tensor> rgcn_parameters(const Glevr& model) {
  std::vector<Tensor> out;
  for (const auto& [name, p] : model.named_parameters()) {
    if (name.find(".rgcn.") != std::string::npos) out.push_back(p);
  }
  return out;
}

}  // namespace

TEST_CASE("GLEVR: gradients by finite differences (parameters and node features)") {
  for (const bool projection : {true, false}) {
    CAPTURE(projection);
    const uint64_t seed = projection ? 1 : 2;  // fixed points, see above
    Rng rng(seed);
    Glevr model(small_config({12}, projection, 12), rng);
    jitter(model, rng);
    const Graph g = build_take_graph(glevr_take_spec(4, 1, false)).graph;
    const Tensor x = away_from_zero({8, 12}, rng, 0.1f);
    // Same dropout masks in every evaluation of the function.
    const auto run = [&](const Tensor& input) {
      model.reseed_dropout(seed);
      return model.forward(input, g);
    };
    GradCheckOptions exact;
    exact.seed = seed;
    const GradCheckResult rgcn =
        gradcheck_parameters([&]() { return run(x); }, rgcn_parameters(model), exact);
    INFO(rgcn.report);
    CHECK(rgcn.ok);
    batch_norms_fixed(model, rng);
    const GradCheckResult params =
        gradcheck_parameters([&]() { return run(x); }, model.parameters(), model_options(seed));
    INFO(params.report);
    CHECK(params.ok);
    const GradCheckResult input = gradcheck(
        [&](const std::vector<Tensor>& in) { return run(in[0]); }, {x}, model_options(seed));
    INFO(input.report);
    CHECK(input.ok);
  }
}

TEST_CASE("GLEVR-Hetero: typed inputs, caption nodes, gradients through both projections") {
  const uint64_t seed = 3;  // a fixed point, see model_options
  Rng rng(seed);
  Glevr model(small_config({8, 3}, true, 12), rng);
  jitter(model, rng);
  // One take: ego 0-2, text 3-5; video rows first, then caption rows.
  const Graph g = build_take_graph(glevr_take_spec(3, 0, true)).graph;
  const Tensor video = away_from_zero({3, 8}, rng, 0.1f);
  const Tensor text = away_from_zero({3, 3}, rng, 0.1f);
  const IndexTensor rows({0, 1, 2, 3, 4, 5});
  CHECK(model.forward_typed({video, text}, rows, g).shape() == Shape{6, 4});
  const Graph g2 = build_take_graph(glevr_take_spec(3, 0, false)).graph;
  model.eval();
  const Tensor ego_only = model.forward_typed({video}, IndexTensor({0, 1, 2}), g2);
  check_close(ego_only, model.forward(video, g2), 0, 0);
  model.train();
  CHECK_THROWS_AS(model.forward_typed({video, text}, IndexTensor({0, 1, 6}), g2), ShapeError);
  CHECK_THROWS_AS(model.forward_typed({video, video}, rows, g), ShapeError);
  CHECK_THROWS_AS(Glevr(small_config({6, 3}, false)), ValueError);

  const auto run = [&](const Tensor& v, const Tensor& t) {
    model.reseed_dropout(seed);
    return model.forward_typed({v, t}, rows, g);
  };
  batch_norms_fixed(model, rng);
  const GradCheckResult params = gradcheck_parameters([&]() { return run(video, text); },
                                                      model.parameters(), model_options(seed));
  INFO(params.report);
  CHECK(params.ok);
  const GradCheckResult inputs =
      gradcheck([&](const std::vector<Tensor>& in) { return run(in[0], in[1]); }, {video, text},
                model_options(seed));
  INFO(inputs.report);
  CHECK(inputs.ok);
}

TEST_CASE("segment MLP: released shapes, names and gradients") {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  SegmentMlp mlp(6, 4, 9, rng);
  const auto named = mlp.named_parameters();
  REQUIRE(named.size() == 4);
  CHECK(named[0].first == "mlp.0.weight");
  CHECK(named[0].second.shape() == Shape{9, 6});
  CHECK(named[3].first == "mlp.1.bias");
  CHECK(SegmentMlp(1536, 278).parameter_count() == 1536 * 1056 + 1056 + 1056 * 278 + 278);
  const Tensor x = away_from_zero({5, 6}, rng, 0.1f);
  GradCheckOptions options;  // one ReLU layer: a small step rarely crosses its kinks
  options.step = 1e-3f;
  options.retry_smaller_step = true;
  require_gradcheck([&](const std::vector<Tensor>& in) { return mlp.forward(in[0]); }, {x}, seed,
                    options);
}
