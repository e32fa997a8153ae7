// Directed graphs for message passing, built once into the two compressed layouts every kernel
// runs over.
//
// A Graph has N nodes and E directed edges src(e) -> dst(e), e = 0 .. E-1, each with a relation
// (edge type, 0 when none is given) and optionally a float attribute. Construction validates the
// edge list and builds, by counting sort in O(N + E):
//   - the in-CSR, rows = destinations: for node i, positions row_ptr[i] .. row_ptr[i+1] list its
//     in-edges (edge ids ascending) and their sources;
//   - the out-CSR, rows = sources: for node j, its out-edges (ids ascending) and their
//     destinations.
// Forward kernels run row-parallel over the in-CSR, gradients w.r.t. sources over the out-CSR, so
// every thread owns whole output rows and no kernel needs atomics. Indices are int32 (N and E
// below 2^31, checked). A Graph is an immutable handle: copies share the same data.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/ops.h"
#include "autograd/tensor.h"

namespace stgnn {

// Compressed rows over edges.
struct Csr {
  std::vector<int32_t> row_ptr;  // [N + 1]: row r owns positions [row_ptr[r], row_ptr[r+1])
  std::vector<int32_t> edge;     // [E] edge id at each position, ascending within a row
  std::vector<int32_t> node;     // [E] the other end of that edge: its source in the in-CSR,
                                 //     its destination in the out-CSR
};

class Graph {
 public:
  // The empty graph: no nodes, no edges.
  Graph();
  // num_nodes >= 0; src, dst [E] in [0, num_nodes); edge_type empty (every edge relation 0) or
  // [E] in [0, num_relations); num_relations 0 means "max type + 1" (1 without types);
  // edge_attr empty or [E]. Throws ValueError naming the offending edge or field.
  Graph(int64_t num_nodes, const std::vector<int64_t>& src, const std::vector<int64_t>& dst,
        const std::vector<int64_t>& edge_type = {}, int64_t num_relations = 0,
        const std::vector<float>& edge_attr = {});

  int64_t num_nodes() const { return data_->num_nodes; }
  int64_t num_edges() const { return static_cast<int64_t>(data_->src.size()); }
  int64_t num_relations() const { return data_->num_relations; }
  bool has_edge_types() const { return data_->has_types; }
  bool has_edge_attr() const { return data_->has_attr; }

  const std::vector<int32_t>& src() const { return data_->src; }  // [E]
  const std::vector<int32_t>& dst() const { return data_->dst; }  // [E]
  // [E]; all zeros when the graph was built without types.
  const std::vector<int32_t>& edge_type() const { return data_->type; }
  // [E], or empty when has_edge_attr() is false.
  const std::vector<float>& edge_attr() const { return data_->attr; }
  const Csr& in_csr() const { return data_->in; }
  const Csr& out_csr() const { return data_->out; }
  int64_t in_degree(int64_t node) const;
  int64_t out_degree(int64_t node) const;

  // The graph with only the edges whose keep[e] is true (same nodes, edge order kept, types and
  // attributes carried along). keep has E entries.
  Graph edge_subgraph(const std::vector<bool>& keep) const;
  // Drops every self loop, then appends one loop i -> i per node in node order (relation 0,
  // attribute 0): PyG's add_remaining_self_loops (GCNConv) and remove_self_loops +
  // add_self_loops (GATConv) on an unweighted graph.
  Graph with_self_loops() const;

 private:
  struct Data {
    int64_t num_nodes = 0;
    int64_t num_relations = 1;
    bool has_types = false, has_attr = false;
    std::vector<int32_t> src, dst, type;
    std::vector<float> attr;
    Csr in, out;
  };
  std::shared_ptr<const Data> data_;
};

// ---------------------------------------------------------------- batching

// Block-diagonal union: graph k's node v becomes node node_offsets[k] + v, its edges follow
// graph k-1's. node_offsets (may be null) receives G + 1 offsets, the last = total nodes.
// Relations are kept (num_relations = the largest of the inputs); attributes are kept when every
// input has them, and mixing graphs with and without attributes is a ValueError.
Graph batch_graphs(const std::vector<Graph>& graphs, std::vector<int64_t>* node_offsets);
// The graph of every node [N_total] (PyG's `batch` vector) from batch_graphs' offsets.
std::vector<int64_t> node_graph_index(const std::vector<int64_t>& node_offsets);
// x [N_total, ...] -> one [N_k, ...] per graph (views along the rows, recorded by autograd).
std::vector<Tensor> split_by_graph(const Tensor& x, const std::vector<int64_t>& node_offsets);

// ---------------------------------------------------------------- builders

// RSTG's region graph over cells laid on one map (e.g. grid_cells(3,3,..) + (2,2) + (1,1)):
// cells a != b are joined (both directions) when their rectangles overlap with positive area or
// share a side segment of positive length; touching at a corner does not count. Coordinates
// closer than 1e-6 of the map extent count as equal. fully_connected joins every pair;
// self_loops adds a -> a. Edges are ordered by (source, destination). Cells must have positive
// area (ValueError otherwise). 3x3 + 2x2 + 1x1 over a 6x6 map gives 45 undirected pairs.
Graph region_graph(const std::vector<Cell>& cells, bool fully_connected = false,
                   bool self_loops = false);

// Temporal chain over n ordered items (node k = item k): edge j -> i whenever |i - j| <= tau
// (self loops included when self_loops), edges ordered by (source, destination). Each edge's
// attribute is sign(source - destination), GLEVR's released convention: +1 when the source comes
// later than the destination (a "backward" edge, information flows from the future), -1 when it
// comes earlier ("forward"), 0 for the self loop. So SPELL's forward stream is attr <= 0 and its
// backward stream attr >= 0.
Graph temporal_chain(int64_t n, int64_t tau, bool self_loops = true);

// Which way alignment edges between two synchronised streams point.
enum class Alignment { kAToB, kBToA, kBoth };

// Accumulates an edge list over a fixed node set (several streams at node offsets), then builds
// the Graph. Every edge carries a relation id and an attribute.
class GraphBuilder {
 public:
  explicit GraphBuilder(int64_t num_nodes);
  void add_edge(int64_t src, int64_t dst, int64_t relation = 0, float attr = 0.0f);
  // temporal_chain's edges (and attributes) over nodes first .. first + n - 1.
  void add_temporal_chain(int64_t first, int64_t n, int64_t tau, int64_t relation = 0,
                          bool self_loops = true);
  // Edges between item k of stream A (node first_a + k) and item k of stream B (first_b + k),
  // k < n, in the given direction(s) (for kBoth, A -> B then B -> A per item).
  void add_alignment(int64_t first_a, int64_t first_b, int64_t n, Alignment direction,
                     int64_t relation, float attr = 0.0f);
  int64_t num_edges() const { return static_cast<int64_t>(src_.size()); }
  // num_relations 0 = max relation + 1. Validation as in Graph's constructor.
  Graph build(int64_t num_relations = 0) const;

 private:
  int64_t num_nodes_;
  std::vector<int64_t> src_, dst_, type_;
  std::vector<float> attr_;
};

}  // namespace stgnn
