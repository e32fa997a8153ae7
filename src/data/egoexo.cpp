#include "data/egoexo.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "autograd/atomic_file.h"
#include "data/csv.h"
#include "data/npy.h"
#include "data/torch_pt.h"

namespace stgnn {

namespace {

using Json = nlohmann::ordered_json;

std::string read_text(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

std::string format_number(double v) {
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}

// Strict decimal integer ("843", "-1"; no spaces inside, no trailing text).
std::optional<int64_t> parse_int(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t i = text[0] == '-' || text[0] == '+' ? 1 : 0;
  if (i == text.size()) return std::nullopt;
  for (size_t k = i; k < text.size(); ++k) {
    if (text[k] < '0' || text[k] > '9') return std::nullopt;
  }
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno == ERANGE || *end != '\0') return std::nullopt;
  return static_cast<int64_t>(v);
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t'))
    ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
    --e;
  return s.substr(b, e - b);
}

const char* json_type(const Json& v) {
  return v.type_name();
}

// Field access with messages "<context>: field '<key>': expected ..., found ...".
class Fields {
 public:
  Fields(const Json& object, std::string context) : object_(object), context_(std::move(context)) {
    if (!object_.is_object()) {
      throw FormatError(context_ + ": expected an object, found " + json_type(object_));
    }
  }

  const std::string& context() const { return context_; }

  // nullptr when the key is absent or null.
  const Json* find(const char* key) const {
    const auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  const Json& require(const char* key) const {
    const Json* v = find(key);
    if (!v) throw FormatError(context_ + ": missing field '" + key + "'");
    return *v;
  }
  [[noreturn]] void wrong(const char* key, const char* expected, const Json& v) const {
    throw FormatError(context_ + ": field '" + key + "': expected " + expected + ", found " +
                      json_type(v) + (v.is_primitive() ? " " + v.dump() : std::string()));
  }
  std::string string(const char* key) const {
    const Json& v = require(key);
    if (!v.is_string()) wrong(key, "a string", v);
    return v.get<std::string>();
  }
  std::optional<std::string> optional_string(const char* key) const {
    const Json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong(key, "a string", *v);
    return v->get<std::string>();
  }
  double time(const char* key) const {
    const Json& v = require(key);
    if (!v.is_number()) wrong(key, "a number of seconds", v);
    const double t = v.get<double>();
    if (!std::isfinite(t) || t < 0) {
      throw FormatError(context_ + ": field '" + key + "': " + format_number(t) +
                        " is not a non-negative time");
    }
    return t;
  }
  std::optional<int64_t> optional_int(const char* key) const {
    const Json* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() &&
          v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        wrong(key, "an integer in int64 range", *v);
      }
      return v->get<int64_t>();
    }
    if (v->is_number_float()) {
      const double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
        return static_cast<int64_t>(d);
      }
      wrong(key, "an integer", *v);
    }
    if (v->is_string()) {
      if (const auto parsed = parse_int(trim(v->get<std::string>()))) return parsed;
    }
    wrong(key, "an integer", *v);
  }
  int64_t integer(const char* key) const {
    require(key);
    return *optional_int(key);
  }
  std::optional<bool> optional_bool(const char* key) const {
    const Json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong(key, "true or false", *v);
    return v->get<bool>();
  }

 private:
  const Json& object_;
  std::string context_;
};

Json parse_json(const std::string& text, const std::string& name) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    throw FormatError("'" + name + "': invalid JSON: " + e.what());
  }
}

// Applies the label rules documented in egoexo.h; false when the segment is to be dropped.
bool resolve_label(KeystepSegment& seg, std::optional<int64_t> label_id,
                   std::optional<int64_t> step_unique_id, const LabelMapping* mapping,
                   const std::string& context) {
  if (step_unique_id) seg.step_unique_id = *step_unique_id;
  if (label_id) {
    if (*label_id < 0 || (mapping && *label_id >= mapping->num_classes())) {
      throw FormatError(context + ": field 'label_id': " + std::to_string(*label_id) +
                        (mapping ? " is outside 0.." + std::to_string(mapping->num_classes() - 1) +
                                       " of '" + mapping->source + "'"
                                 : std::string(" is negative")));
    }
    if (mapping && step_unique_id) {
      const int64_t expected = mapping->label_for_step(*step_unique_id);
      if (expected != *label_id) {
        const std::string mapped =
            expected < 0 ? "is not in '" + mapping->source + "'"
                         : "is label " + std::to_string(expected) + " in '" + mapping->source + "'";
        throw FormatError(context + ": field 'label_id': " + std::to_string(*label_id) +
                          " disagrees with step_unique_id " + std::to_string(*step_unique_id) +
                          ", which " + mapped);
      }
    }
    seg.label = *label_id;
    return true;
  }
  if (step_unique_id && mapping) {
    seg.label = mapping->label_for_step(*step_unique_id);
    return seg.label >= 0;
  }
  return true;
}

bool valid_device_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

// Length of the decimal number at s[pos..] ("12", "0.85598", "1e-3"), 0 when there is none.
size_t number_length(const std::string& s, size_t pos) {
  if (pos >= s.size()) return 0;
  const char* begin = s.c_str() + pos;
  char* end = nullptr;
  std::strtod(begin, &end);
  return static_cast<size_t>(end - begin);
}

// Reads the per-file fields shared by both segment readers and fills cameras from clip names.
void read_clip_names(KeystepSegment& seg, const Fields& f) {
  const Json& list = f.require("segment_name_list");
  if (!list.is_array() || list.empty()) f.wrong("segment_name_list", "a non-empty array", list);
  for (size_t k = 0; k < list.size(); ++k) {
    if (!list[k].is_string()) {
      throw FormatError(f.context() + ": field 'segment_name_list' entry " + std::to_string(k) +
                        ": expected a string, found " + json_type(list[k]));
    }
    seg.segment_names.push_back(list[k].get<std::string>());
  }
  seg.ego_segment_name = f.string("ego_segment_name");
  try {
    seg.ego_camera = camera_from_segment_name(seg.ego_segment_name);
    for (const std::string& clip : seg.segment_names) {
      const std::string camera = camera_from_segment_name(clip);
      if (camera != seg.ego_camera && std::find(seg.exo_cameras.begin(), seg.exo_cameras.end(),
                                                camera) == seg.exo_cameras.end()) {
        seg.exo_cameras.push_back(camera);
      }
    }
  } catch (const FormatError& e) {
    throw FormatError(f.context() + ": " + e.what());
  }
}

void check_times(const KeystepSegment& seg, const std::string& context) {
  if (seg.end_time < seg.start_time) {
    throw FormatError(context + ": end_time " + format_number(seg.end_time) +
                      " is before start_time " + format_number(seg.start_time));
  }
}

Tensor check_finite(Tensor t, const std::string& path) {
  const int64_t n = t.numel();
  const int64_t cols = t.dim() >= 2 ? t.size(-1) : std::max<int64_t>(n, 1);
  const float* p = t.data();
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(p[i])) {
      throw FormatError("features '" + path + "': row " + std::to_string(i / cols) + " column " +
                        std::to_string(i % cols) + " is " +
                        (std::isnan(p[i]) ? "NaN" : "infinite"));
    }
  }
  return t;
}

Tensor read_any_tensor(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".pt") return read_torch_tensor(path);
  if (ext == ".npy") return npy_to_tensor(read_npy(path));
  throw FormatError("features '" + path + "': unknown extension '" + ext + "' (.pt or .npy)");
}

}  // namespace

// ---------------------------------------------------------------- labels

int64_t LabelMapping::label_for_step(int64_t step_unique_id) const {
  const auto it = label_of_step.find(step_unique_id);
  return it == label_of_step.end() ? -1 : it->second;
}

LabelMapping parse_label_mapping(const std::string& text, const std::string& name_for_errors) {
  const std::string& name = name_for_errors;
  const std::vector<CsvRecord> records = parse_csv(text, name);
  if (records.empty()) throw FormatError(name + ": empty file (expected a header line)");
  const CsvRecord& header = records[0];
  auto column = [&](const std::string& wanted, bool required) -> int64_t {
    for (size_t k = 0; k < header.fields.size(); ++k) {
      if (trim(header.fields[k]) == wanted) return static_cast<int64_t>(k);
    }
    if (required) {
      throw FormatError(name + ":" + std::to_string(header.line) + ": header lacks column '" +
                        wanted + "' (expected label_id,step_unique_id,step_name,scenario_name)");
    }
    return -1;
  };
  const int64_t col_label = column("label_id", true);
  const int64_t col_step = column("step_unique_id", true);
  const int64_t col_name = column("step_name", true);
  const int64_t col_scenario = column("scenario_name", false);
  LabelMapping mapping;
  mapping.source = name;
  std::vector<int64_t> line_of_label;
  std::unordered_map<int64_t, int64_t> line_of_step;
  std::vector<LabelEntry> rows;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    const std::string where = name + ":" + std::to_string(rec.line) + ": ";
    if (rec.fields.size() != header.fields.size()) {
      throw FormatError(where + "expected " + std::to_string(header.fields.size()) +
                        " fields, found " + std::to_string(rec.fields.size()));
    }
    LabelEntry e;
    const auto label = parse_int(trim(rec.fields[static_cast<size_t>(col_label)]));
    if (!label)
      throw FormatError(where + "label_id '" + rec.fields[static_cast<size_t>(col_label)] +
                        "' is not an integer");
    const auto step = parse_int(trim(rec.fields[static_cast<size_t>(col_step)]));
    if (!step)
      throw FormatError(where + "step_unique_id '" + rec.fields[static_cast<size_t>(col_step)] +
                        "' is not an integer");
    e.label_id = *label;
    e.step_unique_id = *step;
    e.step_name = rec.fields[static_cast<size_t>(col_name)];
    if (col_scenario >= 0) e.scenario_name = rec.fields[static_cast<size_t>(col_scenario)];
    const auto seen = line_of_step.find(e.step_unique_id);
    if (seen != line_of_step.end()) {
      throw FormatError(where + "step_unique_id " + std::to_string(e.step_unique_id) +
                        " already mapped on line " + std::to_string(seen->second));
    }
    line_of_step[e.step_unique_id] = rec.line;
    rows.push_back(std::move(e));
    line_of_label.push_back(rec.line);
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  if (n == 0) throw FormatError(name + ": no labels after the header");
  mapping.entries.resize(rows.size());
  std::vector<int64_t> defined_on(rows.size(), 0);
  for (size_t r = 0; r < rows.size(); ++r) {
    const int64_t id = rows[r].label_id;
    const std::string where = name + ":" + std::to_string(line_of_label[r]) + ": ";
    if (id < 0 || id >= n) {
      throw FormatError(where + "label_id " + std::to_string(id) + " outside 0.." +
                        std::to_string(n - 1) +
                        " (label ids must be 0..n-1 for n = " + std::to_string(n) + " rows)");
    }
    if (defined_on[static_cast<size_t>(id)] != 0) {
      throw FormatError(where + "label_id " + std::to_string(id) + " already defined on line " +
                        std::to_string(defined_on[static_cast<size_t>(id)]));
    }
    defined_on[static_cast<size_t>(id)] = line_of_label[r];
    mapping.label_of_step[rows[r].step_unique_id] = id;
    mapping.entries[static_cast<size_t>(id)] = std::move(rows[r]);
  }
  return mapping;
}

LabelMapping read_label_mapping(const std::string& path) {
  return parse_label_mapping(read_text(path), path);
}

// ---------------------------------------------------------------- segments

bool KeystepSplit::labelled() const {
  return std::all_of(segments.begin(), segments.end(),
                     [](const KeystepSegment& s) { return s.label >= 0; });
}

KeystepSplit parse_keystep_segments(const std::string& text, const std::string& name_for_errors,
                                    const LabelMapping* mapping) {
  const std::string& name = name_for_errors;
  const Json doc = parse_json(text, name);
  const Json* list = &doc;
  if (doc.is_object()) {
    const auto it = doc.find("segments");
    if (it == doc.end()) throw FormatError("'" + name + "': no \"segments\" array");
    list = &*it;
  }
  if (!list->is_array()) {
    throw FormatError("'" + name + "': \"segments\" is " + json_type(*list) +
                      ", expected an array");
  }
  KeystepSplit split;
  split.source = name;
  split.total_in_file = static_cast<int64_t>(list->size());
  for (size_t i = 0; i < list->size(); ++i) {
    const Fields f((*list)[i], "'" + name + "': segment " + std::to_string(i));
    KeystepSegment seg;
    seg.index = static_cast<int64_t>(i);
    seg.take_uid = f.string("take_uid");
    seg.take_name = f.string("take_name");
    seg.start_time = f.time("start_time");
    seg.end_time = f.time("end_time");
    check_times(seg, f.context());
    read_clip_names(seg, f);
    if (auto step_name = f.optional_string("step_name")) seg.step_name = *step_name;
    if (!resolve_label(seg, f.optional_int("label_id"), f.optional_int("step_unique_id"), mapping,
                       f.context())) {
      ++split.dropped_unmapped;
      continue;
    }
    split.segments.push_back(std::move(seg));
  }
  return split;
}

KeystepSplit read_keystep_segments(const std::string& path, const LabelMapping* mapping) {
  return parse_keystep_segments(read_text(path), path, mapping);
}

KeystepSplit parse_raw_keysteps(const std::string& text, const std::string& name_for_errors,
                                const LabelMapping& mapping) {
  const std::string& name = name_for_errors;
  const Json doc = parse_json(text, name);
  if (!doc.is_object()) throw FormatError("'" + name + "': expected an object at the top level");
  const auto annotations = doc.find("annotations");
  if (annotations == doc.end()) throw FormatError("'" + name + "': no \"annotations\"");
  if (!annotations->is_object() && !annotations->is_array()) {
    throw FormatError("'" + name + "': \"annotations\" is " + json_type(*annotations) +
                      ", expected an object keyed by take_uid or an array");
  }
  KeystepSplit split;
  split.source = name;
  int64_t index = 0;
  size_t take_position = 0;
  for (auto it = annotations->begin(); it != annotations->end(); ++it, ++take_position) {
    const std::string key = annotations->is_object() ? it.key() : std::string();
    const std::string take_context =
        "'" + name + "': take " + (key.empty() ? std::to_string(take_position) : key);
    const Fields take(it.value(), take_context);
    const std::string take_uid = take.find("take_uid") ? take.string("take_uid") : key;
    if (take_uid.empty()) throw FormatError(take_context + ": missing field 'take_uid'");
    const std::string take_name = take.string("take_name");
    const std::string scenario = take.optional_string("scenario").value_or("");
    const Json& segments = take.require("segments");
    if (!segments.is_array()) take.wrong("segments", "an array", segments);
    for (size_t k = 0; k < segments.size(); ++k, ++index) {
      ++split.total_in_file;
      const Fields f(segments[k], take_context + " segment " + std::to_string(k));
      KeystepSegment seg;
      seg.index = index;
      seg.take_uid = take_uid;
      seg.take_name = take_name;
      seg.scenario = scenario;
      seg.start_time = f.time("start_time");
      seg.end_time = f.time("end_time");
      check_times(seg, f.context());
      seg.step_unique_id = f.integer("step_unique_id");
      f.optional_int("step_id");  // type-checked only
      seg.step_name = f.optional_string("step_name").value_or("");
      seg.step_description = f.optional_string("step_description").value_or("");
      seg.is_essential = f.optional_bool("is_essential").value_or(false);
      seg.label = mapping.label_for_step(seg.step_unique_id);
      if (seg.label < 0) {
        ++split.dropped_unmapped;
        continue;
      }
      split.segments.push_back(std::move(seg));
    }
  }
  return split;
}

KeystepSplit read_raw_keysteps(const std::string& path, const LabelMapping& mapping) {
  return parse_raw_keysteps(read_text(path), path, mapping);
}

std::string camera_from_segment_name(const std::string& segment_name) {
  const size_t slash = segment_name.find_last_of('/');
  const std::string base =
      slash == std::string::npos ? segment_name : segment_name.substr(slash + 1);
  auto bad = [&]() {
    throw FormatError("clip name '" + segment_name +
                      "' does not have the form '<dir>/start<t>_end<t>_<camera>.mp4'");
  };
  if (base.compare(0, 5, "start") != 0) bad();
  size_t pos = 5;
  size_t len = number_length(base, pos);
  if (len == 0) bad();
  pos += len;
  if (base.compare(pos, 4, "_end") != 0) bad();
  pos += 4;
  len = number_length(base, pos);
  if (len == 0) bad();
  pos += len;
  if (pos >= base.size() || base[pos] != '_') bad();
  ++pos;
  const size_t dot = base.find_last_of('.');
  const size_t stop = dot == std::string::npos || dot < pos ? base.size() : dot;
  const std::string camera = base.substr(pos, stop - pos);
  if (camera.empty() || !std::all_of(camera.begin(), camera.end(), valid_device_char)) bad();
  return camera;
}

std::string camera_device(const std::string& camera) {
  return camera.substr(0, camera.find('_'));
}

// ---------------------------------------------------------------- takes

std::vector<std::string> Take::cameras() const {
  std::vector<std::string> all;
  if (!ego_camera.empty()) all.push_back(ego_camera);
  all.insert(all.end(), exo_cameras.begin(), exo_cameras.end());
  return all;
}

std::vector<Take> group_takes(const std::vector<KeystepSegment>& segments) {
  std::vector<Take> takes;
  std::unordered_map<std::string, size_t> position;
  for (const KeystepSegment& seg : segments) {
    auto [it, inserted] = position.emplace(seg.take_uid, takes.size());
    if (inserted) {
      takes.emplace_back();
      takes.back().take_uid = seg.take_uid;
      takes.back().take_name = seg.take_name;
    }
    Take& take = takes[it->second];
    if (take.take_name != seg.take_name) {
      throw FormatError("take " + seg.take_uid + ": segment " + std::to_string(seg.index) +
                        " names it '" + seg.take_name + "', earlier segments '" + take.take_name +
                        "'");
    }
    if (!seg.ego_camera.empty()) {
      if (take.ego_camera.empty()) {
        take.ego_camera = seg.ego_camera;
      } else if (take.ego_camera != seg.ego_camera) {
        throw FormatError("take " + seg.take_uid + ": segment " + std::to_string(seg.index) +
                          " has ego camera '" + seg.ego_camera + "', earlier segments '" +
                          take.ego_camera + "'");
      }
    }
    for (const std::string& cam : seg.exo_cameras) {
      if (std::find(take.exo_cameras.begin(), take.exo_cameras.end(), cam) ==
          take.exo_cameras.end()) {
        take.exo_cameras.push_back(cam);
      }
    }
    take.segments.push_back(seg);
  }
  for (Take& take : takes) {
    std::stable_sort(take.segments.begin(), take.segments.end(),
                     [](const KeystepSegment& a, const KeystepSegment& b) {
                       if (a.start_time != b.start_time) return a.start_time < b.start_time;
                       if (a.end_time != b.end_time) return a.end_time < b.end_time;
                       return a.index < b.index;
                     });
  }
  return takes;
}

// ---------------------------------------------------------------- feature timing

Tensor segment_feature(const Tensor& features, double start, double end,
                       const FeatureTiming& timing) {
  if (!features.defined() || features.dim() != 2) {
    throw ShapeError("segment_feature: features must be [T, D], got " +
                     (features.defined() ? shape_str(features.shape()) : std::string("undefined")));
  }
  if (!std::isfinite(start) || !std::isfinite(end) || end < start) {
    throw ValueError("segment_feature: bad segment times [" + format_number(start) + ", " +
                     format_number(end) + "]");
  }
  if (!(timing.fps > 0) || timing.window <= 0 || timing.stride <= 0) {
    throw ValueError("segment_feature: bad timing (fps " + format_number(timing.fps) + ", window " +
                     std::to_string(timing.window) + ", stride " + std::to_string(timing.stride) +
                     ")");
  }
  const int64_t rows = features.size(0);
  const int64_t dim = features.size(1);
  constexpr double kSlack = 1e-6;
  auto window_start = [&](int64_t t) {
    return static_cast<double>(timing.stride * t) / timing.fps;
  };
  auto window_end = [&](int64_t t) {
    return static_cast<double>(timing.stride * t + timing.window) / timing.fps;
  };
  std::vector<int64_t> chosen;
  for (int64_t t = 0; t < rows; ++t) {
    if (window_start(t) >= start - kSlack && window_end(t) <= end + kSlack) chosen.push_back(t);
  }
  if (chosen.empty()) {
    for (int64_t t = 0; t < rows; ++t) {
      if (window_start(t) <= end && window_end(t) > start) chosen.push_back(t);
    }
  }
  if (chosen.empty()) {
    throw FormatError("segment [" + format_number(start) + ", " + format_number(end) +
                      "] s overlaps none of the " + std::to_string(rows) +
                      " feature windows, which cover [0, " +
                      format_number(rows > 0 ? window_end(rows - 1) : 0.0) + ") s");
  }
  std::vector<double> sum(static_cast<size_t>(dim), 0.0);
  const float* data = features.data();
  for (int64_t t : chosen) {
    const float* row = data + t * dim;
    for (int64_t d = 0; d < dim; ++d)
      sum[static_cast<size_t>(d)] += row[d];
  }
  Tensor out = Tensor::empty({dim});
  const double count = static_cast<double>(chosen.size());
  for (int64_t d = 0; d < dim; ++d)
    out.data()[d] = static_cast<float>(sum[static_cast<size_t>(d)] / count);
  return out;
}

Tensor take_segment_features(const Tensor& features, const Take& take, const std::string& source,
                             const FeatureTiming& timing) {
  if (!features.defined() || features.dim() != 2) {
    throw ShapeError("take_segment_features '" + source + "': features must be [T, D]");
  }
  const int64_t n = static_cast<int64_t>(take.segments.size());
  const int64_t dim = features.size(1);
  Tensor out = Tensor::empty({n, dim});
  for (int64_t i = 0; i < n; ++i) {
    const KeystepSegment& seg = take.segments[static_cast<size_t>(i)];
    try {
      const Tensor row = segment_feature(features, seg.start_time, seg.end_time, timing);
      std::copy(row.data(), row.data() + dim, out.data() + i * dim);
    } catch (const FormatError& e) {
      throw FormatError("features '" + source + "': take " + take.take_uid + " (" + take.take_name +
                        ") segment " + std::to_string(seg.index) + ": " + e.what());
    }
  }
  return out;
}

// ---------------------------------------------------------------- feature files

Tensor read_feature_matrix(const std::string& path) {
  Tensor t = read_any_tensor(path);
  if (t.dim() != 2) {
    throw FormatError("features '" + path + "': expected a [T, D] matrix, found " +
                      shape_str(t.shape()));
  }
  return check_finite(std::move(t), path);
}

Tensor read_caption_features(const std::string& path, int64_t num_segments) {
  Tensor t = read_any_tensor(path);
  if (t.dim() != 2 || t.size(0) != num_segments) {
    throw FormatError("caption features '" + path + "': expected [" + std::to_string(num_segments) +
                      ", D] (one row per segment of the take), found " + shape_str(t.shape()));
  }
  return check_finite(std::move(t), path);
}

FeatureIndex::FeatureIndex(const std::string& root) : root_(root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    throw IoError("features directory '" + root + "' does not exist or is not a directory");
  }
  const auto options = fs::directory_options::follow_directory_symlink |
                       fs::directory_options::skip_permission_denied;
  fs::recursive_directory_iterator it(root, options, ec);
  if (ec) throw IoError("cannot list features directory '" + root + "': " + ec.message());
  // Followed symlinks can reach a directory twice (or loop); canonical paths catch both.
  std::set<std::string> seen_dirs{fs::weakly_canonical(root, ec).string()};
  std::set<std::string> seen_files;
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw IoError("cannot list features directory '" + root + "': " + ec.message());
    const fs::path& p = it->path();
    std::error_code entry_ec;
    if (it->is_directory(entry_ec)) {
      const std::string canonical = fs::canonical(p, entry_ec).string();
      if (entry_ec || !seen_dirs.insert(canonical).second) it.disable_recursion_pending();
      continue;
    }
    const std::string ext = p.extension().string();
    if (ext != ".pt" && ext != ".npy") continue;
    if (!it->is_regular_file(entry_ec)) continue;
    const std::string canonical = fs::canonical(p, entry_ec).string();
    if (entry_ec || !seen_files.insert(canonical).second) continue;
    by_stem_[p.stem().string()].push_back(p.string());
    ++num_files_;
  }
  if (ec) throw IoError("cannot list features directory '" + root + "': " + ec.message());
  for (auto& [stem, paths] : by_stem_)
    std::sort(paths.begin(), paths.end());
}

std::vector<std::string> FeatureIndex::with_stem(const std::string& stem) const {
  const auto it = by_stem_.find(stem);
  return it == by_stem_.end() ? std::vector<std::string>{} : it->second;
}

std::vector<std::string> FeatureIndex::with_stem_prefix(const std::string& prefix) const {
  std::vector<std::string> out;
  for (auto it = by_stem_.lower_bound(prefix);
       it != by_stem_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
  return out;
}

std::optional<std::string> FeatureIndex::single(const std::vector<std::string>& paths,
                                                const std::string& what) const {
  if (paths.empty()) return std::nullopt;
  if (paths.size() > 1) {
    std::string list;
    for (size_t i = 0; i < paths.size() && i < 5; ++i)
      list += (i ? "', '" : "'") + paths[i];
    list += "'";
    if (paths.size() > 5) list += ", ...";
    throw FormatError("features for " + what + " are ambiguous under '" + root_ +
                      "': " + std::to_string(paths.size()) + " files match (" + list +
                      "); keep one per camera");
  }
  return paths[0];
}

std::optional<std::string> FeatureIndex::find_camera(const std::string& take_uid,
                                                     const std::string& take_name,
                                                     const std::string& camera,
                                                     int64_t view_index) const {
  const std::string what = "take " + take_uid + " camera " + camera;
  if (auto p = single(with_stem(take_uid + "_" + camera), what)) return p;
  if (auto p = single(with_stem_prefix(take_uid + "_" + camera + "_"), what)) return p;
  if (view_index >= 0 && !take_name.empty()) {
    std::vector<std::string> npy;
    for (const std::string& p : with_stem(take_name + "_" + std::to_string(view_index))) {
      if (std::filesystem::path(p).extension() == ".npy") npy.push_back(p);
    }
    return single(npy, what);
  }
  return std::nullopt;
}

std::string FeatureIndex::require_camera(const std::string& take_uid, const std::string& take_name,
                                         const std::string& camera, int64_t view_index) const {
  if (auto p = find_camera(take_uid, take_name, camera, view_index)) return *p;
  std::string looked =
      take_uid + "_" + camera + ".{pt,npy}, " + take_uid + "_" + camera + "_<stream>.{pt,npy}";
  if (view_index >= 0 && !take_name.empty()) {
    looked += ", " + take_name + "_" + std::to_string(view_index) + ".npy";
  }
  throw IoError("no feature file for take " + take_uid + " (" + take_name + ") camera " + camera +
                " under '" + root_ + "' (looked for " + looked + ")");
}

std::optional<std::string> FeatureIndex::find_take(const std::string& take_uid,
                                                   const std::string& take_name) const {
  const std::string what = "take " + take_uid;
  if (auto p = single(with_stem(take_uid), what)) return p;
  if (!take_name.empty()) return single(with_stem(take_name), what);
  return std::nullopt;
}

TakeFeatures load_take_features(const FeatureIndex& index, const Take& take, bool include_exo,
                                MissingFeatures policy) {
  if (take.ego_camera.empty()) {
    throw FormatError("take " + take.take_uid + " (" + take.take_name +
                      "): no camera names (its annotations carry no segment_name_list)");
  }
  const std::vector<std::string> cameras = take.cameras();
  const size_t wanted = include_exo ? cameras.size() : 1;
  TakeFeatures out;
  for (size_t k = 0; k < wanted; ++k) {
    const std::string& camera = cameras[k];
    const auto view = static_cast<int64_t>(k);
    std::optional<std::string> path =
        index.find_camera(take.take_uid, take.take_name, camera, view);
    if (!path) {
      if (policy == MissingFeatures::kError) {
        index.require_camera(take.take_uid, take.take_name, camera, view);  // throws the message
      }
      out.missing.push_back(camera);
      continue;
    }
    CameraFeatures cf{camera, *path, read_feature_matrix(*path)};
    if (!out.cameras.empty() && out.cameras[0].features.size(1) != cf.features.size(1)) {
      const CameraFeatures& first = out.cameras[0];
      throw FormatError("take " + take.take_uid + " (" + take.take_name + "): camera " +
                        first.camera + " features are " + shape_str(first.features.shape()) +
                        " ('" + first.path + "') but camera " + camera + " features are " +
                        shape_str(cf.features.shape()) + " ('" + cf.path +
                        "'): every camera must have the same width D");
    }
    if (k == 0) out.has_ego = true;
    out.cameras.push_back(std::move(cf));
  }
  return out;
}

}  // namespace stgnn
