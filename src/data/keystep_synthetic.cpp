#include "data/keystep_synthetic.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <vector>

#include "autograd/atomic_file.h"
#include "autograd/error.h"
#include "autograd/rng.h"
#include "autograd/tensor.h"
#include "data/egoexo.h"
#include "data/npy.h"
#include "data/torch_pt.h"

namespace stgnn {

namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kEgoCamera = "aria01_214-1";
const char* const kSplitNames[3] = {"train", "val", "test"};
const char* const kSplitFiles[3] = {"keystep_segment_train.json", "keystep_segment_val.json",
                                    "keystep_segment_test_unannotated.json"};

// Step names: verb + object; every fifth carries a comma, so label_mapping.csv must quote it.
std::string step_name(int64_t label) {
  static const char* const verbs[] = {"Stir",  "Add",   "Check", "Adjust", "Cut",     "Open",
                                      "Close", "Place", "Wipe",  "Pour",   "Tighten", "Remove"};
  static const char* const objects[] = {
      "the mixture", "the tube",  "the wheel", "the bowl",  "the swab",  "the chain", "the lid",
      "the sauce",   "the brake", "the pan",   "the strip", "the valve", "the dough"};
  std::string name = std::string(verbs[label % 12]) + " " + objects[(label / 12 + label) % 13];
  if (label % 5 == 2) name += ", then check it";
  return name;
}

int64_t step_unique_id(int64_t label) {
  return 100 + 7 * label;
}

std::string camera_name(int64_t exo) {
  const std::string digits = std::to_string(exo);
  return "cam" + std::string(digits.size() < 2 ? 1 : 0, '0') + digits;
}

double round5(double v) {
  return std::round(v * 1e5) / 1e5;
}

std::string clip_name(const std::string& split, const std::string& take_name, double start,
                      double end, const std::string& camera) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "start%.5f_end%.5f_", start, end);
  return split + "/" + take_name + "/" + buffer + camera + ".mp4";
}

std::string uuid(Rng& rng) {
  const uint64_t a = rng.next_u64(), b = rng.next_u64();
  char buffer[40];
  std::snprintf(buffer, sizeof(buffer), "%08llx-%04llx-4%03llx-%04llx-%012llx",
                static_cast<unsigned long long>(a >> 32),
                static_cast<unsigned long long>((a >> 16) & 0xffff),
                static_cast<unsigned long long>(a & 0xfff),
                static_cast<unsigned long long>(0x8000 | ((b >> 48) & 0x3fff)),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buffer;
}

// A [rows, dim] matrix of N(0, 1) entries.
std::vector<float> normal_matrix(Rng& rng, int64_t rows, int64_t dim) {
  std::vector<float> out(static_cast<size_t>(rows * dim));
  for (float& v : out)
    v = rng.normal();
  return out;
}

void check(bool ok, const std::string& what) {
  if (!ok) throw ValueError("synthetic keystep options: " + what);
}

void validate(const KeystepSyntheticOptions& o) {
  check(o.scenarios >= 1 && o.steps_per_scenario >= 2, "scenarios >= 1, steps-per-scenario >= 2");
  check(o.train_takes >= 1 && o.val_takes >= 1 && o.test_takes >= 0,
        "train-takes and val-takes >= 1, test-takes >= 0");
  check(o.min_segments >= 1 && o.max_segments >= o.min_segments,
        "1 <= min-segments <= max-segments");
  check(o.dim >= 1 && o.text_dim >= 1 && o.exo_views >= 0 && o.exo_views <= 99,
        "dim, text-dim >= 1, exo-views in 0..99");
  check(o.min_seconds > 0 && o.max_seconds >= o.min_seconds && o.max_gap_seconds >= 0,
        "0 < min-seconds <= max-seconds, max-gap-seconds >= 0");
  check(o.p_skip >= 0 && o.p_jump >= 0 && o.p_skip + o.p_jump <= 1,
        "p-skip, p-jump >= 0, sum <= 1");
  for (double v : {o.class_signal, o.scenario_signal, o.take_shift, o.segment_noise, o.clip_noise,
                   o.exo_noise_scale, o.text_signal, o.text_noise}) {
    check(std::isfinite(v) && v >= 0, "signal and noise levels must be finite and >= 0");
  }
}

struct GenSegment {
  double start = 0, end = 0;
  int64_t label = 0;
};

struct GenTake {
  std::string uid, name;
  int64_t scenario = 0;
  std::vector<GenSegment> segments;  // temporal order
};

struct Prototypes {
  std::vector<float> classes;                    // [C, dim]
  std::vector<float> scenarios;                  // [S, dim]
  std::vector<float> text;                       // [C, text_dim]
  std::vector<std::vector<int64_t>> procedures;  // per scenario: labels in procedural order
};

Prototypes make_prototypes(const KeystepSyntheticOptions& o) {
  Rng rng = Rng(o.seed).fork(0xc1a55e5ULL);
  Prototypes p;
  const int64_t classes = o.scenarios * o.steps_per_scenario;
  p.classes = normal_matrix(rng, classes, o.dim);
  p.scenarios = normal_matrix(rng, o.scenarios, o.dim);
  p.text = normal_matrix(rng, classes, o.text_dim);
  for (int64_t s = 0; s < o.scenarios; ++s) {
    std::vector<int64_t> order;
    for (int64_t k = 0; k < o.steps_per_scenario; ++k)
      order.push_back(s * o.steps_per_scenario + k);
    rng.shuffle(order.begin(), order.end());
    p.procedures.push_back(order);
  }
  return p;
}

GenTake make_take(const KeystepSyntheticOptions& o, const Prototypes& p, Rng& rng, int split,
                  int64_t index) {
  GenTake take;
  take.uid = uuid(rng);
  take.scenario = rng.randint(0, o.scenarios);
  char name[96];
  std::snprintf(name, sizeof(name), "synthlab_scenario%lld_%s%03lld_%lld",
                static_cast<long long>(take.scenario), kSplitNames[split],
                static_cast<long long>(index), static_cast<long long>(1 + index % 9));
  take.name = name;
  const int64_t length = rng.randint(o.min_segments, o.max_segments + 1);
  const std::vector<int64_t>& procedure = p.procedures[static_cast<size_t>(take.scenario)];
  const int64_t k_steps = o.steps_per_scenario;
  int64_t position = rng.randint(0, std::max<int64_t>(1, k_steps / 3));
  double t = rng.uniform_double() * 2.0;
  for (int64_t i = 0; i < length; ++i) {
    GenSegment seg;
    seg.label = procedure[static_cast<size_t>(position)];
    seg.start = round5(t);
    seg.end = round5(t + o.min_seconds + (o.max_seconds - o.min_seconds) * rng.uniform_double());
    t = seg.end + o.max_gap_seconds * rng.uniform_double();
    take.segments.push_back(seg);
    const double u = rng.uniform_double();
    if (u < o.p_jump) {
      position = rng.randint(0, k_steps);
    } else if (u < o.p_jump + o.p_skip) {
      position = (position + 2) % k_steps;
    } else {
      position = (position + 1) % k_steps;
    }
  }
  return take;
}

// Writes one take's feature files: ego + exo views as torch.save [T, dim], captions as .npy.
int64_t write_take_features(const KeystepSyntheticOptions& o, const Prototypes& p,
                            const GenTake& take, Rng& rng, const std::string& video_dir,
                            const std::string& text_dir) {
  const FeatureTiming timing;
  const int64_t dim = o.dim;
  const double duration = take.segments.back().end + 1.0;
  const int64_t rows = std::max<int64_t>(
      1,
      static_cast<int64_t>(std::floor((duration * timing.fps - static_cast<double>(timing.window)) /
                                      static_cast<double>(timing.stride))) +
          1);
  // The segment whose window holds row t (segment_feature's "inside" rule), or -1.
  std::vector<int64_t> owner(static_cast<size_t>(rows), -1);
  for (int64_t r = 0; r < rows; ++r) {
    const double a = static_cast<double>(timing.stride * r) / timing.fps;
    const double b = static_cast<double>(timing.stride * r + timing.window) / timing.fps;
    for (size_t i = 0; i < take.segments.size(); ++i) {
      if (a >= take.segments[i].start - 1e-6 && b <= take.segments[i].end + 1e-6) {
        owner[static_cast<size_t>(r)] = static_cast<int64_t>(i);
        break;
      }
    }
  }
  std::vector<float> shift(static_cast<size_t>(dim));
  for (float& v : shift)
    v = static_cast<float>(o.take_shift) * rng.normal();
  const auto n = static_cast<int64_t>(take.segments.size());
  int64_t files = 0;
  for (int64_t view = 0; view <= o.exo_views; ++view) {
    const double noise = o.segment_noise * (view == 0 ? 1.0 : o.exo_noise_scale);
    std::vector<float> latent(static_cast<size_t>(n * dim));
    for (int64_t i = 0; i < n; ++i) {
      const float* mu = p.classes.data() + take.segments[static_cast<size_t>(i)].label * dim;
      const float* nu = p.scenarios.data() + take.scenario * dim;
      for (int64_t d = 0; d < dim; ++d) {
        latent[static_cast<size_t>(i * dim + d)] = static_cast<float>(
            o.class_signal * mu[d] + o.scenario_signal * nu[d] + shift[d] + noise * rng.normal());
      }
    }
    Tensor features = Tensor::empty({rows, dim});
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = owner[static_cast<size_t>(r)];
      float* row = features.data() + r * dim;
      for (int64_t d = 0; d < dim; ++d) {
        const float base = i >= 0 ? latent[static_cast<size_t>(i * dim + d)] : shift[d];
        row[d] = base + static_cast<float>(o.clip_noise) * rng.normal();
      }
    }
    const std::string camera = view == 0 ? std::string(kEgoCamera) : camera_name(view) + "_0";
    write_torch_tensor(video_dir + "/" + take.uid + "_" + camera + ".pt", features);
    ++files;
  }
  Tensor captions = Tensor::empty({n, o.text_dim});
  for (int64_t i = 0; i < n; ++i) {
    const float* tau = p.text.data() + take.segments[static_cast<size_t>(i)].label * o.text_dim;
    for (int64_t d = 0; d < o.text_dim; ++d) {
      captions.data()[i * o.text_dim + d] =
          static_cast<float>(o.text_signal * tau[d] + o.text_noise * rng.normal());
    }
  }
  write_npy(text_dir + "/" + take.uid + ".npy", captions);
  return files + 1;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

nlohmann::json keystep_synthetic_json(const KeystepSyntheticOptions& o) {
  return {{"seed", o.seed},
          {"scenarios", o.scenarios},
          {"steps_per_scenario", o.steps_per_scenario},
          {"train_takes", o.train_takes},
          {"val_takes", o.val_takes},
          {"test_takes", o.test_takes},
          {"min_segments", o.min_segments},
          {"max_segments", o.max_segments},
          {"dim", o.dim},
          {"text_dim", o.text_dim},
          {"exo_views", o.exo_views},
          {"min_seconds", o.min_seconds},
          {"max_seconds", o.max_seconds},
          {"max_gap_seconds", o.max_gap_seconds},
          {"p_skip", o.p_skip},
          {"p_jump", o.p_jump},
          {"class_signal", o.class_signal},
          {"scenario_signal", o.scenario_signal},
          {"take_shift", o.take_shift},
          {"segment_noise", o.segment_noise},
          {"clip_noise", o.clip_noise},
          {"exo_noise_scale", o.exo_noise_scale},
          {"text_signal", o.text_signal},
          {"text_noise", o.text_noise}};
}

KeystepSyntheticOptions keystep_synthetic_from_json(const nlohmann::json& json) {
  KeystepSyntheticOptions o;
  if (!json.is_object()) throw ValueError("synthetic keystep options: expected a JSON object");
  const nlohmann::json defaults = keystep_synthetic_json(o);
  for (const auto& [key, value] : json.items()) {
    if (!defaults.contains(key))
      throw ValueError("synthetic keystep options: unknown key '" + key + "'");
    if (!value.is_number()) {
      throw ValueError("synthetic keystep options: '" + key + "' must be a number");
    }
  }
  const auto get = [&](const char* key, auto& field) {
    if (json.contains(key)) field = json.at(key).get<std::decay_t<decltype(field)>>();
  };
  get("seed", o.seed);
  get("scenarios", o.scenarios);
  get("steps_per_scenario", o.steps_per_scenario);
  get("train_takes", o.train_takes);
  get("val_takes", o.val_takes);
  get("test_takes", o.test_takes);
  get("min_segments", o.min_segments);
  get("max_segments", o.max_segments);
  get("dim", o.dim);
  get("text_dim", o.text_dim);
  get("exo_views", o.exo_views);
  get("min_seconds", o.min_seconds);
  get("max_seconds", o.max_seconds);
  get("max_gap_seconds", o.max_gap_seconds);
  get("p_skip", o.p_skip);
  get("p_jump", o.p_jump);
  get("class_signal", o.class_signal);
  get("scenario_signal", o.scenario_signal);
  get("take_shift", o.take_shift);
  get("segment_noise", o.segment_noise);
  get("clip_noise", o.clip_noise);
  get("exo_noise_scale", o.exo_noise_scale);
  get("text_signal", o.text_signal);
  get("text_noise", o.text_noise);
  return o;
}

KeystepSyntheticSummary write_keystep_synthetic(const std::string& dir,
                                                const KeystepSyntheticOptions& o) {
  validate(o);
  namespace fs = std::filesystem;
  const std::string annotations = dir + "/annotations/keystep_benchmark";
  const std::string video_dir = dir + "/features/omnivore_video";
  const std::string text_dir = dir + "/features/text";
  for (const std::string& d : {annotations, video_dir, text_dir}) {
    std::error_code ec;
    fs::create_directories(d, ec);
    if (ec) throw IoError("cannot create '" + d + "': " + ec.message());
  }
  const Prototypes prototypes = make_prototypes(o);
  KeystepSyntheticSummary summary;
  summary.classes = o.scenarios * o.steps_per_scenario;

  std::ostringstream mapping;
  mapping << "label_id,step_unique_id,step_name,scenario_name\n";
  for (int64_t label = 0; label < summary.classes; ++label) {
    mapping << label << ',' << step_unique_id(label) << ',' << csv_field(step_name(label))
            << ",scenario" << label / o.steps_per_scenario << '\n';
  }
  write_file_atomic(annotations + "/label_mapping.csv", mapping.str());
  ++summary.files;

  std::ostringstream truth;
  truth << "ego_segment_name,label_id\n";
  const int64_t takes_per_split[3] = {o.train_takes, o.val_takes, o.test_takes};
  for (int split = 0; split < 3; ++split) {
    Json segments = Json::array();
    for (int64_t t = 0; t < takes_per_split[split]; ++t) {
      Rng rng = Rng(o.seed).fork((static_cast<uint64_t>(split) << 32) + static_cast<uint64_t>(t));
      const GenTake take = make_take(o, prototypes, rng, split, t);
      summary.files += write_take_features(o, prototypes, take, rng, video_dir, text_dir);
      ++summary.takes;
      // Every fifth take lists its segments latest first: readers must sort by start time and
      // write predictions back in file order.
      std::vector<size_t> order(take.segments.size());
      for (size_t i = 0; i < order.size(); ++i)
        order[i] = t % 5 == 4 ? order.size() - 1 - i : i;
      for (size_t i : order) {
        const GenSegment& seg = take.segments[i];
        Json names = Json::array();
        const std::string ego =
            clip_name(kSplitNames[split], take.name, seg.start, seg.end, kEgoCamera);
        names.push_back(ego);
        for (int64_t k = 1; k <= o.exo_views; ++k)
          names.push_back(
              clip_name(kSplitNames[split], take.name, seg.start, seg.end, camera_name(k)));
        Json s;
        s["segment_name_list"] = names;
        s["ego_segment_name"] = ego;
        s["take_uid"] = take.uid;
        s["take_name"] = take.name;
        s["start_time"] = seg.start;
        s["end_time"] = seg.end;
        if (split < 2) {
          s["step_unique_id"] = step_unique_id(seg.label);
          s["label_id"] = seg.label;
          s["step_name"] = step_name(seg.label);
        } else {
          truth << ego << ',' << seg.label << '\n';
        }
        segments.push_back(std::move(s));
        ++summary.segments[split];
      }
    }
    Json doc;
    doc["date"] = "01/01/2025";
    doc["description"] = "Synthetic EgoExo4D Fine-grained Keystep Recognition (stgnn)";
    doc["splits"] = kSplitNames[split];
    doc["segments"] = std::move(segments);
    write_file_atomic(annotations + "/" + kSplitFiles[split], doc.dump(1) + "\n");
    ++summary.files;
  }
  write_file_atomic(dir + "/test_ground_truth.csv", truth.str());
  write_file_atomic(dir + "/synthetic.json", keystep_synthetic_json(o).dump(2) + "\n");
  summary.files += 2;
  return summary;
}

}  // namespace stgnn
