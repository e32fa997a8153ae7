// video_exp: train RSTG (or a baseline) on your own labelled video clips, and label new ones.
//
//   ./video_exp --clips DIR --labels labels.csv            train (CSV:
//   path,label[,start,end][,split])
//   ./video_exp --eval RUN/best.safetensors --config RUN/config.json --clips DIR2 [--labels L2.csv]
//                                                          predictions_<name>.csv for a folder
//
// Every clip is decoded once: T frames sampled uniformly over the clip (or its [start, end)),
// resized to --size, stored as bytes in a cache file (the run directory's clips.cache, or
// --cache) that later epochs, --resume and later runs with the same --cache reuse.
// Flags, run directory and exit codes follow shared/design/cli.md.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/parallel.h"
#include "common/cli.h"
#include "common/interrupt.h"
#include "common/progress.h"
#include "common/run_dir.h"
#include "common/trainer.h"
#include "models/rstg.h"
#include "nn/checkpoint.h"
#include "video/clip_dataset.h"

using namespace stgnn;
using namespace stgnn::experiments;

namespace {

constexpr const char* kProgram = "video_exp";

// Every setting of a run. Keys of config.json are the flag names.
struct Settings {
  CommonFlags common;
  std::string clips, labels, cache, eval_name;
  bool skip_bad = false;
  int64_t frames = 10;
  int channels = 1;
  int size = 64;
  double val_fraction = 0.2;
  std::string variant = "all-temp-stages";
  std::string cell = "lstm";
  std::vector<int64_t> widths = {32, 64, 128};
  bool backbone_bn = true;
  int64_t node_dim = 128;
  int64_t stages = 3;
  std::vector<int64_t> grids = {3, 2, 1};
  int64_t eval_batch_size = 32;
  double warmup_epochs = 1.0;
  std::string schedule = "cosine";
  double min_lr_ratio = 0.02;
  double clip_norm = 5.0;
  bool attention_all_nodes = false;
  bool fully_connected = false;
};

nlohmann::json settings_json(const Settings& s) {
  nlohmann::json j = common_flags_json(s.common);
  j["out"] = s.common.out;
  j["clips"] = s.clips;
  j["labels"] = s.labels;
  j["cache"] = s.cache;
  j["skip-bad"] = s.skip_bad;
  j["frames"] = s.frames;
  j["channels"] = s.channels;
  j["size"] = s.size;
  j["val-fraction"] = s.val_fraction;
  j["variant"] = s.variant;
  j["cell"] = s.cell;
  j["widths"] = join_list(s.widths);
  j["backbone-bn"] = s.backbone_bn;
  j["node-dim"] = s.node_dim;
  j["stages"] = s.stages;
  j["grids"] = join_list(s.grids);
  j["eval-batch-size"] = s.eval_batch_size;
  j["warmup-epochs"] = s.warmup_epochs;
  j["schedule"] = s.schedule;
  j["min-lr-ratio"] = s.min_lr_ratio;
  j["clip-norm"] = s.clip_norm;
  j["attention-all-nodes"] = s.attention_all_nodes;
  j["fully-connected"] = s.fully_connected;
  return j;
}

RstgConfig model_config(const Settings& s, int64_t classes) {
  RstgConfig c;
  c.variant = parse_rstg_variant(s.variant);
  c.in_channels = s.channels;
  c.image_size = s.size;
  c.backbone_channels = s.widths;
  c.backbone_batch_norm = s.backbone_bn;
  c.node_dim = s.node_dim;
  c.stages = s.stages;
  c.grids = s.grids;
  c.cell = s.cell;
  c.classes = classes;
  c.attention_over_all_nodes = s.attention_all_nodes;
  c.fully_connected = s.fully_connected;
  return c;
}

ClipSampling sampling_of(const Settings& s) {
  ClipSampling sampling;
  sampling.frames = s.frames;
  sampling.color = s.channels == 3 ? ColorMode::kRgb : ColorMode::kGray;
  sampling.size = s.size;
  return sampling;
}

// Decodes the clips, printing what happens; "decoding" goes to stdout only when decoding
// really happens, so a reused cache is visible in the log.
DecodedClips decode_with_progress(const ClipList& list, const ClipSampling& sampling, bool live) {
  const int64_t n = static_cast<int64_t>(list.clips.size());
  const auto start = std::chrono::steady_clock::now();
  std::printf("decoding %lld clips (%lld frames of %dx%d each) on %d threads\n",
              static_cast<long long>(n), static_cast<long long>(sampling.frames), sampling.size,
              sampling.size, num_threads());
  std::fflush(stdout);
  DecodedClips clips = decode_clips(list, sampling, [&](int64_t done) {
    if (live && (done == n || done % 8 == 0)) {
      std::printf("\rdecoded %lld/%lld", static_cast<long long>(done), static_cast<long long>(n));
      std::fflush(stdout);
    }
  });
  if (live) std::printf("\r\033[2K");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("decoded %lld clips in %s (%.1f clips/s), %lld failed\n", static_cast<long long>(n),
              format_duration(seconds).c_str(), n / std::max(1e-9, seconds),
              static_cast<long long>(clips.failed()));
  return clips;
}

// The cached frames when the cache matches the clips and settings, else decodes and writes the
// cache.
DecodedClips load_or_decode(const ClipList& list, const ClipSampling& sampling,
                            const std::string& cache_path, bool live, bool* reused) {
  const uint64_t key = clip_cache_key(list, sampling);
  DecodedClips clips;
  std::string why;
  if (read_clip_cache(cache_path, key, &clips, &why)) {
    std::printf("cache: reused %s (%lld clips, no decoding)\n", cache_path.c_str(),
                static_cast<long long>(clips.count));
    *reused = true;
    return clips;
  }
  std::printf("cache: %s: %s\n", cache_path.c_str(), why.c_str());
  *reused = false;
  clips = decode_with_progress(list, sampling, live);
  write_clip_cache(cache_path, clips);
  std::printf("cache: wrote %s\n", cache_path.c_str());
  return clips;
}

// Clips that failed to decode: an error naming them (and --skip-bad) unless skipping is on,
// then a warning per clip. Returns the indices of the good clips.
std::vector<int64_t> usable_clips(const ClipList& list, const DecodedClips& clips, bool skip_bad) {
  std::vector<int64_t> good;
  std::string failures;
  int64_t failed = 0;
  for (int64_t i = 0; i < clips.count; ++i) {
    const std::string& error = clips.errors[static_cast<size_t>(i)];
    if (error.empty()) {
      good.push_back(i);
      continue;
    }
    if (failed++ < 10) failures += "\n  " + list.where(static_cast<size_t>(i)) + ": " + error;
  }
  if (failed == 0) return good;
  if (failed > 10) failures += "\n  ... and " + std::to_string(failed - 10) + " more";
  if (!skip_bad) {
    throw FormatError(std::to_string(failed) + " of " + std::to_string(clips.count) +
                      " clips could not be decoded (--skip-bad leaves them out):" + failures);
  }
  std::fprintf(stderr, "%s: skipped %lld undecodable clips:%s\n", kProgram,
               static_cast<long long>(failed), failures.c_str());
  return good;
}

// Frames of the clips `indices` as a float batch [B, T, C, S, S] in [0, 1].
Tensor clips_tensor(const DecodedClips& clips, const std::vector<int64_t>& indices) {
  const int64_t b = static_cast<int64_t>(indices.size()), per = clips.clip_bytes();
  Tensor t = Tensor::empty({b, clips.frames, clips.channels, clips.size, clips.size});
  float* dst = t.data();
  parallel_for(b * per, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      dst[i] = static_cast<float>(clips.clip(indices[static_cast<size_t>(i / per)])[i % per]) *
               (1.0f / 255.0f);
    }
  });
  return t;
}

// CSV field, quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// predictions CSV: path,label,pred,probability for every clip of the list; `rows` are the
// evaluated clips (indices into the list) in evaluation order. Clips left out have an empty
// prediction.
std::string predictions_csv(const ClipList& list, const std::vector<std::string>& names,
                            const std::vector<int64_t>& rows, const Evaluation& eval) {
  std::vector<int64_t> row_of(list.clips.size(), -1);
  for (size_t r = 0; r < rows.size(); ++r)
    row_of[static_cast<size_t>(rows[r])] = static_cast<int64_t>(r);
  std::ostringstream csv;
  csv << "path,label,pred,probability\n";
  for (size_t i = 0; i < list.clips.size(); ++i) {
    csv << csv_field(list.clips[i].path) << ',' << csv_field(list.clips[i].label) << ',';
    if (row_of[i] >= 0) {
      const size_t r = static_cast<size_t>(row_of[i]);
      csv << csv_field(names[static_cast<size_t>(eval.predictions[r])]) << ','
          << eval.probabilities[r];
    } else {
      csv << ',';
    }
    csv << '\n';
  }
  return csv.str();
}

// Class id of every clip's label (-1 when empty). FormatError naming the CSV line for a label
// that is not one of `names`.
std::vector<int64_t> label_ids(const ClipList& list, const std::vector<std::string>& names) {
  std::map<std::string, int64_t> id;
  for (size_t k = 0; k < names.size(); ++k)
    id[names[k]] = static_cast<int64_t>(k);
  std::vector<int64_t> ids;
  for (size_t i = 0; i < list.clips.size(); ++i) {
    const std::string& label = list.clips[i].label;
    if (label.empty()) {
      ids.push_back(-1);
      continue;
    }
    const auto it = id.find(label);
    if (it == id.end()) {
      std::string known;
      for (size_t k = 0; k < names.size() && k < 20; ++k)
        known += (k ? ", " : "") + names[k];
      if (names.size() > 20) known += ", ...";
      throw FormatError(list.where(i) + ": label '" + label + "' is not one of the " +
                        std::to_string(names.size()) + " training labels (" + known + ")");
    }
    ids.push_back(it->second);
  }
  return ids;
}

std::vector<std::string> read_label_names(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError("labels file '" + path + "': " + e.what());
  }
  if (!j.is_object() || !j.contains("labels") || !j["labels"].is_array())
    throw FormatError("labels file '" + path + "': expected {\"labels\": [names...]}");
  std::vector<std::string> names;
  for (const auto& name : j["labels"]) {
    if (!name.is_string()) throw FormatError("labels file '" + path + "': a label is not a string");
    names.push_back(name.get<std::string>());
  }
  if (names.size() < 2) throw FormatError("labels file '" + path + "': fewer than 2 labels");
  return names;
}

std::string labels_json(const std::vector<std::string>& names) {
  return nlohmann::json{{"labels", names}}.dump(2) + "\n";
}

// A file-name-safe version of `text`.
std::string safe_name(const std::string& text) {
  std::string out;
  for (char c : text)
    out +=
        std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '_';
  return out.empty() || out == "." || out == ".." ? "clips" : out;
}

int run_training(const Settings& s, bool live, int threads) {
  const auto wall_start = std::chrono::steady_clock::now();
  if (s.clips.empty() && s.labels.empty())
    throw ValueError("--clips DIR --labels FILE.csv are needed to train (see --help)");
  if (s.labels.empty())
    throw ValueError("--labels: a CSV path,label[,start,end][,split] is needed to train");
  const ClipList list = read_clip_list(s.labels, s.clips);
  for (size_t i = 0; i < list.clips.size(); ++i) {
    if (list.clips[i].label.empty())
      throw FormatError(list.where(i) + ": clip '" + list.clips[i].path + "' has no label");
  }
  const std::vector<std::string> names = label_names(list);
  if (names.size() < 2)
    throw FormatError(s.labels + ": only one label ('" + names[0] + "'); training needs two");
  const std::vector<int64_t> ids = label_ids(list, names);
  const std::vector<bool> is_val = validation_mask(list, s.val_fraction, s.common.seed);

  const std::string out = !s.common.resume.empty() ? s.common.resume
                          : s.common.out.empty()   ? RunDirectory::default_path(kProgram)
                                                   : s.common.out;
  RunDirectory run(out);
  const bool resume = !s.common.resume.empty();
  if (resume) {
    if (read_label_names(run.file("labels.json")) != names) {
      throw ValueError("--resume: the labels of " + s.labels + " differ from " +
                       run.file("labels.json") + " (the run was started with other labels)");
    }
  } else {
    nlohmann::json config = settings_json(s);
    config["out"] = run.path();
    config["program"] = kProgram;
    config["git_commit"] = git_commit();
    config["threads_used"] = threads;
    run.write_config(config);
    run.write_text("labels.json", labels_json(names));
  }
  std::printf("run directory: %s\n", run.path().c_str());

  const ClipSampling sampling = sampling_of(s);
  const auto decode_start = std::chrono::steady_clock::now();
  bool reused = false;
  const DecodedClips clips = load_or_decode(
      list, sampling, s.cache.empty() ? run.file("clips.cache") : s.cache, live, &reused);
  const double decode_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - decode_start).count();
  const std::vector<int64_t> good = usable_clips(list, clips, s.skip_bad);
  std::vector<int64_t> train_clips, val_clips;
  for (int64_t i : good)
    (is_val[static_cast<size_t>(i)] ? val_clips : train_clips).push_back(i);
  if (train_clips.empty()) throw ValueError(s.labels + ": no training clips");
  if (val_clips.empty()) {
    throw ValueError(s.labels + ": no validation clips (set --val-fraction > 0, or mark rows " +
                     "split=val when the CSV has a split column)");
  }
  std::printf(
      "data: %lld clips (%lld train, %lld val, %lld skipped), %zu classes, %lld frames of "
      "%dx%d %s\n",
      static_cast<long long>(list.clips.size()), static_cast<long long>(train_clips.size()),
      static_cast<long long>(val_clips.size()), static_cast<long long>(clips.failed()),
      names.size(), static_cast<long long>(s.frames), s.size, s.size,
      s.channels == 3 ? "RGB" : "gray");

  manual_seed(s.common.seed);
  Rng init_rng(s.common.seed);
  Rstg model(model_config(s, static_cast<int64_t>(names.size())), init_rng);
  const int64_t batch = s.common.batch_size;
  const int64_t train_count = static_cast<int64_t>(train_clips.size());
  TrainerOptions recipe;
  recipe.program = kProgram;
  recipe.items = "clips";
  recipe.epochs = s.common.epochs;
  recipe.steps_per_epoch = (train_count + batch - 1) / batch;
  recipe.lr = s.common.lr;
  recipe.weight_decay = s.common.weight_decay;
  recipe.schedule = s.schedule;
  recipe.warmup_epochs = s.warmup_epochs;
  recipe.min_lr_ratio = s.min_lr_ratio;
  recipe.clip_norm = s.clip_norm;
  recipe.eval_batch_size = s.eval_batch_size;
  recipe.live = live;
  recipe.config_json = settings_json(s).dump();
  recipe.extra_metadata["labels"] = nlohmann::json(names).dump();
  const ForwardFn forward = [&model](const Tensor& video) { return model.forward(video); };
  ClassifierTrainer trainer(model, forward, run, recipe);
  if (resume) trainer.resume();
  std::printf(
      "model: RSTG %s, %lld parameters, backbone %s, D = %lld, K = %lld, grids %s, %s time "
      "cell\n",
      s.variant.c_str(), static_cast<long long>(model.parameter_count()),
      join_list(s.widths).c_str(), static_cast<long long>(s.node_dim),
      static_cast<long long>(s.stages), join_list(s.grids).c_str(), s.cell.c_str());
  std::printf(
      "training: %lld epochs x %lld clips, batch %lld, %s lr %g (%s, warm-up %.1f epochs)\n",
      static_cast<long long>(s.common.epochs), static_cast<long long>(train_count),
      static_cast<long long>(batch), trainer.optimizer_name().c_str(), s.common.lr,
      s.schedule.c_str(), s.warmup_epochs);
  std::fflush(stdout);

  // Epoch e visits the training clips in a shuffled order keyed by (seed, e): a resumed run
  // replays the order an uninterrupted one would have used.
  const Rng order_rng(mix64(s.common.seed ^ 0x0de7c11b5ULL));
  const BatchProviderFn train_batches = [&](int64_t epoch, int64_t step, int64_t) {
    std::vector<int64_t> order = train_clips;
    Rng rng = order_rng.fork(static_cast<uint64_t>(epoch));
    rng.shuffle(order.begin(), order.end());
    const int64_t begin = step * batch, end = std::min(train_count, begin + batch);
    const std::vector<int64_t> members(order.begin() + begin, order.begin() + end);
    std::vector<int64_t> labels;
    for (int64_t i : members)
      labels.push_back(ids[static_cast<size_t>(i)]);
    return LabelledBatch{clips_tensor(clips, members), labels};
  };
  const FetchFn val_batches = [&](int64_t start, int64_t count) {
    const std::vector<int64_t> members(val_clips.begin() + start,
                                       val_clips.begin() + start + count);
    std::vector<int64_t> labels;
    for (int64_t i : members)
      labels.push_back(ids[static_cast<size_t>(i)]);
    return LabelledBatch{clips_tensor(clips, members), labels};
  };
  const TrainingOutcome trained =
      trainer.fit(train_batches, static_cast<int64_t>(val_clips.size()), val_batches);
  if (trained.exit_code != kExitOk) return trained.exit_code;

  // Predictions of the best epoch on the validation clips.
  if (trained.best_epoch > 0) load_checkpoint(run.file("best.safetensors"), model, nullptr);
  const Evaluation val = evaluate_classifier(model, forward, static_cast<int64_t>(val_clips.size()),
                                             s.eval_batch_size, val_batches);
  ClipList val_list;
  val_list.source = list.source;
  for (int64_t i : val_clips)
    val_list.clips.push_back(list.clips[static_cast<size_t>(i)]);
  std::vector<int64_t> rows(val_clips.size());
  for (size_t r = 0; r < rows.size(); ++r)
    rows[r] = static_cast<int64_t>(r);
  run.write_text("predictions_val.csv", predictions_csv(val_list, names, rows, val));
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  nlohmann::json skipped = nlohmann::json::array();
  for (int64_t i = 0; i < clips.count; ++i) {
    if (!clips.errors[static_cast<size_t>(i)].empty())
      skipped.push_back({{"path", list.clips[static_cast<size_t>(i)].path},
                         {"error", clips.errors[static_cast<size_t>(i)]}});
  }
  run.write_results({{"val_top1", val.accuracy},
                     {"val_top5", val.top5},
                     {"val_loss", val.loss},
                     {"val_clips", val_clips.size()},
                     {"train_clips", train_clips.size()},
                     {"classes", names.size()},
                     {"skipped_clips", skipped.size()},
                     {"skipped", skipped},
                     {"best_epoch", trained.best_epoch},
                     {"best_val_loss", trained.best_val_loss},
                     {"train_items", trained.trained_items},
                     {"train_seconds", trained.trained_seconds},
                     {"train_clips_per_s", trained.items_per_s()},
                     {"cache_reused", reused},
                     {"decode_seconds", decode_seconds},
                     {"wall_seconds", wall_seconds},
                     {"peak_memory_mib", peak_memory_mib()},
                     {"threads", num_threads()}});
  std::printf(
      "result: val accuracy %.2f%% (top-5 %.2f%%) on %zu clips | best epoch %lld | train "
      "%.1f clips/s | wall %s | run dir %s\n",
      100 * val.accuracy, 100 * val.top5, val_clips.size(),
      static_cast<long long>(trained.best_epoch), trained.items_per_s(),
      format_duration(wall_seconds).c_str(), run.path().c_str());
  return kExitOk;
}

// clips_given / labels_given / out_given: --clips / --labels / --out on the command line (a
// saved config.json names the training clips and run directory, which are not what this
// evaluation is about).
int run_evaluation(Settings s, bool clips_given, bool labels_given, bool out_given, bool live,
                   bool config_given) {
  const std::string checkpoint = s.common.eval;
  const std::string run_dir = std::filesystem::path(checkpoint).parent_path().string();
  const std::string beside = (run_dir.empty() ? "." : run_dir) + "/";
  if (std::filesystem::exists(beside + "config.json") && !config_given) {
    throw ValueError("--eval: pass --config " + beside + "config.json so the model matches the " +
                     "checkpoint");
  }
  if (!clips_given) s.clips.clear();
  if (!labels_given) s.labels.clear();
  if (s.clips.empty() && s.labels.empty())
    throw ValueError("--eval: --clips DIR (and/or --labels FILE.csv) names the clips to label");
  const std::vector<std::string> names = read_label_names(beside + "labels.json");
  const ClipList list = labels_given ? read_clip_list(s.labels, s.clips) : list_clip_files(s.clips);
  const std::vector<int64_t> ids = label_ids(list, names);
  Rstg model(model_config(s, static_cast<int64_t>(names.size())));
  const auto meta = load_checkpoint(checkpoint, model, nullptr);
  if (meta.count("labels") && nlohmann::json::parse(meta.at("labels")) != nlohmann::json(names)) {
    throw FormatError("--eval: " + beside + "labels.json does not match the labels stored in '" +
                      checkpoint + "'");
  }
  // Predictions go beside the checkpoint unless --out says otherwise (the "out" of a saved
  // config.json is where the run was, which need not be where it is now).
  RunDirectory run(out_given ? s.common.out : (run_dir.empty() ? "." : run_dir));
  const std::string name = safe_name(
      !s.eval_name.empty() ? s.eval_name
      : !s.clips.empty()   ? std::filesystem::path(s.clips).lexically_normal().filename().string()
                           : std::filesystem::path(s.labels).stem().string());
  const DecodedClips clips = decode_with_progress(list, sampling_of(s), live);
  const std::vector<int64_t> good = usable_clips(list, clips, s.skip_bad);
  const ForwardFn forward = [&model](const Tensor& video) { return model.forward(video); };
  const Evaluation eval = evaluate_classifier(
      model, forward, static_cast<int64_t>(good.size()), s.eval_batch_size,
      [&](int64_t start, int64_t count) {
        const std::vector<int64_t> members(good.begin() + start, good.begin() + start + count);
        std::vector<int64_t> labels;
        for (int64_t i : members)
          labels.push_back(ids[static_cast<size_t>(i)]);
        return LabelledBatch{clips_tensor(clips, members), labels};
      });
  const std::string file = "predictions_" + name + ".csv";
  run.write_text(file, predictions_csv(list, names, good, eval));
  nlohmann::json summary = settings_json(s);
  summary["program"] = kProgram;
  summary["git_commit"] = git_commit();
  summary["evaluated_checkpoint"] = checkpoint;
  summary["clips_evaluated"] = good.size();
  summary["clips_skipped"] = clips.failed();
  summary["clips_labelled"] = eval.labelled;
  if (eval.labelled > 0) {
    summary["top1"] = eval.accuracy;
    summary["top5"] = eval.top5;
    summary["loss"] = eval.loss;
  }
  run.write_text("eval_" + name + ".json", summary.dump(2) + "\n");
  if (eval.labelled > 0) {
    std::printf("result: accuracy %.2f%% (top-5 %.2f%%) on %lld labelled clips | %s\n",
                100 * eval.accuracy, 100 * eval.top5, static_cast<long long>(eval.labelled),
                run.file(file).c_str());
  } else {
    std::printf("result: %zu clips labelled | %s\n", good.size(), run.file(file).c_str());
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Train RSTG (or a baseline) on your own labelled video clips, or label a folder of clips "
      "with a trained checkpoint.\n"
      "  train:  video_exp --clips DIR --labels labels.csv   (CSV header: "
      "path,label[,start,end][,split])\n"
      "  label:  video_exp --eval RUN/best.safetensors --config RUN/config.json --clips DIR2 "
      "[--labels L2.csv]",
      kProgram};
  Settings s;
  s.common.epochs = 30;
  s.common.batch_size = 8;
  s.common.lr = 2e-3;
  add_common_flags(app, s.common);
  app.add_option("--clips", s.clips,
                 "directory the CSV's relative paths start from (default: the CSV's directory); "
                 "with --eval and no --labels, every video file under it");
  app.add_option("--labels", s.labels,
                 "CSV with a header: path,label and optional start,end (seconds), split "
                 "(train|val)");
  app.add_option("--cache", s.cache,
                 "decoded-frames cache file (default: clips.cache in the run directory); give the "
                 "same path to later runs to skip decoding");
  app.add_flag("--skip-bad", s.skip_bad,
               "leave out clips that cannot be decoded (counted and listed) instead of stopping");
  app.add_option("--frames", s.frames, "frames sampled uniformly per clip (T)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1000}));
  app.add_option("--channels", s.channels, "1 = gray, 3 = RGB")
      ->capture_default_str()
      ->check(CLI::IsMember({1, 3}));
  app.add_option("--size", s.size, "frames are resized to size x size")
      ->capture_default_str()
      ->check(CLI::Range(8, 1024));
  app.add_option("--val-fraction", s.val_fraction,
                 "fraction of each label's clips held out for validation (seeded), when the CSV "
                 "has no split column")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.95));
  std::string variants_help = "model variant:";
  for (const std::string& v : rstg_variant_names())
    variants_help += " " + v;
  app.add_option("--variant", s.variant, variants_help)
      ->capture_default_str()
      ->check(CLI::IsMember(rstg_variant_names()));
  app.add_option("--cell", s.cell, "time-stage cell: lstm or gru")
      ->capture_default_str()
      ->check(CLI::IsMember({"lstm", "gru"}));
  std::string widths_text = join_list(s.widths), grids_text = join_list(s.grids);
  app.add_option("--widths", widths_text,
                 "backbone conv widths, comma-separated (each block: conv 3x3, pool 2)")
      ->capture_default_str();
  app.add_option("--backbone-bn", s.backbone_bn, "BatchNorm after each backbone conv (true/false)")
      ->capture_default_str();
  app.add_option("--node-dim", s.node_dim, "node feature size D")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--stages", s.stages, "space-time stages K")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--grids", grids_text, "region grids over the feature map, e.g. 3,2,1")
      ->capture_default_str();
  app.add_option("--eval-batch-size", s.eval_batch_size, "clips per evaluation batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup-epochs", s.warmup_epochs, "linear learning-rate warm-up (epochs)")
      ->capture_default_str();
  app.add_option("--schedule", s.schedule, "learning-rate schedule: cosine, step, constant")
      ->capture_default_str();
  app.add_option("--min-lr-ratio", s.min_lr_ratio, "cosine floor as a fraction of --lr")
      ->capture_default_str();
  app.add_option("--clip-norm", s.clip_norm, "clip gradients to this global norm (0 = off)")
      ->capture_default_str();
  app.add_flag("--attention-all-nodes", s.attention_all_nodes,
               "released-code attention: softmax over all nodes");
  app.add_flag("--fully-connected", s.fully_connected, "region graph with all node pairs");
  app.add_option("--eval-name", s.eval_name,
                 "with --eval: predictions_<name>.csv (default: the --clips directory's name)");

  if (const int code = parse_command_line(app, argc, argv); code >= 0) return code;
  try {
    s.widths = parse_positive_list(widths_text, "--widths");
    s.grids = parse_positive_list(grids_text, "--grids");
    const int threads = apply_threads(s.common.threads);
    install_interrupt_handler();
    const bool live = !s.common.quiet && stdout_is_terminal();
    if (!s.common.eval.empty()) {
      return run_evaluation(s, given_on_command_line(argc, argv, "--clips"),
                            given_on_command_line(argc, argv, "--labels"),
                            given_on_command_line(argc, argv, "--out"), live,
                            app.get_option("--config")->count() > 0);
    }
    return run_training(s, live, threads);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return kExitBadInput;
  }
}
