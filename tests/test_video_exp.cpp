// video_exp and what it is built on: clip lists (CSV parsing with line-numbered errors, label
// names, seeded validation split), decoding clips into the frame cache and validating it, the
// shared evaluation and training loop, and the program itself end to end: clips of a white
// square moving left or right, made with the ffmpeg command line, that only motion tells
// apart; RSTG has to learn them, reuse its cache and label a folder with --eval.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/error.h"
#include "autograd/ops.h"
#include "autograd/rng.h"
#include "common/trainer.h"
#include "nn/checkpoint.h"
#include "video/clip_dataset.h"

using namespace stgnn;
using namespace stgnn::experiments;
namespace fs = std::filesystem;

namespace {

// A fresh empty directory under the system temp dir, removed when the object dies.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("stgnn_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_text(const std::string& path) {
  return fs::exists(path) ? read_file(path) : std::string();
}

// Runs a shell command; its exit status.
int run_shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The video_exp program built next to this test binary.
std::string video_exp_binary() {
  return (fs::canonical("/proc/self/exe").parent_path() / "video_exp").string();
}

struct ProgramRun {
  int code;
  std::string out, err;
  double seconds;
};

// Runs video_exp with `args`, capturing stdout and stderr into files under `dir`.
ProgramRun run_video_exp(const TempDir& dir, const std::string& args) {
  static int counter = 0;
  const std::string tag = std::to_string(counter++);
  const std::string out = dir / ("out" + tag + ".txt"), err = dir / ("err" + tag + ".txt");
  const auto start = std::chrono::steady_clock::now();
  const int code = run_shell(video_exp_binary() + " " + args + " > " + out + " 2> " + err);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {code, read_text(out), read_text(err), seconds};
}

struct MotionClip {
  std::string name, label, split;
};

// per_class clips of each class in `dir`, 1 s at 25 fps, 64x64: a white square of a random
// size (8..14 px) at a random height moves right ("right") or left ("left") at 20..40 px/s
// from a random start, so that the positions a single frame shows are the same for both
// classes. Clip k of a class is "train" when k < train_per_class, else "val". One ffmpeg
// process writes them all (libx264). Returns the clips; writes dir/labels.csv.
std::vector<MotionClip> make_motion_clips(const std::string& dir, int per_class,
                                          int train_per_class, uint64_t seed) {
  Rng rng(seed);
  const int n = 2 * per_class;
  std::string graph = "[0]split=" + std::to_string(n);
  for (int i = 0; i < n; ++i)
    graph += "[b" + std::to_string(i) + "]";
  std::string outputs, csv = "path,label,split\n";
  std::vector<MotionClip> clips;
  for (int i = 0; i < n; ++i) {
    const bool right = i % 2 == 0;
    const int side = static_cast<int>(rng.randint(8, 15));
    const int speed = static_cast<int>(rng.randint(20, 41));
    const int y = static_cast<int>(rng.randint(0, 64 - side + 1));
    const int x0 = right ? static_cast<int>(rng.randint(0, 64 - side - speed + 1))
                         : static_cast<int>(rng.randint(speed, 64 - side + 1));
    const std::string k = std::to_string(i);
    graph += ";color=c=white:s=" + std::to_string(side) + "x" + std::to_string(side) +
             ":r=25:d=1[w" + k + "];[b" + k + "][w" + k + "]overlay=x='" + std::to_string(x0) +
             (right ? "+" : "-") + std::to_string(speed) + "*t':y=" + std::to_string(y) +
             ":eval=frame[o" + k + "]";
    char name[32];
    std::snprintf(name, sizeof(name), "clip%02d.mp4", i);
    outputs += " -map '[o" + k + "]' -c:v libx264 -pix_fmt yuv420p " + dir + "/" + name;
    MotionClip clip{name, right ? "right" : "left", (i / 2) < train_per_class ? "train" : "val"};
    csv += clip.name + "," + clip.label + "," + clip.split + "\n";
    clips.push_back(clip);
  }
  const std::string command =
      "ffmpeg -nostdin -v error -y -f lavfi -i color=c=black:s=64x64:r=25:d=1 -filter_complex \"" +
      graph + "\"" + outputs + " > " + dir + "/ffmpeg.log 2>&1";
  REQUIRE_MESSAGE(run_shell(command) == 0, "ffmpeg failed: " << read_text(dir + "/ffmpeg.log"));
  write_text(dir + "/labels.csv", csv);
  return clips;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Rows of a CSV file without its header, split at commas (the files here have no quotes).
std::vector<std::vector<std::string>> csv_rows(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(read_text(path));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream fs_(line);
    for (std::string f; std::getline(fs_, f, ',');)
      fields.push_back(f);
    if (!line.empty() && line.back() == ',') fields.emplace_back();
    rows.push_back(fields);
  }
  return rows;
}

}  // namespace

TEST_CASE("clip list: header in any order, quotes, time ranges, splits") {
  TempDir dir("cliplist");
  write_text(dir / "l.csv",
             "label,split,path,start,end\r\n"
             "cat,train,a.mp4,,\r\n"
             "dog,val,\"sub dir/b, c.mp4\",1.5,3\r\n"
             "\r\n"
             "cat,TRAIN,/abs/c.mp4,0.25,\r\n");
  const ClipList list = read_clip_list(dir / "l.csv", "/clips");
  REQUIRE(list.clips.size() == 3);
  CHECK(list.has_split);
  CHECK(list.clips[0].file == "/clips/a.mp4");
  CHECK(list.clips[0].start < 0);
  CHECK(list.clips[0].end < 0);
  CHECK(list.clips[1].path == "sub dir/b, c.mp4");
  CHECK(list.clips[1].file == "/clips/sub dir/b, c.mp4");
  CHECK(list.clips[1].start == 1.5);
  CHECK(list.clips[1].end == 3.0);
  CHECK(list.clips[1].split == "val");
  CHECK(list.clips[1].line == 3);
  CHECK(list.clips[2].file == "/abs/c.mp4");
  CHECK(list.clips[2].split == "train");
  CHECK(list.where(2) == dir / "l.csv" + ":5");
  CHECK(label_names(list) == std::vector<std::string>{"cat", "dog"});

  // Without a clips directory, paths start at the CSV's own directory.
  write_text(dir / "m.csv", "path\nx.gif\n");
  const ClipList unlabelled = read_clip_list(dir / "m.csv", "");
  CHECK(unlabelled.clips[0].file == (dir.path / "x.gif").string());
  CHECK(unlabelled.clips[0].label.empty());
  CHECK_FALSE(unlabelled.has_split);
}

TEST_CASE("clip list: every malformed line is named") {
  TempDir dir("cliperr");
  const auto fails_with = [&](const std::string& text, const std::string& expected) {
    write_text(dir / "bad.csv", text);
    CHECK_THROWS_WITH_AS(read_clip_list(dir / "bad.csv", ""), doctest::Contains(expected.c_str()),
                         FormatError);
  };
  fails_with("", "empty file");
  fails_with("file,label\na.mp4,x\n", "bad.csv:1: unknown column 'file'");
  fails_with("label\nx\n", "bad.csv:1: the header has no 'path' column");
  fails_with("path,path\na,b\n", "column 'path' appears twice");
  fails_with("path,label\na.mp4,x\nb.mp4\n", "bad.csv:3: 1 fields, the header has 2");
  fails_with("path,label\n,x\n", "bad.csv:2: empty path");
  fails_with("path,start\na.mp4,abc\n", "bad.csv:2: start 'abc' is not a non-negative number");
  fails_with("path,start\na.mp4,-1\n", "bad.csv:2: start '-1'");
  fails_with("path,end\na.mp4,nan\n", "bad.csv:2: end 'nan'");
  fails_with("path,start,end\na.mp4,2,1\n", "bad.csv:2: end 1 s is not after start 2 s");
  fails_with("path,split\na.mp4,test\n", "bad.csv:2: split 'test' (train or val)");
  fails_with("path,label\n", "no clips listed");
  fails_with("path,label\n\"a.mp4,x\n", "unterminated");
  CHECK_THROWS_AS(read_clip_list(dir / "missing.csv", ""), IoError);
}

TEST_CASE("label names sort numerically when all are integers; the split is stratified") {
  ClipList list;
  for (const char* label : {"10", "2", "1", "2", "10"})
    list.clips.push_back({"p", "p", label, -1, -1, "", 0});
  CHECK(label_names(list) == std::vector<std::string>{"1", "2", "10"});
  list.clips.push_back({"p", "p", "x", -1, -1, "", 0});
  CHECK(label_names(list) == std::vector<std::string>{"1", "10", "2", "x"});

  ClipList big;
  for (int i = 0; i < 100; ++i)
    big.clips.push_back({"p" + std::to_string(i), "", i < 70 ? "a" : "b", -1, -1, "", 0});
  const std::vector<bool> val = validation_mask(big, 0.2, 7);
  int val_a = 0, val_b = 0;
  for (int i = 0; i < 100; ++i)
    (i < 70 ? val_a : val_b) += val[static_cast<size_t>(i)];
  CHECK(val_a == 14);
  CHECK(val_b == 6);
  CHECK(validation_mask(big, 0.2, 7) == val);
  CHECK(validation_mask(big, 0.2, 8) != val);
  // A class of two still gets one validation clip; a class of one keeps its clip for training.
  ClipList small;
  small.clips = {
      {"a", "", "x", -1, -1, "", 0}, {"b", "", "x", -1, -1, "", 0}, {"c", "", "y", -1, -1, "", 0}};
  const std::vector<bool> small_val = validation_mask(small, 0.1, 1);
  CHECK(small_val[0] + small_val[1] == 1);
  CHECK_FALSE(small_val[2]);
  // A split column decides on its own.
  small.has_split = true;
  small.clips[0].split = "val";
  small.clips[1].split = small.clips[2].split = "train";
  CHECK(validation_mask(small, 0.5, 1) == std::vector<bool>{true, false, false});
  CHECK_THROWS_AS(validation_mask(big, 1.0, 1), ValueError);
}

TEST_CASE("decoding clips: frames, a failing clip recorded, the cache validated by its key") {
  TempDir dir("clipcache");
  make_motion_clips(dir.path.string(), 2, 2, 11);
  write_text(dir / "junk.mp4", "this is not a video");
  write_text(dir / "list.csv",
             "path,label,start,end\nclip00.mp4,right,,\nclip01.mp4,left,0.2,0.6\n"
             "junk.mp4,left,,\nclip02.mp4,right,0,5\n");
  const ClipList list = read_clip_list(dir / "list.csv", "");
  ClipSampling sampling;
  sampling.frames = 4;
  sampling.size = 16;
  int64_t calls = 0;
  const DecodedClips clips = decode_clips(list, sampling, [&](int64_t done) {
    ++calls;
    CHECK(done == calls);
  });
  CHECK(calls == 4);
  REQUIRE(clips.count == 4);
  CHECK(clips.clip_bytes() == 4 * 1 * 16 * 16);
  CHECK(clips.pixels.size() == 4u * 4 * 16 * 16);
  CHECK(clips.errors[0].empty());
  CHECK(clips.errors[1].empty());
  CHECK(contains(clips.errors[2], "junk.mp4"));
  CHECK(contains(clips.errors[3], "clip02.mp4"));  // [0, 5) reaches past the 1 s clip
  CHECK(clips.failed() == 2);
  // The square moves right in clip 0: the centroid of its bright pixels grows along x.
  const auto centroid_x = [&](int64_t clip, int64_t t) {
    const uint8_t* f = clips.clip(clip) + t * 16 * 16;
    double sum = 0, mass = 0;
    for (int y = 0; y < 16; ++y) {
      for (int x = 0; x < 16; ++x) {
        sum += x * f[y * 16 + x];
        mass += f[y * 16 + x];
      }
    }
    return sum / std::max(1.0, mass);
  };
  CHECK(centroid_x(0, 3) > centroid_x(0, 0) + 2);
  CHECK(centroid_x(1, 3) < centroid_x(1, 0));

  const std::string cache = dir / "frames.cache";
  write_clip_cache(cache, clips);
  DecodedClips back;
  std::string why;
  REQUIRE(read_clip_cache(cache, clips.key, &back, &why));
  CHECK(back.pixels == clips.pixels);
  CHECK(back.errors == clips.errors);
  CHECK(back.frames == 4);
  CHECK(back.size == 16);
  CHECK_FALSE(read_clip_cache(cache, clips.key + 1, &back, &why));
  CHECK(why == "built for other clips or settings");
  CHECK_FALSE(read_clip_cache(dir / "none.cache", clips.key, &back, &why));
  CHECK(why == "no cache file");

  // The key follows the sampling, the time ranges and the files themselves.
  ClipSampling rgb = sampling;
  rgb.color = ColorMode::kRgb;
  CHECK(clip_cache_key(list, rgb) != clips.key);
  ClipList shorter = list;
  shorter.clips[1].end = 0.7;
  CHECK(clip_cache_key(shorter, sampling) != clips.key);
  write_text(dir / "junk.mp4", "still not a video, but longer");
  CHECK(clip_cache_key(list, sampling) != clips.key);
  ClipList missing = list;
  missing.clips[0].file = dir / "gone.mp4";
  const std::string not_found = "list.csv:2: clip '" + (dir / "gone.mp4") + "' not found";
  CHECK_THROWS_WITH_AS(clip_cache_key(missing, sampling), doctest::Contains(not_found.c_str()),
                       IoError);

  // Damaged cache files are refused, never read past their end.
  const std::string bytes = read_file(cache);
  write_text(dir / "short.cache", bytes.substr(0, bytes.size() - 1));
  CHECK_FALSE(read_clip_cache(dir / "short.cache", clips.key, &back, &why));
  CHECK(contains(why, "pixel data"));
  write_text(dir / "head.cache", bytes.substr(0, 20));
  CHECK_FALSE(read_clip_cache(dir / "head.cache", clips.key, &back, &why));
  CHECK(why == "truncated header");
  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  write_text(dir / "magic.cache", bad_magic);
  CHECK_FALSE(read_clip_cache(dir / "magic.cache", clips.key, &back, &why));
  CHECK(contains(why, "bad magic"));
  std::string huge_error = bytes;
  const uint32_t length = 0x7fffffff;
  std::memcpy(huge_error.data() + 56, &length, 4);  // the first clip's error length
  write_text(dir / "huge.cache", huge_error);
  CHECK_FALSE(read_clip_cache(dir / "huge.cache", clips.key, &back, &why));
  CHECK(contains(why, "clip table"));

  // A directory listing takes video files only, sorted, recursively.
  fs::create_directories(dir.path / "sub");
  write_text(dir / "sub/z.GIF", "x");
  const ClipList listed = list_clip_files(dir.path.string());
  std::vector<std::string> paths;
  for (const ClipEntry& c : listed.clips)
    paths.push_back(c.path);
  CHECK(paths == std::vector<std::string>{"clip00.mp4", "clip01.mp4", "clip02.mp4", "clip03.mp4",
                                          "junk.mp4", "sub/z.GIF"});
  CHECK_THROWS_AS(list_clip_files(dir / "sub/z.GIF"), IoError);
  fs::create_directories(dir.path / "empty");
  CHECK_THROWS_AS(list_clip_files(dir / "empty"), FormatError);
}

namespace {

// Two Gaussian blobs in 2-D, labels 0 / 1, for the trainer tests.
LabelledBatch blobs(int64_t start, int64_t count) {
  Tensor x = Tensor::empty({count, 2});
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < count; ++i) {
    Rng rng = Rng(5).fork(static_cast<uint64_t>(start + i));
    const int64_t label = (start + i) % 2;
    x.data()[2 * i] = (label ? 1.5f : -1.5f) + rng.normal();
    x.data()[2 * i + 1] = rng.normal();
    labels.push_back(label);
  }
  return {x, labels};
}

}  // namespace

TEST_CASE("evaluate_classifier: unknown labels are left out of loss and accuracy; top-5") {
  Linear model(2, 6, true);
  const ForwardFn forward = [&model](const Tensor& x) { return model.forward(x); };
  const Evaluation all = evaluate_classifier(model, forward, 10, 4, blobs);
  CHECK(all.labelled == 10);
  CHECK(all.predictions.size() == 10);
  CHECK(all.top[0].size() == 5);
  CHECK(all.top[0][0].first == all.predictions[0]);
  CHECK(all.top[0][0].second == doctest::Approx(all.probabilities[0]));
  CHECK(all.top[0][0].second >= all.top[0][1].second);
  CHECK(all.top5 >= all.accuracy);
  const Evaluation half = evaluate_classifier(model, forward, 10, 3, [](int64_t s, int64_t n) {
    LabelledBatch b = blobs(s, n);
    for (size_t i = 0; i < b.labels.size(); ++i) {
      if ((s + static_cast<int64_t>(i)) >= 5) b.labels[i] = -1;
    }
    return b;
  });
  CHECK(half.labelled == 5);
  CHECK(half.predictions == all.predictions);
  const Evaluation first = evaluate_classifier(model, forward, 5, 5, blobs);
  CHECK(half.loss == doctest::Approx(first.loss));
  CHECK(half.accuracy == doctest::Approx(first.accuracy));
  const Evaluation none = evaluate_classifier(model, forward, 3, 3, [](int64_t s, int64_t n) {
    LabelledBatch b = blobs(s, n);
    std::fill(b.labels.begin(), b.labels.end(), -1);
    return b;
  });
  CHECK(none.labelled == 0);
  CHECK(std::isnan(none.accuracy));
  CHECK(model.is_training());
}

TEST_CASE("trainer: learns, writes the run directory, and a resumed run continues exactly") {
  TempDir dir("trainer");
  const auto make = [](uint64_t seed) {
    Rng rng(seed);
    return std::make_unique<Linear>(2, 2, true, rng);
  };
  TrainerOptions options;
  options.program = "test";
  options.steps_per_epoch = 4;
  options.lr = 0.05;
  options.schedule = "constant";
  options.warmup_epochs = 0;
  options.eval_batch_size = 16;
  options.config_json = "{}";
  const BatchProviderFn train = [](int64_t, int64_t, int64_t global_step) {
    return blobs(1000 + global_step * 8, 8);
  };
  // Straight through five epochs.
  auto straight = make(3);
  RunDirectory run_a(dir / "a");
  options.epochs = 5;
  ClassifierTrainer a(
      *straight, [&](const Tensor& x) { return straight->forward(x); }, run_a, options);
  const TrainingOutcome done = a.fit(train, 32, blobs);
  CHECK(done.exit_code == 0);
  CHECK(done.trained_items == 5 * 4 * 8);
  CHECK(run_a.metrics().size() == 5);
  CHECK(run_a.metrics().back().val_acc > 0.8);
  CHECK(fs::exists(dir / "a/best.safetensors"));
  CHECK(fs::exists(dir / "a/last.safetensors"));
  CHECK(contains(read_text(dir / "a/curves.svg"), "<svg"));

  // Three epochs, then a new process (trainer) resumes to five.
  auto first = make(3);
  RunDirectory run_b(dir / "b");
  options.epochs = 3;
  ClassifierTrainer b(
      *first, [&](const Tensor& x) { return first->forward(x); }, run_b, options);
  CHECK(b.fit(train, 32, blobs).exit_code == 0);
  auto second = make(99);  // weights come from the checkpoint
  RunDirectory run_c(dir / "b");
  options.epochs = 5;
  ClassifierTrainer c(
      *second, [&](const Tensor& x) { return second->forward(x); }, run_c, options);
  c.resume();
  const TrainingOutcome resumed = c.fit(train, 32, blobs);
  CHECK(resumed.trained_items == done.trained_items);
  REQUIRE(run_c.metrics().size() == 5);
  for (size_t e = 0; e < 5; ++e) {
    CHECK(run_c.metrics()[e].epoch == static_cast<int64_t>(e + 1));
    // Rows of the first run come back from metrics.csv (6 digits); the resumed ones are exact.
    if (e < 3) {
      CHECK(run_c.metrics()[e].train_loss == doctest::Approx(run_a.metrics()[e].train_loss));
      CHECK(run_c.metrics()[e].val_acc == doctest::Approx(run_a.metrics()[e].val_acc));
    } else {
      CHECK(run_c.metrics()[e].train_loss == run_a.metrics()[e].train_loss);
      CHECK(run_c.metrics()[e].val_loss == run_a.metrics()[e].val_loss);
    }
  }
  const auto wa = straight->named_parameters(), wc = second->named_parameters();
  for (size_t k = 0; k < wa.size(); ++k) {
    for (int64_t i = 0; i < wa[k].second.numel(); ++i)
      CHECK(wa[k].second.data()[i] == wc[k].second.data()[i]);
  }
}

TEST_CASE(
    "video_exp: RSTG learns left vs right motion; the cache is reused; --eval labels a folder") {
  const std::string binary = video_exp_binary();
  REQUIRE_MESSAGE(fs::exists(binary), "build the video_exp target first: " << binary);
  TempDir dir("video_exp");
  const std::string clips_dir = dir / "moving";
  fs::create_directories(clips_dir);
  const std::vector<MotionClip> clips = make_motion_clips(clips_dir, 24, 16, 2024);
  const std::string model_flags =
      "--size 32 --widths 8,16 --node-dim 32 --stages 1 --batch-size 8 --lr 0.01 --threads 2 "
      "--seed 1 --quiet";
  const std::string cache = dir / "frames.cache";

  const ProgramRun train =
      run_video_exp(dir, "--clips " + clips_dir + " --labels " + clips_dir + "/labels.csv --out " +
                             (dir / "run") + " --cache " + cache + " --epochs 14 " + model_flags);
  INFO("stdout:\n" << train.out << "\nstderr:\n" << train.err);
  REQUIRE(train.code == 0);
  // (No wall-time check: speed goals live in bench/, and a loaded CI machine is no measure.)
  CHECK(contains(train.out, "decoding 48 clips"));
  CHECK(contains(train.out, "cache: wrote " + cache));
  CHECK(contains(train.out, "data: 48 clips (32 train, 16 val, 0 skipped), 2 classes"));
  const nlohmann::json results = nlohmann::json::parse(read_text(dir / "run/results.json"));
  CHECK(results["val_top1"].get<double>() >= 0.85);
  CHECK(results["val_clips"] == 16);
  CHECK(results["cache_reused"] == false);
  CHECK(nlohmann::json::parse(read_text(dir / "run/labels.json"))["labels"] ==
        nlohmann::json({"left", "right"}));
  const auto metrics = csv_rows(dir / "run/metrics.csv");
  CHECK(metrics.size() == 14);
  CHECK(fs::exists(dir / "run/best.safetensors"));
  CHECK(fs::exists(dir / "run/curves.svg"));
  const auto val_rows = csv_rows(dir / "run/predictions_val.csv");
  REQUIRE(val_rows.size() == 16);
  CHECK(read_text(dir / "run/predictions_val.csv").rfind("path,label,pred,probability\n", 0) == 0);
  int agree = 0;
  for (const auto& row : val_rows) {
    REQUIRE(row.size() == 4);
    CHECK((row[2] == "left" || row[2] == "right"));
    CHECK(std::stod(row[3]) >= 0.5);
    agree += row[1] == row[2];
  }
  CHECK(agree == std::lround(results["val_top1"].get<double>() * 16));

  // A later run over the same clips and settings reads the cache instead of decoding.
  const ProgramRun again =
      run_video_exp(dir, "--clips " + clips_dir + " --labels " + clips_dir + "/labels.csv --out " +
                             (dir / "run2") + " --cache " + cache + " --epochs 1 " + model_flags);
  INFO("second run stdout:\n" << again.out << "\nstderr:\n" << again.err);
  REQUIRE(again.code == 0);
  CHECK(contains(again.out, "cache: reused " + cache + " (48 clips, no decoding)"));
  CHECK_FALSE(contains(again.out, "decoding 48"));
  CHECK(nlohmann::json::parse(read_text(dir / "run2/results.json"))["cache_reused"] == true);

  // --eval on the folder: every video file, no labels; then with the labels CSV.
  const std::string eval_args = "--eval " + (dir / "run/best.safetensors") + " --config " +
                                (dir / "run/config.json") + " --clips " + clips_dir + " --quiet";
  const ProgramRun folder = run_video_exp(dir, eval_args);
  INFO("eval stdout:\n" << folder.out << "\nstderr:\n" << folder.err);
  REQUIRE(folder.code == 0);
  const auto rows = csv_rows(dir / "run/predictions_moving.csv");
  REQUIRE(rows.size() == 48);
  int correct = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    REQUIRE(rows[i].size() == 4);
    CHECK(rows[i][0] == clips[i].name);
    CHECK(rows[i][1].empty());
    correct += rows[i][2] == clips[i].label;
  }
  CHECK(correct >= 0.85 * 48);
  const ProgramRun labelled =
      run_video_exp(dir, eval_args + " --labels " + clips_dir + "/labels.csv --eval-name named");
  REQUIRE(labelled.code == 0);
  CHECK(contains(labelled.out, "result: accuracy"));
  const auto named = csv_rows(dir / "run/predictions_named.csv");
  REQUIRE(named.size() == 48);
  CHECK(named[0][1] == clips[0].label);
  const nlohmann::json summary = nlohmann::json::parse(read_text(dir / "run/eval_named.json"));
  CHECK(summary["clips_labelled"] == 48);
  CHECK(summary["top1"].get<double>() == doctest::Approx(correct / 48.0));
  // The training run's own files are left alone.
  CHECK(nlohmann::json::parse(read_text(dir / "run/results.json")) == results);
}

TEST_CASE("video_exp: errors name the file and line; --skip-bad leaves bad clips out") {
  const std::string binary = video_exp_binary();
  REQUIRE_MESSAGE(fs::exists(binary), "build the video_exp target first: " << binary);
  TempDir dir("video_exp_errors");
  make_motion_clips(dir.path.string(), 5, 3, 3);
  const std::string tiny =
      "--size 16 --widths 4 --node-dim 4 --stages 1 --grids 2,1 --epochs 1 --threads 2 --quiet";

  write_text(dir / "bad.csv", "path,label,start\nclip00.mp4,right,\nclip01.mp4,left,abc\n");
  ProgramRun r = run_video_exp(dir, "--labels " + (dir / "bad.csv") + " " + tiny);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "bad.csv:3: start 'abc'"));

  write_text(dir / "missing.csv", "path,label\nnothere.mp4,left\nclip00.mp4,right\n");
  r = run_video_exp(dir, "--labels " + (dir / "missing.csv") + " " + tiny);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "missing.csv:2: clip '" + (dir / "nothere.mp4") + "' not found"));

  write_text(dir / "unlabelled.csv", "path,label\nclip00.mp4,\nclip01.mp4,left\n");
  r = run_video_exp(dir, "--labels " + (dir / "unlabelled.csv") + " " + tiny);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "unlabelled.csv:2: clip 'clip00.mp4' has no label"));

  write_text(dir / "junk.mp4", "not a video at all");
  std::string with_junk = read_text(dir / "labels.csv");
  with_junk += "junk.mp4,left,train\n";
  write_text(dir / "with_junk.csv", with_junk);
  r = run_video_exp(
      dir, "--labels " + (dir / "with_junk.csv") + " --out " + (dir / "run_a") + " " + tiny);
  CHECK(r.code == 1);
  CHECK(contains(r.err, "1 of 11 clips could not be decoded (--skip-bad leaves them out)"));
  CHECK(contains(r.err, "with_junk.csv:12: "));
  CHECK(contains(r.err, "junk.mp4"));

  r = run_video_exp(dir, "--labels " + (dir / "with_junk.csv") + " --out " + (dir / "run_b") +
                             " --skip-bad " + tiny);
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.code == 0);
  CHECK(contains(r.err, "skipped 1 undecodable clips"));
  CHECK(contains(r.out, "data: 11 clips (6 train, 4 val, 1 skipped)"));
  const nlohmann::json results = nlohmann::json::parse(read_text(dir / "run_b/results.json"));
  CHECK(results["skipped_clips"] == 1);
  CHECK(results["skipped"][0]["path"] == "junk.mp4");

  // --eval: a label the model was not trained on is named with its line.
  write_text(dir / "l2.csv", "path,label\nclip00.mp4,right\nclip01.mp4,up\n");
  r = run_video_exp(dir, "--eval " + (dir / "run_b/best.safetensors") + " --config " +
                             (dir / "run_b/config.json") + " --labels " + (dir / "l2.csv") +
                             " --quiet");
  CHECK(r.code == 1);
  CHECK(contains(r.err, "l2.csv:3: label 'up' is not one of the 2 training labels (left, right)"));
  // --eval without --config beside a run is refused (the model shape lives there).
  r = run_video_exp(dir, "--eval " + (dir / "run_b/best.safetensors") + " --clips " +
                             dir.path.string() + " --quiet");
  CHECK(r.code == 1);
  CHECK(contains(r.err, "--config"));
  r = run_video_exp(dir, "--help");
  CHECK(r.code == 0);
  CHECK(contains(r.out, "--skip-bad"));
}
