// Ego-Exo4D keystep recognition data: label mapping, segment annotations, takes, cameras,
// precomputed feature files and their timing, caption features.
//
// What is accepted (see /work/shared/design/egoexo4d-formats.md for the layouts):
// - label_mapping.csv: RFC 4180 CSV with columns label_id, step_unique_id, step_name and
//   optionally scenario_name, in any order (extra columns ignored); label ids must be exactly
//   0..n-1 and step_unique_ids unique.
// - keystep_segment_{train,val,test_unannotated}.json: an object whose "segments" array holds
//   the segments (or a bare array of segments); other keys are ignored, as are unknown keys in
//   a segment. Required per segment: take_uid, take_name, start_time, end_time,
//   segment_name_list (non-empty), ego_segment_name. Optional: label_id, step_unique_id,
//   step_name (null counts as absent). With a mapping: label_id must be a valid label and agree
//   with step_unique_id when both are present; a segment with only a step_unique_id gets the
//   mapped label, or is dropped (and counted) when the step is not in the mapping. A segment
//   with neither is unlabelled (label -1), as in the test file.
// - keystep_{train,val}.json (raw): {"annotations": {take_uid: {"take_uid", "take_name",
//   "scenario", "segments": [...]}, ...}, "taxonomy": ..., "vocabulary": ...}; "annotations"
//   may also be an array of take records, and a record without "take_uid" takes its key.
//   Per segment: start_time, end_time, step_unique_id (required), step_name,
//   step_description, is_essential, step_id (optional; other keys ignored). Steps absent from
//   the mapping are dropped and counted. Raw annotations carry no clip names, so their
//   segments have no cameras.
// Integer fields accept JSON integers, integral floats and decimal strings ("843").
// Every error names the file, the segment (index in the file, or take and position) and the
// field.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "autograd/tensor.h"

namespace stgnn {

// ---------------------------------------------------------------- labels

struct LabelEntry {
  int64_t label_id = 0;
  int64_t step_unique_id = 0;
  std::string step_name;
  std::string scenario_name;  // empty when the column is absent
};

struct LabelMapping {
  std::string source;                                  // path or name, for messages
  std::vector<LabelEntry> entries;                     // entries[i].label_id == i
  std::unordered_map<int64_t, int64_t> label_of_step;  // step_unique_id -> label_id

  int64_t num_classes() const { return static_cast<int64_t>(entries.size()); }
  // The label of a step, or -1 when the step is not in the mapping.
  int64_t label_for_step(int64_t step_unique_id) const;
};

// Throws IoError when the file cannot be read, FormatError "<file>:<line>: ..." when malformed.
LabelMapping read_label_mapping(const std::string& path);
LabelMapping parse_label_mapping(const std::string& text, const std::string& name_for_errors);

// ---------------------------------------------------------------- segments

struct KeystepSegment {
  int64_t index = 0;  // position in the input file (0-based; raw files count across takes)
  std::string take_uid;
  std::string take_name;
  double start_time = 0.0;  // seconds
  double end_time = 0.0;
  std::vector<std::string> segment_names;  // segment_name_list: the ego clip first, then exo
  std::string ego_segment_name;
  std::string ego_camera;                // e.g. "aria02_214-1"; empty for raw annotations
  std::vector<std::string> exo_cameras;  // e.g. "cam01", "gp02", in segment_name_list order
  int64_t step_unique_id = -1;           // -1 when absent
  int64_t label = -1;                    // label_id, -1 when unlabelled
  std::string step_name;
  // Raw keystep annotations only.
  std::string step_description;
  bool is_essential = false;
  std::string scenario;
};

struct KeystepSplit {
  std::string source;
  std::vector<KeystepSegment> segments;  // kept segments, in file order
  int64_t total_in_file = 0;             // segments in the file, kept or dropped
  int64_t dropped_unmapped = 0;          // steps absent from the label mapping

  // True when every kept segment carries a label (false for the unannotated test split).
  bool labelled() const;
};

// keystep_segment_*.json. `mapping` may be null (labels are then only checked to be >= 0).
KeystepSplit read_keystep_segments(const std::string& path, const LabelMapping* mapping = nullptr);
KeystepSplit parse_keystep_segments(const std::string& text, const std::string& name_for_errors,
                                    const LabelMapping* mapping = nullptr);

// Raw keystep_{train,val}.json.
KeystepSplit read_raw_keysteps(const std::string& path, const LabelMapping& mapping);
KeystepSplit parse_raw_keysteps(const std::string& text, const std::string& name_for_errors,
                                const LabelMapping& mapping);

// The camera of a clip name "<dirs>/start<t>_end<t>_<camera>.<ext>", e.g. "aria02_214-1",
// "cam01", "gp02". Throws FormatError naming the clip when it does not have that form.
std::string camera_from_segment_name(const std::string& segment_name);

// The device part of a camera name: "aria02_214-1" -> "aria02", "cam01" -> "cam01".
std::string camera_device(const std::string& camera);

// ---------------------------------------------------------------- takes

struct Take {
  std::string take_uid;
  std::string take_name;
  std::string ego_camera;                // empty when the annotations carry no clip names
  std::vector<std::string> exo_cameras;  // union over the take's segments, first-seen order
  // Sorted by start time (ties: end time, then file index); each keeps its file index so
  // predictions can be written back in input order.
  std::vector<KeystepSegment> segments;

  // Ego first, then the exo cameras: position k here is the GLEVR view index k.
  std::vector<std::string> cameras() const;
};

// Groups segments by take_uid, takes in order of first appearance. Throws FormatError when one
// take_uid appears with two take names or two ego cameras.
std::vector<Take> group_takes(const std::vector<KeystepSegment>& segments);

// ---------------------------------------------------------------- feature timing

// Clip features: feature t covers frames [stride * t, stride * t + window) at `fps`, i.e.
// seconds [stride * t / fps, (stride * t + window) / fps). Defaults: Omnivore on Ego-Exo4D.
struct FeatureTiming {
  double fps = 30.0;
  int64_t window = 32;
  int64_t stride = 16;
};

// features is [T, D]; returns [D]: the mean of the rows whose windows lie inside
// [start, end] (1 microsecond of slack against rounding in the annotation times); when none
// does, the mean of the rows whose windows overlap it (a window [a, b) overlaps when
// a <= end and b > start). Throws FormatError naming the times and T when no window overlaps
// (the segment lies outside the video), ValueError for non-finite or reversed times.
Tensor segment_feature(const Tensor& features, double start, double end,
                       const FeatureTiming& timing = {});

// [N, D]: segment_feature for each of the take's N segments in order. Errors name `source`
// (typically the feature file), the take and the segment's file index.
Tensor take_segment_features(const Tensor& features, const Take& take, const std::string& source,
                             const FeatureTiming& timing = {});

// ---------------------------------------------------------------- feature files

// A [T, D] feature matrix from a .pt (torch.save) or .npy file, as float32. Throws FormatError
// for another extension, another rank, or a NaN/infinity (naming the file, row and column).
Tensor read_feature_matrix(const std::string& path);

// Caption (text) features of one take: a [num_segments, D] .npy or .pt file, one row per
// segment in temporal order (the order of Take::segments). Throws FormatError naming the file
// when the row count differs or a value is not finite.
Tensor read_caption_features(const std::string& path, int64_t num_segments);

// Feature files under a directory, found by one recursive walk (directory symlinks followed,
// each real directory and file visited once). Only *.pt and *.npy files are indexed, by stem.
//
// Camera features for (take_uid, camera), first match wins:
//   1. "<take_uid>_<camera>.{pt,npy}"            e.g. <uid>_aria02_214-1.pt
//   2. "<take_uid>_<camera>_<stream>.{pt,npy}"   e.g. <uid>_cam01_0.pt for camera "cam01"
//   3. GLEVR style "<take_name>_<k>.npy", k the camera's view index (0 = ego), when given.
// Per-take files (captions): "<take_uid>.{npy,pt}" or "<take_name>.{npy,pt}".
// More than one file matching the same rule (say x.pt and x.npy, or two streams) is an error
// that lists them, rather than a silent pick.
class FeatureIndex {
 public:
  // Throws IoError when `root` is not a readable directory.
  explicit FeatureIndex(const std::string& root);

  const std::string& root() const { return root_; }
  size_t num_files() const { return num_files_; }

  // The feature file of a camera of a take, or nullopt; view_index < 0 disables rule 3.
  std::optional<std::string> find_camera(const std::string& take_uid, const std::string& take_name,
                                         const std::string& camera, int64_t view_index = -1) const;
  // As find_camera, but a missing file throws IoError naming the take, the camera, the
  // directory and the names looked for.
  std::string require_camera(const std::string& take_uid, const std::string& take_name,
                             const std::string& camera, int64_t view_index = -1) const;
  // The per-take file (captions), or nullopt.
  std::optional<std::string> find_take(const std::string& take_uid,
                                       const std::string& take_name) const;

 private:
  std::vector<std::string> with_stem(const std::string& stem) const;
  std::vector<std::string> with_stem_prefix(const std::string& prefix) const;
  std::optional<std::string> single(const std::vector<std::string>& paths,
                                    const std::string& what) const;

  std::string root_;
  size_t num_files_ = 0;
  std::map<std::string, std::vector<std::string>> by_stem_;
};

enum class MissingFeatures { kError, kSkip };

struct CameraFeatures {
  std::string camera;
  std::string path;
  Tensor features;  // [T, D]
};

struct TakeFeatures {
  std::vector<CameraFeatures> cameras;  // found cameras, ego first when found
  std::vector<std::string> missing;     // cameras skipped for lack of a file (kSkip only)
  bool has_ego = false;
};

// Loads the ego camera's features and, with include_exo, every exo camera's, all of one width
// D. A missing file throws IoError (kError) or is listed in `missing` (kSkip). Throws
// FormatError when the take has no camera names or two cameras differ in D.
TakeFeatures load_take_features(const FeatureIndex& index, const Take& take, bool include_exo,
                                MissingFeatures policy);

}  // namespace stgnn
