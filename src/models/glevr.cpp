#include "models/glevr.h"

#include <string>

#include "autograd/error.h"
#include "autograd/ops.h"

namespace stgnn {

namespace {

Graph edges_with_attr(const Graph& graph, bool forward) {
  if (!graph.has_edge_attr()) {
    throw ValueError(std::string(forward ? "forward_edges" : "backward_edges") +
                     ": the graph has no edge attributes (temporal direction)");
  }
  const std::vector<float>& attr = graph.edge_attr();
  std::vector<bool> keep(attr.size());
  for (size_t e = 0; e < attr.size(); ++e)
    keep[e] = forward ? attr[e] <= 0.0f : attr[e] >= 0.0f;
  return graph.edge_subgraph(keep);
}

}  // namespace

Graph forward_edges(const Graph& graph) {
  return edges_with_attr(graph, true);
}

Graph backward_edges(const Graph& graph) {
  return edges_with_attr(graph, false);
}

// ---------------------------------------------------------------- GlevrStream

GlevrStream::GlevrStream(int64_t channels, int64_t hidden, int64_t classes, int64_t relations,
                         Rng& rng) {
  edge = register_module("edge", std::make_shared<EdgeConv>(
                                     std::vector<int64_t>{2 * channels, channels, hidden}, rng));
  norm = register_module("norm", std::make_shared<BatchNorm>(hidden));
  rgcn = register_module("rgcn", std::make_shared<RGCNConv>(hidden, classes, relations, true, rng));
}

// h [N, C1] -> [N, classes].
Tensor GlevrStream::forward(const Tensor& h, const Graph& graph, float dropout_p,
                            uint64_t dropout_seed) {
  Tensor y = relu(norm->forward(edge->forward(h, graph)));  // [N, C2]
  y = dropout(y, dropout_p, is_training(), dropout_seed);
  return rgcn->forward(y, graph);
}

// ---------------------------------------------------------------- Glevr

Glevr::Glevr(const GlevrConfig& config, Rng& rng) : config_(config) {
  if (config.input_dims.empty()) throw ValueError("Glevr: input_dims is empty");
  for (int64_t d : config.input_dims) {
    if (d <= 0) throw ValueError("Glevr: input widths must be positive");
  }
  if (!config.input_projection && config.input_dims.size() != 1) {
    throw ValueError("Glevr: several node types need input projections");
  }
  if (config.hidden <= 0 || config.classes <= 0 || config.relations <= 0 ||
      !(config.dropout >= 0.0f && config.dropout < 1.0f)) {
    throw ValueError("Glevr: hidden " + std::to_string(config.hidden) + ", classes " +
                     std::to_string(config.classes) + ", relations " +
                     std::to_string(config.relations) + ", dropout " +
                     std::to_string(config.dropout) + " out of range");
  }
  channels_ =
      config.input_projection && config.channels > 0 ? config.channels : config.input_dims[0];
  if (config.input_projection) {
    for (size_t t = 0; t < config.input_dims.size(); ++t) {
      input_projections.push_back(
          register_module("input." + std::to_string(t),
                          std::make_shared<Linear>(config.input_dims[t], channels_, true, rng)));
    }
  }
  input_norm = register_module("input_norm", std::make_shared<BatchNorm>(channels_));
  const auto stream = [&](const char* name) {
    return register_module(name,
                           std::make_shared<GlevrStream>(channels_, config.hidden, config.classes,
                                                         config.relations, rng));
  };
  forward_stream = stream("forward");
  backward_stream = stream("backward");
  undirected_stream = stream("undirected");
}

// x [N, C1] (already projected) -> logits [N, classes].
Tensor Glevr::body(const Tensor& x, const Graph& graph) {
  if (x.dim() != 2 || x.size(0) != graph.num_nodes()) {
    throw ShapeError("Glevr: node features " + shape_str(x.shape()) + " for a graph of " +
                     std::to_string(graph.num_nodes()) + " nodes");
  }
  const Tensor h = relu(input_norm->forward(x));
  const float p = config_.dropout;
  // Drawn in a fixed order whatever the graph, so masks depend only on the seed.
  const uint64_t seed_f = dropout_rng_.next_u64();
  const uint64_t seed_b = dropout_rng_.next_u64();
  const uint64_t seed_u = dropout_rng_.next_u64();
  Tensor out = forward_stream->forward(h, forward_edges(graph), p, seed_f);
  out = add(out, backward_stream->forward(h, backward_edges(graph), p, seed_b));
  return add(out, undirected_stream->forward(h, graph, p, seed_u));
}

Tensor Glevr::forward(const Tensor& x, const Graph& graph) {
  if (x.dim() != 2 || x.size(1) != config_.input_dims[0]) {
    throw ShapeError("Glevr: x " + shape_str(x.shape()) + " must be [N, " +
                     std::to_string(config_.input_dims[0]) + "]");
  }
  return body(config_.input_projection ? input_projections[0]->forward(x) : x, graph);
}

Tensor Glevr::forward_typed(const std::vector<Tensor>& features, const IndexTensor& node_rows,
                            const Graph& graph) {
  if (!config_.input_projection) {
    if (features.size() != 1 || features[0].dim() != 2 ||
        features[0].size(1) != config_.input_dims[0]) {
      throw ShapeError("Glevr: a model without input projections takes one [N, " +
                       std::to_string(config_.input_dims[0]) + "] feature matrix");
    }
    return body(index_select(features[0], node_rows), graph);
  }
  if (features.size() > input_projections.size()) {
    throw ShapeError("Glevr: " + std::to_string(features.size()) +
                     " node types given, the model has " +
                     std::to_string(input_projections.size()));
  }
  std::vector<Tensor> projected;
  int64_t rows = 0;
  for (size_t t = 0; t < features.size(); ++t) {
    const Tensor& f = features[t];
    if (!f.defined() || f.size(0) == 0) continue;
    if (f.dim() != 2 || f.size(1) != config_.input_dims[t]) {
      throw ShapeError("Glevr: node type " + std::to_string(t) + " features " +
                       shape_str(f.shape()) + " must be [N_t, " +
                       std::to_string(config_.input_dims[t]) + "]");
    }
    projected.push_back(input_projections[t]->forward(f));
    rows += f.size(0);
  }
  for (int64_t r : node_rows.values) {
    if (r < 0 || r >= rows) {
      throw ShapeError("Glevr: node row " + std::to_string(r) + " outside the " +
                       std::to_string(rows) + " feature rows");
    }
  }
  if (projected.empty()) return body(Tensor::zeros({0, channels_}), graph);
  const Tensor all = projected.size() == 1 ? projected[0] : concat(projected, 0);
  return body(index_select(all, node_rows), graph);
}

// ---------------------------------------------------------------- SegmentMlp

SegmentMlp::SegmentMlp(int64_t in, int64_t classes, int64_t hidden, Rng& rng) {
  mlp = register_module(
      "mlp", std::make_shared<MLP>(std::vector<int64_t>{in, hidden, classes}, false, rng));
}

// x [N, in] -> [N, classes].
Tensor SegmentMlp::forward(const Tensor& x) {
  return mlp->forward(x);
}

}  // namespace stgnn
