// Multi-stream take graphs: one graph per recording ("take") whose nodes are the items of several
// synchronised streams (ego video, exo views, captions, body-worn sensors, ...), each a sequence
// of feature vectors on a common index (one item per keystep segment, or per time step).
//
// Layout: stream s occupies nodes stream_offsets[s] .. stream_offsets[s + 1] - 1, item k of the
// stream at node stream_offsets[s] + k, streams in the order given. Edges, in this order:
//   1. per stream with temporal edges, temporal_chain's edges j -> i for |i - j| <= tau (self
//      loops included when asked), attribute sign(j - i) (+1 backward: from a later item, -1
//      forward: from an earlier one, 0 self), relation temporal_relation; streams in order,
//      edges within a stream ordered by (source, destination);
//   2. per alignment, in the order given, item k of stream A <-> item k of stream B for
//      k < min(length A, length B), in the alignment's direction (A -> B then B -> A per item
//      for kBoth), with the alignment's relation and attribute.
// Streams on different clocks must be brought to a common index (e.g. averaged per segment)
// before they are aligned: alignment is by index, not by time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace stgnn {

// One synchronised stream of a take.
struct TakeStream {
  std::string name;       // "ego", "cam01", "text", "imu-left", for messages
  int64_t node_type = 0;  // which input projection a heterogeneous model applies to its items
  int64_t length = 0;     // items (>= 0)
  bool temporal = true;   // temporal edges within the stream
};

// Alignment edges between two streams at the same index.
struct StreamAlignment {
  int64_t stream_a = 0, stream_b = 0;  // indices into TakeGraphSpec::streams, distinct
  Alignment direction = Alignment::kAToB;
  int64_t relation = 1;
  float attr = -2.0f;  // <= 0: SPELL's forward stream (and the undirected one) sees it
};

struct TakeGraphSpec {
  std::vector<TakeStream> streams;
  std::vector<StreamAlignment> alignments;
  int64_t tau = 1;  // temporal window (>= 0)
  bool self_loops = true;
  int64_t temporal_relation = 0;
  int64_t num_relations = 2;  // relation ids must lie in [0, num_relations)
};

struct TakeGraph {
  Graph graph;
  std::vector<int64_t> stream_offsets;  // [S + 1]; the last is the node count
  std::vector<int64_t> node_stream;     // [N] stream of each node
  std::vector<int64_t> node_type;       // [N] its stream's node_type
  std::vector<int64_t> node_item;       // [N] its index within the stream

  int64_t num_nodes() const { return graph.num_nodes(); }
  // First node of stream s and its length.
  int64_t first_node(int64_t stream) const;
  int64_t stream_length(int64_t stream) const;
};

// Builds the graph described above with GraphBuilder. Throws ValueError naming the stream or
// alignment when a length, tau, a stream index or a relation is out of range.
TakeGraph build_take_graph(const TakeGraphSpec& spec);

// ---------------------------------------------------------------- GLEVR's take graphs

// Node types of GLEVR's graphs: every video view (ego and exo) shares one feature extractor,
// hence one type; captions are the second.
constexpr int64_t kVideoNodeType = 0;
constexpr int64_t kTextNodeType = 1;
// Relations as released: cross-view alignment edges, everything else.
constexpr int64_t kTemporalRelation = 0;
constexpr int64_t kCrossViewRelation = 1;

struct GlevrGraphOptions {
  int64_t tau = 1;  // every released config
  bool self_loops = true;
  // Ego i -> exo_k i (as released), or the reverse, or both ways.
  Alignment cross_view = Alignment::kAToB;
  bool exo_to_exo = true;        // exo_k i <-> exo_l i, k < l (cross-view relation)
  float alignment_attr = -2.0f;  // cross-view and text edges: forward + undirected streams
  int64_t text_relation = kTemporalRelation;  // text_i <-> ego_i ("everything else")
};

// The streams of one take: ego (node type video), `exo_views` exo streams (video), and a text
// stream (node type text) when `text`; all of `segments` items. Alignments: ego -> exo_k
// (cross_view), exo_k <-> exo_l when exo_to_exo, text_i <-> ego_i both ways; then build with
// build_take_graph. Stream names "ego", "exo1".., "text".
TakeGraphSpec glevr_take_spec(int64_t segments, int64_t exo_views, bool text,
                              const GlevrGraphOptions& options = {});

// Several takes as one block-diagonal graph (batch_graphs), with node_stream renumbered so that
// stream s of take g becomes stream_base[g] + s; stream_offsets lists every stream of every take.
// take_offsets (may be null) receives the first node of each take plus the total [G + 1].
TakeGraph batch_take_graphs(const std::vector<TakeGraph>& takes,
                            std::vector<int64_t>* take_offsets = nullptr);

}  // namespace stgnn
