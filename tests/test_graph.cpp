// Graph structure: CSR construction, validation, transforms, batching and the builders.
#include <doctest/doctest.h>

#include <set>
#include <utility>

#include "graph/graph.h"
#include "graph_test_graphs.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;

namespace {

// Every edge appears exactly once in each CSR, in its own row, ascending within the row.
void check_csr(const Graph& g) {
  for (const bool incoming : {true, false}) {
    const Csr& csr = incoming ? g.in_csr() : g.out_csr();
    REQUIRE(csr.row_ptr.size() == static_cast<size_t>(g.num_nodes() + 1));
    CHECK(csr.row_ptr.front() == 0);
    CHECK(csr.row_ptr.back() == g.num_edges());
    std::vector<int> seen(static_cast<size_t>(g.num_edges()), 0);
    for (int64_t r = 0; r < g.num_nodes(); ++r) {
      for (int32_t k = csr.row_ptr[static_cast<size_t>(r)];
           k < csr.row_ptr[static_cast<size_t>(r) + 1]; ++k) {
        const int32_t e = csr.edge[static_cast<size_t>(k)];
        ++seen[static_cast<size_t>(e)];
        const size_t ue = static_cast<size_t>(e);
        CHECK((incoming ? g.dst()[ue] : g.src()[ue]) == r);
        CHECK(csr.node[static_cast<size_t>(k)] == (incoming ? g.src()[ue] : g.dst()[ue]));
        if (k > csr.row_ptr[static_cast<size_t>(r)])
          CHECK(csr.edge[static_cast<size_t>(k) - 1] < e);
      }
    }
    for (int count : seen)
      CHECK(count == 1);
  }
}

std::set<std::pair<int32_t, int32_t>> edge_set(const Graph& g) {
  std::set<std::pair<int32_t, int32_t>> s;
  for (int64_t e = 0; e < g.num_edges(); ++e)
    s.insert({g.src()[static_cast<size_t>(e)], g.dst()[static_cast<size_t>(e)]});
  return s;
}

}  // namespace

TEST_CASE("CSR layouts list every edge once, by destination and by source") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  Rng rng(seed);
  for (const NamedGraph& ng : small_graphs(rng, 3)) {
    CAPTURE(ng.name);
    check_csr(ng.graph);
  }
  const Graph p = power_law_graph(rng, 500, 5000);
  check_csr(p);
  CHECK(p.in_degree(0) > p.in_degree(499));
  const Graph g(4, {0, 0, 3, 1}, {1, 2, 1, 1});
  CHECK(g.in_degree(1) == 3);
  CHECK(g.out_degree(0) == 2);
  CHECK(g.in_csr().edge == std::vector<int32_t>{0, 2, 3, 1});
  CHECK(g.in_csr().node == std::vector<int32_t>{0, 3, 1, 0});
  CHECK(g.num_relations() == 1);
  CHECK(!g.has_edge_types());
  CHECK(!g.has_edge_attr());
  CHECK(g.edge_type() == std::vector<int32_t>{0, 0, 0, 0});
  CHECK_THROWS_AS(g.in_degree(4), ValueError);
  const Graph empty;
  CHECK(empty.num_nodes() == 0);
  CHECK(empty.in_csr().row_ptr == std::vector<int32_t>{0});
}

TEST_CASE("graph validation names the offending edge or field") {
  const auto message = [](auto make) {
    try {
      make();
    } catch (const ValueError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(message([] {
          Graph(3, {0, 3}, {1, 1});
        }) == "Graph: source index 3 of edge 1 outside [0, 3)");
  CHECK(message([] {
          Graph(3, {0, 1}, {1, -2});
        }) == "Graph: destination index -2 of edge 1 is negative");
  CHECK(message([] { Graph(0, {0}, {0}); }) == "Graph: 0 nodes but 1 edges");
  CHECK(message([] { Graph(-1, {}, {}); }) == "Graph: negative node count -1");
  CHECK(message([] { Graph(3, {0, 1}, {1}); }) == "Graph: src has 2 entries, dst has 1");
  CHECK(message([] {
          Graph(3, {0, 1}, {1, 2}, {0});
        }) == "Graph: edge_type has 1 entries for 2 edges");
  CHECK(message([] {
          Graph(3, {0, 1}, {1, 2}, {}, 0, {1.0f, 2.0f, 3.0f});
        }) == "Graph: edge_attr has 3 entries for 2 edges");
  CHECK(message([] {
          Graph(3, {0, 1}, {1, 2}, {0, 2}, 2);
        }) == "Graph: edge type 2 of edge 1 outside [0, num_relations = 2)");
  CHECK(message([] {
          Graph(3, {0, 1}, {1, 2}, {0, -1});
        }) == "Graph: edge type -1 of edge 1 outside [0, num_relations = unset)");
  CHECK(message([] { Graph(3, {0}, {1}, {0}, -2); }) == "Graph: negative num_relations -2");
  CHECK(message([] { Graph(int64_t{1} << 32, {}, {}); }).find("int32") != std::string::npos);
  const Graph typed(3, {0, 1}, {1, 2}, {0, 4});
  CHECK(typed.num_relations() == 5);
  CHECK(typed.has_edge_types());
  CHECK_THROWS_AS(typed.edge_subgraph({true}), ValueError);
}

TEST_CASE("edge subgraphs and self-loop replacement carry types and attributes") {
  const Graph g(3, {0, 1, 1, 2}, {0, 2, 1, 0}, {1, 0, 1, 1}, 2, {0.5f, 1.5f, 2.5f, 3.5f});
  const Graph sub = g.edge_subgraph({false, true, false, true});
  CHECK(sub.src() == std::vector<int32_t>{1, 2});
  CHECK(sub.dst() == std::vector<int32_t>{2, 0});
  CHECK(sub.edge_type() == std::vector<int32_t>{0, 1});
  CHECK(sub.edge_attr() == std::vector<float>{1.5f, 3.5f});
  CHECK(sub.num_relations() == 2);
  const Graph none = g.edge_subgraph({false, false, false, false});
  CHECK(none.num_edges() == 0);
  CHECK(none.has_edge_attr());
  CHECK(none.has_edge_types());
  const Graph loops = g.with_self_loops();
  // Loops 0->0 and 1->1 dropped, the two others kept, then one loop per node appended.
  CHECK(loops.src() == std::vector<int32_t>{1, 2, 0, 1, 2});
  CHECK(loops.dst() == std::vector<int32_t>{2, 0, 0, 1, 2});
  CHECK(loops.edge_type() == std::vector<int32_t>{0, 1, 0, 0, 0});
  CHECK(loops.edge_attr() == std::vector<float>{1.5f, 3.5f, 0.0f, 0.0f, 0.0f});
  check_csr(loops);
}

TEST_CASE("RSTG region graph: 3x3 + 2x2 + 1x1 over a 6x6 map has 45 undirected edges") {
  // Derivation: within the 3x3 grid 12 side-sharing pairs, within 2x2 4, the 1x1 cell overlaps
  // all 13 others; across 3x3 and 2x2 a pair overlaps iff it overlaps on both axes, and per
  // axis the 3x3 intervals [0,2), [2,4), [4,6) overlap 1, 2 and 1 of [0,3), [3,6) (no interval
  // merely touches another: the endpoints {0,2,4,6} and {0,3,6} never meet as right = left),
  // so (1 + 2 + 1)^2 = 16 pairs. 12 + 4 + 13 + 16 = 45.
  std::vector<Cell> cells;
  for (int64_t s : {3, 2, 1}) {
    for (const Cell& c : grid_cells(s, s, 6, 6))
      cells.push_back(c);
  }
  REQUIRE(cells.size() == 14);
  const Graph g = region_graph(cells);
  CHECK(g.num_nodes() == 14);
  CHECK(g.num_edges() == 90);
  const auto edges = edge_set(g);
  CHECK(edges.size() == 90);
  for (const auto& [a, b] : edges) {
    CHECK(a != b);
    CHECK(edges.count({b, a}) == 1);
  }
  // Within the 3x3 grid: 4-neighbours only, no diagonals (corner contact does not count).
  CHECK(edges.count({0, 1}) == 1);
  CHECK(edges.count({0, 3}) == 1);
  CHECK(edges.count({0, 4}) == 0);
  CHECK(edges.count({4, 8}) == 0);
  // The 2x2 cell [0,3)x[0,3) (node 9) overlaps 3x3 cells 0, 1, 3, 4 and not 2 ([0,2)x[4,6)).
  for (int32_t k : {0, 1, 3, 4})
    CHECK(edges.count({k, 9}) == 1);
  CHECK(edges.count({2, 9}) == 0);
  for (int32_t k = 0; k < 13; ++k)
    CHECK(edges.count({k, 13}) == 1);
  // Sorted by (source, destination).
  for (int64_t e = 1; e < g.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    CHECK(std::make_pair(g.src()[k - 1], g.dst()[k - 1]) < std::make_pair(g.src()[k], g.dst()[k]));
  }
  CHECK(region_graph(cells, true).num_edges() == 14 * 13);
  CHECK(region_graph(cells, false, true).num_edges() == 90 + 14);
  CHECK(region_graph(cells, true, true).num_edges() == 14 * 14);
  // Side contact of positive length counts; corner contact and gaps do not.
  CHECK(region_graph({{0, 0, 1, 1}, {0, 1, 1, 2}}).num_edges() == 2);
  CHECK(region_graph({{0, 0, 1, 1}, {1, 1, 2, 2}}).num_edges() == 0);
  CHECK(region_graph({{0, 0, 1, 1}, {0, 1.5f, 1, 2}}).num_edges() == 0);
  // Grids whose boundaries are not exact binary fractions (7 / 3) still share sides.
  CHECK(region_graph(grid_cells(3, 3, 7, 7)).num_edges() == 24);
  CHECK_THROWS_AS(region_graph({{0, 0, 0, 1}}), ValueError);
}

TEST_CASE("temporal chain: edges |i - j| <= tau with attribute sign(source - destination)") {
  const Graph g = temporal_chain(5, 1);
  // 5 self loops + 2 * 4 neighbour edges.
  CHECK(g.num_edges() == 13);
  CHECK(g.has_edge_attr());
  CHECK(!g.has_edge_types());
  for (int64_t e = 0; e < g.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    const int32_t s = g.src()[k], d = g.dst()[k];
    CHECK(std::abs(s - d) <= 1);
    CHECK(g.edge_attr()[k] == static_cast<float>((s > d) - (s < d)));
  }
  // Source-major order: node 0's out-edges first.
  CHECK(g.src()[0] == 0);
  CHECK(g.dst()[0] == 0);
  CHECK(g.dst()[1] == 1);
  CHECK(temporal_chain(5, 1, false).num_edges() == 8);
  CHECK(temporal_chain(4, 10).num_edges() == 16);
  CHECK(temporal_chain(0, 1).num_edges() == 0);
  CHECK(temporal_chain(1, 0).num_edges() == 1);
  CHECK_THROWS_AS(temporal_chain(3, -1), ValueError);
  // SPELL's streams: forward = attr <= 0, backward = attr >= 0.
  std::vector<bool> forward;
  for (float a : g.edge_attr())
    forward.push_back(a <= 0.0f);
  const Graph f = g.edge_subgraph(forward);
  CHECK(f.num_edges() == 9);
  for (int64_t e = 0; e < f.num_edges(); ++e)
    CHECK(f.src()[static_cast<size_t>(e)] <= f.dst()[static_cast<size_t>(e)]);
}

TEST_CASE("graph builder: synchronised streams with alignment edges and relations") {
  // Ego stream (nodes 0..3), exo stream (4..7), text stream (8..11).
  GraphBuilder b(12);
  b.add_temporal_chain(0, 4, 1, 0);
  b.add_temporal_chain(4, 4, 1, 0);
  b.add_alignment(0, 4, 4, Alignment::kAToB, 1, 1.0f);
  b.add_alignment(0, 8, 4, Alignment::kBoth, 2);
  CHECK(b.num_edges() == 10 + 10 + 4 + 8);
  const Graph g = b.build();
  CHECK(g.num_relations() == 3);
  CHECK(g.has_edge_types());
  int cross = 0, text = 0;
  for (int64_t e = 0; e < g.num_edges(); ++e) {
    const size_t k = static_cast<size_t>(e);
    if (g.edge_type()[k] == 1) {
      ++cross;
      CHECK(g.dst()[k] == g.src()[k] + 4);
      CHECK(g.src()[k] < 4);
      CHECK(g.edge_attr()[k] == 1.0f);
    }
    if (g.edge_type()[k] == 2) {
      ++text;
      CHECK(std::abs(g.dst()[k] - g.src()[k]) == 8);
    }
  }
  CHECK(cross == 4);
  CHECK(text == 8);
  CHECK(b.build(5).num_relations() == 5);
  CHECK_THROWS_AS(b.build(2), ValueError);
  CHECK_THROWS_AS(b.add_alignment(0, 10, 4, Alignment::kBToA, 0), ValueError);
  CHECK_THROWS_AS(b.add_temporal_chain(10, 4, 1), ValueError);
  GraphBuilder bad(2);
  bad.add_edge(0, 2);
  CHECK_THROWS_AS(bad.build(), ValueError);
}

TEST_CASE("batching is a block-diagonal union that splits back per graph") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  Rng rng(seed);
  std::vector<Graph> graphs{temporal_chain(3, 1), temporal_chain(1, 1), temporal_chain(0, 1),
                            temporal_chain(5, 2)};
  std::vector<int64_t> offsets;
  const Graph batch = batch_graphs(graphs, &offsets);
  CHECK(offsets == std::vector<int64_t>{0, 3, 4, 4, 9});
  CHECK(batch.num_nodes() == 9);
  int64_t e = 0;
  for (size_t k = 0; k < graphs.size(); ++k) {
    for (int64_t j = 0; j < graphs[k].num_edges(); ++j, ++e) {
      const size_t a = static_cast<size_t>(e), b = static_cast<size_t>(j);
      CHECK(batch.src()[a] == graphs[k].src()[b] + offsets[k]);
      CHECK(batch.dst()[a] == graphs[k].dst()[b] + offsets[k]);
      CHECK(batch.edge_attr()[a] == graphs[k].edge_attr()[b]);
    }
  }
  CHECK(e == batch.num_edges());
  check_csr(batch);
  CHECK(node_graph_index(offsets) == std::vector<int64_t>{0, 0, 0, 1, 3, 3, 3, 3, 3});

  Tensor x = random_tensor({9, 7}, rng).set_requires_grad(true);
  const std::vector<Tensor> parts = split_by_graph(x, offsets);
  REQUIRE(parts.size() == 4);
  CHECK(parts[2].shape() == Shape{0, 7});
  CHECK(parts[3].shape() == Shape{5, 7});
  for (size_t k = 0; k < parts.size(); ++k) {
    for (int64_t i = 0; i < parts[k].numel(); ++i)
      CHECK(parts[k].data()[i] == x.data()[offsets[k] * 7 + i]);
  }
  sum(mul_scalar(parts[3], 2.0f)).backward();
  CHECK(x.grad().data()[0] == 0.0f);
  CHECK(x.grad().data()[4 * 7] == 2.0f);
  CHECK_THROWS_AS(split_by_graph(x, {0, 3, 8}), ValueError);

  // Relations: the largest count wins, untyped graphs are relation 0; attributes must agree.
  const Graph typed(2, {0, 1}, {1, 0}, {0, 2}, 0);
  const Graph untyped(2, {0}, {1});
  const Graph mixed = batch_graphs({untyped, typed}, nullptr);
  CHECK(mixed.num_relations() == 3);
  CHECK(mixed.edge_type() == std::vector<int32_t>{0, 0, 2});
  CHECK_THROWS_AS(batch_graphs({temporal_chain(2, 1), untyped}, nullptr), ValueError);
  CHECK(batch_graphs({temporal_chain(2, 1), Graph(3, {}, {})}, nullptr).has_edge_attr());
  CHECK(batch_graphs({}, &offsets).num_nodes() == 0);
  CHECK(offsets == std::vector<int64_t>{0});
}
