// keystep_exp end to end: the built program (beside this test binary) on a tiny synthetic set it
// generates itself: training learns, predictions join back onto the input JSON in input order,
// missing features are named or skipped and counted, an interrupted run resumed matches an
// uninterrupted one bit for bit, divergence and bad flags give cli.md's exit codes.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/safetensors.h"
#include "common/pictures.h"
#include "video/image_io.h"

using namespace stgnn;
using namespace stgnn::experiments;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "stgnn_keystep_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& rel) const { return (fs::path(path_) / rel).string(); }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

// keystep_exp is built into the same directory as the test binaries.
std::string program() {
  const fs::path p = fs::read_symlink("/proc/self/exe").parent_path() / "keystep_exp";
  INFO("build the program first: cmake --build build --target keystep_exp");
  REQUIRE(fs::exists(p));
  return p.string();
}

struct Run {
  int code = -1;
  std::string output;  // stdout and stderr
};

Run run(const std::string& args, const std::string& log) {
  const std::string command = program() + " " + args + " > '" + log + "' 2>&1";
  const int status = std::system(command.c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = fs::exists(log) ? read_file(log) : "";
  return r;
}

nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(read_file(path));
}

// The tiny set, generated once for the whole binary: 2 scenarios x 6 steps, 80/20/10 takes.
const TempDir& data_dir() {
  static const TempDir dir;
  static bool made = false;
  if (!made) {
    const Run r = run("--make-synthetic " + dir.str() + "/set" +
                          " --synthetic-option scenarios=2 --synthetic-option steps_per_scenario=6"
                          " --synthetic-option train_takes=80 --synthetic-option val_takes=20"
                          " --synthetic-option test_takes=10 --synthetic-option min_segments=6"
                          " --synthetic-option max_segments=10 --synthetic-option dim=16"
                          " --synthetic-option text_dim=8 --synthetic-option class_signal=0.6",
                      dir / "make.log");
    INFO(r.output);
    REQUIRE(r.code == 0);
    made = true;
  }
  return dir;
}

std::string data_args(const std::string& set) {
  return "--annotations " + set + "/annotations --features " + set + "/features/omnivore_video";
}

// A small, fast recipe; one thread (the CPU may be shared).
const std::string kRecipe = " --hidden 64 --batch-size 8 --lr 2e-3 --threads 1 --quiet";

std::vector<std::string> csv_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("keystep_exp: --help, bad flags and inconsistent options exit as cli.md says") {
  TempDir tmp;
  const Run help = run("--help", tmp / "help.log");
  CHECK(help.code == 0);
  for (const char* flag : {"--annotations", "--features", "--exo", "--text", "--model",
                           "--skip-missing", "--tau", "--resume", "--eval", "--make-synthetic",
                           "--captions-at-test", "--seed", "--epochs", "--plot-take"}) {
    CHECK(help.output.find(flag) != std::string::npos);
  }
  CHECK(help.output.find("stop-after-steps") == std::string::npos);  // hidden debugging flag
  CHECK(run("--no-such-flag", tmp / "bad.log").code == 1);
  const std::string set = data_dir() / "set";
  const Run text =
      run(data_args(set) + " --text " + set + "/features/text --out " + tmp / "r" + kRecipe,
          tmp / "text.log");
  CHECK(text.code == 1);
  CHECK(text.output.find("glevr-hetero") != std::string::npos);
  const Run half = run("--annotations " + set + "/annotations" + kRecipe, tmp / "half.log");
  CHECK(half.code == 1);
  CHECK(half.output.find("--features") != std::string::npos);
}

TEST_CASE("keystep_exp: GLEVR learns; predictions join back onto the JSON in input order") {
  TempDir tmp;
  const std::string set = data_dir() / "set";
  const std::string out = tmp / "run";
  const Run r = run(data_args(set) + " --epochs 12 --out " + out + kRecipe, tmp / "log");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const nlohmann::json results = read_json(out + "/results.json");
  CHECK(results["val_top1"].get<double>() > 0.3);  // chance: 1/12
  CHECK(results["val_top5"].get<double>() >= results["val_top1"].get<double>());
  CHECK(results["val_skipped"] == 0);
  CHECK(results["val_per_scenario"].size() == 2);
  for (const char* f : {"config.json", "metrics.csv", "curves.svg", "last.safetensors",
                        "best.safetensors", "confusion_val.csv", "predictions_val.csv"}) {
    CHECK(fs::exists(out + "/" + f));
  }
  CHECK(csv_lines(out + "/metrics.csv").size() == 13);
  CHECK(csv_lines(out + "/confusion_val.csv").size() == 13);
  CHECK(read_json(out + "/config.json")["model"] == "glevr");

  // Test predictions: one per input segment, in input order, joined by ego_segment_name.
  const nlohmann::json input =
      read_json(set + "/annotations/keystep_benchmark/keystep_segment_test_unannotated.json");
  const nlohmann::json pred = read_json(out + "/predictions_test.json");
  REQUIRE(pred["segments"].size() == input["segments"].size());
  std::map<std::string, int64_t> truth;
  for (const std::string& line : csv_lines(set + "/test_ground_truth.csv")) {
    const size_t comma = line.find(',');
    if (line.rfind("ego_segment_name", 0) != 0)
      truth[line.substr(0, comma)] = std::stoll(line.substr(comma + 1));
  }
  const std::vector<std::string> csv = csv_lines(out + "/predictions_test.csv");
  REQUIRE(csv.size() == input["segments"].size() + 1);
  CHECK(csv[0] == "ego_segment_name,label_id,probability");
  int64_t correct = 0;
  for (size_t i = 0; i < input["segments"].size(); ++i) {
    const nlohmann::json& in = input["segments"][i];
    const nlohmann::json& p = pred["segments"][i];
    CHECK(p["ego_segment_name"] == in["ego_segment_name"]);
    CHECK(p["take_uid"] == in["take_uid"]);
    CHECK(p["start_time"].get<double>() == in["start_time"].get<double>());
    REQUIRE(p["label_id"].is_number_integer());
    REQUIRE(p["top5"].size() == 5);
    CHECK(p["top5"][0][0] == p["label_id"]);
    CHECK(p["top5"][0][1].get<double>() >= p["top5"][4][1].get<double>());
    CHECK(csv[i + 1].rfind(in["ego_segment_name"].get<std::string>() + "," +
                               std::to_string(p["label_id"].get<int64_t>()) + ",",
                           0) == 0);
    correct += truth.at(in["ego_segment_name"]) == p["label_id"].get<int64_t>();
  }
  CHECK(static_cast<double>(correct) / static_cast<double>(input["segments"].size()) > 0.25);
  const nlohmann::json val = read_json(out + "/predictions_val.json");
  CHECK(val["segments"].size() ==
        read_json(set + "/annotations/keystep_benchmark/keystep_segment_val.json")["segments"]
            .size());

  // --eval of the best checkpoint reproduces the run's predictions.
  const Run e = run(data_args(set) + " --config " + out + "/config.json --eval " + out +
                        "/best.safetensors --out " + tmp / "eval" + " --quiet",
                    tmp / "eval.log");
  INFO(e.output);
  REQUIRE(e.code == 0);
  CHECK(read_file(tmp / "eval/predictions_test.csv") == read_file(out + "/predictions_test.csv"));

  // --plot-take: a val take's timeline (config.json found beside the checkpoint), the same
  // predictions as predictions_val.json, both strips drawn in the labels' colours.
  const std::string uid = val["segments"][0]["take_uid"];
  const Run plot = run("--plot-take " + uid + " --eval " + out + "/best.safetensors --out " +
                           tmp / "plot" + " --threads 1",
                       tmp / "plot.log");
  INFO(plot.output);
  REQUIRE(plot.code == 0);
  CHECK(!fs::exists(out + "/timeline_" + uid + ".png"));  // the training run is left alone
  std::map<std::string, int64_t> predicted;
  for (const nlohmann::json& p : val["segments"])
    predicted[p["ego_segment_name"]] = p["label_id"];
  KeystepTimeline timeline;
  for (const std::string& line : csv_lines(tmp / ("plot/timeline_" + uid + ".csv"))) {
    if (line.rfind("ego_segment_name", 0) == 0) continue;
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string item; std::getline(fields, item, ',');)
      f.push_back(item);
    REQUIRE(f.size() == 6);
    CHECK(predicted.at(f[0]) == std::stoll(f[4]));
    timeline.segments.push_back(
        {std::stod(f[1]), std::stod(f[2]), std::stoll(f[3]), std::stoll(f[4]), std::stof(f[5])});
  }
  REQUIRE(!timeline.segments.empty());
  const TimelineLayout layout = keystep_timeline_layout(timeline);
  const ImageU8 png = read_image_u8(tmp / ("plot/timeline_" + uid + ".png"), 3);
  CHECK(png.width == layout.width);
  CHECK(png.height == layout.height);
  for (const TimelineSegment& seg : timeline.segments) {
    const int x = layout.x0 + static_cast<int>(((seg.start + seg.end) / 2 - layout.t0) /
                                               (layout.t1 - layout.t0) * (layout.x1 - layout.x0));
    for (const auto& [y, label] :
         {std::pair{layout.truth_y, seg.truth}, {layout.predicted_y, seg.predicted}}) {
      const size_t i =
          (static_cast<size_t>(y + layout.strip_height * 3 / 4) * static_cast<size_t>(png.width) +
           static_cast<size_t>(x)) *
          3;
      const Color c = keystep_label_color(label);
      CHECK(png.pixels[i] == c.r);
      CHECK(png.pixels[i + 1] == c.g);
      CHECK(png.pixels[i + 2] == c.b);
    }
  }
  const Run unknown =
      run("--plot-take no-such-take --eval " + out + "/best.safetensors --out " + tmp / "p2",
          tmp / "unknown.log");
  CHECK(unknown.code == 1);
  CHECK(unknown.output.find("no take 'no-such-take'") != std::string::npos);
  const Run no_model = run(data_args(set) + " --plot-take " + uid, tmp / "nomodel.log");
  CHECK(no_model.code == 1);
  CHECK(no_model.output.find("--plot-take needs a checkpoint") != std::string::npos);
}

TEST_CASE("keystep_exp: exo views in training, captions at test (said loudly), the MLP") {
  TempDir tmp;
  const std::string set = data_dir() / "set";
  const Run exo =
      run(data_args(set) + " --exo --epochs 2 --out " + tmp / "exo" + kRecipe, tmp / "exo.log");
  INFO(exo.output);
  CHECK(exo.code == 0);
  CHECK(exo.output.find("train graphs: ego + exo views") != std::string::npos);
  const Run text =
      run(data_args(set) + " --model glevr-hetero --text " + set +
              "/features/text --captions-at-test --epochs 2 --out " + tmp / "text" + kRecipe,
          tmp / "text.log");
  INFO(text.output);
  CHECK(text.code == 0);
  CHECK(text.output.find("CAPTIONS AT TEST TIME") != std::string::npos);
  CHECK(read_json(tmp / "text/results.json")["captions_at_test"] == true);
  const Run mlp = run(data_args(set) + " --model mlp --epochs 2 --out " + tmp / "mlp" + kRecipe,
                      tmp / "mlp.log");
  CHECK(mlp.code == 0);
  CHECK(read_json(tmp / "mlp/results.json")["parameters"] == 16 * 1056 + 1056 + 1056 * 12 + 12);
}

TEST_CASE("keystep_exp: a missing feature file names take and camera; --skip-missing counts") {
  TempDir tmp;
  const std::string set = tmp / "set";
  fs::copy(data_dir() / "set", set, fs::copy_options::recursive);
  const nlohmann::json val =
      read_json(set + "/annotations/keystep_benchmark/keystep_segment_val.json");
  const std::string uid = val["segments"][0]["take_uid"];
  int64_t take_segments = 0;
  for (const nlohmann::json& s : val["segments"])
    take_segments += s["take_uid"] == uid;
  fs::remove(set + "/features/omnivore_video/" + uid + "_aria01_214-1.pt");
  const nlohmann::json train =
      read_json(set + "/annotations/keystep_benchmark/keystep_segment_train.json");
  const std::string train_uid = train["segments"][0]["take_uid"];
  fs::remove(set + "/features/omnivore_video/" + train_uid + "_cam02_0.pt");

  const Run fail = run(data_args(set) + " --epochs 1 --out " + tmp / "a" + kRecipe, tmp / "a.log");
  CHECK(fail.code == 1);
  CHECK(fail.output.find(uid) != std::string::npos);
  CHECK(fail.output.find("aria01_214-1") != std::string::npos);
  const Run fail_exo =
      run(data_args(set) + " --exo --epochs 1 --out " + tmp / "b" + kRecipe, tmp / "b.log");
  CHECK(fail_exo.code == 1);

  const Run skip =
      run(data_args(set) + " --exo --skip-missing --epochs 2 --out " + tmp / "c" + kRecipe,
          tmp / "c.log");
  INFO(skip.output);
  REQUIRE(skip.code == 0);
  CHECK(skip.output.find("1 exo views missing") != std::string::npos);
  CHECK(skip.output.find("skipped " + std::to_string(take_segments)) != std::string::npos);
  CHECK(read_json(tmp / "c/results.json")["val_skipped"] == take_segments);
  const nlohmann::json pred = read_json(tmp / "c/predictions_val.json");
  int64_t skipped = 0;
  for (const nlohmann::json& p : pred["segments"]) {
    if (p["take_uid"] != uid) {
      CHECK(p["label_id"].is_number_integer());
      continue;
    }
    CHECK(p["label_id"].is_null());
    CHECK(p["skipped"].get<std::string>().find("no ego feature file") != std::string::npos);
    ++skipped;
  }
  CHECK(skipped == take_segments);

  // Captions: a take without its file fails, or trains without caption nodes.
  fs::remove(set + "/features/text/" + train_uid + ".npy");
  const std::string hetero = data_args(set) + " --model glevr-hetero --text " + set +
                             "/features/text --epochs 1" + kRecipe;
  const Run no_text = run(hetero + " --out " + tmp / "d", tmp / "d.log");
  CHECK(no_text.code == 1);
  CHECK(no_text.output.find("no caption features for take " + train_uid) != std::string::npos);
  const Run skip_text = run(hetero + " --skip-missing --out " + tmp / "e", tmp / "e.log");
  INFO(skip_text.output);
  CHECK(skip_text.code == 0);
  CHECK(skip_text.output.find("1 takes without captions") != std::string::npos);
}

TEST_CASE("keystep_exp: interrupted + --resume gives bit-identical weights; NaN exits 2") {
  TempDir tmp;
  const std::string set = data_dir() / "set";
  // 80 takes / 8 per batch = 10 steps per epoch; stop in the middle of epoch 2.
  const std::string recipe = data_args(set) + " --exo --epochs 3 --seed 5" + kRecipe;
  const Run full = run(recipe + " --out " + tmp / "full", tmp / "full.log");
  INFO(full.output);
  REQUIRE(full.code == 0);
  const Run stopped = run(recipe + " --out " + tmp / "part --stop-after-steps 14", tmp / "p.log");
  INFO(stopped.output);
  REQUIRE(stopped.code == 130);
  CHECK(!fs::exists(tmp / "part/results.json"));
  const Run resumed = run("--resume " + tmp / "part" + " --quiet", tmp / "r.log");
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  CHECK(resumed.output.find("resuming") != std::string::npos);
  for (const char* file : {"last.safetensors", "best.safetensors"}) {
    CAPTURE(file);
    const NamedTensors a = load_safetensors(tmp / ("full/" + std::string(file)));
    const NamedTensors b = load_safetensors(tmp / ("part/" + std::string(file)));
    REQUIRE(a.tensors.size() == b.tensors.size());
    for (const auto& named : a.tensors) {
      const std::string& name = named.first;  // CAPTURE cannot capture a binding (C++17)
      const Tensor& t = named.second;
      CAPTURE(name);
      REQUIRE(b.tensors.count(name) == 1);
      const Tensor& u = b.tensors.at(name);
      REQUIRE(u.shape() == t.shape());
      CHECK(std::equal(t.data(), t.data() + t.numel(), u.data()));
    }
  }
  CHECK(read_file(tmp / "full/predictions_test.csv") ==
        read_file(tmp / "part/predictions_test.csv"));
  // metrics.csv: the same losses and accuracies per epoch (times differ).
  const auto strip_times = [](const std::vector<std::string>& lines) {
    std::vector<std::string> out;
    for (const std::string& l : lines) {
      size_t cut = 0;
      for (int commas = 0; commas < 5 && cut != std::string::npos; ++commas)
        cut = l.find(',', cut + (commas ? 1 : 0));
      out.push_back(l.substr(0, cut));
    }
    return out;
  };
  CHECK(strip_times(csv_lines(tmp / "full/metrics.csv")) ==
        strip_times(csv_lines(tmp / "part/metrics.csv")));

  const Run nan = run(data_args(set) +
                          " --epochs 2 --lr 1e30 --batch-size 8 --threads 1 --quiet"
                          " --out " +
                          tmp / "nan",
                      tmp / "nan.log");
  CHECK(nan.code == 2);
  CHECK(nan.output.find("diverged") != std::string::npos);
}
