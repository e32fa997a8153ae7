#include "graph/graph.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace stgnn {

namespace {

constexpr int64_t kMaxIndex = std::numeric_limits<int32_t>::max();

// Counting sort of the edges by `key` (destinations for the in-CSR, sources for the out-CSR);
// `other` gives each edge's opposite end. Stable, so each row lists its edge ids ascending.
Csr build_csr(int64_t rows, const std::vector<int32_t>& key, const std::vector<int32_t>& other) {
  Csr csr;
  csr.row_ptr.assign(static_cast<size_t>(rows + 1), 0);
  for (int32_t k : key)
    ++csr.row_ptr[static_cast<size_t>(k) + 1];
  for (int64_t r = 0; r < rows; ++r)
    csr.row_ptr[static_cast<size_t>(r + 1)] += csr.row_ptr[static_cast<size_t>(r)];
  std::vector<int32_t> next(csr.row_ptr.begin(), csr.row_ptr.end() - 1);
  csr.edge.resize(key.size());
  csr.node.resize(key.size());
  for (size_t e = 0; e < key.size(); ++e) {
    const int32_t pos = next[static_cast<size_t>(key[e])]++;
    csr.edge[static_cast<size_t>(pos)] = static_cast<int32_t>(e);
    csr.node[static_cast<size_t>(pos)] = other[e];
  }
  return csr;
}

void check_node(int64_t index, int64_t num_nodes, const char* end, size_t edge) {
  if (index < 0) {
    throw ValueError("Graph: " + std::string(end) + " index " + std::to_string(index) +
                     " of edge " + std::to_string(edge) + " is negative");
  }
  if (index >= num_nodes) {
    throw ValueError("Graph: " + std::string(end) + " index " + std::to_string(index) +
                     " of edge " + std::to_string(edge) + " outside [0, " +
                     std::to_string(num_nodes) + ")");
  }
}

}  // namespace

Graph::Graph() {
  auto data = std::make_shared<Data>();
  data->in.row_ptr = {0};
  data->out.row_ptr = {0};
  data_ = std::move(data);
}

Graph::Graph(int64_t num_nodes, const std::vector<int64_t>& src, const std::vector<int64_t>& dst,
             const std::vector<int64_t>& edge_type, int64_t num_relations,
             const std::vector<float>& edge_attr) {
  const size_t num_edges = src.size();
  if (num_nodes < 0) throw ValueError("Graph: negative node count " + std::to_string(num_nodes));
  if (num_nodes > kMaxIndex) {
    throw ValueError("Graph: " + std::to_string(num_nodes) + " nodes, int32 indices hold at most " +
                     std::to_string(kMaxIndex));
  }
  if (dst.size() != num_edges) {
    throw ValueError("Graph: src has " + std::to_string(num_edges) + " entries, dst has " +
                     std::to_string(dst.size()));
  }
  if (static_cast<int64_t>(num_edges) > kMaxIndex) {
    throw ValueError("Graph: " + std::to_string(num_edges) + " edges, int32 indices hold at most " +
                     std::to_string(kMaxIndex));
  }
  if (num_nodes == 0 && num_edges > 0) {
    throw ValueError("Graph: 0 nodes but " + std::to_string(num_edges) + " edges");
  }
  if (!edge_type.empty() && edge_type.size() != num_edges) {
    throw ValueError("Graph: edge_type has " + std::to_string(edge_type.size()) + " entries for " +
                     std::to_string(num_edges) + " edges");
  }
  if (!edge_attr.empty() && edge_attr.size() != num_edges) {
    throw ValueError("Graph: edge_attr has " + std::to_string(edge_attr.size()) + " entries for " +
                     std::to_string(num_edges) + " edges");
  }
  if (num_relations < 0) {
    throw ValueError("Graph: negative num_relations " + std::to_string(num_relations));
  }
  if (num_relations > kMaxIndex) {
    throw ValueError("Graph: num_relations " + std::to_string(num_relations) + " too large");
  }
  auto data = std::make_shared<Data>();
  data->num_nodes = num_nodes;
  data->src.resize(num_edges);
  data->dst.resize(num_edges);
  for (size_t e = 0; e < num_edges; ++e) {
    check_node(src[e], num_nodes, "source", e);
    check_node(dst[e], num_nodes, "destination", e);
    data->src[e] = static_cast<int32_t>(src[e]);
    data->dst[e] = static_cast<int32_t>(dst[e]);
  }
  int64_t max_type = -1;
  data->type.assign(num_edges, 0);
  for (size_t e = 0; e < edge_type.size(); ++e) {
    const int64_t t = edge_type[e];
    if (t < 0 || (num_relations > 0 && t >= num_relations) || t >= kMaxIndex) {
      throw ValueError("Graph: edge type " + std::to_string(t) + " of edge " + std::to_string(e) +
                       " outside [0, num_relations = " +
                       (num_relations > 0 ? std::to_string(num_relations) : "unset") + ")");
    }
    max_type = std::max(max_type, t);
    data->type[e] = static_cast<int32_t>(t);
  }
  // With no edges the type and attribute vectors are empty either way: an explicit
  // num_relations marks the graph as typed; edge_subgraph / with_self_loops carry the flags over.
  data->has_types = !edge_type.empty() || num_relations > 0;
  data->num_relations = num_relations > 0 ? num_relations : std::max<int64_t>(1, max_type + 1);
  data->has_attr = !edge_attr.empty();
  data->attr = edge_attr;
  data->in = build_csr(num_nodes, data->dst, data->src);
  data->out = build_csr(num_nodes, data->src, data->dst);
  data_ = std::move(data);
}

int64_t Graph::in_degree(int64_t node) const {
  if (node < 0 || node >= num_nodes()) {
    throw ValueError("Graph::in_degree: node " + std::to_string(node) + " outside [0, " +
                     std::to_string(num_nodes()) + ")");
  }
  return data_->in.row_ptr[static_cast<size_t>(node) + 1] -
         data_->in.row_ptr[static_cast<size_t>(node)];
}

int64_t Graph::out_degree(int64_t node) const {
  if (node < 0 || node >= num_nodes()) {
    throw ValueError("Graph::out_degree: node " + std::to_string(node) + " outside [0, " +
                     std::to_string(num_nodes()) + ")");
  }
  return data_->out.row_ptr[static_cast<size_t>(node) + 1] -
         data_->out.row_ptr[static_cast<size_t>(node)];
}

Graph Graph::edge_subgraph(const std::vector<bool>& keep) const {
  if (static_cast<int64_t>(keep.size()) != num_edges()) {
    throw ValueError("Graph::edge_subgraph: keep has " + std::to_string(keep.size()) +
                     " entries for " + std::to_string(num_edges()) + " edges");
  }
  std::vector<int64_t> src, dst, type;
  std::vector<float> attr;
  for (size_t e = 0; e < keep.size(); ++e) {
    if (!keep[e]) continue;
    src.push_back(data_->src[e]);
    dst.push_back(data_->dst[e]);
    if (data_->has_types) type.push_back(data_->type[e]);
    if (data_->has_attr) attr.push_back(data_->attr[e]);
  }
  Graph g(num_nodes(), src, dst, type, num_relations(), attr);
  // An edge list that happens to become empty keeps the parent's typed / attributed status.
  auto data = std::make_shared<Data>(*g.data_);
  data->has_types = data_->has_types;
  data->has_attr = data_->has_attr;
  g.data_ = std::move(data);
  return g;
}

Graph Graph::with_self_loops() const {
  std::vector<int64_t> src, dst, type;
  std::vector<float> attr;
  for (size_t e = 0; e < data_->src.size(); ++e) {
    if (data_->src[e] == data_->dst[e]) continue;
    src.push_back(data_->src[e]);
    dst.push_back(data_->dst[e]);
    type.push_back(data_->type[e]);
    if (data_->has_attr) attr.push_back(data_->attr[e]);
  }
  for (int64_t i = 0; i < num_nodes(); ++i) {
    src.push_back(i);
    dst.push_back(i);
    type.push_back(0);
    if (data_->has_attr) attr.push_back(0.0f);
  }
  Graph g(num_nodes(), src, dst, type, num_relations(), attr);
  auto data = std::make_shared<Data>(*g.data_);
  data->has_types = data_->has_types;
  data->has_attr = data_->has_attr;
  g.data_ = std::move(data);
  return g;
}

// ---------------------------------------------------------------- batching

Graph batch_graphs(const std::vector<Graph>& graphs, std::vector<int64_t>* node_offsets) {
  std::vector<int64_t> offsets{0};
  std::vector<int64_t> src, dst, type;
  std::vector<float> attr;
  int64_t relations = 1;
  bool any_types = false;
  // Graphs without edges fit either way; the others must agree on having attributes.
  int64_t first_with_edges = -1;
  for (size_t k = 0; k < graphs.size() && first_with_edges < 0; ++k) {
    if (graphs[k].num_edges() > 0) first_with_edges = static_cast<int64_t>(k);
  }
  const bool attributed =
      first_with_edges >= 0 && graphs[static_cast<size_t>(first_with_edges)].has_edge_attr();
  for (size_t k = 0; k < graphs.size(); ++k) {
    const Graph& g = graphs[k];
    if (g.num_edges() > 0 && g.has_edge_attr() != attributed) {
      throw ValueError("batch_graphs: graph " + std::to_string(k) +
                       (attributed ? " has no edge attribute while graph "
                                   : " has an edge attribute while graph ") +
                       std::to_string(first_with_edges) + (attributed ? " does" : " does not"));
    }
    const int64_t base = offsets.back();
    for (int64_t e = 0; e < g.num_edges(); ++e) {
      src.push_back(base + g.src()[static_cast<size_t>(e)]);
      dst.push_back(base + g.dst()[static_cast<size_t>(e)]);
      type.push_back(g.edge_type()[static_cast<size_t>(e)]);
      if (attributed) attr.push_back(g.edge_attr()[static_cast<size_t>(e)]);
    }
    relations = std::max(relations, g.num_relations());
    any_types = any_types || g.has_edge_types();
    offsets.push_back(base + g.num_nodes());
  }
  if (node_offsets) *node_offsets = offsets;
  if (!any_types) type.clear();
  return Graph(offsets.back(), src, dst, type, any_types ? relations : 0, attr);
}

std::vector<int64_t> node_graph_index(const std::vector<int64_t>& node_offsets) {
  if (node_offsets.empty() || node_offsets[0] != 0) {
    throw ValueError("node_graph_index: offsets must start at 0");
  }
  std::vector<int64_t> index;
  for (size_t k = 0; k + 1 < node_offsets.size(); ++k) {
    if (node_offsets[k + 1] < node_offsets[k]) {
      throw ValueError("node_graph_index: offsets decrease at graph " + std::to_string(k));
    }
    index.insert(index.end(), static_cast<size_t>(node_offsets[k + 1] - node_offsets[k]),
                 static_cast<int64_t>(k));
  }
  return index;
}

std::vector<Tensor> split_by_graph(const Tensor& x, const std::vector<int64_t>& node_offsets) {
  if (x.dim() < 1) throw ShapeError("split_by_graph: x must have a row dim, got []");
  if (node_offsets.empty() || node_offsets[0] != 0 || node_offsets.back() != x.size(0)) {
    throw ValueError("split_by_graph: offsets must run from 0 to the " + std::to_string(x.size(0)) +
                     " rows of x " + shape_str(x.shape()));
  }
  std::vector<Tensor> parts;
  for (size_t k = 0; k + 1 < node_offsets.size(); ++k) {
    if (node_offsets[k + 1] < node_offsets[k]) {
      throw ValueError("split_by_graph: offsets decrease at graph " + std::to_string(k));
    }
    parts.push_back(slice(x, 0, node_offsets[k], node_offsets[k + 1]));
  }
  return parts;
}

// ---------------------------------------------------------------- builders

Graph region_graph(const std::vector<Cell>& cells, bool fully_connected, bool self_loops) {
  float extent = 0.0f;
  for (size_t a = 0; a < cells.size(); ++a) {
    const Cell& c = cells[a];
    if (!(std::isfinite(c.top) && std::isfinite(c.left) && std::isfinite(c.bottom) &&
          std::isfinite(c.right) && c.bottom > c.top && c.right > c.left)) {
      throw ValueError("region_graph: cell " + std::to_string(a) + " [" + std::to_string(c.top) +
                       "," + std::to_string(c.bottom) + ")x[" + std::to_string(c.left) + "," +
                       std::to_string(c.right) + ") has no positive area");
    }
    extent = std::max(
        {extent, std::fabs(c.top), std::fabs(c.bottom), std::fabs(c.left), std::fabs(c.right)});
  }
  // Cells of different grids compute shared coordinates through different divisions, so an
  // exact comparison could miss a shared side by one rounding.
  const float eps = 1e-6f * std::max(1.0f, extent);
  const auto adjacent = [&](const Cell& p, const Cell& q) {
    const float overlap_rows = std::min(p.bottom, q.bottom) - std::max(p.top, q.top);
    const float overlap_cols = std::min(p.right, q.right) - std::max(p.left, q.left);
    const bool rows_positive = overlap_rows > eps, cols_positive = overlap_cols > eps;
    const bool rows_touch = std::fabs(overlap_rows) <= eps;
    const bool cols_touch = std::fabs(overlap_cols) <= eps;
    return (rows_positive && cols_positive) || (rows_positive && cols_touch) ||
           (cols_positive && rows_touch);
  };
  std::vector<int64_t> src, dst;
  const int64_t n = static_cast<int64_t>(cells.size());
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = 0; b < n; ++b) {
      const bool join = a == b ? self_loops
                               : fully_connected || adjacent(cells[static_cast<size_t>(a)],
                                                             cells[static_cast<size_t>(b)]);
      if (join) {
        src.push_back(a);
        dst.push_back(b);
      }
    }
  }
  return Graph(n, src, dst);
}

Graph temporal_chain(int64_t n, int64_t tau, bool self_loops) {
  GraphBuilder builder(n);
  builder.add_temporal_chain(0, n, tau, 0, self_loops);
  std::vector<int64_t> src, dst;
  Graph typed = builder.build();
  // The chain's edges are all of one relation: return it untyped, with its attributes.
  src.assign(typed.src().begin(), typed.src().end());
  dst.assign(typed.dst().begin(), typed.dst().end());
  return Graph(n, src, dst, {}, 0, typed.edge_attr());
}

GraphBuilder::GraphBuilder(int64_t num_nodes) : num_nodes_(num_nodes) {
  if (num_nodes < 0) {
    throw ValueError("GraphBuilder: negative node count " + std::to_string(num_nodes));
  }
}

void GraphBuilder::add_edge(int64_t src, int64_t dst, int64_t relation, float attr) {
  src_.push_back(src);
  dst_.push_back(dst);
  type_.push_back(relation);
  attr_.push_back(attr);
}

void GraphBuilder::add_temporal_chain(int64_t first, int64_t n, int64_t tau, int64_t relation,
                                      bool self_loops) {
  if (n < 0 || tau < 0) {
    throw ValueError("add_temporal_chain: n = " + std::to_string(n) +
                     ", tau = " + std::to_string(tau) + " (both must be >= 0)");
  }
  if (first < 0 || first + n > num_nodes_) {
    throw ValueError("add_temporal_chain: nodes [" + std::to_string(first) + ", " +
                     std::to_string(first + n) + ") outside [0, " + std::to_string(num_nodes_) +
                     ")");
  }
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = std::max<int64_t>(0, j - tau); i <= std::min(n - 1, j + tau); ++i) {
      if (i == j && !self_loops) continue;
      const float sign = j > i ? 1.0f : (j < i ? -1.0f : 0.0f);
      add_edge(first + j, first + i, relation, sign);
    }
  }
}

void GraphBuilder::add_alignment(int64_t first_a, int64_t first_b, int64_t n, Alignment direction,
                                 int64_t relation, float attr) {
  if (n < 0) throw ValueError("add_alignment: negative item count " + std::to_string(n));
  for (int64_t first : {first_a, first_b}) {
    if (first < 0 || first + n > num_nodes_) {
      throw ValueError("add_alignment: stream nodes [" + std::to_string(first) + ", " +
                       std::to_string(first + n) + ") outside [0, " + std::to_string(num_nodes_) +
                       ")");
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    if (direction != Alignment::kBToA) add_edge(first_a + k, first_b + k, relation, attr);
    if (direction != Alignment::kAToB) add_edge(first_b + k, first_a + k, relation, attr);
  }
}

Graph GraphBuilder::build(int64_t num_relations) const {
  return Graph(num_nodes_, src_, dst_, type_, num_relations, attr_);
}

}  // namespace stgnn
