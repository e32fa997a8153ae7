// Data for keystep recognition: the torch.save writer (round trip through our reader, pickles
// byte-identical to torch 1.13's own files, 64-byte aligned storages) and the synthetic
// Ego-Exo4D keystep set (official layout, readable by the readers, deterministic).
#include <doctest/doctest.h>
#include <stdlib.h>
#include <zip.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/ops.h"
#include "data/egoexo.h"
#include "data/keystep_synthetic.h"
#include "data/npy.h"
#include "data/torch_pt.h"
#include "support/check.h"

using namespace stgnn;
using namespace stgnn::testing;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "stgnn_glevr_XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
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

// name -> bytes of every entry of a zip image.
std::map<std::string, std::string> zip_entries(const std::vector<uint8_t>& image) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(image.data(), image.size(), 0, &error);
  REQUIRE(source != nullptr);
  zip_t* archive = zip_open_from_source(source, ZIP_RDONLY, &error);
  REQUIRE(archive != nullptr);
  std::map<std::string, std::string> out;
  for (zip_int64_t i = 0; i < zip_get_num_entries(archive, 0); ++i) {
    zip_stat_t st;
    REQUIRE(zip_stat_index(archive, static_cast<zip_uint64_t>(i), 0, &st) == 0);
    std::string bytes(static_cast<size_t>(st.size), '\0');
    zip_file_t* f = zip_fopen_index(archive, static_cast<zip_uint64_t>(i), 0);
    REQUIRE(f != nullptr);
    if (st.size > 0)
      REQUIRE(zip_fread(f, bytes.data(), st.size) == static_cast<zip_int64_t>(st.size));
    zip_fclose(f);
    out[st.name] = bytes;
  }
  zip_close(archive);
  zip_error_fini(&error);
  return out;
}

// The file offset at which each local entry's data starts, from the local headers.
std::map<std::string, size_t> data_offsets(const std::vector<uint8_t>& image) {
  std::map<std::string, size_t> out;
  size_t pos = 0;
  while (pos + 30 <= image.size() && std::memcmp(image.data() + pos, "PK\x03\x04", 4) == 0) {
    uint16_t name_len, extra_len;
    uint32_t size;
    std::memcpy(&size, image.data() + pos + 18, 4);
    std::memcpy(&name_len, image.data() + pos + 26, 2);
    std::memcpy(&extra_len, image.data() + pos + 28, 2);
    const std::string name(reinterpret_cast<const char*>(image.data() + pos + 30), name_len);
    const size_t data = pos + 30 + name_len + extra_len;
    out[name] = data;
    pos = data + size;
  }
  return out;
}

std::string fixture(const std::string& name) {
  return fixture_path("egoexo/" + name);
}

std::string read_text(const std::string& path) {
  return read_file(path);
}

KeystepSyntheticOptions tiny_options() {
  KeystepSyntheticOptions o;
  o.scenarios = 2;
  o.steps_per_scenario = 5;
  o.train_takes = 6;
  o.val_takes = 5;
  o.test_takes = 3;
  o.min_segments = 3;
  o.max_segments = 6;
  o.dim = 8;
  o.text_dim = 4;
  o.exo_views = 2;
  return o;
}

}  // namespace

TEST_CASE("torch writer: round trip through our reader, every shape, exact values") {
  TempDir dir;
  Rng rng(fresh_seed());
  for (const Shape& shape :
       std::vector<Shape>{{3, 4}, {}, {7}, {2, 1, 3, 5}, {0, 1536}, {300, 16}}) {
    CAPTURE(shape_str(shape));
    const Tensor t = random_tensor(shape, rng);
    const std::string path = dir / "t.pt";
    write_torch_tensor(path, t);
    const Tensor back = read_torch_tensor(path);
    REQUIRE(back.shape() == shape);
    check_close(back, t, 0, 0);
    // Storages start on 64-byte boundaries of the file, like torch's own writer.
    const std::vector<uint8_t> image = read_file_bytes(path);
    const std::map<std::string, size_t> offsets = data_offsets(image);
    REQUIRE(offsets.size() == 3);
    for (const auto& [name, offset] : offsets)
      CHECK(offset % 64 == 0);
    CHECK(offsets.count("t/data/0") == 1);
    const auto entries = zip_entries(image);
    CHECK(entries.at("t/version") == "3\n");
    CHECK(entries.at("t/data/0").size() == static_cast<size_t>(t.numel()) * 4);
  }
  // The same tensor and name give the same bytes (fixed time stamps), and nothing else is left.
  const Tensor t = random_tensor({5, 3}, rng);
  CHECK(torch_tensor_bytes(t, "a.pt") == torch_tensor_bytes(t, "a.pt"));
  CHECK(zip_entries(torch_tensor_bytes(t, "dir/we ird.pt")).count("archive/data.pkl") == 1);
  CHECK_THROWS_AS(write_torch_tensor(dir / "no/such/dir/x.pt", t), IoError);
  CHECK_THROWS_AS(write_torch_tensor(dir / "u.pt", Tensor()), ValueError);
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir.str())) {
    (void)entry;
    ++files;
  }
  CHECK(files == 1);  // t.pt only: no temporary files
}

TEST_CASE("torch writer: data.pkl and storages byte-identical to torch 1.13's torch.save") {
  // Fixtures written by torch.save (tests/fixtures/egoexo/make_fixtures.py): contiguous float
  // tensors, including the BININT, LONG1 and MARK ... TUPLE size encodings and a 0-d tensor.
  for (const std::string name :
       {"pt_f32", "pt_empty", "pt_binint", "pt_long1", "pt_4d", "pt_scalar"}) {
    CAPTURE(name);
    const std::vector<uint8_t> theirs = read_file_bytes(fixture(name + ".pt"));
    const Tensor t = read_torch_tensor(fixture(name + ".pt"));
    const std::vector<uint8_t> ours = torch_tensor_bytes(t, name + ".pt");
    const auto a = zip_entries(theirs), b = zip_entries(ours);
    REQUIRE(a.count(name + "/data.pkl") == 1);
    CHECK(b.at(name + "/data.pkl") == a.at(name + "/data.pkl"));
    CHECK(b.at(name + "/data/0") == a.at(name + "/data/0"));
    CHECK(b.at(name + "/version") == a.at(name + "/version"));
    CHECK(b.size() == a.size());
  }
}

TEST_CASE("synthetic keystep set: official layout, readable, consistent, deterministic") {
  TempDir dir;
  const KeystepSyntheticOptions o = tiny_options();
  const KeystepSyntheticSummary summary = write_keystep_synthetic(dir.str(), o);
  CHECK(summary.classes == 10);
  CHECK(summary.takes == 14);
  const std::string ann = dir / "annotations/keystep_benchmark";
  const LabelMapping mapping = read_label_mapping(ann + "/label_mapping.csv");
  REQUIRE(mapping.num_classes() == 10);
  CHECK(mapping.entries[2].step_name.find(',') != std::string::npos);  // quoted in the CSV
  CHECK(read_text(ann + "/label_mapping.csv").find("\"Check the wheel, then check it\"") !=
        std::string::npos);
  CHECK(mapping.entries[7].scenario_name == "scenario1");

  const FeatureIndex video(dir / "features/omnivore_video");
  const FeatureIndex text(dir / "features/text");
  CHECK(video.num_files() == 14 * 3);
  CHECK(text.num_files() == 14);
  const char* files[3] = {"keystep_segment_train.json", "keystep_segment_val.json",
                          "keystep_segment_test_unannotated.json"};
  std::set<std::string> truth_names;
  std::istringstream truth(read_text(dir / "test_ground_truth.csv"));
  std::string line;
  std::getline(truth, line);
  CHECK(line == "ego_segment_name,label_id");
  while (std::getline(truth, line))
    truth_names.insert(line.substr(0, line.find(',')));
  for (int split = 0; split < 3; ++split) {
    CAPTURE(files[split]);
    const KeystepSplit s = read_keystep_segments(ann + "/" + files[split], &mapping);
    CHECK(static_cast<int64_t>(s.segments.size()) == summary.segments[split]);
    CHECK(s.dropped_unmapped == 0);
    CHECK(s.labelled() == (split < 2));
    const std::vector<Take> takes = group_takes(s.segments);
    CHECK(static_cast<int64_t>(takes.size()) == (split == 0   ? o.train_takes
                                                 : split == 1 ? o.val_takes
                                                              : o.test_takes));
    for (size_t t = 0; t < takes.size(); ++t) {
      const Take& take = takes[t];
      CHECK(take.ego_camera == "aria01_214-1");
      CHECK(take.exo_cameras == std::vector<std::string>{"cam01", "cam02"});
      const auto n = static_cast<int64_t>(take.segments.size());
      CHECK((n >= o.min_segments && n <= o.max_segments));
      // Every fifth take lists its segments latest first in the file.
      CHECK((take.segments.front().index > take.segments.back().index) == (t % 5 == 4));
      for (size_t k = 0; k < take.cameras().size(); ++k) {
        const auto path = video.find_camera(take.take_uid, take.take_name, take.cameras()[k],
                                            static_cast<int64_t>(k));
        REQUIRE(path.has_value());
        CHECK(fs::path(*path).extension() == ".pt");
        const Tensor features = read_feature_matrix(*path);
        CHECK(features.size(1) == o.dim);
        CHECK(take_segment_features(features, take, *path).shape() == Shape{n, o.dim});
      }
      const auto captions = text.find_take(take.take_uid, take.take_name);
      REQUIRE(captions.has_value());
      CHECK(read_caption_features(*captions, n).shape() == Shape{n, o.text_dim});
      if (split == 2) {
        for (const KeystepSegment& seg : take.segments)
          CHECK(truth_names.count(seg.ego_segment_name) == 1);
      }
    }
  }
  CHECK(static_cast<int64_t>(truth_names.size()) == summary.segments[2]);
  CHECK(keystep_synthetic_from_json(nlohmann::json::parse(read_text(dir / "synthetic.json")))
            .train_takes == o.train_takes);

  // The same options write the same bytes.
  TempDir again;
  write_keystep_synthetic(again.str(), o);
  for (const std::string rel :
       {"annotations/keystep_benchmark/keystep_segment_val.json", "test_ground_truth.csv"}) {
    CHECK(read_text(dir / rel) == read_text(again / rel));
  }
  for (const auto& entry : fs::directory_iterator(dir / "features/omnivore_video")) {
    const std::string name = entry.path().filename().string();
    CHECK(read_file_bytes(entry.path().string()) ==
          read_file_bytes(again / ("features/omnivore_video/" + name)));
  }
}

TEST_CASE("synthetic keystep set: the class signal is in the averaged segment features") {
  // Class means of the averaged ego features are further apart than the noise of a mean: the
  // clip timing and segment averaging line up with the generator's segments.
  TempDir dir;
  KeystepSyntheticOptions o = tiny_options();
  o.train_takes = 40;
  o.class_signal = 1.0;
  o.take_shift = 0.0;
  write_keystep_synthetic(dir.str(), o);
  const std::string ann = dir / "annotations/keystep_benchmark";
  const LabelMapping mapping = read_label_mapping(ann + "/label_mapping.csv");
  const KeystepSplit s = read_keystep_segments(ann + "/keystep_segment_train.json", &mapping);
  const FeatureIndex video(dir / "features/omnivore_video");
  std::vector<std::vector<double>> sum(10, std::vector<double>(8, 0.0));
  std::vector<int64_t> count(10, 0);
  std::vector<std::pair<int64_t, Tensor>> rows;
  for (const Take& take : group_takes(s.segments)) {
    const std::string path = video.require_camera(take.take_uid, take.take_name, take.ego_camera);
    const Tensor f = take_segment_features(read_feature_matrix(path), take, path);
    for (size_t i = 0; i < take.segments.size(); ++i) {
      const int64_t label = take.segments[i].label;
      for (int64_t d = 0; d < 8; ++d)
        sum[static_cast<size_t>(label)][static_cast<size_t>(d)] +=
            f.data()[static_cast<int64_t>(i) * 8 + d];
      ++count[static_cast<size_t>(label)];
      rows.emplace_back(label, slice(f, 0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1));
    }
  }
  // Nearest class mean classifies most training segments correctly (chance is 10%).
  int64_t correct = 0;
  for (const auto& [label, row] : rows) {
    double best = 1e300;
    int64_t arg = -1;
    for (int64_t c = 0; c < 10; ++c) {
      if (count[static_cast<size_t>(c)] == 0) continue;
      double dist = 0;
      for (int64_t d = 0; d < 8; ++d) {
        const double m = sum[static_cast<size_t>(c)][static_cast<size_t>(d)] /
                         static_cast<double>(count[static_cast<size_t>(c)]);
        dist += (row.data()[d] - m) * (row.data()[d] - m);
      }
      if (dist < best) best = dist, arg = c;
    }
    correct += arg == label;
  }
  CHECK(static_cast<double>(correct) / static_cast<double>(rows.size()) > 0.6);
}

TEST_CASE("synthetic keystep options: validation and JSON") {
  TempDir dir;
  KeystepSyntheticOptions o = tiny_options();
  o.steps_per_scenario = 1;
  CHECK_THROWS_AS(write_keystep_synthetic(dir.str(), o), ValueError);
  o = tiny_options();
  o.p_skip = 0.8;
  o.p_jump = 0.3;
  CHECK_THROWS_AS(write_keystep_synthetic(dir.str(), o), ValueError);
  o = tiny_options();
  o.class_signal = -1;
  CHECK_THROWS_AS(write_keystep_synthetic(dir.str(), o), ValueError);
  const nlohmann::json j = keystep_synthetic_json(tiny_options());
  CHECK(keystep_synthetic_json(keystep_synthetic_from_json(j)) == j);
  CHECK_THROWS_AS(keystep_synthetic_from_json({{"no_such_knob", 1}}), ValueError);
  CHECK_THROWS_AS(keystep_synthetic_from_json({{"dim", "64"}}), ValueError);
  CHECK(keystep_synthetic_from_json({{"dim", 12}}).dim == 12);
}
