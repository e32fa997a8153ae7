// Scalar references of the message-passing kernels: the definitions, written as directly as
// possible (loops over the edge list in edge-id order, double accumulators, one thread). The
// tests compare kernels:: against these on random graphs.
#include <cmath>
#include <limits>
#include <vector>

#include "graph/message_passing.h"

namespace stgnn::reference {

namespace {

size_t at(int64_t row, int64_t width, int64_t col) {
  return static_cast<size_t>(row * width + col);
}

float weight_of(EdgeWeights w, int64_t e, int64_t f, int64_t width) {
  if (!w.data) return 1.0f;
  const int64_t head = f / (width / w.heads);
  return w.data[e * w.heads + head];
}

std::vector<int64_t> in_degrees(const Graph& graph) {
  std::vector<int64_t> deg(static_cast<size_t>(graph.num_nodes()), 0);
  for (int64_t e = 0; e < graph.num_edges(); ++e)
    ++deg[static_cast<size_t>(graph.dst()[static_cast<size_t>(e)])];
  return deg;
}

// Counts of in-edges per (node, relation), [N * R].
std::vector<int64_t> relation_counts(const Graph& graph) {
  const int64_t r = graph.num_relations();
  std::vector<int64_t> count(static_cast<size_t>(graph.num_nodes() * r), 0);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    ++count[static_cast<size_t>(graph.dst()[k] * r + graph.edge_type()[k])];
  }
  return count;
}

// Shared by aggregate (input row of edge e = src(e)) and scatter (input row = e).
void reduce_forward(const float* in, bool rows_are_edges, int64_t width, const Graph& graph,
                    Reduce reduce, EdgeWeights w, float* out, int32_t* arg) {
  const int64_t n = graph.num_nodes();
  std::vector<double> acc(static_cast<size_t>(n * width), 0.0);
  std::vector<float> best(static_cast<size_t>(n * width), 0.0f);
  std::vector<int32_t> best_edge(static_cast<size_t>(n * width), -1);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const int64_t i = graph.dst()[static_cast<size_t>(e)];
    const int64_t row = rows_are_edges ? e : graph.src()[static_cast<size_t>(e)];
    for (int64_t f = 0; f < width; ++f) {
      const float v = weight_of(w, e, f, width) * in[at(row, width, f)];
      acc[at(i, width, f)] += v;
      if (best_edge[at(i, width, f)] < 0 || v > best[at(i, width, f)]) {
        best[at(i, width, f)] = v;
        best_edge[at(i, width, f)] = static_cast<int32_t>(e);
      }
    }
  }
  const std::vector<int64_t> deg = in_degrees(graph);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t f = 0; f < width; ++f) {
      const size_t k = at(i, width, f);
      if (reduce == Reduce::kMax) {
        out[k] = best[k];
        arg[k] = best_edge[k];
      } else if (reduce == Reduce::kMean) {
        out[k] = deg[static_cast<size_t>(i)] > 0
                     ? static_cast<float>(acc[k] / static_cast<double>(deg[static_cast<size_t>(i)]))
                     : 0.0f;
      } else {
        out[k] = static_cast<float>(acc[k]);
      }
    }
  }
}

// d out[dst e] / d (w_e * in_row(e)) for each edge and feature: 1, 1/deg, or [arg == e].
double edge_factor(const Graph& graph, Reduce reduce, const std::vector<int64_t>& deg,
                   const int32_t* arg, int64_t e, int64_t f, int64_t width) {
  const int64_t i = graph.dst()[static_cast<size_t>(e)];
  if (reduce == Reduce::kMean) return 1.0 / static_cast<double>(deg[static_cast<size_t>(i)]);
  if (reduce == Reduce::kMax) return arg[at(i, width, f)] == e ? 1.0 : 0.0;
  return 1.0;
}

void reduce_backward(const float* grad_out, const float* in, bool rows_are_edges, int64_t width,
                     const Graph& graph, Reduce reduce, EdgeWeights w, const int32_t* arg,
                     float* grad_in, float* grad_weight) {
  const std::vector<int64_t> deg = in_degrees(graph);
  const int64_t in_rows = rows_are_edges ? graph.num_edges() : graph.num_nodes();
  std::vector<double> gin(static_cast<size_t>(in_rows * width), 0.0);
  std::vector<double> gw(static_cast<size_t>(graph.num_edges() * w.heads), 0.0);
  const int64_t head_width = w.heads > 0 ? width / w.heads : width;
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const int64_t i = graph.dst()[static_cast<size_t>(e)];
    const int64_t row = rows_are_edges ? e : graph.src()[static_cast<size_t>(e)];
    for (int64_t f = 0; f < width; ++f) {
      const double g =
          grad_out[at(i, width, f)] * edge_factor(graph, reduce, deg, arg, e, f, width);
      gin[at(row, width, f)] += weight_of(w, e, f, width) * g;
      gw[static_cast<size_t>(e * w.heads + f / head_width)] += g * in[at(row, width, f)];
    }
  }
  if (grad_in) {
    for (size_t k = 0; k < gin.size(); ++k)
      grad_in[k] = static_cast<float>(gin[k]);
  }
  if (grad_weight) {
    for (size_t k = 0; k < gw.size(); ++k)
      grad_weight[k] = static_cast<float>(gw[k]);
  }
}

}  // namespace

void gather_forward(const float* x, int64_t width, const Graph& graph, EdgeEnd end, float* out) {
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    const int64_t node = end == EdgeEnd::kSource ? graph.src()[k] : graph.dst()[k];
    for (int64_t f = 0; f < width; ++f)
      out[at(e, width, f)] = x[at(node, width, f)];
  }
}

void gather_backward(const float* grad_out, int64_t width, const Graph& graph, EdgeEnd end,
                     float* grad_x) {
  std::vector<double> acc(static_cast<size_t>(graph.num_nodes() * width), 0.0);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    const int64_t node = end == EdgeEnd::kSource ? graph.src()[k] : graph.dst()[k];
    for (int64_t f = 0; f < width; ++f)
      acc[at(node, width, f)] += grad_out[at(e, width, f)];
  }
  for (size_t k = 0; k < acc.size(); ++k)
    grad_x[k] = static_cast<float>(acc[k]);
}

void gather_add_forward(const float* at_source, const float* at_destination, int64_t width,
                        const Graph& graph, float* out) {
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    for (int64_t f = 0; f < width; ++f) {
      out[at(e, width, f)] =
          at_source[at(graph.src()[k], width, f)] + at_destination[at(graph.dst()[k], width, f)];
    }
  }
}

void gather_add_backward(const float* grad_out, int64_t width, const Graph& graph,
                         float* grad_source, float* grad_destination) {
  if (grad_source) gather_backward(grad_out, width, graph, EdgeEnd::kSource, grad_source);
  if (grad_destination) {
    gather_backward(grad_out, width, graph, EdgeEnd::kDestination, grad_destination);
  }
}

void aggregate_forward(const float* x, int64_t width, const Graph& graph, Reduce reduce,
                       EdgeWeights weights, float* out, int32_t* arg) {
  reduce_forward(x, false, width, graph, reduce, weights, out, arg);
}

void aggregate_backward(const float* grad_out, const float* x, int64_t width, const Graph& graph,
                        Reduce reduce, EdgeWeights weights, const int32_t* arg, float* grad_x,
                        float* grad_weight) {
  reduce_backward(grad_out, x, false, width, graph, reduce, weights, arg, grad_x, grad_weight);
}

void scatter_forward(const float* messages, int64_t width, const Graph& graph, Reduce reduce,
                     EdgeWeights weights, float* out, int32_t* arg) {
  reduce_forward(messages, true, width, graph, reduce, weights, out, arg);
}

void scatter_backward(const float* grad_out, const float* messages, int64_t width,
                      const Graph& graph, Reduce reduce, EdgeWeights weights, const int32_t* arg,
                      float* grad_messages, float* grad_weight) {
  reduce_backward(grad_out, messages, true, width, graph, reduce, weights, arg, grad_messages,
                  grad_weight);
}

void edge_softmax_forward(const float* scores, int64_t heads, const Graph& graph, float* out) {
  const int64_t n = graph.num_nodes();
  std::vector<double> row_max(static_cast<size_t>(n * heads),
                              -std::numeric_limits<double>::infinity());
  std::vector<double> row_sum(static_cast<size_t>(n * heads), 0.0);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const int64_t i = graph.dst()[static_cast<size_t>(e)];
    for (int64_t h = 0; h < heads; ++h) {
      row_max[at(i, heads, h)] =
          std::max(row_max[at(i, heads, h)], static_cast<double>(scores[at(e, heads, h)]));
    }
  }
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const int64_t i = graph.dst()[static_cast<size_t>(e)];
    for (int64_t h = 0; h < heads; ++h)
      row_sum[at(i, heads, h)] += std::exp(scores[at(e, heads, h)] - row_max[at(i, heads, h)]);
  }
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const int64_t i = graph.dst()[static_cast<size_t>(e)];
    for (int64_t h = 0; h < heads; ++h) {
      out[at(e, heads, h)] = static_cast<float>(
          std::exp(scores[at(e, heads, h)] - row_max[at(i, heads, h)]) / row_sum[at(i, heads, h)]);
    }
  }
}

void edge_softmax_backward(const float* out, const float* grad_out, int64_t heads,
                           const Graph& graph, float* grad_scores) {
  std::vector<double> dot(static_cast<size_t>(graph.num_nodes() * heads), 0.0);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const int64_t i = graph.dst()[static_cast<size_t>(e)];
    for (int64_t h = 0; h < heads; ++h)
      dot[at(i, heads, h)] += static_cast<double>(out[at(e, heads, h)]) * grad_out[at(e, heads, h)];
  }
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const int64_t i = graph.dst()[static_cast<size_t>(e)];
    for (int64_t h = 0; h < heads; ++h) {
      const size_t k = at(e, heads, h);
      grad_scores[k] = static_cast<float>(out[k] * (grad_out[k] - dot[at(i, heads, h)]));
    }
  }
}

void aggregate_by_relation_forward(const float* x, int64_t width, const Graph& graph, Reduce reduce,
                                   float* out) {
  const int64_t r = graph.num_relations();
  const std::vector<int64_t> count = relation_counts(graph);
  std::vector<double> acc(static_cast<size_t>(graph.num_nodes() * r * width), 0.0);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    const int64_t slot = graph.dst()[k] * r + graph.edge_type()[k];
    for (int64_t f = 0; f < width; ++f)
      acc[at(slot, width, f)] += x[at(graph.src()[k], width, f)];
  }
  for (int64_t slot = 0; slot < graph.num_nodes() * r; ++slot) {
    const int64_t c = count[static_cast<size_t>(slot)];
    for (int64_t f = 0; f < width; ++f) {
      const double v = acc[at(slot, width, f)];
      out[at(slot, width, f)] =
          static_cast<float>(reduce == Reduce::kMean && c > 0 ? v / static_cast<double>(c) : v);
    }
  }
}

void aggregate_by_relation_backward(const float* grad_out, int64_t width, const Graph& graph,
                                    Reduce reduce, float* grad_x) {
  const int64_t r = graph.num_relations();
  const std::vector<int64_t> count = relation_counts(graph);
  std::vector<double> acc(static_cast<size_t>(graph.num_nodes() * width), 0.0);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    const int64_t slot = graph.dst()[k] * r + graph.edge_type()[k];
    const double scale =
        reduce == Reduce::kMean ? 1.0 / static_cast<double>(count[static_cast<size_t>(slot)]) : 1.0;
    for (int64_t f = 0; f < width; ++f)
      acc[at(graph.src()[k], width, f)] += scale * grad_out[at(slot, width, f)];
  }
  for (size_t k = 0; k < acc.size(); ++k)
    grad_x[k] = static_cast<float>(acc[k]);
}

void aggregate_relation_slots_forward(const float* x_rel, int64_t width, const Graph& graph,
                                      Reduce reduce, float* out) {
  const int64_t r = graph.num_relations();
  const std::vector<int64_t> count = relation_counts(graph);
  std::vector<double> acc(static_cast<size_t>(graph.num_nodes() * width), 0.0);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    const int64_t type = graph.edge_type()[k];
    const int64_t slot = graph.dst()[k] * r + type;
    const double scale =
        reduce == Reduce::kMean ? 1.0 / static_cast<double>(count[static_cast<size_t>(slot)]) : 1.0;
    for (int64_t f = 0; f < width; ++f)
      acc[at(graph.dst()[k], width, f)] += scale * x_rel[at(graph.src()[k] * r + type, width, f)];
  }
  for (size_t k = 0; k < acc.size(); ++k)
    out[k] = static_cast<float>(acc[k]);
}

void aggregate_relation_slots_backward(const float* grad_out, int64_t width, const Graph& graph,
                                       Reduce reduce, float* grad_x_rel) {
  const int64_t r = graph.num_relations();
  const std::vector<int64_t> count = relation_counts(graph);
  std::vector<double> acc(static_cast<size_t>(graph.num_nodes() * r * width), 0.0);
  for (int64_t e = 0; e < graph.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    const int64_t type = graph.edge_type()[k];
    const int64_t slot = graph.dst()[k] * r + type;
    const double scale =
        reduce == Reduce::kMean ? 1.0 / static_cast<double>(count[static_cast<size_t>(slot)]) : 1.0;
    for (int64_t f = 0; f < width; ++f)
      acc[at(graph.src()[k] * r + type, width, f)] +=
          scale * grad_out[at(graph.dst()[k], width, f)];
  }
  for (size_t k = 0; k < acc.size(); ++k)
    grad_x_rel[k] = static_cast<float>(acc[k]);
}

}  // namespace stgnn::reference
