// Message passing as differentiable ops over a Graph.
//
// Conventions: x [N, F] holds node features, messages and scores [E, ...] hold one row per edge
// in edge-id order, e = 0 .. E-1. "In-edges of i" are the edges with dst(e) = i.
//
// Parallel strategy (the same for every kernel): a kernel that writes node rows runs over the
// in-CSR (outputs at destinations) or the out-CSR (gradients at sources), with the rows cut into
// one contiguous range per thread such that each range holds about the same number of edges plus
// rows (a binary search on the prefix sums row_ptr[r] + r), so power-law degree distributions
// stay balanced. A kernel that writes edge rows runs over edge ids. Either way each output row
// belongs to exactly one thread and is computed in a fixed order (a row's edges by ascending
// position), so there are no atomics and the results are bitwise identical across runs and across
// thread counts. Feature loops are contiguous float loops written for GCC's vectoriser.
//
// Every op has a raw forward and backward kernel (namespace kernels) writing into preallocated
// outputs, and a plain scalar reference with the same signature (namespace reference, in
// message_passing_reference.cpp) that the tests compare against.
#pragma once

#include <cstdint>

#include "autograd/tensor.h"
#include "graph/graph.h"

namespace stgnn {

enum class Reduce { kSum, kMean, kMax };
enum class EdgeEnd { kSource, kDestination };

// "sum", "mean", "max" (for messages).
const char* reduce_name(Reduce reduce);

// ---------------------------------------------------------------- autograd ops

// x [N, F] -> [E, F]: row e = x[src(e)] (kSource) or x[dst(e)] (kDestination).
// Backward: a row-parallel sum over the out-CSR (in-CSR for destinations).
Tensor gather(const Tensor& x, const Graph& graph, EdgeEnd end = EdgeEnd::kSource);

// at_source [N, F], at_destination [N, F] -> [E, F]: row e = at_source[src(e)] +
// at_destination[dst(e)], without materialising either gathered operand. The per-edge half of
// every split first layer: GAT scores el[src] + er[dst], EdgeConv's (W_a - W_b) x_i + W_b x_j,
// RSTG's send MLP on [x_j ; x_i].
Tensor gather_add(const Tensor& at_source, const Tensor& at_destination, const Graph& graph);
// el [N, H], er [N, H] -> [E, H] = el[src] + er[dst] (GAT's attention logits before LeakyReLU).
Tensor gat_edge_scores(const Tensor& el, const Tensor& er, const Graph& graph);

// Fused SpMM. x [N, F], edge_weight undefined, [E] or [E, H] with H dividing F -> [N, F]:
//   out[i] = reduce over in-edges e of i of  w_e * x[src(e)]
// where with [E, H] weights x is viewed as [N, H, F/H] and head h's slice is scaled by w[e, h].
// kMean divides by the in-degree (the number of in-edges, not the weight sum); kMax keeps the
// first maximal edge per (row, feature) for backward. Rows without in-edges are 0 and pass no
// gradient. Never materialises [E, F]. Backward: x by a row-parallel SpMM over the out-CSR, the
// weights by one (masked, for kMax) dot product per edge and head (SDDMM).
Tensor aggregate(const Tensor& x, const Graph& graph, Reduce reduce,
                 const Tensor& edge_weight = Tensor());

// messages [E, F] (one row per edge), edge_weight as in aggregate -> [N, F]:
//   out[i] = reduce over in-edges e of i of  w_e * messages[e].
Tensor scatter(const Tensor& messages, const Graph& graph, Reduce reduce,
               const Tensor& edge_weight = Tensor());

// scores [E] or [E, H] -> same shape: softmax over each destination's in-edges, per head
// (fused: max, exp and sum, normalise). Backward: g_in = s * g - s * sum_row(s * g).
Tensor edge_softmax(const Tensor& scores, const Graph& graph);

// x [N, F] -> [N, R, F], R = graph.num_relations():
//   out[i, r] = reduce (kSum or kMean) over in-edges e of i with relation r of x[src(e)].
// RGCN's aggregate-first form: one GEMM with the [R*F, out] weight follows.
Tensor aggregate_by_relation(const Tensor& x, const Graph& graph, Reduce reduce);
// x_rel [N, R, F] -> [N, F]:
//   out[i] = sum over r of reduce (kSum or kMean) over in-edges e of i with relation r of
//            x_rel[src(e), r].
// RGCN's transform-first form, after one GEMM x [N, in] -> [N, R*out].
Tensor aggregate_relation_slots(const Tensor& x_rel, const Graph& graph, Reduce reduce);

// ---------------------------------------------------------------- raw kernels

// Optional per-edge weights: data [E] (heads = 1) or [E, heads], row e for edge e; null = ones.
struct EdgeWeights {
  const float* data = nullptr;
  int64_t heads = 1;
};

// The kernels behind the ops. Shapes as in the ops, with width = F; every output is fully
// overwritten (callers may pass uninitialised buffers). `arg` [N, F] is the kMax arg-max (edge id,
// -1 on empty rows), written by the forward and read by the backward; null for other reductions.
// A null gradient output skips that gradient.
namespace kernels {
void gather_forward(const float* x, int64_t width, const Graph& graph, EdgeEnd end, float* out);
void gather_backward(const float* grad_out, int64_t width, const Graph& graph, EdgeEnd end,
                     float* grad_x);
void gather_add_forward(const float* at_source, const float* at_destination, int64_t width,
                        const Graph& graph, float* out);
void gather_add_backward(const float* grad_out, int64_t width, const Graph& graph,
                         float* grad_source, float* grad_destination);
void aggregate_forward(const float* x, int64_t width, const Graph& graph, Reduce reduce,
                       EdgeWeights weights, float* out, int32_t* arg);
void aggregate_backward(const float* grad_out, const float* x, int64_t width, const Graph& graph,
                        Reduce reduce, EdgeWeights weights, const int32_t* arg, float* grad_x,
                        float* grad_weight);
void scatter_forward(const float* messages, int64_t width, const Graph& graph, Reduce reduce,
                     EdgeWeights weights, float* out, int32_t* arg);
void scatter_backward(const float* grad_out, const float* messages, int64_t width,
                      const Graph& graph, Reduce reduce, EdgeWeights weights, const int32_t* arg,
                      float* grad_messages, float* grad_weight);
void edge_softmax_forward(const float* scores, int64_t heads, const Graph& graph, float* out);
// out is the forward's result.
void edge_softmax_backward(const float* out, const float* grad_out, int64_t heads,
                           const Graph& graph, float* grad_scores);
void aggregate_by_relation_forward(const float* x, int64_t width, const Graph& graph, Reduce reduce,
                                   float* out);
void aggregate_by_relation_backward(const float* grad_out, int64_t width, const Graph& graph,
                                    Reduce reduce, float* grad_x);
void aggregate_relation_slots_forward(const float* x_rel, int64_t width, const Graph& graph,
                                      Reduce reduce, float* out);
void aggregate_relation_slots_backward(const float* grad_out, int64_t width, const Graph& graph,
                                       Reduce reduce, float* grad_x_rel);
}  // namespace kernels

// Plain scalar loops over the edge list in edge-id order (no CSR, no threads, double sums), the
// definitions the fast kernels are tested against. Same signatures and outputs as kernels::.
namespace reference {
void gather_forward(const float* x, int64_t width, const Graph& graph, EdgeEnd end, float* out);
void gather_backward(const float* grad_out, int64_t width, const Graph& graph, EdgeEnd end,
                     float* grad_x);
void gather_add_forward(const float* at_source, const float* at_destination, int64_t width,
                        const Graph& graph, float* out);
void gather_add_backward(const float* grad_out, int64_t width, const Graph& graph,
                         float* grad_source, float* grad_destination);
void aggregate_forward(const float* x, int64_t width, const Graph& graph, Reduce reduce,
                       EdgeWeights weights, float* out, int32_t* arg);
void aggregate_backward(const float* grad_out, const float* x, int64_t width, const Graph& graph,
                        Reduce reduce, EdgeWeights weights, const int32_t* arg, float* grad_x,
                        float* grad_weight);
void scatter_forward(const float* messages, int64_t width, const Graph& graph, Reduce reduce,
                     EdgeWeights weights, float* out, int32_t* arg);
void scatter_backward(const float* grad_out, const float* messages, int64_t width,
                      const Graph& graph, Reduce reduce, EdgeWeights weights, const int32_t* arg,
                      float* grad_messages, float* grad_weight);
void edge_softmax_forward(const float* scores, int64_t heads, const Graph& graph, float* out);
void edge_softmax_backward(const float* out, const float* grad_out, int64_t heads,
                           const Graph& graph, float* grad_scores);
void aggregate_by_relation_forward(const float* x, int64_t width, const Graph& graph, Reduce reduce,
                                   float* out);
void aggregate_by_relation_backward(const float* grad_out, int64_t width, const Graph& graph,
                                    Reduce reduce, float* grad_x);
void aggregate_relation_slots_forward(const float* x_rel, int64_t width, const Graph& graph,
                                      Reduce reduce, float* out);
void aggregate_relation_slots_backward(const float* grad_out, int64_t width, const Graph& graph,
                                       Reduce reduce, float* grad_x_rel);
}  // namespace reference

}  // namespace stgnn
