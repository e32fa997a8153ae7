// keystep_exp: Ego-Exo4D fine-grained keystep recognition with GLEVR (graph per take, temporal
// and cross-view edges), its heterogeneous variant with captions, or the per-segment MLP.
//
//   ./keystep_exp                                  default run on the cached synthetic set
//   ./keystep_exp --annotations A --features F [--exo] [--text T] [--model ...]   real data
//   ./keystep_exp --make-synthetic DIR             write a synthetic set in the official layout
//
// Flags, run directory, exit codes and prediction files follow shared/design/cli.md; the model
// and recipe follow shared/design/glevr.md.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/parallel.h"
#include "common/cli.h"
#include "common/interrupt.h"
#include "common/pictures.h"
#include "common/progress.h"
#include "common/run_dir.h"
#include "data/egoexo.h"
#include "data/keystep_synthetic.h"
#include "graph/take_graph.h"
#include "models/glevr.h"
#include "nn/checkpoint.h"
#include "nn/optim.h"

using namespace stgnn;
using namespace stgnn::experiments;

namespace {

constexpr const char* kProgram = "keystep_exp";
const char* const kSplitFiles[3] = {"keystep_segment_train.json", "keystep_segment_val.json",
                                    "keystep_segment_test_unannotated.json"};

// Every setting of a run; config.json keys are the flag names.
struct Settings {
  CommonFlags common;
  std::string annotations, features, text;
  bool exo = false;
  std::string model = "glevr";
  bool skip_missing = false;
  bool captions_at_test = false;
  int64_t tau = 1;
  std::string cross_view = "ego-to-exo";
  bool exo_to_exo = true;
  int64_t hidden = 0;    // C2; 0 = 1024, or 512 with captions (as released)
  int64_t channels = 0;  // C1; 0 = the video feature width
  bool input_projection = true;
  double dropout = 0.5;
  int64_t mlp_hidden = 1056;
  double t_max = 45;  // cosine annealing period in epochs
  double min_lr = 0.0;
  int64_t eval_batch_size = 32;
  double fps = 30.0;
  int64_t window = 32, stride = 16;
  std::string cache_dir = std::string(STGNN_SOURCE_DIR) + "/data";
  std::vector<std::string> synthetic_options;
  int64_t stop_after_steps = 0;  // hidden: behave as if interrupted after this many steps
};

std::string fmt17(double v) {
  char buffer[40];
  std::snprintf(buffer, sizeof(buffer), "%.17g", v);
  return buffer;
}

nlohmann::json settings_json(const Settings& s) {
  nlohmann::json j = common_flags_json(s.common);
  j["out"] = s.common.out;
  j["annotations"] = s.annotations;
  j["features"] = s.features;
  j["text"] = s.text;
  j["exo"] = s.exo;
  j["model"] = s.model;
  j["skip-missing"] = s.skip_missing;
  j["captions-at-test"] = s.captions_at_test;
  j["tau"] = s.tau;
  j["cross-view"] = s.cross_view;
  j["exo-to-exo"] = s.exo_to_exo;
  j["hidden"] = s.hidden;
  j["channels"] = s.channels;
  j["input-projection"] = s.input_projection;
  j["dropout"] = s.dropout;
  j["mlp-hidden"] = s.mlp_hidden;
  j["t-max"] = s.t_max;
  j["min-lr"] = s.min_lr;
  j["eval-batch-size"] = s.eval_batch_size;
  j["fps"] = s.fps;
  j["window"] = s.window;
  j["stride"] = s.stride;
  j["cache-dir"] = s.cache_dir;
  // An empty list would not parse back through --config (CLI11 wants >= 1 value).
  if (!s.synthetic_options.empty()) j["synthetic-option"] = s.synthetic_options;
  return j;
}

// torch's CosineAnnealingLR stepped once per epoch, closed form: past T_max it rises again,
// as the released 60-epoch runs with T_max = 45 did.
double epoch_lr(const Settings& s, int64_t epoch) {
  return s.min_lr + (s.common.lr - s.min_lr) * 0.5 *
                        (1.0 + std::cos(M_PI * static_cast<double>(epoch) / s.t_max));
}

// ---------------------------------------------------------------- synthetic data

KeystepSyntheticOptions synthetic_options(const Settings& s) {
  nlohmann::json j = keystep_synthetic_json(KeystepSyntheticOptions{});
  for (const std::string& item : s.synthetic_options) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      throw ValueError("--synthetic-option: '" + item + "' is not KEY=VALUE");
    }
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (!j.contains(key)) {
      std::string known;
      for (const auto& [k, v] : j.items())
        known += (known.empty() ? "" : ", ") + k;
      throw ValueError("--synthetic-option: unknown key '" + key + "' (" + known + ")");
    }
    try {
      size_t used = 0;
      const double v = std::stod(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
      if (j[key].is_number_float()) {
        j[key] = v;
      } else {
        if (v != std::floor(v)) throw std::invalid_argument(value);
        j[key] = static_cast<int64_t>(v);
      }
    } catch (const std::exception&) {
      throw ValueError("--synthetic-option: '" + item +
                       "': the value is not a number of the "
                       "right kind");
    }
  }
  return keystep_synthetic_from_json(j);
}

void make_synthetic(const std::string& dir, const KeystepSyntheticOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const KeystepSyntheticSummary summary = write_keystep_synthetic(dir, options);
  std::printf(
      "synthetic keystep set written to %s: %lld classes (%lld scenarios), %lld takes, "
      "%lld/%lld/%lld train/val/test segments, %lld files, %lld-d video features, %lld exo "
      "views (%.1f s)\n",
      dir.c_str(), static_cast<long long>(summary.classes),
      static_cast<long long>(options.scenarios), static_cast<long long>(summary.takes),
      static_cast<long long>(summary.segments[0]), static_cast<long long>(summary.segments[1]),
      static_cast<long long>(summary.segments[2]), static_cast<long long>(summary.files),
      static_cast<long long>(options.dim), static_cast<long long>(options.exo_views),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

// The default data: a synthetic set generated once into <cache-dir>/keystep-synthetic.
std::string cached_synthetic(const Settings& s) {
  const KeystepSyntheticOptions options = synthetic_options(s);
  const std::string dir = s.cache_dir + "/keystep-synthetic";
  const std::string stamp = dir + "/synthetic.json";
  bool fresh = false;
  if (std::filesystem::exists(stamp)) {
    try {
      fresh = nlohmann::json::parse(read_file(stamp)) == keystep_synthetic_json(options);
    } catch (const std::exception&) {
      fresh = false;
    }
  }
  if (fresh) {
    std::printf("data: the synthetic keystep set cached in %s (no --annotations/--features)\n",
                dir.c_str());
  } else {
    std::printf(
        "data: no --annotations/--features given; generating the synthetic keystep set "
        "once into %s\n",
        dir.c_str());
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    make_synthetic(dir, options);
  }
  return dir;
}

// ---------------------------------------------------------------- data

std::string annotation_file(const std::string& dir, const std::string& name) {
  for (const std::string& sub : {std::string(), std::string("/keystep_benchmark"),
                                 std::string("/annotations/keystep_benchmark")}) {
    const std::string path = dir + sub + "/" + name;
    if (std::filesystem::exists(path)) return path;
  }
  return "";
}

// One take's cached segment features, segments in temporal order.
struct TakeData {
  std::string uid, name;
  std::vector<int64_t> file_index;  // each kept segment's position in the split's JSON
  std::vector<int64_t> labels;      // -1 when unannotated
  std::vector<Tensor> views;        // [n, D] each; ego first, then the exo views found
  Tensor text;                      // [n, Dt], or undefined
  int64_t size() const { return static_cast<int64_t>(file_index.size()); }
};

struct SkipCounts {
  int64_t takes_without_ego = 0, segments_outside = 0, exo_views_missing = 0,
          takes_without_text = 0;
};

struct SplitData {
  std::string name, path;
  std::vector<KeystepSegment> all;  // every segment of the file, file order
  std::vector<TakeData> takes;
  std::map<int64_t, std::string> skipped;  // file index -> reason
  SkipCounts counts;
  int64_t segments() const {
    int64_t n = 0;
    for (const TakeData& t : takes)
      n += t.size();
    return n;
  }
};

struct LoadOptions {
  bool exo = false, text = false, skip_missing = false;
  FeatureTiming timing;
};

// Loads one take: reasons for skipped segments go to `skipped` (only with skip_missing).
TakeData load_take(const Take& take, const FeatureIndex& video, const FeatureIndex* text,
                   const LoadOptions& o, std::map<int64_t, std::string>& skipped,
                   SkipCounts& counts) {
  TakeData out;
  out.uid = take.take_uid;
  out.name = take.take_name;
  const auto skip_all = [&](const std::string& reason) {
    for (const KeystepSegment& seg : take.segments)
      skipped[seg.index] = reason;
  };
  if (take.ego_camera.empty()) {
    throw FormatError("take " + take.take_uid + " (" + take.take_name +
                      "): no camera names (segment_name_list)");
  }
  const std::optional<std::string> ego_path =
      video.find_camera(take.take_uid, take.take_name, take.ego_camera, 0);
  if (!ego_path) {
    if (!o.skip_missing) video.require_camera(take.take_uid, take.take_name, take.ego_camera, 0);
    skip_all("no ego feature file (camera " + take.ego_camera + ")");
    ++counts.takes_without_ego;
    return out;
  }
  const Tensor ego = read_feature_matrix(*ego_path);
  std::vector<Tensor> ego_rows;
  std::vector<size_t> kept;  // positions in take.segments
  for (size_t i = 0; i < take.segments.size(); ++i) {
    const KeystepSegment& seg = take.segments[i];
    try {
      ego_rows.push_back(segment_feature(ego, seg.start_time, seg.end_time, o.timing));
      kept.push_back(i);
    } catch (const FormatError& e) {
      if (!o.skip_missing) {
        throw FormatError("features '" + *ego_path + "': take " + take.take_uid + " (" +
                          take.take_name + ") camera " + take.ego_camera + " segment " +
                          std::to_string(seg.index) + ": " + e.what());
      }
      skipped[seg.index] = "segment outside the ego features";
      ++counts.segments_outside;
    }
  }
  if (kept.empty()) return out;
  const auto n = static_cast<int64_t>(kept.size());
  const int64_t dim = ego.size(1);
  const auto stack = [&](const std::vector<Tensor>& rows) {
    Tensor m = Tensor::empty({n, dim});
    for (int64_t i = 0; i < n; ++i)
      std::copy(rows[static_cast<size_t>(i)].data(), rows[static_cast<size_t>(i)].data() + dim,
                m.data() + i * dim);
    return m;
  };
  out.views.push_back(stack(ego_rows));
  for (size_t i : kept) {
    out.file_index.push_back(take.segments[i].index);
    out.labels.push_back(take.segments[i].label);
  }
  if (o.exo) {
    for (size_t k = 0; k < take.exo_cameras.size(); ++k) {
      const std::string& camera = take.exo_cameras[k];
      const auto view = static_cast<int64_t>(k + 1);
      const std::optional<std::string> path =
          video.find_camera(take.take_uid, take.take_name, camera, view);
      if (!path) {
        if (!o.skip_missing) video.require_camera(take.take_uid, take.take_name, camera, view);
        ++counts.exo_views_missing;
        continue;
      }
      const Tensor features = read_feature_matrix(*path);
      if (features.size(1) != dim) {
        throw FormatError("take " + take.take_uid + " (" + take.take_name + "): camera " + camera +
                          " features '" + *path + "' are " + shape_str(features.shape()) +
                          " but the ego features are [T, " + std::to_string(dim) +
                          "]: every camera must have the same width");
      }
      std::vector<Tensor> rows;
      try {
        for (size_t i : kept) {
          const KeystepSegment& seg = take.segments[i];
          rows.push_back(segment_feature(features, seg.start_time, seg.end_time, o.timing));
        }
      } catch (const FormatError& e) {
        if (!o.skip_missing) {
          throw FormatError("features '" + *path + "': take " + take.take_uid + " camera " +
                            camera + ": " + e.what());
        }
        ++counts.exo_views_missing;
        continue;
      }
      out.views.push_back(stack(rows));
    }
  }
  if (o.text) {
    const std::optional<std::string> path = text->find_take(take.take_uid, take.take_name);
    try {
      if (!path) {
        throw IoError("no caption features for take " + take.take_uid + " (" + take.take_name +
                      ") under '" + text->root() + "' (looked for " + take.take_uid +
                      ".{npy,pt}, " + take.take_name + ".{npy,pt})");
      }
      const Tensor all = read_caption_features(*path, static_cast<int64_t>(take.segments.size()));
      const int64_t tdim = all.size(1);
      Tensor rows = Tensor::empty({n, tdim});
      for (int64_t i = 0; i < n; ++i) {
        const float* src = all.data() + static_cast<int64_t>(kept[static_cast<size_t>(i)]) * tdim;
        std::copy(src, src + tdim, rows.data() + i * tdim);
      }
      out.text = rows;
    } catch (const Error&) {
      if (!o.skip_missing) throw;
      ++counts.takes_without_text;
    }
  }
  return out;
}

SplitData load_split(const std::string& name, const std::string& path, const LabelMapping& mapping,
                     const FeatureIndex& video, const FeatureIndex* text, const LoadOptions& o) {
  SplitData split;
  split.name = name;
  split.path = path;
  const KeystepSplit kept = read_keystep_segments(path, &mapping);
  split.all = read_keystep_segments(path, nullptr).segments;
  std::vector<bool> is_kept(split.all.size(), false);
  for (const KeystepSegment& seg : kept.segments)
    is_kept[static_cast<size_t>(seg.index)] = true;
  for (size_t i = 0; i < is_kept.size(); ++i) {
    if (!is_kept[i]) split.skipped[static_cast<int64_t>(i)] = "step not in label_mapping.csv";
  }
  const std::vector<Take> takes = group_takes(kept.segments);
  std::vector<TakeData> loaded(takes.size());
  std::vector<std::map<int64_t, std::string>> skipped(takes.size());
  std::vector<SkipCounts> counts(takes.size());
  std::vector<std::exception_ptr> errors(takes.size());
  // Takes are independent; each thread writes only its own slots.
  parallel_for(static_cast<int64_t>(takes.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const auto k = static_cast<size_t>(t);
      try {
        loaded[k] = load_take(takes[k], video, text, o, skipped[k], counts[k]);
      } catch (...) {
        errors[k] = std::current_exception();
      }
    }
  });
  for (size_t k = 0; k < takes.size(); ++k) {
    if (errors[k]) std::rethrow_exception(errors[k]);
    split.skipped.insert(skipped[k].begin(), skipped[k].end());
    split.counts.takes_without_ego += counts[k].takes_without_ego;
    split.counts.segments_outside += counts[k].segments_outside;
    split.counts.exo_views_missing += counts[k].exo_views_missing;
    split.counts.takes_without_text += counts[k].takes_without_text;
    if (loaded[k].size() > 0) split.takes.push_back(std::move(loaded[k]));
  }
  return split;
}

void print_split(const SplitData& split) {
  std::printf("%s: %lld segments in %zu takes", split.name.c_str(),
              static_cast<long long>(split.segments()), split.takes.size());
  if (!split.skipped.empty()) {
    std::map<std::string, int64_t> reasons;
    for (const auto& [index, reason] : split.skipped)
      ++reasons[reason];
    std::printf("; skipped %zu of %zu segments:", split.skipped.size(), split.all.size());
    for (const auto& [reason, count] : reasons)
      std::printf(" %lld %s;", static_cast<long long>(count), reason.c_str());
  }
  if (split.counts.exo_views_missing > 0) {
    std::printf("; %lld exo views missing", static_cast<long long>(split.counts.exo_views_missing));
  }
  if (split.counts.takes_without_text > 0) {
    std::printf("; %lld takes without captions",
                static_cast<long long>(split.counts.takes_without_text));
  }
  std::printf("\n");
}

// ---------------------------------------------------------------- batches

struct Batch {
  std::vector<Tensor> features;  // [0] video rows [Nv, D], [1] caption rows [Nt, Dt] when any
  IndexTensor node_rows;         // [N]: node -> row of concat(video, captions)
  Graph graph;
  IndexTensor node_labels;                   // [N], -1 for captions and unannotated segments
  IndexTensor video_labels;                  // [Nv]
  std::vector<int64_t> ego_nodes, ego_rows;  // per ego segment (batch order): node, video row
  std::vector<std::pair<size_t, size_t>> ego_segments;  // (take in split, segment in take)
};

Batch make_batch(const SplitData& split, const std::vector<size_t>& take_ids, bool use_exo,
                 bool use_text, bool with_graph, const GlevrGraphOptions& graph_options) {
  Batch b;
  int64_t video_rows = 0, text_rows = 0;
  for (size_t t : take_ids) {
    const TakeData& take = split.takes[t];
    video_rows += take.size() * (use_exo ? static_cast<int64_t>(take.views.size()) : 1);
    if (use_text && take.text.defined()) text_rows += take.size();
  }
  const int64_t dim = split.takes[take_ids[0]].views[0].size(1);
  Tensor video = Tensor::empty({video_rows, dim});
  Tensor text;
  for (size_t t : take_ids) {
    // Takes without captions (--skip-missing) may come first.
    if (text_rows > 0 && split.takes[t].text.defined()) {
      text = Tensor::empty({text_rows, split.takes[t].text.size(1)});
      break;
    }
  }
  std::vector<TakeGraph> graphs;
  std::vector<int64_t> node_rows, node_labels, video_labels;
  std::vector<int64_t> text_nodes;  // nodes whose row is text row r: fixed up below
  int64_t vrow = 0, trow = 0, node = 0;
  for (size_t t : take_ids) {
    const TakeData& take = split.takes[t];
    const int64_t n = take.size();
    const int64_t views = use_exo ? static_cast<int64_t>(take.views.size()) : 1;
    const bool has_text = use_text && take.text.defined();
    for (int64_t v = 0; v < views; ++v) {
      const Tensor& m = take.views[static_cast<size_t>(v)];
      std::copy(m.data(), m.data() + n * dim, video.data() + vrow * dim);
      for (int64_t i = 0; i < n; ++i) {
        if (v == 0) {
          b.ego_nodes.push_back(node + i);
          b.ego_rows.push_back(vrow + i);
          b.ego_segments.emplace_back(t, static_cast<size_t>(i));
        }
        node_rows.push_back(vrow + i);
        node_labels.push_back(take.labels[static_cast<size_t>(i)]);
        video_labels.push_back(take.labels[static_cast<size_t>(i)]);
      }
      vrow += n;
      node += n;
    }
    if (has_text) {
      const int64_t tdim = text.size(1);
      std::copy(take.text.data(), take.text.data() + n * tdim, text.data() + trow * tdim);
      for (int64_t i = 0; i < n; ++i) {
        text_nodes.push_back(static_cast<int64_t>(node_rows.size()));
        node_rows.push_back(trow + i);
        node_labels.push_back(-1);
      }
      trow += n;
      node += n;
    }
    if (with_graph) {
      graphs.push_back(build_take_graph(glevr_take_spec(n, views - 1, has_text, graph_options)));
    }
  }
  for (int64_t k : text_nodes)
    node_rows[static_cast<size_t>(k)] += video_rows;
  b.features.push_back(video);
  if (text.defined()) b.features.push_back(text);
  b.node_rows = IndexTensor(node_rows);
  b.node_labels = IndexTensor(node_labels);
  b.video_labels = IndexTensor(video_labels);
  if (with_graph) b.graph = batch_take_graphs(graphs).graph;
  return b;
}

// ---------------------------------------------------------------- models

struct KeystepModel {
  std::unique_ptr<Glevr> glevr;
  std::unique_ptr<SegmentMlp> mlp;

  Module& module() { return glevr ? static_cast<Module&>(*glevr) : *mlp; }
  bool graph() const { return glevr != nullptr; }
  // Logits of every supervised row: graph nodes for GLEVR, video rows for the MLP.
  Tensor forward(const Batch& b) {
    if (mlp) return mlp->forward(b.features[0]);
    if (b.features.size() == 1) {
      return glevr->forward(b.features[0], b.graph);
    }
    return glevr->forward_typed(b.features, b.node_rows, b.graph);
  }
  const IndexTensor& labels(const Batch& b) const { return mlp ? b.video_labels : b.node_labels; }
  const std::vector<int64_t>& ego(const Batch& b) const { return mlp ? b.ego_rows : b.ego_nodes; }
  void reseed(uint64_t seed) {
    if (glevr) glevr->reseed_dropout(seed);
  }
};

int64_t hidden_width(const Settings& s) {
  if (s.hidden > 0) return s.hidden;
  return s.text.empty() ? 1024 : 512;
}

KeystepModel make_model(const Settings& s, int64_t video_dim, int64_t text_dim, int64_t classes,
                        Rng& rng) {
  KeystepModel m;
  if (s.model == "mlp") {
    m.mlp = std::make_unique<SegmentMlp>(video_dim, classes, s.mlp_hidden, rng);
    return m;
  }
  GlevrConfig c;
  c.input_dims = {video_dim};
  if (s.model == "glevr-hetero" && text_dim > 0) c.input_dims.push_back(text_dim);
  c.input_projection = s.input_projection;
  c.channels = s.channels;
  c.hidden = hidden_width(s);
  c.classes = classes;
  c.dropout = static_cast<float>(s.dropout);
  m.glevr = std::make_unique<Glevr>(c, rng);
  return m;
}

GlevrGraphOptions graph_options(const Settings& s) {
  GlevrGraphOptions g;
  g.tau = s.tau;
  g.exo_to_exo = s.exo_to_exo;
  if (s.cross_view == "ego-to-exo") {
    g.cross_view = Alignment::kAToB;
  } else if (s.cross_view == "exo-to-ego") {
    g.cross_view = Alignment::kBToA;
  } else {
    g.cross_view = Alignment::kBoth;
  }
  return g;
}

// ---------------------------------------------------------------- evaluation

struct Prediction {
  std::vector<std::pair<int64_t, float>> top5;  // label, probability; best first
};

struct SplitEval {
  double loss = 0;
  int64_t scored = 0, labelled = 0, correct1 = 0, correct5 = 0;
  std::map<int64_t, Prediction> by_index;  // file index -> prediction
  double top1() const { return labelled ? static_cast<double>(correct1) / labelled : NAN; }
  double top5() const { return labelled ? static_cast<double>(correct5) / labelled : NAN; }
};

// Ego segments of every take, ego-only graphs (plus captions when captions_at_test).
SplitEval evaluate(KeystepModel& model, const SplitData& split, const Settings& s) {
  NoGradGuard no_grad;
  model.module().eval();
  SplitEval out;
  double loss_sum = 0;
  const bool with_text = s.captions_at_test && !s.text.empty();
  for (size_t first = 0; first < split.takes.size();
       first += static_cast<size_t>(s.eval_batch_size)) {
    std::vector<size_t> ids;
    for (size_t t = first; t < std::min(split.takes.size(), first + s.eval_batch_size); ++t)
      ids.push_back(t);
    const Batch b = make_batch(split, ids, false, with_text, model.graph(), graph_options(s));
    const Tensor logits = model.forward(b);
    const std::vector<int64_t>& ego = model.ego(b);
    const int64_t classes = logits.size(1);
    const Tensor ego_logits = index_select(logits, IndexTensor(ego));
    const Tensor probs = softmax(ego_logits);
    std::vector<int64_t> labels;
    for (size_t k = 0; k < ego.size(); ++k) {
      const auto [t, i] = b.ego_segments[k];
      labels.push_back(split.takes[t].labels[i]);
    }
    const IndexTensor label_tensor(labels);
    int64_t labelled = 0;
    for (int64_t l : labels)
      labelled += l >= 0;
    if (labelled > 0) {
      loss_sum += cross_entropy(ego_logits, label_tensor).item() * static_cast<double>(labelled);
    }
    for (size_t k = 0; k < ego.size(); ++k) {
      const float* p = probs.data() + static_cast<int64_t>(k) * classes;
      std::vector<int64_t> order(static_cast<size_t>(classes));
      for (int64_t c = 0; c < classes; ++c)
        order[static_cast<size_t>(c)] = c;
      const size_t top = std::min<size_t>(5, order.size());
      std::partial_sort(
          order.begin(), order.begin() + static_cast<int64_t>(top), order.end(),
          [&](int64_t a, int64_t c) { return p[a] > p[c] || (p[a] == p[c] && a < c); });
      Prediction pred;
      for (size_t r = 0; r < top; ++r)
        pred.top5.emplace_back(order[r], p[order[r]]);
      const auto [t, i] = b.ego_segments[k];
      const int64_t label = labels[k];
      if (label >= 0) {
        ++out.labelled;
        out.correct1 += pred.top5[0].first == label;
        for (const auto& [c, prob] : pred.top5)
          out.correct5 += c == label;
      }
      ++out.scored;
      out.by_index[split.takes[t].file_index[i]] = std::move(pred);
    }
  }
  out.loss = out.labelled ? loss_sum / static_cast<double>(out.labelled) : NAN;
  model.module().train();
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// predictions_<split>.json / .csv: one entry per input segment, in input order.
void write_predictions(const RunDirectory& run, const SplitData& split, const SplitEval& eval) {
  nlohmann::ordered_json doc;
  doc["split"] = split.name;
  doc["source"] = split.path;
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  std::ostringstream csv;
  csv << "ego_segment_name,label_id,probability\n";
  for (const KeystepSegment& seg : split.all) {
    nlohmann::ordered_json e;
    e["ego_segment_name"] = seg.ego_segment_name;
    e["take_uid"] = seg.take_uid;
    e["start_time"] = seg.start_time;
    e["end_time"] = seg.end_time;
    const auto found = eval.by_index.find(seg.index);
    if (found == eval.by_index.end()) {
      const auto reason = split.skipped.find(seg.index);
      e["label_id"] = nullptr;
      e["top5"] = nlohmann::ordered_json::array();
      e["skipped"] = reason == split.skipped.end() ? "not evaluated" : reason->second;
      csv << csv_field(seg.ego_segment_name) << ",,\n";
    } else {
      const Prediction& p = found->second;
      e["label_id"] = p.top5[0].first;
      nlohmann::ordered_json top = nlohmann::ordered_json::array();
      for (const auto& [label, prob] : p.top5)
        top.push_back({label, prob});
      e["top5"] = top;
      char prob[32];
      std::snprintf(prob, sizeof(prob), "%.6g", p.top5[0].second);
      csv << csv_field(seg.ego_segment_name) << ',' << p.top5[0].first << ',' << prob << '\n';
    }
    list.push_back(std::move(e));
  }
  doc["segments"] = std::move(list);
  run.write_text("predictions_" + split.name + ".json", doc.dump(1) + "\n");
  run.write_text("predictions_" + split.name + ".csv", csv.str());
}

// Per-scenario accuracy and the confusion matrix of a labelled split.
nlohmann::ordered_json scenario_report(const RunDirectory& run, const SplitData& split,
                                       const SplitEval& eval, const LabelMapping& mapping) {
  const int64_t classes = mapping.num_classes();
  std::vector<int64_t> confusion(static_cast<size_t>(classes * classes), 0);
  std::map<std::string, std::pair<int64_t, int64_t>> per_scenario;  // correct, total
  for (const TakeData& take : split.takes) {
    for (int64_t i = 0; i < take.size(); ++i) {
      const int64_t label = take.labels[static_cast<size_t>(i)];
      if (label < 0) continue;
      const int64_t pred = eval.by_index.at(take.file_index[static_cast<size_t>(i)]).top5[0].first;
      ++confusion[static_cast<size_t>(label * classes + pred)];
      std::string scenario = mapping.entries[static_cast<size_t>(label)].scenario_name;
      if (scenario.empty()) scenario = "(no scenario)";
      per_scenario[scenario].first += pred == label;
      ++per_scenario[scenario].second;
    }
  }
  std::ostringstream csv;
  csv << "true\\predicted";
  for (int64_t c = 0; c < classes; ++c)
    csv << ',' << c;
  csv << '\n';
  for (int64_t r = 0; r < classes; ++r) {
    csv << r;
    for (int64_t c = 0; c < classes; ++c)
      csv << ',' << confusion[static_cast<size_t>(r * classes + c)];
    csv << '\n';
  }
  run.write_text("confusion_" + split.name + ".csv", csv.str());
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& [scenario, counts] : per_scenario) {
    out[scenario] = {{"segments", counts.second},
                     {"top1", static_cast<double>(counts.first) / counts.second}};
  }
  return out;
}

// ---------------------------------------------------------------- training

std::string first_non_finite_gradient(const Module& model) {
  for (const auto& [name, p] : model.named_parameters()) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const float* d = g.data();
    for (int64_t i = 0; i < g.numel(); ++i) {
      if (!std::isfinite(d[i])) return name;
    }
  }
  return "";
}

// The order of the training takes in an epoch: a pure function of (seed, epoch).
std::vector<size_t> epoch_order(uint64_t seed, int64_t epoch, size_t takes) {
  std::vector<size_t> order(takes);
  for (size_t i = 0; i < takes; ++i)
    order[i] = i;
  Rng rng(mix64(seed ^ mix64(0x0dde7a11ULL + static_cast<uint64_t>(epoch))));
  rng.shuffle(order.begin(), order.end());
  return order;
}

uint64_t step_seed(uint64_t seed, int64_t epoch, int64_t step) {
  return mix64(mix64(seed + 0xd50u) ^
               mix64(static_cast<uint64_t>(epoch) << 32 ^ static_cast<uint64_t>(step)));
}

struct Data {
  LabelMapping mapping;
  SplitData train, val, test;
  bool has_test = false;
  int64_t video_dim = 0, text_dim = 0;
};

struct TrainState {
  int64_t start_epoch = 0, start_step = 0, best_epoch = -1;
  double best_val_loss = INFINITY, trained_seconds = 0;
  int64_t trained_segments = 0;
  // Running sums of the interrupted epoch.
  double loss_sum = 0, epoch_seconds = 0;
  int64_t correct = 0, seen = 0, segments = 0;
};

std::map<std::string, std::string> checkpoint_meta(const Settings& s, const TrainState& st,
                                                   int64_t epoch, int64_t step) {
  return {{"epoch", std::to_string(epoch)},
          {"step", std::to_string(step)},
          {"best_val_loss", fmt17(st.best_val_loss)},
          {"best_epoch", std::to_string(st.best_epoch)},
          {"trained_seconds", fmt17(st.trained_seconds)},
          {"trained_segments", std::to_string(st.trained_segments)},
          {"epoch_loss_sum", fmt17(st.loss_sum)},
          {"epoch_correct", std::to_string(st.correct)},
          {"epoch_seen", std::to_string(st.seen)},
          {"epoch_segments", std::to_string(st.segments)},
          {"epoch_seconds", fmt17(st.epoch_seconds)},
          {"config", settings_json(s).dump()}};
}

int finish_run(const Settings& s, const Data& data, KeystepModel& model, RunDirectory& run,
               const TrainState& st, std::chrono::steady_clock::time_point wall_start);

int train(const Settings& s, const Data& data, RunDirectory& run, bool resume, bool live) {
  const auto wall_start = std::chrono::steady_clock::now();
  manual_seed(s.common.seed);
  Rng init_rng(s.common.seed);
  KeystepModel model =
      make_model(s, data.video_dim, data.text_dim, data.mapping.num_classes(), init_rng);
  Module& module = model.module();
  Adam optimizer(module.named_parameters(), s.common.lr, 0.9, 0.999, 1e-8, s.common.weight_decay);
  const auto batch = static_cast<size_t>(s.common.batch_size);
  const size_t num_takes = data.train.takes.size();
  const auto steps_per_epoch = static_cast<int64_t>((num_takes + batch - 1) / batch);
  const GlevrGraphOptions gopt = graph_options(s);
  const bool use_text = !s.text.empty();

  TrainState st;
  if (resume) {
    const auto meta = load_checkpoint(run.file("last.safetensors"), module, &optimizer);
    st.start_epoch = std::stoll(meta.at("epoch"));
    st.start_step = std::stoll(meta.at("step"));
    st.best_val_loss = std::stod(meta.at("best_val_loss"));
    st.best_epoch = std::stoll(meta.at("best_epoch"));
    st.trained_seconds = std::stod(meta.at("trained_seconds"));
    st.trained_segments = std::stoll(meta.at("trained_segments"));
    if (st.start_step > 0) {
      st.loss_sum = std::stod(meta.at("epoch_loss_sum"));
      st.correct = std::stoll(meta.at("epoch_correct"));
      st.seen = std::stoll(meta.at("epoch_seen"));
      st.segments = std::stoll(meta.at("epoch_segments"));
      st.epoch_seconds = std::stod(meta.at("epoch_seconds"));
    }
    run.load_metrics(st.start_epoch + 1);
    std::printf("resuming %s at epoch %lld step %lld\n", run.path().c_str(),
                static_cast<long long>(st.start_epoch + 1), static_cast<long long>(st.start_step));
  }
  std::printf("model: %s, %lld parameters", s.model.c_str(),
              static_cast<long long>(module.parameter_count()));
  if (model.graph()) {
    std::printf(" (C1 = %lld, C2 = %lld, dropout %.2f, tau %lld, %s cross-view edges)",
                static_cast<long long>(model.glevr->channels()),
                static_cast<long long>(model.glevr->config().hidden), s.dropout,
                static_cast<long long>(s.tau), s.cross_view.c_str());
  }
  std::printf(
      "\ntraining: %lld epochs x %lld steps of %lld takes, Adam lr %g weight decay %g, "
      "cosine T_max %g epochs; train graphs: ego%s%s\n",
      static_cast<long long>(s.common.epochs), static_cast<long long>(steps_per_epoch),
      static_cast<long long>(batch), s.common.lr, s.common.weight_decay, s.t_max,
      s.exo ? " + exo views" : "", use_text ? " + captions" : "");
  std::fflush(stdout);

  int64_t global_step = st.start_epoch * steps_per_epoch + st.start_step;
  for (int64_t epoch = st.start_epoch; epoch < s.common.epochs; ++epoch) {
    module.train();
    optimizer.lr = epoch_lr(s, epoch);
    const int64_t first_step = epoch == st.start_epoch ? st.start_step : 0;
    if (epoch != st.start_epoch || first_step == 0) {
      st.loss_sum = 0;
      st.correct = st.seen = st.segments = 0;
      st.epoch_seconds = 0;
    }
    const std::vector<size_t> order = epoch_order(s.common.seed, epoch, num_takes);
    ProgressBar bar(live,
                    "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(s.common.epochs),
                    steps_per_epoch - first_step);
    auto clock = std::chrono::steady_clock::now();
    const auto tick = [&]() {
      const auto now = std::chrono::steady_clock::now();
      st.epoch_seconds += std::chrono::duration<double>(now - clock).count();
      clock = now;
    };
    for (int64_t step = first_step; step < steps_per_epoch; ++step, ++global_step) {
      const size_t begin = static_cast<size_t>(step) * batch;
      const std::vector<size_t> ids(
          order.begin() + static_cast<int64_t>(begin),
          order.begin() + static_cast<int64_t>(std::min(num_takes, begin + batch)));
      const Batch b = make_batch(data.train, ids, s.exo, use_text, model.graph(), gopt);
      model.reseed(step_seed(s.common.seed, epoch, step));
      optimizer.zero_grad();
      const Tensor logits = model.forward(b);
      const IndexTensor& labels = model.labels(b);
      Tensor loss = cross_entropy(logits, labels);
      const float loss_value = loss.item();
      if (!std::isfinite(loss_value)) {
        bar.finish();
        std::fprintf(stderr,
                     "diverged: the loss is %f at epoch %lld step %lld; last good checkpoint "
                     "kept in %s\n",
                     loss_value, static_cast<long long>(epoch + 1), static_cast<long long>(step),
                     run.file("last.safetensors").c_str());
        return kExitDiverged;
      }
      loss.backward();
      const std::string bad = first_non_finite_gradient(module);
      if (!bad.empty()) {
        bar.finish();
        std::fprintf(stderr,
                     "diverged: the gradient of '%s' holds a NaN or infinity at epoch %lld step "
                     "%lld; last good checkpoint kept in %s\n",
                     bad.c_str(), static_cast<long long>(epoch + 1), static_cast<long long>(step),
                     run.file("last.safetensors").c_str());
        return kExitDiverged;
      }
      optimizer.step();
      const int64_t classes = logits.size(1);
      int64_t supervised = 0;
      for (int64_t r = 0; r < logits.size(0); ++r) {
        const int64_t label = labels[r];
        if (label < 0) continue;
        const float* row = logits.data() + r * classes;
        st.correct += (std::max_element(row, row + classes) - row) == label;
        ++supervised;
      }
      st.loss_sum += static_cast<double>(loss_value) * static_cast<double>(supervised);
      st.seen += supervised;
      st.segments += static_cast<int64_t>(b.ego_nodes.size());
      tick();
      bar.update(step + 1 - first_step, st.seen ? st.loss_sum / st.seen : 0,
                 st.seen ? static_cast<double>(st.correct) / st.seen : 0,
                 st.segments / std::max(1e-9, st.epoch_seconds));
      const bool stop_here = s.stop_after_steps > 0 && global_step + 1 == s.stop_after_steps;
      if (interrupted() || stop_here) {
        bar.finish();
        save_checkpoint(run.file("last.safetensors"), module, &optimizer,
                        checkpoint_meta(s, st, epoch, step + 1));
        std::printf("interrupted%s: checkpoint saved; continue with  ./%s --resume %s\n",
                    stop_here ? " (--stop-after-steps)" : "", kProgram, run.path().c_str());
        return kExitInterrupted;
      }
    }
    bar.finish();
    tick();
    st.trained_seconds += st.epoch_seconds;
    st.trained_segments += st.segments;
    const SplitEval val = evaluate(model, data.val, s);
    EpochMetrics row;
    row.epoch = epoch + 1;
    row.train_loss = st.seen ? st.loss_sum / st.seen : NAN;
    row.train_acc = st.seen ? static_cast<double>(st.correct) / st.seen : NAN;
    row.val_loss = val.loss;
    row.val_acc = val.top1();
    row.seconds = st.epoch_seconds;
    row.items_per_s = st.segments / std::max(1e-9, st.epoch_seconds);
    if (val.loss < st.best_val_loss) {
      st.best_val_loss = val.loss;
      st.best_epoch = epoch + 1;
      save_checkpoint(run.file("best.safetensors"), module, nullptr,
                      checkpoint_meta(s, st, epoch + 1, 0));
    }
    st.loss_sum = 0;
    st.correct = st.seen = st.segments = 0;
    st.epoch_seconds = 0;
    save_checkpoint(run.file("last.safetensors"), module, &optimizer,
                    checkpoint_meta(s, st, epoch + 1, 0));
    run.add_metrics(row);
    std::printf(
        "epoch %lld/%lld  lr %.3g  train loss %.4f acc %.1f%%  val loss %.4f top-1 %.1f%% "
        "top-5 %.1f%%  %.0f segments/s  %s%s\n",
        static_cast<long long>(epoch + 1), static_cast<long long>(s.common.epochs), optimizer.lr,
        row.train_loss, 100 * row.train_acc, row.val_loss, 100 * val.top1(), 100 * val.top5(),
        row.items_per_s, format_duration(row.seconds).c_str(),
        st.best_epoch == epoch + 1 ? "  (best)" : "");
    std::fflush(stdout);
  }
  return finish_run(s, data, model, run, st, wall_start);
}

// Loads the best checkpoint, evaluates val and test, writes predictions and results.json.
int finish_run(const Settings& s, const Data& data, KeystepModel& model, RunDirectory& run,
               const TrainState& st, std::chrono::steady_clock::time_point wall_start) {
  if (st.best_epoch > 0) load_checkpoint(run.file("best.safetensors"), model.module(), nullptr);
  const SplitEval val = evaluate(model, data.val, s);
  write_predictions(run, data.val, val);
  nlohmann::ordered_json results;
  results["model"] = s.model;
  results["parameters"] = model.module().parameter_count();
  results["best_epoch"] = st.best_epoch;
  results["val_top1"] = val.top1();
  results["val_top5"] = val.top5();
  results["val_loss"] = val.loss;
  results["val_segments"] = val.labelled;
  results["val_skipped"] = static_cast<int64_t>(data.val.all.size()) - val.scored;
  results["val_per_scenario"] = scenario_report(run, data.val, val, data.mapping);
  if (data.has_test) {
    const SplitEval test = evaluate(model, data.test, s);
    write_predictions(run, data.test, test);
    results["test_segments"] = test.scored;
    results["test_skipped"] = static_cast<int64_t>(data.test.all.size()) - test.scored;
  }
  results["train_segments"] = st.trained_segments;
  results["train_seconds"] = st.trained_seconds;
  results["train_segments_per_s"] =
      st.trained_seconds > 0 ? static_cast<double>(st.trained_segments) / st.trained_seconds : 0.0;
  results["wall_seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  results["peak_memory_mib"] = peak_memory_mib();
  results["threads"] = num_threads();
  results["captions_at_test"] = s.captions_at_test;
  run.write_results(results);
  std::printf("result: val top-1 %.2f%% top-5 %.2f%% (%lld segments, best epoch %lld)",
              100 * val.top1(), 100 * val.top5(), static_cast<long long>(val.labelled),
              static_cast<long long>(st.best_epoch));
  for (const auto& [scenario, r] : results["val_per_scenario"].items()) {
    std::printf(" | %s %.1f%%", scenario.c_str(), 100 * r["top1"].get<double>());
  }
  std::printf("\npredictions: %s/predictions_val.{json,csv}%s | run dir %s\n", run.path().c_str(),
              data.has_test ? ", predictions_test.{json,csv}" : "", run.path().c_str());
  return kExitOk;
}

Data load_data(const Settings& s) {
  Data data;
  std::string files[3];
  for (int k = 0; k < 3; ++k) {
    files[k] = annotation_file(s.annotations, kSplitFiles[k]);
    if (files[k].empty() && k < 2) {
      throw IoError("--annotations '" + s.annotations + "': no " + kSplitFiles[k] +
                    " there (nor under keystep_benchmark/ or annotations/keystep_benchmark/)");
    }
  }
  const std::string mapping_file = annotation_file(s.annotations, "label_mapping.csv");
  if (mapping_file.empty()) {
    throw IoError("--annotations '" + s.annotations + "': no label_mapping.csv there");
  }
  data.mapping = read_label_mapping(mapping_file);
  const FeatureIndex video(s.features);
  std::unique_ptr<FeatureIndex> text;
  if (!s.text.empty()) text = std::make_unique<FeatureIndex>(s.text);
  LoadOptions o;
  o.skip_missing = s.skip_missing;
  o.timing.fps = s.fps;
  o.timing.window = s.window;
  o.timing.stride = s.stride;
  const auto start = std::chrono::steady_clock::now();
  LoadOptions train_o = o;
  train_o.exo = s.exo;
  train_o.text = text != nullptr;
  data.train = load_split("train", files[0], data.mapping, video, text.get(), train_o);
  LoadOptions eval_o = o;
  eval_o.text = text != nullptr && s.captions_at_test;
  data.val = load_split("val", files[1], data.mapping, video, text.get(), eval_o);
  if (!files[2].empty()) {
    data.test = load_split("test", files[2], data.mapping, video, text.get(), eval_o);
    data.has_test = true;
  } else {
    std::printf("note: no %s under '%s': no test predictions\n", kSplitFiles[2],
                s.annotations.c_str());
  }
  if (data.train.takes.empty()) throw ValueError("no training segment left to train on");
  if (data.val.takes.empty()) throw ValueError("no validation segment left to evaluate");
  data.video_dim = data.train.takes[0].views[0].size(1);
  for (const SplitData* split : {&data.train, &data.val, &data.test}) {
    for (const TakeData& t : split->takes) {
      if (t.views[0].size(1) != data.video_dim) {
        throw FormatError("take " + t.uid + ": video features are " +
                          std::to_string(t.views[0].size(1)) + "-d, other takes " +
                          std::to_string(data.video_dim) + "-d");
      }
      if (t.text.defined()) {
        if (data.text_dim == 0) data.text_dim = t.text.size(1);
        if (t.text.size(1) != data.text_dim) {
          throw FormatError("take " + t.uid + ": caption features are " +
                            std::to_string(t.text.size(1)) + "-d, other takes " +
                            std::to_string(data.text_dim) + "-d");
        }
      }
    }
  }
  std::printf(
      "labels: %lld classes from %s; features: %lld-d video%s under %s (%zu files "
      "indexed, loaded in %.1f s)\n",
      static_cast<long long>(data.mapping.num_classes()), mapping_file.c_str(),
      static_cast<long long>(data.video_dim),
      data.text_dim ? (", " + std::to_string(data.text_dim) + "-d captions").c_str() : "",
      s.features.c_str(), video.num_files(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  print_split(data.train);
  print_split(data.val);
  if (data.has_test) print_split(data.test);
  return data;
}

// --plot-take: one take (of any split, by take_uid or take_name) predicted by the checkpoint on
// its evaluation graph (ego only, as the challenge rule says), drawn as a truth / predicted
// timeline into <run dir>/timeline_<take_uid>.png, with the numbers in a .csv beside it.
int plot_take(const Settings& s, const std::string& wanted) {
  const std::string mapping_file = annotation_file(s.annotations, "label_mapping.csv");
  if (mapping_file.empty()) {
    throw IoError("--annotations '" + s.annotations + "': no label_mapping.csv there");
  }
  const LabelMapping mapping = read_label_mapping(mapping_file);
  std::optional<Take> found;
  std::string split_name, split_path, searched;
  const char* const names[3] = {"train", "val", "test"};
  for (int k = 0; k < 3 && !found; ++k) {
    const std::string path = annotation_file(s.annotations, kSplitFiles[k]);
    if (path.empty()) continue;
    searched += (searched.empty() ? "" : ", ") + path;
    for (Take& take : group_takes(read_keystep_segments(path, &mapping).segments)) {
      if (take.take_uid == wanted || take.take_name == wanted) {
        found = std::move(take);
        split_name = names[k];
        split_path = path;
        break;
      }
    }
  }
  if (!found) {
    throw ValueError("--plot-take: no take '" + wanted + "' (by take_uid or take_name) in " +
                     (searched.empty() ? "--annotations '" + s.annotations + "'" : searched));
  }
  const FeatureIndex video(s.features);
  std::unique_ptr<FeatureIndex> text;
  if (!s.text.empty()) text = std::make_unique<FeatureIndex>(s.text);
  LoadOptions o;
  o.skip_missing = s.skip_missing;
  o.text = text != nullptr;  // the caption width sizes the model, even when unused at test
  o.timing.fps = s.fps;
  o.timing.window = s.window;
  o.timing.stride = s.stride;
  SplitData split;
  split.name = split_name;
  split.path = split_path;
  TakeData take = load_take(*found, video, text.get(), o, split.skipped, split.counts);
  if (take.size() == 0) {
    throw ValueError("--plot-take: take '" + wanted + "' has no segment with features");
  }
  const int64_t video_dim = take.views[0].size(1);
  const int64_t text_dim = take.text.defined() ? take.text.size(1) : 0;
  split.takes.push_back(std::move(take));

  Rng rng(s.common.seed);
  KeystepModel model = make_model(s, video_dim, text_dim, mapping.num_classes(), rng);
  load_checkpoint(s.common.eval, model.module(), nullptr);
  const SplitEval eval = evaluate(model, split, s);

  KeystepTimeline timeline;
  for (const LabelEntry& e : mapping.entries) {
    timeline.label_names.push_back(e.step_name +
                                   (e.scenario_name.empty() ? "" : " (" + e.scenario_name + ")"));
  }
  std::ostringstream csv;
  csv << "ego_segment_name,start_time,end_time,label_id,predicted,probability\n";
  for (const KeystepSegment& seg : found->segments) {
    const auto p = eval.by_index.find(seg.index);
    TimelineSegment t;
    t.start = seg.start_time;
    t.end = seg.end_time;
    t.truth = seg.label;
    if (p != eval.by_index.end()) {
      t.predicted = p->second.top5[0].first;
      t.probability = p->second.top5[0].second;
    }
    timeline.segments.push_back(t);
    char row[96];
    std::snprintf(row, sizeof(row), ",%.5f,%.5f,%s,%s,%.6g\n", t.start, t.end,
                  t.truth >= 0 ? std::to_string(t.truth).c_str() : "",
                  t.predicted >= 0 ? std::to_string(t.predicted).c_str() : "", t.probability);
    csv << csv_field(seg.ego_segment_name) << row;
  }
  char summary[160];
  if (eval.labelled > 0) {
    std::snprintf(summary, sizeof(summary), "top-1 %lld/%lld (%.1f%%)",
                  static_cast<long long>(eval.correct1), static_cast<long long>(eval.labelled),
                  100 * eval.top1());
  } else {
    std::snprintf(summary, sizeof(summary), "unannotated");
  }
  timeline.title = "take " + found->take_name + " (" + found->take_uid + "), " + split_name +
                   " split, " + std::to_string(timeline.segments.size()) + " segments, " + summary +
                   " | " + s.model + " " + s.common.eval + " | graph: ego" +
                   (s.captions_at_test ? " + captions" : "");
  const Canvas canvas = keystep_timeline(timeline);

  RunDirectory run(s.common.out.empty() ? RunDirectory::default_path(kProgram) : s.common.out);
  nlohmann::json config = settings_json(s);
  config["program"] = kProgram;
  config["git_commit"] = git_commit();
  config["evaluated_checkpoint"] = s.common.eval;
  config["plot-take"] = wanted;
  run.write_config(config);
  const std::string stem = "timeline_" + found->take_uid;
  write_png(run.file(stem + ".png"), canvas);
  run.write_text(stem + ".csv", csv.str());
  std::printf("timeline: %s (%d x %d; %s), numbers in %s\n", run.file(stem + ".png").c_str(),
              canvas.w, canvas.h, summary, run.file(stem + ".csv").c_str());
  return kExitOk;
}

void validate(const Settings& s) {
  if (s.model != "glevr" && s.model != "glevr-hetero" && s.model != "mlp") {
    throw ValueError("--model: '" + s.model + "' (glevr, glevr-hetero or mlp)");
  }
  if (!s.text.empty() && s.model != "glevr-hetero") {
    throw ValueError(
        "--text: captions need --model glevr-hetero (their width differs from the "
        "video features')");
  }
  if (s.model == "glevr-hetero" && (s.text.empty() || !s.input_projection)) {
    throw ValueError("--model glevr-hetero needs --text DIR and input projections");
  }
  if (s.captions_at_test && s.text.empty()) {
    throw ValueError("--captions-at-test needs --text DIR");
  }
  if (s.cross_view != "ego-to-exo" && s.cross_view != "exo-to-ego" && s.cross_view != "both") {
    throw ValueError("--cross-view: '" + s.cross_view + "' (ego-to-exo, exo-to-ego or both)");
  }
  if (s.tau < 0) throw ValueError("--tau must be >= 0");
  if (!(s.dropout >= 0 && s.dropout < 1)) throw ValueError("--dropout must be in [0, 1)");
  if (!(s.t_max > 0)) throw ValueError("--t-max must be > 0");
  if (s.eval_batch_size <= 0) throw ValueError("--eval-batch-size must be > 0");
  if (s.annotations.empty() != s.features.empty()) {
    throw ValueError(s.annotations.empty() ? "--features needs --annotations DIR"
                                           : "--annotations needs --features DIR");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Ego-Exo4D fine-grained keystep recognition with GLEVR (a graph per take: temporal edges,\n"
      "exo views and captions in training), its heterogeneous variant, or a per-segment MLP.\n"
      "With no data flags: the synthetic set in <cache-dir>/keystep-synthetic, generated once.\n"
      "Evaluation follows the challenge rule: ego video only (captions only with "
      "--captions-at-test).",
      kProgram};
  Settings s;
  s.common.epochs = 60;
  s.common.batch_size = 32;
  s.common.lr = 5e-4;
  s.common.weight_decay = 0.01;
  add_common_flags(app, s.common);
  app.get_option("--batch-size")->description("takes per batch (one graph each)");
  app.get_option("--eval")->description(
      "evaluate this checkpoint only (no training; settings from the config.json beside it "
      "unless --config); predictions go to a new run directory unless --out");
  app.add_option("--annotations", s.annotations,
                 "directory with keystep_segment_{train,val,test_unannotated}.json and "
                 "label_mapping.csv (or its keystep_benchmark/ parent)");
  app.add_option("--features", s.features,
                 "directory searched recursively for <take_uid>_<camera>[_<stream>].{pt,npy}");
  app.add_option("--text", s.text,
                 "directory of caption features <take_uid>.npy [segments, D] (glevr-hetero)");
  app.add_flag("--exo", s.exo, "add the exo views to the training graphs (never at evaluation)");
  app.add_option("--model", s.model, "glevr, glevr-hetero or mlp")->capture_default_str();
  app.add_flag("--skip-missing", s.skip_missing,
               "skip segments and views whose features are missing instead of failing");
  app.add_flag("--captions-at-test", s.captions_at_test,
               "caption nodes in evaluation graphs too (departs from the challenge rule)");
  app.add_option("--tau", s.tau, "temporal window of the graph edges")->capture_default_str();
  app.add_option("--cross-view", s.cross_view,
                 "direction of the ego-exo edges: ego-to-exo (released), exo-to-ego, both")
      ->capture_default_str();
  app.add_option("--exo-to-exo", s.exo_to_exo, "edges between exo views of a segment (true/false)")
      ->capture_default_str();
  app.add_option("--hidden", s.hidden, "C2 (0 = 1024, or 512 with --text, as released)")
      ->capture_default_str();
  app.add_option("--channels", s.channels, "C1 (0 = the video feature width)")
      ->capture_default_str();
  app.add_option("--input-projection", s.input_projection,
                 "Linear(input -> C1) per node type before BatchNorm -> ReLU, as released "
                 "(true/false; glevr-hetero needs it)")
      ->capture_default_str();
  app.add_option("--dropout", s.dropout, "dropout after each stream's EdgeConv")
      ->capture_default_str();
  app.add_option("--mlp-hidden", s.mlp_hidden, "hidden width of the MLP baseline")
      ->capture_default_str();
  app.add_option("--t-max", s.t_max, "cosine annealing period (epochs; torch CosineAnnealingLR)")
      ->capture_default_str();
  app.add_option("--min-lr", s.min_lr, "cosine floor (eta_min)")->capture_default_str();
  app.add_option("--eval-batch-size", s.eval_batch_size, "takes per evaluation batch")
      ->capture_default_str();
  app.add_option("--fps", s.fps, "feature timing: frames per second")->capture_default_str();
  app.add_option("--window", s.window, "feature timing: frames per clip")->capture_default_str();
  app.add_option("--stride", s.stride, "feature timing: frames between clips")
      ->capture_default_str();
  app.add_option("--cache-dir", s.cache_dir, "where the default synthetic set is cached")
      ->capture_default_str();
  std::string make_synthetic_dir;
  app.add_option("--make-synthetic", make_synthetic_dir,
                 "write a synthetic data set in the official layout to DIR and exit");
  app.add_option("--synthetic-option", s.synthetic_options,
                 "KEY=VALUE knob of the synthetic set (repeatable): seed, scenarios, "
                 "steps_per_scenario, train_takes, val_takes, test_takes, min_segments, "
                 "max_segments, dim, text_dim, exo_views, class_signal, take_shift, ... "
                 "(see src/data/keystep_synthetic.h)");
  std::string plot_take_id;
  app.add_option("--plot-take", plot_take_id,
                 "with --eval CKPT: draw take TAKE (take_uid or take_name, any split) as a "
                 "timeline of true vs predicted keysteps into <run dir>/timeline_<take_uid>.png "
                 "(+ .csv) and exit");
  app.add_option("--stop-after-steps", s.stop_after_steps,
                 "debugging: stop as if interrupted after N training steps")
      ->group("");

  // --resume DIR reads DIR/config.json, and --eval CKPT the config.json beside CKPT when there
  // is one, for every flag not given on the command line.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (std::find(args.begin(), args.end(), "--config") != args.end()) break;
    if (args[i] == "--resume") {
      args.push_back("--config");
      args.push_back(args[i + 1] + "/config.json");
      break;
    }
    const std::filesystem::path beside =
        std::filesystem::path(args[i + 1]).parent_path() / "config.json";
    if (args[i] == "--eval" && std::filesystem::exists(beside)) {
      args.push_back("--config");
      args.push_back(beside.string());
      break;
    }
  }
  std::reverse(args.begin(), args.end());
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitBadInput;
  }

  // Evaluation and pictures write a new run directory unless --out is typed: the "out" of a
  // training run's config.json must not be overwritten.
  if (!s.common.eval.empty() && !given_on_command_line(argc, argv, "--out")) s.common.out.clear();

  try {
    if (!make_synthetic_dir.empty()) {
      make_synthetic(make_synthetic_dir, synthetic_options(s));
      return kExitOk;
    }
    validate(s);
    const int threads = apply_threads(s.common.threads);
    install_interrupt_handler();
    const bool live = !s.common.quiet && stdout_is_terminal();
    if (s.annotations.empty()) {
      const std::string dir = cached_synthetic(s);
      s.annotations = dir + "/annotations/keystep_benchmark";
      s.features = dir + "/features/omnivore_video";
    }
    if (!s.text.empty()) {
      std::printf("captions: %s in the training graphs\n", s.text.c_str());
    }
    if (s.captions_at_test) {
      const char* loud =
          "\n*** CAPTIONS AT TEST TIME (--captions-at-test): evaluation graphs include caption "
          "nodes. ***\n*** This departs from the challenge rule (ego video only); report the "
          "numbers as such.   ***\n\n";
      std::printf("%s", loud);
      std::fprintf(stderr, "%s", loud);
    }
    std::printf("threads: %d\n", threads);
    if (!plot_take_id.empty()) {
      if (s.common.eval.empty()) {
        throw ValueError("--plot-take needs a checkpoint: --eval RUN/best.safetensors");
      }
      return plot_take(s, plot_take_id);
    }
    const Data data = load_data(s);

    if (!s.common.eval.empty()) {
      Rng rng(s.common.seed);
      KeystepModel model =
          make_model(s, data.video_dim, data.text_dim, data.mapping.num_classes(), rng);
      load_checkpoint(s.common.eval, model.module(), nullptr);
      RunDirectory run(s.common.out.empty() ? RunDirectory::default_path(kProgram) : s.common.out);
      nlohmann::json config = settings_json(s);
      config["program"] = kProgram;
      config["git_commit"] = git_commit();
      config["evaluated_checkpoint"] = s.common.eval;
      run.write_config(config);
      TrainState st;
      st.best_epoch = -1;
      return finish_run(s, data, model, run, st, std::chrono::steady_clock::now());
    }

    const std::string out = !s.common.resume.empty() ? s.common.resume
                            : s.common.out.empty()   ? RunDirectory::default_path(kProgram)
                                                     : s.common.out;
    RunDirectory run(out);
    const bool resume =
        !s.common.resume.empty() && std::filesystem::exists(run.file("last.safetensors"));
    if (!resume) {
      nlohmann::json config = settings_json(s);
      config["out"] = run.path();
      config["program"] = kProgram;
      config["git_commit"] = git_commit();
      config["threads_used"] = threads;
      config["video_dim"] = data.video_dim;
      config["text_dim"] = data.text_dim;
      config["classes"] = data.mapping.num_classes();
      run.write_config(config);
    }
    std::printf("run directory: %s\n", run.path().c_str());
    return train(s, data, run, resume, live);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return kExitBadInput;
  }
}
