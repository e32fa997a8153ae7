// RSTG: the region graph, every variant's forward and backward (checked by finite
// differences on a small configuration), and overfitting 64 SyncMNIST videos.
#include <doctest/doctest.h>

#include <functional>
#include <set>

#include "graph/graph.h"
#include "models/rstg.h"
#include "nn/optim.h"
#include "support/check.h"
#include "support/synthetic_digits.h"
#include "video/syncmnist.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

// A model small enough for finite differences: 22x22 frames, 2 conv blocks -> a 4x4 map.
// Finite differences cannot check the backbone's parameters inside a whole model: a step on
// any of them shifts every activation of a channel, and those sitting within a step of a ReLU
// or max-pool kink (BatchNorm centres them there) cross it, so the difference measures the
// kinks. The graph and recurrent parts are checked here; the backbone's ops are checked one by
// one (test_ops_*), and the whole model, backbone included, against PyTorch's gradients
// (test_rstg_torch).
RstgConfig small_config(RstgVariant variant) {
  RstgConfig c;
  c.backbone_batch_norm = false;
  // PyTorch's smaller initial weights: the released Glorot init makes every activation move
  // more per step and crosses more kinks. (The gradient code is the same either way.)
  c.init = "torch";
  c.variant = variant;
  c.image_size = 22;
  c.backbone_channels = {3, 4};
  c.node_dim = 5;
  c.stages = 2;
  c.classes = 6;
  return c;
}

// Moves every parameter off its initial value: zero-initialised biases (the gather bias)
// would otherwise put ReLU inputs exactly on the kink, where a central difference measures
// half the slope.
// The space and time stages' parameters (and the classifier): everything after the node
// features. The backbone, node norm and projection move every node at once and are checked
// exactly against PyTorch in test_rstg_torch instead.
std::vector<Tensor> graph_and_time_parameters(const Module& m) {
  std::vector<Tensor> out;
  for (const auto& [name, p] : m.named_parameters()) {
    if (name.rfind("backbone.", 0) != 0 && name.rfind("node_", 0) != 0) out.push_back(p);
  }
  return out;
}

void jitter(Module& m, Rng& rng) {
  for (Tensor p : m.parameters()) {
    for (int64_t i = 0; i < p.numel(); ++i)
      p.data()[i] += 0.05f * rng.normal();
  }
}

// Kinks (see small_config) make single differences unreliable, never most of them: a third of
// every tensor's elements and three quarters of all must agree. A wrong gradient for a tensor
// misses on all of its elements.
GradCheckOptions kinked_model_options(uint64_t seed) {
  GradCheckOptions options;
  options.seed = seed;
  options.retry_smaller_step = true;
  options.min_fraction_ok = 0.34;
  options.min_overall_fraction_ok = 0.75;
  options.max_checks_per_input = 24;
  return options;
}

// A jittered model of `config` on a random video: its graph and time parameters' gradients
// checked by finite differences.
void check_graph_and_time_gradients(const RstgConfig& config) {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  Rstg model(config, rng);
  jitter(model, rng);
  Tensor video = rand_uniform({2, 3, 1, 22, 22}, rng, 0.0f, 1.0f);
  const GradCheckResult r =
      gradcheck_parameters([&]() { return model.forward(video); }, graph_and_time_parameters(model),
                           kinked_model_options(seed));
  INFO("seed " << seed << "\n" << r.report);
  CHECK(r.ok);
}

// Every variant of `config` but `skip` runs forward and backward on a small random video.
void check_every_variant_runs(const RstgConfig& config, Rng& rng, const std::string& skip = "") {
  for (const std::string& name : rstg_variant_names()) {
    if (name == skip) continue;
    CAPTURE(name);
    RstgConfig variant = config;
    variant.variant = parse_rstg_variant(name);
    Rstg model(variant, rng);
    Tensor logits = model.forward(rand_uniform({2, 3, 1, 22, 22}, rng, 0.0f, 1.0f));
    CHECK(logits.shape() == Shape{2, 6});
    sum(logits).backward();
  }
}

// The node inputs' width: the node norm's size (0 when the model has none).
int64_t node_input_width(const Rstg& model) {
  for (const auto& [name, p] : model.named_parameters()) {
    if (name == "node_norm.weight") return p.size(0);
  }
  return 0;
}

}  // namespace

TEST_CASE("the default region graph has the documented 45 undirected edges") {
  RstgConfig config;  // 64x64 frames, 3 blocks -> 6x6 map; grids 3x3 + 2x2 + 1x1
  Rstg model(config);
  CHECK(model.cells().size() == 14);
  const Graph& g = model.frame_graph();
  CHECK(g.num_nodes() == 14);
  CHECK(g.num_edges() == 90);
  std::set<std::pair<int64_t, int64_t>> undirected;
  for (int64_t e = 0; e < g.num_edges(); ++e) {
    const int64_t a = g.src()[static_cast<size_t>(e)], b = g.dst()[static_cast<size_t>(e)];
    CHECK(a != b);
    undirected.insert({std::min(a, b), std::max(a, b)});
  }
  CHECK(undirected.size() == 45);
  // Within the 3x3 grid: 4-neighbours only (12 edges), e.g. cell 0 touches 1 and 3, not 4.
  CHECK(undirected.count({0, 1}) == 1);
  CHECK(undirected.count({0, 3}) == 1);
  CHECK(undirected.count({0, 4}) == 0);  // corner contact does not count
  // The 1x1 node (13) connects to all 13 others.
  for (int64_t i = 0; i < 13; ++i)
    CHECK(undirected.count({i, 13}) == 1);
  // Fully connected: all 14 * 13 ordered pairs.
  config.fully_connected = true;
  CHECK(Rstg(config).frame_graph().num_edges() == 14 * 13);
  // Released all-nodes attention: all 14 * 14 pairs, attribute 1 on the 90 region edges.
  config.fully_connected = false;
  config.attention_over_all_nodes = true;
  const Graph all = Rstg(config).frame_graph();
  CHECK(all.num_edges() == 14 * 14);
  float marked = 0;
  for (float a : all.edge_attr())
    marked += a;
  CHECK(marked == 90.0f);
}

TEST_CASE("every variant: output shape, and gradients by finite differences") {
  for (const std::string& name : rstg_variant_names()) {
    CAPTURE(name);
    const uint64_t seed = fresh_seed();
    Rng rng(seed);
    Rstg model(small_config(parse_rstg_variant(name)), rng);
    jitter(model, rng);
    Tensor video = rand_uniform({2, 3, 1, 22, 22}, rng, 0.0f, 1.0f);
    CHECK(model.forward(video).shape() == Shape{2, 6});
    const GradCheckOptions options = kinked_model_options(seed);
    const GradCheckResult params = gradcheck_parameters([&]() { return model.forward(video); },
                                                        graph_and_time_parameters(model), options);
    INFO("seed " << seed << "\n" << params.report);
    CHECK(params.ok);
    const GradCheckResult input = gradcheck(
        [&](const std::vector<Tensor>& in) { return model.forward(in[0]); }, {video}, options);
    INFO(input.report);
    CHECK(input.ok);
  }
}

TEST_CASE("a GRU time stage works too, and the released all-nodes attention") {
  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.cell = "gru";
  config.attention_over_all_nodes = true;
  check_graph_and_time_gradients(config);
}

TEST_CASE("residual space stages: the identity when the update is silent; gradients checked") {
  Rng rng(fresh_seed());
  // With the update MLP at zero (weights and biases: ReLU(0) = 0) a residual stage passes its
  // nodes through unchanged, and a replacing one (the paper's) returns zeros.
  const Graph graph(3, {0, 1, 2, 1}, {1, 0, 1, 2});
  const Tensor x = rand_uniform({3, 4}, rng, -1.0f, 1.0f);
  for (const bool residual : {true, false}) {
    CAPTURE(residual);
    SpaceStage stage(4, 0, false, residual, false, rng);
    for (Tensor p : stage.update->parameters())
      p.copy_from(Tensor::zeros(p.shape()));
    const std::vector<float> out = stage.forward(x, Tensor(), graph).to_vector();
    CHECK(out == (residual ? x.to_vector() : std::vector<float>(12, 0.0f)));
  }

  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.stage_residual = true;
  config.stage_norm = true;
  check_graph_and_time_gradients(config);
}

TEST_CASE("residual time stages pass the nodes through a silent cell; gradients checked") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  // time-only with v = x + LSTM(x): with every weight of the internal cell at zero the LSTM
  // outputs zeros, so K stages leave the nodes as they came, as with no stage at all.
  RstgConfig config = small_config(RstgVariant::kTimeOnly);
  config.time_residual = true;
  RstgConfig no_stages = config;
  no_stages.stages = 0;
  Rng rng_a(seed), rng_b(seed);
  Rstg model(config, rng_a), reference(no_stages, rng_b);
  for (auto [name, p] : model.named_parameters()) {
    if (name.rfind("time.", 0) == 0) p.copy_from(Tensor::zeros(p.shape()));
  }
  Rng video_rng(seed + 1);
  const Tensor video = rand_uniform({2, 3, 1, 22, 22}, video_rng, 0.0f, 1.0f);
  CHECK(model.forward(video).to_vector() == reference.forward(video).to_vector());

  RstgConfig full = small_config(RstgVariant::kAllTempStages);
  full.time_residual = true;
  full.stage_residual = true;
  check_graph_and_time_gradients(full);
}

TEST_CASE("dot attention: a node prefers the neighbour like itself; gradients checked") {
  Rng rng(fresh_seed());
  // Node 0 hears nodes 1 and 2; node 1 is a copy of node 0, node 2 is not. With Q = K = I the
  // scores are x_0 . x_j / sqrt(D): softmax(1/2, 0) over (1, 2). The paper's additive score
  // w1 . x_0 + w2 . x_j cannot rank j by its likeness to the receiver.
  const Graph graph(3, {1, 2, 0}, {0, 0, 1});
  const Tensor x = Tensor::from_vector({3, 4}, {1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0});
  SpaceStage stage(4, 0, false, true, true, rng);
  CHECK(!stage.score_source);
  const auto set_identity = [](Tensor p) {
    std::vector<float> eye(16, 0.0f);
    for (int i = 0; i < 4; ++i)
      eye[static_cast<size_t>(i * 5)] = 1.0f;
    p.copy_from(Tensor::from_vector({4, 4}, eye));
  };
  set_identity(stage.query->parameters()[0]);
  set_identity(stage.key->parameters()[0]);
  Tensor attention;
  stage.forward(x, Tensor(), graph, &attention);
  const float like = std::exp(0.5f) / (std::exp(0.5f) + 1.0f);
  CHECK(attention.data()[0] == doctest::Approx(like));
  CHECK(attention.data()[1] == doctest::Approx(1.0f - like));
  CHECK(attention.data()[2] == doctest::Approx(1.0f));  // node 1's only neighbour

  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.dot_attention = true;
  config.stage_residual = true;
  check_graph_and_time_gradients(config);
}

TEST_CASE("motion input: the backbone sees F_t - F_(t-1), zero for a still video") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.motion_input = true;
  // Whether the frames reach the output is checked on the time-only variant (the motion input
  // is the backbone's, the same in every variant): under some random inits the space stage's
  // ReLU update is off for every node, or this 3-channel backbone's ReLUs for every pixel, and
  // then the output ignores the video altogether. LSTM cells and positive backbone biases keep
  // every path live, so the checks are about the difference channel, not about the draw.
  RstgConfig live = config;
  live.variant = RstgVariant::kTimeOnly;
  Rstg model(live, rng);
  Tensor first_conv;  // [out, 2C, 3, 3]: input channel 0 the frame, 1 the difference
  for (const auto& [name, p] : model.named_parameters()) {
    if (!first_conv.defined() && p.dim() == 4) first_conv = p;
  }
  REQUIRE(first_conv.size(1) == 2);
  for (auto [name, p] : model.named_parameters()) {
    if (name.rfind("backbone.", 0) == 0 && p.dim() == 1) {
      for (int64_t i = 0; i < p.numel(); ++i)
        p.data()[i] = 1.0f;
    }
  }
  const Tensor frame = rand_uniform({2, 1, 1, 22, 22}, rng, 0.0f, 1.0f);
  const Tensor still = concat({frame, frame, frame}, 1);  // [2, 3, 1, 22, 22]
  Tensor moving = still.copy();
  for (int64_t i = 0; i < 22 * 22; ++i)  // frame 1 of video 0 differs from frame 0
    moving.data()[22 * 22 + i] = rng.uniform();
  const std::vector<float> still_before = model.forward(still).to_vector();
  const std::vector<float> moving_before = model.forward(moving).to_vector();
  // Change only the weights reading the difference channel.
  for (int64_t o = 0; o < first_conv.size(0); ++o) {
    for (int64_t k = 0; k < 9; ++k)
      first_conv.data()[(o * 2 + 1) * 9 + k] += 0.5f;
  }
  CHECK(model.forward(still).to_vector() == still_before);  // the first frame's difference is 0
  CHECK(model.forward(moving).to_vector() != moving_before);

  Rstg full(config, rng);
  jitter(full, rng);
  Tensor video = rand_uniform({2, 3, 1, 22, 22}, rng, 0.0f, 1.0f);
  const GradCheckResult input =
      gradcheck([&](const std::vector<Tensor>& in) { return full.forward(in[0]); }, {video},
                kinked_model_options(seed));
  INFO(input.report);
  CHECK(input.ok);
  check_graph_and_time_gradients(config);
}

TEST_CASE("position moments: node inputs say where a cell's activation sits; gradients checked") {
  // One channel on a 4x4 map, one hot pixel of value 8; cells: the whole map and its left half.
  const std::vector<Cell> cells = {{0, 0, 4, 4}, {0, 0, 4, 2}};
  const auto hot_pixel = [](int64_t row, int64_t col) {
    Tensor map = Tensor::zeros({1, 1, 4, 4});
    map.data()[row * 4 + col] = 8.0f;
    return map;
  };
  const Tensor plain = region_node_inputs(hot_pixel(1, 0), cells, false);
  REQUIRE(plain.shape() == Shape{1, 2, 1});
  CHECK(plain.to_vector() == std::vector<float>{0.5f, 1.0f});
  // Pixel centres on [-1, 1]: row 1 -> -0.25, col 0 -> -0.75, col 1 -> -0.25.
  const Tensor at_10 = region_node_inputs(hot_pixel(1, 0), cells, true);
  REQUIRE(at_10.shape() == Shape{1, 2, 3});
  CHECK(at_10.to_vector() == std::vector<float>{0.5f, -0.125f, -0.375f, 1.0f, -0.25f, -0.75f});
  // A move inside the left half leaves its area mean alone and shows in its column moment.
  const Tensor at_11 = region_node_inputs(hot_pixel(1, 1), cells, true);
  CHECK(at_11.to_vector() == std::vector<float>{0.5f, -0.125f, -0.125f, 1.0f, -0.25f, -0.25f});
  CHECK(region_node_inputs(hot_pixel(1, 1), cells, false).to_vector() == plain.to_vector());

  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  const Tensor map = rand_uniform({2, 3, 4, 4}, rng, -1.0f, 1.0f);
  const GradCheckResult pooled = gradcheck(
      [&](const std::vector<Tensor>& in) {
        return region_node_inputs(in[0], grid_cells(2, 2, 4, 4), true);
      },
      {map});
  INFO(pooled.report);
  CHECK(pooled.ok);

  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.position_moments = true;
  Rstg model(config, rng);
  bool found_norm = false;
  for (const auto& [name, p] : model.named_parameters()) {
    if (name == "node_norm.weight") {
      found_norm = true;
      CHECK(p.size(0) == 3 * 4);  // 3 x the last backbone width
    }
  }
  CHECK(found_norm);
  check_graph_and_time_gradients(config);
}

TEST_CASE("context convs: same-size conv blocks after the pooled ones; gradients checked") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.context_convs = 2;
  Rstg model(config, rng);
  std::vector<Shape> conv_shapes;
  for (const auto& [name, p] : model.named_parameters()) {
    if (name.rfind("backbone.", 0) == 0 && p.dim() == 4) conv_shapes.push_back(p.shape());
  }
  // The two pooled blocks (3, 4 wide), then two 4 -> 4 context convs.
  CHECK(conv_shapes == std::vector<Shape>{{3, 1, 3, 3}, {4, 3, 3, 3}, {4, 4, 3, 3}, {4, 4, 3, 3}});
  CHECK(rstg_map_size(config) == 4);
  jitter(model, rng);
  Tensor video = rand_uniform({2, 3, 1, 22, 22}, rng, 0.0f, 1.0f);
  CHECK(model.forward(video).shape() == Shape{2, 6});
  const GradCheckResult input =
      gradcheck([&](const std::vector<Tensor>& in) { return model.forward(in[0]); }, {video},
                kinked_model_options(seed));
  INFO(input.report);
  CHECK(input.ok);
  check_graph_and_time_gradients(config);
  config.context_convs = -1;
  CHECK_THROWS_WITH_AS(Rstg(config, rng), doctest::Contains("context_convs"), ValueError);
}

TEST_CASE("node motion: each node's histogram names its pixels' move; every variant runs") {
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  // A textured 8x8 block at rows 24..31, cols 24..31 of a 64x64 frame moves by (+4, -2)
  // pixels, (+2, -1) in the halved frame. Map of 6x6 units, a 2x2 grid then a 1x1 grid.
  Tensor video = Tensor::zeros({1, 3, 1, 64, 64});
  const Tensor texture = rand_uniform({8, 8}, rng, 0.2f, 1.0f);
  const auto paste = [&](int64_t frame, int64_t top, int64_t left) {
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t c = 0; c < 8; ++c)
        video.data()[(frame * 64 + top + r) * 64 + left + c] = texture.data()[r * 8 + c];
  };
  paste(0, 24, 24);
  paste(1, 28, 22);
  paste(2, 28, 22);  // still
  std::vector<Cell> cells = grid_cells(2, 2, 6, 6);
  cells.push_back(grid_cells(1, 1, 6, 6)[0]);
  const Tensor hist = node_motion_histograms(video, cells, 6, kNodeMotionRadius);
  REQUIRE(hist.shape() == Shape{3, 5, kNodeMotionBins});
  const auto bin = [](int64_t dy, int64_t dx) {
    return (dy + kNodeMotionRadius) * (2 * kNodeMotionRadius + 1) + dx + kNodeMotionRadius;
  };
  const auto at = [&](int64_t frame, int64_t node, int64_t b) {
    return hist.data()[(frame * 5 + node) * kNodeMotionBins + b];
  };
  // The ink of the halved frame 1, as the whole-frame node's area mean.
  double ink = 0.0;
  for (int64_t i = 0; i < 64 * 64; ++i)
    ink += video.data()[64 * 64 + i];
  ink /= 64.0 * 64.0;
  double frame0 = 0.0, total1 = 0.0, total2 = 0.0;
  for (int64_t node = 0; node < 5; ++node) {
    for (int64_t b = 0; b < kNodeMotionBins; ++b) {
      frame0 += std::abs(at(0, node, b));
      if (node == 4) total1 += at(1, node, b);
      if (node == 4) total2 += at(2, node, b);
    }
  }
  CHECK(frame0 == 0.0);                                 // no previous frame
  CHECK(total1 == doctest::Approx(ink).epsilon(1e-5));  // every inked pixel votes once
  CHECK(total2 == doctest::Approx(ink).epsilon(1e-5));
  // The block's halved pixels (rows 14..17 of 32 = map rows 2.6..3.4) straddle the 2x2 grid's
  // middle line; all its votes go to the move (+2, -1), then to "still".
  CHECK(at(1, 4, bin(2, -1)) == doctest::Approx(ink).epsilon(1e-5));
  CHECK(at(2, 4, bin(0, 0)) == doctest::Approx(ink).epsilon(1e-5));
  CHECK(at(1, 0, bin(2, -1)) > 0.0f);   // top-left cell
  CHECK(at(1, 2, bin(2, -1)) > 0.0f);   // bottom-left cell
  CHECK(at(1, 1, bin(2, -1)) == 0.0f);  // the right cells hold no ink
  CHECK(at(1, 3, bin(2, -1)) == 0.0f);
  CHECK_THROWS_AS(node_motion_histograms(Tensor::zeros({1, 2, 1, 63, 64}), cells, 6, 4),
                  ShapeError);
  // The mass and mean move after each histogram: (+2, -1) of a radius of 4, then still.
  const Tensor features = node_motion_features(hist, kNodeMotionRadius);
  REQUIRE(features.shape() == Shape{3, 5, kNodeMotionFeatures});
  const auto feature = [&](int64_t frame, int64_t node, int64_t k) {
    return features.data()[(frame * 5 + node) * kNodeMotionFeatures + k];
  };
  CHECK(feature(1, 4, bin(2, -1)) == at(1, 4, bin(2, -1)));
  CHECK(feature(1, 4, kNodeMotionBins) == doctest::Approx(ink).epsilon(1e-5));
  CHECK(feature(1, 4, kNodeMotionBins + 1) == doctest::Approx(0.5f));
  CHECK(feature(1, 4, kNodeMotionBins + 2) == doctest::Approx(-0.25f));
  CHECK(feature(2, 4, kNodeMotionBins + 1) == 0.0f);
  CHECK(feature(1, 1, kNodeMotionBins) == 0.0f);  // no ink: no mass, no move
  CHECK(feature(1, 1, kNodeMotionBins + 1) == 0.0f);
  CHECK_THROWS_AS(node_motion_features(Tensor::zeros({1, 5, 80}), kNodeMotionRadius), ShapeError);

  // In the model: node inputs (baselines: frame features) 84 wider; forward and backward run.
  for (const std::string& name : rstg_variant_names()) {
    CAPTURE(name);
    RstgConfig config = small_config(parse_rstg_variant(name));
    config.node_motion = true;
    Rstg model(config, rng);
    const Tensor small = rand_uniform({2, 3, 1, 22, 22}, rng, 0.0f, 1.0f);
    Tensor logits = model.forward(small);
    CHECK(logits.shape() == Shape{2, 6});
    sum(logits).backward();
    if (name == "all-temp-stages") {
      for (const auto& [param, p] : model.named_parameters()) {
        if (param == "node_norm.weight") CHECK(p.size(0) == 4 + kNodeMotionFeatures);
      }
      check_graph_and_time_gradients(config);
    }
  }
}

TEST_CASE("motion agreement: each node's votes on the frame's dominant move") {
  // Radius 1: 9 bins. Frame 0: the whole frame votes most for bin 2 (3 votes against 2 on bin
  // 7). Node 0 holds 2 of its 3 votes there, node 1 none, node 2 nothing at all.
  // Frame 1: nothing moved anywhere.
  Tensor nodes = Tensor::zeros({2, 3, 9});
  nodes.data()[0 * 9 + 2] = 2.0f;
  nodes.data()[0 * 9 + 7] = 1.0f;
  nodes.data()[1 * 9 + 7] = 1.0f;
  Tensor frame = Tensor::zeros({2, 1, 9});
  frame.data()[2] = 3.0f;
  frame.data()[7] = 2.0f;
  const Tensor features = node_motion_features(nodes, 1, frame);
  REQUIRE(features.shape() == Shape{2, 3, 9 + 3 + kMotionAgreementFeatures});
  const auto at = [&](int64_t f, int64_t node, int64_t k) {
    return features.data()[(f * 3 + node) * 14 + k];
  };
  CHECK(at(0, 0, 12) == doctest::Approx(2.0f / 3.0f));  // share on the dominant move
  CHECK(at(0, 0, 13) == 2.0f);                          // votes on it
  CHECK(at(0, 1, 12) == 0.0f);
  CHECK(at(0, 1, 13) == 0.0f);
  CHECK(at(0, 2, 12) == 0.0f);  // no votes: no share
  for (int64_t node = 0; node < 3; ++node) {
    CHECK(at(1, node, 12) == 0.0f);
    CHECK(at(1, node, 13) == 0.0f);
  }
  // The first 12 columns are the plain features.
  const Tensor plain = node_motion_features(nodes, 1);
  for (int64_t row = 0; row < 6; ++row) {
    for (int64_t k = 0; k < 12; ++k)
      CHECK(features.data()[row * 14 + k] == plain.data()[row * 12 + k]);
  }
  CHECK_THROWS_WITH_AS(node_motion_features(nodes, 1, Tensor::zeros({2, 2, 9})),
                       doctest::Contains("frame histograms [2,2,9]"), ShapeError);

  // In the model: two more node inputs, refused without node motion; every variant runs.
  Rng rng(fresh_seed());
  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.motion_agreement = true;
  CHECK_THROWS_WITH_AS(Rstg(config, rng), doctest::Contains("needs node_motion"), ValueError);
  config.node_motion = true;
  CHECK(node_input_width(Rstg(config, rng)) == 4 + kNodeMotionFeatures + kMotionAgreementFeatures);
  check_every_variant_runs(config, rng);
}

TEST_CASE("motion similarity: edge features steer the attention and the messages") {
  // A fixed stage and input (ReLUs could silence the edge's path on an unlucky draw; this one
  // does not), random ones for the gradient checks below.
  Rng fixed(11);
  // Node 0 hears nodes 1 and 2 with edge features 1 and 0; node 1 hears node 0.
  const Graph graph(3, {1, 2, 0}, {0, 0, 1});
  const Tensor x = rand_uniform({3, 4}, fixed, -1.0f, 1.0f);
  const Tensor edges = Tensor::from_vector({3, 1}, {1.0f, 0.0f, 0.5f});
  SpaceStage stage(4, 0, false, true, false, fixed, 1);
  REQUIRE(static_cast<bool>(stage.edge_score));
  REQUIRE(static_cast<bool>(stage.edge_send));
  Tensor plain_attention, attention;
  // The additive score alone, then with e * 3 added: the odds of edge 0 over edge 1 grow by e^3.
  stage.edge_score->weight.copy_from(Tensor::zeros({1, 1}));
  stage.forward(x, Tensor(), graph, &plain_attention, edges);
  stage.edge_score->weight.copy_from(Tensor::full({1, 1}, 3.0f));
  stage.forward(x, Tensor(), graph, &attention, edges);
  const auto odds = [](const Tensor& a) { return a.data()[0] / a.data()[1]; };
  CHECK(odds(attention) == doctest::Approx(odds(plain_attention) * std::exp(3.0f)).epsilon(1e-4));
  // The features reach the messages: with a silent score weight they still change the output.
  stage.edge_score->weight.copy_from(Tensor::zeros({1, 1}));
  const std::vector<float> with = stage.forward(x, Tensor(), graph, nullptr, edges).to_vector();
  const std::vector<float> without =
      stage.forward(x, Tensor(), graph, nullptr, Tensor::zeros({3, 1})).to_vector();
  CHECK(with != without);
  CHECK_THROWS_WITH_AS(stage.forward(x, Tensor(), graph), doctest::Contains("edge features none"),
                       ShapeError);
  CHECK_THROWS_AS(stage.forward(x, Tensor(), graph, nullptr, Tensor::zeros({2, 1})), ShapeError);
  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  stage.edge_score->weight.copy_from(Tensor::full({1, 1}, 0.7f));
  const GradCheckResult r = gradcheck(
      [&](const std::vector<Tensor>& in) {
        return stage.forward(in[0], Tensor(), graph, nullptr, in[1]);
      },
      {rand_uniform({3, 4}, rng, -1.0f, 1.0f), Tensor::from_vector({3, 1}, {0.9f, 0.2f, -0.4f})},
      kinked_model_options(seed));
  INFO(r.report);
  CHECK(r.ok);

  // In the model: refused without node motion; every variant runs; gradients checked with
  // region and with detector nodes (where the cosine's gradient reaches the heat maps).
  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.motion_similarity = true;
  CHECK_THROWS_WITH_AS(Rstg(config, rng), doctest::Contains("needs node_motion"), ValueError);
  config.node_motion = true;
  config.stage_residual = true;
  check_every_variant_runs(config, rng);
  check_graph_and_time_gradients(config);
  config.detector_nodes = 3;
  check_graph_and_time_gradients(config);
}

TEST_CASE("detector nodes: each pools where its heat map points; every variant runs") {
  // Two channels on a 2x2 map (4 positions), two detectors. Detector 0 points hard at position
  // 3, detector 1 spreads evenly over all four.
  const Tensor map = Tensor::from_vector({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
  const Tensor heat = Tensor::from_vector({1, 2, 4}, {0, 0, 0, 40, 1, 1, 1, 1});
  // Per-position motion "histograms" of 3 bins: position p moved by bin p % 3.
  const Tensor motion = Tensor::from_vector({1, 4, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0});
  const Tensor nodes = detector_node_inputs(map, heat, motion);
  REQUIRE(nodes.shape() == Shape{1, 2, 2 + 1 + 2 + 3});
  const std::vector<float> got = nodes.to_vector();
  const std::vector<float> want = {
      4,    40, 40, 1, 0, 1,    0,     0,       // position 3's features and move
      2.5f, 25, 1,  0, 1, 0.5f, 0.25f, 0.25f};  // the means
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
  }
  // Without motion: the same first 5 columns per node.
  const Tensor plain = detector_node_inputs(map, heat, Tensor());
  REQUIRE(plain.shape() == Shape{1, 2, 5});
  CHECK(plain.to_vector()[5] == doctest::Approx(2.5f));
  CHECK_THROWS_WITH_AS(detector_node_inputs(map, Tensor::zeros({1, 2, 5}), Tensor()),
                       doctest::Contains("heat [1,2,5]"), ShapeError);
  CHECK_THROWS_WITH_AS(detector_node_inputs(map, heat, Tensor::zeros({1, 3, 3})),
                       doctest::Contains("motion [1,3,3]"), ShapeError);

  const uint64_t seed = fresh_seed();
  CAPTURE(seed);
  Rng rng(seed);
  const GradCheckResult pooled = gradcheck(
      [&](const std::vector<Tensor>& in) { return detector_node_inputs(in[0], in[1], in[2]); },
      {rand_uniform({2, 3, 2, 3}, rng, -1.0f, 1.0f), rand_uniform({2, 4, 6}, rng, -2.0f, 2.0f),
       rand_uniform({2, 6, 5}, rng, 0.0f, 1.0f)});
  INFO(pooled.report);
  CHECK(pooled.ok);

  // In the model: n nodes, every pair joined, one cell per map position; the settings that
  // only mean something for region nodes are refused.
  RstgConfig config = small_config(RstgVariant::kAllTempStages);
  config.detector_nodes = 3;
  {
    Rstg model(config, rng);
    CHECK(model.nodes_per_frame() == 3);
    CHECK(model.frame_graph().num_nodes() == 3);
    CHECK(model.frame_graph().num_edges() == 6);
    CHECK(model.cells().size() == 16);  // the 4x4 map
    CHECK(node_input_width(model) == 4 + 1 + 3);
    for (const auto& [name, p] : model.named_parameters()) {
      if (name == "detector.weight") CHECK(p.shape() == Shape{3, 4});
    }
  }
  for (const auto& refused : std::vector<std::function<void(RstgConfig&)>>{
           [](RstgConfig& c) { c.variant = RstgVariant::kPositional; },
           [](RstgConfig& c) { c.position_moments = true; },
           [](RstgConfig& c) { c.attention_over_all_nodes = true; },
           [](RstgConfig& c) { c.detector_nodes = -1; }}) {
    RstgConfig bad = config;
    refused(bad);
    CHECK_THROWS_AS(Rstg(bad, rng), ValueError);
  }
  config.node_motion = true;
  check_every_variant_runs(config, rng, "positional");
  config.time_residual = true;
  config.stage_residual = true;
  check_graph_and_time_gradients(config);
}

TEST_CASE("the space-stage settings change nothing in the variants without space stages") {
  const uint64_t seed = fresh_seed();
  Rng video_rng(seed + 1);
  const Tensor video = rand_uniform({2, 3, 1, 22, 22}, video_rng, 0.0f, 1.0f);
  // (the ablation reuses these variants' runs across such settings; see syncmnist_exp)
  for (const std::string& name : rstg_variant_names()) {
    CAPTURE(name);
    const RstgVariant variant = parse_rstg_variant(name);
    RstgConfig plain = small_config(variant), other = plain;
    other.stage_norm = true;
    other.stage_residual = true;
    other.dot_attention = true;
    other.fully_connected = true;
    other.attention_over_all_nodes = true;
    Rng rng_a(seed), rng_b(seed);
    Rstg a(plain, rng_a), b(other, rng_b);
    const bool same = a.forward(video).to_vector() == b.forward(video).to_vector();
    CHECK(same == !rstg_variant_has_space_stages(variant));
  }
}

TEST_CASE("attention weights are recorded per frame and stage, and sum to one per node") {
  Rng rng(3);
  Rstg model(small_config(RstgVariant::kAllTempStages), rng);
  model.record_attention = true;
  model.forward(rand_uniform({2, 3, 1, 22, 22}, rng, 0.0f, 1.0f));
  REQUIRE(model.last_attention.size() == 3);
  REQUIRE(model.last_attention[0].size() == 2);
  const Graph& g = model.frame_graph();
  std::vector<double> per_node(static_cast<size_t>(g.num_nodes()), 0.0);
  for (int64_t e = 0; e < g.num_edges(); ++e) {
    per_node[static_cast<size_t>(g.dst()[static_cast<size_t>(e)])] +=
        model.last_attention[1][0][static_cast<size_t>(e)];
  }
  for (double total : per_node)
    CHECK(total == doctest::Approx(1.0));
}

TEST_CASE("bad input shapes and settings are refused with clear messages") {
  Rstg model(small_config(RstgVariant::kAllTempStages));
  CHECK_THROWS_WITH_AS(model.forward(Tensor::zeros({2, 3, 1, 20, 20})),
                       doctest::Contains("[2,3,1,20,20]"), ShapeError);
  CHECK_THROWS_AS(parse_rstg_variant("spaceonly"), ValueError);
  RstgConfig deep = small_config(RstgVariant::kAllTempStages);
  deep.backbone_channels = {2, 2, 2, 2};
  CHECK_THROWS_WITH_AS(Rstg{deep}, doctest::Contains("leave no map"), ValueError);
}

TEST_CASE("RSTG overfits 64 SyncMNIST videos to 100%") {
  const DigitSet pool = synthetic_pool(6);
  const SyncBatch data = generate_batch(pool, 77, 0, 64, SyncMnistOptions{});
  Tensor videos = Tensor::empty({64, 10, 1, 64, 64});
  for (int64_t i = 0; i < videos.numel(); ++i)
    videos.data()[i] = data.videos[static_cast<size_t>(i)] / 255.0f;
  const IndexTensor labels(std::vector<int64_t>(data.labels.begin(), data.labels.end()));
  RstgConfig config;
  config.backbone_channels = {8, 16, 16};
  config.node_dim = 32;
  config.stages = 2;
  Rng rng(5);
  Rstg model(config, rng);
  Adam opt(model.named_parameters(), 3e-3);
  LrSchedule schedule;
  schedule.kind = LrSchedule::Kind::kCosine;
  schedule.base_lr = 3e-3;
  schedule.warmup_steps = 10;
  schedule.total_steps = 2 * 150;
  double accuracy = 0.0;
  int64_t step = 0;
  for (int epoch = 0; epoch < 150 && accuracy < 1.0; ++epoch) {
    for (int64_t start = 0; start < 64; start += 32) {
      opt.lr = schedule.lr_at(step++);
      opt.zero_grad();
      Tensor batch = slice(videos, 0, start, start + 32);
      const IndexTensor y(
          std::vector<int64_t>(labels.values.begin() + start, labels.values.begin() + start + 32));
      cross_entropy(model.forward(batch), y).backward();
      opt.step();
    }
    if (epoch % 10 == 9) {
      NoGradGuard no_grad;
      model.eval();
      Tensor logits = model.forward(videos);
      model.train();
      int64_t correct = 0;
      for (int64_t i = 0; i < 64; ++i) {
        const float* row = logits.data() + i * 46;
        correct += std::max_element(row, row + 46) - row == labels[i];
      }
      accuracy = correct / 64.0;
      MESSAGE("epoch " << epoch + 1 << ": accuracy " << accuracy);
    }
  }
  CHECK(accuracy == 1.0);
}
