// Graphs shared by the graph test files: the awkward cases every kernel must survive.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "autograd/rng.h"
#include "graph/graph.h"

namespace stgnn::testing {

struct NamedGraph {
  std::string name;
  Graph graph;
};

// E random edges over the first `active` of n nodes (the rest isolated); with few nodes this
// gives self loops and duplicate edges. Relations uniform in [0, relations) when relations > 0.
inline Graph random_graph(Rng& rng, int64_t n, int64_t active, int64_t e, int64_t relations = 0) {
  std::vector<int64_t> src, dst, type;
  for (int64_t k = 0; k < e; ++k) {
    src.push_back(rng.randint(0, active));
    dst.push_back(rng.randint(0, active));
    if (relations > 0) type.push_back(rng.randint(0, relations));
  }
  return Graph(n, src, dst, type, relations);
}

// Destinations drawn from a power law (node k with weight (k + 1)^-1.2, so node 0 is a hub with
// thousands of in-edges), sources uniform: the load-balancing case.
inline Graph power_law_graph(Rng& rng, int64_t n, int64_t e, int64_t relations = 0) {
  std::vector<double> cumulative(static_cast<size_t>(n));
  double total = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    total += std::pow(static_cast<double>(k + 1), -1.2);
    cumulative[static_cast<size_t>(k)] = total;
  }
  std::vector<int64_t> src, dst, type;
  for (int64_t k = 0; k < e; ++k) {
    const double u = rng.uniform_double() * total;
    const auto it = std::lower_bound(cumulative.begin(), cumulative.end(), u);
    dst.push_back(std::min<int64_t>(n - 1, it - cumulative.begin()));
    src.push_back(rng.randint(0, n));
    if (relations > 0) type.push_back(rng.randint(0, relations));
  }
  return Graph(n, src, dst, type, relations);
}

// The small cases: a single node with and without a self loop, edges-free nodes, a duplicate
// edge, a random multigraph with isolated nodes, and a temporal chain.
inline std::vector<NamedGraph> small_graphs(Rng& rng, int64_t relations = 0) {
  std::vector<int64_t> no_types;
  const auto types = [&](size_t e) {
    std::vector<int64_t> t;
    for (size_t k = 0; k < e && relations > 0; ++k)
      t.push_back(static_cast<int64_t>(k) % relations);
    return t;
  };
  std::vector<NamedGraph> graphs;
  graphs.push_back({"single node", Graph(1, {}, {}, {}, relations)});
  graphs.push_back({"single self loop", Graph(1, {0}, {0}, types(1), relations)});
  graphs.push_back({"no edges", Graph(4, {}, {}, {}, relations)});
  graphs.push_back(
      {"duplicate edges", Graph(3, {0, 0, 1, 2, 2}, {1, 1, 1, 2, 0}, types(5), relations)});
  graphs.push_back({"random multigraph", random_graph(rng, 9, 6, 30, relations)});
  graphs.push_back({"random sparse", random_graph(rng, 40, 35, 60, relations)});
  if (relations == 0) graphs.push_back({"temporal chain", temporal_chain(11, 2)});
  return graphs;
}

}  // namespace stgnn::testing
