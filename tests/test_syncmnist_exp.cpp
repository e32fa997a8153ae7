// syncmnist_exp end to end: a tiny run writes the whole run directory, an interrupted run
// resumed ends bit-identical to an uninterrupted one, --eval reproduces the predictions,
// --export-dataset writes the documented arrays, and bad input exits 1 with a clear message.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/safetensors.h"
#include "data/npy.h"
#include "support/synthetic_digits.h"
#include "video/syncmnist.h"

using namespace stgnn;
using namespace stgnn::testing;
namespace fs = std::filesystem;

namespace {

struct Workspace {
  fs::path root = fs::temp_directory_path() / ("stgnn_exp_test_" + std::to_string(::getpid()));
  fs::path mnist = root / "mnist";
  DigitSet train = synthetic_pool(6), test = synthetic_pool(3);
  Workspace() { write_idx_dir(mnist.string(), train, test); }
  ~Workspace() {
    std::error_code ignored;
    fs::remove_all(root, ignored);
  }
};

// Runs syncmnist_exp with `args`; returns its exit code, output in `log`.
int run(const std::string& args, const fs::path& log) {
  const std::string command =
      std::string(STGNN_BUILD_DIR) + "/syncmnist_exp " + args + " > " + log.string() + " 2>&1";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string text(const fs::path& p) {
  return read_file(p.string());
}

// The first line `command` prints ("" when it fails).
std::string first_line_of(const std::string& command) {
  std::string line;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[256];
    if (std::fgets(buffer, sizeof buffer, pipe)) line = buffer;
    ::pclose(pipe);
  }
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
    line.pop_back();
  return line;
}

int64_t lines(const fs::path& p) {
  std::ifstream in(p);
  int64_t n = 0;
  for (std::string line; std::getline(in, line);)
    ++n;
  return n;
}

}  // namespace

TEST_CASE("a tiny run writes the whole run directory; resume and eval reproduce it") {
  Workspace w;
  const std::string common = "--preset tiny --quiet --mnist " + w.mnist.string();
  const fs::path a = w.root / "a";
  REQUIRE(run(common + " --threads 2 --out " + a.string(), w.root / "a.log") == 0);
  INFO(text(w.root / "a.log"));
  for (const char* name : {"config.json", "metrics.csv", "curves.svg", "last.safetensors",
                           "best.safetensors", "results.json", "predictions_test.csv"}) {
    CHECK(fs::exists(a / name));
  }
  CHECK(text(w.root / "a.log").find("result: test accuracy") != std::string::npos);
  CHECK(lines(a / "metrics.csv") == 1 + 2);            // header + 2 epochs
  CHECK(lines(a / "predictions_test.csv") == 1 + 64);  // header + the tiny preset's 64 test videos
  const auto results = nlohmann::json::parse(text(a / "results.json"));
  CHECK(results.at("test_videos") == 64);
  CHECK(results.at("test_top1").get<double>() >= 0.0);
  const auto config = nlohmann::json::parse(text(a / "config.json"));
  CHECK(config.at("preset") == "tiny");
  CHECK(config.at("channels") == "4,8,8");
  // The commit the program was built from, taken at build time (`make test` builds first), not
  // a stamp from the last configure.
  std::string commit = first_line_of("git -C " + std::string(STGNN_SOURCE_DIR) +
                                     " describe --always --dirty --abbrev=7 2>/dev/null");
  if (commit.empty()) commit = "unknown";
  CHECK_MESSAGE(config.at("git_commit") == commit, "stale build? rebuild before running ctest");
  CHECK(text(a / "curves.svg").rfind("<svg", 0) == 0);

  // Interrupted after 3 steps (as by Ctrl-C), then resumed: identical final weights.
  const fs::path b = w.root / "b";
  CHECK(run(common + " --out " + b.string() + " --stop-after-steps 3", w.root / "b1.log") == 130);
  CHECK(text(w.root / "b1.log").find("--resume") != std::string::npos);
  CHECK(run("--quiet --resume " + b.string(), w.root / "b2.log") == 0);
  INFO(text(w.root / "b2.log"));
  const NamedTensors straight = load_safetensors((a / "last.safetensors").string());
  const NamedTensors resumed = load_safetensors((b / "last.safetensors").string());
  REQUIRE(straight.tensors.size() == resumed.tensors.size());
  for (const auto& named : straight.tensors) {
    const std::string& name = named.first;  // CAPTURE cannot capture a binding (C++17)
    const Tensor& t = named.second;
    CAPTURE(name);
    CHECK(resumed.tensors.at(name).to_vector() == t.to_vector());
  }
  CHECK(text(a / "predictions_test.csv") == text(b / "predictions_test.csv"));

  // One thread instead of two: the same run bit for bit (no sum depends on the thread count).
  const fs::path c = w.root / "c";
  REQUIRE(run(common + " --threads 1 --out " + c.string(), w.root / "c.log") == 0);
  const NamedTensors single = load_safetensors((c / "last.safetensors").string());
  for (const auto& named : straight.tensors) {
    const std::string& name = named.first;
    CAPTURE(name);
    CHECK(single.tensors.at(name).to_vector() == named.second.to_vector());
  }
  CHECK(text(c / "predictions_test.csv") == text(a / "predictions_test.csv"));

  // --eval on the best checkpoint reproduces the test predictions.
  const fs::path e = w.root / "e";
  CHECK(run("--quiet --eval " + (a / "best.safetensors").string() + " --config " +
                (a / "config.json").string() + " --out " + e.string(),
            w.root / "e.log") == 0);
  CHECK(text(e / "predictions_test.csv") == text(a / "predictions_test.csv"));
  // Without --out, evaluation leaves the training run's files alone (a new runs/ directory).
  const std::string config_before = text(a / "config.json"),
                    results_before = text(a / "results.json");
  const fs::path cwd = fs::current_path();
  fs::current_path(w.root);
  CHECK(run("--quiet --eval " + (a / "best.safetensors").string() + " --config " +
                (a / "config.json").string(),
            w.root / "e2.log") == 0);
  fs::current_path(cwd);
  CHECK(text(a / "config.json") == config_before);
  CHECK(text(a / "results.json") == results_before);
  CHECK(fs::exists(w.root / "runs"));
}

// The bit-exact weights of a checkpoint, for comparing two runs.
std::map<std::string, std::vector<float>> weights(const fs::path& checkpoint) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& named : load_safetensors(checkpoint.string()).tensors)
    out[named.first] = named.second.to_vector();
  return out;
}

TEST_CASE("--ablation writes the table, reuses finished variants and continues interrupted ones") {
  Workspace w;
  const std::string common = "--preset tiny --quiet --mnist " + w.mnist.string();
  const fs::path r = w.root / "ablation";
  REQUIRE(run(common + " --ablation --ablation-variants mean-lstm,space-only --out " + r.string(),
              w.root / "r1.log") == 0);
  INFO(text(w.root / "r1.log"));
  CHECK(lines(r / "ablation.csv") == 1 + 2);
  const std::string table = text(r / "ablation.md");
  CHECK(table.find("| mean-lstm |") != std::string::npos);
  CHECK(table.find("| space-only | ") != std::string::npos);
  CHECK(table.find("| 77.0 |") != std::string::npos);  // the paper's mean-lstm figure beside ours
  CHECK(nlohmann::json::parse(text(r / "config.json")).at("ablation-variants") ==
        "mean-lstm,space-only");

  // One more variant trained on its own (as a second process would), then one gathering call:
  // the finished runs are reused untouched, the table holds all three.
  REQUIRE(run(common + " --variant time-only --out " + (r / "time-only").string(),
              w.root / "t.log") == 0);
  const std::string mean_lstm_results = text(r / "mean-lstm" / "results.json");
  REQUIRE(run(common + " --ablation --ablation-variants mean-lstm,space-only,time-only --out " +
                  r.string(),
              w.root / "r2.log") == 0);
  const std::string gathered = text(w.root / "r2.log");
  CHECK(gathered.find("training:") == std::string::npos);  // nothing was trained again
  CHECK(gathered.find("reusing its results") != std::string::npos);
  CHECK(text(r / "mean-lstm" / "results.json") == mean_lstm_results);
  CHECK(lines(r / "ablation.csv") == 1 + 3);
  const double time_only_top1 =
      nlohmann::json::parse(text(r / "time-only" / "results.json")).at("test_top1");
  CHECK(text(r / "ablation.csv").find("time-only," + std::to_string(time_only_top1).substr(0, 4)) !=
        std::string::npos);

  // A recipe that changes only the space stages reuses the variants without space stages.
  REQUIRE(run(common + " --stage-residual true --ablation --ablation-variants time-only --out " +
                  r.string(),
              w.root / "r3.log") == 0);
  CHECK(text(w.root / "r3.log").find("reusing its results") != std::string::npos);
  CHECK(run(common + " --stage-residual true --ablation --ablation-variants space-only --out " +
                r.string(),
            w.root / "r4.log") == 1);
  CHECK(text(w.root / "r4.log").find("other settings: stage-residual") != std::string::npos);

  // An ablation stopped mid-variant (as by Ctrl-C) continues it on the next call and ends
  // bit-identical to the uninterrupted variant.
  const fs::path s = w.root / "stopped";
  CHECK(run(common + " --ablation --ablation-variants space-only --stop-after-steps 3 --out " +
                s.string(),
            w.root / "s1.log") == 130);
  CHECK(!fs::exists(s / "space-only" / "results.json"));
  REQUIRE(run(common + " --ablation --ablation-variants space-only --out " + s.string(),
              w.root / "s2.log") == 0);
  CHECK(text(w.root / "s2.log").find("continuing its last checkpoint") != std::string::npos);
  CHECK(weights(s / "space-only" / "last.safetensors") ==
        weights(r / "space-only" / "last.safetensors"));
  CHECK(text(s / "space-only" / "predictions_test.csv") ==
        text(r / "space-only" / "predictions_test.csv"));

  // A variant directory trained with other settings is never mixed into the table.
  CHECK(run(common + " --lr 0.01 --ablation --ablation-variants mean-lstm --out " + r.string(),
            w.root / "x.log") == 1);
  CHECK(text(w.root / "x.log").find("other settings: lr") != std::string::npos);
  // nothing was overwritten: the ablation's config keeps the tiny preset's learning rate
  CHECK(nlohmann::json::parse(text(r / "config.json")).at("lr") == 0.003);
  CHECK(run(common + " --ablation --ablation-variants mean-lstm,bogus --out " + r.string(),
            w.root / "y.log") == 1);
  CHECK(text(w.root / "y.log").find("--ablation-variants") != std::string::npos);
  CHECK(run(common + " --ablation-variants mean-lstm", w.root / "z.log") == 1);
  CHECK(text(w.root / "z.log").find("needs --ablation") != std::string::npos);
}

TEST_CASE("--easy-none-probability sets how often the curriculum's two digits move apart") {
  // Trained only on curriculum videos whose digits all move independently (label 45, "none"),
  // the model answers "none" for every test video; trained on synchronised pairs only, never.
  Workspace w;
  const std::string common =
      "--preset tiny --quiet --lr 0.05 --easy-epochs 2 --mnist " + w.mnist.string();
  for (const int probability : {1, 0}) {
    CAPTURE(probability);
    const fs::path out = w.root / ("p" + std::to_string(probability));
    REQUIRE(run(common + " --easy-none-probability " + std::to_string(probability) + " --out " +
                    out.string(),
                w.root / "p.log") == 0);
    CHECK(nlohmann::json::parse(text(out / "config.json")).at("easy-none-probability") ==
          probability);
    std::ifstream in(out / "predictions_test.csv");
    std::string line;
    std::getline(in, line);  // header: index,label,pred,probability
    int64_t none = 0, videos = 0;
    for (; std::getline(in, line); ++videos) {
      std::stringstream fields(line);
      std::string index, label, pred;
      std::getline(fields, index, ',');
      std::getline(fields, label, ',');
      std::getline(fields, pred, ',');
      none += pred == "45";
    }
    CHECK(videos == 64);
    CHECK(none == (probability == 1 ? videos : 0));
  }
  CHECK(run(common + " --easy-none-probability 1.5", w.root / "bad.log") == 1);
  CHECK(text(w.root / "bad.log").find("--easy-none-probability") != std::string::npos);
}

namespace {
// A tiny run with the model option `flag value`: the option recorded in config.json under
// the flag's name (as `recorded`), then --eval with that config rebuilding the same model (its
// test predictions identical). Returns the last checkpoint, for the caller's shape checks.
// `extra`: flags the option needs beside it (e.g. "--node-motion true").
NamedTensors tiny_run_with_model_option(const Workspace& w, const std::string& flag,
                                        const std::string& value, const nlohmann::json& recorded,
                                        const std::string& extra = "") {
  const fs::path a = w.root / "a";
  REQUIRE(run("--preset tiny --quiet --mnist " + w.mnist.string() + " " + extra + " --" + flag +
                  " " + value + " --out " + a.string(),
              w.root / "a.log") == 0);
  INFO(text(w.root / "a.log"));
  CHECK(nlohmann::json::parse(text(a / "config.json")).at(flag) == recorded);
  const fs::path e = w.root / "e";
  CHECK(run("--quiet --eval " + (a / "best.safetensors").string() + " --config " +
                (a / "config.json").string() + " --out " + e.string(),
            w.root / "e.log") == 0);
  CHECK(text(e / "predictions_test.csv") == text(a / "predictions_test.csv"));
  return load_safetensors((a / "last.safetensors").string());
}

}  // namespace

TEST_CASE("--motion-input: recorded, a two-channel first conv, and --eval rebuilds it") {
  Workspace w;
  const NamedTensors checkpoint = tiny_run_with_model_option(w, "motion-input", "true", true);
  REQUIRE(checkpoint.tensors.count("backbone.0.weight") == 1);
  CHECK(checkpoint.tensors.at("backbone.0.weight").size(1) == 2);  // the frame, the difference
}

TEST_CASE("--position-moments: recorded, node inputs three times as wide, --eval rebuilds it") {
  Workspace w;
  const NamedTensors checkpoint = tiny_run_with_model_option(w, "position-moments", "true", true);
  REQUIRE(checkpoint.tensors.count("node_norm.weight") == 1);
  // The tiny preset's backbone ends on 8 channels: a, a * row and a * col for each.
  CHECK(checkpoint.tensors.at("node_norm.weight").size(0) == 3 * 8);
}

TEST_CASE("--context-convs: recorded, same-size convs after the pooled blocks, --eval rebuilds") {
  Workspace w;
  const NamedTensors checkpoint = tiny_run_with_model_option(w, "context-convs", "2", 2);
  int64_t square_convs = 0;  // conv weights [8, 8, 3, 3] after the tiny preset's 4,8,8 blocks
  for (const auto& [name, tensor] : checkpoint.tensors) {
    if (name.rfind("backbone.", 0) == 0 && tensor.shape() == Shape{8, 8, 3, 3}) ++square_convs;
  }
  CHECK(square_convs == 1 + 2);  // the third pooled block is 8 -> 8 too, then the two
  CHECK(run("--preset tiny --quiet --mnist " + w.mnist.string() + " --context-convs -1 --out " +
                (w.root / "bad").string(),
            w.root / "bad.log") != 0);
}

TEST_CASE("--node-motion: recorded, node inputs 84 wider, --eval rebuilds it") {
  Workspace w;
  const NamedTensors checkpoint = tiny_run_with_model_option(w, "node-motion", "true", true);
  REQUIRE(checkpoint.tensors.count("node_norm.weight") == 1);
  // The tiny preset's backbone ends on 8 channels, then the histogram of 9 x 9 moves, its mass
  // and its mean move.
  CHECK(checkpoint.tensors.at("node_norm.weight").size(0) == 8 + 81 + 3);
}

TEST_CASE("--dot-attention and --time-residual: recorded, --eval rebuilds them") {
  Workspace w, v;
  const NamedTensors dot = tiny_run_with_model_option(w, "dot-attention", "true", true);
  CHECK(dot.tensors.count("space.query.weight") == 1);
  CHECK(dot.tensors.count("space.score_source.weight") == 0);
  // No new weights: the same checkpoint names as the default model, another forward.
  const NamedTensors residual = tiny_run_with_model_option(v, "time-residual", "true", true);
  CHECK(residual.tensors.count("space.score_source.weight") == 1);
}

TEST_CASE("--motion-agreement: recorded, two more node inputs, --eval rebuilds; needs motion") {
  Workspace w;
  const NamedTensors checkpoint =
      tiny_run_with_model_option(w, "motion-agreement", "true", true, "--node-motion true");
  CHECK(checkpoint.tensors.at("node_norm.weight").size(0) == 8 + 81 + 3 + 2);
  CHECK(run("--preset tiny --quiet --mnist " + w.mnist.string() + " --motion-agreement true " +
                "--out " + (w.root / "bad").string(),
            w.root / "bad.log") == 1);
  CHECK(text(w.root / "bad.log").find("--node-motion") != std::string::npos);
  CHECK(!fs::exists(w.root / "bad"));
}

TEST_CASE("--motion-similarity: recorded, edge weights in the space stage, --eval rebuilds") {
  Workspace w;
  const NamedTensors checkpoint =
      tiny_run_with_model_option(w, "motion-similarity", "true", true, "--node-motion true");
  CHECK(checkpoint.tensors.at("space.edge_score.weight").shape() == Shape{1, 1});
  CHECK(checkpoint.tensors.count("space.edge_send.weight") == 1);
  CHECK(run("--preset tiny --quiet --mnist " + w.mnist.string() + " --motion-similarity true " +
                "--out " + (w.root / "bad").string(),
            w.root / "bad.log") == 1);
  CHECK(text(w.root / "bad.log").find("--node-motion") != std::string::npos);
}

TEST_CASE("--detector-nodes: recorded, a heat map per detector, --eval rebuilds; no --attention") {
  Workspace w;
  const NamedTensors checkpoint = tiny_run_with_model_option(w, "detector-nodes", "5", 5);
  REQUIRE(checkpoint.tensors.count("detector.weight") == 1);
  CHECK(checkpoint.tensors.at("detector.weight").shape() == Shape{5, 8});  // 8 channels -> 5
  // The node inputs: the pooled 8 channels, the expected heat and the one-hot of 5.
  CHECK(checkpoint.tensors.at("node_norm.weight").size(0) == 8 + 1 + 5);
  // The attention picture draws the region graph, which this model does not have.
  const fs::path a = w.root / "a";
  CHECK(run("--quiet --eval " + (a / "best.safetensors").string() + " --config " +
                (a / "config.json").string() + " --attention 0 --out " + (w.root / "pic").string(),
            w.root / "pic.log") == 1);
  CHECK(text(w.root / "pic.log").find("--detector-nodes") != std::string::npos);
  CHECK(run("--preset tiny --quiet --mnist " + w.mnist.string() + " --detector-nodes 3 " +
                "--variant positional --out " + (w.root / "bad").string(),
            w.root / "bad.log") == 1);
  CHECK(text(w.root / "bad.log").find("positional") != std::string::npos);
}

TEST_CASE("--export-dataset writes videos, labels, digits and positions as .npy") {
  Workspace w;
  const fs::path out = w.root / "export";
  REQUIRE(run("--mnist " + w.mnist.string() + " --export-dataset " + out.string() +
                  " --split test --count 5",
              w.root / "x.log") == 0);
  const NpyArray videos = read_npy((out / "videos.npy").string());
  CHECK(videos.dtype == "|u1");
  CHECK(videos.shape == Shape{5, 10, 64, 64});
  const NpyArray labels = read_npy((out / "labels.npy").string());
  CHECK(labels.shape == Shape{5});
  CHECK(read_npy((out / "digits.npy").string()).shape == Shape{5, 3});
  CHECK(read_npy((out / "positions.npy").string()).shape == Shape{5, 10, 3, 2});
  // The same videos the generator makes for the test split (fixed test seed, first index 0).
  const SyncBatch expected = generate_batch(w.test, 20191208, 0, 5, SyncMnistOptions{});
  CHECK(std::equal(videos.bytes.begin(), videos.bytes.end(), expected.videos.begin()));
  const std::vector<int64_t> got = npy_to_int64(labels);
  CHECK(std::equal(got.begin(), got.end(), expected.labels.begin()));
}

TEST_CASE("bad input exits 1 with a message naming the flag or file; --help exits 0") {
  Workspace w;
  CHECK(run("--help", w.root / "h.log") == 0);
  CHECK(text(w.root / "h.log").find("--videos-per-epoch") != std::string::npos);
  CHECK(run("--digits 4", w.root / "d.log") == 1);
  CHECK(text(w.root / "d.log").find("--digits") != std::string::npos);
  CHECK(run("--mnist " + (w.root / "nowhere").string(), w.root / "m.log") == 1);
  CHECK(text(w.root / "m.log").find("nowhere") != std::string::npos);
  CHECK(run("--preset huge", w.root / "p.log") == 1);
  CHECK(text(w.root / "p.log").find("huge") != std::string::npos);
  CHECK(run("--channels 8,x --mnist " + w.mnist.string(), w.root / "c.log") == 1);
  CHECK(text(w.root / "c.log").find("--channels") != std::string::npos);
}
