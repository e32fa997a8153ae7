#include "models/rstg.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/parallel.h"
#include "graph/message_passing.h"

namespace stgnn {

// ---------------------------------------------------------------- variants

namespace {
const std::vector<std::pair<RstgVariant, std::string>> kVariantNames = {
    {RstgVariant::kSpaceOnly, "space-only"},
    {RstgVariant::kTimeOnly, "time-only"},
    {RstgVariant::kHomogeneous, "homogeneous"},
    {RstgVariant::kOneTempStage, "1-temp-stage"},
    {RstgVariant::kAllTempStages, "all-temp-stages"},
    {RstgVariant::kPositional, "positional"},
    {RstgVariant::kMeanLstm, "mean-lstm"},
    {RstgVariant::kConvLstm, "conv-lstm"},
};
}  // namespace

RstgVariant parse_rstg_variant(const std::string& name) {
  for (const auto& [variant, text] : kVariantNames) {
    if (text == name) return variant;
  }
  std::string known;
  for (const auto& [variant, text] : kVariantNames)
    known += (known.empty() ? "" : ", ") + text;
  throw ValueError("unknown RSTG variant '" + name + "' (known: " + known + ")");
}

std::string rstg_variant_name(RstgVariant variant) {
  for (const auto& [v, text] : kVariantNames) {
    if (v == variant) return text;
  }
  return "?";
}

std::vector<std::string> rstg_variant_names() {
  std::vector<std::string> names;
  for (const auto& [variant, text] : kVariantNames)
    names.push_back(text);
  return names;
}

bool rstg_variant_has_space_stages(RstgVariant variant) {
  return variant != RstgVariant::kTimeOnly && variant != RstgVariant::kMeanLstm &&
         variant != RstgVariant::kConvLstm;
}

int64_t rstg_map_size(const RstgConfig& config) {
  int64_t size = config.image_size;
  for (size_t i = 0; i < config.backbone_channels.size(); ++i)
    size = (size - 2) / 2;  // conv 3x3, pool 2
  if (size < 1) {
    throw ValueError("RSTG: the backbone's " + std::to_string(config.backbone_channels.size()) +
                     " conv+pool blocks leave no map of a " + std::to_string(config.image_size) +
                     " pixel image");
  }
  return size;
}

// ---------------------------------------------------------------- graph helpers

namespace {

// `copies` disjoint copies of g; copy c's nodes at c * g.num_nodes().
Graph replicate(const Graph& g, int64_t copies) {
  std::vector<int64_t> src, dst;
  std::vector<float> attr;
  const int64_t n = g.num_nodes(), e = g.num_edges();
  src.reserve(static_cast<size_t>(e * copies));
  dst.reserve(static_cast<size_t>(e * copies));
  for (int64_t c = 0; c < copies; ++c) {
    for (int64_t k = 0; k < e; ++k) {
      src.push_back(g.src()[static_cast<size_t>(k)] + c * n);
      dst.push_back(g.dst()[static_cast<size_t>(k)] + c * n);
      if (g.has_edge_attr()) attr.push_back(g.edge_attr()[static_cast<size_t>(k)]);
    }
  }
  return Graph(n * copies, src, dst, {}, 0, attr);
}

// Space-time graph over nodes laid out [T, B, n]: the frame graph in every (t, b), plus time
// edges (t-1, b, i) -> (t, b, i), handled by the same send / gather / update functions.
Graph spacetime_graph(const Graph& frame, int64_t frames, int64_t batch) {
  const Graph space = replicate(frame, frames * batch);
  std::vector<int64_t> src(space.src().begin(), space.src().end());
  std::vector<int64_t> dst(space.dst().begin(), space.dst().end());
  const int64_t per_frame = batch * frame.num_nodes();
  for (int64_t t = 1; t < frames; ++t) {
    for (int64_t k = 0; k < per_frame; ++k) {
      src.push_back((t - 1) * per_frame + k);
      dst.push_back(t * per_frame + k);
    }
  }
  return Graph(frames * per_frame, src, dst);
}

// The per-frame graph: the region graph (overlap or shared side), or, for the released
// all-nodes attention, every ordered pair including self with attribute 1 on region edges.
Graph frame_graph_for(const std::vector<Cell>& cells, bool fully_connected,
                      bool all_nodes_attention) {
  const Graph region = region_graph(cells, fully_connected, false);
  if (!all_nodes_attention) return region;
  const int64_t n = static_cast<int64_t>(cells.size());
  std::vector<float> adjacent(static_cast<size_t>(n * n), 0.0f);
  for (int64_t e = 0; e < region.num_edges(); ++e) {
    const int64_t i = region.dst()[static_cast<size_t>(e)],
                  j = region.src()[static_cast<size_t>(e)];
    adjacent[static_cast<size_t>(i * n + j)] = 1.0f;
  }
  std::vector<int64_t> src, dst;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      src.push_back(j);
      dst.push_back(i);
    }
  }
  return Graph(n, src, dst, {}, 0, adjacent);
}

// Every ordered pair (j -> i, j != i) of n nodes, ordered by (source, destination).
Graph complete_graph(int64_t n) {
  std::vector<int64_t> src, dst;
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < n; ++i) {
      if (i == j) continue;
      src.push_back(j);
      dst.push_back(i);
    }
  }
  return Graph(n, src, dst);
}

// Unnormalised Gaussian (std in map cells) centred on each cell, over a size x size map.
// [cells, map_size^2]; cells are in map coordinates.
Tensor gaussian_positions(const std::vector<Cell>& cells, int64_t map_size, float stddev) {
  Tensor p = Tensor::empty({static_cast<int64_t>(cells.size()), map_size * map_size});
  for (size_t k = 0; k < cells.size(); ++k) {
    const float cy = 0.5f * (cells[k].top + cells[k].bottom),
                cx = 0.5f * (cells[k].left + cells[k].right);
    for (int64_t r = 0; r < map_size; ++r) {
      for (int64_t c = 0; c < map_size; ++c) {
        const float dy = (r + 0.5f) - cy, dx = (c + 0.5f) - cx;
        p.data()[static_cast<int64_t>(k) * map_size * map_size + r * map_size + c] =
            std::exp(-(dy * dy + dx * dx) / (2.0f * stddev * stddev));
      }
    }
  }
  return p;
}

}  // namespace

// ---------------------------------------------------------------- time cells

namespace {

std::shared_ptr<RecurrentCell> make_cell(const std::string& kind, int64_t input, int64_t hidden,
                                         Rng& rng) {
  if (kind == "lstm") return std::make_shared<LSTMCell>(input, hidden, true, rng);
  if (kind == "gru") return std::make_shared<GRUCell>(input, hidden, true, rng);
  throw ValueError("RSTG: time cell '" + kind + "' (lstm or gru)");
}

// The released code's initialisation (see RstgConfig::init): Glorot-uniform weights, zero
// biases; normalisation scales (1-D "weight") keep their 1. Recurrent weights [G*H, in] are
// initialised per gate, as [H, in] matrices.
void released_init(Module& model, int64_t hidden, Rng& rng) {
  for (auto& [name, p] : model.named_parameters()) {
    const bool is_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
    if (is_bias) {
      p.fill_(0.0f);
      continue;
    }
    if (p.dim() < 2) continue;
    const bool recurrent =
        name.find("weight_ih") != std::string::npos || name.find("weight_hh") != std::string::npos;
    int64_t receptive = 1;
    for (int64_t k = 2; k < p.dim(); ++k)
      receptive *= p.size(k);
    const int64_t fan_in = p.size(1) * receptive;
    const int64_t fan_out = (recurrent ? hidden : p.size(0)) * receptive;
    const float bound = std::sqrt(6.0f / static_cast<float>(fan_in + fan_out));
    p.copy_from(rand_uniform(p.shape(), rng, -bound, bound));
  }
}

}  // namespace

// ---------------------------------------------------------------- SpaceStage

SpaceStage::SpaceStage(int64_t dim, int64_t position_dim, bool layer_norm, bool residual,
                       bool dot_attention, Rng& rng, int64_t edge_dim)
    : dim_(dim), residual_(residual) {
  const int64_t in = dim + position_dim;
  // The send MLP's first layer on [x_j ; x_i] is W_j x_j + W_i x_i: two per-node products
  // and a per-edge add instead of a product per edge on 2D-wide rows.
  send_source = register_module("send_source", std::make_shared<Linear>(in, dim, true, rng));
  send_target = register_module("send_target", std::make_shared<Linear>(in, dim, false, rng));
  send_out = register_module("send_out", std::make_shared<Linear>(dim, dim, true, rng));
  if (dot_attention) {
    query = register_module("query", std::make_shared<Linear>(dim, dim, false, rng));
    key = register_module("key", std::make_shared<Linear>(dim, dim, false, rng));
  } else {
    score_source = register_module("score_source", std::make_shared<Linear>(dim, 1, false, rng));
    score_target = register_module("score_target", std::make_shared<Linear>(dim, 1, false, rng));
  }
  if (edge_dim > 0) {
    edge_score = register_module("edge_score", std::make_shared<Linear>(edge_dim, 1, false, rng));
    edge_send = register_module("edge_send", std::make_shared<Linear>(edge_dim, dim, false, rng));
  }
  gather_bias = register_parameter("gather_bias", Tensor::zeros({dim}));
  update = register_module(
      "update", std::make_shared<MLP>(std::vector<int64_t>{2 * dim, dim, dim}, true, rng));
  if (layer_norm) output_norm = register_module("output_norm", std::make_shared<LayerNorm>(dim));
}

Tensor SpaceStage::forward(const Tensor& x, const Tensor& positions, const Graph& g,
                           Tensor* attention, const Tensor& edge_features) {
  if (edge_features.defined() != static_cast<bool>(edge_score) ||
      (edge_features.defined() &&
       (edge_features.dim() != 2 || edge_features.size(0) != g.num_edges() ||
        edge_features.size(1) != edge_score->weight.size(1)))) {
    throw ShapeError("SpaceStage: edge features " +
                     (edge_features.defined() ? shape_str(edge_features.shape()) : "none") +
                     ", expected " +
                     (edge_score ? "[" + std::to_string(g.num_edges()) + ", " +
                                       std::to_string(edge_score->weight.size(1)) + "]"
                                 : "none"));
  }
  const Tensor input = positions.defined() ? concat({x, positions}, 1) : x;
  // Send: m_ji = ReLU(W2 ReLU(W_j x_j + W_i x_i (+ W_e e_ji) + b1) + b2) per edge j -> i.
  Tensor first = gather_add(send_source->forward(input), send_target->forward(input), g);
  if (edge_send) first = add(first, edge_send->forward(edge_features));
  Tensor hidden = relu(first);
  Tensor messages = relu(send_out->forward(hidden));
  // Gather: a_ji = softmax_j LeakyReLU(w1 . x_i + w2 . x_j), g_i = ReLU(sum_j a_ji m_ji + b);
  // dot attention scores (Q x_i) . (K x_j) / sqrt(D) instead.
  Tensor scores;
  if (query) {
    scores = mul_scalar(sum(mul(gather(query->forward(x), g, EdgeEnd::kDestination),
                                gather(key->forward(x), g, EdgeEnd::kSource)),
                            1, true),
                        1.0f / std::sqrt(static_cast<float>(dim_)));
  } else {
    scores = leaky_relu(gather_add(score_source->forward(x), score_target->forward(x), g), 0.2f);
  }
  if (g.has_edge_attr())
    scores = add(scores, Tensor::from_vector({g.num_edges(), 1}, g.edge_attr()));
  if (edge_score) scores = add(scores, edge_score->forward(edge_features));
  Tensor weights = edge_softmax(scores, g);
  if (attention) *attention = weights;
  Tensor gathered = relu(add(scatter(messages, g, Reduce::kSum, weights), gather_bias));
  // Update: v_i = MLP([x_i ; g_i]) (+ x_i when residual).
  Tensor out = update->forward(concat({x, gathered}, 1));
  if (residual_) out = add(out, x);
  return output_norm ? output_norm->forward(out) : out;
}

// ---------------------------------------------------------------- node inputs

Tensor region_node_inputs(const Tensor& map, const std::vector<Cell>& cells,
                          bool position_moments) {
  if (!position_moments) return area_pool(map, cells);
  const int64_t h = map.size(2), w = map.size(3);
  // Pixel centres on a [-1, 1] scale: the moments read the same on any map size.
  Tensor rows = Tensor::empty({1, 1, h, w}), cols = Tensor::empty({1, 1, h, w});
  for (int64_t r = 0; r < h; ++r) {
    for (int64_t c = 0; c < w; ++c) {
      rows.data()[r * w + c] = (2.0f * static_cast<float>(r) + 1.0f) / static_cast<float>(h) - 1.0f;
      cols.data()[r * w + c] = (2.0f * static_cast<float>(c) + 1.0f) / static_cast<float>(w) - 1.0f;
    }
  }
  return area_pool(concat({map, mul(map, rows), mul(map, cols)}, 1), cells);
}

Tensor node_motion_histograms(const Tensor& video, const std::vector<Cell>& cells, int64_t map_size,
                              int64_t radius) {
  if (video.dim() != 5 || video.size(3) % 2 != 0 || video.size(4) % 2 != 0 || radius < 1) {
    throw ShapeError("node_motion_histograms: video " + shape_str(video.shape()) +
                     ", expected [B,T,C,H,W] with even H and W, radius " + std::to_string(radius) +
                     " >= 1");
  }
  const int64_t b = video.size(0), t = video.size(1), c = video.size(2);
  const int64_t h = video.size(3) / 2, w = video.size(4) / 2;  // the halved frames
  const int64_t side = 2 * radius + 1, bins = side * side, n = static_cast<int64_t>(cells.size());
  Tensor out = Tensor::zeros({b * t, n, bins});
  // Halved frames, the mean over channels and 2x2 pixels: [B*T, h, w].
  std::vector<float> halved(static_cast<size_t>(b * t * h * w));
  const float* in = video.data();
  parallel_for(b * t, 1, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      for (int64_t r = 0; r < h; ++r) {
        for (int64_t col = 0; col < w; ++col) {
          float total = 0.0f;
          for (int64_t ch = 0; ch < c; ++ch) {
            const float* plane = in + (f * c + ch) * 4 * h * w;
            const int64_t top = 2 * r * 2 * w + 2 * col;
            total += plane[top] + plane[top + 1] + plane[top + 2 * w] + plane[top + 2 * w + 1];
          }
          halved[static_cast<size_t>((f * h + r) * w + col)] = total / static_cast<float>(4 * c);
        }
      }
    }
  });
  // A halved pixel spans `scale` map units; its overlap with a cell is an area-mean weight.
  const float scale = static_cast<float>(map_size) / static_cast<float>(h);
  const float scale_x = static_cast<float>(map_size) / static_cast<float>(w);
  const auto overlap = [](float lo, float hi, float cell_lo, float cell_hi) {
    return std::max(0.0f, std::min(hi, cell_hi) - std::max(lo, cell_lo));
  };
  float* hist = out.data();
  parallel_for(b * t, 1, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      if (f % t == 0) continue;  // the first frame of a video has no previous frame
      const float* now = halved.data() + f * h * w;
      const float* before = now - h * w;
      const auto pixel = [&](const float* frame, int64_t r, int64_t col) {
        return r < 0 || r >= h || col < 0 || col >= w ? 0.0f : frame[r * w + col];
      };
      for (int64_t r = 0; r < h; ++r) {
        for (int64_t col = 0; col < w; ++col) {
          const float ink = now[r * w + col];
          if (ink <= 0.0f) continue;  // blank pixels say nothing about motion
          // The displacement whose 3x3 patch in the previous frame matches best; ties go to
          // the smaller move, so a blank neighbourhood counts as still.
          int64_t best_bin = 0;
          float best_cost = std::numeric_limits<float>::infinity();
          int64_t best_move = 0;
          for (int64_t dy = -radius; dy <= radius; ++dy) {
            for (int64_t dx = -radius; dx <= radius; ++dx) {
              float cost = 0.0f;
              for (int64_t py = -1; py <= 1; ++py) {
                for (int64_t px = -1; px <= 1; ++px) {
                  const float diff =
                      pixel(now, r + py, col + px) - pixel(before, r + py - dy, col + px - dx);
                  cost += diff * diff;
                }
              }
              const int64_t move = dy * dy + dx * dx;
              if (cost < best_cost || (cost == best_cost && move < best_move)) {
                best_cost = cost;
                best_move = move;
                best_bin = (dy + radius) * side + (dx + radius);
              }
            }
          }
          const float top = static_cast<float>(r) * scale, left = static_cast<float>(col) * scale_x;
          for (int64_t k = 0; k < n; ++k) {
            const Cell& cell = cells[static_cast<size_t>(k)];
            const float area = overlap(top, top + scale, cell.top, cell.bottom) *
                               overlap(left, left + scale_x, cell.left, cell.right);
            if (area <= 0.0f) continue;
            const float cell_area = (cell.bottom - cell.top) * (cell.right - cell.left);
            hist[(f * n + k) * bins + best_bin] += ink * area / cell_area;
          }
        }
      }
    }
  });
  return out;
}

Tensor detector_node_inputs(const Tensor& map, const Tensor& heat, const Tensor& motion) {
  if (map.dim() != 4) {
    throw ShapeError("detector_node_inputs: map " + shape_str(map.shape()) +
                     ", expected [M, F, h, w]");
  }
  const int64_t m = map.size(0), f = map.size(1), hw = map.size(2) * map.size(3);
  if (heat.dim() != 3 || heat.size(0) != m || heat.size(2) != hw) {
    throw ShapeError("detector_node_inputs: heat " + shape_str(heat.shape()) + ", expected [" +
                     std::to_string(m) + ", n, " + std::to_string(hw) + "] for map " +
                     shape_str(map.shape()));
  }
  if (motion.defined() && (motion.dim() != 3 || motion.size(0) != m || motion.size(1) != hw)) {
    throw ShapeError("detector_node_inputs: motion " + shape_str(motion.shape()) + ", expected [" +
                     std::to_string(m) + ", " + std::to_string(hw) + ", bins] for map " +
                     shape_str(map.shape()));
  }
  const int64_t n = heat.size(1);
  Tensor features = permute(map.reshape({m, f, hw}), {0, 2, 1});  // [M, hw, F]
  Tensor where = softmax(heat);                                   // [M, n, hw]
  std::vector<float> eye(static_cast<size_t>(n * n), 0.0f);
  for (int64_t k = 0; k < n; ++k)
    eye[static_cast<size_t>(k * n + k)] = 1.0f;
  std::vector<int64_t> rows(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m * n; ++i)
    rows[static_cast<size_t>(i)] = i % n;
  Tensor identity =
      index_select(Tensor::from_vector({n, n}, eye), IndexTensor(rows)).reshape({m, n, n});
  std::vector<Tensor> parts = {matmul(where, features),          // [M, n, F]
                               sum(mul(where, heat), 2, true),   // [M, n, 1]
                               identity};                        // [M, n, n]
  if (motion.defined()) parts.push_back(matmul(where, motion));  // [M, n, bins]
  return concat(parts, 2);
}

Tensor node_motion_features(const Tensor& histograms, int64_t radius,
                            const Tensor& frame_histograms) {
  const int64_t side = 2 * radius + 1, bins = side * side;
  if (histograms.dim() != 3 || histograms.size(2) != bins) {
    throw ShapeError("node_motion_features: histograms " + shape_str(histograms.shape()) +
                     ", expected [M, nodes, " + std::to_string(bins) + "]");
  }
  const bool agreement = frame_histograms.defined();
  if (agreement && (frame_histograms.dim() != 3 || frame_histograms.size(0) != histograms.size(0) ||
                    frame_histograms.size(1) != 1 || frame_histograms.size(2) != bins)) {
    throw ShapeError("node_motion_features: frame histograms " +
                     shape_str(frame_histograms.shape()) + ", expected [" +
                     std::to_string(histograms.size(0)) + ", 1, " + std::to_string(bins) + "]");
  }
  const int64_t frames = histograms.size(0), nodes = histograms.size(1);
  const int64_t width = bins + 3 + (agreement ? kMotionAgreementFeatures : 0);
  Tensor out = Tensor::zeros({frames, nodes, width});
  const float* in = histograms.data();
  float* o = out.data();
  for (int64_t f = 0; f < frames; ++f) {
    // The frame's dominant move: its most voted bin, -1 when nothing moved.
    int64_t dominant = -1;
    if (agreement) {
      const float* whole = frame_histograms.data() + f * bins;
      float most = 0.0f;
      for (int64_t k = 0; k < bins; ++k) {
        if (whole[k] > most) {
          most = whole[k];
          dominant = k;
        }
      }
    }
    for (int64_t node = 0; node < nodes; ++node) {
      const float* h = in + (f * nodes + node) * bins;
      float* row = o + (f * nodes + node) * width;
      float mass = 0.0f, dy = 0.0f, dx = 0.0f;
      for (int64_t k = 0; k < bins; ++k) {
        row[k] = h[k];
        mass += h[k];
        dy += h[k] * static_cast<float>(k / side - radius);
        dx += h[k] * static_cast<float>(k % side - radius);
      }
      row[bins] = mass;
      if (mass > 0.0f) {
        row[bins + 1] = dy / (mass * static_cast<float>(radius));
        row[bins + 2] = dx / (mass * static_cast<float>(radius));
      }
      if (agreement && dominant >= 0 && mass > 0.0f) {
        row[bins + 3] = h[dominant] / mass;
        row[bins + 4] = h[dominant];
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- Rstg

Rstg::Rstg(const RstgConfig& config, Rng& rng) : config_(config) {
  if (config.init != "released" && config.init != "torch") {
    throw ValueError("RSTG: init '" + config.init + "' (released or torch)");
  }
  if (config.backbone_channels.empty())
    throw ValueError("RSTG: backbone needs at least one conv block");
  if (config.context_convs < 0)
    throw ValueError("RSTG: context_convs " + std::to_string(config.context_convs) + " < 0");
  const int64_t map = rstg_map_size(config);
  backbone_ = register_module("backbone", std::make_shared<Sequential>());
  int64_t channels = config.motion_input ? 2 * config.in_channels : config.in_channels;
  for (int64_t width : config.backbone_channels) {
    backbone_->add(std::make_shared<Conv2d>(channels, width, 3, 1, 0, true, rng));
    if (config.backbone_batch_norm) backbone_->add(std::make_shared<BatchNorm2d>(width));
    backbone_->add(std::make_shared<ReLU>());
    backbone_->add(std::make_shared<MaxPool2d>(2));
    channels = width;
  }
  for (int64_t i = 0; i < config.context_convs; ++i) {
    backbone_->add(std::make_shared<Conv2d>(channels, channels, 3, 1, 1, true, rng));
    if (config.backbone_batch_norm) backbone_->add(std::make_shared<BatchNorm2d>(channels));
    backbone_->add(std::make_shared<ReLU>());
  }
  const int64_t d = config.node_dim;
  const RstgVariant v = config.variant;
  if (config.motion_agreement && !config.node_motion)
    throw ValueError("RSTG: motion_agreement needs node_motion");
  if (config.motion_similarity && !config.node_motion)
    throw ValueError("RSTG: motion_similarity needs node_motion");
  const int64_t motion_bins =
      config.node_motion
          ? kNodeMotionFeatures + (config.motion_agreement ? kMotionAgreementFeatures : 0)
          : 0;
  if (v == RstgVariant::kMeanLstm || v == RstgVariant::kConvLstm) {
    const int64_t in =
        (v == RstgVariant::kMeanLstm ? channels : channels * map * map) + motion_bins;
    final_cell_ = register_module("final_time", make_cell(config.cell, in, d, rng));
    classifier_ =
        register_module("classifier", std::make_shared<Linear>(d, config.classes, true, rng));
    if (config.init == "released") released_init(*this, d, rng);
    return;
  }
  const int64_t detectors = config.detector_nodes;
  if (detectors < 0) throw ValueError("RSTG: detector_nodes " + std::to_string(detectors) + " < 0");
  int64_t node_inputs = (config.position_moments ? 3 * channels : channels) + motion_bins;
  if (detectors > 0) {
    // The settings that only mean something for region nodes are refused, not ignored.
    if (v == RstgVariant::kPositional)
      throw ValueError("RSTG: the positional variant needs region nodes (detector_nodes 0)");
    if (config.position_moments)
      throw ValueError("RSTG: position_moments needs region nodes (detector_nodes 0)");
    if (config.attention_over_all_nodes)
      throw ValueError("RSTG: attention_over_all_nodes needs region nodes (detector_nodes 0)");
    cells_ = grid_cells(map, map, map, map);  // one cell per map position, row-major
    frame_graph_ = complete_graph(detectors);
    detector_ =
        register_module("detector", std::make_shared<Linear>(channels, detectors, true, rng));
    node_inputs = channels + 1 + detectors + motion_bins;
  } else {
    for (int64_t g : config.grids) {
      const std::vector<Cell> grid = grid_cells(g, g, map, map);
      cells_.insert(cells_.end(), grid.begin(), grid.end());
    }
    frame_graph_ = frame_graph_for(cells_, config.fully_connected, config.attention_over_all_nodes);
  }
  node_norm_ = register_module("node_norm", std::make_shared<BatchNorm1d>(node_inputs));
  if (node_inputs != d)
    node_projection_ =
        register_module("node_projection", std::make_shared<Linear>(node_inputs, d, true, rng));
  const bool positional = v == RstgVariant::kPositional;
  if (positional) positions_ = gaussian_positions(cells_, map, config.positional_std);
  if (rstg_variant_has_space_stages(v)) {
    space_ = register_module(
        "space", std::make_shared<SpaceStage>(d, positional ? map * map : 0, config.stage_norm,
                                              config.stage_residual, config.dot_attention, rng,
                                              config.motion_similarity ? 1 : 0));
  }
  if (v == RstgVariant::kTimeOnly || v == RstgVariant::kAllTempStages ||
      v == RstgVariant::kPositional) {
    time_cell_ = register_module("time", make_cell(config.cell, d, d, rng));
  }
  if (v != RstgVariant::kSpaceOnly && v != RstgVariant::kHomogeneous) {
    final_cell_ = register_module("final_time", make_cell(config.cell, d, d, rng));
  }
  classifier_ =
      register_module("classifier", std::make_shared<Linear>(d, config.classes, true, rng));
  if (config.init == "released") released_init(*this, d, rng);
}

Tensor Rstg::backbone_forward(const Tensor& frames) {
  return backbone_->forward(frames);
}

int64_t Rstg::nodes_per_frame() const {
  return config_.detector_nodes > 0 ? config_.detector_nodes : static_cast<int64_t>(cells_.size());
}

// map [M, F, h, w], motion [M, cells, bins] or undefined -> [M, nodes, D]
Tensor Rstg::nodes_from_map(const Tensor& map, const Tensor& motion, Tensor* motion_bins) {
  Tensor nodes;
  if (config_.detector_nodes > 0) {
    const int64_t m = map.size(0), f = map.size(1), hw = map.size(2) * map.size(3);
    Tensor features = permute(map.reshape({m, f, hw}), {0, 2, 1});  // [M, hw, F]
    nodes = detector_node_inputs(map, permute(detector_->forward(features), {0, 2, 1}), motion);
  } else {
    nodes = region_node_inputs(map, cells_, config_.position_moments);
    if (motion.defined()) nodes = concat({nodes, motion}, 2);
  }
  const int64_t m = nodes.size(0), n = nodes.size(1), f = nodes.size(2);
  if (motion_bins && motion.defined()) {
    // The motion columns come last: bins, mass, mean move (, agreement).
    const int64_t first = f - motion.size(2);
    *motion_bins = slice(nodes, 2, first, first + kNodeMotionBins);
  }
  Tensor flat = node_norm_->forward(nodes.reshape({m * n, f}));
  if (node_projection_) flat = node_projection_->forward(flat);
  return flat.reshape({m, n, -1});
}

Tensor Rstg::space(const Tensor& x, const Graph& graph, const Tensor& positions,
                   const Tensor& edge_features, int64_t frame, int64_t stage, int64_t frames,
                   int64_t batch) {
  Tensor attention;
  Tensor out =
      space_->forward(x, positions, graph, record_attention ? &attention : nullptr, edge_features);
  if (record_attention) {
    // Batched graphs replicate the frame graph per (frame, video), frame-major, with any time
    // edges after them: video 0 of frame s owns the E0 edges from s * batch * E0.
    const int64_t e0 = frame_graph_.num_edges();
    for (int64_t s = 0; s < frames; ++s) {
      const size_t f = static_cast<size_t>(frame + s);
      if (last_attention.size() <= f) last_attention.resize(f + 1);
      auto& per_stage = last_attention[f];
      if (static_cast<int64_t>(per_stage.size()) <= stage)
        per_stage.resize(static_cast<size_t>(stage) + 1);
      const float* a = attention.data() + s * batch * e0;
      per_stage[static_cast<size_t>(stage)].assign(a, a + e0);
    }
  }
  return out;
}

Tensor Rstg::forward(const Tensor& video) {
  if (video.dim() != 5 || video.size(2) != config_.in_channels ||
      video.size(3) != config_.image_size || video.size(4) != config_.image_size) {
    throw ShapeError("RSTG: video " + shape_str(video.shape()) + ", expected [B,T," +
                     std::to_string(config_.in_channels) + "," +
                     std::to_string(config_.image_size) + "," + std::to_string(config_.image_size) +
                     "]");
  }
  const int64_t b = video.size(0), t = video.size(1);
  if (record_attention) last_attention.clear();
  Tensor frames = video;  // [B, T, C, H, W]
  if (config_.motion_input) {
    // previous [B, T, C, H, W]: frame 0 repeated, then frames 0 .. T-2.
    Tensor previous = t > 1 ? concat({slice(video, 1, 0, 1), slice(video, 1, 0, t - 1)}, 1) : video;
    frames = concat({video, sub(video, previous)}, 2);  // [B, T, 2C, H, W]
  }
  Tensor map = backbone_forward(
      frames.reshape({b * t, frames.size(2), config_.image_size, config_.image_size}));
  const RstgVariant v = config_.variant;
  const bool baseline = v == RstgVariant::kMeanLstm || v == RstgVariant::kConvLstm;
  // [B*T, nodes, bins]; the baselines have one node, the whole frame.
  Tensor motion;
  if (config_.node_motion) {
    const int64_t h = map.size(2);
    std::vector<Cell> cells = baseline ? grid_cells(1, 1, h, h) : cells_;
    const int64_t n = static_cast<int64_t>(cells.size());
    // With motion_agreement the whole frame rides along as one more cell (one block-matching
    // pass for both), then is split off.
    if (config_.motion_agreement)
      cells.push_back(Cell{0.0f, 0.0f, static_cast<float>(h), static_cast<float>(h)});
    const Tensor histograms = node_motion_histograms(video, cells, h, kNodeMotionRadius);
    motion = config_.motion_agreement
                 ? node_motion_features(slice(histograms, 1, 0, n), kNodeMotionRadius,
                                        slice(histograms, 1, n, n + 1))
                 : node_motion_features(histograms, kNodeMotionRadius);
  }

  // Baselines: one feature vector per frame, a recurrent cell over frames.
  if (baseline) {
    const int64_t f = map.size(1), hw = map.size(2) * map.size(3);
    Tensor per_frame = v == RstgVariant::kMeanLstm ? mean(map.reshape({b * t, f, hw}), 2)
                                                   : map.reshape({b * t, f * hw});
    if (motion.defined()) per_frame = concat({per_frame, motion.reshape({b * t, -1})}, 1);
    Tensor sequence = permute(per_frame.reshape({b, t, -1}), {1, 0, 2});  // [T, B, F']
    return classifier_->forward(mean(final_cell_->sequence(sequence, Tensor()).output, 0));
  }

  // Stage-major order. The per-frame recurrence of the paper's algorithm (for each frame, for
  // each stage k: time stage k then space stage k) computes the same numbers as running each
  // time stage over the whole sequence before the next space stage, because stage k at frame
  // t reads only stage k-1 at frame t and stage k at frame t-1. Stage-major (as the released
  // code runs it) turns 10 x K small ops into K sequence ops (one input-projection GEMM for all
  // frames) and space stages over every frame of the batch at once.
  const int64_t n = nodes_per_frame(), d = config_.node_dim;
  // Nodes laid out [T, B, n]: frame s of the batch is the contiguous block s * B * n.
  Tensor motion_bins;  // only motion_similarity reads the histograms again
  Tensor x = permute(nodes_from_map(map, motion, config_.motion_similarity ? &motion_bins : nullptr)
                         .reshape({b, t, n, d}),
                     {1, 0, 2, 3})
                 .reshape({t * b * n, d});
  if (cached_batch_ != b || cached_frames_ != t) {
    frames_graph_ = replicate(frame_graph_, t * b);
    spacetime_graph_ =
        v == RstgVariant::kHomogeneous ? spacetime_graph(frame_graph_, t, b) : Graph();
    cached_batch_ = b;
    cached_frames_ = t;
  }
  Tensor positions;
  if (positions_.defined()) {
    std::vector<int64_t> idx(static_cast<size_t>(t * b * n));
    for (int64_t i = 0; i < t * b * n; ++i)
      idx[static_cast<size_t>(i)] = i % n;
    positions = index_select(positions_, IndexTensor(idx));
  }
  // motion_similarity: each edge's cosine of its two ends' motion histograms, [E, 1].
  Tensor unit_motion;  // [T*B*n, bins], rows of length 1 (0 for a still node)
  if (config_.motion_similarity) {
    Tensor bins = permute(motion_bins.reshape({b, t, n, kNodeMotionBins}), {1, 0, 2, 3})
                      .reshape({t * b * n, kNodeMotionBins});
    unit_motion = div(bins, sqrt(add_scalar(sum(mul(bins, bins), 1, true), 1e-12f)));
  }
  const auto cosines = [&](const Graph& g) {
    if (!unit_motion.defined()) return Tensor();
    return sum(mul(gather(unit_motion, g, EdgeEnd::kDestination),
                   gather(unit_motion, g, EdgeEnd::kSource)),
               1, true);
  };
  const Tensor frame_cosines = cosines(frames_graph_);
  const Tensor spacetime_cosines =
      v == RstgVariant::kHomogeneous ? cosines(spacetime_graph_) : Tensor();
  // A time stage over the whole sequence: [T*B*n, D] -> [T*B*n, H], each stage from zeros.
  const auto time_stage = [&](RecurrentCell& cell, const Tensor& in) {
    return cell.sequence(in.reshape({t, b * n, d}), Tensor()).output.reshape({t * b * n, d});
  };
  // An internal time stage, with its input added back when time_residual is set.
  const auto inner_time_stage = [&](const Tensor& in) {
    Tensor out = time_stage(*time_cell_, in);
    return config_.time_residual ? add(out, in) : out;
  };
  for (int64_t k = 0; k < config_.stages; ++k) {
    switch (v) {
      case RstgVariant::kSpaceOnly:
      case RstgVariant::kOneTempStage:
        x = space(x, frames_graph_, Tensor(), frame_cosines, 0, k, t, b);
        break;
      case RstgVariant::kHomogeneous:
        x = space(x, spacetime_graph_, Tensor(), spacetime_cosines, 0, k, t, b);
        break;
      case RstgVariant::kTimeOnly:
        x = inner_time_stage(x);
        break;
      default:  // all-temp-stages, positional
        x = space(inner_time_stage(x), frames_graph_, positions, frame_cosines, 0, k, t, b);
        break;
    }
  }
  if (final_cell_) x = time_stage(*final_cell_, x);
  // RSTG-to-vec: mean over time, sum over nodes, linear classifier.
  Tensor over_time = mean(x.reshape({t, b, n, d}), 0);  // [B, n, D]
  return classifier_->forward(sum(over_time, 1));
}

}  // namespace stgnn
