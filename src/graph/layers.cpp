#include "graph/layers.h"

#include <cmath>
#include <string>

namespace stgnn {

namespace {

void require_features(const Tensor& x, int64_t in, const Graph& graph, const char* layer) {
  if (x.dim() != 2 || x.size(1) != in || x.size(0) != graph.num_nodes()) {
    throw ShapeError(std::string(layer) + ": x " + shape_str(x.shape()) + " must be [" +
                     std::to_string(graph.num_nodes()) + ", " + std::to_string(in) +
                     "] (graph nodes, in_channels)");
  }
}

}  // namespace

Tensor glorot_uniform(const Shape& shape, Rng& rng) {
  if (shape.size() < 2) throw ShapeError("glorot_uniform: needs 2+ dims, got " + shape_str(shape));
  const int64_t fan = shape[shape.size() - 2] + shape[shape.size() - 1];
  const float bound = fan > 0 ? std::sqrt(6.0f / static_cast<float>(fan)) : 0.0f;
  return rand_uniform(shape, rng, -bound, bound);
}

// ---------------------------------------------------------------- GCNConv

GCNConv::GCNConv(int64_t in, int64_t out, bool with_bias, Rng& rng) {
  lin = register_module("lin", std::make_shared<Linear>(in, out, false, rng));
  lin->weight.copy_from(glorot_uniform({out, in}, rng));
  if (with_bias) bias = register_parameter("bias", Tensor::zeros({out}));
}

// x [N, in] -> [N, out].
Tensor GCNConv::forward(const Tensor& x, const Graph& graph) {
  const int64_t in = lin->weight.size(1), out = lin->weight.size(0);
  require_features(x, in, graph, "GCNConv");
  const Graph g = graph.with_self_loops();
  // The symmetric normalisation is a constant per-edge weight d_src^-1/2 d_dst^-1/2 (every
  // degree >= 1 thanks to the self loops).
  std::vector<float> inv_sqrt(static_cast<size_t>(g.num_nodes()));
  for (int64_t i = 0; i < g.num_nodes(); ++i)
    inv_sqrt[static_cast<size_t>(i)] = 1.0f / std::sqrt(static_cast<float>(g.in_degree(i)));
  Tensor norm = Tensor::empty({g.num_edges()});
  for (int64_t e = 0; e < g.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    norm.data()[e] =
        inv_sqrt[static_cast<size_t>(g.src()[k])] * inv_sqrt[static_cast<size_t>(g.dst()[k])];
  }
  Tensor h = out < in ? aggregate(linear(x, lin->weight), g, Reduce::kSum, norm)
                      : linear(aggregate(x, g, Reduce::kSum, norm), lin->weight);
  return bias.defined() ? add(h, bias) : h;
}

// ---------------------------------------------------------------- SAGEConv

SAGEConv::SAGEConv(int64_t in, int64_t out, Rng& rng) {
  lin_l = register_module("lin_l", std::make_shared<Linear>(in, out, true, rng));
  lin_r = register_module("lin_r", std::make_shared<Linear>(in, out, false, rng));
}

// x [N, in] -> [N, out].
Tensor SAGEConv::forward(const Tensor& x, const Graph& graph) {
  const int64_t in = lin_l->weight.size(1), out = lin_l->weight.size(0);
  require_features(x, in, graph, "SAGEConv");
  // mean_j(x_j) W^T + b = mean_j(x_j W^T) + b, also on rows without in-edges (both give b).
  Tensor neighbours =
      out < in ? add(aggregate(linear(x, lin_l->weight), graph, Reduce::kMean), lin_l->bias)
               : lin_l->forward(aggregate(x, graph, Reduce::kMean));
  return add(neighbours, lin_r->forward(x));
}

// ---------------------------------------------------------------- GATConv

GATConv::GATConv(int64_t in, int64_t out, int64_t heads_, bool concat_, float negative_slope_,
                 float dropout_, bool add_self_loops_, bool with_bias, Rng& rng)
    : heads(heads_),
      out_channels(out),
      concat(concat_),
      add_self_loops(add_self_loops_),
      negative_slope(negative_slope_),
      dropout(dropout_),
      rng_(&rng) {
  if (heads < 1) throw ValueError("GATConv: heads must be >= 1, got " + std::to_string(heads));
  if (!(dropout >= 0.0f && dropout < 1.0f)) {
    throw ValueError("GATConv: dropout " + std::to_string(dropout) + " outside [0, 1)");
  }
  lin = register_module("lin", std::make_shared<Linear>(in, heads * out, false, rng));
  lin->weight.copy_from(glorot_uniform({heads * out, in}, rng));
  att_src = register_parameter("att_src", glorot_uniform({1, heads, out}, rng));
  att_dst = register_parameter("att_dst", glorot_uniform({1, heads, out}, rng));
  if (with_bias) bias = register_parameter("bias", Tensor::zeros({concat ? heads * out : out}));
}

// x [N, in] -> [N, H*C] (concat) or [N, C].
Tensor GATConv::forward(const Tensor& x, const Graph& graph) {
  require_features(x, lin->weight.size(1), graph, "GATConv");
  const Graph g = add_self_loops ? graph.with_self_loops() : graph;
  const int64_t n = x.size(0);
  Tensor h = linear(x, lin->weight);                                       // [N, H*C]
  Tensor h3 = h.reshape({n, heads, out_channels});                         // [N, H, C]
  Tensor el = sum(mul(h3, att_src), -1);                                   // [N, H]
  Tensor er = sum(mul(h3, att_dst), -1);                                   // [N, H]
  Tensor scores = leaky_relu(gat_edge_scores(el, er, g), negative_slope);  // [E, H]
  Tensor alpha = edge_softmax(scores, g);
  if (dropout > 0.0f && is_training())
    alpha = stgnn::dropout(alpha, dropout, true, rng_->next_u64());
  Tensor out = aggregate(h, g, Reduce::kSum, alpha);  // [N, H*C], head h scaled by alpha[:, h]
  if (!concat) out = mean(out.reshape({n, heads, out_channels}), 1);
  return bias.defined() ? add(out, bias) : out;
}

// ---------------------------------------------------------------- EdgeConv

EdgeConv::EdgeConv(const std::vector<int64_t>& sizes, Rng& rng) {
  if (sizes.size() < 2 || sizes[0] < 2 || sizes[0] % 2 != 0) {
    throw ValueError("EdgeConv: sizes need an even input width 2*C and at least one layer");
  }
  in_channels = sizes[0] / 2;
  nn = register_module("nn", std::make_shared<Sequential>());
  for (size_t k = 0; k + 1 < sizes.size(); ++k) {
    if (k > 0) nn->add(std::make_shared<ReLU>());
    linears.push_back(nn->add(std::make_shared<Linear>(sizes[k], sizes[k + 1], true, rng)));
  }
}

// x [N, C] -> [N, sizes.back()].
Tensor EdgeConv::forward(const Tensor& x, const Graph& graph) {
  require_features(x, in_channels, graph, "EdgeConv");
  const Tensor& w = linears[0]->weight;  // [s1, 2C] = [W_a | W_b]
  Tensor w_a = slice(w, 1, 0, in_channels);
  Tensor w_b = slice(w, 1, in_channels, 2 * in_channels);
  Tensor at_destination = linear(x, sub(w_a, w_b), linears[0]->bias);  // (W_a - W_b) x_i + b
  Tensor at_source = linear(x, w_b);                                   // W_b x_j
  Tensor h = gather_add(at_source, at_destination, graph);             // [E, s1]
  for (size_t k = 1; k < linears.size(); ++k)
    h = linears[k]->forward(relu(h));
  return scatter(h, graph, Reduce::kMax);
}

// ---------------------------------------------------------------- RGCNConv

RGCNConv::RGCNConv(int64_t in, int64_t out, int64_t num_relations_, bool with_bias, Rng& rng)
    : num_relations(num_relations_) {
  if (num_relations < 1) {
    throw ValueError("RGCNConv: num_relations must be >= 1, got " + std::to_string(num_relations));
  }
  weight = register_parameter("weight", glorot_uniform({num_relations, in, out}, rng));
  root = register_parameter("root", glorot_uniform({in, out}, rng));
  if (with_bias) bias = register_parameter("bias", Tensor::zeros({out}));
}

// x [N, in] -> [N, out].
Tensor RGCNConv::forward(const Tensor& x, const Graph& graph) {
  const int64_t in = weight.size(1), out = weight.size(2);
  require_features(x, in, graph, "RGCNConv");
  const int64_t r = graph.num_relations();
  if (r > num_relations) {
    throw ValueError("RGCNConv: graph has " + std::to_string(r) + " relations, layer has " +
                     std::to_string(num_relations));
  }
  const int64_t n = x.size(0);
  Tensor w = r == num_relations ? weight : slice(weight, 0, 0, r);  // [r, in, out]
  Tensor messages;
  if (in <= out) {
    Tensor means = aggregate_by_relation(x, graph, Reduce::kMean).reshape({n, r * in});
    messages = matmul(means, w.reshape({r * in, out}));
  } else {
    Tensor w_cat = permute(w, {1, 0, 2}).reshape({in, r * out});  // [in, r*out]
    Tensor per_relation = matmul(x, w_cat).reshape({n, r, out});
    messages = aggregate_relation_slots(per_relation, graph, Reduce::kMean);
  }
  Tensor h = add(messages, matmul(x, root));
  return bias.defined() ? add(h, bias) : h;
}

}  // namespace stgnn
