// Pictures of what the experiments see and do: upscaled videos (mp4 + GIF), contact sheets
// of a clip's frames with boxes, SyncMNIST samples labelled with truth and prediction, and
// RSTG's region graph with its strongest attention edges drawn over the frames.
//
// Frames are bytes [T, C, H, W] (FramesU8, C = 1 gray or 3 RGB); drawings are Canvas (RGB).
// Every file is written atomically by the encoders / PNG writer it goes through.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/rstg.h"
#include "video/image_io.h"
#include "video/syncmnist.h"
#include "video/video_io.h"

namespace stgnn::experiments {

// frames [T, C, H, W] -> [T, C, H * factor, W * factor], nearest neighbour (each pixel a
// factor x factor block, so small frames stay sharp). ValueError unless 1 <= factor <= 64.
FramesU8 upscale_frames(const FramesU8& frames, int factor);

// Canvases of one size -> frames [T, 3, H, W] (for encode_gif / encode_video). ValueError when
// the list is empty or the sizes differ.
FramesU8 frames_from_canvases(const std::vector<Canvas>& canvases);

// A rectangle on a frame, in frame pixels (before any upscaling), with a colour and a short
// label drawn above it.
struct FrameBox {
  float x = 0, y = 0, width = 0, height = 0;
  Color color;
  std::string label;
};

// All T frames of `frames` [T, C, H, W] on one sheet, `columns` per row, each drawn `scale`
// times larger with its number under it and boxes[t] over it (boxes may be empty or [T]), and
// a caption (one or more '\n'-separated lines) on top; text is drawn twice as large on sheets
// 600 pixels wide or more. Width: min(columns, T) * (W * scale + 8) + 8; height:
// 8 + caption + rows * (H * scale + 22), the caption taking 8 + 12 or 24 pixels per line.
Canvas contact_sheet(const FramesU8& frames, int scale, int columns,
                     const std::vector<std::vector<FrameBox>>& boxes, const std::string& caption);

// "(2,7)" for a pair class of SyncMNIST, "none" for class 45.
std::string sync_label_text(int label);
// The same for file names: "2-7" or "none".
std::string sync_label_slug(int label);

// The model's answer for a sample; absent (label -1) when no checkpoint was given.
struct SamplePrediction {
  int label = -1;
  float probability = 0;
};

struct SampleFiles {
  std::string png, mp4, gif, txt;  // full paths
};

// Writes video `index` of `batch` (a generated SyncMNIST batch; its number in the test set is
// `number`) into `dir` (created) as
//   sample_<number>_true-<a-b>_pred-<c-d|none>.{png,mp4,gif,txt}:
// a contact sheet of its frames with the synchronised pair's boxes in green and the other
// digits' in orange (positions are top-left corners on the options.canvas square, scaled to
// the frame), the video upscaled by `scale` as mp4 and GIF (fps frames a second), and a text
// sidecar (digit classes, synchronised slots and pair, label, prediction and probability, the
// positions per frame).
SampleFiles save_syncmnist_sample(const std::string& dir, const SyncBatch& batch, int64_t index,
                                  int64_t number, const SyncMnistOptions& options,
                                  const SamplePrediction& prediction, int scale = 4,
                                  double fps = 5.0);

struct AttentionPictureOptions {
  int scale = 6;       // frames drawn this many times larger
  int top_edges = 20;  // the strongest edges drawn per frame
  // Rank edges by a_ji times the in-degree of i (1 = the uniform share; raw weights favour
  // nodes with few neighbours), instead of by a_ji.
  bool relative_to_uniform = true;
  int stage = -1;  // which space stage's attention; -1: the mean over stages
  double gif_fps = 2.0;
};

// One frame [C, H, W] (bytes at `frame`) with the model's region graph drawn over it: each
// grid's cells outlined in its own colour (cells are laid from map coordinates onto the frame
// proportionally), node centres as dots (nodes of the k-th grid shifted by 5k pixels so that
// the centres of nested cells stay apart), and the top_edges strongest edges of `weights`
// ([E] over model.frame_graph(), ranked as options say; j -> i drawn as a line from j's centre
// to i's with a head at i, width growing with the weight, shifted sideways so i -> j and
// j -> i do not overlap).
// caption lines go on top and a legend below. Width: the widest of W * scale, the caption and
// the legend, + 16.
Canvas attention_frame(const uint8_t* frame, int channels, int height, int width, const Rstg& model,
                       const std::vector<float>& weights, const AttentionPictureOptions& options,
                       const std::string& caption);

// The per-frame attention weights [T][E] to draw from model.last_attention: one stage's, or
// the mean over stages (stage -1). ValueError when the model recorded no attention (time-only
// and the baselines have no space stage) or the stage does not exist.
std::vector<std::vector<float>> attention_per_frame(const Rstg& model, int stage);

// Draws every frame of `video` [T, C, H, W] (the first video of the model's last forward,
// which must have run with record_attention) into dir/<stem>_frame_<t>.png and all of them
// into dir/<stem>.gif; caption_lines[t] (or the first line for every frame) captions frame t.
// Returns the files written (PNGs in frame order, then the GIF).
std::vector<std::string> save_attention_pictures(const std::string& dir, const std::string& stem,
                                                 const FramesU8& video, const Rstg& model,
                                                 const AttentionPictureOptions& options,
                                                 const std::vector<std::string>& caption_lines);

// ---------------------------------------------------------------- keystep timelines

// One keystep segment of a take: its time span (seconds), the true label (-1: unannotated) and
// the model's top-1 label with its probability (-1: no prediction).
struct TimelineSegment {
  double start = 0, end = 0;
  int64_t truth = -1, predicted = -1;
  float probability = 0;
};

// What keystep_timeline draws: the segments (any order) and the names of the labels, indexed by
// label id (a label without a name is shown by its id alone).
struct KeystepTimeline {
  std::string title;  // one line above the strips
  std::vector<TimelineSegment> segments;
  std::vector<std::string> label_names;
};

// Where keystep_timeline puts things: time t maps to column x0 + (t - t0) / (t1 - t0) * (x1 - x0)
// (t0 = the earliest start, t1 = the latest end); the truth and predicted strips are
// strip_height pixels tall from rows truth_y and predicted_y, each segment a block of its
// label's colour whose lower half holds nothing else (its label id is written in the upper half
// when it fits); a thin strip at correct_y marks each segment green (right), red (wrong) or
// grey (unannotated). The legend lists every label of either strip, legend_columns entries a
// row, from row legend_y.
struct TimelineLayout {
  int width = 0, height = 0;
  int x0 = 0, x1 = 0;
  double t0 = 0, t1 = 0;
  int truth_y = 0, predicted_y = 0, strip_height = 0, correct_y = 0;
  int legend_y = 0, legend_columns = 0;
  std::vector<int64_t> legend;  // label ids, ascending
};

// The layout of `timeline` on a picture `width` pixels wide (>= 400; ValueError otherwise, or
// when there is no segment or a segment ends before it starts). Height:
//   166 + 16 * ceil(legend entries / legend_columns),  legend_columns = (width - 20) / 300.
TimelineLayout keystep_timeline_layout(const KeystepTimeline& timeline, int width = 1200);

// The colour of a keystep label: hues spread by the golden ratio, so that labels close in id
// (the steps of one scenario) differ clearly. Label -1 (none) is grey.
Color keystep_label_color(int64_t label);

// The timeline of one take: the title, the ground-truth strip above the predicted strip on a
// common time axis (seconds), the right / wrong marks, and a legend of label colours with their
// ids and names. Size as keystep_timeline_layout says.
Canvas keystep_timeline(const KeystepTimeline& timeline, int width = 1200);

}  // namespace stgnn::experiments
