// Graph convolution layers built on the message-passing ops. Each follows the PyTorch Geometric
// definition of the same name (flow source -> target: node i aggregates over its in-edges j -> i),
// with PyG's parameter names, shapes and initialisation, so that weights map 1:1.
//
// Where a layer is linear before its aggregation, it runs the sparse aggregation on the narrower
// side of its weight (transform first when out < in, aggregate first otherwise); both orders are
// the same function, only the cost differs.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/rng.h"
#include "graph/graph.h"
#include "graph/message_passing.h"
#include "nn/module.h"

namespace stgnn {

// A module whose forward takes node features x [N, in] and a graph over those N nodes.
class GraphLayer : public Module {
 public:
  virtual Tensor forward(const Tensor& x, const Graph& graph) = 0;
  Tensor operator()(const Tensor& x, const Graph& graph) { return forward(x, graph); }
};

// Glorot (Xavier) uniform over the last two dims, as PyG's glorot(): U(-a, a),
// a = sqrt(6 / (shape[-2] + shape[-1])).
Tensor glorot_uniform(const Shape& shape, Rng& rng);

// out = D^-1/2 (A + I) D^-1/2 x W^T + b, D the in-degree of A + I, self loops added as PyG's
// add_remaining_self_loops (existing loops replaced by one per node).
// Parameters: lin.weight [out, in] (glorot), bias [out] (zeros).
class GCNConv : public GraphLayer {
 public:
  GCNConv(int64_t in, int64_t out, bool bias = true, Rng& rng = global_rng());
  Tensor forward(const Tensor& x, const Graph& graph) override;
  std::shared_ptr<Linear> lin;
  Tensor bias;
};

// out = lin_l(mean over in-edges j -> i of x_j) + lin_r(x_i) (PyG SAGEConv, mean aggregation,
// root weight, no normalisation). Parameters: lin_l.weight [out, in], lin_l.bias [out],
// lin_r.weight [out, in], initialised as torch.nn.Linear.
class SAGEConv : public GraphLayer {
 public:
  SAGEConv(int64_t in, int64_t out, Rng& rng = global_rng());
  Tensor forward(const Tensor& x, const Graph& graph) override;
  std::shared_ptr<Linear> lin_l, lin_r;
};

// PyG GATConv (GAT v1): h = x W^T viewed [N, H, C]; alpha_ij = softmax over i's in-edges of
// LeakyReLU(<h_j, att_src> + <h_i, att_dst>, negative_slope) per head; out_i = sum_j alpha_ij h_j,
// heads concatenated ([N, H*C]) or averaged ([N, C]), plus bias. Self loops replaced by one per
// node first (add_self_loops). Attention dropout p is applied in training.
// Parameters: lin.weight [H*C, in], att_src [1, H, C], att_dst [1, H, C] (glorot),
// bias [H*C] (concat) or [C] (zeros).
class GATConv : public GraphLayer {
 public:
  GATConv(int64_t in, int64_t out, int64_t heads = 1, bool concat = true,
          float negative_slope = 0.2f, float dropout = 0.0f, bool add_self_loops = true,
          bool bias = true, Rng& rng = global_rng());
  Tensor forward(const Tensor& x, const Graph& graph) override;
  std::shared_ptr<Linear> lin;
  Tensor att_src, att_dst, bias;
  int64_t heads, out_channels;
  bool concat, add_self_loops;
  float negative_slope, dropout;

 private:
  Rng* rng_;
};

// PyG EdgeConv with max aggregation: out_i = max over in-edges j -> i of MLP([x_i ; x_j - x_i]).
// The MLP is nn = Sequential(Linear(s0, s1), ReLU, Linear(s1, s2), ...) for sizes {s0 = 2*C, s1,
// ...} (GLEVR: {2*C1, C1, C2}), parameters nn.0.weight, nn.0.bias, nn.2.weight, ... as in torch.
// The first layer runs per node: W [x_i ; x_j - x_i] = (W_a - W_b) x_i + W_b x_j, two GEMMs on
// [N, C] and one per-edge add; only the layers after it run per edge. Nodes without in-edges get 0.
class EdgeConv : public GraphLayer {
 public:
  explicit EdgeConv(const std::vector<int64_t>& sizes, Rng& rng = global_rng());
  Tensor forward(const Tensor& x, const Graph& graph) override;
  std::shared_ptr<Sequential> nn;
  std::vector<std::shared_ptr<Linear>> linears;  // nn's Linear layers in order
  int64_t in_channels;
};

// PyG RGCNConv (no bases / blocks, mean aggregation):
//   out_i = x_i root + bias + sum_r mean over in-edges j -> i of relation r of x_j W_r.
// Parameters: weight [R, in, out], root [in, out] (glorot), bias [out] (zeros). One GEMM for all
// relations: aggregate first ([N, R*in] x [R*in, out]) when in <= out, else transform first
// ([N, in] x [in, R*out]) and aggregate the [N, out] slots. The graph's relations must be fewer
// than or equal to the layer's.
class RGCNConv : public GraphLayer {
 public:
  RGCNConv(int64_t in, int64_t out, int64_t num_relations, bool bias = true,
           Rng& rng = global_rng());
  Tensor forward(const Tensor& x, const Graph& graph) override;
  Tensor weight, root, bias;
  int64_t num_relations;
};

}  // namespace stgnn
