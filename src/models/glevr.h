// GLEVR (graph learning for egocentric video keystep recognition; arXiv 2506.01102): the
// SPELL-style network over take graphs, its heterogeneous variant with per-node-type input
// projections (captions), and the per-segment MLP baseline. See shared/design/glevr.md.
//
//   x_t [N_t, dim_t] per node type -> Linear(dim_t -> C1) (the released layer011; optional for
//   a single node type, whose C1 is then its width) -> BatchNorm(C1) -> ReLU        = h [N, C1]
//   three streams over the same nodes, with their own weights:
//     forward    edges with attr <= 0 (earlier -> later, self loops, cross-view, text)
//     backward   edges with attr >= 0 (later -> earlier, self loops)
//     undirected every edge
//   each: EdgeConv(MLP 2*C1 -> C1 -> ReLU -> C2, max) -> BatchNorm(C2) -> ReLU -> Dropout(p)
//         -> RGCNConv(C2 -> classes, R relations, mean per relation, root weight, bias)
//   logits [N, classes] = the sum of the three streams.
// Two message-passing layers per stream: with tau = 1 a node sees its segments +-2.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/rng.h"
#include "graph/graph.h"
#include "graph/layers.h"
#include "nn/module.h"

namespace stgnn {

struct GlevrConfig {
  // Input width of each node type: {video} for GLEVR, {video, text} for GLEVR-Hetero.
  std::vector<int64_t> input_dims = {1536};
  // Linear(input_dims[t] -> C1) per node type first, as every released SPELL / GLEVR model
  // (layer011). Several node types need it; without it C1 is input_dims[0].
  bool input_projection = true;
  int64_t channels = 0;   // C1 with input projections; 0 = input_dims[0] (1536 as released)
  int64_t hidden = 1024;  // C2 (1024 for vision, 512 with text as released)
  int64_t classes = 278;
  int64_t relations = 2;  // cross-view, everything else
  float dropout = 0.5f;
};

// One of the three streams: EdgeConv -> BatchNorm -> ReLU -> Dropout -> RGCNConv.
class GlevrStream : public Module {
 public:
  GlevrStream(int64_t channels, int64_t hidden, int64_t classes, int64_t relations, Rng& rng);
  // h [N, C1] over `graph` -> [N, classes]; dropout_seed drives the mask (training only).
  Tensor forward(const Tensor& h, const Graph& graph, float dropout_p, uint64_t dropout_seed);

  std::shared_ptr<EdgeConv> edge;
  std::shared_ptr<BatchNorm> norm;
  std::shared_ptr<RGCNConv> rgcn;
};

class Glevr : public Module {
 public:
  explicit Glevr(const GlevrConfig& config, Rng& rng = global_rng());

  // One node type: x [N, input_dims[0]], graph over the N nodes with edge attributes ->
  // logits [N, classes].
  Tensor forward(const Tensor& x, const Graph& graph);
  // Several node types: features[t] [N_t, input_dims[t]] for the first features.size() types
  // (an entry may have no rows), node_rows [N]: node i is row node_rows[i] of the row-wise
  // concatenation of the projected types (type 0's rows first) -> logits [N, classes]. Throws
  // ShapeError when the widths or the row indices do not fit.
  Tensor forward_typed(const std::vector<Tensor>& features, const IndexTensor& node_rows,
                       const Graph& graph);

  // Dropout masks come from this generator (one draw per stream per forward), so that a
  // training loop can make them a pure function of (seed, epoch, step) by reseeding per step.
  void reseed_dropout(uint64_t seed) { dropout_rng_.reseed(seed); }
  const GlevrConfig& config() const { return config_; }
  int64_t channels() const { return channels_; }

  std::vector<std::shared_ptr<Linear>> input_projections;  // per node type, when enabled
  std::shared_ptr<BatchNorm> input_norm;
  std::shared_ptr<GlevrStream> forward_stream, backward_stream, undirected_stream;

 private:
  Tensor body(const Tensor& x, const Graph& graph);

  GlevrConfig config_;
  int64_t channels_;
  Rng dropout_rng_;
};

// The forward (attr <= 0) and backward (attr >= 0) edge subgraphs SPELL's streams run on.
// Throws ValueError when the graph has no edge attributes.
Graph forward_edges(const Graph& graph);
Graph backward_edges(const Graph& graph);

// The per-segment baseline as released: Linear(in -> hidden) -> ReLU -> Linear(hidden ->
// classes), hidden 1056. Parameters mlp.0.weight, mlp.0.bias, mlp.1.weight, mlp.1.bias.
class SegmentMlp : public Module {
 public:
  SegmentMlp(int64_t in, int64_t classes, int64_t hidden = 1056, Rng& rng = global_rng());
  // x [N, in] -> logits [N, classes].
  Tensor forward(const Tensor& x);
  std::shared_ptr<MLP> mlp;
};

}  // namespace stgnn
