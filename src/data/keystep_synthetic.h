// A synthetic Ego-Exo4D keystep data set, written in exactly the official layout
// (shared/design/egoexo4d-formats.md), for tests and demos of keystep recognition:
//
//   <dir>/annotations/keystep_benchmark/keystep_segment_{train,val,test_unannotated}.json
//   <dir>/annotations/keystep_benchmark/label_mapping.csv      (some step names hold commas)
//   <dir>/features/omnivore_video/<take_uid>_aria01_214-1.pt   ego, torch.save [T, dim]
//   <dir>/features/omnivore_video/<take_uid>_cam0<k>_0.pt      exo views k = 1..exo_views
//   <dir>/features/text/<take_uid>.npy                         captions [segments, text_dim]
//   <dir>/test_ground_truth.csv        ego_segment_name,label_id of the unannotated test split
//   <dir>/synthetic.json               the options that made the set
//
// The generative model (every knob is a field of KeystepSyntheticOptions):
//  - Scenarios s = 0..S-1 of K steps each: labels s*K .. s*K + K-1, scenario_name "scenario<s>".
//    Each scenario has a fixed procedural order, a seeded permutation of its steps.
//  - A take picks a scenario and a length L in [min_segments, max_segments]; its steps walk the
//    procedure from a random early position: the next step with probability
//    1 - p_skip - p_jump, the one after it with p_skip, a random step of the scenario with
//    p_jump, wrapping around at the end (the procedure is repeated).
//  - Segments last [min_seconds, max_seconds] with gaps of [0, max_gap_seconds] between them.
//  - Class prototypes mu_c and scenario prototypes nu_s have N(0, 1) entries. The latent of
//    segment i of the take in view v is
//        z = class_signal * mu_c + scenario_signal * nu_s + shift_take + noise
//    with shift_take ~ N(0, take_shift^2) per dimension shared by every view and segment of the
//    take, and noise ~ N(0, (segment_noise * f_v)^2), f_v = 1 for ego and exo_noise_scale for
//    every exo view (exo views are more informative). Every feature row (clip) whose window
//    lies inside the segment is z + N(0, clip_noise^2); the other rows (gaps, boundaries) are
//    shift_take + N(0, clip_noise^2). segment_feature averages the clips back to ~z.
//  - Caption i is text_signal * tau_c + N(0, text_noise^2), tau_c a per-class N(0, 1) vector.
// Procedural order and the take shift make temporal context worth a lot: a segment alone is
// ambiguous, its neighbours say which scenario and where in the procedure it is, and feature
// differences between neighbours cancel the take shift.
//
// Calibration (the defaults; RESULTS.md has the runs): the per-segment Bayes classifier with the
// true prototypes scores ~45% and the same classifier over a +-2 segment window with the true
// procedure ~83%; a per-segment MLP reaches ~40% top-1 on val, GLEVR (tau 1) ~60%, + exo views a
// few points more, + captions at test a few more. Knobs: class_signal moves every number (0.32
// -> MLP ~34%); take_shift and p_skip / p_jump set how much context is worth; exo_noise_scale
// how much the exo views help; text_signal the captions; train_takes how much GLEVR can learn
// before it overfits (at 300 takes it does worse than the MLP).
//
// Everything is a pure function of the options (seed included): take t of a split draws from
// Rng(seed).fork(split * 2^32 + t), so the same options write the same bytes.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace stgnn {

struct KeystepSyntheticOptions {
  uint64_t seed = 1;
  int64_t scenarios = 4;
  int64_t steps_per_scenario = 12;
  int64_t train_takes = 1200;  // GLEVR's 2-layer model needs ~14k training segments to beat the
                               // MLP; with a few thousand it memorises the per-segment noise
  int64_t val_takes = 100;
  int64_t test_takes = 60;
  int64_t min_segments = 8;
  int64_t max_segments = 16;
  int64_t dim = 64;  // 1536 in the real Omnivore features; 64 keeps the default run to minutes
  int64_t text_dim = 64;
  int64_t exo_views = 2;     // cam01, cam02 (4 in most real takes; 2 halves the files)
  double min_seconds = 1.6;  // >= 1.6 s: at least one 32-frame window lies inside a segment
  double max_seconds = 3.0;
  double max_gap_seconds = 1.0;
  double p_skip = 0.15;
  double p_jump = 0.05;
  double class_signal = 0.36;  // the main knob: per-segment MLP ~40% top-1 at 0.36 (dim 64)
  double scenario_signal = 0.2;
  double take_shift = 0.8;
  double segment_noise = 1.0;
  double clip_noise = 1.0;
  double exo_noise_scale = 0.7;
  double text_signal = 0.25;
  double text_noise = 1.0;
};

// As JSON (keys as the fields) and back; unknown keys are a ValueError naming them, missing
// keys keep their defaults.
nlohmann::json keystep_synthetic_json(const KeystepSyntheticOptions& options);
KeystepSyntheticOptions keystep_synthetic_from_json(const nlohmann::json& json);

struct KeystepSyntheticSummary {
  int64_t classes = 0;
  int64_t takes = 0;
  int64_t segments[3] = {0, 0, 0};  // train, val, test
  int64_t files = 0;
};

// Writes the data set into `dir` (created; existing files of the same names are replaced).
// Throws ValueError naming the option that is out of range, IoError when a file cannot be
// written.
KeystepSyntheticSummary write_keystep_synthetic(const std::string& dir,
                                                const KeystepSyntheticOptions& options);

}  // namespace stgnn
