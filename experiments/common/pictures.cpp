#include "common/pictures.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/error.h"

namespace stgnn::experiments {

namespace {

constexpr int kPad = 8;
constexpr Color kBackground{24, 24, 24};
constexpr Color kText{235, 235, 235};
constexpr Color kSyncColor{60, 230, 60};
constexpr Color kOtherColor{255, 150, 30};
constexpr Color kEdgeColor{255, 60, 60};
// One colour per grid of the region graph (3x3, 2x2, 1x1, then any further grids).
constexpr Color kScaleColors[] = {{0, 200, 255},   {255, 70, 220},  {255, 225, 0},
                                  {120, 255, 120}, {255, 255, 255}, {160, 120, 255}};

Color scale_color(size_t k) {
  return kScaleColors[k % (sizeof(kScaleColors) / sizeof(kScaleColors[0]))];
}

// Text with a dark backdrop so it stays readable over any frame.
void label_at(Canvas& canvas, int x, int y, const std::string& text, Color color, int scale) {
  canvas.fill_rect(x, y, text_width(text, scale) + 2, text_height(text, scale), {0, 0, 0});
  canvas.draw_text(x + 1, y, text, color, scale);
}

void check_frames(const FramesU8& frames, const char* what) {
  if ((frames.channels != 1 && frames.channels != 3) || frames.count < 1 || frames.height < 1 ||
      frames.width < 1 ||
      static_cast<int64_t>(frames.pixels.size()) !=
          frames.count * frames.channels * frames.height * frames.width) {
    throw ShapeError(std::string(what) + ": frames " + shape_str(frames.shape()) + " with " +
                     std::to_string(frames.pixels.size()) +
                     " bytes; expected [T>=1, 1 or 3, H>=1, W>=1] filled");
  }
}

}  // namespace

FramesU8 upscale_frames(const FramesU8& frames, int factor) {
  check_frames(frames, "upscale_frames");
  if (factor < 1 || factor > 64)
    throw ValueError("upscale_frames: factor " + std::to_string(factor) + " (1..64)");
  FramesU8 out;
  out.count = frames.count;
  out.channels = frames.channels;
  out.height = frames.height * factor;
  out.width = frames.width * factor;
  out.times = frames.times;
  out.indices = frames.indices;
  out.pixels.resize(static_cast<size_t>(out.count * out.channels * out.height * out.width));
  for (int64_t plane = 0; plane < frames.count * frames.channels; ++plane) {
    const uint8_t* src = frames.pixels.data() + plane * frames.height * frames.width;
    uint8_t* dst = out.pixels.data() + plane * out.height * out.width;
    for (int64_t y = 0; y < out.height; ++y) {
      for (int64_t x = 0; x < out.width; ++x)
        dst[y * out.width + x] = src[(y / factor) * frames.width + x / factor];
    }
  }
  return out;
}

FramesU8 frames_from_canvases(const std::vector<Canvas>& canvases) {
  if (canvases.empty()) throw ValueError("frames_from_canvases: no canvases");
  FramesU8 out;
  out.count = static_cast<int64_t>(canvases.size());
  out.channels = 3;
  out.height = canvases[0].h;
  out.width = canvases[0].w;
  const int64_t plane = out.height * out.width;
  out.pixels.resize(static_cast<size_t>(out.count * 3 * plane));
  for (size_t t = 0; t < canvases.size(); ++t) {
    const Canvas& c = canvases[t];
    if (c.h != out.height || c.w != out.width) {
      throw ValueError("frames_from_canvases: canvas " + std::to_string(t) + " is " +
                       std::to_string(c.w) + "x" + std::to_string(c.h) + ", canvas 0 is " +
                       std::to_string(out.width) + "x" + std::to_string(out.height));
    }
    uint8_t* dst = out.pixels.data() + static_cast<int64_t>(t) * 3 * plane;
    for (int64_t i = 0; i < plane; ++i) {
      for (int64_t ch = 0; ch < 3; ++ch)
        dst[ch * plane + i] = c.rgb[static_cast<size_t>(i * 3 + ch)];
    }
  }
  return out;
}

Canvas contact_sheet(const FramesU8& frames, int scale, int columns,
                     const std::vector<std::vector<FrameBox>>& boxes, const std::string& caption) {
  check_frames(frames, "contact_sheet");
  if (scale < 1 || scale > 64 || columns < 1)
    throw ValueError("contact_sheet: scale " + std::to_string(scale) + " (1..64), columns " +
                     std::to_string(columns) + " (>= 1)");
  if (!boxes.empty() && static_cast<int64_t>(boxes.size()) != frames.count)
    throw ValueError("contact_sheet: boxes for " + std::to_string(boxes.size()) + " frames, " +
                     std::to_string(frames.count) + " frames");
  const int fw = static_cast<int>(frames.width) * scale,
            fh = static_cast<int>(frames.height) * scale;
  const int cols = static_cast<int>(std::min<int64_t>(columns, frames.count));
  const int rows = static_cast<int>((frames.count + cols - 1) / cols);
  const int sheet_width = kPad + cols * (fw + kPad);
  // Text twice as large on wide sheets, which are viewed scaled down.
  const int caption_scale = sheet_width >= 600 ? 2 : 1, label_scale = scale >= 4 ? 2 : 1;
  const int caption_height = caption.empty() ? 0 : text_height(caption, caption_scale) + kPad;
  constexpr int kNumberHeight = 22;  // the frame number under each frame
  Canvas canvas(kPad + caption_height + rows * (fh + kNumberHeight), sheet_width, kBackground);
  if (!caption.empty()) canvas.draw_text(kPad, kPad, caption, kText, caption_scale);
  const int64_t plane = frames.channels * frames.height * frames.width;
  for (int64_t t = 0; t < frames.count; ++t) {
    const int x0 = kPad + static_cast<int>(t % cols) * (fw + kPad);
    const int y0 = kPad + caption_height + static_cast<int>(t / cols) * (fh + kNumberHeight);
    canvas.blit(frames.pixels.data() + t * plane, static_cast<int>(frames.channels),
                static_cast<int>(frames.height), static_cast<int>(frames.width), x0, y0, scale);
    canvas.draw_text(x0, y0 + fh + 4, "frame " + std::to_string(t), kText);
    if (boxes.empty()) continue;
    for (const FrameBox& b : boxes[static_cast<size_t>(t)]) {
      const int bx = x0 + static_cast<int>(std::lround(b.x * scale)),
                by = y0 + static_cast<int>(std::lround(b.y * scale));
      const int bw = static_cast<int>(std::lround(b.width * scale)),
                bh = static_cast<int>(std::lround(b.height * scale));
      // Clipped to the frame so boxes never spill onto a neighbour.
      const int cx0 = std::max(bx, x0), cy0 = std::max(by, y0);
      const int cx1 = std::min(bx + bw, x0 + fw), cy1 = std::min(by + bh, y0 + fh);
      if (cx1 <= cx0 || cy1 <= cy0) continue;
      canvas.draw_rect(cx0, cy0, cx1 - cx0, cy1 - cy0, b.color, 2);
      if (!b.label.empty()) label_at(canvas, cx0 + 2, cy0 + 2, b.label, b.color, label_scale);
    }
  }
  return canvas;
}

std::string sync_label_text(int label) {
  const auto [a, b] = class_pair(label);
  if (a < 0) return "none";
  return "(" + std::to_string(a) + "," + std::to_string(b) + ")";
}

std::string sync_label_slug(int label) {
  const auto [a, b] = class_pair(label);
  if (a < 0) return "none";
  return std::to_string(a) + "-" + std::to_string(b);
}

SampleFiles save_syncmnist_sample(const std::string& dir, const SyncBatch& batch, int64_t index,
                                  int64_t number, const SyncMnistOptions& options,
                                  const SamplePrediction& prediction, int scale, double fps) {
  if (index < 0 || index >= batch.count)
    throw ValueError("save_syncmnist_sample: video " + std::to_string(index) + " of a batch of " +
                     std::to_string(batch.count));
  std::filesystem::create_directories(dir);
  const int T = batch.frames, S = batch.size, D = batch.digits;
  const size_t i = static_cast<size_t>(index);
  FramesU8 frames;
  frames.count = T;
  frames.channels = 1;
  frames.height = frames.width = S;
  const size_t per_video = static_cast<size_t>(T) * S * S;
  frames.pixels.assign(batch.videos.begin() + static_cast<int64_t>(i * per_video),
                       batch.videos.begin() + static_cast<int64_t>((i + 1) * per_video));
  const int label = batch.labels[i];
  const int slot_a = batch.sync_slots[2 * i], slot_b = batch.sync_slots[2 * i + 1];
  std::vector<int> classes(batch.digit_classes.begin() + static_cast<int64_t>(i) * D,
                           batch.digit_classes.begin() + static_cast<int64_t>(i + 1) * D);

  // Boxes: digit positions are top-left corners on the canvas; the frame is the canvas resized.
  const float f = static_cast<float>(S) / static_cast<float>(options.canvas);
  std::vector<std::vector<FrameBox>> boxes(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) {
    for (int d = 0; d < D; ++d) {
      const size_t p = ((i * T + t) * D + d) * 2;
      FrameBox box;
      box.y = batch.positions[p] * f;
      box.x = batch.positions[p + 1] * f;
      box.width = box.height = 28 * f;
      box.color = d == slot_a || d == slot_b ? kSyncColor : kOtherColor;
      box.label = std::to_string(classes[static_cast<size_t>(d)]);
      boxes[static_cast<size_t>(t)].push_back(box);
    }
  }
  const bool predicted = prediction.label >= 0;
  char probability[32] = "";
  if (predicted) std::snprintf(probability, sizeof(probability), "%.3f", prediction.probability);
  std::string digits_text;
  for (int c : classes)
    digits_text += (digits_text.empty() ? "" : " ") + std::to_string(c);
  std::string caption = "SyncMNIST test video " + std::to_string(number) + ": digits " +
                        digits_text + " (paste order)\ntrue " + sync_label_text(label) +
                        "   pred " +
                        (predicted ? sync_label_text(prediction.label) + " p=" + probability +
                                         (prediction.label == label ? "  correct" : "  WRONG")
                                   : std::string("none (no checkpoint)")) +
                        "\ngreen: synchronised pair   orange: other digits";

  char stem[160];
  std::snprintf(stem, sizeof(stem), "sample_%03lld_true-%s_pred-%s", static_cast<long long>(number),
                sync_label_slug(label).c_str(),
                predicted ? sync_label_slug(prediction.label).c_str() : "none");
  const std::string base = dir + "/" + stem;
  SampleFiles files{base + ".png", base + ".mp4", base + ".gif", base + ".txt"};
  write_png(files.png, contact_sheet(frames, scale, (T + 1) / 2, boxes, caption));
  const FramesU8 big = upscale_frames(frames, scale);
  encode_video(files.mp4, big, fps);
  encode_gif(files.gif, big, fps);

  std::ostringstream txt;
  txt << "SyncMNIST test video " << number << "\n";
  txt << "digit classes (paste order): " << digits_text << "\n";
  txt << "digit pool indices:";
  for (int d = 0; d < D; ++d)
    txt << ' ' << batch.digit_indices[i * D + static_cast<size_t>(d)];
  txt << "\nsynchronised slots: ";
  if (slot_a < 0) {
    txt << "none\n";
  } else {
    txt << slot_a << ' ' << slot_b << " (digits " << classes[static_cast<size_t>(slot_a)] << " and "
        << classes[static_cast<size_t>(slot_b)] << ")\n";
  }
  txt << "label: " << label << ' ' << sync_label_text(label) << "\n";
  if (predicted) {
    txt << "prediction: " << prediction.label << ' ' << sync_label_text(prediction.label)
        << " probability " << probability << (prediction.label == label ? " (correct)" : " (wrong)")
        << "\n";
  } else {
    txt << "prediction: none (no checkpoint given)\n";
  }
  txt << "positions (row, col) of each digit's top-left corner on the " << options.canvas << "x"
      << options.canvas << " canvas; frames are resized to " << S << "x" << S << ":\n";
  for (int t = 0; t < T; ++t) {
    txt << "frame " << t << ':';
    for (int d = 0; d < D; ++d) {
      const size_t p = ((i * T + t) * D + d) * 2;
      txt << " (" << batch.positions[p] << ',' << batch.positions[p + 1] << ')';
    }
    txt << '\n';
  }
  write_file_atomic(files.txt, txt.str());
  return files;
}

std::vector<std::vector<float>> attention_per_frame(const Rstg& model, int stage) {
  const auto& recorded = model.last_attention;
  if (recorded.empty() || recorded[0].empty()) {
    throw ValueError("RSTG variant '" + rstg_variant_name(model.config().variant) +
                     "' recorded no attention (it has no space stage, or the forward ran without "
                     "record_attention)");
  }
  const int stages = static_cast<int>(recorded[0].size());
  if (stage >= stages || stage < -1)
    throw ValueError("attention stage " + std::to_string(stage) + ": the model has " +
                     std::to_string(stages) + " stages (0.." + std::to_string(stages - 1) +
                     ", or -1 for the mean)");
  std::vector<std::vector<float>> out;
  for (const auto& per_stage : recorded) {
    if (stage >= 0) {
      out.push_back(per_stage.at(static_cast<size_t>(stage)));
      continue;
    }
    std::vector<float> mean(per_stage.at(0).size(), 0.0f);
    for (const auto& weights : per_stage) {
      for (size_t e = 0; e < mean.size(); ++e)
        mean[e] += weights.at(e) / static_cast<float>(per_stage.size());
    }
    out.push_back(std::move(mean));
  }
  return out;
}

Canvas attention_frame(const uint8_t* frame, int channels, int height, int width, const Rstg& model,
                       const std::vector<float>& weights, const AttentionPictureOptions& options,
                       const std::string& caption) {
  const Graph& graph = model.frame_graph();
  const std::vector<Cell>& cells = model.cells();
  if (static_cast<int64_t>(weights.size()) != graph.num_edges())
    throw ValueError("attention_frame: " + std::to_string(weights.size()) +
                     " weights for a graph of " + std::to_string(graph.num_edges()) + " edges");
  if (options.scale < 1 || options.scale > 64)
    throw ValueError("attention_frame: scale " + std::to_string(options.scale) + " (1..64)");
  const int fw = width * options.scale, fh = height * options.scale;
  const std::vector<int64_t>& grids = model.config().grids;
  int64_t edges_drawn = std::min<int64_t>(std::max(0, options.top_edges), graph.num_edges());
  std::ostringstream legend_text;
  legend_text << "red: the " << edges_drawn << " of " << graph.num_edges() << " edges j->i with"
              << (options.relative_to_uniform ? " most attention above uniform,\n"
                                                "a_ji x in-degree(i); "
                                              : " the largest attention a_ji; ")
              << "width ~ a_ji";
  const std::string legend = legend_text.str();
  const int caption_height = caption.empty() ? 0 : text_height(caption) + kPad;
  const int legend_height = 14 + text_height(legend) + kPad;
  const int canvas_width = std::max({fw, text_width(legend), text_width(caption)}) + 2 * kPad;
  Canvas canvas(caption_height + fh + legend_height + 2 * kPad, canvas_width, kBackground);
  if (!caption.empty()) canvas.draw_text(kPad, kPad, caption, kText);
  const int x0 = kPad, y0 = kPad + caption_height;
  canvas.blit(frame, channels, height, width, x0, y0, options.scale);

  // Map coordinates -> canvas pixels, proportionally (the map covers the whole frame).
  const float map = static_cast<float>(rstg_map_size(model.config()));
  const float sx = static_cast<float>(fw) / map, sy = static_cast<float>(fh) / map;
  std::vector<size_t> grid_of(cells.size(), 0);
  {
    size_t k = 0, g = 0;
    for (int64_t side : grids) {
      for (int64_t c = 0; c < side * side && k < cells.size(); ++c)
        grid_of[k++] = g;
      ++g;
    }
  }
  std::vector<float> cx(cells.size()), cy(cells.size());
  for (size_t k = 0; k < cells.size(); ++k) {
    const Cell& c = cells[k];
    const float shift = 5.0f * static_cast<float>(grid_of[k]);
    cx[k] = x0 + 0.5f * (c.left + c.right) * sx + shift;
    cy[k] = y0 + 0.5f * (c.top + c.bottom) * sy + shift;
    // Outlines inset by 2 px per grid so shared borders of nested grids stay visible.
    const int inset = 2 * static_cast<int>(grid_of[k]);
    const int left = x0 + static_cast<int>(std::lround(c.left * sx)) + inset,
              top = y0 + static_cast<int>(std::lround(c.top * sy)) + inset;
    const int right = x0 + static_cast<int>(std::lround(c.right * sx)) - inset,
              bottom = y0 + static_cast<int>(std::lround(c.bottom * sy)) - inset;
    canvas.draw_rect(left, top, std::max(1, right - left), std::max(1, bottom - top),
                     scale_color(grid_of[k]), 1);
  }

  // A node's incoming weights sum to one, so raw weights favour nodes with few neighbours;
  // times the in-degree, 1 means "uniform" whatever the node.
  std::vector<float> score(weights);
  if (options.relative_to_uniform) {
    for (size_t e = 0; e < score.size(); ++e)
      score[e] *= static_cast<float>(graph.in_degree(graph.dst()[e]));
  }
  std::vector<int64_t> order(static_cast<size_t>(graph.num_edges()));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)];
  });
  for (int64_t r = edges_drawn - 1; r >= 0; --r) {  // strongest drawn last, on top
    const size_t e = static_cast<size_t>(order[static_cast<size_t>(r)]);
    const size_t j = static_cast<size_t>(graph.src()[e]), i = static_cast<size_t>(graph.dst()[e]);
    float dx = cx[i] - cx[j], dy = cy[i] - cy[j];
    const float length = std::sqrt(dx * dx + dy * dy);
    if (length < 1e-3f) continue;
    dx /= length;
    dy /= length;
    // Sideways by 3 px to the right of the direction of travel, so i -> j and j -> i are apart;
    // the head stops short of the node dot.
    const float ox = -dy * 3.0f, oy = dx * 3.0f;
    const float w = std::clamp(weights[e], 0.0f, 1.0f);
    const float thickness = 1.0f + 6.0f * w;
    const float tx = cx[i] + ox - dx * 7.0f, ty = cy[i] + oy - dy * 7.0f;
    canvas.draw_line(cx[j] + ox, cy[j] + oy, tx, ty, kEdgeColor, thickness, true);
    const float head = 6.0f + 4.0f * w;
    for (const float side : {-1.0f, 1.0f}) {
      const float hx = tx - head * (dx * 0.85f - side * dy * 0.5f),
                  hy = ty - head * (dy * 0.85f + side * dx * 0.5f);
      canvas.draw_line(tx, ty, hx, hy, kEdgeColor, std::max(1.5f, thickness * 0.6f), true);
    }
  }
  for (size_t k = 0; k < cells.size(); ++k) {
    const int x = static_cast<int>(std::lround(cx[k])), y = static_cast<int>(std::lround(cy[k]));
    canvas.fill_rect(x - 5, y - 5, 11, 11, {0, 0, 0});
    canvas.fill_rect(x - 4, y - 4, 9, 9, scale_color(grid_of[k]));
  }

  // Legend: one swatch per grid, then the edge rule.
  int lx = kPad;
  const int ly = y0 + fh + kPad;
  for (size_t g = 0; g < grids.size(); ++g) {
    canvas.fill_rect(lx, ly + 1, 10, 10, scale_color(g));
    const std::string name = std::to_string(grids[g]) + "x" + std::to_string(grids[g]) + " grid";
    lx += 14 + canvas.draw_text(lx + 14, ly, name, kText) + 12;
  }
  canvas.draw_text(kPad, ly + 14, legend, kText);
  return canvas;
}

std::vector<std::string> save_attention_pictures(const std::string& dir, const std::string& stem,
                                                 const FramesU8& video, const Rstg& model,
                                                 const AttentionPictureOptions& options,
                                                 const std::vector<std::string>& caption_lines) {
  check_frames(video, "save_attention_pictures");
  const std::vector<std::vector<float>> weights = attention_per_frame(model, options.stage);
  if (static_cast<int64_t>(weights.size()) != video.count) {
    throw ValueError("save_attention_pictures: attention recorded for " +
                     std::to_string(weights.size()) + " frames, the video has " +
                     std::to_string(video.count));
  }
  std::filesystem::create_directories(dir);
  std::vector<std::string> files;
  std::vector<Canvas> canvases;
  const int64_t plane = video.channels * video.height * video.width;
  const int stages = static_cast<int>(model.last_attention[0].size());
  for (int64_t t = 0; t < video.count; ++t) {
    std::string caption = caption_lines.empty() ? std::string()
                          : static_cast<int64_t>(caption_lines.size()) > t
                              ? caption_lines[static_cast<size_t>(t)]
                              : caption_lines[0];
    caption += (caption.empty() ? "" : "\n") + std::string("frame ") + std::to_string(t) +
               " (of 0-" + std::to_string(video.count - 1) + "), attention of " +
               (options.stage < 0 ? "the mean over " + std::to_string(stages) + " space stages"
                                  : "space stage " + std::to_string(options.stage));
    canvases.push_back(
        attention_frame(video.pixels.data() + t * plane, static_cast<int>(video.channels),
                        static_cast<int>(video.height), static_cast<int>(video.width), model,
                        weights[static_cast<size_t>(t)], options, caption));
    char name[32];
    std::snprintf(name, sizeof(name), "_frame_%02lld.png", static_cast<long long>(t));
    files.push_back(dir + "/" + stem + name);
    write_png(files.back(), canvases.back());
  }
  files.push_back(dir + "/" + stem + ".gif");
  encode_gif(files.back(), frames_from_canvases(canvases), options.gif_fps);
  return files;
}

// ---------------------------------------------------------------- keystep timelines

namespace {

constexpr int kTimelineMargin = 10;
constexpr int kTimelineLabelColumn = 80;  // "predicted" and its gap before the strips
constexpr int kLegendColumnWidth = 300;
constexpr int kLegendRow = 16;
constexpr Color kNoLabel{128, 128, 128};
constexpr Color kRight{60, 200, 60};
constexpr Color kWrong{230, 50, 50};

// A tick step of 1, 2 or 5 times a power of ten seconds giving at most about 12 ticks.
double tick_step(double span) {
  double step = std::pow(10.0, std::floor(std::log10(std::max(span, 1e-6) / 12.0)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (span / (step * m) <= 12.0) return step * m;
  }
  return step * 10.0;
}

std::string seconds_text(double t, double step) {
  char buffer[32];
  if (step >= 1.0) {
    std::snprintf(buffer, sizeof(buffer), "%.0fs", t);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.*fs", step >= 0.1 ? 1 : 2, t);
  }
  return buffer;
}

// `text` cut (with "...") to at most `pixels` wide.
std::string fit_text(const std::string& text, int pixels) {
  if (text_width(text) <= pixels) return text;
  std::string cut = text;
  while (!cut.empty() && text_width(cut + "...") > pixels)
    cut.pop_back();
  return cut + "...";
}

// Black or white, whichever reads better on `c`.
Color ink_on(Color c) {
  return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b > 140 ? Color{0, 0, 0} : Color{255, 255, 255};
}

}  // namespace

Color keystep_label_color(int64_t label) {
  if (label < 0) return kNoLabel;
  // HSV with hue by the golden ratio; saturation and value alternate so that labels whose hues
  // come close (ids ~ 89 apart) still differ.
  const double h = std::fmod(0.12 + 0.6180339887 * static_cast<double>(label), 1.0) * 6.0;
  const double s = label % 2 == 0 ? 0.75 : 0.5;
  const double v = (label / 2) % 2 == 0 ? 0.95 : 0.78;
  const double c = v * s, x = c * (1.0 - std::fabs(std::fmod(h, 2.0) - 1.0)), m = v - c;
  double r = 0, g = 0, b = 0;
  switch (static_cast<int>(h)) {
    case 0:
      r = c, g = x;
      break;
    case 1:
      r = x, g = c;
      break;
    case 2:
      g = c, b = x;
      break;
    case 3:
      g = x, b = c;
      break;
    case 4:
      r = x, b = c;
      break;
    default:
      r = c, b = x;
      break;
  }
  const auto byte = [&](double u) { return static_cast<uint8_t>(std::lround(255.0 * (u + m))); };
  return {byte(r), byte(g), byte(b)};
}

TimelineLayout keystep_timeline_layout(const KeystepTimeline& timeline, int width) {
  if (width < 400) {
    throw ValueError("keystep_timeline: width " + std::to_string(width) + " < 400 pixels");
  }
  if (timeline.segments.empty()) throw ValueError("keystep_timeline: no segments to draw");
  TimelineLayout l;
  l.width = width;
  l.t0 = timeline.segments[0].start;
  l.t1 = timeline.segments[0].end;
  std::vector<int64_t> labels;
  for (const TimelineSegment& s : timeline.segments) {
    if (!(s.end >= s.start)) {
      throw ValueError("keystep_timeline: a segment ends (" + std::to_string(s.end) +
                       " s) before it starts (" + std::to_string(s.start) + " s)");
    }
    l.t0 = std::min(l.t0, s.start);
    l.t1 = std::max(l.t1, s.end);
    for (int64_t label : {s.truth, s.predicted}) {
      if (label >= 0) labels.push_back(label);
    }
  }
  if (l.t1 <= l.t0) l.t1 = l.t0 + 1.0;
  std::sort(labels.begin(), labels.end());
  labels.erase(std::unique(labels.begin(), labels.end()), labels.end());
  l.legend = labels;
  l.x0 = kTimelineMargin + kTimelineLabelColumn;
  l.x1 = width - 2 * kTimelineMargin;
  l.strip_height = 36;
  l.truth_y = 34;
  l.predicted_y = l.truth_y + l.strip_height + 6;
  l.correct_y = l.predicted_y + l.strip_height + 4;
  l.legend_y = 150;
  l.legend_columns = (width - 2 * kTimelineMargin) / kLegendColumnWidth;
  const auto rows = static_cast<int>((static_cast<int64_t>(labels.size()) + l.legend_columns - 1) /
                                     l.legend_columns);
  l.height = l.legend_y + kLegendRow * rows + 16;
  return l;
}

Canvas keystep_timeline(const KeystepTimeline& timeline, int width) {
  const TimelineLayout l = keystep_timeline_layout(timeline, width);
  Canvas canvas(l.height, l.width, kBackground);
  canvas.draw_text(kTimelineMargin, 10, fit_text(timeline.title, width - 2 * kTimelineMargin),
                   kText);
  const auto column = [&](double t) {
    return l.x0 + static_cast<int>(std::lround((t - l.t0) / (l.t1 - l.t0) * (l.x1 - l.x0)));
  };
  // Gaps between segments stay a shade lighter than the background.
  for (int y : {l.truth_y, l.predicted_y})
    canvas.fill_rect(l.x0, y, l.x1 - l.x0 + 1, l.strip_height, {48, 48, 48});
  canvas.draw_text(kTimelineMargin, l.truth_y + 12, "truth", kText);
  canvas.draw_text(kTimelineMargin, l.predicted_y + 12, "predicted", kText);
  canvas.draw_text(kTimelineMargin, l.correct_y - 3, "right?", kText);
  for (const TimelineSegment& s : timeline.segments) {
    const int a = column(s.start), b = std::max(column(s.end), a + 1);
    for (const auto& [y, label] : {std::pair{l.truth_y, s.truth}, {l.predicted_y, s.predicted}}) {
      const Color color = keystep_label_color(label);
      canvas.fill_rect(a, y, b - a, l.strip_height, color);
      // A background column where the segment starts keeps neighbours of one label apart.
      if (b - a >= 3) canvas.fill_rect(a, y, 1, l.strip_height, kBackground);
      const std::string id = label >= 0 ? std::to_string(label) : "?";
      if (text_width(id) + 4 <= b - a) canvas.draw_text(a + 3, y + 3, id, ink_on(color));
    }
    const Color mark = s.truth < 0 || s.predicted < 0 ? kNoLabel
                       : s.truth == s.predicted       ? kRight
                                                      : kWrong;
    canvas.fill_rect(a, l.correct_y, b - a, 6, mark);
  }
  // Time axis under the strips.
  const int axis_y = l.correct_y + 8;
  canvas.fill_rect(l.x0, axis_y, l.x1 - l.x0 + 1, 1, kText);
  const double step = tick_step(l.t1 - l.t0);
  for (double t = std::ceil(l.t0 / step - 1e-9) * step; t <= l.t1 + 1e-9; t += step) {
    const int x = column(t);
    canvas.fill_rect(x, axis_y, 1, 5, kText);
    const std::string text = seconds_text(t, step);
    canvas.draw_text(
        std::min(x - text_width(text) / 2, l.width - kTimelineMargin - text_width(text)),
        axis_y + 7, text, kText);
  }
  // Legend: a swatch, the id and the name of every label shown.
  for (size_t k = 0; k < l.legend.size(); ++k) {
    const int64_t label = l.legend[k];
    const int x = kTimelineMargin +
                  static_cast<int>(k % static_cast<size_t>(l.legend_columns)) * kLegendColumnWidth;
    const int y =
        l.legend_y + static_cast<int>(k / static_cast<size_t>(l.legend_columns)) * kLegendRow;
    canvas.fill_rect(x, y + 1, 12, 12, keystep_label_color(label));
    std::string text = std::to_string(label);
    if (label < static_cast<int64_t>(timeline.label_names.size()) &&
        !timeline.label_names[static_cast<size_t>(label)].empty()) {
      text += " " + timeline.label_names[static_cast<size_t>(label)];
    }
    canvas.draw_text(x + 16, y + 2, fit_text(text, kLegendColumnWidth - 24), kText);
  }
  return canvas;
}

}  // namespace stgnn::experiments
