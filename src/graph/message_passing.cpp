// Message-passing kernels (fast path) and the autograd ops around them. The parallel strategy is
// described in message_passing.h; the scalar references live in message_passing_reference.cpp.
//
// Vectorisation: every feature loop goes through the row primitives below, each a contiguous
// float loop under `#pragma omp simd` with __restrict operands. scripts/vectorization_report.sh
// (GCC's -fopt-info-vec-optimized plus the vectoriser's dump) must show these loops vectorised
// inside the hot kernels: row_add, row_axpy, row_scale in spmm_sum; row_scaled_copy and
// row_max_update in spmm_max; row_masked_axpy in max_backward_rows; row_dot and row_masked_dot in
// weight_gradient; row_scaled_copy and row_masked_scaled_copy in scatter_backward; row_sum2 in
// gather_add_forward. row_fill and row_copy become memset / memcpy calls. The edge-softmax loops
// run over heads (usually 1 to 8), where vectorising matters little.
#include "graph/message_passing.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "autograd/parallel.h"

namespace stgnn {

const char* reduce_name(Reduce reduce) {
  switch (reduce) {
    case Reduce::kSum:
      return "sum";
    case Reduce::kMean:
      return "mean";
    case Reduce::kMax:
      return "max";
  }
  return "?";
}

namespace {

// ---------------------------------------------------------------- row primitives (must vectorise)

inline void row_fill(float* __restrict o, float value, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] = value;
}

inline void row_copy(float* __restrict o, const float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] = x[f];
}

// o += x
inline void row_add(float* __restrict o, const float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] += x[f];
}

// o = a + b
inline void row_sum2(float* __restrict o, const float* __restrict a, const float* __restrict b,
                     int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] = a[f] + b[f];
}

// o += c * x
inline void row_axpy(float* __restrict o, float c, const float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] += c * x[f];
}

// o = c * x
inline void row_scaled_copy(float* __restrict o, float c, const float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] = c * x[f];
}

inline void row_scale(float* __restrict o, float c, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] *= c;
}

inline float row_dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t f = 0; f < n; ++f)
    s += a[f] * b[f];
  return s;
}

// best = max(best, c * x) elementwise, arg = e where c * x is strictly larger (so the first
// maximal edge keeps the arg on ties). Branch-free so that it vectorises as compare + blend.
inline void row_max_update(float* __restrict best, int32_t* __restrict arg, float c,
                           const float* __restrict x, int32_t e, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f) {
    const float v = c * x[f];
    const bool larger = v > best[f];
    best[f] = larger ? v : best[f];
    arg[f] = larger ? e : arg[f];
  }
}

// o += c * g where arg == e: the gradient of a max reaches only its arg-max edge.
inline void row_masked_axpy(float* __restrict o, const int32_t* __restrict arg, int32_t e, float c,
                            const float* __restrict g, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] += arg[f] == e ? c * g[f] : 0.0f;
}

// o = c * g where arg == e, else 0.
inline void row_masked_scaled_copy(float* __restrict o, const int32_t* __restrict arg, int32_t e,
                                   float c, const float* __restrict g, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f)
    o[f] = arg[f] == e ? c * g[f] : 0.0f;
}

inline float row_masked_dot(const int32_t* __restrict arg, int32_t e, const float* __restrict g,
                            const float* __restrict x, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t f = 0; f < n; ++f)
    s += arg[f] == e ? g[f] * x[f] : 0.0f;
  return s;
}

// ---------------------------------------------------------------- edge-balanced row partition

// The smallest row r in [0, rows] whose prefix cost row_ptr[r] + r reaches `target`.
int64_t first_row_with_cost(const int32_t* row_ptr, int64_t rows, int64_t target) {
  int64_t lo = 0, hi = rows;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(row_ptr[mid]) + mid < target) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Runs fn(row_begin, row_end) over one contiguous range of CSR rows per thread, the ranges cut so
// that each holds about the same number of edges + rows (row r costs its edges plus one for
// writing it). Safe to run in parallel because every kernel writes only the rows it is given.
template <typename Fn>
void parallel_rows(const int32_t* row_ptr, int64_t rows, int64_t width, const Fn& fn) {
  if (rows <= 0) return;
  const int64_t cost = static_cast<int64_t>(row_ptr[rows]) + rows;
  const int64_t max_threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t threads = std::max<int64_t>(
      1, std::min(max_threads, cost * std::max<int64_t>(1, width) / kElementwiseGrain));
  if (threads <= 1) {
    fn(int64_t{0}, rows);
    return;
  }
#pragma omp parallel num_threads(static_cast <int>(threads))
  {
    const int64_t t = omp_get_thread_num();
    const int64_t nt = omp_get_num_threads();
    const int64_t begin = first_row_with_cost(row_ptr, rows, cost * t / nt);
    const int64_t end =
        t + 1 == nt ? rows : first_row_with_cost(row_ptr, rows, cost * (t + 1) / nt);
    if (begin < end) fn(begin, end);
  }
}

// Asks for the input row read kPrefetchDistance positions ahead: the gathers are random, so the
// hardware prefetcher cannot guess them, and a row is a few cache lines.
constexpr int32_t kPrefetchDistance = 16;
inline void prefetch_row(const float* row, int64_t width) {
  for (int64_t f = 0; f < width; f += 16)
    __builtin_prefetch(row + f);
}

// Edges per thread chunk for edge-parallel loops over rows of `width` floats.
int64_t edge_grain(int64_t width) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, width));
}

// ---------------------------------------------------------------- SpMM with sum

// out[r] (rows x slots x width) = sum over CSR positions k of row r of
//   coef(k, h) * in[in_row[k]] added into slot out_slot[k] (slot 0 when null),
// then slot s of row r scaled by row_scale[r * slots + s] when given.
// coef(k, h) = weights[edge[k], h] (1 when no weights) * position_coef[k] (1 when null).
struct SumPlan {
  const int32_t* row_ptr = nullptr;
  int64_t rows = 0;
  const int32_t* in_row = nullptr;
  const int32_t* out_slot = nullptr;
  int64_t slots = 1;
  const int32_t* edge = nullptr;
  EdgeWeights weights;
  const float* position_coef = nullptr;
  const float* row_scale = nullptr;
};

void spmm_sum(const SumPlan& p, const float* in, int64_t width, float* out) {
  const int64_t heads = p.weights.heads;
  const int64_t head_width = width / heads;
  const float* w = p.weights.data;
  parallel_rows(p.row_ptr, p.rows, width * p.slots, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* o = out + r * p.slots * width;
      row_fill(o, 0.0f, p.slots * width);
      for (int32_t k = p.row_ptr[r]; k < p.row_ptr[r + 1]; ++k) {
        if (k + kPrefetchDistance < p.row_ptr[p.rows]) {
          prefetch_row(in + static_cast<int64_t>(p.in_row[k + kPrefetchDistance]) * width, width);
        }
        const float* x = in + static_cast<int64_t>(p.in_row[k]) * width;
        float* ok = p.out_slot ? o + static_cast<int64_t>(p.out_slot[k]) * width : o;
        const float c = p.position_coef ? p.position_coef[k] : 1.0f;
        if (!w) {
          if (p.position_coef) {
            row_axpy(ok, c, x, width);
          } else {
            row_add(ok, x, width);
          }
        } else {
          const float* we = w + static_cast<int64_t>(p.edge[k]) * heads;
          for (int64_t h = 0; h < heads; ++h)
            row_axpy(ok + h * head_width, c * we[h], x + h * head_width, head_width);
        }
      }
      if (p.row_scale) {
        for (int64_t s = 0; s < p.slots; ++s)
          row_scale(o + s * width, p.row_scale[r * p.slots + s], width);
      }
    }
  });
}

// ---------------------------------------------------------------- SpMM with max

// out[r] = max over positions k of row r of weights[edge[k], h] * in[in_row[k]], arg = the edge
// id of the first maximal position; rows without positions give out 0, arg -1.
void spmm_max(const int32_t* row_ptr, int64_t rows, const int32_t* in_row, const int32_t* edge,
              EdgeWeights weights, const float* in, int64_t width, float* out, int32_t* arg) {
  const int64_t heads = weights.heads;
  const int64_t head_width = width / heads;
  parallel_rows(row_ptr, rows, width, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* o = out + r * width;
      int32_t* a = arg + r * width;
      const int32_t begin = row_ptr[r], end = row_ptr[r + 1];
      if (begin == end) {
        row_fill(o, 0.0f, width);
        std::fill(a, a + width, -1);
        continue;
      }
      // The first edge initialises the row, so that any finite value (even -inf) has an arg.
      for (int32_t k = begin; k < end; ++k) {
        if (k + kPrefetchDistance < row_ptr[rows]) {
          prefetch_row(in + static_cast<int64_t>(in_row[k + kPrefetchDistance]) * width, width);
        }
        const float* x = in + static_cast<int64_t>(in_row[k]) * width;
        const int32_t e = edge[k];
        for (int64_t h = 0; h < heads; ++h) {
          const float c = weights.data ? weights.data[static_cast<int64_t>(e) * heads + h] : 1.0f;
          const int64_t off = h * head_width;
          if (k == begin) {
            row_scaled_copy(o + off, c, x + off, head_width);
            std::fill(a + off, a + off + head_width, e);
          } else {
            row_max_update(o + off, a + off, c, x + off, e, head_width);
          }
        }
      }
    }
  });
}

// grad_in[j] = sum over out-CSR positions k of row j (edge e = edge[k] into i = dst[k]) of
//   weights[e, h] * grad_out[i] where arg[i] == e.
void max_backward_rows(const Csr& out_csr, int64_t rows, EdgeWeights weights, const int32_t* arg,
                       const float* grad_out, int64_t width, float* grad_in) {
  const int64_t heads = weights.heads;
  const int64_t head_width = width / heads;
  parallel_rows(out_csr.row_ptr.data(), rows, width, [&](int64_t r0, int64_t r1) {
    for (int64_t j = r0; j < r1; ++j) {
      float* o = grad_in + j * width;
      row_fill(o, 0.0f, width);
      for (int32_t k = out_csr.row_ptr[static_cast<size_t>(j)];
           k < out_csr.row_ptr[static_cast<size_t>(j) + 1]; ++k) {
        const int32_t e = out_csr.edge[static_cast<size_t>(k)];
        const int64_t i = out_csr.node[static_cast<size_t>(k)];
        if (k + kPrefetchDistance < out_csr.row_ptr.back()) {
          const int64_t ahead = out_csr.node[static_cast<size_t>(k + kPrefetchDistance)];
          prefetch_row(grad_out + ahead * width, width);
          prefetch_row(reinterpret_cast<const float*>(arg + ahead * width), width);
        }
        for (int64_t h = 0; h < heads; ++h) {
          const float c = weights.data ? weights.data[static_cast<int64_t>(e) * heads + h] : 1.0f;
          const int64_t off = i * width + h * head_width;
          row_masked_axpy(o + h * head_width, arg + off, e, c, grad_out + off, head_width);
        }
      }
    }
  });
}

// 1 / in-degree per node (0 for nodes without in-edges, which receive nothing anyway).
std::vector<float> inverse_in_degree(const Graph& graph) {
  const std::vector<int32_t>& ptr = graph.in_csr().row_ptr;
  std::vector<float> inv(static_cast<size_t>(graph.num_nodes()));
  for (size_t i = 0; i < inv.size(); ++i) {
    const int32_t d = ptr[i + 1] - ptr[i];
    inv[i] = d > 0 ? 1.0f / static_cast<float>(d) : 0.0f;
  }
  return inv;
}

// 1 / (number of in-edges of relation r) per (node, relation), [N * R].
std::vector<float> inverse_relation_count(const Graph& graph) {
  const int64_t relations = graph.num_relations();
  std::vector<float> inv(static_cast<size_t>(graph.num_nodes() * relations), 0.0f);
  const std::vector<int32_t>& dst = graph.dst();
  const std::vector<int32_t>& type = graph.edge_type();
  for (size_t e = 0; e < dst.size(); ++e)
    inv[static_cast<size_t>(dst[e] * relations + type[e])] += 1.0f;
  for (float& v : inv)
    v = v > 0.0f ? 1.0f / v : 0.0f;
  return inv;
}

// The weights' edge-parallel gradient (SDDMM): for each edge e and head h,
//   grad_weight[e, h] = scale(dst e) * dot(grad_out[dst e, h], input(e)[h])
// with input(e) = in[in_row_of_edge[e]] (or in[e] when null), masked to arg == e for kMax.
void weight_gradient(const float* grad_out, const float* in, const int32_t* in_row_of_edge,
                     int64_t width, const Graph& graph, Reduce reduce, int64_t heads,
                     const int32_t* arg, const float* inv_deg, float* grad_weight) {
  const int64_t head_width = width / heads;
  const std::vector<int32_t>& dst = graph.dst();
  parallel_for(graph.num_edges(), edge_grain(width), [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t i = dst[static_cast<size_t>(e)];
      const float* x = in + (in_row_of_edge ? static_cast<int64_t>(in_row_of_edge[e]) : e) * width;
      const float* g = grad_out + i * width;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t off = h * head_width;
        float s;
        if (reduce == Reduce::kMax) {
          s = row_masked_dot(arg + i * width + off, static_cast<int32_t>(e), g + off, x + off,
                             head_width);
        } else {
          s = row_dot(g + off, x + off, head_width);
          if (reduce == Reduce::kMean) s *= inv_deg[i];
        }
        grad_weight[e * heads + h] = s;
      }
    }
  });
}

// The relational kernels index (node, relation) slots as int32 rows of an [N * R, F] view.
void require_sum_or_mean(Reduce reduce, const Graph& graph, const char* op) {
  if (reduce == Reduce::kMax) {
    throw ValueError(std::string(op) + ": reduce 'max' is not supported (use sum or mean)");
  }
  if (graph.num_nodes() * graph.num_relations() > std::numeric_limits<int32_t>::max()) {
    throw ValueError(std::string(op) + ": " + std::to_string(graph.num_nodes()) + " nodes x " +
                     std::to_string(graph.num_relations()) +
                     " relations exceed the int32 slot index");
  }
}

}  // namespace

// ---------------------------------------------------------------- kernels

namespace kernels {

void gather_forward(const float* x, int64_t width, const Graph& graph, EdgeEnd end, float* out) {
  const int32_t* node = end == EdgeEnd::kSource ? graph.src().data() : graph.dst().data();
  parallel_for(graph.num_edges(), edge_grain(width), [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      if (e + kPrefetchDistance < e1) {
        prefetch_row(x + static_cast<int64_t>(node[e + kPrefetchDistance]) * width, width);
      }
      row_copy(out + e * width, x + static_cast<int64_t>(node[e]) * width, width);
    }
  });
}

void gather_backward(const float* grad_out, int64_t width, const Graph& graph, EdgeEnd end,
                     float* grad_x) {
  const Csr& csr = end == EdgeEnd::kSource ? graph.out_csr() : graph.in_csr();
  SumPlan p;
  p.row_ptr = csr.row_ptr.data();
  p.rows = graph.num_nodes();
  p.in_row = csr.edge.data();
  spmm_sum(p, grad_out, width, grad_x);
}

void gather_add_forward(const float* at_source, const float* at_destination, int64_t width,
                        const Graph& graph, float* out) {
  const int32_t* src = graph.src().data();
  const int32_t* dst = graph.dst().data();
  parallel_for(graph.num_edges(), edge_grain(width), [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      if (e + kPrefetchDistance < e1) {
        prefetch_row(at_source + static_cast<int64_t>(src[e + kPrefetchDistance]) * width, width);
      }
      row_sum2(out + e * width, at_source + static_cast<int64_t>(src[e]) * width,
               at_destination + static_cast<int64_t>(dst[e]) * width, width);
    }
  });
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
  const Csr& in = graph.in_csr();
  if (reduce == Reduce::kMax) {
    spmm_max(in.row_ptr.data(), graph.num_nodes(), in.node.data(), in.edge.data(), weights, x,
             width, out, arg);
    return;
  }
  const std::vector<float> inv_deg =
      reduce == Reduce::kMean ? inverse_in_degree(graph) : std::vector<float>();
  SumPlan p;
  p.row_ptr = in.row_ptr.data();
  p.rows = graph.num_nodes();
  p.in_row = in.node.data();
  p.edge = in.edge.data();
  p.weights = weights;
  p.row_scale = reduce == Reduce::kMean ? inv_deg.data() : nullptr;
  spmm_sum(p, x, width, out);
}

void aggregate_backward(const float* grad_out, const float* x, int64_t width, const Graph& graph,
                        Reduce reduce, EdgeWeights weights, const int32_t* arg, float* grad_x,
                        float* grad_weight) {
  const Csr& out_csr = graph.out_csr();
  const std::vector<float> inv_deg =
      reduce == Reduce::kMean ? inverse_in_degree(graph) : std::vector<float>();
  if (grad_x) {
    if (reduce == Reduce::kMax) {
      max_backward_rows(out_csr, graph.num_nodes(), weights, arg, grad_out, width, grad_x);
    } else {
      // The transposed SpMM: source j collects w_e * grad_out[dst e] (/ deg(dst e) for mean).
      std::vector<float> coef;
      if (reduce == Reduce::kMean) {
        coef.resize(out_csr.node.size());
        for (size_t k = 0; k < coef.size(); ++k)
          coef[k] = inv_deg[static_cast<size_t>(out_csr.node[k])];
      }
      SumPlan p;
      p.row_ptr = out_csr.row_ptr.data();
      p.rows = graph.num_nodes();
      p.in_row = out_csr.node.data();
      p.edge = out_csr.edge.data();
      p.weights = weights;
      p.position_coef = coef.empty() ? nullptr : coef.data();
      spmm_sum(p, grad_out, width, grad_x);
    }
  }
  if (grad_weight) {
    weight_gradient(grad_out, x, graph.src().data(), width, graph, reduce, weights.heads, arg,
                    inv_deg.data(), grad_weight);
  }
}

void scatter_forward(const float* messages, int64_t width, const Graph& graph, Reduce reduce,
                     EdgeWeights weights, float* out, int32_t* arg) {
  const Csr& in = graph.in_csr();
  if (reduce == Reduce::kMax) {
    spmm_max(in.row_ptr.data(), graph.num_nodes(), in.edge.data(), in.edge.data(), weights,
             messages, width, out, arg);
    return;
  }
  const std::vector<float> inv_deg =
      reduce == Reduce::kMean ? inverse_in_degree(graph) : std::vector<float>();
  SumPlan p;
  p.row_ptr = in.row_ptr.data();
  p.rows = graph.num_nodes();
  p.in_row = in.edge.data();
  p.edge = in.edge.data();
  p.weights = weights;
  p.row_scale = reduce == Reduce::kMean ? inv_deg.data() : nullptr;
  spmm_sum(p, messages, width, out);
}

void scatter_backward(const float* grad_out, const float* messages, int64_t width,
                      const Graph& graph, Reduce reduce, EdgeWeights weights, const int32_t* arg,
                      float* grad_messages, float* grad_weight) {
  const std::vector<float> inv_deg =
      reduce == Reduce::kMean ? inverse_in_degree(graph) : std::vector<float>();
  if (grad_messages) {
    // Each edge reads its destination's gradient: edge-parallel, no conflicts.
    const int64_t heads = weights.heads;
    const int64_t head_width = width / heads;
    const int32_t* dst = graph.dst().data();
    parallel_for(graph.num_edges(), edge_grain(width), [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        const int64_t i = dst[e];
        const float scale = reduce == Reduce::kMean ? inv_deg[static_cast<size_t>(i)] : 1.0f;
        for (int64_t h = 0; h < heads; ++h) {
          const float c = scale * (weights.data ? weights.data[e * heads + h] : 1.0f);
          const int64_t off = h * head_width;
          float* o = grad_messages + e * width + off;
          if (reduce == Reduce::kMax) {
            row_masked_scaled_copy(o, arg + i * width + off, static_cast<int32_t>(e), c,
                                   grad_out + i * width + off, head_width);
          } else {
            row_scaled_copy(o, c, grad_out + i * width + off, head_width);
          }
        }
      }
    });
  }
  if (grad_weight) {
    weight_gradient(grad_out, messages, nullptr, width, graph, reduce, weights.heads, arg,
                    inv_deg.data(), grad_weight);
  }
}

void edge_softmax_forward(const float* scores, int64_t heads, const Graph& graph, float* out) {
  const Csr& in = graph.in_csr();
  parallel_rows(in.row_ptr.data(), graph.num_nodes(), heads, [&](int64_t r0, int64_t r1) {
    // The sums run in double: a hub row of a power-law graph has thousands of terms, and a float
    // sum drifts by more than 1e-5 there (the rows would no longer sum to one).
    std::vector<float> row_max(static_cast<size_t>(heads));
    std::vector<double> row_sum(static_cast<size_t>(heads));
    for (int64_t i = r0; i < r1; ++i) {
      const int32_t begin = in.row_ptr[static_cast<size_t>(i)];
      const int32_t end = in.row_ptr[static_cast<size_t>(i) + 1];
      if (begin == end) continue;
      std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<float>::infinity());
      std::fill(row_sum.begin(), row_sum.end(), 0.0);
      for (int32_t k = begin; k < end; ++k) {
        const float* s = scores + static_cast<int64_t>(in.edge[static_cast<size_t>(k)]) * heads;
        for (int64_t h = 0; h < heads; ++h)
          row_max[static_cast<size_t>(h)] = std::max(row_max[static_cast<size_t>(h)], s[h]);
      }
      for (int32_t k = begin; k < end; ++k) {
        const int64_t e = in.edge[static_cast<size_t>(k)];
        for (int64_t h = 0; h < heads; ++h) {
          const float v = std::exp(scores[e * heads + h] - row_max[static_cast<size_t>(h)]);
          out[e * heads + h] = v;
          row_sum[static_cast<size_t>(h)] += v;
        }
      }
      for (int64_t h = 0; h < heads; ++h)
        row_sum[static_cast<size_t>(h)] = 1.0 / row_sum[static_cast<size_t>(h)];
      for (int32_t k = begin; k < end; ++k) {
        const int64_t e = in.edge[static_cast<size_t>(k)];
        for (int64_t h = 0; h < heads; ++h) {
          out[e * heads + h] =
              static_cast<float>(out[e * heads + h] * row_sum[static_cast<size_t>(h)]);
        }
      }
    }
  });
}

void edge_softmax_backward(const float* out, const float* grad_out, int64_t heads,
                           const Graph& graph, float* grad_scores) {
  const Csr& in = graph.in_csr();
  parallel_rows(in.row_ptr.data(), graph.num_nodes(), heads, [&](int64_t r0, int64_t r1) {
    // In double for the same reason as the forward's row sums: hub rows are long.
    std::vector<double> dot(static_cast<size_t>(heads));
    for (int64_t i = r0; i < r1; ++i) {
      const int32_t begin = in.row_ptr[static_cast<size_t>(i)];
      const int32_t end = in.row_ptr[static_cast<size_t>(i) + 1];
      std::fill(dot.begin(), dot.end(), 0.0);
      for (int32_t k = begin; k < end; ++k) {
        const int64_t e = in.edge[static_cast<size_t>(k)];
        for (int64_t h = 0; h < heads; ++h) {
          dot[static_cast<size_t>(h)] +=
              static_cast<double>(out[e * heads + h]) * grad_out[e * heads + h];
        }
      }
      for (int32_t k = begin; k < end; ++k) {
        const int64_t e = in.edge[static_cast<size_t>(k)];
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t idx = e * heads + h;
          grad_scores[idx] =
              static_cast<float>(out[idx] * (grad_out[idx] - dot[static_cast<size_t>(h)]));
        }
      }
    }
  });
}

void aggregate_by_relation_forward(const float* x, int64_t width, const Graph& graph, Reduce reduce,
                                   float* out) {
  require_sum_or_mean(reduce, graph, "aggregate_by_relation");
  const Csr& in = graph.in_csr();
  const std::vector<int32_t>& type = graph.edge_type();
  std::vector<int32_t> slot(in.edge.size());
  for (size_t k = 0; k < slot.size(); ++k)
    slot[k] = type[static_cast<size_t>(in.edge[k])];
  const std::vector<float> inv_count =
      reduce == Reduce::kMean ? inverse_relation_count(graph) : std::vector<float>();
  SumPlan p;
  p.row_ptr = in.row_ptr.data();
  p.rows = graph.num_nodes();
  p.in_row = in.node.data();
  p.out_slot = slot.data();
  p.slots = graph.num_relations();
  p.row_scale = reduce == Reduce::kMean ? inv_count.data() : nullptr;
  spmm_sum(p, x, width, out);
}

void aggregate_by_relation_backward(const float* grad_out, int64_t width, const Graph& graph,
                                    Reduce reduce, float* grad_x) {
  require_sum_or_mean(reduce, graph, "aggregate_by_relation");
  // Source j collects grad_out[dst e, type e] (/ count) over its out-edges: grad_out viewed as
  // [N * R, F] rows.
  const Csr& out_csr = graph.out_csr();
  const std::vector<int32_t>& type = graph.edge_type();
  const int64_t relations = graph.num_relations();
  const std::vector<float> inv_count =
      reduce == Reduce::kMean ? inverse_relation_count(graph) : std::vector<float>();
  std::vector<int32_t> row(out_csr.edge.size());
  std::vector<float> coef(reduce == Reduce::kMean ? row.size() : 0);
  for (size_t k = 0; k < row.size(); ++k) {
    row[k] = static_cast<int32_t>(out_csr.node[k] * relations +
                                  type[static_cast<size_t>(out_csr.edge[k])]);
    if (!coef.empty()) coef[k] = inv_count[static_cast<size_t>(row[k])];
  }
  SumPlan p;
  p.row_ptr = out_csr.row_ptr.data();
  p.rows = graph.num_nodes();
  p.in_row = row.data();
  p.position_coef = coef.empty() ? nullptr : coef.data();
  spmm_sum(p, grad_out, width, grad_x);
}

void aggregate_relation_slots_forward(const float* x_rel, int64_t width, const Graph& graph,
                                      Reduce reduce, float* out) {
  require_sum_or_mean(reduce, graph, "aggregate_relation_slots");
  const Csr& in = graph.in_csr();
  const std::vector<int32_t>& type = graph.edge_type();
  const int64_t relations = graph.num_relations();
  const std::vector<float> inv_count =
      reduce == Reduce::kMean ? inverse_relation_count(graph) : std::vector<float>();
  std::vector<int32_t> row(in.edge.size());
  std::vector<float> coef(reduce == Reduce::kMean ? row.size() : 0);
  for (int64_t i = 0; i < graph.num_nodes(); ++i) {
    for (int32_t k = in.row_ptr[static_cast<size_t>(i)]; k < in.row_ptr[static_cast<size_t>(i) + 1];
         ++k) {
      const int32_t r = type[static_cast<size_t>(in.edge[static_cast<size_t>(k)])];
      row[static_cast<size_t>(k)] =
          static_cast<int32_t>(in.node[static_cast<size_t>(k)] * relations + r);
      if (!coef.empty())
        coef[static_cast<size_t>(k)] = inv_count[static_cast<size_t>(i * relations + r)];
    }
  }
  SumPlan p;
  p.row_ptr = in.row_ptr.data();
  p.rows = graph.num_nodes();
  p.in_row = row.data();
  p.position_coef = coef.empty() ? nullptr : coef.data();
  spmm_sum(p, x_rel, width, out);
}

void aggregate_relation_slots_backward(const float* grad_out, int64_t width, const Graph& graph,
                                       Reduce reduce, float* grad_x_rel) {
  require_sum_or_mean(reduce, graph, "aggregate_relation_slots");
  // Source j's slot r collects grad_out[dst e] (/ count) over its out-edges of relation r.
  const Csr& out_csr = graph.out_csr();
  const std::vector<int32_t>& type = graph.edge_type();
  const int64_t relations = graph.num_relations();
  const std::vector<float> inv_count =
      reduce == Reduce::kMean ? inverse_relation_count(graph) : std::vector<float>();
  std::vector<int32_t> slot(out_csr.edge.size());
  std::vector<float> coef(reduce == Reduce::kMean ? slot.size() : 0);
  for (size_t k = 0; k < slot.size(); ++k) {
    slot[k] = type[static_cast<size_t>(out_csr.edge[k])];
    if (!coef.empty()) {
      coef[k] = inv_count[static_cast<size_t>(out_csr.node[k] * relations + slot[k])];
    }
  }
  SumPlan p;
  p.row_ptr = out_csr.row_ptr.data();
  p.rows = graph.num_nodes();
  p.in_row = out_csr.node.data();
  p.out_slot = slot.data();
  p.slots = relations;
  p.position_coef = coef.empty() ? nullptr : coef.data();
  spmm_sum(p, grad_out, width, grad_x_rel);
}

}  // namespace kernels

// ---------------------------------------------------------------- autograd ops

namespace {

void require_node_rows(const Tensor& x, const Graph& graph, const char* op, const char* what) {
  if (x.dim() != 2 || x.size(0) != graph.num_nodes()) {
    throw ShapeError(std::string(op) + ": " + what + " " + shape_str(x.shape()) + " must be [" +
                     std::to_string(graph.num_nodes()) + ", F] for a graph of " +
                     std::to_string(graph.num_nodes()) + " nodes");
  }
}

void require_edge_rows(const Tensor& x, const Graph& graph, const char* op, const char* what) {
  if (x.dim() != 2 || x.size(0) != graph.num_edges()) {
    throw ShapeError(std::string(op) + ": " + what + " " + shape_str(x.shape()) + " must be [" +
                     std::to_string(graph.num_edges()) + ", F] for a graph of " +
                     std::to_string(graph.num_edges()) + " edges");
  }
}

// Validates an optional [E] or [E, H] weight against width F and returns its kernel view.
EdgeWeights edge_weights(const Tensor& w, const Graph& graph, int64_t width, const char* op) {
  EdgeWeights view;
  if (!w.defined()) return view;
  const bool shape_ok = (w.dim() == 1 || w.dim() == 2) && w.size(0) == graph.num_edges() &&
                        (w.dim() == 1 || (w.size(1) >= 1 && width % w.size(1) == 0));
  if (!shape_ok) {
    throw ShapeError(std::string(op) + ": edge_weight " + shape_str(w.shape()) + " must be [" +
                     std::to_string(graph.num_edges()) + "] or [" +
                     std::to_string(graph.num_edges()) + ", H] with H dividing the " +
                     std::to_string(width) + " features");
  }
  view.data = w.data();
  view.heads = w.dim() == 2 ? w.size(1) : 1;
  return view;
}

std::shared_ptr<std::vector<int32_t>> make_arg(Reduce reduce, int64_t size) {
  if (reduce != Reduce::kMax) return nullptr;
  return std::make_shared<std::vector<int32_t>>(static_cast<size_t>(size));
}

float* data_or_null(Tensor& t) {
  return t.defined() ? t.data() : nullptr;
}

}  // namespace

Tensor gather(const Tensor& x, const Graph& graph, EdgeEnd end) {
  require_node_rows(x, graph, "gather", "x");
  const int64_t width = x.size(1);
  Tensor out = Tensor::empty({graph.num_edges(), width});
  kernels::gather_forward(x.data(), width, graph, end, out.data());
  return Tensor::make_result(out, "gather", {x},
                             [x, graph, end, width](const Tensor&, const Tensor& g) {
                               Tensor gx = Tensor::empty(x.shape());
                               kernels::gather_backward(g.data(), width, graph, end, gx.data());
                               x.accumulate_grad(gx);
                             });
}

Tensor gather_add(const Tensor& at_source, const Tensor& at_destination, const Graph& graph) {
  require_node_rows(at_source, graph, "gather_add", "at_source");
  require_node_rows(at_destination, graph, "gather_add", "at_destination");
  if (at_source.shape() != at_destination.shape()) {
    throw ShapeError("gather_add: at_source " + shape_str(at_source.shape()) +
                     " and at_destination " + shape_str(at_destination.shape()) + " differ");
  }
  const int64_t width = at_source.size(1);
  Tensor out = Tensor::empty({graph.num_edges(), width});
  kernels::gather_add_forward(at_source.data(), at_destination.data(), width, graph, out.data());
  return Tensor::make_result(
      out, "gather_add", {at_source, at_destination},
      [at_source, at_destination, graph, width](const Tensor&, const Tensor& g) {
        Tensor gs = at_source.requires_grad() ? Tensor::empty(at_source.shape()) : Tensor();
        Tensor gd =
            at_destination.requires_grad() ? Tensor::empty(at_destination.shape()) : Tensor();
        kernels::gather_add_backward(g.data(), width, graph, data_or_null(gs), data_or_null(gd));
        if (gs.defined()) at_source.accumulate_grad(gs);
        if (gd.defined()) at_destination.accumulate_grad(gd);
      });
}

Tensor gat_edge_scores(const Tensor& el, const Tensor& er, const Graph& graph) {
  return gather_add(el, er, graph);
}

Tensor aggregate(const Tensor& x, const Graph& graph, Reduce reduce, const Tensor& edge_weight) {
  require_node_rows(x, graph, "aggregate", "x");
  const int64_t width = x.size(1);
  const EdgeWeights weights = edge_weights(edge_weight, graph, width, "aggregate");
  Tensor out = Tensor::empty({graph.num_nodes(), width});
  auto arg = make_arg(reduce, out.numel());
  kernels::aggregate_forward(x.data(), width, graph, reduce, weights, out.data(),
                             arg ? arg->data() : nullptr);
  return Tensor::make_result(
      out, std::string("aggregate_") + reduce_name(reduce), {x, edge_weight},
      [x, edge_weight, graph, reduce, arg, width](const Tensor&, const Tensor& g) {
        const EdgeWeights w = edge_weights(edge_weight, graph, width, "aggregate");
        Tensor gx = x.requires_grad() ? Tensor::empty(x.shape()) : Tensor();
        Tensor gw = edge_weight.requires_grad() ? Tensor::empty(edge_weight.shape()) : Tensor();
        kernels::aggregate_backward(g.data(), x.data(), width, graph, reduce, w,
                                    arg ? arg->data() : nullptr, data_or_null(gx),
                                    data_or_null(gw));
        if (gx.defined()) x.accumulate_grad(gx);
        if (gw.defined()) edge_weight.accumulate_grad(gw);
      });
}

Tensor scatter(const Tensor& messages, const Graph& graph, Reduce reduce,
               const Tensor& edge_weight) {
  require_edge_rows(messages, graph, "scatter", "messages");
  const int64_t width = messages.size(1);
  const EdgeWeights weights = edge_weights(edge_weight, graph, width, "scatter");
  Tensor out = Tensor::empty({graph.num_nodes(), width});
  auto arg = make_arg(reduce, out.numel());
  kernels::scatter_forward(messages.data(), width, graph, reduce, weights, out.data(),
                           arg ? arg->data() : nullptr);
  return Tensor::make_result(
      out, std::string("scatter_") + reduce_name(reduce), {messages, edge_weight},
      [messages, edge_weight, graph, reduce, arg, width](const Tensor&, const Tensor& g) {
        const EdgeWeights w = edge_weights(edge_weight, graph, width, "scatter");
        Tensor gm = messages.requires_grad() ? Tensor::empty(messages.shape()) : Tensor();
        Tensor gw = edge_weight.requires_grad() ? Tensor::empty(edge_weight.shape()) : Tensor();
        kernels::scatter_backward(g.data(), messages.data(), width, graph, reduce, w,
                                  arg ? arg->data() : nullptr, data_or_null(gm), data_or_null(gw));
        if (gm.defined()) messages.accumulate_grad(gm);
        if (gw.defined()) edge_weight.accumulate_grad(gw);
      });
}

Tensor edge_softmax(const Tensor& scores, const Graph& graph) {
  if ((scores.dim() != 1 && scores.dim() != 2) || scores.size(0) != graph.num_edges() ||
      (scores.dim() == 2 && scores.size(1) < 1)) {
    throw ShapeError("edge_softmax: scores " + shape_str(scores.shape()) + " must be [" +
                     std::to_string(graph.num_edges()) + "] or [" +
                     std::to_string(graph.num_edges()) + ", H]");
  }
  const int64_t heads = scores.dim() == 2 ? scores.size(1) : 1;
  Tensor out = Tensor::empty(scores.shape());
  kernels::edge_softmax_forward(scores.data(), heads, graph, out.data());
  return Tensor::make_result(
      out, "edge_softmax", {scores}, [scores, graph, heads](const Tensor& s, const Tensor& g) {
        Tensor gs = Tensor::empty(scores.shape());
        kernels::edge_softmax_backward(s.data(), g.data(), heads, graph, gs.data());
        scores.accumulate_grad(gs);
      });
}

Tensor aggregate_by_relation(const Tensor& x, const Graph& graph, Reduce reduce) {
  require_node_rows(x, graph, "aggregate_by_relation", "x");
  require_sum_or_mean(reduce, graph, "aggregate_by_relation");
  const int64_t width = x.size(1);
  Tensor out = Tensor::empty({graph.num_nodes(), graph.num_relations(), width});
  kernels::aggregate_by_relation_forward(x.data(), width, graph, reduce, out.data());
  return Tensor::make_result(out, std::string("aggregate_by_relation_") + reduce_name(reduce), {x},
                             [x, graph, reduce, width](const Tensor&, const Tensor& g) {
                               Tensor gx = Tensor::empty(x.shape());
                               kernels::aggregate_by_relation_backward(g.data(), width, graph,
                                                                       reduce, gx.data());
                               x.accumulate_grad(gx);
                             });
}

Tensor aggregate_relation_slots(const Tensor& x_rel, const Graph& graph, Reduce reduce) {
  if (x_rel.dim() != 3 || x_rel.size(0) != graph.num_nodes() ||
      x_rel.size(1) != graph.num_relations()) {
    throw ShapeError("aggregate_relation_slots: x_rel " + shape_str(x_rel.shape()) + " must be [" +
                     std::to_string(graph.num_nodes()) + ", " +
                     std::to_string(graph.num_relations()) + ", F] (nodes, relations, features)");
  }
  require_sum_or_mean(reduce, graph, "aggregate_relation_slots");
  const int64_t width = x_rel.size(2);
  Tensor out = Tensor::empty({graph.num_nodes(), width});
  kernels::aggregate_relation_slots_forward(x_rel.data(), width, graph, reduce, out.data());
  return Tensor::make_result(
      out, std::string("aggregate_relation_slots_") + reduce_name(reduce), {x_rel},
      [x_rel, graph, reduce, width](const Tensor&, const Tensor& g) {
        Tensor gx = Tensor::empty(x_rel.shape());
        kernels::aggregate_relation_slots_backward(g.data(), width, graph, reduce, gx.data());
        x_rel.accumulate_grad(gx);
      });
}

}  // namespace stgnn
