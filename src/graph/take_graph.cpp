#include "graph/take_graph.h"

#include <algorithm>

#include "autograd/error.h"

namespace stgnn {

int64_t TakeGraph::first_node(int64_t stream) const {
  if (stream < 0 || stream + 1 >= static_cast<int64_t>(stream_offsets.size())) {
    throw ValueError("TakeGraph: stream " + std::to_string(stream) + " of " +
                     std::to_string(static_cast<int64_t>(stream_offsets.size()) - 1));
  }
  return stream_offsets[static_cast<size_t>(stream)];
}

int64_t TakeGraph::stream_length(int64_t stream) const {
  return stream_offsets[static_cast<size_t>(stream) + 1] - first_node(stream);
}

TakeGraph build_take_graph(const TakeGraphSpec& spec) {
  const auto num_streams = static_cast<int64_t>(spec.streams.size());
  if (spec.tau < 0) throw ValueError("take graph: tau = " + std::to_string(spec.tau) + " < 0");
  if (spec.num_relations < 1) {
    throw ValueError("take graph: num_relations = " + std::to_string(spec.num_relations));
  }
  const auto check_relation = [&](int64_t relation, const std::string& what) {
    if (relation < 0 || relation >= spec.num_relations) {
      throw ValueError("take graph: " + what + " has relation " + std::to_string(relation) +
                       ", outside [0, " + std::to_string(spec.num_relations) + ")");
    }
  };
  check_relation(spec.temporal_relation, "the temporal chain");
  TakeGraph out;
  out.stream_offsets.push_back(0);
  for (int64_t s = 0; s < num_streams; ++s) {
    const TakeStream& stream = spec.streams[static_cast<size_t>(s)];
    if (stream.length < 0) {
      throw ValueError("take graph: stream '" + stream.name + "' has length " +
                       std::to_string(stream.length));
    }
    if (stream.node_type < 0) {
      throw ValueError("take graph: stream '" + stream.name + "' has node type " +
                       std::to_string(stream.node_type));
    }
    for (int64_t k = 0; k < stream.length; ++k) {
      out.node_stream.push_back(s);
      out.node_type.push_back(stream.node_type);
      out.node_item.push_back(k);
    }
    out.stream_offsets.push_back(out.stream_offsets.back() + stream.length);
  }
  GraphBuilder builder(out.stream_offsets.back());
  for (int64_t s = 0; s < num_streams; ++s) {
    const TakeStream& stream = spec.streams[static_cast<size_t>(s)];
    if (!stream.temporal) continue;
    builder.add_temporal_chain(out.stream_offsets[static_cast<size_t>(s)], stream.length, spec.tau,
                               spec.temporal_relation, spec.self_loops);
  }
  for (size_t a = 0; a < spec.alignments.size(); ++a) {
    const StreamAlignment& al = spec.alignments[a];
    const std::string what = "alignment " + std::to_string(a);
    for (int64_t s : {al.stream_a, al.stream_b}) {
      if (s < 0 || s >= num_streams) {
        throw ValueError("take graph: " + what + " names stream " + std::to_string(s) + " of " +
                         std::to_string(num_streams));
      }
    }
    if (al.stream_a == al.stream_b) {
      throw ValueError("take graph: " + what + " joins stream '" +
                       spec.streams[static_cast<size_t>(al.stream_a)].name + "' to itself");
    }
    check_relation(al.relation, what);
    const int64_t n = std::min(spec.streams[static_cast<size_t>(al.stream_a)].length,
                               spec.streams[static_cast<size_t>(al.stream_b)].length);
    builder.add_alignment(out.stream_offsets[static_cast<size_t>(al.stream_a)],
                          out.stream_offsets[static_cast<size_t>(al.stream_b)], n, al.direction,
                          al.relation, al.attr);
  }
  out.graph = builder.build(spec.num_relations);
  return out;
}

TakeGraphSpec glevr_take_spec(int64_t segments, int64_t exo_views, bool text,
                              const GlevrGraphOptions& options) {
  if (segments < 0 || exo_views < 0) {
    throw ValueError("glevr_take_spec: " + std::to_string(segments) + " segments, " +
                     std::to_string(exo_views) + " exo views");
  }
  TakeGraphSpec spec;
  spec.tau = options.tau;
  spec.self_loops = options.self_loops;
  spec.temporal_relation = kTemporalRelation;
  spec.num_relations = 2;
  spec.streams.push_back({"ego", kVideoNodeType, segments, true});
  for (int64_t k = 1; k <= exo_views; ++k)
    spec.streams.push_back({"exo" + std::to_string(k), kVideoNodeType, segments, true});
  for (int64_t k = 1; k <= exo_views; ++k) {
    spec.alignments.push_back(
        {0, k, options.cross_view, kCrossViewRelation, options.alignment_attr});
  }
  if (options.exo_to_exo) {
    for (int64_t k = 1; k <= exo_views; ++k) {
      for (int64_t l = k + 1; l <= exo_views; ++l) {
        spec.alignments.push_back(
            {k, l, Alignment::kBoth, kCrossViewRelation, options.alignment_attr});
      }
    }
  }
  if (text) {
    const int64_t text_stream = static_cast<int64_t>(spec.streams.size());
    spec.streams.push_back({"text", kTextNodeType, segments, true});
    spec.alignments.push_back(
        {text_stream, 0, Alignment::kBoth, options.text_relation, options.alignment_attr});
  }
  return spec;
}

TakeGraph batch_take_graphs(const std::vector<TakeGraph>& takes,
                            std::vector<int64_t>* take_offsets) {
  std::vector<Graph> graphs;
  graphs.reserve(takes.size());
  for (const TakeGraph& t : takes)
    graphs.push_back(t.graph);
  TakeGraph out;
  std::vector<int64_t> offsets;
  out.graph = batch_graphs(graphs, &offsets);
  out.stream_offsets.push_back(0);
  int64_t stream_base = 0;
  for (size_t g = 0; g < takes.size(); ++g) {
    const TakeGraph& t = takes[g];
    for (size_t s = 1; s < t.stream_offsets.size(); ++s)
      out.stream_offsets.push_back(offsets[g] + t.stream_offsets[s]);
    for (int64_t stream : t.node_stream)
      out.node_stream.push_back(stream_base + stream);
    out.node_type.insert(out.node_type.end(), t.node_type.begin(), t.node_type.end());
    out.node_item.insert(out.node_item.end(), t.node_item.begin(), t.node_item.end());
    stream_base += static_cast<int64_t>(t.stream_offsets.size()) - 1;
  }
  if (take_offsets != nullptr) *take_offsets = offsets;
  return out;
}

}  // namespace stgnn
